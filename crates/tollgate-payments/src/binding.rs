//! Checking that a credential answers a challenge we issued, for this route,
//! this body and this price. Pure: no I/O.

use mpp::PaymentCredential;

use crate::challenge::{body_digest, route_opaque};
use crate::keys::{BoundFields, ChallengeKeys};
use crate::offer::Offer;
use crate::problem::{PaymentProblem, ProblemKind};

/// Credentials larger than this are refused before decoding. The spec asks
/// servers to accept at least 4 KiB; a signed sponsored 0x76 transfer with
/// its echoed challenge stays well under 8 KiB.
pub const DEFAULT_MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

/// Decodes an `Authorization` value. `None` when it is not the Payment
/// scheme at all (the client has not paid yet).
pub fn parse_authorization(
    value: &str,
    max_bytes: usize,
) -> Option<Result<PaymentCredential, PaymentProblem>> {
    let trimmed = value.trim_start();
    let scheme_end = trimmed.find(' ').unwrap_or(trimmed.len());
    if !trimmed[..scheme_end].eq_ignore_ascii_case("payment") {
        return None;
    }
    if value.len() > max_bytes {
        return Some(Err(PaymentProblem::new(
            ProblemKind::MalformedCredential,
            format!("credential exceeds {max_bytes} bytes"),
        )));
    }
    Some(mpp::parse_authorization(trimmed).map_err(|_| {
        PaymentProblem::new(
            ProblemKind::MalformedCredential,
            "credential is not base64url-encoded JSON of the expected shape",
        )
    }))
}

/// The route and body a credential is being spent on.
pub struct Spend<'a> {
    pub realm: &'a str,
    pub scope: &'a str,
    pub body: &'a [u8],
    /// What the route would charge for this request now.
    pub offers: &'a [Offer],
}

/// Verifies HMAC, realm, expiry, route scope, body digest and that the echoed
/// request is exactly one this route offers. Returns the matched offer.
pub fn check<'a>(
    keys: &ChallengeKeys,
    credential: &PaymentCredential,
    spend: &Spend<'a>,
) -> Result<&'a Offer, PaymentProblem> {
    Verified::new(keys, credential).check(&credential.challenge, spend)
}

/// Whether `challenge` carries an id our keys issued for exactly these
/// parameters (unaltered).
fn issued_by(keys: &ChallengeKeys, challenge: &mpp::ChallengeEcho) -> bool {
    let fields = BoundFields {
        realm: &challenge.realm,
        method: challenge.method.as_str(),
        intent: challenge.intent.as_str(),
        request: challenge.request.raw(),
        expires: challenge.expires.as_deref(),
        digest: challenge.digest.as_deref(),
        opaque: challenge.opaque.as_ref().map(|o| o.raw()),
        header: challenge.header.as_deref(),
    };
    keys.verifies(&fields, &challenge.id)
}

/// What [`check`] finds about a credential before looking at the request it
/// is spent on: whether we issued its challenge, its expiry, scope and
/// echoed request, decoded. Computed once per credential; a session
/// credential re-sent with every request keeps it
/// ([`crate::credentials::CredentialCache`]).
#[derive(Debug)]
pub struct Verified {
    issued_here: bool,
    expires_at: Result<time::OffsetDateTime, &'static str>,
    scope: Option<serde_json::Value>,
    /// The challenge's request, without its session snapshot (a hint about
    /// the channel at the time, bound by the HMAC, not part of the price).
    echoed: Option<serde_json::Value>,
    /// The last offer found to match `echoed`: an equal offer matches too,
    /// without building its request object again.
    matched: std::sync::Mutex<Option<Offer>>,
}

impl Verified {
    pub fn new(keys: &ChallengeKeys, credential: &PaymentCredential) -> Self {
        let challenge = &credential.challenge;
        let expires_at = match challenge.expires.as_deref() {
            None => Err("challenge has no expiry"),
            Some(expires) => {
                time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| "challenge expiry is not an RFC 3339 timestamp")
            }
        };
        let mut echoed = challenge.request.decode_value().ok();
        if let Some(details) = echoed
            .as_mut()
            .and_then(|e| e.get_mut("methodDetails"))
            .and_then(serde_json::Value::as_object_mut)
        {
            details.remove("sessionSnapshot");
        }
        Self {
            issued_here: issued_by(keys, challenge),
            expires_at,
            scope: challenge
                .opaque
                .as_ref()
                .and_then(|o| o.decode_value().ok()),
            echoed,
            matched: std::sync::Mutex::new(None),
        }
    }

    /// Our HMAC binds the challenge: we issued it, unaltered.
    pub fn issued_here(&self) -> bool {
        self.issued_here
    }

    /// [`check`] of `challenge` (the one this was computed from) for `spend`.
    pub fn check<'a>(
        &self,
        challenge: &mpp::ChallengeEcho,
        spend: &Spend<'a>,
    ) -> Result<&'a Offer, PaymentProblem> {
        let invalid = |detail: &str| PaymentProblem::new(ProblemKind::InvalidChallenge, detail);
        if challenge.realm != spend.realm {
            return Err(invalid("challenge was issued for another realm"));
        }
        if !self.issued_here {
            return Err(invalid(
                "challenge id is unknown or the challenge was altered",
            ));
        }
        let expires_at = self.expires_at.map_err(invalid)?;
        if expires_at <= time::OffsetDateTime::now_utc() {
            return Err(PaymentProblem::new(
                ProblemKind::PaymentExpired,
                "challenge has expired",
            ));
        }
        if self.scope.as_ref() != Some(&route_opaque(spend.scope)) {
            return Err(invalid("challenge was issued for another route"));
        }
        if challenge.digest != body_digest(spend.body) {
            return Err(invalid(
                "request body differs from the one the challenge was issued for",
            ));
        }
        let echoed = self
            .echoed
            .as_ref()
            .ok_or_else(|| invalid("challenge request is not valid JSON"))?;
        let mut matched = self
            .matched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = matched.as_ref()
            && let Some(offer) = spend.offers.iter().find(|offer| *offer == known)
        {
            return Ok(offer);
        }
        let offer = spend
            .offers
            .iter()
            .find(|offer| {
                offer.method() == challenge.method.as_str()
                    && offer.intent() == challenge.intent.as_str()
                    && offer.request_json() == *echoed
            })
            .ok_or_else(|| invalid("challenge no longer matches what this route charges"))?;
        *matched = Some(offer.clone());
        Ok(offer)
    }
}

/// For session credentials that buy nothing themselves (voucher, top-up,
/// close, open on a body-less request): the challenge must be ours, for
/// this route and these channel terms; its amount and body may be those of
/// an earlier request. An expired challenge is refused only when `fresh`
/// (top-ups and opens move money on chain).
pub fn check_session_terms(
    keys: &ChallengeKeys,
    credential: &PaymentCredential,
    realm: &str,
    scope: &str,
    terms: &crate::session::SessionOffer,
    fresh: bool,
) -> Result<(), PaymentProblem> {
    let challenge = &credential.challenge;
    let not_found =
        |detail: &str| PaymentProblem::new(ProblemKind::SessionChallengeNotFound, detail);
    if challenge.realm != realm
        || challenge.method.as_str() != "tempo"
        || challenge.intent.as_str() != "session"
    {
        return Err(not_found("challenge was not issued here for a session"));
    }
    if !issued_by(keys, challenge) {
        return Err(not_found(
            "challenge id is unknown or the challenge was altered",
        ));
    }
    if fresh {
        let expired = challenge
            .expires
            .as_deref()
            .and_then(|e| {
                time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_none_or(|at| at <= time::OffsetDateTime::now_utc());
        if expired {
            return Err(not_found("challenge has expired"));
        }
    }
    let scope_matches = challenge
        .opaque
        .as_ref()
        .and_then(|o| o.decode_value().ok())
        .is_some_and(|v| v == route_opaque(scope));
    if !scope_matches {
        return Err(PaymentProblem::new(
            ProblemKind::InvalidChallenge,
            "challenge was issued for another route",
        ));
    }
    let echoed = challenge.request.decode_value().map_err(|_| {
        PaymentProblem::new(
            ProblemKind::InvalidChallenge,
            "challenge request is not valid JSON",
        )
    })?;
    if !terms.same_terms(&echoed) {
        return Err(PaymentProblem::new(
            ProblemKind::InvalidChallenge,
            "challenge names other channel terms",
        ));
    }
    Ok(())
}

/// Why a plan-endpoint credential does not answer this request's challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanBindingFault {
    /// Not `tempo`/`session`.
    MethodUnsupported,
    /// Not ours, altered, another realm or route, or expired.
    InvalidChallenge,
    /// Issued for another body.
    BodyDigestMismatch,
    /// Issued for another plan resolution, pricing snapshot, caps or terms.
    QuoteInvalid,
}

/// Checks a plan-endpoint credential against the challenge this request
/// would get now: HMAC and realm, expiry, route, body digest, then the
/// bound resolution (`opaque`) and the exact session terms.
pub fn check_plan(
    keys: &ChallengeKeys,
    credential: &PaymentCredential,
    realm: &str,
    body: &[u8],
    expected_opaque: &serde_json::Value,
    offer: &crate::session::SessionOffer,
) -> Result<(), PlanBindingFault> {
    let challenge = &credential.challenge;
    if challenge.method.as_str() != "tempo" || challenge.intent.as_str() != "session" {
        return Err(PlanBindingFault::MethodUnsupported);
    }
    if challenge.realm != realm || !issued_by(keys, challenge) {
        return Err(PlanBindingFault::InvalidChallenge);
    }
    let live = challenge
        .expires
        .as_deref()
        .and_then(|e| {
            time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
        })
        .is_some_and(|at| at > time::OffsetDateTime::now_utc());
    if !live {
        return Err(PlanBindingFault::InvalidChallenge);
    }
    let opaque = challenge
        .opaque
        .as_ref()
        .and_then(|o| o.decode_value().ok());
    let route = opaque.as_ref().map(|o| o["route"].clone());
    if route.as_ref() != Some(&expected_opaque["route"]) {
        return Err(PlanBindingFault::InvalidChallenge);
    }
    if challenge.digest != body_digest(body) {
        return Err(PlanBindingFault::BodyDigestMismatch);
    }
    let echoed = challenge.request.decode_value().ok();
    if opaque.as_ref() != Some(expected_opaque) || echoed != Some(offer.request_json()) {
        return Err(PlanBindingFault::QuoteInvalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::challenge::ChallengeIssuer;
    use crate::offer::{ChargeOffer, SubmissionModes};

    const SCOPE: &str = "POST /v1/chat/completions";
    const BODY: &[u8] = br#"{"model":"gpt-4o-mini"}"#;

    fn offer(amount: u128) -> Offer {
        Offer::TempoCharge(ChargeOffer {
            amount,
            currency: alloy::primitives::Address::repeat_byte(0x20),
            recipient: alloy::primitives::Address::repeat_byte(0x70),
            chain_id: 42431,
            fee_payer: false,
            modes: SubmissionModes::default(),
            description: None,
        })
    }

    fn spend<'a>(offers: &'a [Offer], body: &'a [u8]) -> Spend<'a> {
        Spend {
            realm: "api.example.com",
            scope: SCOPE,
            body,
            offers,
        }
    }

    #[test]
    fn one_verified_credential_is_checked_afresh_against_each_spend() {
        let keys = ChallengeKeys::new(vec!["a-test-secret-that-is-at-least-32-bytes-long".into()])
            .unwrap();
        let issuer = ChallengeIssuer::new("api.example.com", keys.clone(), Duration::from_secs(60));
        let issued = issuer.issue(&offer(10), SCOPE, BODY).unwrap();
        let challenge = mpp::parse_www_authenticate(&issued.header).unwrap();
        let credential =
            mpp::PaymentCredential::new(challenge.to_echo(), serde_json::json!({"type": "hash"}));
        let verified = Verified::new(&keys, &credential);
        assert!(verified.issued_here());
        let echo = &credential.challenge;

        let offers = [offer(10)];
        assert_eq!(
            verified.check(echo, &spend(&offers, BODY)).unwrap(),
            &offer(10)
        );
        // Matched once; an equal offer matches again, a changed price does not.
        assert_eq!(
            verified.check(echo, &spend(&offers, BODY)).unwrap(),
            &offer(10)
        );
        let dearer = [offer(11)];
        let refused = verified.check(echo, &spend(&dearer, BODY)).unwrap_err();
        assert_eq!(refused.kind, ProblemKind::InvalidChallenge);
        // Among several, the equal one is found.
        let several = [offer(11), offer(10)];
        assert_eq!(
            verified.check(echo, &spend(&several, BODY)).unwrap(),
            &offer(10)
        );
        // Another body, another route, another realm.
        let refused = verified.check(echo, &spend(&offers, b"{}")).unwrap_err();
        assert!(refused.detail.contains("body"), "{}", refused.detail);
        let mut elsewhere = spend(&offers, BODY);
        elsewhere.scope = "POST /v1/embeddings";
        let refused = verified.check(echo, &elsewhere).unwrap_err();
        assert!(
            refused.detail.contains("another route"),
            "{}",
            refused.detail
        );
        let mut other_realm = spend(&offers, BODY);
        other_realm.realm = "evil.example.com";
        assert!(verified.check(echo, &other_realm).is_err());

        // Under other keys the same credential is not ours, whatever it is spent on.
        let strangers =
            ChallengeKeys::new(vec!["another-secret-that-is-at-least-32-bytes".into()]).unwrap();
        let forged = Verified::new(&strangers, &credential);
        assert!(!forged.issued_here());
        assert!(forged.check(echo, &spend(&offers, BODY)).is_err());
    }
}
