//! Session credential payloads: `open`, `topUp`, `voucher`, `close`.

use alloy::primitives::{Address, B256, Bytes};
use serde_json::Value;

use crate::problem::{PaymentProblem, ProblemKind};
use crate::session_v2::Descriptor;

/// A cumulative voucher as sent: channel, amount, signature bytes, and the
/// channel's descriptor (v2 carries it in every credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedVoucher {
    pub channel_id: B256,
    pub cumulative: u128,
    pub signature: Bytes,
    pub descriptor: Option<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPayload {
    pub transaction: Bytes,
    /// The client's claim; the transaction's calldata is what counts.
    pub authorized_signer: Option<Address>,
    pub voucher: SignedVoucher,
    /// v2 channel descriptor.
    pub descriptor: Option<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpPayload {
    pub channel_id: B256,
    pub transaction: Bytes,
    pub additional_deposit: u128,
    pub descriptor: Option<Descriptor>,
}

/// One session action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Boxed: a transaction, a voucher and a descriptor make it large.
    Open(Box<OpenPayload>),
    TopUp(TopUpPayload),
    Voucher(SignedVoucher),
    Close(SignedVoucher),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Open(_) => "open",
            Self::TopUp(_) => "topUp",
            Self::Voucher(_) => "voucher",
            Self::Close(_) => "close",
        }
    }

    pub fn channel_id(&self) -> B256 {
        match self {
            Self::Open(open) => open.voucher.channel_id,
            Self::TopUp(top_up) => top_up.channel_id,
            Self::Voucher(v) | Self::Close(v) => v.channel_id,
        }
    }

    /// The voucher the credential carries (a top-up carries none).
    pub fn voucher(&self) -> Option<&SignedVoucher> {
        match self {
            Self::Open(open) => Some(&open.voucher),
            Self::TopUp(_) => None,
            Self::Voucher(v) | Self::Close(v) => Some(v),
        }
    }

    /// Decodes a credential payload. Unknown fields are ignored, unknown
    /// actions refused.
    pub fn parse(payload: &Value) -> Result<Self, PaymentProblem> {
        let action = text(payload, "action")?;
        match action {
            "open" => {
                if payload.get("type").and_then(Value::as_str) != Some("transaction") {
                    return Err(invalid("open payload must have type \"transaction\""));
                }
                Ok(Self::Open(Box::new(OpenPayload {
                    transaction: hex_bytes(payload, "transaction")?,
                    authorized_signer: match payload.get("authorizedSigner") {
                        None | Some(Value::Null) => None,
                        Some(_) => Some(address(payload, "authorizedSigner")?),
                    },
                    voucher: voucher(payload)?,
                    descriptor: descriptor(payload)?,
                })))
            }
            "topUp" => Ok(Self::TopUp(TopUpPayload {
                channel_id: bytes32(payload, "channelId")?,
                transaction: hex_bytes(payload, "transaction")?,
                additional_deposit: amount(payload, "additionalDeposit")?,
                descriptor: descriptor(payload)?,
            })),
            "voucher" => Ok(Self::Voucher(voucher(payload)?)),
            "close" => Ok(Self::Close(voucher(payload)?)),
            _ => Err(invalid("unknown session action")),
        }
    }
}

fn voucher(payload: &Value) -> Result<SignedVoucher, PaymentProblem> {
    Ok(SignedVoucher {
        channel_id: bytes32(payload, "channelId")?,
        cumulative: amount(payload, "cumulativeAmount")?,
        signature: hex_bytes(payload, "signature")?,
        descriptor: descriptor(payload)?,
    })
}

/// `descriptor`, when present (v2); malformed is refused, not ignored.
fn descriptor(payload: &Value) -> Result<Option<Descriptor>, PaymentProblem> {
    match payload.get("descriptor") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => Descriptor::from_json(value)
            .map(Some)
            .map_err(|e| invalid(e.to_string())),
    }
}

fn invalid(detail: impl Into<String>) -> PaymentProblem {
    PaymentProblem::new(ProblemKind::InvalidPayload, detail)
}

fn text<'a>(payload: &'a Value, field: &str) -> Result<&'a str, PaymentProblem> {
    payload.get(field).and_then(Value::as_str).ok_or_else(|| {
        invalid(format!(
            "payload field `{field}` is missing or not a string"
        ))
    })
}

fn hex_bytes(payload: &Value, field: &str) -> Result<Bytes, PaymentProblem> {
    text(payload, field)?
        .parse()
        .map_err(|_| invalid(format!("payload field `{field}` is not 0x-hex")))
}

fn bytes32(payload: &Value, field: &str) -> Result<B256, PaymentProblem> {
    let raw = text(payload, field)?;
    if raw.len() != 66 {
        return Err(invalid(format!(
            "payload field `{field}` is not a 0x-hex bytes32"
        )));
    }
    raw.parse()
        .map_err(|_| invalid(format!("payload field `{field}` is not a 0x-hex bytes32")))
}

fn address(payload: &Value, field: &str) -> Result<Address, PaymentProblem> {
    text(payload, field)?
        .parse()
        .map_err(|_| invalid(format!("payload field `{field}` is not an address")))
}

/// A base-unit amount: decimal digits only, no sign, no exponent.
fn amount(payload: &Value, field: &str) -> Result<u128, PaymentProblem> {
    let raw = text(payload, field)?;
    if raw.is_empty() || raw.len() > 39 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "payload field `{field}` is not a decimal integer amount"
        )));
    }
    raw.parse()
        .map_err(|_| invalid(format!("payload field `{field}` is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0x6d0f4fdf1f2f6a1f6c1b0fbd6a7d5c2c0a8d3d7b1f6a9c1b3e2d4a5b6c7d8e9f";

    #[test]
    fn parses_each_action() {
        let v = json!({"action":"voucher","channelId":ID,"cumulativeAmount":"250000","signature":"0xabcd","extra":1});
        let Action::Voucher(voucher) = Action::parse(&v).unwrap() else {
            panic!("not a voucher")
        };
        assert_eq!(voucher.cumulative, 250_000);
        assert_eq!(voucher.signature.as_ref(), &[0xab, 0xcd]);
        let close =
            json!({"action":"close","channelId":ID,"cumulativeAmount":"1","signature":"0x01"});
        assert_eq!(Action::parse(&close).unwrap().name(), "close");
        let top_up = json!({"action":"topUp","type":"transaction","channelId":ID,"transaction":"0x76","additionalDeposit":"5"});
        assert!(
            matches!(Action::parse(&top_up).unwrap(), Action::TopUp(t) if t.additional_deposit == 5)
        );
        let open = json!({"action":"open","type":"transaction","channelId":ID,"transaction":"0x76","cumulativeAmount":"0","signature":"0x01","authorizedSigner":"0x1111111111111111111111111111111111111111"});
        assert!(
            matches!(Action::parse(&open).unwrap(), Action::Open(o) if o.authorized_signer.is_some())
        );
    }

    #[test]
    fn refuses_malformed_fields() {
        let base =
            json!({"action":"voucher","channelId":ID,"cumulativeAmount":"1","signature":"0x01"});
        let with = |k: &str, v: Value| {
            let mut p = base.clone();
            p[k] = v;
            Action::parse(&p).unwrap_err().kind
        };
        for bad in [
            "-1",
            "1e3",
            "",
            "0x10",
            " 1",
            "1.0",
            "340282366920938463463374607431768211456",
        ] {
            assert_eq!(
                with("cumulativeAmount", json!(bad)),
                ProblemKind::InvalidPayload,
                "{bad}"
            );
        }
        assert_eq!(
            with("cumulativeAmount", json!(1)),
            ProblemKind::InvalidPayload
        );
        assert_eq!(
            with("channelId", json!("0x1234")),
            ProblemKind::InvalidPayload
        );
        assert_eq!(with("signature", json!("zz")), ProblemKind::InvalidPayload);
        assert_eq!(with("action", json!("steal")), ProblemKind::InvalidPayload);
        let open = json!({"action":"open","channelId":ID,"transaction":"0x76","cumulativeAmount":"0","signature":"0x01"});
        assert_eq!(
            Action::parse(&open).unwrap_err().kind,
            ProblemKind::InvalidPayload
        );
    }
}
