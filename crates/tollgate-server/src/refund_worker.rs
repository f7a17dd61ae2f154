//! The refund worker: after a restart, and then every half minute, moves
//! every refund that is not confirmed on — sends what is owed (when a key
//! is configured), resends what was signed but not confirmed (the same
//! bytes, which can land only once), confirms what landed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tollgate_payments::Refunds;

const INTERVAL: Duration = Duration::from_secs(30);

/// Runs until the gateway is dropped.
pub fn spawn(refunds: &Arc<Refunds>) {
    let refunds = Arc::downgrade(refunds);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(refunds) = Weak::upgrade(&refunds) else {
                return;
            };
            match refunds.reconcile().await {
                Ok(0) => {}
                Ok(open) => tracing::warn!(open, "refunds still owed or unconfirmed"),
                Err(e) => tracing::warn!(error = %e, "refund pass incomplete"),
            }
        }
    });
}
