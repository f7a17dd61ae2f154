//! HMAC secrets that bind challenge ids.

use std::fmt;

/// The shortest secret accepted: whoever guesses it can mint challenges.
pub const MIN_SECRET_BYTES: usize = 32;

/// Challenge-binding secrets. The first one signs new challenges; every one
/// verifies, so a secret can be rotated in without invalidating challenges
/// that are still live.
#[derive(Clone)]
pub struct ChallengeKeys {
    secrets: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("at least one challenge secret is required")]
    Empty,
    #[error("challenge secret #{index} is {len} bytes; at least {MIN_SECRET_BYTES} are required")]
    TooShort { index: usize, len: usize },
}

impl ChallengeKeys {
    pub fn new(secrets: Vec<String>) -> Result<Self, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::Empty);
        }
        for (index, secret) in secrets.iter().enumerate() {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(KeyError::TooShort {
                    index,
                    len: secret.len(),
                });
            }
        }
        Ok(Self { secrets })
    }

    /// The secret that signs new challenges.
    pub(crate) fn signing(&self) -> &str {
        &self.secrets[0]
    }

    /// The id the signing secret gives these fields.
    pub fn sign(&self, fields: &BoundFields<'_>) -> String {
        fields.id_under(self.signing())
    }

    /// Whether any configured secret gives `id` to these fields
    /// (constant-time per secret).
    pub fn verifies(&self, fields: &BoundFields<'_>, id: &str) -> bool {
        self.secrets
            .iter()
            .any(|secret| constant_time_eq(fields.id_under(secret).as_bytes(), id.as_bytes()))
    }
}

/// The challenge parameters an id binds, exactly as they appear on the wire
/// (`request` and `opaque` still base64url-encoded).
#[derive(Debug, Clone, Copy)]
pub struct BoundFields<'a> {
    pub realm: &'a str,
    pub method: &'a str,
    pub intent: &'a str,
    pub request: &'a str,
    pub expires: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub opaque: Option<&'a str>,
    /// Advertised credential header; `Authorization` (the default) is not bound.
    pub header: Option<&'a str>,
}

impl BoundFields<'_> {
    fn id_under(&self, secret: &str) -> String {
        mpp::compute_challenge_id_with_header(
            secret,
            self.realm,
            self.method,
            self.intent,
            self.request,
            self.expires,
            self.digest,
            self.opaque,
            self.header,
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Debug for ChallengeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChallengeKeys({} secrets, redacted)", self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_missing_secrets_are_refused() {
        assert_eq!(ChallengeKeys::new(vec![]).unwrap_err(), KeyError::Empty);
        let err = ChallengeKeys::new(vec!["a".repeat(32), "b".repeat(31)]).unwrap_err();
        assert_eq!(err, KeyError::TooShort { index: 1, len: 31 });
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let keys = ChallengeKeys::new(vec!["s3cr3t-".repeat(6)]).unwrap();
        assert!(!format!("{keys:?}").contains("s3cr3t"));
    }
}
