//! Serving threads: one single-threaded runtime per thread, each owning the
//! connections handed to it.
//!
//! On a work-stealing runtime a request hops threads: the connection's task,
//! the upstream connection's task and the timers wake each other across
//! cores, about a fifth of a free request's CPU on two cores. Here a
//! connection, its requests and the upstream connections they use (each
//! thread has its own pool, see `tollgate_providers::pool_affinity`) stay
//! on one thread, as in nginx's workers. Connections are dealt round-robin
//! as they are accepted; keep-alive makes that a rare event.

use std::io;

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::task::JoinSet;

use super::connection::Connection;

/// An accepted connection on its way to a serving thread.
struct Handoff {
    stream: std::net::TcpStream,
    connection: Connection,
    permit: OwnedSemaphorePermit,
}

pub(super) struct Lanes {
    lanes: Vec<mpsc::UnboundedSender<Handoff>>,
    /// Each thread says here when it has finished.
    finished: Vec<oneshot::Receiver<()>>,
    next: usize,
}

impl Lanes {
    /// Starts `count` serving threads.
    pub fn start(count: usize) -> io::Result<Self> {
        let mut lanes = Self {
            lanes: Vec::with_capacity(count),
            finished: Vec::with_capacity(count),
            next: 0,
        };
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (sender, receiver) = mpsc::unbounded_channel();
            let (done, finished) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("tollgate-serve-{index}"))
                .spawn(move || {
                    tollgate_providers::pool_affinity::use_pool(index);
                    runtime.block_on(serve_lane(receiver));
                    // What else runs here (idle upstream connections, a
                    // task a request spawned) ends with the runtime, as it
                    // would at the process's exit.
                    drop(runtime);
                    let _ = done.send(());
                })?;
            lanes.lanes.push(sender);
            lanes.finished.push(finished);
        }
        Ok(lanes)
    }

    /// Hands `stream` to the next thread, which serves it as `connection`
    /// and drops `permit` when it closes.
    pub fn hand(
        &mut self,
        stream: TcpStream,
        connection: Connection,
        permit: OwnedSemaphorePermit,
    ) -> io::Result<()> {
        // Leaving this runtime's reactor; the serving thread registers the
        // socket with its own.
        let stream = stream.into_std()?;
        let index = self.next % self.lanes.len();
        self.next = self.next.wrapping_add(1);
        self.lanes[index]
            .send(Handoff {
                stream,
                connection,
                permit,
            })
            .map_err(|_| io::Error::other("a serving thread has stopped"))
    }

    /// Waits until every thread has served its connections to the end.
    pub async fn finish(self) {
        drop(self.lanes);
        for finished in self.finished {
            let _ = finished.await;
        }
    }
}

async fn serve_lane(mut handoffs: mpsc::UnboundedReceiver<Handoff>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            handoff = handoffs.recv() => {
                let Some(Handoff { stream, connection, permit }) = handoff else {
                    break;
                };
                match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        connections.spawn(async move {
                            connection.run(stream).await;
                            drop(permit);
                        });
                    }
                    Err(error) => tracing::warn!(%error, "could not serve a connection"),
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}
