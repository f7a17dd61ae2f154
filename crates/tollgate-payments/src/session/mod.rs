//! The Tempo `session` intent, protocol v1 (escrow contract): channel
//! actions, voucher acceptance without RPC, per-request reservations and
//! settlement.
//!
//! Hot path: a voucher is checked by signature recovery against the signer
//! we stored at open, and against the deposit we cached; the chain is only
//! asked when a voucher exceeds that deposit (it may have been topped up
//! behind our back), on open/topUp, and by the settlement worker.

pub mod escrow;
mod events;
mod offer;
pub mod payload;
pub mod voucher;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};
use alloy::signers::local::PrivateKeySigner;
use mpp::protocol::methods::tempo::session_receipt::SessionReceipt;
use tokio::sync::Notify;
use tollgate_ledger::{
    ChannelRecord, ChannelStatus, InFlight, Ledger, LedgerError, OnChainFacts, ReserveOutcome,
    StoredVoucher, VoucherOutcome, VoucherRefusal,
};

use crate::problem::{PaymentProblem, ProblemKind};
pub use escrow::{ChainError, EscrowChain, OnChainChannel};
pub use offer::SessionOffer;
pub use payload::{Action, SignedVoucher};

/// How sessions are offered and run.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub rpc_url: String,
    pub rpc_timeout: Duration,
    pub escrow: Address,
    pub chain_id: u64,
    pub currency: Address,
    pub recipient: Address,
    pub suggested_deposit: u128,
    pub min_voucher_delta: u128,
    /// The payee's key: signs settle and close. Without it channels are
    /// only settled by hand.
    pub operator: Option<PrivateKeySigner>,
    /// Fee token for our settle/close transactions.
    pub fee_token: Option<Address>,
}

/// The outcome of a credential's action.
#[derive(Debug, Clone)]
pub struct Applied {
    pub channel: ChannelRecord,
    /// A close's transaction.
    pub tx_hash: Option<String>,
}

/// A held part of a channel's balance, for one request. It is a value that
/// releases itself: committed at most once ([`SessionGate::commit`]), or
/// released when dropped (client gone, timeout, panic, early return).
#[derive(Debug)]
pub struct Reservation {
    pub id: i64,
    pub channel_id: String,
    /// What is held so far.
    pub held: u128,
    release: crate::hold::ReleaseOnDrop,
}

impl Reservation {
    /// Nothing is left to release (committed or released by hand).
    fn settled(mut self) {
        self.release.disarm();
    }
}

/// Sessions on one escrow, with accounting in the ledger.
pub struct SessionGate {
    settings: SessionSettings,
    chain: EscrowChain,
    ledger: Arc<dyn Ledger>,
    /// Wakes streams paused for a voucher on a channel.
    voucher_bells: Mutex<HashMap<String, Arc<Notify>>>,
    /// Vouchers whose signature already verified (recovery is most of the
    /// cost of a resubmitted voucher).
    verified: VerifiedCache,
}

/// What makes a verified voucher: channel, amount, signature bytes and the
/// signer they recovered to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct VerifiedVoucher {
    channel_id: B256,
    cumulative: u128,
    signature: Bytes,
    signer: Address,
}

impl VerifiedVoucher {
    fn of(voucher: &SignedVoucher, signer: Address) -> Self {
        Self {
            channel_id: voucher.channel_id,
            cumulative: voucher.cumulative,
            signature: voucher.signature.clone(),
            signer,
        }
    }
}

/// A bounded set of verified vouchers; cleared when full (cheap, and a
/// miss only costs one signature recovery).
#[derive(Debug, Default)]
struct VerifiedCache(Mutex<std::collections::HashSet<VerifiedVoucher>>);

const VERIFIED_CAPACITY: usize = 16_384;

impl VerifiedCache {
    fn contains(&self, voucher: &VerifiedVoucher) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(voucher)
    }

    fn insert(&self, voucher: VerifiedVoucher) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() >= VERIFIED_CAPACITY {
            set.clear();
        }
        set.insert(voucher);
    }
}

impl SessionGate {
    pub fn new(settings: SessionSettings, ledger: Arc<dyn Ledger>) -> Result<Self, String> {
        let chain = EscrowChain::new(
            &settings.rpc_url,
            settings.escrow,
            settings.chain_id,
            settings.rpc_timeout,
            settings.operator.clone(),
        )?
        .with_fee_token(settings.fee_token);
        if let Some(operator) = chain.operator()
            && operator != settings.recipient
        {
            return Err(
                "the session operator key must belong to the recipient (the channel payee)".into(),
            );
        }
        Ok(Self {
            settings,
            chain,
            ledger,
            voucher_bells: Mutex::new(HashMap::new()),
            verified: VerifiedCache::default(),
        })
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    pub fn chain(&self) -> &EscrowChain {
        &self.chain
    }

    /// The session offer for a request that needs `amount` authorized.
    pub fn offer(&self, amount: u128, description: Option<String>) -> SessionOffer {
        SessionOffer {
            amount: 0,
            suggested_deposit: self.settings.suggested_deposit,
            currency: self.settings.currency,
            recipient: self.settings.recipient,
            chain_id: self.settings.chain_id,
            escrow: self.settings.escrow,
            min_voucher_delta: self.settings.min_voucher_delta,
            description: None,
        }
        .for_amount(amount, description)
    }

    /// Runs one channel action. `required` is what the request needs
    /// authorized (checked against an opening deposit).
    pub async fn apply(&self, action: &Action, required: u128) -> Result<Applied, PaymentProblem> {
        self.apply_for(action, required, None).await
    }

    /// [`apply`](Self::apply) for payers `allowed` accepts only (when
    /// given); checked before anything is broadcast or stored.
    pub async fn apply_for(
        &self,
        action: &Action,
        required: u128,
        allowed: Option<&(dyn Fn(Address) -> bool + Sync)>,
    ) -> Result<Applied, PaymentProblem> {
        if let Some(allowed) = allowed
            && !allowed(self.payer_of(action).await?)
        {
            return Err(PaymentProblem::new(
                ProblemKind::PayerNotAllowed,
                "this payer is not accepted here",
            ));
        }
        let applied = match action {
            Action::Open(open) => self.open(open, required).await?,
            Action::TopUp(top_up) => self.top_up(top_up).await?,
            Action::Voucher(voucher) => Applied {
                channel: self.accept(voucher).await?,
                tx_hash: None,
            },
            Action::Close(voucher) => self.close(Some(voucher)).await?,
        };
        Ok(applied)
    }

    /// Who pays through `action`: the open transaction's sender, else the
    /// stored channel's payer.
    async fn payer_of(&self, action: &Action) -> Result<Address, PaymentProblem> {
        match action {
            Action::Open(open) => self
                .chain
                .decode_open(&open.transaction)
                .map(|d| d.payer)
                .map_err(chain_problem),
            _ => self
                .known(action.channel_id())
                .await?
                .and_then(|c| c.payer.parse().ok())
                .ok_or_else(not_found),
        }
    }

    async fn open(
        &self,
        open: &payload::OpenPayload,
        required: u128,
    ) -> Result<Applied, PaymentProblem> {
        let channel_id = open.voucher.channel_id;
        if let Some(known) = self.known(channel_id).await? {
            // A retried open: the channel is ours already; its voucher counts
            // like any other.
            let _ = known;
            return Ok(Applied {
                channel: self.accept(&open.voucher).await?,
                tx_hash: None,
            });
        }
        let decoded = self
            .chain
            .decode_open(&open.transaction)
            .map_err(chain_problem)?;
        if decoded.payee != self.settings.recipient {
            return Err(invalid_payload("open transaction pays someone else"));
        }
        if decoded.token != self.settings.currency {
            return Err(invalid_payload("open transaction deposits another token"));
        }
        let derived = mpp::tempo::compute_channel_id(
            decoded.payer,
            decoded.payee,
            decoded.token,
            decoded.salt,
            decoded.authorized_signer,
            self.settings.escrow,
            self.settings.chain_id,
        );
        if derived != channel_id {
            return Err(invalid_payload(
                "channelId does not match the open transaction",
            ));
        }
        if decoded.deposit < required {
            return Err(PaymentProblem::new(
                ProblemKind::SessionInsufficientBalance,
                "the deposit does not cover this request",
            )
            .with("requiredTopUp", (required - decoded.deposit).to_string()));
        }
        let signer = if decoded.authorized_signer == Address::ZERO {
            decoded.payer
        } else {
            decoded.authorized_signer
        };
        // Checked before broadcasting: a bad credential costs nobody gas.
        check_signature(&self.settings, &open.voucher, signer)?;
        if open.voucher.cumulative > decoded.deposit {
            return Err(PaymentProblem::new(
                ProblemKind::SessionAmountExceedsDeposit,
                "the initial voucher exceeds the deposit",
            ));
        }

        let broadcast = self.chain.broadcast(&open.transaction).await;
        let on_chain = self
            .chain
            .channel(channel_id)
            .await
            .map_err(chain_problem)?;
        let tx_hash = match broadcast {
            Ok(confirmed) => Some(confirmed.tx_hash.to_string()),
            // Refused because it already landed (a retry after we crashed)?
            Err(ChainError::Refused(_)) if on_chain.exists() => None,
            Err(e) => return Err(chain_problem(e)),
        };
        if !on_chain.exists() {
            return Err(PaymentProblem::new(
                ProblemKind::SessionChannelNotFound,
                "the channel is not on chain after the open transaction",
            ));
        }
        if on_chain.payee != self.settings.recipient
            || on_chain.token != self.settings.currency
            || on_chain.payer != decoded.payer
            || on_chain.voucher_signer() != signer
        {
            return Err(invalid_payload("the channel on chain has other terms"));
        }
        if on_chain.finalized {
            return Err(PaymentProblem::new(
                ProblemKind::SessionChannelFinalized,
                "the channel is closed",
            ));
        }
        if on_chain.close_requested_at != 0 {
            return Err(PaymentProblem::new(
                ProblemKind::SessionChannelFinalized,
                "the channel has a pending close request",
            ));
        }
        let record = new_record(&self.settings, channel_id, &on_chain);
        let initial = StoredVoucher {
            cumulative: open.voucher.cumulative,
            signature: format!("0x{}", alloy::hex::encode(&open.voucher.signature)),
        };
        let channel = self
            .ledger
            .open_channel(&record, (initial.cumulative > 0).then_some(&initial))
            .await
            .map_err(store_failure)?;
        tracing::info!(protocol = "v1", "session channel opened");
        self.ring(&channel.channel_id);
        Ok(Applied { channel, tx_hash })
    }

    async fn top_up(&self, top_up: &payload::TopUpPayload) -> Result<Applied, PaymentProblem> {
        let known = self.known(top_up.channel_id).await?.ok_or_else(not_found)?;
        let (sender, channel_id, amount) = self
            .chain
            .decode_top_up(&top_up.transaction)
            .map_err(chain_problem)?;
        if channel_id != top_up.channel_id {
            return Err(invalid_payload("topUp transaction is for another channel"));
        }
        if amount != alloy::primitives::U256::from(top_up.additional_deposit) {
            return Err(invalid_payload(
                "topUp transaction amount differs from additionalDeposit",
            ));
        }
        if format!("{sender:#x}") != known.payer {
            return Err(invalid_payload("topUp transaction is not from the payer"));
        }
        self.chain
            .broadcast(&top_up.transaction)
            .await
            .map_err(chain_problem)?;
        let channel = self.refresh(top_up.channel_id).await?;
        if channel.deposit < known.deposit + top_up.additional_deposit {
            return Err(PaymentProblem::new(
                ProblemKind::VerificationFailed,
                "the deposit did not grow by additionalDeposit",
            ));
        }
        self.ring(&channel.channel_id);
        Ok(Applied {
            channel,
            tx_hash: None,
        })
    }

    /// Accepts a voucher: signature (no RPC), then the ledger's monotonic,
    /// delta and deposit checks; past the cached deposit, asks the chain once.
    pub async fn accept(&self, voucher: &SignedVoucher) -> Result<ChannelRecord, PaymentProblem> {
        let channel = self
            .known(voucher.channel_id)
            .await?
            .ok_or_else(not_found)?;
        let signer: Address = channel
            .authorized_signer
            .parse()
            .map_err(|_| PaymentProblem::new(ProblemKind::Internal, "stored signer is corrupt"))?;
        let fingerprint = VerifiedVoucher::of(voucher, signer);
        if !self.verified.contains(&fingerprint) {
            check_signature(&self.settings, voucher, signer)?;
        }
        // The same voucher again (a client re-sending its current cumulative
        // authorization on each request): nothing to write.
        let serving = channel.status == ChannelStatus::Open && channel.close_requested_at == 0;
        if serving && voucher.cumulative == channel.accepted {
            self.verified.insert(fingerprint);
            return Ok(channel);
        }
        let stored = StoredVoucher {
            cumulative: voucher.cumulative,
            signature: format!("0x{}", alloy::hex::encode(&voucher.signature)),
        };
        let id = &channel.channel_id;
        let mut outcome = self
            .ledger
            .accept_voucher(id, &stored, self.settings.min_voucher_delta)
            .await
            .map_err(store_failure)?;
        if matches!(
            outcome,
            VoucherOutcome::Refused(VoucherRefusal::ExceedsDeposit { .. })
        ) {
            // The payer may have topped up on chain directly.
            self.refresh(voucher.channel_id).await?;
            outcome = self
                .ledger
                .accept_voucher(id, &stored, self.settings.min_voucher_delta)
                .await
                .map_err(store_failure)?;
        }
        match outcome {
            VoucherOutcome::Accepted(channel) => {
                self.verified.insert(fingerprint);
                self.ring(id);
                Ok(channel)
            }
            VoucherOutcome::Unchanged(channel) => {
                self.verified.insert(fingerprint);
                Ok(channel)
            }
            // Below the highest accepted (concurrent clients' vouchers cross
            // on the way): the spec has it answered like a resubmission,
            // with the channel as it stands.
            VoucherOutcome::Refused(VoucherRefusal::Decreasing { .. }) => {
                self.verified.insert(fingerprint);
                self.known(voucher.channel_id).await?.ok_or_else(not_found)
            }
            VoucherOutcome::Refused(refusal) => Err(refusal_problem(refusal)),
        }
    }

    /// Holds `amount` of the channel's available balance.
    pub async fn reserve(
        &self,
        channel_id: &str,
        amount: u128,
    ) -> Result<Reservation, PaymentProblem> {
        match self
            .ledger
            .reserve(channel_id, amount)
            .await
            .map_err(store_failure)?
        {
            ReserveOutcome::Reserved { reservation, .. } => Ok(Reservation {
                id: reservation,
                channel_id: channel_id.to_owned(),
                held: amount,
                release: crate::hold::ReleaseOnDrop::reservation(
                    Arc::clone(&self.ledger),
                    reservation,
                ),
            }),
            ReserveOutcome::Insufficient { channel } => Err(insufficient(&channel, amount)),
            ReserveOutcome::Unavailable(refusal) => Err(refusal_problem(refusal)),
        }
    }

    /// Adds `extra` to a reservation if the balance allows; `Ok(None)` when
    /// it does not (the channel is returned for a `payment-need-voucher`).
    pub async fn grow(
        &self,
        reservation: &mut Reservation,
        extra: u128,
    ) -> Result<Option<ChannelRecord>, PaymentProblem> {
        match self
            .ledger
            .grow_reservation(reservation.id, extra)
            .await
            .map_err(store_failure)?
        {
            ReserveOutcome::Reserved { .. } => {
                reservation.held += extra;
                Ok(None)
            }
            ReserveOutcome::Insufficient { channel } => Ok(Some(channel)),
            ReserveOutcome::Unavailable(refusal) => Err(refusal_problem(refusal)),
        }
    }

    /// Charges `cost` (at most what is held) and releases the rest. On a
    /// store failure nothing is charged and the reservation is released
    /// when dropped.
    pub async fn commit(
        &self,
        reservation: Reservation,
        cost: u128,
        units: u64,
    ) -> Result<ChannelRecord, LedgerError> {
        let committed = self.ledger.commit(reservation.id, cost, units).await?;
        reservation.settled();
        Ok(committed)
    }

    /// Charges what a running stream delivered so far (`charged`, the
    /// reservation's total, within what it holds), so a crash keeps it.
    pub async fn checkpoint(
        &self,
        reservation: &Reservation,
        charged: u128,
    ) -> Result<(), LedgerError> {
        self.ledger
            .checkpoint_reservation(reservation.id, charged)
            .await
            .map(|_| ())
    }

    /// Releases now, awaiting the store (dropping releases in the background).
    pub async fn release(&self, reservation: Reservation) {
        match self.ledger.release_reservation(reservation.id).await {
            Ok(()) => reservation.settled(),
            Err(e) => tracing::error!(error = %e, "could not release a session reservation"),
        }
    }

    /// Rings whenever a voucher (or top-up) is accepted on `channel_id`.
    pub fn voucher_bell(&self, channel_id: &str) -> Arc<Notify> {
        let mut bells = self.voucher_bells.lock().unwrap_or_else(|p| p.into_inner());
        // Forget bells nobody listens to any more.
        if bells.len() > 1024 {
            bells.retain(|_, bell| Arc::strong_count(bell) > 1);
        }
        Arc::clone(bells.entry(channel_id.to_owned()).or_default())
    }

    fn ring(&self, channel_id: &str) {
        let bells = self.voucher_bells.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bell) = bells.get(channel_id) {
            bell.notify_waiters();
        }
    }

    /// The `Payment-Receipt` value for a channel's current state.
    pub fn receipt(
        &self,
        challenge_id: &str,
        channel: &ChannelRecord,
        units: Option<u64>,
        tx_hash: Option<&str>,
    ) -> String {
        session_receipt(challenge_id, channel, units, tx_hash)
            .to_header()
            .unwrap_or_default()
    }

    /// The same receipt as JSON (the final event of a stream).
    pub fn receipt_json(
        &self,
        challenge_id: &str,
        channel: &ChannelRecord,
        units: Option<u64>,
        tx_hash: Option<&str>,
    ) -> String {
        serde_json::to_string(&session_receipt(challenge_id, channel, units, tx_hash))
            .unwrap_or_default()
    }

    /// Every channel we know, newest first.
    pub async fn channels(&self) -> Result<Vec<ChannelRecord>, PaymentProblem> {
        self.ledger.channels().await.map_err(store_failure)
    }

    /// Our record of a channel (never the chain).
    async fn known(&self, channel_id: B256) -> Result<Option<ChannelRecord>, PaymentProblem> {
        self.ledger
            .channel(&format!("{channel_id:#x}"))
            .await
            .map_err(store_failure)
    }

    /// Reads the channel on chain and stores what it says.
    pub async fn refresh(&self, channel_id: B256) -> Result<ChannelRecord, PaymentProblem> {
        let on_chain = self
            .chain
            .channel(channel_id)
            .await
            .map_err(chain_problem)?;
        if !on_chain.exists() {
            return Err(not_found());
        }
        self.ledger
            .refresh_channel(&format!("{channel_id:#x}"), facts(&on_chain))
            .await
            .map_err(store_failure)?
            .ok_or_else(not_found)
    }

    /// Cooperative (or operator) close: captures the smallest voucher that
    /// covers `max(spent, settled)` and refunds the rest of the deposit.
    pub async fn close(
        &self,
        client_voucher: Option<&SignedVoucher>,
    ) -> Result<Applied, PaymentProblem> {
        let channel_id = match client_voucher {
            Some(v) => v.channel_id,
            None => return Err(invalid_payload("close needs a voucher")),
        };
        self.close_channel(channel_id, client_voucher).await
    }

    /// Closes `channel_id`, with the client's close voucher when it sent one.
    pub async fn close_channel(
        &self,
        channel_id: B256,
        client_voucher: Option<&SignedVoucher>,
    ) -> Result<Applied, PaymentProblem> {
        let channel = self.known(channel_id).await?.ok_or_else(not_found)?;
        if channel.status == ChannelStatus::Finalized {
            return Err(refusal_problem(VoucherRefusal::Finalized));
        }
        let id = channel.channel_id.clone();
        if let Some(voucher) = client_voucher {
            let signer: Address = channel.authorized_signer.parse().map_err(|_| {
                PaymentProblem::new(ProblemKind::Internal, "stored signer is corrupt")
            })?;
            check_signature(&self.settings, voucher, signer)?;
            let owed = channel.spent.max(channel.settled);
            if voucher.cumulative < owed {
                return Err(PaymentProblem::new(
                    ProblemKind::SessionDeltaTooSmall,
                    "the close voucher does not cover what was spent",
                )
                .with("channelId", id.clone())
                .with("spent", channel.spent.to_string()));
            }
            if voucher.cumulative > channel.deposit {
                return Err(refusal_problem(VoucherRefusal::ExceedsDeposit {
                    deposit: channel.deposit,
                }));
            }
            // Keep the close voucher: it may be the one that covers `spent`
            // exactly, and when it is the highest it is accepted as such.
            self.store_any_voucher(&id, voucher)
                .await
                .map_err(store_failure)?;
            let _ = self
                .ledger
                .accept_voucher(
                    &id,
                    &StoredVoucher {
                        cumulative: voucher.cumulative,
                        signature: format!("0x{}", alloy::hex::encode(&voucher.signature)),
                    },
                    0,
                )
                .await
                .map_err(store_failure)?;
        }
        self.ledger.mark_closing(&id).await.map_err(store_failure)?;
        self.wait_for_in_flight(&id).await;
        let tx_hash = self.submit_settlement(&id, true).await?;
        let channel = self.known(channel_id).await?.ok_or_else(not_found)?;
        tracing::info!(protocol = "v1", "session channel closed");
        Ok(Applied {
            channel,
            tx_hash: tx_hash.map(|h| h.to_string()),
        })
    }

    /// Stores a voucher below the highest too (a close voucher for exactly
    /// `spent`), so a close can capture it.
    async fn store_any_voucher(
        &self,
        channel_id: &str,
        voucher: &SignedVoucher,
    ) -> Result<(), LedgerError> {
        self.ledger
            .store_voucher(
                channel_id,
                &StoredVoucher {
                    cumulative: voucher.cumulative,
                    signature: format!("0x{}", alloy::hex::encode(&voucher.signature)),
                },
            )
            .await
    }

    /// Requests still holding a reservation get a moment to commit before
    /// a close captures `spent`.
    async fn wait_for_in_flight(&self, channel_id: &str) {
        for _ in 0..50 {
            match self.ledger.channel(channel_id).await {
                Ok(Some(c)) if c.reserved > 0 => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => return,
            }
        }
    }

    /// Settles on chain what is owed: `settle` (channel stays open) or
    /// `close`. Records the signed transaction before broadcasting it, so a
    /// crash in between is reconciled. Returns the transaction hash, or
    /// `None` when nothing was owed and the channel stays open.
    pub async fn submit_settlement(
        &self,
        channel_id: &str,
        close: bool,
    ) -> Result<Option<B256>, PaymentProblem> {
        let channel = self
            .ledger
            .channel(channel_id)
            .await
            .map_err(store_failure)?
            .ok_or_else(not_found)?;
        let owed = channel.spent.max(channel.settled);
        // A close (ours, or a forced one the payer started on chain) must
        // capture what is owed: the smallest voucher covering it. A routine
        // settlement never takes more than was spent.
        let must_cover = close || channel.close_requested_at != 0;
        let voucher = if must_cover {
            match self
                .ledger
                .voucher_covering(channel_id, owed)
                .await
                .map_err(store_failure)?
            {
                Some(v) => Some(v),
                None if owed == channel.settled => None,
                None => {
                    return Err(PaymentProblem::new(
                        ProblemKind::SessionDeltaTooSmall,
                        "no voucher covers what was spent",
                    ));
                }
            }
        } else {
            self.ledger
                .voucher_within(channel_id, channel.spent)
                .await
                .map_err(store_failure)?
        }
        .filter(|v| close || v.cumulative > channel.settled);
        if !close && voucher.is_none() {
            return Ok(None);
        }
        let (amount, signature) = match &voucher {
            Some(v) if v.cumulative > channel.settled => (
                v.cumulative,
                v.signature.parse::<Bytes>().unwrap_or_default(),
            ),
            // Nothing above what is settled: close refunds the rest.
            _ => (channel.settled, Bytes::new()),
        };
        let id: B256 = channel_id
            .parse()
            .map_err(|_| PaymentProblem::new(ProblemKind::Internal, "stored channel id"))?;
        let (tx_hash, tx) = self
            .chain
            .sign_settlement(close, id, amount, signature)
            .await
            .map_err(chain_problem)?;
        let in_flight = InFlight {
            kind: if close { "close" } else { "settle" }.into(),
            tx_hash: format!("{tx_hash:#x}"),
            amount,
            since: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        self.ledger
            .begin_settlement(channel_id, &in_flight)
            .await
            .map_err(store_failure)?;
        match self.chain.broadcast(&tx).await {
            Ok(_) => {}
            Err(ChainError::Refused(reason)) => {
                self.ledger
                    .abandon_settlement(channel_id)
                    .await
                    .map_err(store_failure)?;
                tracing::warn!(kind = %in_flight.kind, reason = %reason, "settlement refused by the chain");
                return Err(PaymentProblem::new(
                    ProblemKind::VerificationFailed,
                    "the settlement transaction was refused",
                ));
            }
            // Outcome unknown: leave the marker for reconciliation.
            Err(e) => return Err(chain_problem(e)),
        }
        let on_chain = self.chain.channel(id).await.map_err(chain_problem)?;
        self.ledger
            .finish_settlement(channel_id, on_chain.settled, on_chain.finalized)
            .await
            .map_err(store_failure)?;
        Ok(Some(tx_hash))
    }

    /// After a restart (or an RPC failure mid-settlement): asks the chain
    /// what became of every settlement in flight and records it.
    pub async fn reconcile(&self) -> Result<usize, PaymentProblem> {
        let channels = self.ledger.channels().await.map_err(store_failure)?;
        let mut done = 0;
        for channel in channels.into_iter().filter(|c| c.inflight.is_some()) {
            let Some(flight) = &channel.inflight else {
                continue;
            };
            let tx: B256 = flight.tx_hash.parse().unwrap_or_default();
            let id: B256 = channel.channel_id.parse().unwrap_or_default();
            let status = self.chain.receipt_status(tx).await.map_err(chain_problem)?;
            let on_chain = self.chain.channel(id).await.map_err(chain_problem)?;
            match status {
                Some(_) => {
                    self.ledger
                        .finish_settlement(
                            &channel.channel_id,
                            on_chain.settled,
                            on_chain.finalized,
                        )
                        .await
                        .map_err(store_failure)?;
                }
                // Never reached the chain: forget it, the worker retries.
                None => {
                    self.ledger
                        .abandon_settlement(&channel.channel_id)
                        .await
                        .map_err(store_failure)?;
                    self.ledger
                        .refresh_channel(&channel.channel_id, facts(&on_chain))
                        .await
                        .map_err(store_failure)?;
                }
            }
            done += 1;
        }
        Ok(done)
    }
}

fn session_receipt(
    challenge_id: &str,
    channel: &ChannelRecord,
    units: Option<u64>,
    tx_hash: Option<&str>,
) -> SessionReceipt {
    let mut receipt = SessionReceipt::new(
        rfc3339_now(),
        challenge_id,
        channel.channel_id.clone(),
        channel.accepted.to_string(),
        channel.spent.to_string(),
    );
    receipt.units = units;
    receipt.tx_hash = tx_hash.map(str::to_owned);
    receipt
}

fn new_record(
    settings: &SessionSettings,
    channel_id: B256,
    on_chain: &OnChainChannel,
) -> ChannelRecord {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    ChannelRecord {
        channel_id: format!("{channel_id:#x}"),
        protocol: "v1".into(),
        escrow: format!("{:#x}", settings.escrow),
        chain_id: settings.chain_id,
        payer: format!("{:#x}", on_chain.payer),
        payee: format!("{:#x}", on_chain.payee),
        token: format!("{:#x}", on_chain.token),
        authorized_signer: format!("{:#x}", on_chain.voucher_signer()),
        descriptor: None,
        deposit: on_chain.deposit,
        accepted: 0,
        spent: 0,
        reserved: 0,
        settled: on_chain.settled,
        units: 0,
        close_requested_at: on_chain.close_requested_at,
        status: ChannelStatus::Open,
        opened_at: now,
        updated_at: now,
        last_settled_at: None,
        inflight: None,
    }
}

pub fn facts(on_chain: &OnChainChannel) -> OnChainFacts {
    OnChainFacts {
        deposit: on_chain.deposit,
        settled: on_chain.settled,
        close_requested_at: on_chain.close_requested_at,
        finalized: on_chain.finalized,
    }
}

fn check_signature(
    settings: &SessionSettings,
    v: &SignedVoucher,
    signer: Address,
) -> Result<(), PaymentProblem> {
    voucher::verify(
        settings.escrow,
        settings.chain_id,
        v.channel_id,
        v.cumulative,
        &v.signature,
        signer,
    )
    .map_err(|fault| match fault {
        voucher::SignatureFault::Invalid => PaymentProblem::new(
            ProblemKind::SessionInvalidSignature,
            "voucher signature could not be verified",
        ),
        voucher::SignatureFault::WrongSigner => PaymentProblem::new(
            ProblemKind::SessionSignerMismatch,
            "voucher is not signed by the channel's authorized signer",
        ),
    })
}

fn insufficient(channel: &ChannelRecord, needed: u128) -> PaymentProblem {
    let available = channel.available();
    PaymentProblem::new(
        ProblemKind::SessionInsufficientBalance,
        "the authorized balance does not cover this request",
    )
    .with("channelId", channel.channel_id.clone())
    .with(
        "requiredTopUp",
        needed.saturating_sub(available).to_string(),
    )
    .with("acceptedCumulative", channel.accepted.to_string())
    .with("spent", channel.spent.to_string())
}

fn refusal_problem(refusal: VoucherRefusal) -> PaymentProblem {
    match refusal {
        VoucherRefusal::NotFound => not_found(),
        VoucherRefusal::Finalized => PaymentProblem::new(
            ProblemKind::SessionChannelFinalized,
            "the channel is closed",
        ),
        VoucherRefusal::Closing => PaymentProblem::new(
            ProblemKind::SessionChannelFinalized,
            "the channel is closing",
        ),
        VoucherRefusal::Decreasing { accepted } => PaymentProblem::new(
            ProblemKind::SessionDeltaTooSmall,
            "the voucher is below the highest accepted voucher",
        )
        .with("acceptedCumulative", accepted.to_string()),
        VoucherRefusal::DeltaTooSmall { accepted } => PaymentProblem::new(
            ProblemKind::SessionDeltaTooSmall,
            "the voucher increases by less than minVoucherDelta",
        )
        .with("acceptedCumulative", accepted.to_string()),
        VoucherRefusal::ExceedsDeposit { deposit } => PaymentProblem::new(
            ProblemKind::SessionAmountExceedsDeposit,
            "the voucher exceeds the channel deposit",
        )
        .with("deposit", deposit.to_string()),
    }
}

fn not_found() -> PaymentProblem {
    PaymentProblem::new(
        ProblemKind::SessionChannelNotFound,
        "no open channel with this id",
    )
}

fn invalid_payload(detail: &str) -> PaymentProblem {
    PaymentProblem::new(ProblemKind::InvalidPayload, detail)
}

fn chain_problem(error: ChainError) -> PaymentProblem {
    match error {
        ChainError::Unavailable(reason) => {
            tracing::warn!(reason = %reason, "chain unavailable on the session path");
            PaymentProblem::new(
                ProblemKind::ChainUnavailable,
                "the chain could not be reached",
            )
        }
        ChainError::Refused(reason) => {
            tracing::info!(reason = %reason, "chain refused a session transaction");
            PaymentProblem::new(
                ProblemKind::VerificationFailed,
                "the transaction was refused",
            )
        }
        ChainError::Invalid(reason) => PaymentProblem::new(ProblemKind::InvalidPayload, reason),
    }
}

fn store_failure(error: LedgerError) -> PaymentProblem {
    crate::store_problem(&error)
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
