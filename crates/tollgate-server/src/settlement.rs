//! The settlement worker: keeps each open channel's on-chain view fresh
//! (deposit, forced-close requests), settles what was spent once enough is
//! owed or it is old enough, and settles at once when the payer asked the
//! escrow for a forced close (before its grace period ends).
//!
//! Every instance runs the worker, but only the settlement leader acts (an
//! advisory lock on PostgreSQL, a lease row on SQLite). A new leader's first
//! pass reconciles the settlements its dead predecessor left in flight.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tollgate_ledger::{ChannelRecord, ChannelStatus, Ledger};
use tollgate_payments::session::SessionGate;

use crate::admin::SettlementCounters;
use crate::config::SettlementPolicy;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Settlement transactions confirmed.
    pub settled: u64,
    /// Settlements attempted that failed (retried on a later sweep).
    pub failed: u64,
}

/// Runs until the gateway is dropped; counts what it settles in `counters`.
pub fn spawn(
    sessions: &Arc<SessionGate>,
    policy: SettlementPolicy,
    counters: Arc<SettlementCounters>,
    ledger: Arc<dyn Ledger>,
) {
    let sessions = Arc::downgrade(sessions);
    let ledger: Weak<dyn Ledger> = Arc::downgrade(&ledger);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(policy.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading = false;
        loop {
            tick.tick().await;
            let (Some(sessions), Some(ledger)) = (Weak::upgrade(&sessions), Weak::upgrade(&ledger))
            else {
                return;
            };
            match ledger.lead_settlement().await {
                Ok(true) => {
                    if !leading {
                        tracing::info!("settlement worker: this instance leads");
                    }
                    leading = true;
                }
                Ok(false) => {
                    leading = false;
                    continue;
                }
                Err(e) => {
                    leading = false;
                    tracing::warn!(error = %e, "settlement worker: leadership unknown; skipping");
                    continue;
                }
            }
            match sweep(&sessions, policy).await {
                Ok(report) => {
                    counters
                        .settled
                        .fetch_add(report.settled, Ordering::Relaxed);
                    counters.failed.fetch_add(report.failed, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "settlement sweep incomplete");
                }
            }
        }
    });
}

/// One pass over every channel. Public for the operator CLI and tests.
pub async fn sweep(
    sessions: &SessionGate,
    policy: SettlementPolicy,
) -> Result<SweepReport, String> {
    let mut report = SweepReport::default();
    sessions.reconcile().await.map_err(|p| p.to_string())?;
    let channels = sessions.channels().await.map_err(|p| p.to_string())?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for channel in channels
        .iter()
        .filter(|c| c.status != ChannelStatus::Finalized)
    {
        let Ok(id) = channel.channel_id.parse() else {
            continue;
        };
        // Refresh: the payer may have topped up or requested a forced close.
        let fresh = match sessions.refresh(id).await {
            Ok(fresh) => fresh,
            Err(problem) => {
                tracing::warn!(problem = problem.kind.slug(), "could not refresh a channel");
                continue;
            }
        };
        if fresh.status == ChannelStatus::Finalized || sessions.chain().operator().is_none() {
            continue;
        }
        if due(&fresh, policy, now) {
            match sessions.submit_settlement(&fresh.channel_id, false).await {
                Ok(Some(_)) => {
                    report.settled += 1;
                    tracing::info!(
                        forced_close = fresh.close_requested_at != 0,
                        "channel settled"
                    )
                }
                Ok(None) => {}
                Err(problem) => {
                    report.failed += 1;
                    tracing::warn!(problem = problem.kind.slug(), "settlement failed")
                }
            }
        }
    }
    Ok(report)
}

/// Whether a channel should be settled now.
pub fn due(channel: &ChannelRecord, policy: SettlementPolicy, now: i64) -> bool {
    let unsettled = channel.unsettled();
    if unsettled == 0 {
        return false;
    }
    let since = channel.last_settled_at.unwrap_or(channel.opened_at);
    channel.close_requested_at != 0
        || unsettled >= policy.min_unsettled
        || now.saturating_sub(since) >= policy.max_age.as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn channel(spent: u128, settled: u128, close_requested_at: u64, last: i64) -> ChannelRecord {
        ChannelRecord {
            channel_id: "0x01".into(),
            protocol: "v1".into(),
            escrow: String::new(),
            chain_id: 1,
            payer: String::new(),
            payee: String::new(),
            token: String::new(),
            authorized_signer: String::new(),
            descriptor: None,
            deposit: 1_000,
            accepted: 1_000,
            spent,
            reserved: 0,
            settled,
            units: 0,
            close_requested_at,
            status: ChannelStatus::Open,
            opened_at: last,
            updated_at: last,
            last_settled_at: None,
            inflight: None,
        }
    }

    #[test]
    fn settles_by_amount_age_or_forced_close() {
        let policy = SettlementPolicy {
            interval: Duration::from_secs(1),
            min_unsettled: 500,
            max_age: Duration::from_secs(60),
        };
        assert!(!due(&channel(400, 400, 0, 0), policy, 1_000));
        assert!(!due(&channel(400, 0, 0, 990), policy, 1_000));
        assert!(due(&channel(400, 0, 0, 900), policy, 1_000));
        assert!(due(&channel(500, 0, 0, 990), policy, 1_000));
        assert!(due(&channel(1, 0, 7, 999), policy, 1_000));
    }
}
