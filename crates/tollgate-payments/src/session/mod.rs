//! The Tempo `session` intent: channel actions, voucher acceptance without
//! RPC, per-request reservations and settlement, over either protocol —
//! v1 (the escrow contract) or v2 (the TIP-20 channel reserve) — or both
//! side by side.
//!
//! Hot path: a voucher is checked by signature recovery against the signer
//! we stored at open, and against the deposit we cached; the chain is only
//! asked when a voucher exceeds that deposit (it may have been topped up
//! behind our back), on open/topUp, and by the settlement worker.
//!
//! One module per action: [`open`], [`top_up`], [`accept`] (vouchers),
//! [`close`], [`settle`] (settlement and reconciliation), [`reservations`],
//! [`receipts`]; the chain is behind [`SessionChain`] ([`escrow`] for v1,
//! [`reserve`] for v2), so the gate runs on a fake chain in tests.

mod accept;
pub mod chain;
mod close;
pub mod escrow;
mod events;
mod offer;
mod open;
pub mod payload;
mod problems;
mod receipts;
mod reservations;
pub mod reserve;
pub(crate) mod rpc;
mod settle;
mod top_up;
pub mod voucher;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};
use alloy::signers::local::PrivateKeySigner;
use tokio::sync::Notify;
use tollgate_ledger::{ChannelRecord, Ledger, OnChainFacts};

use crate::problem::{PaymentProblem, ProblemKind};
use crate::session_v2::Descriptor;
pub use chain::{ChainError, ChannelState, Protocol, SessionChain, SettlementCall};
pub use escrow::EscrowChain;
pub use offer::SessionOffer;
pub use payload::{Action, SignedVoucher};
use problems::{corrupt, not_found, not_offered, store_failure};
pub use reservations::Reservation;
pub use reserve::{RESERVE_ADDRESS, ReserveChain};

/// Which session protocols a gateway offers (`[session] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocols {
    V1,
    #[default]
    V2,
    /// Both, side by side: a 402 carries one challenge of each.
    Both,
}

impl Protocols {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "v1" => Some(Self::V1),
            "v2" => Some(Self::V2),
            "both" => Some(Self::Both),
            _ => None,
        }
    }

    /// Offered protocols, preferred first.
    pub fn offered(self) -> &'static [Protocol] {
        match self {
            Self::V1 => &[Protocol::V1],
            Self::V2 => &[Protocol::V2],
            Self::Both => &[Protocol::V2, Protocol::V1],
        }
    }
}

/// How sessions are offered and run.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub rpc_url: String,
    pub rpc_timeout: Duration,
    pub protocols: Protocols,
    /// The v1 escrow contract.
    pub escrow: Address,
    /// The v2 channel reserve (normally [`RESERVE_ADDRESS`]).
    pub reserve: Address,
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
    /// `channel` is what this gate last saw (a re-sent voucher read
    /// nothing), not necessarily what the store holds now.
    pub seen: bool,
}

/// Sessions on one chain, with accounting in the ledger.
pub struct SessionGate {
    settings: SessionSettings,
    v1: Option<Arc<dyn SessionChain>>,
    v2: Option<Arc<dyn SessionChain>>,
    /// v2 when served, else v1.
    preferred: Arc<dyn SessionChain>,
    ledger: Arc<dyn Ledger>,
    /// Wakes streams paused for a voucher on a channel.
    voucher_bells: Mutex<HashMap<String, Arc<Notify>>>,
    /// Vouchers whose signature already verified (recovery is most of the
    /// cost of a resubmitted voucher).
    verified: accept::VerifiedCache,
    /// Channels as this gate last saw them (a re-sent voucher reads nothing).
    seen: accept::SeenChannels,
}

/// What a stored channel's record says about how to handle it.
#[derive(Clone)]
pub(crate) struct Known {
    pub record: ChannelRecord,
    pub protocol: Protocol,
    pub signer: Address,
    pub descriptor: Option<Descriptor>,
}

impl SessionGate {
    /// The gate on the configured chain: the escrow for v1, the reserve for
    /// v2, as `settings.protocols` asks.
    pub fn new(settings: SessionSettings, ledger: Arc<dyn Ledger>) -> Result<Self, String> {
        let offered = settings.protocols.offered();
        let v1: Option<Arc<dyn SessionChain>> = if offered.contains(&Protocol::V1) {
            Some(Arc::new(EscrowChain::new(
                &settings.rpc_url,
                settings.escrow,
                settings.chain_id,
                settings.rpc_timeout,
                settings.operator.clone(),
                settings.fee_token,
            )?))
        } else {
            None
        };
        let v2: Option<Arc<dyn SessionChain>> = if offered.contains(&Protocol::V2) {
            Some(Arc::new(ReserveChain::new(
                &settings.rpc_url,
                settings.reserve,
                settings.chain_id,
                settings.rpc_timeout,
                settings.operator.clone(),
                settings.fee_token,
            )?))
        } else {
            None
        };
        Self::with_chains(settings, ledger, v1, v2)
    }

    /// The gate on chains the caller built (a fake one, in tests).
    pub fn with_chains(
        settings: SessionSettings,
        ledger: Arc<dyn Ledger>,
        v1: Option<Arc<dyn SessionChain>>,
        v2: Option<Arc<dyn SessionChain>>,
    ) -> Result<Self, String> {
        if let Some(operator) = settings.operator.as_ref().map(PrivateKeySigner::address)
            && operator != settings.recipient
        {
            return Err(
                "the session operator key must belong to the recipient (the channel payee)".into(),
            );
        }
        let preferred = v2
            .clone()
            .or_else(|| v1.clone())
            .ok_or("sessions need at least one protocol")?;
        Ok(Self {
            settings,
            v1,
            v2,
            preferred,
            ledger,
            voucher_bells: Mutex::new(HashMap::new()),
            verified: accept::VerifiedCache::default(),
            seen: accept::SeenChannels::default(),
        })
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// The preferred protocol's chain (v2 when offered).
    pub fn chain(&self) -> &dyn SessionChain {
        self.preferred.as_ref()
    }

    /// The payee's address settle/close are signed as, if a key is set.
    pub fn operator(&self) -> Option<Address> {
        self.chain().operator()
    }

    /// Protocols this gate serves, preferred first.
    pub fn protocols(&self) -> Vec<Protocol> {
        [Protocol::V2, Protocol::V1]
            .into_iter()
            .filter(|p| self.chain_for(*p).is_ok())
            .collect()
    }

    pub(crate) fn chain_for(
        &self,
        protocol: Protocol,
    ) -> Result<&dyn SessionChain, PaymentProblem> {
        match protocol {
            Protocol::V1 => self.v1.as_deref(),
            Protocol::V2 => self.v2.as_deref(),
        }
        .ok_or_else(|| not_offered(protocol))
    }

    /// The preferred session offer for a request that needs `amount`
    /// authorized.
    pub fn offer(&self, amount: u128, description: Option<String>) -> SessionOffer {
        self.offer_for(self.chain().protocol(), amount, description)
    }

    /// Every session offer (one per protocol served), preferred first.
    pub fn offers(&self, amount: u128, description: Option<String>) -> Vec<SessionOffer> {
        self.protocols()
            .into_iter()
            .map(|p| self.offer_for(p, amount, description.clone()))
            .collect()
    }

    fn offer_for(
        &self,
        protocol: Protocol,
        amount: u128,
        description: Option<String>,
    ) -> SessionOffer {
        SessionOffer {
            amount: 0,
            suggested_deposit: self.settings.suggested_deposit,
            currency: self.settings.currency,
            recipient: self.settings.recipient,
            chain_id: self.settings.chain_id,
            escrow: match protocol {
                Protocol::V1 => self.settings.escrow,
                Protocol::V2 => self.settings.reserve,
            },
            min_voucher_delta: self.settings.min_voucher_delta,
            protocol,
            description: None,
            snapshot: None,
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
        self.apply_as(action, required, allowed, None).await
    }

    /// [`apply_for`](Self::apply_for) on the protocol of the challenge the
    /// credential answered, when known: an action for the other protocol's
    /// channel is refused.
    pub async fn apply_as(
        &self,
        action: &Action,
        required: u128,
        allowed: Option<&(dyn Fn(Address) -> bool + Sync)>,
        offered: Option<Protocol>,
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
            Action::Open(open) => self.open(open, required, offered).await?,
            Action::TopUp(top_up) => self.top_up(top_up, offered).await?,
            Action::Voucher(voucher) => {
                let (channel, seen) = self.accept_seen(voucher, offered).await?;
                Applied {
                    channel,
                    tx_hash: None,
                    seen,
                }
            }
            Action::Close(voucher) => self.close_as(voucher, offered).await?,
        };
        Ok(applied)
    }

    /// Who pays through `action`: the open's payer, else the stored
    /// channel's.
    async fn payer_of(&self, action: &Action) -> Result<Address, PaymentProblem> {
        match action {
            Action::Open(open) => self.open_payer(open),
            _ => self
                .known(action.channel_id())
                .await?
                .and_then(|c| c.payer.parse().ok())
                .ok_or_else(not_found),
        }
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

    /// The channel as the store has it now.
    pub async fn current(&self, channel_id: &str) -> Result<ChannelRecord, PaymentProblem> {
        let channel = self
            .ledger
            .channel(channel_id)
            .await
            .map_err(store_failure)?
            .ok_or_else(not_found)?;
        self.seen.update(&channel);
        Ok(channel)
    }

    /// Our record of a channel with what it takes to handle it.
    pub(crate) async fn known_ctx(&self, channel_id: B256) -> Result<Known, PaymentProblem> {
        let record = self.known(channel_id).await?.ok_or_else(not_found)?;
        Self::ctx(record)
    }

    pub(crate) fn ctx(record: ChannelRecord) -> Result<Known, PaymentProblem> {
        let protocol = Protocol::parse(&record.protocol).ok_or_else(|| corrupt("protocol"))?;
        let signer = record
            .authorized_signer
            .parse()
            .map_err(|_| corrupt("signer"))?;
        let descriptor = match (&record.descriptor, protocol) {
            (Some(json), _) => Some(
                serde_json::from_str(json)
                    .ok()
                    .and_then(|v| Descriptor::from_json(&v).ok())
                    .ok_or_else(|| corrupt("descriptor"))?,
            ),
            (None, Protocol::V2) => return Err(corrupt("descriptor")),
            (None, Protocol::V1) => None,
        };
        Ok(Known {
            record,
            protocol,
            signer,
            descriptor,
        })
    }

    /// Reads the channel on chain and stores what it says.
    pub async fn refresh(&self, channel_id: B256) -> Result<ChannelRecord, PaymentProblem> {
        let known = self.known_ctx(channel_id).await?;
        self.refresh_known(&known).await
    }

    pub(crate) async fn refresh_known(
        &self,
        known: &Known,
    ) -> Result<ChannelRecord, PaymentProblem> {
        let id: B256 = known
            .record
            .channel_id
            .parse()
            .map_err(|_| corrupt("channel id"))?;
        let on_chain = self
            .chain_for(known.protocol)?
            .channel(id, known.descriptor.as_ref())
            .await
            .map_err(problems::chain_problem)?;
        let on_chain = match (on_chain.exists, known.protocol) {
            (true, _) => on_chain,
            // The reserve deletes a channel when it closes (our close, or the
            // payer's withdraw after a forced close): it is final.
            (false, Protocol::V2) => ChannelState {
                exists: false,
                finalized: true,
                close_requested_at: known.record.close_requested_at,
                deposit: known.record.deposit,
                settled: known.record.settled,
                parties: None,
            },
            (false, Protocol::V1) => return Err(not_found()),
        };
        self.ledger
            .refresh_channel(&known.record.channel_id, facts(&on_chain))
            .await
            .map_err(store_failure)?
            .ok_or_else(not_found)
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
}

/// What the chain says, as the ledger stores it.
pub fn facts(on_chain: &ChannelState) -> OnChainFacts {
    OnChainFacts {
        deposit: on_chain.deposit,
        settled: on_chain.settled,
        close_requested_at: on_chain.close_requested_at,
        finalized: on_chain.finalized,
    }
}

/// A verified voucher signature as stored: 65-byte `r‖s‖v` (v 27/28), the
/// form both contracts take back at settlement (the channel reserve refuses
/// EIP-2098 compact signatures, which clients may send).
fn hex_signature(signature: &Bytes) -> String {
    match voucher::parse_signature(signature) {
        Some(parsed) => format!("0x{}", alloy::hex::encode(parsed.as_bytes())),
        None => format!("0x{}", alloy::hex::encode(signature)),
    }
}

/// The descriptor as stored and sent back (lowercase hex, camelCase keys).
pub fn descriptor_json(d: &Descriptor) -> serde_json::Value {
    serde_json::json!({
        "payer": format!("{:#x}", d.payer),
        "payee": format!("{:#x}", d.payee),
        "operator": format!("{:#x}", d.operator),
        "token": format!("{:#x}", d.token),
        "salt": format!("{:#x}", d.salt),
        "authorizedSigner": format!("{:#x}", d.authorized_signer),
        "expiringNonceHash": format!("{:#x}", d.expiring_nonce_hash),
    })
}
