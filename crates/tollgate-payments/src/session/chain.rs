//! The seam between the session engine and a chain: what the gate reads
//! (a channel's state) and writes (the client's open/topUp, our settle and
//! close). v1 talks to the escrow contract ([`super::escrow`]), v2 to the
//! TIP-20 channel reserve ([`super::reserve`]); tests use a fake.
//!
//! Nothing here is on the per-voucher hot path.

use alloy::primitives::{Address, B256, Bytes};

use crate::session_v2::Descriptor;

/// Which session protocol a channel (or an offer) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The `TempoStreamChannel` escrow contract.
    V1,
    /// The TIP-1034 TIP-20 channel reserve.
    V2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }

    /// Reads a stored or advertised protocol name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "v1" => Some(Self::V1),
            "v2" => Some(Self::V2),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a channel is between, as the v1 escrow stores it. v2 channels carry
/// theirs in the descriptor, which hashes to the channel id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parties {
    pub payer: Address,
    pub payee: Address,
    pub token: Address,
    /// Zero delegates to the payer.
    pub authorized_signer: Address,
}

impl Parties {
    /// Who must sign vouchers: the authorized signer, else the payer.
    pub fn voucher_signer(&self) -> Address {
        if self.authorized_signer == Address::ZERO {
            self.payer
        } else {
            self.authorized_signer
        }
    }
}

/// A channel's state on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelState {
    /// Whether the chain holds a channel under this id (v2 deletes a
    /// channel when it closes, so a closed v2 channel reads as absent).
    pub exists: bool,
    pub finalized: bool,
    pub close_requested_at: u64,
    pub deposit: u128,
    pub settled: u128,
    /// v1 only.
    pub parties: Option<Parties>,
}

impl ChannelState {
    /// Nothing under this id.
    pub const ABSENT: Self = Self {
        exists: false,
        finalized: false,
        close_requested_at: 0,
        deposit: 0,
        settled: 0,
        parties: None,
    };
}

/// What went wrong talking to the chain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached or did not answer in time: outcome unknown.
    #[error("chain unreachable: {0}")]
    Unavailable(String),
    /// The node refused the transaction, or it reverted.
    #[error("transaction refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
}

/// A confirmed transaction.
#[derive(Debug, Clone)]
pub struct Confirmed {
    pub tx_hash: B256,
}

/// A settle or close the payee sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementCall {
    /// `close` (refunds the rest) rather than `settle` (channel stays open).
    pub close: bool,
    pub channel_id: B256,
    /// v2 channels are addressed by descriptor.
    pub descriptor: Option<Descriptor>,
    /// The voucher's cumulative amount.
    pub cumulative: u128,
    /// What a v2 close pays the payee (`max(spent, settled)`); v1 captures
    /// `cumulative` and ignores this.
    pub capture: u128,
    /// The voucher's signature; empty when nothing above `settled` is owed.
    pub signature: Bytes,
}

/// Reads and writes one session protocol's channels on one chain.
#[async_trait::async_trait]
pub trait SessionChain: Send + Sync {
    fn protocol(&self) -> Protocol;
    /// The escrow contract (v1) or channel reserve (v2) address.
    fn escrow(&self) -> Address;
    fn chain_id(&self) -> u64;
    /// The payee's address we settle as, if we can sign.
    fn operator(&self) -> Option<Address>;

    /// The channel's state; v2 reads need the descriptor's id only, but the
    /// descriptor is passed so an implementation may check it.
    async fn channel(
        &self,
        channel_id: B256,
        descriptor: Option<&Descriptor>,
    ) -> Result<ChannelState, ChainError>;

    /// Broadcasts a signed transaction and waits for its receipt.
    async fn broadcast(&self, tx: &[u8]) -> Result<Confirmed, ChainError>;

    /// Signs (but does not send) a settle or close from the operator, so
    /// its hash can be recorded before it is broadcast.
    async fn sign_settlement(&self, call: &SettlementCall) -> Result<(B256, Vec<u8>), ChainError>;

    /// Whether a transaction landed: `Some(true)` succeeded, `Some(false)`
    /// reverted, `None` unknown to the node.
    async fn receipt_status(&self, tx_hash: B256) -> Result<Option<bool>, ChainError>;
}
