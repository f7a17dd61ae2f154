//! The admin listener's only door: a bearer token read from a secret.
//! `Authorization: Bearer <token>` (Prometheus, curl) or HTTP Basic with the
//! token as password (browsers prompt for it natively). Compared in
//! constant time, over digests so the length does not leak either.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The expected token, kept only as its digest.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8; 32]>);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        Self(Arc::new(digest(token.as_bytes())))
    }

    /// Whether an `Authorization` header value carries the token.
    pub fn accepts(&self, authorization: &[u8]) -> bool {
        let Some(presented) = presented_token(authorization) else {
            return false;
        };
        bool::from(digest(&presented).ct_eq(&self.0[..]))
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token inside `Bearer <token>` or `Basic base64(<any user>:<token>)`.
fn presented_token(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// Refuses every request without the token (401, nothing else said).
pub async fn require_token(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| token.accepts(v.as_bytes()));
    if allowed {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "the admin token is required\n").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"tollgate admin\", charset=\"UTF-8\""),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_carry_the_token_and_nothing_else_does() {
        let token = AdminToken::new("s3cret-admin-token-0123456789");
        assert!(token.accepts(b"Bearer s3cret-admin-token-0123456789"));
        assert!(token.accepts(b"bearer  s3cret-admin-token-0123456789 "));
        let basic =
            base64::engine::general_purpose::STANDARD.encode("admin:s3cret-admin-token-0123456789");
        assert!(token.accepts(format!("Basic {basic}").as_bytes()));
        for wrong in [
            "Bearer s3cret-admin-token-012345678",
            "Bearer s3cret-admin-token-01234567890",
            "Bearer ",
            "s3cret-admin-token-0123456789",
            "Payment s3cret-admin-token-0123456789",
            "Basic !!!",
        ] {
            assert!(!token.accepts(wrong.as_bytes()), "{wrong}");
        }
    }
}
