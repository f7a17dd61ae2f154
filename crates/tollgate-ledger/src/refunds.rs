//! Refunds of charges whose answer was not delivered: recorded before the
//! refund transfer is signed, its signed bytes recorded before they are
//! broadcast, and marked refunded once the chain confirms it.

use async_trait::async_trait;

use crate::LedgerError;

/// Where a refund is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundState {
    /// Owed to the payer, not sent yet (no refund key, payer not known
    /// yet, or the last transfer reverted).
    Owed,
    /// A signed transfer is recorded and was (maybe) broadcast.
    Sent,
    /// Confirmed on chain.
    Refunded,
}

impl RefundState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owed => "owed",
            Self::Sent => "sent",
            Self::Refunded => "refunded",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "sent" => Self::Sent,
            "refunded" => Self::Refunded,
            _ => Self::Owed,
        }
    }
}

/// One charge's refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    /// The challenge the refunded charge paid.
    pub challenge_id: String,
    pub route: String,
    /// The charge's transaction hash.
    pub charge_reference: String,
    /// Who is refunded (0x-hex), once known.
    pub payer: Option<String>,
    /// Base units.
    pub amount: u128,
    pub currency: String,
    /// `undelivered` (nothing delivered: the whole charge) or `partial`
    /// (a stream that broke off: what it did not deliver).
    pub reason: String,
    pub state: RefundState,
    /// The refund transfer's hash, once signed.
    pub tx_hash: Option<String>,
    /// The refund transfer's signed bytes (0x-hex), once signed.
    pub signed_tx: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// Refund bookkeeping, part of every [`Ledger`](crate::Ledger).
#[async_trait]
pub trait RefundBook: Send + Sync {
    /// Records a refund as owed. `false` when this charge already has one
    /// (a refund happens at most once per charge).
    async fn record_refund(&self, refund: &RefundRecord) -> Result<bool, LedgerError>;

    /// Sets the payer of a refund that did not know it yet.
    async fn set_refund_payer(&self, challenge_id: &str, payer: &str) -> Result<(), LedgerError>;

    /// Records the signed transfer (before it is broadcast): state `sent`.
    /// Only an `owed` refund moves; `false` otherwise.
    async fn refund_signed(
        &self,
        challenge_id: &str,
        tx_hash: &str,
        signed_tx: &str,
    ) -> Result<bool, LedgerError>;

    /// The transfer is confirmed: state `refunded`.
    async fn refund_confirmed(&self, challenge_id: &str) -> Result<(), LedgerError>;

    /// The transfer reverted on chain (its nonce is spent, nothing moved):
    /// back to `owed`, ready to be signed again.
    async fn refund_reverted(&self, challenge_id: &str) -> Result<(), LedgerError>;

    async fn refund(&self, challenge_id: &str) -> Result<Option<RefundRecord>, LedgerError>;

    /// Refunds not confirmed yet, oldest first.
    async fn open_refunds(&self) -> Result<Vec<RefundRecord>, LedgerError>;

    /// Most recent refunds first (reporting).
    async fn recent_refunds(&self, limit: u32) -> Result<Vec<RefundRecord>, LedgerError>;
}
