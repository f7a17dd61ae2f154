//! `voucher`: accepting a cumulative voucher. Signature recovery (no RPC;
//! skipped for a voucher already verified), then the ledger's monotonic,
//! delta and deposit checks in one transaction; the chain is asked once
//! only when a voucher exceeds the cached deposit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use alloy::primitives::{Address, B256, Bytes};
use tollgate_ledger::{
    ChannelRecord, ChannelStatus, StoredVoucher, VoucherOutcome, VoucherRefusal,
};

use super::chain::Protocol;
use super::payload::SignedVoucher;
use super::problems::{invalid_payload, not_found, refusal_problem, store_failure, v2_problem};
use super::{Known, SessionGate, hex_signature, voucher};
use crate::problem::{PaymentProblem, ProblemKind};
use crate::session_v2::{self, Descriptor, Field, V2Error};
use mpp::protocol::methods::tempo::precompile_voucher::precompile_voucher_signing_hash_with_escrow;

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
pub(super) struct VerifiedCache(Mutex<HashSet<VerifiedVoucher>>);

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

/// The channels this gate last saw, with their parsed signer and
/// descriptor, so a re-sent voucher costs no read. An entry may be behind
/// the store (another instance, a request that has not answered yet): it
/// only decides that a voucher at or below what was accepted needs no
/// write. Every hold is still taken by the store, which refuses a channel
/// that closed or ran out.
#[derive(Default)]
pub(super) struct SeenChannels(Mutex<HashMap<B256, Arc<Known>>>);

const SEEN_CAPACITY: usize = 65_536;

/// Whether `new` is not older than `old`: what a channel accepted and
/// spent only grows, and its status only moves towards finalized.
fn not_older(new: &ChannelRecord, old: &ChannelRecord) -> bool {
    let rank = |s: ChannelStatus| match s {
        ChannelStatus::Open => 0,
        ChannelStatus::Closing => 1,
        ChannelStatus::Finalized => 2,
    };
    new.accepted >= old.accepted
        && new.spent >= old.spent
        && new.deposit >= old.deposit
        && rank(new.status) >= rank(old.status)
        && new.close_requested_at >= old.close_requested_at
}

impl SeenChannels {
    fn get(&self, id: &B256) -> Option<Arc<Known>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn insert(&self, id: B256, known: Arc<Known>) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= SEEN_CAPACITY {
            seen.clear();
        }
        seen.insert(id, known);
    }

    /// Takes a record the store returned, unless a newer one is known.
    pub(super) fn update(&self, record: &ChannelRecord) {
        let Ok(id) = record.channel_id.parse::<B256>() else {
            return;
        };
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = seen.get_mut(&id)
            && not_older(record, &entry.record)
        {
            // In place unless a request still holds the entry.
            Arc::make_mut(entry).record.refresh_from(record);
        }
    }
}

/// Checks `v` is `signer`'s voucher in `protocol`'s EIP-712 domain on
/// `escrow` and `chain_id` ("Tempo Stream Channel"/uint128 for v1, "TIP20
/// Channel Reserve"/uint96 for v2).
pub(super) fn check_signature(
    protocol: Protocol,
    escrow: Address,
    chain_id: u64,
    v: &SignedVoucher,
    signer: Address,
) -> Result<(), PaymentProblem> {
    match protocol {
        Protocol::V1 => voucher::verify(
            escrow,
            chain_id,
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
        }),
        Protocol::V2 => verify_v2(escrow, chain_id, v, signer),
    }
}

/// A v2 voucher through the same canonical parsing and libsecp256k1
/// recovery as v1 (what `session_v2::verify_voucher` decides, faster).
fn verify_v2(
    reserve: Address,
    chain_id: u64,
    v: &SignedVoucher,
    signer: Address,
) -> Result<(), PaymentProblem> {
    if v.cumulative > session_v2::MAX_V2_AMOUNT {
        return Err(v2_problem(V2Error::AmountOutOfRange));
    }
    let invalid = || v2_problem(V2Error::InvalidSignature("signature does not verify"));
    let parsed = voucher::parse_signature(&v.signature).ok_or_else(invalid)?;
    let digest =
        precompile_voucher_signing_hash_with_escrow(v.channel_id, v.cumulative, reserve, chain_id)
            .map_err(|_| v2_problem(V2Error::AmountOutOfRange))?;
    match voucher::recover(&parsed, &digest) {
        Some(recovered) if recovered == signer => Ok(()),
        Some(recovered) => Err(v2_problem(V2Error::SignerMismatch { recovered })),
        None => Err(invalid()),
    }
}

impl SessionGate {
    /// Accepts a voucher on a channel of either protocol.
    pub async fn accept(&self, voucher: &SignedVoucher) -> Result<ChannelRecord, PaymentProblem> {
        self.accept_as(voucher, None).await
    }

    /// Refuses a credential for one protocol on the other's channel.
    pub(super) fn check_protocol(
        known: &Known,
        offered: Option<Protocol>,
    ) -> Result<(), PaymentProblem> {
        match offered {
            Some(p) if p != known.protocol => Err(PaymentProblem::new(
                ProblemKind::InvalidChallenge,
                format!(
                    "the challenge is for session protocol {p}, the channel is {}",
                    known.protocol
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The known channel a voucher-carrying credential names; for v2 its
    /// descriptor must be the stored one (and hash to the claimed id).
    pub(super) async fn voucher_channel(
        &self,
        channel_id: B256,
        descriptor: Option<&Descriptor>,
        offered: Option<Protocol>,
    ) -> Result<Known, PaymentProblem> {
        let known = self.stored_channel(channel_id, descriptor).await?;
        self.check_voucher_channel(&known, channel_id, descriptor, offered)?;
        Ok(known)
    }

    /// [`voucher_channel`](Self::voucher_channel) from what this gate last
    /// saw of the channel when it can, else from the store.
    async fn seen_voucher_channel(
        &self,
        channel_id: B256,
        descriptor: Option<&Descriptor>,
        offered: Option<Protocol>,
    ) -> Result<Arc<Known>, PaymentProblem> {
        let known = match self.seen.get(&channel_id) {
            Some(known) => known,
            None => {
                let known = Arc::new(self.stored_channel(channel_id, descriptor).await?);
                self.seen.insert(channel_id, Arc::clone(&known));
                known
            }
        };
        self.check_voucher_channel(&known, channel_id, descriptor, offered)?;
        Ok(known)
    }

    /// The stored channel a credential names; an unknown one whose v2
    /// descriptor does not hash to its id says so.
    async fn stored_channel(
        &self,
        channel_id: B256,
        descriptor: Option<&Descriptor>,
    ) -> Result<Known, PaymentProblem> {
        let Some(record) = self.known(channel_id).await? else {
            if let Some(d) = descriptor
                && self.v2.is_some()
                && session_v2::channel_id(d, self.settings.reserve, self.settings.chain_id)
                    != channel_id
            {
                return Err(v2_problem(V2Error::DescriptorMismatch(Field::ChannelId)));
            }
            return Err(not_found());
        };
        Self::ctx(record)
    }

    /// The credential is for this channel's protocol, and for v2 carries
    /// the stored descriptor (which hashes to the claimed id).
    fn check_voucher_channel(
        &self,
        known: &Known,
        channel_id: B256,
        descriptor: Option<&Descriptor>,
        offered: Option<Protocol>,
    ) -> Result<(), PaymentProblem> {
        Self::check_protocol(known, offered)?;
        if known.protocol == Protocol::V2 {
            let Some(sent) = descriptor else {
                return Err(invalid_payload("descriptor is required for v2"));
            };
            if Some(sent) != known.descriptor.as_ref() {
                let field =
                    if session_v2::channel_id(sent, self.settings.reserve, self.settings.chain_id)
                        != channel_id
                    {
                        Field::ChannelId
                    } else {
                        Field::Payer
                    };
                return Err(v2_problem(V2Error::DescriptorMismatch(field)));
            }
        }
        Ok(())
    }

    pub(super) async fn accept_as(
        &self,
        voucher: &SignedVoucher,
        offered: Option<Protocol>,
    ) -> Result<ChannelRecord, PaymentProblem> {
        self.accept_seen(voucher, offered)
            .await
            .map(|(channel, _)| channel)
    }

    /// [`accept_as`](Self::accept_as), and whether the channel is what this
    /// gate last saw (nothing was read or written) rather than the store's.
    pub(super) async fn accept_seen(
        &self,
        voucher: &SignedVoucher,
        offered: Option<Protocol>,
    ) -> Result<(ChannelRecord, bool), PaymentProblem> {
        let known = self
            .seen_voucher_channel(voucher.channel_id, voucher.descriptor.as_ref(), offered)
            .await?;
        let chain = self.chain_for(known.protocol)?;
        let fingerprint = VerifiedVoucher::of(voucher, known.signer);
        if !self.verified.contains(&fingerprint) {
            check_signature(
                known.protocol,
                chain.escrow(),
                chain.chain_id(),
                voucher,
                known.signer,
            )?;
        }
        let channel = &known.record;
        // The same voucher again (a client re-sending its current cumulative
        // authorization on each request), or one below what was accepted
        // (concurrent clients' vouchers crossing): nothing to write, nothing
        // to read. The spec answers both like a resubmission.
        let serving = channel.status == ChannelStatus::Open && channel.close_requested_at == 0;
        if serving && voucher.cumulative <= channel.accepted {
            self.verified.insert(fingerprint);
            return Ok((known.record.clone(), true));
        }
        let stored = StoredVoucher {
            cumulative: voucher.cumulative,
            signature: hex_signature(&voucher.signature),
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
            self.refresh_known(&known).await?;
            outcome = self
                .ledger
                .accept_voucher(id, &stored, self.settings.min_voucher_delta)
                .await
                .map_err(store_failure)?;
        }
        match outcome {
            VoucherOutcome::Accepted(channel) => {
                self.verified.insert(fingerprint);
                self.seen.update(&channel);
                self.ring(id);
                Ok((channel, false))
            }
            VoucherOutcome::Unchanged(channel) => {
                self.verified.insert(fingerprint);
                self.seen.update(&channel);
                Ok((channel, false))
            }
            // Below the highest accepted (concurrent clients' vouchers cross
            // on the way): the spec has it answered like a resubmission,
            // with the channel as it stands.
            VoucherOutcome::Refused(VoucherRefusal::Decreasing { .. }) => {
                self.verified.insert(fingerprint);
                let channel = self
                    .known(voucher.channel_id)
                    .await?
                    .ok_or_else(not_found)?;
                self.seen.update(&channel);
                Ok((channel, false))
            }
            VoucherOutcome::Refused(refusal) => Err(refusal_problem(refusal)),
        }
    }
}
