//! `POST /v1/messages`: Anthropic's Messages API, plain and streamed.
//!
//! Every request is validated the way the real API does it, and a violation
//! is answered with Anthropic's error envelope
//! (`{"type":"error","error":{"type":"invalid_request_error","message":…}}`),
//! so a gateway translating OpenAI requests into Anthropic ones is tested
//! against the rules it must follow. The mock is deliberately stricter than
//! Anthropic in one respect: roles must alternate and the first message must
//! be `user` (Anthropic merges consecutive same-role turns; a translator
//! should not rely on it).
//!
//! Answers are deterministic:
//! - **Tool use**: with custom `tools`, the mock calls the first tool when
//!   `tool_choice` is `any`, the named tool when it is `tool`, and the first
//!   tool when it is `auto` (or absent) and the last user turn's text
//!   contains the word "weather". The input fills the tool schema's required
//!   properties (all properties when none is required): `"Paris"` for
//!   location-like strings, an enum's first value, `1`, `true`, `[]`, nested
//!   objects filled the same way. A last user turn carrying `tool_result`
//!   blocks is always answered with text.
//! - **Text**: `min(answer_tokens, max_tokens)` words of deterministic text
//!   (one word, one token); `stop_reason` is `end_turn`, `max_tokens` when
//!   truncated, or `stop_sequence` when a stop sequence occurs in the text.
//! - **Usage**: input is estimated at about four characters a token (3 per
//!   message, 1 600 per image). Blocks marked with `cache_control` (and a
//!   top-level `cache_control`, which marks the last block) end cached
//!   prefixes, in Anthropic's order: tools, system, messages. The first call
//!   for a prefix reports it as `cache_creation_input_tokens`, later calls
//!   (through this router) as `cache_read_input_tokens`, and `input_tokens`
//!   counts only what follows the last breakpoint, as Anthropic does. There
//!   is no minimum cacheable length.
//! - **Thinking**: with `thinking` enabled (or adaptive), the answer starts
//!   with a thinking block whose `signature` the mock can verify, streamed
//!   as `thinking_delta`s and a `signature_delta`; its tokens count as
//!   output. Sent back in a later request, a thinking block must carry the
//!   signature the mock gave it, and a continued assistant turn (a prefill,
//!   or the tool calls the last message answers) must start with one, as
//!   Anthropic requires. Thinking refuses a forced `tool_choice` and a
//!   `temperature` other than 1.
//! - A last user turn saying [`crate::RATE_LIMIT_PROMPT`] is answered 429
//!   `rate_limit_error` with `retry-after: 7` and a `request-id`.
//! - **Structured output**: with `output_config.format` (`json_schema`) the
//!   text answer is JSON that fits the schema (as for tool inputs).

mod answer;
mod validate;

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use serde_json::{Value, json};
use tollgate_pricing::PriceTable;

use crate::text::seed;
use crate::{MockState, record};
use answer::{answer, id_chars};
use validate::validate;

/// Fields the Messages API accepts at the top level.
pub(super) const TOP_LEVEL: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "context_management",
    "mcp_servers",
    "output_config",
    "inference_geo",
    "cache_control",
];
pub(super) const MAX_CACHE_BREAKPOINTS: usize = 4;
pub(super) const IMAGE_TOKENS: u64 = 1_600;
pub(super) const TOKENS_PER_MESSAGE: u64 = 3;
pub(super) const MEDIA_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Output limits of the Claude models Tollgate sells, to refuse a
/// `max_tokens` above them as Anthropic does (other models are not checked).
pub(super) static TABLE: LazyLock<PriceTable> = LazyLock::new(PriceTable::builtin);

/// Hashes of the prompt prefixes written to the (mock) prompt cache.
pub(super) type PromptCache = Arc<Mutex<HashSet<[u8; 32]>>>;

/// The `/v1/messages` route, with its own prompt cache.
pub(super) fn endpoint() -> MethodRouter<MockState> {
    let cache = PromptCache::default();
    post(
        move |State(state): State<MockState>,
              method: Method,
              uri: Uri,
              headers: HeaderMap,
              body: Bytes| {
            let cache = cache.clone();
            async move {
                let refused = check_headers(&headers);
                record(&state, method, &uri, headers, &body);
                tokio::time::sleep(state.options.latency).await;
                if let Some(refused) = refused {
                    return refused;
                }
                let request: Value = match serde_json::from_slice(&body) {
                    Ok(request) => request,
                    Err(e) => {
                        return invalid(format!(
                            "There was an issue with your request body: invalid JSON ({e})"
                        ));
                    }
                };
                match validate(&request) {
                    Ok(valid) => answer(&valid, &state.options, &cache),
                    Err(message) => invalid(message),
                }
            }
        },
    )
}

/// The signature the mock gives a thinking block (and checks when it comes
/// back): opaque base64, like Anthropic's, bound to the text.
pub(super) fn signature(thinking: &str) -> String {
    use base64::Engine;
    let digest = seed(format!("tollgate-mock thinking\n{thinking}").as_bytes());
    format!(
        "EqQB{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// An error in Anthropic's envelope.
pub(crate) fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let request_id = format!("req_01{}", id_chars(&seed(message.as_bytes())));
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id,
    });
    (status, [("request-id", request_id)], axum::Json(body)).into_response()
}

fn invalid(message: String) -> Response {
    anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", &message)
}

fn check_headers(headers: &HeaderMap) -> Option<Response> {
    let present = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty())
    };
    if !present("x-api-key") {
        return Some(anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        ));
    }
    if !present("anthropic-version") {
        return Some(invalid("anthropic-version: header is required".into()));
    }
    None
}
