//! Durable state for Tollgate behind one trait.
//!
//! Callers hold an [`Arc<dyn Ledger>`](Ledger); the embedded default is
//! [`SqliteLedger`], and [`PgLedger`] lets several gateway instances share
//! one PostgreSQL database. Holds carry their owner instance and live with
//! its lease ([`instance`]); [`spawn_keeper`] renews the lease and frees the
//! holds of instances that died.
#![forbid(unsafe_code)]

mod channels;
mod error;
pub mod instance;
mod keeper;
mod postgres;
mod refunds;
mod report;
mod reservation_ids;
mod sqlite;
mod sqlite_channels;
mod sqlite_checkpoint;
mod sqlite_close;
mod sqlite_holds;
mod sqlite_hot;
mod sqlite_refunds;
mod sqlite_report;
mod sqlite_rows;
mod sqlite_writer;

pub use channels::{
    ChannelBook, ChannelRecord, ChannelStatus, IdempotencyBegin, InFlight, OnChainFacts,
    ReserveOutcome, StoredResponse, StoredVoucher, VoucherOutcome, VoucherRefusal,
};
pub use error::LedgerError;
pub use instance::{ChannelEvent, DEFAULT_LEASE, Hold, HoldsReleased, Instance};
pub use keeper::spawn_keeper;
pub use postgres::{PgLedger, PgSettings, test_database, test_server_url};
pub use refunds::{RefundBook, RefundRecord, RefundState};
pub use report::{RevenueIntent, RevenueQuery, RevenueRow};
pub use sqlite::{Durability, SqliteLedger};

use async_trait::async_trait;
use tokio::sync::broadcast;

/// Outcome of an attempt to claim a single-use key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was free and is now held by the caller.
    Claimed,
    /// Someone already holds (or has spent) this key.
    AlreadyClaimed,
}

/// A settled charge, recorded for revenue reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRecord {
    pub challenge_id: String,
    pub route: String,
    /// Integer amount in token base units, kept as a decimal string so that
    /// amounts above `u64` survive unchanged.
    pub amount: String,
    pub currency: String,
    /// Method-specific reference (the transaction hash for Tempo).
    pub reference: String,
    /// Unix seconds.
    pub settled_at: i64,
}

/// What one paid call used, and what that usage costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The challenge that paid for the call (`None` for unpaid calls).
    pub challenge_id: Option<String>,
    pub route: String,
    pub model: String,
    /// The worst-case amount asked up front.
    pub quoted: u128,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    /// Usage priced by the table (markup and minimum applied).
    pub actual_cost: u128,
    /// Whether the upstream reported usage (else the quote stands in).
    pub usage_reported: bool,
    /// Unix seconds.
    pub recorded_at: i64,
}

/// Instances sharing one store: leases, hold recovery, the settlement
/// leader and cross-instance channel events. Part of every [`Ledger`].
///
/// Holds taken through a handle belong to [`instance`](Self::instance);
/// callers never pass an owner.
#[async_trait]
pub trait Instances: Send + Sync {
    /// Who this handle's holds belong to.
    fn instance(&self) -> &Instance;

    /// At start-up, before serving: renews this instance's lease and
    /// releases the holds an earlier process under the same id left behind.
    /// Holds of other instances are never touched.
    async fn start_instance(&self) -> Result<HoldsReleased, LedgerError>;

    /// Extends this instance's lease by its length from now (the keeper's
    /// heartbeat). New holds are refused while renewals fail for more than
    /// two thirds of a lease.
    async fn renew_lease(&self) -> Result<(), LedgerError>;

    /// Deletes the holds of instances whose lease ran out (any live
    /// instance may; they already count as free for reserve and claim).
    async fn release_expired_holds(&self) -> Result<HoldsReleased, LedgerError>;

    /// Releases `hold` in the background, without waiting: for values that
    /// release themselves on drop, and for releases the store refused while
    /// it was away. Retried by the keeper until the store takes it.
    fn release_soon(&self, hold: Hold);

    /// Retries the releases handed to [`release_soon`](Self::release_soon);
    /// returns how many are still waiting.
    async fn flush_releases(&self) -> usize;

    /// Whether this instance is the settlement leader: at most one live
    /// instance gets `true` at a time. Call before every settlement pass;
    /// leadership passes on when the leader dies.
    async fn lead_settlement(&self) -> Result<bool, LedgerError>;

    /// Channel events from every instance sharing the store.
    fn channel_events(&self) -> broadcast::Receiver<ChannelEvent>;
}

/// Durable state used by the payment path.
///
/// Every write is committed before the call returns, so anything a caller
/// acts on (serving a request, answering a client) survives a crash.
#[async_trait]
pub trait Ledger: ChannelBook + RefundBook + Instances + Send + Sync + 'static {
    /// Atomically claims `key` for one payment. Exactly one of any number of
    /// concurrent callers gets [`ClaimOutcome::Claimed`]. A pending claim
    /// whose owner's lease ran out is taken over.
    async fn claim(&self, key: &str) -> Result<ClaimOutcome, LedgerError>;

    /// Marks claims as spent for good.
    async fn settle_claims(&self, keys: &[&str]) -> Result<(), LedgerError>;

    /// Gives back a pending claim of this instance after a failure that
    /// moved no funds, so the client may retry. A settled claim is never
    /// released.
    async fn release_claim(&self, key: &str) -> Result<(), LedgerError>;

    /// Records a settled charge and settles its claims in one transaction.
    async fn record_charge(
        &self,
        record: &ChargeRecord,
        claim_keys: &[&str],
    ) -> Result<(), LedgerError>;

    /// Most recent charges first.
    async fn recent_charges(&self, limit: u32) -> Result<Vec<ChargeRecord>, LedgerError>;

    /// Appends a usage record.
    async fn record_usage(&self, record: &UsageRecord) -> Result<(), LedgerError>;

    /// Appends a usage record without waiting for it: the payment path's
    /// way, since a record reports what was charged and the charge itself
    /// is already durable. A backend may batch records with its other
    /// writes; a failure is logged.
    fn note_usage(self: std::sync::Arc<Self>, record: UsageRecord) {
        tokio::spawn(async move {
            if let Err(e) = self.record_usage(&record).await {
                tracing::error!(error = %e, route = %record.route, "could not record usage");
            }
        });
    }

    /// Usage records paid by one challenge, oldest first.
    async fn usage_for(&self, challenge_id: &str) -> Result<Vec<UsageRecord>, LedgerError>;

    /// Revenue grouped by time bucket, route, model and intent (read-only,
    /// for metrics, the dashboard and reports). Backends that cannot answer
    /// yet return [`LedgerError::Unsupported`]: reporting is then empty, the
    /// payment path is unaffected.
    ///
    /// Semantics every backend must keep (see the SQLite query): a charge
    /// counts its `charge_payments` amount less its `refunds` amount (any
    /// state; reported apart in `refunded`), with model and tokens from the
    /// first usage record of the same challenge (empty model when none);
    /// any other usage record with a challenge counts its `actual_cost` as
    /// session spend. `since` is inclusive, `until` exclusive; buckets are
    /// `floor(t / width) * width`.
    async fn revenue(&self, query: RevenueQuery) -> Result<Vec<RevenueRow>, LedgerError> {
        let _ = query;
        Err(LedgerError::Unsupported("revenue reports"))
    }

    /// Key-value access for the protocol SDK's store.
    async fn kv_get(&self, key: &str) -> Result<Option<String>, LedgerError>;
    async fn kv_put(&self, key: &str, value: &str) -> Result<(), LedgerError>;
    async fn kv_delete(&self, key: &str) -> Result<(), LedgerError>;
    /// Inserts only when absent; `true` when this call inserted.
    async fn kv_put_if_absent(&self, key: &str, value: &str) -> Result<bool, LedgerError>;
    /// Replaces `expected` by `new` (`None` = absent) atomically.
    async fn kv_compare_exchange(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, LedgerError>;
}
