//! Reading a 402's offers: one `WWW-Authenticate: Payment …` header per
//! offer, decoded into what this client knows how to pay.

use alloy::primitives::Address;
use mpp::PaymentChallenge;
use serde_json::Value;

use crate::error::{Error, Result};

/// How the payer wants to pay (`--intent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntentChoice {
    /// A session when a usable channel for the offer's payee, token and
    /// escrow exists in the local state, else a charge.
    #[default]
    Auto,
    Charge,
    Session,
}

/// A Tempo `charge` offer, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeOffer {
    pub amount: u128,
    pub currency: Address,
    pub recipient: Address,
    pub chain_id: u64,
    /// `methodDetails.feePayer`: the server sponsors the fees.
    pub fee_payer: bool,
    /// `methodDetails.supportedModes` (`pull`, `push`); `None` = both.
    pub modes: Option<Vec<String>>,
}

impl ChargeOffer {
    pub fn supports(&self, mode: &str) -> bool {
        self.modes
            .as_ref()
            .is_none_or(|modes| modes.iter().any(|m| m == mode))
    }
}

/// A Tempo `session` offer, decoded: v1 (escrow contract) or v2 (the
/// TIP-20 channel reserve, `sessionProtocol: "v2"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOffer {
    /// What this request needs authorized now: its worst case, or for a
    /// stream that may ask for more as it goes, less.
    pub amount: u128,
    /// The most this request may cost in all: the amount of a charge
    /// offered beside it (same payee, token and chain; Tollgate asks a
    /// stream's session challenge for less than its worst case), else
    /// `amount`. A stream is never authorized beyond it.
    pub worst_case: u128,
    pub currency: Address,
    /// The channel payee.
    pub recipient: Address,
    pub suggested_deposit: Option<u128>,
    pub escrow: Address,
    pub chain_id: u64,
    pub min_voucher_delta: u128,
    /// Session protocol v2: channels on the channel reserve at `escrow`.
    pub v2: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferKind {
    Charge(ChargeOffer),
    Session(SessionOffer),
}

/// A challenge together with its decoded terms.
#[derive(Debug, Clone)]
pub struct Offer {
    pub challenge: PaymentChallenge,
    pub kind: OfferKind,
}

impl Offer {
    pub fn amount(&self) -> u128 {
        match &self.kind {
            OfferKind::Charge(c) => c.amount,
            OfferKind::Session(s) => s.amount,
        }
    }
    /// The most paying this offer may cost (a session's stream may ask for
    /// more than its `amount` as it goes).
    pub fn worst_case(&self) -> u128 {
        match &self.kind {
            OfferKind::Charge(c) => c.amount,
            OfferKind::Session(s) => s.worst_case.max(s.amount),
        }
    }
    pub fn currency(&self) -> Address {
        match &self.kind {
            OfferKind::Charge(c) => c.currency,
            OfferKind::Session(s) => s.currency,
        }
    }
    pub fn recipient(&self) -> Address {
        match &self.kind {
            OfferKind::Charge(c) => c.recipient,
            OfferKind::Session(s) => s.recipient,
        }
    }
    pub fn chain_id(&self) -> u64 {
        match &self.kind {
            OfferKind::Charge(c) => c.chain_id,
            OfferKind::Session(s) => s.chain_id,
        }
    }
}

/// Parses every `WWW-Authenticate` value of a 402. Values that are not
/// `Payment` challenges are skipped; when none parses, the 402 is
/// malformed.
pub fn parse_challenges(values: &[String]) -> Result<Vec<PaymentChallenge>> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for value in values {
        match mpp::parse_www_authenticate(value) {
            Ok(challenge) => parsed.push(challenge),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if parsed.is_empty() {
        return Err(Error::MalformedChallenge(if values.is_empty() {
            "the 402 response carries no WWW-Authenticate: Payment header".to_owned()
        } else {
            format!(
                "no WWW-Authenticate value is a valid Payment challenge ({})",
                errors.join("; ")
            )
        }));
    }
    Ok(parsed)
}

/// `method/intent` of each challenge, for messages.
pub fn describe(challenges: &[PaymentChallenge]) -> String {
    challenges
        .iter()
        .map(|c| format!("{}/{}", c.method.as_str(), c.intent.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_tempo(challenge: &PaymentChallenge, intent: &str) -> bool {
    challenge.method.as_str().eq_ignore_ascii_case("tempo")
        && challenge.intent.as_str().eq_ignore_ascii_case(intent)
}

/// The first challenge of `intent` (`charge` or `session`) for Tempo.
pub fn find<'a>(challenges: &'a [PaymentChallenge], intent: &str) -> Option<&'a PaymentChallenge> {
    challenges.iter().find(|c| is_tempo(c, intent))
}

/// The session challenge to answer: v2 when offered (and decodable),
/// else the first session challenge.
pub fn find_session(challenges: &[PaymentChallenge]) -> Option<&PaymentChallenge> {
    let mut sessions = challenges.iter().filter(|c| is_tempo(c, "session"));
    let first = sessions.clone().next();
    sessions
        .find(|c| matches!(decode(c), Ok(Offer { kind: OfferKind::Session(s), .. }) if s.v2))
        .or(first)
}

/// Decodes a session challenge, taking its worst case from a charge
/// offered beside it for the same payee, token and chain (the charge asks
/// for the whole worst case of the same request).
pub fn decode_session(challenge: &PaymentChallenge, all: &[PaymentChallenge]) -> Result<Offer> {
    let mut offer = decode(challenge)?;
    if let OfferKind::Session(session) = &mut offer.kind {
        let charged = all
            .iter()
            .filter(|c| is_tempo(c, "charge"))
            .filter_map(|c| decode(c).ok())
            .filter_map(|o| match o.kind {
                OfferKind::Charge(charge)
                    if charge.currency == session.currency
                        && charge.recipient == session.recipient
                        && charge.chain_id == session.chain_id =>
                {
                    Some(charge.amount)
                }
                _ => None,
            })
            .max();
        if let Some(charged) = charged {
            session.worst_case = session.amount.max(charged);
        }
    }
    Ok(offer)
}

/// Decodes a Tempo challenge's request. Errors are malformed challenges.
pub fn decode(challenge: &PaymentChallenge) -> Result<Offer> {
    if !is_tempo(challenge, "charge") && !is_tempo(challenge, "session") {
        return Err(Error::Unsupported(format!(
            "payment method {}/{} is not supported (supported: tempo/charge, tempo/session)",
            challenge.method.as_str(),
            challenge.intent.as_str()
        )));
    }
    let request = challenge
        .request
        .decode_value()
        .map_err(|e| Error::MalformedChallenge(format!("request is not base64url JSON: {e}")))?;
    let details = request.get("methodDetails").cloned().unwrap_or(Value::Null);
    let chain_id = match details.get("chainId") {
        None | Some(Value::Null) => mpp::tempo::CHAIN_ID,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| malformed("methodDetails.chainId is not a number"))?,
    };
    let amount =
        amount_field(&request, "amount")?.ok_or_else(|| malformed("request.amount is missing"))?;
    let currency =
        address(&request, "currency")?.ok_or_else(|| malformed("request.currency is missing"))?;
    let recipient =
        address(&request, "recipient")?.ok_or_else(|| malformed("request.recipient is missing"))?;
    let kind = if is_tempo(challenge, "charge") {
        let modes = match details.get("supportedModes") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(_) => return Err(malformed("methodDetails.supportedModes is not a list")),
        };
        OfferKind::Charge(ChargeOffer {
            amount,
            currency,
            recipient,
            chain_id,
            fee_payer: details.get("feePayer") == Some(&Value::Bool(true)),
            modes,
        })
    } else if is_tempo(challenge, "session") {
        let v2 = match details.get("sessionProtocol").filter(|v| !v.is_null()) {
            None => false,
            Some(p) if p.as_str() == Some("v1") => false,
            Some(p) if p.as_str() == Some("v2") => true,
            Some(protocol) => {
                return Err(Error::Unsupported(format!(
                    "session protocol {protocol} is not supported (this client speaks v1 and v2)"
                )));
            }
        };
        let escrow = address(&details, "escrowContract")?
            .ok_or_else(|| malformed("methodDetails.escrowContract is missing"))?;
        OfferKind::Session(SessionOffer {
            amount,
            worst_case: amount,
            currency,
            recipient,
            suggested_deposit: amount_field(&request, "suggestedDeposit")?,
            escrow,
            chain_id,
            min_voucher_delta: amount_field(&details, "minVoucherDelta")?.unwrap_or(0),
            v2,
        })
    } else {
        unreachable!("checked above")
    };
    Ok(Offer {
        challenge: challenge.clone(),
        kind,
    })
}

fn malformed(what: &str) -> Error {
    Error::MalformedChallenge(what.to_owned())
}

/// A decimal base-unit amount (a JSON string, or a number).
fn amount_field(value: &Value, field: &str) -> Result<Option<u128>> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= 39 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse()
                .map(Some)
                .map_err(|_| malformed(&format!("{field} is out of range")))
        }
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().map(u128::from)),
        Some(_) => Err(malformed(&format!(
            "{field} is not a decimal base-unit amount"
        ))),
    }
}

fn address(value: &Value, field: &str) -> Result<Option<Address>> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| malformed(&format!("{field} is not an address"))),
        Some(_) => Err(malformed(&format!("{field} is not an address"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpp::protocol::core::Base64UrlJson;
    use serde_json::json;

    fn challenge(method: &str, intent: &str, request: Value) -> PaymentChallenge {
        PaymentChallenge::new(
            "id-1",
            "realm",
            method,
            intent,
            Base64UrlJson::from_value(&request).unwrap(),
        )
    }

    #[test]
    fn decodes_charge_and_session() {
        let charge = challenge(
            "tempo",
            "charge",
            json!({"amount":"10000","currency":"0x20c0000000000000000000000000000000000000",
                   "recipient":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                   "methodDetails":{"chainId":42431,"feePayer":true,"supportedModes":["pull"]}}),
        );
        let offer = decode(&charge).unwrap();
        let OfferKind::Charge(c) = offer.kind else {
            panic!()
        };
        assert_eq!((c.amount, c.chain_id, c.fee_payer), (10_000, 42431, true));
        assert!(c.supports("pull") && !c.supports("push"));

        let session = challenge(
            "tempo",
            "session",
            json!({"amount":"4037","currency":"0x20c0000000000000000000000000000000000000",
                   "recipient":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","suggestedDeposit":"5000000",
                   "methodDetails":{"chainId":42431,"escrowContract":"0x5FbDB2315678afecb367f032d93F642f64180aa3"}}),
        );
        let OfferKind::Session(s) = decode(&session).unwrap().kind else {
            panic!()
        };
        assert_eq!((s.amount, s.suggested_deposit), (4037, Some(5_000_000)));
    }

    #[test]
    fn a_session_takes_its_worst_case_from_the_charge_beside_it() {
        let terms = |amount: &str, recipient: &str| {
            json!({"amount":amount,"currency":"0x20c0000000000000000000000000000000000000",
                   "recipient":recipient,
                   "methodDetails":{"chainId":42431,"escrowContract":"0x4d50500000000000000000000000000000000000"}})
        };
        let payee = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
        let stream = challenge("tempo", "session", terms("2600", payee));
        let worst = challenge("tempo", "charge", terms("40000", payee));
        let elsewhere = challenge(
            "tempo",
            "charge",
            terms("90000", "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
        );
        let all = [worst.clone(), elsewhere.clone(), stream.clone()];
        let offer = decode_session(&stream, &all).unwrap();
        assert_eq!((offer.amount(), offer.worst_case()), (2600, 40_000));
        // Another payee's charge says nothing about this request.
        let offer = decode_session(&stream, &[elsewhere, stream.clone()]).unwrap();
        assert_eq!((offer.amount(), offer.worst_case()), (2600, 2600));
    }

    #[test]
    fn refuses_bad_amounts_and_unknown_methods() {
        for bad in ["-1", "1e3", "", "0x10", "1.5"] {
            let c = challenge(
                "tempo",
                "charge",
                json!({"amount":bad,"currency":"0x20c0000000000000000000000000000000000000",
                       "recipient":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8"}),
            );
            assert!(
                matches!(decode(&c), Err(Error::MalformedChallenge(_))),
                "{bad}"
            );
        }
        let stripe = challenge("stripe", "charge", json!({"amount":"1"}));
        assert!(matches!(decode(&stripe), Err(Error::Unsupported(_))));
    }

    #[test]
    fn garbage_headers_are_malformed() {
        let err = parse_challenges(&["Payment garbage!!".to_owned()]).unwrap_err();
        assert!(matches!(err, Error::MalformedChallenge(_)), "{err}");
        let err = parse_challenges(&[]).unwrap_err();
        assert!(matches!(err, Error::MalformedChallenge(_)));
    }
}
