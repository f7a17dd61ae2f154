//! One connection: hyper's HTTP/1.1 state machine over a socket that
//! enforces the header-read and idle deadlines.
//!
//! hyper 1's own `header_read_timeout` starts when it begins waiting for a
//! head, so it would also cut idle keep-alive connections at the header
//! deadline. Instead the socket wrapper here knows where the connection is:
//! waiting for a request (idle deadline), reading a head that has begun
//! (header deadline), or serving a request (no deadline here; the body has
//! its own). The service moves it between them.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::ConnectionLimits;
use super::body_deadline::DeadlineBody;

pub(super) struct Connection {
    pub router: axum::Router,
    pub limits: Arc<ConnectionLimits>,
    /// Closed when the server shuts down.
    pub stop: watch::Sender<()>,
    /// Held while the connection is open.
    pub open: watch::Receiver<()>,
}

impl Connection {
    pub async fn run(self, stream: TcpStream) {
        let shared = Arc::new(Mutex::new(Shared {
            // The first request is expected promptly: a client connects to
            // send one.
            phase: Phase::Waiting {
                deadline: Instant::now() + self.limits.header_read_timeout,
            },
            reader: None,
        }));
        let io = TokioIo::new(DeadlineIo::new(
            stream,
            Arc::clone(&shared),
            self.limits.header_read_timeout,
        ));
        let service = Service {
            router: self.router,
            shared,
            limits: Arc::clone(&self.limits),
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .max_header_size(self.limits.max_header_bytes)
            // The read buffer holds at most one head (and body chunks).
            .max_buf_size(self.limits.max_header_bytes.max(8 * 1024) + 8 * 1024);
        let connection = builder.serve_connection(io, service);
        let mut connection = std::pin::pin!(connection);
        let stop = self.stop.closed();
        let mut stop = std::pin::pin!(stop);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection closed with an error");
                    }
                    break;
                }
                () = &mut stop, if !stopping => {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        drop(self.open);
    }
}

/// Where a connection stands, shared by its socket and its service.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No byte of the next request yet: closed at `deadline`.
    Waiting { deadline: Instant },
    /// A head has begun: closed at `deadline` unless it completes.
    ReadingHead { deadline: Instant },
    /// A request is being served.
    Serving,
}

struct Shared {
    phase: Phase,
    /// The task waiting on the socket, woken when the phase gets a new
    /// deadline (hyper reads while it serves, and would otherwise sleep
    /// through the start of the idle deadline).
    reader: Option<std::task::Waker>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The socket, failing reads with `TimedOut` once the phase's deadline
/// passed while nothing arrived.
struct DeadlineIo {
    stream: TcpStream,
    shared: Arc<Mutex<Shared>>,
    header_read_timeout: std::time::Duration,
    /// Armed lazily, only when a read has to wait.
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl DeadlineIo {
    fn new(
        stream: TcpStream,
        shared: Arc<Mutex<Shared>>,
        header_read_timeout: std::time::Duration,
    ) -> Self {
        Self {
            stream,
            shared,
            header_read_timeout,
            timer: None,
        }
    }

    /// Whether the current deadline has passed (registering a wake-up at it
    /// otherwise).
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = {
            let mut shared = lock(&self.shared);
            if !shared
                .reader
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                shared.reader = Some(cx.waker().clone());
            }
            match shared.phase {
                Phase::Waiting { deadline } | Phase::ReadingHead { deadline } => deadline,
                Phase::Serving => return false,
            }
        };
        match &mut self.timer {
            Some((armed, sleep)) => {
                if *armed != deadline {
                    sleep.as_mut().reset(deadline);
                    *armed = deadline;
                }
            }
            None => {
                self.timer = Some((deadline, Box::pin(tokio::time::sleep_until(deadline))));
            }
        }
        self.timer
            .as_mut()
            .is_some_and(|(_, sleep)| sleep.as_mut().poll(cx).is_ready())
    }
}

impl AsyncRead for DeadlineIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut shared = lock(&self.shared);
                    if let Phase::Waiting { .. } = shared.phase {
                        shared.phase = Phase::ReadingHead {
                            deadline: Instant::now() + self.header_read_timeout,
                        };
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.deadline_passed(cx) {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection deadline passed",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for DeadlineIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The router as hyper's service: marks the connection as serving while a
/// request runs, bounds the request body's arrival, and marks it waiting
/// (idle deadline) once the response body is done with.
#[derive(Clone)]
struct Service {
    router: axum::Router,
    shared: Arc<Mutex<Shared>>,
    limits: Arc<ConnectionLimits>,
}

impl hyper::service::Service<http::Request<Incoming>> for Service {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        lock(&self.shared).phase = Phase::Serving;
        let body_deadline = Instant::now() + self.limits.body_read_timeout;
        let request = request.map(|body| Body::new(DeadlineBody::new(body, body_deadline)));
        let router = self.router.clone();
        let idle = IdleOnDrop {
            shared: Arc::clone(&self.shared),
            idle_timeout: self.limits.idle_timeout,
        };
        Box::pin(async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| Body::new(IdleAfter { body, _idle: idle })))
        })
    }
}

/// A response body that turns the connection idle when hyper drops it
/// (sent in full, or the client went away).
struct IdleAfter {
    body: Body,
    _idle: IdleOnDrop,
}

impl axum::body::HttpBody for IdleAfter {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Starts the idle deadline when dropped.
struct IdleOnDrop {
    shared: Arc<Mutex<Shared>>,
    idle_timeout: std::time::Duration,
}

impl Drop for IdleOnDrop {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        if let Phase::Serving = shared.phase {
            shared.phase = Phase::Waiting {
                deadline: Instant::now() + self.idle_timeout,
            };
            if let Some(reader) = shared.reader.take() {
                reader.wake();
            }
        }
    }
}
