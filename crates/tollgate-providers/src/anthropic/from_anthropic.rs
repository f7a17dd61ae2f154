//! Anthropic Messages response (or error) → OpenAI Chat Completions.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::anthropic_types::{ErrorObject, ErrorResponse, MessagesResponse, ResponseBlock};
use super::openai_types::{
    ChatCompletion, Choice, FunctionCall, ResponseMessage, ResponseToolCall, ThinkingBlock, Usage,
};
use super::{AnthropicUsage, TranslateError};

/// How to shape the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseOptions<'a> {
    /// Echoed as `model`: the client sees the name it asked for.
    pub requested_model: &'a str,
    /// `created`, Unix seconds.
    pub created: i64,
    /// Answer a legacy `functions` request with `message.function_call`.
    pub legacy_functions: bool,
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `chatcmpl-` + the Anthropic message id.
pub fn completion_id(message_id: &str) -> String {
    format!("chatcmpl-{message_id}")
}

/// Anthropic `stop_reason` → OpenAI `finish_reason` (see the module docs).
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("tool_use") => "tool_calls",
        Some("max_tokens" | "model_context_window_exceeded" | "pause_turn") => "length",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, and anything newer.
        _ => "stop",
    }
}

/// Translates a Messages response, stamped with the current time.
pub fn response(msg: &MessagesResponse, requested_model: &str) -> ChatCompletion {
    response_with(
        msg,
        &ResponseOptions {
            requested_model,
            created: unix_now(),
            legacy_functions: false,
        },
    )
}

/// Translates a Messages response: text blocks concatenated into `content`,
/// `tool_use` blocks into `tool_calls` (arguments = the input as JSON text),
/// thinking into `reasoning_content` (its text) and `thinking_blocks` (the
/// signed blocks, redacted ones included); other blocks (server tools) left
/// out.
pub fn response_with(msg: &MessagesResponse, opts: &ResponseOptions<'_>) -> ChatCompletion {
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut thinking_blocks = Vec::new();
    let mut calls = Vec::new();
    for block in &msg.content {
        match block {
            ResponseBlock::Thinking {
                thinking,
                signature,
            } => {
                reasoning.get_or_insert_with(String::new).push_str(thinking);
                thinking_blocks.push(ThinkingBlock::Thinking {
                    thinking: thinking.clone(),
                    signature: signature.clone(),
                });
            }
            ResponseBlock::RedactedThinking { data } => {
                thinking_blocks.push(ThinkingBlock::RedactedThinking { data: data.clone() });
            }
            ResponseBlock::Text { text: t } => text.get_or_insert_with(String::new).push_str(t),
            ResponseBlock::ToolUse { id, name, input } => calls.push(ResponseToolCall {
                id: id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: arguments_text(input),
                },
            }),
            ResponseBlock::Other => {}
        }
    }
    let mut finish = finish_reason(msg.stop_reason.as_deref());
    let (tool_calls, function_call) = if calls.is_empty() {
        (None, None)
    } else if opts.legacy_functions && calls.len() == 1 {
        // The legacy shape holds one call; the request disabled parallel
        // tool use so there is at most one.
        if finish == "tool_calls" {
            finish = "function_call";
        }
        (None, calls.pop().map(|c| c.function))
    } else {
        (Some(calls), None)
    };
    ChatCompletion {
        id: completion_id(&msg.id),
        object: "chat.completion".to_owned(),
        created: opts.created,
        model: opts.requested_model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".to_owned(),
                content: text,
                refusal: None,
                tool_calls,
                function_call,
                reasoning_content: reasoning,
                thinking_blocks: (!thinking_blocks.is_empty()).then_some(thinking_blocks),
            },
            logprobs: None,
            finish_reason: finish.to_owned(),
        }],
        usage: usage(&AnthropicUsage::from(&msg.usage)),
    }
}

/// A tool input as OpenAI's arguments text (`{}` for a missing input).
pub(crate) fn arguments_text(input: &Value) -> String {
    if input.is_null() {
        "{}".to_owned()
    } else {
        input.to_string()
    }
}

/// OpenAI usage from Anthropic's counts.
pub fn usage(u: &AnthropicUsage) -> Usage {
    u.to_openai()
}

/// Parses and translates a Messages response body to OpenAI JSON; also
/// returns the usage Anthropic reported, for billing (cache writes by TTL
/// and cache reads apart, which the OpenAI usage cannot carry).
pub fn response_body(
    body: &[u8],
    opts: &ResponseOptions<'_>,
) -> Result<(Vec<u8>, AnthropicUsage), TranslateError> {
    let msg: MessagesResponse = serde_json::from_slice(body).map_err(|e| {
        TranslateError::body(
            "upstream_invalid_response",
            format!("the Anthropic response could not be read: {e}"),
        )
    })?;
    let json = serde_json::to_vec(&response_with(&msg, opts)).map_err(|e| {
        TranslateError::body(
            "upstream_invalid_response",
            format!("the completion could not be written: {e}"),
        )
    })?;
    Ok((json, AnthropicUsage::from(&msg.usage)))
}

/// An Anthropic error (status and body) → OpenAI status and error body
/// `{"error":{"message","type","param":null,"code"}}`.
///
/// | Anthropic `error.type`  | status in | status out | `type`                  | `code`                              |
/// |-------------------------|-----------|------------|-------------------------|-------------------------------------|
/// | `invalid_request_error` | 400       | 400        | `invalid_request_error` | `context_length_exceeded` for "prompt is too long", else `null` |
/// | `authentication_error`  | 401       | 502        | `server_error`          | `upstream_authentication_error`     |
/// | `permission_error`      | 403       | 502        | `server_error`          | `upstream_permission_error`         |
/// | `billing_error`         | 402       | 502        | `server_error`          | `upstream_billing_error`            |
/// | `not_found_error`       | 404       | 404        | `invalid_request_error` | `model_not_found`                   |
/// | `request_too_large`     | 413       | 413        | `invalid_request_error` | `request_too_large`                 |
/// | `rate_limit_error`      | 429       | 429        | `rate_limit_error`      | `rate_limit_exceeded`               |
/// | `api_error`             | 500       | 502        | `server_error`          | `upstream_api_error`                |
/// | `timeout_error`         | 504       | 504        | `server_error`          | `timeout`                           |
/// | `overloaded_error`      | 529       | 503        | `server_error`          | `overloaded`                        |
///
/// 401/403/402 concern the gateway's own upstream key, never the payer's
/// credentials, so they are the gateway's failure (502), not something the
/// client can fix. 529 becomes 503, which OpenAI clients retry. An unknown
/// type or an unreadable body (e.g. a CDN's HTML 413) is read as the type
/// Anthropic documents for the status; failing that, another 4xx keeps its
/// status as `invalid_request_error` and another 5xx becomes 502
/// `upstream_error`.
pub fn error(status: u16, body: &[u8]) -> (u16, Value) {
    let parsed = serde_json::from_slice::<ErrorResponse>(body).ok();
    match parsed {
        Some(e) => error_object(status, &e.error),
        None => {
            let err = ErrorObject {
                kind: String::new(),
                message: format!("the Anthropic API answered HTTP {status}"),
            };
            error_object(status, &err)
        }
    }
}

/// An error object (from an HTTP error body or a stream `error` event) →
/// OpenAI status and body. `status` is used when the type is unknown.
pub fn error_object(status: u16, e: &ErrorObject) -> (u16, Value) {
    let kind = if KNOWN_TYPES.contains(&e.kind.as_str()) {
        e.kind.as_str()
    } else {
        documented_type(status)
    };
    let (out_status, out_kind, code): (u16, &str, Option<&str>) = match kind {
        "invalid_request_error" => {
            let code = e
                .message
                .starts_with("prompt is too long")
                .then_some("context_length_exceeded");
            (
                if (400..500).contains(&status) {
                    status
                } else {
                    400
                },
                "invalid_request_error",
                code,
            )
        }
        "authentication_error" => (502, "server_error", Some("upstream_authentication_error")),
        "permission_error" => (502, "server_error", Some("upstream_permission_error")),
        "billing_error" => (502, "server_error", Some("upstream_billing_error")),
        "not_found_error" => (404, "invalid_request_error", Some("model_not_found")),
        "request_too_large" => (413, "invalid_request_error", Some("request_too_large")),
        "rate_limit_error" => (429, "rate_limit_error", Some("rate_limit_exceeded")),
        "api_error" => (502, "server_error", Some("upstream_api_error")),
        "timeout_error" => (504, "server_error", Some("timeout")),
        "overloaded_error" => (503, "server_error", Some("overloaded")),
        _ => match status {
            400..=499 => (status, "invalid_request_error", None),
            _ => (502, "server_error", Some("upstream_error")),
        },
    };
    let message = if e.message.is_empty() {
        format!("the Anthropic API answered HTTP {status}")
    } else {
        e.message.clone()
    };
    let message = match kind {
        "authentication_error" | "permission_error" | "billing_error" => {
            format!("the upstream provider rejected the gateway's credentials: {message}")
        }
        _ => message,
    };
    (
        out_status,
        json!({
            "error": {
                "message": message,
                "type": out_kind,
                "param": null,
                "code": code,
            }
        }),
    )
}

const KNOWN_TYPES: [&str; 10] = [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "billing_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
];

/// The error type Anthropic documents for an HTTP status, or "".
fn documented_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        500 => "api_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind, "message": message}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn overloaded_error_becomes_503_server_error() {
        let (status, body) = error(529, &anthropic_error("overloaded_error", "Overloaded"));
        assert_eq!(status, 503);
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["code"], "overloaded");
        assert_eq!(body["error"]["message"], "Overloaded");
        assert!(body["error"]["param"].is_null());
        // The type decides even if the status is unusual.
        assert_eq!(error(500, &anthropic_error("overloaded_error", "x")).0, 503);
    }

    #[test]
    fn every_documented_type_has_a_fitting_status() {
        for (kind, status_in, status_out) in [
            ("invalid_request_error", 400, 400),
            ("authentication_error", 401, 502),
            ("billing_error", 402, 502),
            ("permission_error", 403, 502),
            ("not_found_error", 404, 404),
            ("request_too_large", 413, 413),
            ("rate_limit_error", 429, 429),
            ("api_error", 500, 502),
            ("timeout_error", 504, 504),
            ("overloaded_error", 529, 503),
        ] {
            let (s, body) = error(status_in, &anthropic_error(kind, "m"));
            assert_eq!(s, status_out, "{kind}");
            let obj = body["error"].as_object().unwrap();
            let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["code", "message", "param", "type"], "{kind}");
            // The status alone gives the same answer when the body is junk.
            assert_eq!(error(status_in, b"junk").0, status_out, "{kind} by status");
        }
    }

    #[test]
    fn stream_error_objects_use_the_same_mapping() {
        let e = ErrorObject {
            kind: "rate_limit_error".into(),
            message: "slow down".into(),
        };
        let (status, body) = error_object(500, &e);
        assert_eq!(status, 429);
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        let e = ErrorObject {
            kind: "brand_new_error".into(),
            message: "?".into(),
        };
        assert_eq!(error_object(500, &e).1["error"]["type"], "server_error");
    }

    #[test]
    fn finish_reasons() {
        for (stop, finish) in [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("model_context_window_exceeded"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("refusal"), "content_filter"),
            (Some("pause_turn"), "length"),
            (Some("something_new"), "stop"),
            (None, "stop"),
        ] {
            assert_eq!(finish_reason(stop), finish, "{stop:?}");
        }
    }
}
