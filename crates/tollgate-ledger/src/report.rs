//! Read-only revenue reporting over what the payment path recorded:
//! settled charges (`charge_payments`) and metered usage (`usage_records`).
//! Used by the metrics exporter, the operator dashboard and `tollgate report`.

/// How a request was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RevenueIntent {
    /// A one-off on-chain charge: the quote was paid (and settled) up front.
    Charge,
    /// Spent from a session channel (the plan endpoint included): the actual
    /// usage; it reaches the chain when the channel is settled.
    Session,
}

impl RevenueIntent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Session => "session",
        }
    }
}

/// Which records a report covers and how they are grouped in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevenueQuery {
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Width of a time bucket in seconds (`None`: one bucket for all time,
    /// reported with `bucket = 0`).
    pub bucket_secs: Option<u32>,
}

impl RevenueQuery {
    /// Everything, in one bucket.
    pub fn totals() -> Self {
        Self {
            since: None,
            until: None,
            bucket_secs: None,
        }
    }
}

/// Revenue of one (time bucket, route, model, intent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueRow {
    /// Start of the bucket, unix seconds (0 without buckets).
    pub bucket: i64,
    /// The route scope, e.g. `POST /v1/chat/completions`.
    pub route: String,
    /// The priced model; empty for fixed-price routes (no usage metered).
    pub model: String,
    pub intent: RevenueIntent,
    /// Paid requests.
    pub requests: u64,
    /// Base units kept: what charges paid less their refunds, or what
    /// sessions spent.
    pub amount: u128,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Base units of these charges refunded (or owed back) because their
    /// answer was not delivered; not in `amount`. Always 0 for sessions.
    pub refunded: u128,
}
