//! Which headers cross the gateway: an allow-list each way.
//!
//! **Upstream** gets only what its protocol needs from the client
//! ([`forwardable`]): the body's `content-type`, `accept`, and for Anthropic
//! `anthropic-version` / `anthropic-beta`. Everything else stays behind —
//! the client's credentials and payment headers (the upstream gets the
//! gateway's key instead), SDK telemetry (`user-agent`, `x-stainless-*`),
//! the client's `openai-organization` / `openai-project` (they name the
//! client's account, not the gateway's), and `accept-encoding` (metering
//! reads the body, so it must come back uncompressed).
//!
//! **The client** gets only what describes the answer ([`returnable`]):
//! its type and caching, the request ids (`request-id`, `x-request-id`) and
//! the retry hints (`retry-after`, `retry-after-ms`, `x-should-retry`).
//! The upstream's `server`, cookies, its organization and project ids and
//! the rate limits of the gateway's own key stay behind.

use http::HeaderMap;
use http::header::HeaderName;

use crate::Protocol;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus `host` and `content-length`,
/// which the HTTP client sets itself.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Client headers an upstream of `protocol` is sent.
fn forwarded(protocol: Protocol, name: &str) -> bool {
    match name {
        "content-type" | "accept" => true,
        "anthropic-version" | "anthropic-beta" => protocol == Protocol::Anthropic,
        _ => false,
    }
}

/// Upstream response headers the client is given.
fn returned(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-encoding"
            | "content-language"
            | "cache-control"
            | "content-disposition"
            | "request-id"
            | "x-request-id"
            | "retry-after"
            | "retry-after-ms"
            | "x-should-retry"
    )
}

/// The client headers worth forwarding to an upstream speaking `protocol`.
pub fn forwardable(incoming: &HeaderMap, protocol: Protocol) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(4);
    for (name, value) in incoming {
        if forwarded(protocol, name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The upstream response headers worth passing on to the client.
pub fn returnable(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.len().min(8));
    for (name, value) in upstream {
        if returned(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Copies the headers worth forwarding to an OpenAI-format upstream (see
/// [`forwardable`]).
pub fn strip_client_credentials(incoming: &HeaderMap) -> HeaderMap {
    forwardable(incoming, Protocol::OpenAi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        h.keys().map(|k| k.as_str()).collect()
    }

    const CLIENT: &[(&str, &str)] = &[
        ("authorization", "Payment abc"),
        ("payment-receipt", "x"),
        ("accept-payment", "tempo/charge"),
        ("cookie", "a=b"),
        ("x-api-key", "sk"),
        ("connection", "keep-alive, x-secret-hop"),
        ("x-secret-hop", "1"),
        ("transfer-encoding", "chunked"),
        ("host", "example"),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("user-agent", "OpenAI/Python 3.52.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "3.52.0"),
        ("x-stainless-retry-count", "0"),
        ("openai-organization", "org-client"),
        ("openai-project", "proj_client"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
        ("idempotency-key", "k"),
    ];

    #[test]
    fn only_the_protocols_own_headers_go_upstream() {
        let h = headers(CLIENT);
        assert_eq!(
            names(&forwardable(&h, Protocol::OpenAi)),
            ["content-type", "accept"]
        );
        assert_eq!(
            names(&forwardable(&h, Protocol::Anthropic)),
            [
                "content-type",
                "accept",
                "anthropic-version",
                "anthropic-beta"
            ]
        );
    }

    #[test]
    fn only_what_describes_the_answer_comes_back() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("server", "cloudflare"),
            ("set-cookie", "__cf_bm=x"),
            ("openai-organization", "org-operator"),
            ("openai-project", "proj_operator"),
            ("anthropic-organization-id", "0b4c"),
            ("x-ratelimit-remaining-requests", "99"),
            ("anthropic-ratelimit-tokens-remaining", "1000"),
            ("cf-ray", "8f"),
            ("request-id", "req_01"),
            ("x-request-id", "req_02"),
            ("retry-after", "7"),
            ("retry-after-ms", "7000"),
            ("x-should-retry", "true"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(
            names(&returnable(&h)),
            [
                "content-type",
                "request-id",
                "x-request-id",
                "retry-after",
                "retry-after-ms",
                "x-should-retry"
            ]
        );
    }
}
