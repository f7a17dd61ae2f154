//! Session receipts (`Payment-Receipt`, and the last event of a stream),
//! and for v2 channels the draft's session snapshot
//! (`Payment-Session-Snapshot`, `methodDetails.sessionSnapshot`).

use base64::Engine;
use mpp::protocol::methods::tempo::session_receipt::SessionReceipt;
use serde_json::{Value, json};
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

    /// The snapshot without a ledger read (what a paid answer carries):
    /// the highest voucher is included when `known` — the voucher the
    /// request's credential carried — is the channel's highest.
    pub fn snapshot_with(
        &self,
        channel: &ChannelRecord,
        required_cumulative: u128,
        known: Option<&SignedVoucher>,
    ) -> Option<Value> {
        let highest = known
            .filter(|v| {
                v.cumulative == channel.accepted
                    && format!("{:#x}", v.channel_id) == channel.channel_id
            })
            .map(|v| hex_signature(&v.signature));
        snapshot_json(channel, required_cumulative, highest)
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

    /// The `Payment-Session-Snapshot` header value: the snapshot as
    /// unpadded base64url JSON.
    pub fn snapshot_header(snapshot: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(snapshot.to_string())
    }
}

/// The snapshot of a v2 channel (`None` without a descriptor: v1), with
/// `highest` (the signature of the voucher for `accepted`) when known.
fn snapshot_json(
    channel: &ChannelRecord,
    required_cumulative: u128,
    highest: Option<String>,
) -> Option<Value> {
    let descriptor = channel
        .descriptor
        .as_deref()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())?;
    let mut snapshot = json!({
        "acceptedCumulative": channel.accepted.to_string(),
        "chainId": channel.chain_id,
        "channelId": channel.channel_id,
        "deposit": channel.deposit.to_string(),
        "descriptor": descriptor,
        "escrow": channel.escrow,
        "requiredCumulative": required_cumulative.max(channel.accepted).to_string(),
        "settled": channel.settled.to_string(),
        "spent": channel.spent.to_string(),
        "units": channel.units,
    });
    if channel.close_requested_at != 0 {
        snapshot["closeRequestedAt"] = json!(channel.close_requested_at.to_string());
    }
    if let Some(signature) = highest {
        snapshot["highestVoucher"] = json!({
            "channelId": channel.channel_id,
            "cumulativeAmount": channel.accepted.to_string(),
            "signature": signature,
        });
    }
    Some(snapshot)
}
