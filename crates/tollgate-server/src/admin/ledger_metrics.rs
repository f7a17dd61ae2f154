//! Metrics computed from the ledger at scrape time: revenue, tokens, session
//! channels, exposure and settlement lag. Exact (they are the ledger's own
//! figures) and independent of the request pipeline.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{counter, gauge};
use tollgate_ledger::{ChannelRecord, ChannelStatus, Ledger, LedgerError, RevenueQuery};

use super::recorder::Observer;

/// What the settlement worker reports (it runs beside the pipeline).
#[derive(Default)]
pub struct SettlementCounters {
    pub settled: AtomicU64,
    pub failed: AtomicU64,
}

/// Channel figures summed over the channels that are not finalized.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ChannelTotals {
    pub open: u64,
    pub closing: u64,
    pub finalized: u64,
    #[serde(with = "decimal")]
    pub deposit: u128,
    #[serde(with = "decimal")]
    pub accepted: u128,
    #[serde(with = "decimal")]
    pub spent: u128,
    #[serde(with = "decimal")]
    pub reserved: u128,
    /// Settled on chain, over all channels (finalized included).
    #[serde(with = "decimal")]
    pub settled_all_time: u128,
    /// Accepted but not yet settled, over live channels.
    #[serde(with = "decimal")]
    pub exposure: u128,
    /// Age of the oldest spend not yet settled (0: nothing owed).
    pub settlement_lag_secs: u64,
    pub settlements_in_flight: u64,
}

impl ChannelTotals {
    pub fn of(channels: &[ChannelRecord], now: i64) -> Self {
        let mut totals = Self::default();
        for channel in channels {
            totals.settled_all_time += channel.settled;
            match channel.status {
                ChannelStatus::Open => totals.open += 1,
                ChannelStatus::Closing => totals.closing += 1,
                ChannelStatus::Finalized => {
                    totals.finalized += 1;
                    continue;
                }
            }
            totals.deposit += channel.deposit;
            totals.accepted += channel.accepted;
            totals.spent += channel.spent;
            totals.reserved += channel.reserved;
            totals.exposure += exposure(channel);
            if channel.inflight.is_some() {
                totals.settlements_in_flight += 1;
            }
            if channel.unsettled() > 0 {
                let since = channel.last_settled_at.unwrap_or(channel.opened_at);
                let lag = now.saturating_sub(since).max(0) as u64;
                totals.settlement_lag_secs = totals.settlement_lag_secs.max(lag);
            }
        }
        totals
    }
}

/// What the payer authorized on this channel that the chain does not hold
/// for us yet.
pub fn exposure(channel: &ChannelRecord) -> u128 {
    channel.accepted.saturating_sub(channel.settled)
}

/// Reads the ledger and sets the ledger-derived metrics.
pub async fn refresh(
    observer: &Observer,
    ledger: &dyn Ledger,
    settlement: &SettlementCounters,
) -> Result<(), LedgerError> {
    let revenue = match ledger.revenue(RevenueQuery::totals()).await {
        Ok(rows) => rows,
        Err(LedgerError::Unsupported(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let channels = ledger.channels().await?;
    let totals = ChannelTotals::of(&channels, now());
    let mut tokens: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    observer.with(|| {
        for row in &revenue {
            let state = match row.intent {
                tollgate_ledger::RevenueIntent::Charge => "charged",
                tollgate_ledger::RevenueIntent::Session => "spent",
            };
            let labels = [
                ("route", row.route.clone()),
                ("model", row.model.clone()),
                ("intent", row.intent.as_str().to_owned()),
            ];
            let mut with_state = labels.to_vec();
            with_state.push(("state", state.to_owned()));
            counter!("tollgate_revenue_base_units_total", &with_state).absolute(units(row.amount));
            if row.intent == tollgate_ledger::RevenueIntent::Charge {
                let mut refunded = labels.to_vec();
                refunded.push(("state", "refunded".to_owned()));
                counter!("tollgate_revenue_base_units_total", &refunded)
                    .absolute(units(row.refunded));
            }
            counter!("tollgate_paid_requests_total", &labels).absolute(row.requests);
            if !row.model.is_empty() {
                let entry = tokens.entry(&row.model).or_default();
                entry.0 += row.input_tokens;
                entry.1 += row.output_tokens;
            }
        }
        for (model, (input, output)) in tokens {
            counter!("tollgate_tokens_total", "model" => model.to_owned(), "direction" => "input")
                .absolute(input);
            counter!("tollgate_tokens_total", "model" => model.to_owned(), "direction" => "output")
                .absolute(output);
        }
        counter!("tollgate_session_settled_base_units_total")
            .absolute(units(totals.settled_all_time));
        for (status, count) in [
            ("open", totals.open),
            ("closing", totals.closing),
            ("finalized", totals.finalized),
        ] {
            gauge!("tollgate_channels", "status" => status).set(count as f64);
        }
        for (name, value) in [
            ("tollgate_channel_deposit_base_units", totals.deposit),
            ("tollgate_channel_accepted_base_units", totals.accepted),
            ("tollgate_channel_spent_base_units", totals.spent),
            ("tollgate_channel_reserved_base_units", totals.reserved),
            ("tollgate_exposure_base_units", totals.exposure),
        ] {
            gauge!(name).set(value as f64);
        }
        gauge!("tollgate_settlement_lag_seconds").set(totals.settlement_lag_secs as f64);
        gauge!("tollgate_settlements_in_flight").set(totals.settlements_in_flight as f64);
        counter!("tollgate_settlements_total").absolute(settlement.settled.load(Ordering::Relaxed));
        counter!("tollgate_settlement_failures_total")
            .absolute(settlement.failed.load(Ordering::Relaxed));
    });
    Ok(())
}

fn units(amount: u128) -> u64 {
    u64::try_from(amount).unwrap_or(u64::MAX)
}

pub(super) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Amounts as decimal strings in JSON (exact beyond 2^53).
pub(super) mod decimal {
    pub fn serialize<S: serde::Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }
}
