//! The one lifecycle of a request, whatever pays for it:
//!
//! 1. read the body (bounded);
//! 2. **prepare**: price it and run every check it will meet — the quote,
//!    the translation to the upstream's format, the plan rules — so that a
//!    request that would be refused is refused before any challenge;
//! 3. **admit**: no credential → 402 with fresh challenges; a credential →
//!    verify it and hold the payer's money (a [`Hold`]);
//! 4. call the upstream; a failed call drops the hold, which releases it;
//! 5. **deliver**: a whole answer is read in full (bounded), metered, and
//!    its payment made final before it goes out with its receipt; a stream
//!    is metered event by event ([`crate::stream`]).
//!
//! What differs between `charge`, `session` and the plan endpoint is a
//! [`Product`] (how requests are priced and admitted) and the policy behind
//! its [`Hold`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;
use tollgate_pricing::UsageDetail;
use tollgate_providers::anthropic;

use crate::metering::{Meter, Metered};
use crate::observe::{self, RequestOutcome, Timings};
use crate::policy::{Admission, Hold};
use crate::problem::{ApiError, upstream as fault};
use crate::state::Gateway;
use crate::upstream::{Answer, MAX_ANSWER_BYTES, UpstreamCall, read_whole};

/// A priced, validated request, ready to be paid for and sent.
pub struct Prepared<'a, T> {
    pub call: UpstreamCall<'a>,
    /// How usage is priced (quoted calls); `None`: a fixed price.
    pub meter: Option<Meter>,
    /// What the payment must cover (the product's offers and bindings).
    pub terms: T,
}

/// What preparing a request found.
pub enum Step<'a, T> {
    /// Answered already (a session action that buys nothing, metadata).
    Answered(Response),
    /// Free: forward as it is.
    Free(UpstreamCall<'a>),
    Paid(Box<Prepared<'a, T>>),
}

/// Something sold: how its requests are priced, checked and admitted.
#[async_trait]
pub trait Product: Send + Sync {
    /// What admission needs from preparation (offers, bindings).
    type Terms: Send + Sync;

    /// Prices and validates the request (every check it will meet).
    async fn prepare<'a>(
        &'a self,
        parts: &Parts,
        body: &Bytes,
    ) -> Result<Step<'a, Self::Terms>, ApiError>;

    /// Challenges, or verifies the credential and holds the payment.
    async fn admit(
        &self,
        parts: &Parts,
        body: &Bytes,
        prepared: &Prepared<'_, Self::Terms>,
    ) -> Result<Admission, ApiError>;
}

/// Serves one request through `product`.
pub async fn serve<P: Product>(
    gateway: &Arc<Gateway>,
    product: &P,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_request_body(body, &parts.headers, gateway.max_body_bytes).await?;
    let prepared = match product.prepare(&parts, &body).await? {
        Step::Answered(response) => return Ok(response),
        Step::Free(call) => return Ok(crate::stream::pass_through(call.send().await?)),
        Step::Paid(prepared) => *prepared,
    };
    let started = Instant::now();
    let hold = match product.admit(&parts, &body, &prepared).await? {
        Admission::Answered(response) => return Ok(response),
        Admission::Held(hold) => hold,
    };
    let payment_time = started.elapsed();
    let mut outcome = RequestOutcome::intent(hold.intent());
    outcome.model = prepared
        .meter
        .as_ref()
        .map(|m| m.call().quote.model.clone());
    let upstream_started = Instant::now();
    let served = async {
        // A failed call drops the hold here, which releases it.
        let answer = prepared.call.send().await?;
        let timing = Timing {
            payment: payment_time,
            upstream: upstream_started.elapsed(),
        };
        let deliver_started = Instant::now();
        let mut response = if answer.is_stream() {
            crate::stream::deliver(answer, hold, prepared.meter, Arc::clone(&gateway.ledger))
                .await?
        } else {
            deliver_whole(answer, hold, prepared.meter.as_ref(), gateway).await?
        };
        timing.attach(response.headers_mut());
        Ok::<_, ApiError>((response, timing, deliver_started.elapsed()))
    }
    .await;
    // What the metrics layer reads (crate::observe): attached to whatever
    // goes out once the payment was admitted.
    match served {
        Ok((mut response, timing, deliver)) => {
            outcome.paid = true;
            outcome.timings = Timings {
                payment: Some(timing.payment),
                upstream: Some(timing.upstream),
                deliver: Some(deliver),
            };
            observe::attach(&mut response, outcome);
            Ok(response)
        }
        Err(error) => {
            let mut response = error.into_response();
            observe::attach(&mut response, outcome);
            Err(ApiError::Response(Box::new(response)))
        }
    }
}

struct Timing {
    payment: Duration,
    upstream: Duration,
}

impl Timing {
    /// `Server-Timing`: where the gateway's own time went.
    fn attach(&self, headers: &mut HeaderMap) {
        // Milliseconds to the microsecond, in integers (float formatting
        // showed in profiles of the paid path).
        let (payment, upstream) = (self.payment.as_micros(), self.upstream.as_micros());
        let value = format!(
            "payment;dur={}.{:03}, upstream;dur={}.{:03}",
            payment / 1000,
            payment % 1000,
            upstream / 1000,
            upstream % 1000
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert("server-timing", value);
        }
    }
}

/// A whole answer: read in full, checked, metered, paid, then sent.
async fn deliver_whole(
    answer: Answer,
    hold: Box<dyn Hold>,
    meter: Option<&Meter>,
    gateway: &Gateway,
) -> Result<Response, ApiError> {
    let Answer {
        mut head,
        body,
        translation,
    } = answer;
    // A cut, stalled or oversized answer drops the hold: nothing is charged.
    let bytes = read_whole(body, MAX_ANSWER_BYTES).await?;
    let is_json = translation.is_some()
        || head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    // Only the usage member is kept: a whole `Value` of the answer is built
    // only when it reports none and what it delivered must be counted.
    let usage = if is_json {
        Some(usage_member(&bytes)?)
    } else {
        None
    };
    let (bytes, reported) = match (&translation, &usage) {
        (Some(info), Some(original_usage)) => {
            let created = time::OffsetDateTime::now_utc().unix_timestamp();
            // The translation reports the usage Anthropic sent (cache
            // writes by TTL, reads, output with thinking).
            let (out, usage) =
                anthropic::from_anthropic::response_body(&bytes, &info.response_options(created))
                    .map_err(|e| fault::malformed(e.message))?;
            head.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let reported =
                (!original_usage.is_null()).then(|| crate::translation::usage_detail(&usage));
            (Bytes::from(out), reported)
        }
        _ => {
            let reported = match (meter, &usage) {
                (Some(meter), Some(usage)) => {
                    crate::usage::usage_report(meter.call().endpoint, usage)
                }
                _ => None,
            };
            (bytes, reported)
        }
    };
    head.headers.remove(header::CONTENT_LENGTH);
    let metered = match meter {
        Some(meter) => {
            // A whole answer with a usage report is charged the report:
            // counting what it delivered would be wasted work.
            let delivered = match (&reported, &usage) {
                (None, Some(_)) => serde_json::from_slice::<Value>(&bytes)
                    .map_or(0, |json| meter.delivered().in_body(&json)),
                _ => 0,
            };
            meter.settle(reported, true, delivered)
        }
        None => Metered {
            usage: UsageDetail::default(),
            reported: false,
            whole: true,
            cost: 0,
        },
    };
    let challenge_id = hold.challenge_id().to_owned();
    let committed = hold.commit(&metered).await?;
    if let Some(meter) = meter {
        meter.record(&challenge_id, metered, Arc::clone(&gateway.ledger));
    }
    crate::receipts::attach(&mut head.headers, &committed.paid);
    if let Some(key) = committed.replay {
        key.finish(&head, &bytes).await;
    }
    Ok(Response::from_parts(head, Body::from(bytes)))
}

/// A whole answer's `usage` member (`Null` when it has none), having
/// checked that the answer is JSON, without building the rest of it.
fn usage_member(bytes: &[u8]) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    struct UsageMember {
        #[serde(default)]
        usage: Value,
    }
    match serde_json::from_slice::<UsageMember>(bytes) {
        Ok(member) => Ok(member.usage),
        // Valid JSON of another shape (not an object, a repeated member):
        // no report to read.
        Err(_) => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Ok(Value::Null),
            Err(e) => {
                tracing::warn!(error = %e, "upstream answered malformed JSON; not charged");
                Err(fault::malformed("the upstream's answer is not valid JSON").into())
            }
        },
    }
}

/// Reads the request body under `limit` (`crate::body`: 413 too large,
/// 400 broken framing or cut off, 408 past the body deadline).
pub async fn read_request_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    crate::body::read_body(body, headers, limit)
        .await
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::usage_member;
    use serde_json::json;

    #[test]
    fn only_the_top_level_usage_member_is_read_and_malformed_answers_are_refused() {
        let answer = br#"{"id":"x","choices":[{"message":{"content":"hi","usage":1}}],"usage":{"prompt_tokens":3}}"#;
        assert_eq!(usage_member(answer).unwrap(), json!({"prompt_tokens": 3}));
        assert!(usage_member(br#"{"choices":[]}"#).unwrap().is_null());
        assert!(usage_member(br#"{"usage":null}"#).unwrap().is_null());
        // Valid JSON of another shape carries no report.
        assert!(usage_member(b"[1,2]").unwrap().is_null());
        assert!(
            usage_member(br#"{"usage":{"a":1},"usage":{"a":2}}"#)
                .unwrap()
                .is_null()
        );
        for broken in [&b"{\"usage\":"[..], b"", b"{} trailing", b"{\"a\":1,}"] {
            assert!(
                usage_member(broken).is_err(),
                "{:?}",
                String::from_utf8_lossy(broken)
            );
        }
    }
}
