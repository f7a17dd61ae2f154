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
        self.issue_with_opaque(offer, &route_opaque(scope), body)
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
        let description = offer.description();
        let request = Base64UrlJson::from_value(&offer.request_json()).map_err(internal)?;
        let opaque = Base64UrlJson::from_value(opaque).map_err(internal)?;
        let expires = mpp::expires::seconds(self.ttl.as_secs());
        let digest = body_digest(body);
        let challenge = PaymentChallenge::with_secret_key_full(
            self.keys.signing(),
            self.realm.as_str(),
            offer.method(),
            offer.intent(),
            request,
            Some(&expires),
            digest.as_deref(),
            description,
            Some(opaque),
            None,
        );
        let header = mpp::format_www_authenticate(&challenge).map_err(internal)?;
        Ok(IssuedChallenge {
            id: challenge.id,
            header,
        })
    }
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
