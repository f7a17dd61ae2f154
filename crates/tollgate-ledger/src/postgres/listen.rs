//! Channel events across instances: a dedicated connection `LISTEN`s on
//! [`VOUCHER_EVENTS`]; every voucher acceptance `NOTIFY`s it in the same
//! statement (delivered at commit). After a reconnect a `Resync` tells
//! waiters to look again, since events may have been missed meanwhile.

use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::VOUCHER_EVENTS;
use crate::instance::{ChannelEvent, Shared};

const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Runs until the ledger is dropped (the task is aborted then).
pub(crate) async fn run(config: tokio_postgres::Config, shared: Weak<Shared>) {
    let mut connected_before = false;
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(|cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = message
                            && tx.send(n.payload().to_owned()).is_err()
                        {
                            return;
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {VOUCHER_EVENTS}"))
                    .await
                    .is_ok()
                {
                    if connected_before {
                        tracing::info!("channel events: listening again");
                        announce(&shared, ChannelEvent::Resync);
                    }
                    connected_before = true;
                    while let Some(channel_id) = rx.recv().await {
                        if !announce(&shared, ChannelEvent::VoucherAccepted(channel_id)) {
                            return;
                        }
                    }
                    tracing::warn!("channel events: listener connection lost");
                }
                driver.abort();
            }
            Err(e) => tracing::debug!(error = %e, "channel events: cannot connect"),
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// `false` once the ledger is gone.
fn announce(shared: &Weak<Shared>, event: ChannelEvent) -> bool {
    match shared.upgrade() {
        Some(shared) => {
            shared.announce(event);
            true
        }
        None => false,
    }
}
