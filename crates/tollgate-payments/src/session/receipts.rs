//! Session receipts (`Payment-Receipt`, and the last event of a stream),
//! and for v2 channels the draft's session snapshot
//! (`Payment-Session-Snapshot`, `methodDetails.sessionSnapshot`).

use base64::Engine;
use mpp::protocol::methods::tempo::session_receipt::SessionReceipt;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tollgate_ledger::ChannelRecord;

use super::problems::store_failure;
use super::{SessionGate, SignedVoucher, hex_signature};
use crate::problem::PaymentProblem;

pub(super) fn session_receipt(
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

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl SessionGate {
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

    /// The draft's session snapshot of a v2 channel (`None` for v1), with
    /// the highest accepted voucher (read from the ledger) so a client can
    /// resume from it: `requiredCumulative` is what the next request needs
    /// authorized.
    pub async fn snapshot(
        &self,
        channel: &ChannelRecord,
        required_cumulative: u128,
    ) -> Result<Option<Value>, PaymentProblem> {
        if channel.descriptor.is_none() {
            return Ok(None);
        }
        let highest = self
            .ledger
            .voucher_covering(&channel.channel_id, channel.accepted)
            .await
            .map_err(store_failure)?
            .filter(|v| v.cumulative == channel.accepted)
            .map(|v| v.signature);
        Ok(snapshot_json(channel, required_cumulative, highest))
    }

    /// The snapshot without a ledger read (what a paid answer carries),
    /// as its `Payment-Session-Snapshot` value: the highest voucher is
    /// included when `known` — the voucher the request's credential
    /// carried — is the channel's highest. Serialized once, straight from
    /// the record (no JSON tree is built on the paid path).
    pub fn snapshot_header_with(
        &self,
        channel: &ChannelRecord,
        required_cumulative: u128,
        known: Option<&SignedVoucher>,
    ) -> Option<String> {
        channel.descriptor.as_ref()?;
        let highest = known
            .filter(|v| {
                v.cumulative == channel.accepted
                    && format!("{:#x}", v.channel_id) == channel.channel_id
            })
            .map(|v| hex_signature(&v.signature));
        let json = Snapshot::of(channel, required_cumulative, highest.as_deref())
            .and_then(|snapshot| serde_json::to_vec(&snapshot).ok())?;
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    /// The snapshot a refusal's fresh challenge carries for the payer's
    /// channel as it stands now: `requiredCumulative` is what a request
    /// needing `amount` must have authorized. `None` for v1, an unknown
    /// channel, or when the store cannot say (it is only a hint).
    pub async fn snapshot_for_request(&self, channel_id: &str, amount: u128) -> Option<Value> {
        let channel = self.ledger.channel(channel_id).await.ok()??;
        let required = channel.spent + channel.reserved + amount;
        self.snapshot(&channel, required).await.ok()?
    }
}

/// The snapshot of a v2 channel (`None` without a descriptor: v1), with
/// `highest` (the signature of the voucher for `accepted`) when known.
fn snapshot_json(
    channel: &ChannelRecord,
    required_cumulative: u128,
    highest: Option<String>,
) -> Option<Value> {
    let snapshot = Snapshot::of(channel, required_cumulative, highest.as_deref())?;
    serde_json::to_value(snapshot).ok()
}

/// The draft's session snapshot, borrowed from the channel's record.
/// Amounts are decimal strings; the descriptor is the stored JSON as is.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot<'a> {
    accepted_cumulative: Decimal,
    chain_id: u64,
    channel_id: &'a str,
    deposit: Decimal,
    descriptor: &'a RawValue,
    escrow: &'a str,
    required_cumulative: Decimal,
    settled: Decimal,
    spent: Decimal,
    units: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_requested_at: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    highest_voucher: Option<HighestVoucher<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HighestVoucher<'a> {
    channel_id: &'a str,
    cumulative_amount: Decimal,
    signature: &'a str,
}

impl<'a> Snapshot<'a> {
    /// `None` without a (valid JSON) descriptor: a v1 channel.
    fn of(
        channel: &'a ChannelRecord,
        required_cumulative: u128,
        highest: Option<&'a str>,
    ) -> Option<Self> {
        let descriptor = serde_json::from_str::<&RawValue>(channel.descriptor.as_deref()?).ok()?;
        Some(Self {
            accepted_cumulative: Decimal(channel.accepted),
            chain_id: channel.chain_id,
            channel_id: &channel.channel_id,
            deposit: Decimal(channel.deposit),
            descriptor,
            escrow: &channel.escrow,
            required_cumulative: Decimal(required_cumulative.max(channel.accepted)),
            settled: Decimal(channel.settled),
            spent: Decimal(channel.spent),
            units: channel.units,
            close_requested_at: (channel.close_requested_at != 0)
                .then_some(Decimal(u128::from(channel.close_requested_at))),
            highest_voucher: highest.map(|signature| HighestVoucher {
                channel_id: &channel.channel_id,
                cumulative_amount: Decimal(channel.accepted),
                signature,
            }),
        })
    }
}

/// An amount serialized as its decimal string (JSON numbers lose
/// precision past 2^53).
struct Decimal(u128);

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}
