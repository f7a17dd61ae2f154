//! Session receipts (`Payment-Receipt`, and the last event of a stream),
//! and for v2 channels the draft's session snapshot
//! (`Payment-Session-Snapshot`, `methodDetails.sessionSnapshot`).

use base64::Engine;
use mpp::protocol::methods::tempo::session_receipt::SessionReceipt;
use serde_json::{Value, json};
use tollgate_ledger::ChannelRecord;

use super::SessionGate;
use super::problems::store_failure;
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
    /// the highest accepted voucher so a client can resume from it:
    /// `requiredCumulative` is what the next request needs authorized.
    pub async fn snapshot(
        &self,
        channel: &ChannelRecord,
        required_cumulative: u128,
    ) -> Result<Option<Value>, PaymentProblem> {
        let Some(descriptor) = channel
            .descriptor
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
        else {
            return Ok(None);
        };
        let highest = self
            .ledger
            .voucher_covering(&channel.channel_id, channel.accepted)
            .await
            .map_err(store_failure)?
            .filter(|v| v.cumulative == channel.accepted);
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
        if let Some(v) = highest {
            snapshot["highestVoucher"] = json!({
                "channelId": channel.channel_id,
                "cumulativeAmount": v.cumulative.to_string(),
                "signature": v.signature,
            });
        }
        Ok(Some(snapshot))
    }

    /// The `Payment-Session-Snapshot` header value: the snapshot as
    /// unpadded base64url JSON.
    pub fn snapshot_header(snapshot: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(snapshot.to_string())
    }
}
