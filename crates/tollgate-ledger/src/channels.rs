//! Session channel accounting: what each escrow channel has authorized,
//! what was charged, what is held by requests in flight and what is settled.
//!
//! Every operation is one conditional statement or one database
//! transaction, so per-channel updates are linearizable — across instances
//! sharing a store too — and durable before the caller acts on them.

use async_trait::async_trait;

use crate::LedgerError;

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelStatus {
    /// Accepting vouchers and serving requests.
    Open,
    /// A close was asked for (by the payer, the operator or a forced close
    /// on chain): no new service.
    Closing,
    /// Closed on chain; nothing more can happen.
    Finalized,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closing => "closing",
            Self::Finalized => "finalized",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "open" => Self::Open,
            "closing" => Self::Closing,
            _ => Self::Finalized,
        }
    }
}

/// A settlement transaction signed and maybe broadcast, not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// `settle` or `close`.
    pub kind: String,
    pub tx_hash: String,
    /// The voucher amount it settles.
    pub amount: u128,
    /// Unix seconds.
    pub since: i64,
}

/// One channel's state as we know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// Lowercase 0x-hex bytes32.
    pub channel_id: String,
    /// `v1` (escrow contract) or `v2` (channel precompile).
    pub protocol: String,
    pub escrow: String,
    pub chain_id: u64,
    pub payer: String,
    pub payee: String,
    pub token: String,
    /// The address whose signature vouchers must carry.
    pub authorized_signer: String,
    /// v2 channel descriptor, as JSON.
    pub descriptor: Option<String>,
    pub deposit: u128,
    pub accepted: u128,
    pub spent: u128,
    pub reserved: u128,
    pub settled: u128,
    pub units: u64,
    pub close_requested_at: u64,
    pub status: ChannelStatus,
    pub opened_at: i64,
    pub updated_at: i64,
    pub last_settled_at: Option<i64>,
    pub inflight: Option<InFlight>,
}

impl ChannelRecord {
    /// Authorized and not yet charged or held.
    pub fn available(&self) -> u128 {
        self.accepted.saturating_sub(self.spent + self.reserved)
    }

    /// Charged but not yet settled on chain.
    pub fn unsettled(&self) -> u128 {
        self.spent.saturating_sub(self.settled)
    }

    /// Becomes `newer` in place: its strings are copied into this record's
    /// (a channel's id and parties never change, so refreshing a cached
    /// record allocates nothing, where a clone allocates every string).
    pub fn refresh_from(&mut self, newer: &Self) {
        let Self {
            channel_id,
            protocol,
            escrow,
            chain_id,
            payer,
            payee,
            token,
            authorized_signer,
            descriptor,
            deposit,
            accepted,
            spent,
            reserved,
            settled,
            units,
            close_requested_at,
            status,
            opened_at,
            updated_at,
            last_settled_at,
            inflight,
        } = newer;
        self.channel_id.clone_from(channel_id);
        self.protocol.clone_from(protocol);
        self.escrow.clone_from(escrow);
        self.chain_id = *chain_id;
        self.payer.clone_from(payer);
        self.payee.clone_from(payee);
        self.token.clone_from(token);
        self.authorized_signer.clone_from(authorized_signer);
        self.descriptor.clone_from(descriptor);
        self.deposit = *deposit;
        self.accepted = *accepted;
        self.spent = *spent;
        self.reserved = *reserved;
        self.settled = *settled;
        self.units = *units;
        self.close_requested_at = *close_requested_at;
        self.status = *status;
        self.opened_at = *opened_at;
        self.updated_at = *updated_at;
        self.last_settled_at = *last_settled_at;
        self.inflight.clone_from(inflight);
    }
}

/// A signed cumulative voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVoucher {
    pub cumulative: u128,
    /// 0x-hex signature.
    pub signature: String,
}

/// Why a (validly signed) voucher was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoucherRefusal {
    NotFound,
    Finalized,
    /// A close is pending (ours or a forced one): service could not be settled.
    Closing,
    /// Below the highest accepted voucher.
    Decreasing {
        accepted: u128,
    },
    /// Increase smaller than the configured minimum.
    DeltaTooSmall {
        accepted: u128,
    },
    /// Above the channel's deposit.
    ExceedsDeposit {
        deposit: u128,
    },
}

/// What happened to a voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoucherOutcome {
    /// A new highest voucher, durably stored.
    Accepted(ChannelRecord),
    /// Equal to the highest accepted: an idempotent resubmission.
    Unchanged(ChannelRecord),
    Refused(VoucherRefusal),
}

/// What happened to a reservation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved {
        reservation: i64,
        channel: ChannelRecord,
    },
    /// `available` is below what was asked.
    Insufficient { channel: ChannelRecord },
    /// Unknown, closing or finalized.
    Unavailable(VoucherRefusal),
}

/// Chain facts refreshed from the escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnChainFacts {
    pub deposit: u128,
    pub settled: u128,
    pub close_requested_at: u64,
    pub finalized: bool,
}

/// A response stored for `Idempotency-Key` retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What an idempotent request should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First time: go ahead, then `idempotency_finish` or `_abandon`.
    Started,
    /// The same key is being served right now.
    InProgress,
    /// Answered before: replay this.
    Done(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
}

/// Channel accounting, part of every [`Ledger`](crate::Ledger).
#[async_trait]
pub trait ChannelBook: Send + Sync {
    /// Records a channel verified on chain and accepts its initial voucher.
    /// Opening an already known channel refreshes its deposit and keeps its
    /// accounting.
    async fn open_channel(
        &self,
        channel: &ChannelRecord,
        initial: Option<&StoredVoucher>,
    ) -> Result<ChannelRecord, LedgerError>;

    async fn channel(&self, channel_id: &str) -> Result<Option<ChannelRecord>, LedgerError>;

    /// All channels, newest first.
    async fn channels(&self) -> Result<Vec<ChannelRecord>, LedgerError>;

    /// Accepts a voucher whose signature the caller verified: monotonic,
    /// at least `min_delta` above the last, within the deposit.
    async fn accept_voucher(
        &self,
        channel_id: &str,
        voucher: &StoredVoucher,
        min_delta: u128,
    ) -> Result<VoucherOutcome, LedgerError>;

    /// Keeps a validly signed voucher that is not a new highest (a close
    /// voucher for exactly what was spent). Within the deposit only.
    async fn store_voucher(
        &self,
        channel_id: &str,
        voucher: &StoredVoucher,
    ) -> Result<(), LedgerError>;

    /// The smallest accepted voucher at or above `at_least`.
    async fn voucher_covering(
        &self,
        channel_id: &str,
        at_least: u128,
    ) -> Result<Option<StoredVoucher>, LedgerError>;

    /// The largest accepted voucher at or below `at_most`.
    async fn voucher_within(
        &self,
        channel_id: &str,
        at_most: u128,
    ) -> Result<Option<StoredVoucher>, LedgerError>;

    /// Stores what the escrow says now. A close request on chain or
    /// finalization stops service.
    async fn refresh_channel(
        &self,
        channel_id: &str,
        facts: OnChainFacts,
    ) -> Result<Option<ChannelRecord>, LedgerError>;

    /// Holds `amount` of the available balance for one request, owned by
    /// this handle's instance. Holds of instances whose lease ran out do not
    /// count against the balance.
    async fn reserve(&self, channel_id: &str, amount: u128) -> Result<ReserveOutcome, LedgerError>;

    /// Adds `extra` to a reservation (streaming past its first estimate).
    async fn grow_reservation(
        &self,
        reservation: i64,
        extra: u128,
    ) -> Result<ReserveOutcome, LedgerError>;

    /// Charges part of a reservation while its stream runs: moves what
    /// makes the reservation's charged total `charged` (capped at what it
    /// holds; never lowered) from `reserved` to `spent`, so a crash keeps
    /// what was delivered. Returns the reservation's charged total (`None`
    /// when it is not held).
    async fn checkpoint_reservation(
        &self,
        reservation: i64,
        charged: u128,
    ) -> Result<Option<u128>, LedgerError>;

    /// Charges `cost` (capped at what the reservation holds, checkpoints
    /// included) and releases the rest; `units` are added to the channel's
    /// delivered units. The charge replaces the checkpoints: a stream whose
    /// upstream reported less than was counted is charged the report.
    async fn commit(
        &self,
        reservation: i64,
        cost: u128,
        units: u64,
    ) -> Result<ChannelRecord, LedgerError>;

    /// Releases a reservation without charging. When the store is away the
    /// release is retried in the background.
    async fn release_reservation(&self, reservation: i64) -> Result<(), LedgerError>;

    /// Stops new service on a channel (a close is under way).
    async fn mark_closing(&self, channel_id: &str) -> Result<Option<ChannelRecord>, LedgerError>;

    /// Records a signed settlement transaction before it is broadcast.
    async fn begin_settlement(
        &self,
        channel_id: &str,
        in_flight: &InFlight,
    ) -> Result<(), LedgerError>;

    /// Records the confirmed outcome and clears the in-flight marker.
    async fn finish_settlement(
        &self,
        channel_id: &str,
        settled: u128,
        finalized: bool,
    ) -> Result<Option<ChannelRecord>, LedgerError>;

    /// Clears an in-flight marker whose transaction did not land.
    async fn abandon_settlement(&self, channel_id: &str) -> Result<(), LedgerError>;

    /// Starts an idempotent request under `key_hash`, owned by this
    /// instance. A pending key whose owner's lease ran out is taken over.
    async fn idempotency_begin(
        &self,
        key_hash: &str,
        fingerprint: &str,
    ) -> Result<IdempotencyBegin, LedgerError>;

    async fn idempotency_finish(
        &self,
        key_hash: &str,
        response: &StoredResponse,
    ) -> Result<(), LedgerError>;

    /// Forgets a started request that produced nothing worth replaying.
    async fn idempotency_abandon(&self, key_hash: &str) -> Result<(), LedgerError>;
}
