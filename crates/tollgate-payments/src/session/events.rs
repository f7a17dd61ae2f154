//! Streams wake across instances: vouchers accepted by any instance sharing
//! the ledger (PostgreSQL `LISTEN/NOTIFY`; SQLite: this process) ring this
//! gate's bells, so a stream paused here resumes when its voucher lands on
//! another instance.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tollgate_ledger::ChannelEvent;

use super::SessionGate;

impl SessionGate {
    /// Rings the voucher bells on the ledger's channel events, until the
    /// gate is dropped. Call once, from within a Tokio runtime.
    pub fn ring_on_channel_events(self: &Arc<Self>) {
        let mut events = self.ledger.channel_events();
        let gate = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(gate) = gate.upgrade() else {
                    return;
                };
                match event {
                    Ok(ChannelEvent::VoucherAccepted(channel_id)) => gate.ring(&channel_id),
                    // Events were missed: every paused stream looks again.
                    Ok(ChannelEvent::Resync) | Err(RecvError::Lagged(_)) => gate.ring_all(),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    fn ring_all(&self) {
        let bells = self.voucher_bells.lock().unwrap_or_else(|p| p.into_inner());
        for bell in bells.values() {
            bell.notify_waiters();
        }
    }
}
