//! `POST /v1/chat/completions`, plain and streamed, as OpenAI answers it:
//!
//! - **Tool calls**: with `tools`, the mock calls the first tool when
//!   `tool_choice` is `required`, the named one when it names a function,
//!   and the first tool when it is `auto` (or absent) and the last message
//!   is a user turn mentioning "weather". The arguments fill the tool's
//!   schema (see [`crate::schema`]). A last `tool` message is answered with
//!   text. `finish_reason` is `tool_calls`; streams send the id and name,
//!   then argument fragments.
//! - **`n`** choices (1 to 8), each its own deterministic text.
//! - **`logprobs`** (and `top_logprobs`, 0 to 20, only with `logprobs`):
//!   one entry per token (one word, one token), streamed per chunk.
//! - **`response_format`**: `json_object` answers a JSON object (and, as
//!   OpenAI does, requires the word "json" in the messages); `json_schema`
//!   answers JSON that fits the schema.
//! - A last user turn saying [`crate::RATE_LIMIT_PROMPT`] is answered 429
//!   `rate_limit_exceeded` with `retry-after: 7` and an `x-request-id`.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::openai_error;
use crate::schema::fill_schema;
use crate::text::{estimate_tokens, seed, words};

const MAX_N: u64 = 8;
const MAX_TOP_LOGPROBS: u64 = 20;

/// What one choice says.
enum Said {
    Text {
        text: String,
        finish: &'static str,
    },
    Call {
        id: String,
        name: String,
        arguments: String,
    },
}

impl Said {
    fn tokens(&self) -> u64 {
        match self {
            Self::Text { text, .. } => {
                text.split(' ').filter(|w| !w.is_empty()).count().max(1) as u64
            }
            Self::Call {
                name, arguments, ..
            } => estimate_tokens(&format!("{name}{arguments}")),
        }
    }
}

/// The request's answer-shaping parameters, checked as OpenAI checks them.
struct Shape<'a> {
    n: u64,
    /// `Some(k)`: log probabilities with `k` alternatives each.
    logprobs: Option<u64>,
    format: Format<'a>,
    call: Option<(&'a str, &'a Value)>,
}

enum Format<'a> {
    Text,
    JsonObject,
    JsonSchema(&'a Value),
}

type Refusal = (&'static str, String);

pub fn respond(request: &Value, options: &crate::MockOptions) -> Response {
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            Some("model"),
        );
    };
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "'messages' is a required property",
            Some("messages"),
        );
    };
    if crate::asks_for_a_rate_limit(messages) {
        let body = json!({"error": {"message": "Rate limit reached for requests", "type": "requests",
            "param": null, "code": "rate_limit_exceeded"}});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("retry-after", "7"),
                ("x-request-id", "req_mock_rate_limited"),
            ],
            axum::Json(body),
        )
            .into_response();
    }
    let shape = match shape(request, messages) {
        Ok(shape) => shape,
        Err((param, message)) => {
            return openai_error(StatusCode::BAD_REQUEST, &message, Some(param));
        }
    };
    let default_answer = options.answer_tokens.max(1);
    let cap = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default_answer);
    let conversation = serde_json::to_string(messages).unwrap_or_default();
    let choices: Vec<Said> = (0..shape.n)
        .map(|i| {
            let seed = seed(format!("{conversation}#{i}").as_bytes());
            say(&shape, &seed, default_answer, cap)
        })
        .collect();
    let prompt_tokens = prompt_tokens(messages);
    let completion_tokens: u64 = choices.iter().map(Said::tokens).sum();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    });
    let id = format!(
        "chatcmpl-mock{}",
        hex_prefix(&seed(conversation.as_bytes()))
    );
    let created = unix_now();
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let head = Head {
            id: &id,
            created,
            model,
        };
        let chunks = stream_chunks(
            &head,
            &choices,
            shape.logprobs,
            include_usage.then_some(usage),
        );
        return sse_response(chunks, options.chunk_interval);
    }
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(index, said)| match said {
            Said::Text { text, finish } => json!({
                "index": index,
                "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
                "logprobs": shape.logprobs.map(|k| json!({"content": logprobs(text, k), "refusal": null})),
                "finish_reason": finish,
            }),
            Said::Call {
                id,
                name,
                arguments,
            } => json!({
                "index": index,
                "message": {"role": "assistant", "content": null, "refusal": null, "annotations": [],
                    "tool_calls": [{"id": id, "type": "function",
                        "function": {"name": name, "arguments": arguments}}]},
                "logprobs": null,
                "finish_reason": "tool_calls",
            }),
        })
        .collect();
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_tollgate_mock",
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn shape<'a>(request: &'a Value, messages: &[Value]) -> Result<Shape<'a>, Refusal> {
    let n = match request.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=MAX_N) => n,
            _ => {
                return Err(("n", format!("'n' must be an integer from 1 to {MAX_N}")));
            }
        },
    };
    let wants_logprobs = request.get("logprobs").and_then(Value::as_bool) == Some(true);
    let top = match request.get("top_logprobs") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(k @ 0..=MAX_TOP_LOGPROBS) => Some(k),
            _ => {
                return Err((
                    "top_logprobs",
                    format!("'top_logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS}"),
                ));
            }
        },
    };
    if top.is_some() && !wants_logprobs {
        return Err((
            "top_logprobs",
            "'logprobs' must be set to true when 'top_logprobs' is specified".into(),
        ));
    }
    let format = match request.get("response_format") {
        None | Some(Value::Null) => Format::Text,
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => Format::Text,
            Some("json_object") => {
                let mentions_json = messages
                    .iter()
                    .any(|m| message_text(m).to_ascii_lowercase().contains("json"));
                if !mentions_json {
                    return Err((
                        "messages",
                        "'messages' must contain the word 'json' in some form, to use \
                         'response_format' of type 'json_object'."
                            .into(),
                    ));
                }
                Format::JsonObject
            }
            Some("json_schema") => match f.pointer("/json_schema/schema") {
                Some(schema @ Value::Object(_)) => Format::JsonSchema(schema),
                _ => {
                    return Err((
                        "response_format",
                        "Missing required parameter: 'response_format.json_schema.schema'.".into(),
                    ));
                }
            },
            _ => {
                return Err((
                    "response_format.type",
                    "Invalid value: expected 'text', 'json_object' or 'json_schema'.".into(),
                ));
            }
        },
    };
    Ok(Shape {
        n,
        logprobs: wants_logprobs.then_some(top.unwrap_or(0)),
        format,
        call: tool_to_call(request, messages)?,
    })
}

/// The tool the mock calls, if any (see the module documentation).
fn tool_to_call<'a>(
    request: &'a Value,
    messages: &[Value],
) -> Result<Option<(&'a str, &'a Value)>, Refusal> {
    let tools: Vec<(&str, &Value)> = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function")?;
            Some((
                f.get("name")?.as_str()?,
                f.get("parameters").unwrap_or(&Value::Null),
            ))
        })
        .collect();
    let choice = request.get("tool_choice").filter(|c| !c.is_null());
    if tools.is_empty() {
        if choice.is_some_and(|c| c != "none" && c != "auto") {
            return Err((
                "tool_choice",
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are \
                 specified."
                    .into(),
            ));
        }
        return Ok(None);
    }
    let last = messages.last();
    if last.and_then(|m| m.get("role")).and_then(Value::as_str) != Some("user") {
        return Ok(None); // answering tool results (or continuing): text
    }
    match choice {
        None => Ok(asks_weather(last).then_some(tools[0])),
        Some(Value::String(mode)) => match mode.as_str() {
            "none" => Ok(None),
            "required" => Ok(Some(tools[0])),
            "auto" => Ok(asks_weather(last).then_some(tools[0])),
            other => Err((
                "tool_choice",
                format!(
                    "Invalid value: '{other}'. Supported values are: 'none', 'auto', and 'required'."
                ),
            )),
        },
        Some(named) => {
            let name = named.pointer("/function/name").and_then(Value::as_str);
            match tools.iter().find(|(n, _)| Some(*n) == name) {
                Some(tool) => Ok(Some(*tool)),
                None => Err((
                    "tool_choice",
                    format!(
                        "Invalid value for 'tool_choice': no function named '{}' was specified in \
                         the 'tools' parameter.",
                        name.unwrap_or_default()
                    ),
                )),
            }
        }
    }
}

fn asks_weather(message: Option<&Value>) -> bool {
    message.is_some_and(|m| {
        message_text(m)
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w.eq_ignore_ascii_case("weather"))
    })
}

fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn say(shape: &Shape<'_>, seed: &[u8; 32], default_answer: u64, cap: u64) -> Said {
    if let Some((name, schema)) = shape.call {
        return Said::Call {
            id: format!("call_{}", hex_prefix(seed)),
            name: name.to_owned(),
            arguments: fill_schema(schema, None).to_string(),
        };
    }
    match shape.format {
        Format::JsonSchema(schema) => Said::Text {
            text: fill_schema(schema, None).to_string(),
            finish: "stop",
        },
        Format::JsonObject => Said::Text {
            text: json!({"answer": words(seed, 3).join(" ")}).to_string(),
            finish: "stop",
        },
        Format::Text => {
            let count = default_answer.min(cap).max(1);
            Said::Text {
                text: words(seed, count as usize).join(" "),
                finish: if cap < default_answer {
                    "length"
                } else {
                    "stop"
                },
            }
        }
    }
}

/// One log-probability entry per word (one word, one token); deterministic.
fn logprobs(text: &str, top: u64) -> Vec<Value> {
    pieces(text)
        .iter()
        .map(|token| logprob_entry(token, top))
        .collect()
}

fn logprob_entry(token: &str, top: u64) -> Value {
    let digest = seed(token.as_bytes());
    let logprob = -f64::from(digest[0]) / 1000.0;
    let alternatives: Vec<Value> = (0..top)
        .map(|k| {
            let alt = if k == 0 {
                token.to_owned()
            } else {
                format!("{token}{k}")
            };
            json!({"token": alt, "logprob": logprob - k as f64, "bytes": alt.as_bytes()})
        })
        .collect();
    json!({"token": token, "logprob": logprob, "bytes": token.as_bytes(), "top_logprobs": alternatives})
}

/// Content tokens plus OpenAI's framing: 3 per message and 3 for the reply.
fn prompt_tokens(messages: &[Value]) -> u64 {
    let content: u64 = messages
        .iter()
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => estimate_tokens(s),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(estimate_tokens)
                .sum(),
            _ => 0,
        })
        .sum();
    content + 3 * messages.len() as u64 + 3
}

/// The text as streamed: one word per delta, spaces leading.
fn pieces(text: &str) -> Vec<String> {
    text.split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            }
        })
        .filter(|p| !p.trim().is_empty())
        .collect()
}

struct Head<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
}

fn stream_chunks(
    head: &Head<'_>,
    choices: &[Said],
    logprobs: Option<u64>,
    usage: Option<Value>,
) -> Vec<Value> {
    let with_usage = usage.is_some();
    let chunk = |index: usize, delta: Value, logprobs: Value, finish: Value| {
        let mut c = json!({
            "id": head.id, "object": "chat.completion.chunk", "created": head.created,
            "model": head.model, "service_tier": "default", "system_fingerprint": "fp_tollgate_mock",
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        });
        if with_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut chunks = Vec::new();
    for (index, said) in choices.iter().enumerate() {
        match said {
            Said::Text { text, finish } => {
                chunks.push(chunk(
                    index,
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    Value::Null,
                    Value::Null,
                ));
                for piece in pieces(text) {
                    let lp = logprobs.map_or(
                        Value::Null,
                        |k| json!({"content": [logprob_entry(&piece, k)], "refusal": null}),
                    );
                    chunks.push(chunk(index, json!({"content": piece}), lp, Value::Null));
                }
                chunks.push(chunk(index, json!({}), Value::Null, json!(finish)));
            }
            Said::Call {
                id,
                name,
                arguments,
            } => {
                chunks.push(chunk(
                    index,
                    json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                        {"index": 0, "id": id, "type": "function",
                         "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                    Value::Null,
                ));
                let chars: Vec<char> = arguments.chars().collect();
                for part in chars.chunks(8) {
                    let fragment: String = part.iter().collect();
                    chunks.push(chunk(
                        index,
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                        Value::Null,
                        Value::Null,
                    ));
                }
                chunks.push(chunk(index, json!({}), Value::Null, json!("tool_calls")));
            }
        }
    }
    if let Some(usage) = usage {
        chunks.push(json!({
            "id": head.id, "object": "chat.completion.chunk", "created": head.created,
            "model": head.model, "service_tier": "default", "system_fingerprint": "fp_tollgate_mock",
            "choices": [], "usage": usage,
        }));
    }
    chunks
}

fn sse_response(chunks: Vec<Value>, interval: Duration) -> Response {
    let events = chunks
        .into_iter()
        .map(|c| format!("data: {c}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_owned()));
    let stream = futures::stream::iter(events).then(move |event| async move {
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        Ok::<_, Infallible>(Bytes::from(event))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn hex_prefix(seed: &[u8; 32]) -> String {
    seed[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
