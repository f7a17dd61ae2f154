//! Reading a request body in full, bounded, with a failure that says why.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::problem::{ApiError, Problem};
use crate::transport::BodyReadTimeout;

/// Why a request body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Declared or sent more than `limit` bytes: 413 `body-too-large`.
    TooLarge { limit: usize },
    /// Did not arrive within the body deadline: 408 `body-timeout`.
    TimedOut,
    /// Broken framing (a bad chunk size, a body shorter than its
    /// `Content-Length`, a connection cut mid-body): 400 `malformed-body`.
    Malformed,
}

impl BodyError {
    pub fn into_response(self) -> Response {
        axum::response::IntoResponse::into_response(self.problem())
    }

    fn problem(self) -> Problem {
        match self {
            Self::TooLarge { limit } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("request body exceeds {limit} bytes"),
            ),
            Self::TimedOut => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "the request body did not arrive in time",
            ),
            Self::Malformed => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-body",
                "the request body could not be read (broken framing or cut off)",
            ),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        error.problem().into()
    }
}

/// Reads `body` in full, refusing more than `limit` bytes (a declared
/// `Content-Length` above it is refused before reading).
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, BodyError> {
    let too_large = BodyError::TooLarge { limit };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large);
    }
    let mut body = body;
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(classify)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we use
        };
        // `rest` holds everything once a second frame arrived.
        let have = if rest.is_empty() {
            first.as_ref().map_or(0, Bytes::len)
        } else {
            rest.len()
        };
        if have + data.len() > limit {
            return Err(too_large);
        }
        // One frame (the common case) is returned without a copy.
        match &first {
            None => first = Some(data),
            Some(head) => {
                if rest.is_empty() {
                    rest.extend_from_slice(head);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        rest.freeze()
    })
}

fn classify(error: axum::Error) -> BodyError {
    let inner = error.into_inner();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
    while let Some(error) = source {
        if error.is::<BodyReadTimeout>() {
            return BodyError::TimedOut;
        }
        source = error.source();
    }
    BodyError::Malformed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_length: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(len) = content_length {
            h.insert(header::CONTENT_LENGTH, len.parse().unwrap());
        }
        h
    }

    fn chunks(parts: Vec<Result<&'static str, axum::BoxError>>) -> Body {
        Body::from_stream(futures::stream::iter(
            parts
                .into_iter()
                .map(|p| p.map(|s| Bytes::from_static(s.as_bytes()))),
        ))
    }

    #[tokio::test]
    async fn reads_one_or_many_frames_in_order() {
        let one = read_body(Body::from("abc"), &headers(None), 3).await;
        assert_eq!(one.unwrap(), "abc");
        let many = read_body(chunks(vec![Ok("ab"), Ok("c"), Ok("de")]), &headers(None), 5).await;
        assert_eq!(many.unwrap(), "abcde");
        let empty = read_body(Body::empty(), &headers(None), 0).await;
        assert_eq!(empty.unwrap(), "");
    }

    #[tokio::test]
    async fn too_large_declared_or_sent() {
        let declared = read_body(Body::from("a"), &headers(Some("11")), 10).await;
        assert_eq!(declared, Err(BodyError::TooLarge { limit: 10 }));
        let sent = read_body(chunks(vec![Ok("abcdef"), Ok("ghijk")]), &headers(None), 10).await;
        assert_eq!(sent, Err(BodyError::TooLarge { limit: 10 }));
    }

    #[tokio::test]
    async fn a_broken_body_is_malformed_and_a_late_one_timed_out() {
        let broken = chunks(vec![Ok("ab"), Err("invalid chunk size".into())]);
        assert_eq!(
            read_body(broken, &headers(None), 10).await,
            Err(BodyError::Malformed)
        );
        let late = chunks(vec![Err(Box::new(BodyReadTimeout))]);
        assert_eq!(
            read_body(late, &headers(None), 10).await,
            Err(BodyError::TimedOut)
        );
    }

    #[tokio::test]
    async fn each_failure_has_its_status_and_code() {
        for (error, status) in [
            (BodyError::TooLarge { limit: 1 }, 413),
            (BodyError::TimedOut, 408),
            (BodyError::Malformed, 400),
        ] {
            assert_eq!(error.into_response().status().as_u16(), status);
        }
    }
}
