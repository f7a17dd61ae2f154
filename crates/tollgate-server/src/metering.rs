//! Metering a quoted call: ask streamed chats for usage, read the usage the
//! upstream reports (JSON body or SSE usage chunk), hide the usage chunk from
//! clients that did not ask for it, and record usage and actual cost.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::Value;
use tollgate_ledger::{Ledger, UsageRecord};
use tollgate_pricing::{Endpoint, UsageDetail, actual_cost_detail};

use crate::pricing::QuotedCall;

/// Non-streamed responses larger than this are passed on unmetered.
const MAX_METERED_JSON_BYTES: usize = 32 * 1024 * 1024;

pub struct Metering {
    call: QuotedCall,
    route: String,
    challenge_id: Option<String>,
    /// A streamed chat whose client did not set `stream_options.include_usage`.
    hide_usage_chunk: bool,
}

impl Metering {
    pub fn new(call: QuotedCall, route: &str, challenge_id: &str) -> Self {
        let streamed_chat = call.endpoint == Endpoint::Chat
            && call.request.get("stream").and_then(Value::as_bool) == Some(true);
        let client_asked = call
            .request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        Self {
            call,
            route: route.to_owned(),
            challenge_id: Some(challenge_id.to_owned()),
            hide_usage_chunk: streamed_chat && !client_asked,
        }
    }

    /// The body to send upstream: a streamed chat asks for its usage chunk.
    /// The client's bytes are untouched otherwise (the challenge digest is
    /// over the client's body, not this copy).
    pub fn upstream_body(&self, body: Bytes) -> Bytes {
        if !self.hide_usage_chunk {
            return body;
        }
        let mut request = self.call.request.clone();
        request["stream_options"]["include_usage"] = Value::Bool(true);
        serde_json::to_vec(&request)
            .map(Bytes::from)
            .unwrap_or(body)
    }

    /// Passes the upstream's successful response through while metering it.
    pub async fn observe(self, response: Response, ledger: Arc<dyn Ledger>) -> Response {
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (parts, body) = response.into_parts();
        if content_type.starts_with("text/event-stream") {
            let hide = self.hide_usage_chunk;
            let body = tap_sse(body, hide, move |usage| self.record(usage, ledger));
            return Response::from_parts(parts, body);
        }
        if content_type.starts_with("application/json") {
            return match axum::body::to_bytes(body, MAX_METERED_JSON_BYTES).await {
                Ok(bytes) => {
                    let usage = serde_json::from_slice::<Value>(&bytes)
                        .ok()
                        .and_then(|v| body_usage(self.call.endpoint, &v));
                    self.record(usage, ledger);
                    Response::from_parts(parts, Body::from(bytes))
                }
                Err(_) => {
                    tracing::warn!(route = %self.route, "upstream response too large to meter");
                    self.record(None, ledger);
                    Response::from_parts(parts, Body::empty())
                }
            };
        }
        self.record(None, ledger);
        Response::from_parts(parts, body)
    }

    pub fn call(&self) -> &QuotedCall {
        &self.call
    }

    /// Whether the client did not ask for the usage chunk we requested.
    pub fn hides_usage_chunk(&self) -> bool {
        self.hide_usage_chunk
    }

    /// What `usage` costs by the table, never above the quote.
    pub fn cost(&self, usage: Option<UsageDetail>) -> u128 {
        let QuotedCall {
            endpoint,
            table,
            quote,
            ..
        } = &self.call;
        actual_cost_detail(table, *endpoint, quote, usage)
    }

    fn record(self, usage: Option<UsageDetail>, ledger: Arc<dyn Ledger>) {
        let cost = self.cost(usage);
        self.record_cost(usage, cost, ledger);
    }

    /// Appends the usage record (in the background: it is bookkeeping, the
    /// money is already accounted for).
    pub fn record_cost(&self, usage: Option<UsageDetail>, cost: u128, ledger: Arc<dyn Ledger>) {
        let quote = &self.call.quote;
        let usage_value = usage.unwrap_or_default();
        let record = UsageRecord {
            challenge_id: self.challenge_id.clone(),
            route: self.route.clone(),
            model: quote.model.clone(),
            quoted: quote.amount,
            input_tokens: usage_value.input_tokens,
            cached_tokens: usage_value.cached_tokens,
            output_tokens: usage_value.output_tokens,
            actual_cost: cost,
            usage_reported: usage.is_some(),
            recorded_at: time_now(),
        };
        tokio::spawn(async move {
            if let Err(e) = ledger.record_usage(&record).await {
                tracing::error!(error = %e, route = %record.route, "could not record usage");
            }
        });
    }
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The usage a non-streamed answer reports, in its endpoint's format.
pub fn body_usage(endpoint: Endpoint, body: &Value) -> Option<UsageDetail> {
    match endpoint {
        Endpoint::Messages => UsageDetail::from_anthropic(&body["usage"]),
        _ => parse_usage(&body["usage"]),
    }
}

/// Reads OpenAI's usage object (chat/embeddings or Responses field names).
pub fn parse_usage(usage: &Value) -> Option<UsageDetail> {
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| usage.get(*n).and_then(Value::as_u64))
    };
    let input_tokens = field(&["prompt_tokens", "input_tokens"])?;
    Some(UsageDetail {
        input_tokens,
        cached_tokens: usage
            .pointer("/prompt_tokens_details/cached_tokens")
            .or_else(|| usage.pointer("/input_tokens_details/cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
        output_tokens: field(&["completion_tokens", "output_tokens"]).unwrap_or(0),
        ..UsageDetail::default()
    })
}

/// Re-frames an SSE body event by event (never holding more than one
/// partial event), noting the usage it reports. Calls `done` once the stream
/// ends or the client goes away; dropping the upstream body then cancels the
/// upstream call.
fn tap_sse(
    body: Body,
    hide_usage_chunk: bool,
    done: impl FnOnce(Option<UsageDetail>) + Send + 'static,
) -> Body {
    let (tx, out) = channel_body();
    tokio::spawn(async move {
        let mut upstream = body.into_data_stream();
        let mut pending = BytesMut::new();
        let mut usage = None;
        while let Some(chunk) = upstream.next().await {
            let bytes = match chunk {
                Ok(bytes) => bytes,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    break;
                }
            };
            pending.extend_from_slice(&bytes);
            let mut out = BytesMut::new();
            while let Some(end) = find_event_end(&pending) {
                let event = pending.split_to(end);
                if inspect_event(&event, hide_usage_chunk, &mut usage) {
                    out.extend_from_slice(&event);
                }
            }
            if !out.is_empty() && tx.send(Ok(out.freeze())).await.is_err() {
                break; // the client went away
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(Ok(pending.freeze())).await;
        }
        done(usage);
    });
    out
}

/// Where a re-framed stream's chunks are sent.
pub(crate) type ChunkSender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A response body fed chunk by chunk from a task (at most 32 chunks
/// buffered, so a slow client slows the upstream read down).
pub(crate) fn channel_body() -> (ChunkSender, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (tx, body)
}

/// Index just past the first blank line (`\n\n`) ending an event.
pub(crate) fn find_event_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// Notes usage; returns whether the event goes on to the client.
pub(crate) fn inspect_event(
    event: &[u8],
    hide_usage_chunk: bool,
    usage: &mut Option<UsageDetail>,
) -> bool {
    let Ok(text) = std::str::from_utf8(event) else {
        return true;
    };
    // Only usage-bearing chunks are parsed; the rest pass untouched.
    if !text.contains("\"usage\":{") {
        return true;
    }
    let Some(data) = text.lines().find_map(|l| l.strip_prefix("data:")) else {
        return true;
    };
    let Ok(chunk) = serde_json::from_str::<Value>(data.trim()) else {
        return true;
    };
    match chunk["type"].as_str() {
        // Anthropic: input and cache counts come with `message_start`, the
        // cumulative output (and sometimes input) with `message_delta`.
        Some("message_start") => {
            if let Some(found) = UsageDetail::from_anthropic(&chunk["message"]["usage"]) {
                *usage = Some(found);
            }
            return true;
        }
        Some("message_delta") => {
            let delta = &chunk["usage"];
            let mut current = usage.unwrap_or_default();
            if delta.get("input_tokens").and_then(Value::as_u64).is_some()
                && let Some(full) = UsageDetail::from_anthropic(delta)
            {
                current = UsageDetail {
                    output_tokens: current.output_tokens,
                    ..full
                };
            }
            if let Some(output) = delta.get("output_tokens").and_then(Value::as_u64) {
                current.output_tokens = output;
            }
            *usage = Some(current);
            return true;
        }
        _ => {}
    }
    // Chat chunks carry `usage`; Responses events carry `response.usage`.
    let reported =
        parse_usage(&chunk["usage"]).or_else(|| parse_usage(&chunk["response"]["usage"]));
    if let Some(found) = reported {
        *usage = Some(found);
    }
    let usage_only = chunk["choices"].as_array().is_some_and(Vec::is_empty);
    !(hide_usage_chunk && usage_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_stream_usage_is_combined_without_double_counting() {
        let events = [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":20,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":50,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n",
        ];
        let mut usage = None;
        for event in events {
            assert!(inspect_event(event.as_bytes(), false, &mut usage));
        }
        let usage = usage.unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.cached_tokens,
                usage.cache_write_tokens,
                usage.output_tokens
            ),
            (170, 50, 100, 42)
        );
    }

    #[tokio::test]
    async fn the_usage_chunk_is_read_and_hidden_across_chunk_boundaries() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,",
            "\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n",
            "data: [DONE]\n\n"
        );
        // Split mid-event to prove re-framing.
        let pieces: Vec<Bytes> = stream
            .as_bytes()
            .chunks(17)
            .map(Bytes::copy_from_slice)
            .collect();
        for hide in [true, false] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let body = tap_sse(
                Body::from_stream(futures::stream::iter(
                    pieces.clone().into_iter().map(Ok::<_, std::io::Error>),
                )),
                hide,
                |u| {
                    let _ = tx.send(u);
                },
            );
            let out = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let out = String::from_utf8(out.to_vec()).unwrap();
            assert_eq!(out.contains("prompt_tokens"), !hide, "{out}");
            assert!(out.ends_with("data: [DONE]\n\n"));
            assert!(out.starts_with("data: {\"choices\":[{\"delta\""));
            let usage = rx.await.unwrap().unwrap();
            assert_eq!(
                (usage.input_tokens, usage.cached_tokens, usage.output_tokens),
                (7, 3, 2)
            );
        }
    }
}
