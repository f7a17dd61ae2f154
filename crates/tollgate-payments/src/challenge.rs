//! Issuing challenges: one `WWW-Authenticate: Payment` value per offer.

use std::time::Duration;

use mpp::PaymentChallenge;
use mpp::protocol::core::Base64UrlJson;
use serde_json::json;

use crate::keys::ChallengeKeys;
use crate::offer::Offer;
use crate::problem::{PaymentProblem, ProblemKind};

/// A challenge ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedChallenge {
    pub id: String,
    /// The full `WWW-Authenticate` header value.
    pub header: String,
}

/// Binds challenges to this server (`realm` + HMAC), to a route (`opaque`)
/// and to a request body (`digest`).
#[derive(Debug, Clone)]
pub struct ChallengeIssuer {
    realm: String,
    keys: ChallengeKeys,
    ttl: Duration,
}

impl ChallengeIssuer {
    pub fn new(realm: impl Into<String>, keys: ChallengeKeys, ttl: Duration) -> Self {
        Self {
            realm: realm.into(),
            keys,
            ttl,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn keys(&self) -> &ChallengeKeys {
        &self.keys
    }

    /// Builds the challenge for `offer` on the route named by `scope`. A
    /// non-empty `body` is bound by its RFC 9530 digest.
    pub fn issue(
        &self,
        offer: &Offer,
        scope: &str,
        body: &[u8],
    ) -> Result<IssuedChallenge, PaymentProblem> {
        let shared = Shared::new(self, encoded_route_opaque(scope)?, body);
        self.issue_shared(offer, &shared)
    }

    /// The challenges for `offers` on the route named by `scope`, in their
    /// order: what they share (the route's `opaque`, the expiry, the body's
    /// digest) is computed once.
    pub fn issue_all<'a>(
        &self,
        offers: impl IntoIterator<Item = &'a Offer>,
        scope: &str,
        body: &[u8],
    ) -> Result<Vec<IssuedChallenge>, PaymentProblem> {
        let shared = Shared::new(self, encoded_route_opaque(scope)?, body);
        offers
            .into_iter()
            .map(|offer| self.issue_shared(offer, &shared))
            .collect()
    }

    /// Like [`issue`](Self::issue) with a caller-built `opaque` object (it
    /// must name the route under `"route"`): the plan endpoint binds plan,
    /// model, runtime, pricing snapshot and caps this way.
    pub fn issue_with_opaque(
        &self,
        offer: &Offer,
        opaque: &serde_json::Value,
        body: &[u8],
    ) -> Result<IssuedChallenge, PaymentProblem> {
        let opaque = Base64UrlJson::from_value(opaque).map_err(internal)?;
        self.issue_shared(offer, &Shared::new(self, opaque, body))
    }

    fn issue_shared(
        &self,
        offer: &Offer,
        shared: &Shared,
    ) -> Result<IssuedChallenge, PaymentProblem> {
        let request = encode_canonical(&offer.request_json())?;
        let challenge = PaymentChallenge::with_secret_key_full(
            self.keys.signing(),
            self.realm.as_str(),
            offer.method(),
            offer.intent(),
            request,
            Some(&shared.expires),
            shared.digest.as_deref(),
            offer.description(),
            Some(shared.opaque.clone()),
            None,
        );
        let header = www_authenticate(&challenge)?;
        Ok(IssuedChallenge {
            id: challenge.id,
            header,
        })
    }
}

/// What the challenges of one answer share.
struct Shared {
    opaque: Base64UrlJson,
    expires: String,
    digest: Option<String>,
}

impl Shared {
    fn new(issuer: &ChallengeIssuer, opaque: Base64UrlJson, body: &[u8]) -> Self {
        Self {
            opaque,
            expires: mpp::expires::seconds(issuer.ttl.as_secs()),
            digest: body_digest(body),
        }
    }
}

/// `value` as base64url-encoded canonical JSON (RFC 8785). The offers
/// build their `request` with members in order and only strings, booleans
/// and small integers, which serde_json prints exactly as canonicalized;
/// anything else (a snapshot's members in another order, say) goes
/// through the canonicalizer.
fn encode_canonical(value: &serde_json::Value) -> Result<Base64UrlJson, PaymentProblem> {
    if !prints_canonically(value) {
        return Base64UrlJson::from_value(value).map_err(internal);
    }
    let json = serde_json::to_vec(value).map_err(internal)?;
    Ok(Base64UrlJson::from_raw(
        mpp::protocol::core::base64url_encode(&json),
    ))
}

/// Whether serde_json prints `value` as RFC 8785 would: every object's
/// members in ascending order of ASCII names (UTF-16 order is byte order
/// there), and every number an integer that ECMAScript prints in full.
fn prints_canonically(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    /// 2^53: ECMAScript's integers print exactly below this.
    const EXACT: u64 = 1 << 53;
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n
            .as_u64()
            .map(|n| n < EXACT)
            .or_else(|| n.as_i64().map(|n| n.unsigned_abs() < EXACT))
            .unwrap_or(false),
        Value::Array(items) => items.iter().all(prints_canonically),
        Value::Object(members) => {
            let mut previous: Option<&str> = None;
            members.iter().all(|(name, member)| {
                let in_order = name.is_ascii() && previous.is_none_or(|p| p < name.as_str());
                previous = Some(name);
                in_order && prints_canonically(member)
            })
        }
    }
}

/// [`route_opaque`] encoded.
fn encoded_route_opaque(scope: &str) -> Result<Base64UrlJson, PaymentProblem> {
    encode_canonical(&route_opaque(scope))
}

/// The `WWW-Authenticate` value for `challenge`, as
/// `mpp::format_www_authenticate` writes it, without that function's
/// checks of what was just built here (it decodes `request` and `opaque`
/// again, about a sixth of a 402's CPU). A challenge naming a credential
/// header, which this issuer never sets, is left to the SDK.
fn www_authenticate(challenge: &PaymentChallenge) -> Result<String, PaymentProblem> {
    if challenge.header.is_some() {
        return mpp::format_www_authenticate(challenge).map_err(internal);
    }
    let mut out = String::with_capacity(
        256 + challenge.request.raw().len()
            + challenge.opaque.as_ref().map_or(0, |o| o.raw().len()),
    );
    out.push_str("Payment ");
    let mut first = true;
    let mut param = |name: &str, value: &str| -> Result<(), PaymentProblem> {
        if !first {
            out.push_str(", ");
        }
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        push_quoted(&mut out, value)?;
        out.push('"');
        Ok(())
    };
    param("id", &challenge.id)?;
    param("realm", &challenge.realm)?;
    param("method", challenge.method.as_str())?;
    param("intent", challenge.intent.as_str())?;
    param("request", challenge.request.raw())?;
    if let Some(expires) = &challenge.expires {
        param("expires", expires)?;
    }
    if let Some(description) = &challenge.description {
        param("description", description)?;
    }
    if let Some(digest) = &challenge.digest {
        param("digest", digest)?;
    }
    if let Some(opaque) = &challenge.opaque {
        param("opaque", opaque.raw())?;
    }
    Ok(out)
}

/// Appends `value` as the inside of a quoted string: `\` and `"` escaped,
/// tab and printable ASCII as they are, every other UTF-16 unit as
/// `\uXXXX`. A line break could end the header: refused.
fn push_quoted(out: &mut String, value: &str) -> Result<(), PaymentProblem> {
    use std::fmt::Write as _;
    if value.contains(['\r', '\n']) {
        return Err(internal("a challenge field holds a line break"));
    }
    for unit in value.encode_utf16() {
        match unit {
            0x5c => out.push_str("\\\\"),
            0x22 => out.push_str("\\\""),
            0x09 | 0x20..=0x7e => out.push(char::from(unit as u8)),
            _ => {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    Ok(())
}

/// The `opaque` object that pins a challenge to one route.
pub fn route_opaque(scope: &str) -> serde_json::Value {
    json!({ "route": scope })
}

/// RFC 9530 `Content-Digest` member for `body`, or `None` without a body.
pub fn body_digest(body: &[u8]) -> Option<String> {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    (!body.is_empty()).then(|| {
        let hash = Sha256::digest(body);
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(hash)
        )
    })
}

fn internal(error: impl std::fmt::Display) -> PaymentProblem {
    PaymentProblem::new(
        ProblemKind::Internal,
        format!("could not build challenge: {error}"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;
    use crate::offer::{ChargeOffer, SubmissionModes};

    /// Values that exercise every escaping rule: quotes, backslashes, a tab,
    /// DEL and other controls, non-ASCII and a character beyond the BMP.
    const AWKWARD: [&str; 5] = [
        "POST /v1/chat/completions",
        "say \"hi\" \\ then\ttab",
        "caf\u{e9} \u{1F600} \u{7f}\u{1}",
        "",
        "/v1/mpp/chat/completions?plan=a&b=\"c\"",
    ];

    fn charge(description: Option<&str>) -> Offer {
        Offer::TempoCharge(ChargeOffer {
            amount: 1234,
            currency: alloy::primitives::Address::repeat_byte(0x20),
            recipient: alloy::primitives::Address::repeat_byte(0x70),
            chain_id: 42431,
            fee_payer: false,
            modes: SubmissionModes::default(),
            description: description.map(str::to_owned),
        })
    }

    #[test]
    fn the_route_opaque_is_encoded_as_canonical_json() {
        for scope in AWKWARD {
            assert_eq!(
                encoded_route_opaque(scope).unwrap(),
                Base64UrlJson::from_value(&route_opaque(scope)).unwrap(),
                "{scope:?}"
            );
        }
    }

    #[test]
    fn headers_are_written_as_the_sdk_writes_them() {
        let keys = ChallengeKeys::new(vec!["a-test-secret-that-is-at-least-32-bytes-long".into()])
            .unwrap();
        for text in AWKWARD {
            let issuer = ChallengeIssuer::new(text, keys.clone(), Duration::from_secs(60));
            for description in [None, Some(text)] {
                for body in [&b""[..], b"{\"model\":\"gpt-4o-mini\"}"] {
                    let offer = charge(description);
                    let shared = Shared::new(&issuer, encoded_route_opaque(text).unwrap(), body);
                    let challenge = PaymentChallenge::with_secret_key_full(
                        issuer.keys.signing(),
                        issuer.realm.as_str(),
                        offer.method(),
                        offer.intent(),
                        Base64UrlJson::from_value(&offer.request_json()).unwrap(),
                        Some(&shared.expires),
                        shared.digest.as_deref(),
                        offer.description(),
                        Some(shared.opaque.clone()),
                        None,
                    );
                    assert_eq!(
                        www_authenticate(&challenge).unwrap(),
                        mpp::format_www_authenticate(&challenge).unwrap(),
                        "{text:?} {description:?}"
                    );
                    // And what is issued parses back to the same challenge.
                    let issued = issuer.issue(&offer, text, body).unwrap();
                    let parsed = mpp::parse_www_authenticate(&issued.header).unwrap();
                    assert_eq!(parsed.id, issued.id);
                    assert_eq!(parsed.realm, text);
                    assert_eq!(parsed.description.as_deref(), description);
                    assert_eq!(parsed.opaque, Some(encoded_route_opaque(text).unwrap()));
                }
            }
        }
    }

    #[test]
    fn offer_requests_are_encoded_as_canonical_json() {
        use crate::session::{Protocol, SessionOffer};
        let canonical = |value: &serde_json::Value| {
            assert_eq!(
                encode_canonical(value).unwrap(),
                Base64UrlJson::from_value(value).unwrap(),
                "{value}"
            );
        };
        let mut requests = Vec::new();
        for (fee_payer, pull, push) in [
            (false, true, true),
            (true, true, false),
            (true, false, true),
        ] {
            if let Offer::TempoCharge(mut offer) = charge(None) {
                offer.fee_payer = fee_payer;
                offer.modes = SubmissionModes { pull, push };
                requests.push(offer.request_json());
                offer.amount = 0;
                requests.push(offer.request_json());
            }
        }
        for request in &requests {
            assert!(prints_canonically(request), "{request}");
        }
        let session = SessionOffer {
            amount: 1_234,
            suggested_deposit: 5_000_000,
            currency: alloy::primitives::Address::repeat_byte(0x20),
            recipient: alloy::primitives::Address::repeat_byte(0x11),
            chain_id: 42431,
            escrow: alloy::primitives::Address::repeat_byte(0xe5),
            min_voucher_delta: 0,
            protocol: Protocol::V1,
            description: None,
            snapshot: None,
        };
        requests.push(session.request_json());
        let with_delta = SessionOffer {
            min_voucher_delta: 10,
            ..session.clone()
        };
        requests.push(with_delta.request_json());
        let v2 = SessionOffer {
            protocol: Protocol::V2,
            ..with_delta.clone()
        };
        assert!(prints_canonically(&v2.request_json()));
        requests.push(v2.request_json());
        // A snapshot whose members are not in order, with numbers the
        // fast path does not print.
        let snapshot = SessionOffer {
            snapshot: Some(serde_json::json!({
                "channelId": "0xab",
                "acceptedCumulative": "5",
                "descriptor": {"payee": "0x70", "expiry": 9007199254740993_u64, "nonce": 1.5}
            })),
            ..v2
        };
        requests.push(snapshot.request_json());
        for request in &requests {
            canonical(request);
        }
        // Members out of order, a float, a large integer, a non-ASCII name:
        // the canonicalizer's, and the same bytes.
        for odd in [
            serde_json::json!({"b": 1, "a": 2}),
            serde_json::json!({"a": 1.5}),
            serde_json::json!({"a": 9007199254740993_u64}),
            serde_json::json!({"\u{e9}": 1, "z": 2}),
            serde_json::json!({"a": [{"d": 1, "c": 2}]}),
        ] {
            assert!(!prints_canonically(&odd), "{odd}");
            canonical(&odd);
        }
    }

    #[test]
    fn a_line_break_in_a_field_is_refused_like_the_sdk_does() {
        let keys = ChallengeKeys::new(vec!["a-test-secret-that-is-at-least-32-bytes-long".into()])
            .unwrap();
        let issuer = ChallengeIssuer::new("api\r\nx: y", keys, Duration::from_secs(60));
        assert!(issuer.issue(&charge(None), "POST /x", b"").is_err());
        let issuer = ChallengeIssuer::new(
            "api",
            ChallengeKeys::new(vec!["a-test-secret-that-is-at-least-32-bytes-long".into()])
                .unwrap(),
            Duration::from_secs(60),
        );
        assert!(
            issuer
                .issue(&charge(Some("two\nlines")), "POST /x", b"")
                .is_err()
        );
    }

    #[test]
    fn every_offer_of_one_answer_gets_its_own_challenge() {
        let keys = ChallengeKeys::new(vec!["a-test-secret-that-is-at-least-32-bytes-long".into()])
            .unwrap();
        let issuer = ChallengeIssuer::new("api", keys, Duration::from_secs(60));
        let mut cheaper = charge(Some("another"));
        if let Offer::TempoCharge(offer) = &mut cheaper {
            offer.amount = 99;
        }
        let offers = [charge(None), cheaper];
        let issued = issuer.issue_all(&offers, "POST /x", b"{}").unwrap();
        assert_eq!(issued.len(), 2);
        assert_ne!(issued[0].id, issued[1].id);
        for (one, offer) in issued.iter().zip(&offers) {
            let parsed = mpp::parse_www_authenticate(&one.header).unwrap();
            assert_eq!(parsed.digest, body_digest(b"{}"));
            assert_eq!(parsed.request.decode_value().unwrap(), offer.request_json());
        }
    }
}
