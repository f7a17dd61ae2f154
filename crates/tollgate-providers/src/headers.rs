//! Which request headers never travel upstream.

use http::HeaderMap;
use http::header::{self, HeaderName};

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

/// Headers that carry the client's credentials or payment data. The upstream
/// gets its own key instead and must never see what the payer sent.
fn is_client_credential(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == header::AUTHORIZATION.as_str()
        || n == header::PROXY_AUTHORIZATION.as_str()
        || n == header::COOKIE.as_str()
        || n == "x-api-key"
        || n == "api-key"
        || n == "accept-payment"
        || n == "idempotency-key"
        || n.starts_with("payment-")
        || n.starts_with("proxy-")
}

/// Copies the headers worth forwarding, dropping hop-by-hop and credentials,
/// and any header named by the client's `Connection` header.
pub fn strip_client_credentials(incoming: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<String> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        if is_hop_by_hop(name)
            || is_client_credential(name)
            || named_by_connection.iter().any(|n| n == name.as_str())
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn credentials_payment_and_hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
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
            ("openai-organization", "org"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = strip_client_credentials(&h);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["content-type", "openai-organization"]);
    }
}
