//! `POST /v1/chat/completions`, plain and streamed.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::openai_error;
use crate::text::{estimate_tokens, seed, words};

pub fn respond(request: &Value, options: &crate::MockOptions) -> Response {
    let chunk_interval = options.chunk_interval;
    let default_answer = options.answer_tokens.max(1);
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
    let prompt_tokens = prompt_tokens(messages);
    let cap = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default_answer);
    let answer_tokens = default_answer.min(cap).max(1);
    let finish_reason = if cap < default_answer {
        "length"
    } else {
        "stop"
    };
    let seed = seed(
        serde_json::to_string(messages)
            .unwrap_or_default()
            .as_bytes(),
    );
    let answer = words(&seed, answer_tokens as usize);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": answer_tokens,
        "total_tokens": prompt_tokens + answer_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    });
    let id = format!("chatcmpl-mock{}", hex_prefix(&seed));
    let created = unix_now();
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let chunks = stream_chunks(
            &id,
            created,
            model,
            &answer,
            finish_reason,
            include_usage.then_some(usage),
        );
        return sse_response(chunks, chunk_interval);
    }
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": join(&answer), "refusal": null},
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": usage,
        "system_fingerprint": "fp_tollgate_mock",
    });
    (StatusCode::OK, axum::Json(body)).into_response()
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

fn stream_chunks(
    id: &str,
    created: u64,
    model: &str,
    answer: &[&str],
    finish_reason: &str,
    usage: Option<Value>,
) -> Vec<Value> {
    let with_usage = usage.is_some();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_tollgate_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if with_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    for (i, word) in answer.iter().enumerate() {
        let piece = if i == 0 {
            (*word).to_owned()
        } else {
            format!(" {word}")
        };
        chunks.push(chunk(json!({"content": piece}), Value::Null));
    }
    chunks.push(chunk(json!({}), json!(finish_reason)));
    if let Some(usage) = usage {
        chunks.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_tollgate_mock", "choices": [], "usage": usage,
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

use futures::StreamExt;

fn join(words: &[&str]) -> String {
    words.join(" ")
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
