//! What a route asks of a session payer, before it becomes a challenge.

use alloy::primitives::Address;
use serde_json::{Map, Value, json};

use super::chain::Protocol;
use crate::offer::checksummed;

/// A Tempo `session` offer on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOffer {
    /// What this request needs authorized: its worst-case price. The actual
    /// cost is charged after the upstream answers; the rest stays available
    /// on the channel for later requests.
    pub amount: u128,
    /// Deposit we suggest for a new channel.
    pub suggested_deposit: u128,
    pub currency: Address,
    pub recipient: Address,
    pub chain_id: u64,
    pub escrow: Address,
    /// Smallest increase between two accepted vouchers.
    pub min_voucher_delta: u128,
    /// v1 (escrow contract; no `sessionProtocol` marker, as before the
    /// marker existed) or v2 (`sessionProtocol: "v2"`, the channel reserve).
    pub protocol: Protocol,
    /// Shown to the payer; not part of what is verified.
    pub description: Option<String>,
    /// v2: the draft's session snapshot of the payer's channel
    /// (`methodDetails.sessionSnapshot`), on a challenge that answers a
    /// credential for it. A hint bound by the challenge's HMAC; what is
    /// verified ignores it.
    pub snapshot: Option<Value>,
}

impl SessionOffer {
    /// These terms for a request needing `amount` authorized; the
    /// suggested deposit is raised to cover it.
    pub fn for_amount(&self, amount: u128, description: Option<String>) -> Self {
        Self {
            amount,
            suggested_deposit: self.suggested_deposit.max(amount),
            description,
            ..self.clone()
        }
    }

    /// The challenge's `request` object.
    pub fn request_json(&self) -> Value {
        // Members in sorted order, so the challenge can print it as
        // canonical JSON without sorting (`challenge::encode_canonical`).
        let mut details = Map::new();
        details.insert("chainId".into(), json!(self.chain_id));
        details.insert("escrowContract".into(), json!(checksummed(&self.escrow)));
        if self.min_voucher_delta > 0 {
            details.insert(
                "minVoucherDelta".into(),
                json!(self.min_voucher_delta.to_string()),
            );
        }
        if self.protocol == Protocol::V2 {
            details.insert("sessionProtocol".into(), json!(Protocol::V2.as_str()));
        }
        if let Some(snapshot) = self
            .snapshot
            .as_ref()
            .filter(|_| self.protocol == Protocol::V2)
        {
            details.insert("sessionSnapshot".into(), snapshot.clone());
        }
        json!({
            "amount": self.amount.to_string(),
            "currency": checksummed(&self.currency),
            "methodDetails": Value::Object(details),
            "recipient": checksummed(&self.recipient),
            "suggestedDeposit": self.suggested_deposit.to_string(),
            "unitType": "request",
        })
    }

    /// Whether an echoed request names the same channel terms (payee, token,
    /// escrow, chain, protocol), whatever amount it asked for. Voucher, top-up and close
    /// credentials may answer a challenge issued for an earlier request.
    pub fn same_terms(&self, echoed: &Value) -> bool {
        let ours = self.request_json();
        let field = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        };
        let detail = |v: &Value, k: &str| v.get("methodDetails").and_then(|d| d.get(k)).cloned();
        field(&ours, "currency") == field(echoed, "currency")
            && field(&ours, "recipient") == field(echoed, "recipient")
            && detail(&ours, "chainId") == detail(echoed, "chainId")
            && detail(&ours, "sessionProtocol") == detail(echoed, "sessionProtocol")
            && detail(&ours, "escrowContract").and_then(|v| v.as_str().map(str::to_ascii_lowercase))
                == detail(echoed, "escrowContract")
                    .and_then(|v| v.as_str().map(str::to_ascii_lowercase))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> SessionOffer {
        SessionOffer {
            amount: 1_234,
            suggested_deposit: 5_000_000,
            currency: Address::repeat_byte(0x20),
            recipient: Address::repeat_byte(0x11),
            chain_id: 42431,
            escrow: Address::repeat_byte(0xe5),
            min_voucher_delta: 0,
            protocol: Protocol::V1,
            description: None,
            snapshot: None,
        }
    }

    #[test]
    fn request_carries_escrow_chain_and_deposit() {
        let request = offer().request_json();
        assert_eq!(request["amount"], "1234");
        assert_eq!(request["suggestedDeposit"], "5000000");
        assert_eq!(request["methodDetails"]["chainId"], 42431);
        assert!(request["methodDetails"].get("minVoucherDelta").is_none());
        let with_delta = SessionOffer {
            min_voucher_delta: 10,
            ..offer()
        };
        assert_eq!(
            with_delta.request_json()["methodDetails"]["minVoucherDelta"],
            "10"
        );
    }

    #[test]
    fn terms_ignore_amount_but_not_escrow() {
        let other_amount = SessionOffer {
            amount: 1,
            ..offer()
        };
        assert!(offer().same_terms(&other_amount.request_json()));
        let other_escrow = SessionOffer {
            escrow: Address::repeat_byte(0xe6),
            ..offer()
        };
        assert!(!offer().same_terms(&other_escrow.request_json()));
        assert!(!offer().same_terms(&json!({})));
        let v2 = SessionOffer {
            protocol: Protocol::V2,
            ..offer()
        };
        assert!(!offer().same_terms(&v2.request_json()));
        assert!(v2.same_terms(&v2.request_json()));
    }

    #[test]
    fn only_v2_carries_a_snapshot_and_the_terms_ignore_it() {
        let snapshot = json!({"channelId": "0x01", "acceptedCumulative": "5"});
        let v2 = SessionOffer {
            protocol: Protocol::V2,
            snapshot: Some(snapshot.clone()),
            ..offer()
        };
        assert_eq!(
            v2.request_json()["methodDetails"]["sessionSnapshot"],
            snapshot
        );
        let plain = SessionOffer {
            snapshot: None,
            ..v2.clone()
        };
        assert!(plain.same_terms(&v2.request_json()));
        let v1 = SessionOffer {
            snapshot: Some(snapshot),
            ..offer()
        };
        assert!(
            v1.request_json()["methodDetails"]
                .get("sessionSnapshot")
                .is_none()
        );
    }

    #[test]
    fn v2_carries_the_protocol_marker_chain_and_reserve() {
        let v2 = SessionOffer {
            protocol: Protocol::V2,
            ..offer()
        };
        let details = &v2.request_json()["methodDetails"];
        assert_eq!(details["sessionProtocol"], "v2");
        assert_eq!(details["chainId"], 42431);
        assert!(details["escrowContract"].is_string());
        assert!(
            offer().request_json()["methodDetails"]
                .get("sessionProtocol")
                .is_none()
        );
    }
}
