//! The keeper: one background task per instance that renews its lease,
//! retries releases the store refused, and frees the holds of instances
//! whose lease ran out.

use std::future::Future;
use std::sync::{Arc, Weak};

use crate::instance::{Hold, Shared};
use crate::{Ledger, LedgerError};

/// Runs until the ledger is dropped: renews the lease every quarter lease,
/// then flushes deferred releases and releases expired holds.
pub fn spawn_keeper(ledger: &Arc<dyn Ledger>) -> tokio::task::JoinHandle<()> {
    let every = ledger.instance().renew_every();
    let ledger: Weak<dyn Ledger> = Arc::downgrade(ledger);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewing_failed = false;
        loop {
            tick.tick().await;
            let Some(ledger) = ledger.upgrade() else {
                return;
            };
            match ledger.renew_lease().await {
                Ok(()) if renewing_failed => {
                    renewing_failed = false;
                    tracing::info!("instance lease renewed again");
                }
                Ok(()) => {}
                Err(e) => {
                    if !renewing_failed {
                        tracing::warn!(error = %e, "could not renew this instance's lease");
                    }
                    renewing_failed = true;
                    continue;
                }
            }
            ledger.flush_releases().await;
            match ledger.release_expired_holds().await {
                Ok(released) if !released.is_empty() => tracing::warn!(
                    reservations = released.reservations,
                    claims = released.claims,
                    idempotency_keys = released.idempotency_keys,
                    "released holds of instances whose lease ran out"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not release expired holds"),
            }
        }
    })
}

/// Releases every deferred hold with `release`; those the store refuses
/// while away are kept for the next try. Returns how many are kept.
pub(crate) async fn flush<F, Fut>(shared: &Shared, release: F) -> usize
where
    F: Fn(Hold) -> Fut,
    Fut: Future<Output = Result<(), LedgerError>>,
{
    let mut kept = 0;
    for hold in shared.take_deferred() {
        match release(hold.clone()).await {
            Ok(()) => {}
            Err(e) if e.is_unavailable() => {
                shared.defer(hold);
                kept += 1;
            }
            Err(e) => tracing::error!(error = %e, "could not release a hold"),
        }
    }
    kept
}
