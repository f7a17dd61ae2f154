//! `POST /v1/responses`, plain and streamed (typed SSE events).

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::openai_error;
use crate::text::{estimate_tokens, seed, words};

const DEFAULT_ANSWER_TOKENS: u64 = 24;

pub fn respond(request: &Value, chunk_interval: Duration) -> Response {
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            Some("model"),
        );
    };
    let input_text = match request.get("input") {
        Some(Value::String(s)) => s.clone(),
        Some(other @ Value::Array(_)) => other.to_string(),
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "'input' is a required property",
                Some("input"),
            );
        }
    };
    let cap = request
        .get("max_output_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_ANSWER_TOKENS);
    let output_tokens = DEFAULT_ANSWER_TOKENS.min(cap).max(1);
    let input_tokens = estimate_tokens(&input_text)
        + request
            .get("instructions")
            .and_then(Value::as_str)
            .map_or(0, estimate_tokens)
        + 6;
    let seed = seed(input_text.as_bytes());
    let answer = words(&seed, output_tokens as usize);
    let id: String = seed[..8].iter().map(|b| format!("{b:02x}")).collect();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let status = if cap < DEFAULT_ANSWER_TOKENS {
        "incomplete"
    } else {
        "completed"
    };
    let response = |status: &str, text: &str, usage: Value| {
        json!({
            "id": format!("resp_mock{id}"), "object": "response", "created_at": created,
            "status": status, "model": model, "error": null, "incomplete_details": null,
            "instructions": request.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": request.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "output": if text.is_empty() { json!([]) } else { json!([{
                "type": "message", "id": format!("msg_mock{id}"), "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }]) },
            "parallel_tool_calls": true, "temperature": 1.0, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "usage": usage,
        })
    };
    let usage = json!({
        "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    });
    let text = answer.join(" ");
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return (StatusCode::OK, axum::Json(response(status, &text, usage))).into_response();
    }
    let mut events = vec![(
        "response.created",
        json!({"type": "response.created", "response": response("in_progress", "", Value::Null)}),
    )];
    for (i, word) in answer.iter().enumerate() {
        let delta = if i == 0 {
            (*word).to_owned()
        } else {
            format!(" {word}")
        };
        events.push((
            "response.output_text.delta",
            json!({
                "type": "response.output_text.delta", "item_id": format!("msg_mock{id}"),
                "output_index": 0, "content_index": 0, "delta": delta,
            }),
        ));
    }
    events.push((
        "response.completed",
        json!({"type": "response.completed", "response": response(status, &text, usage)}),
    ));
    let frames: Vec<String> = events
        .into_iter()
        .enumerate()
        .map(|(n, (name, mut data))| {
            data["sequence_number"] = json!(n);
            format!("event: {name}\ndata: {data}\n\n")
        })
        .collect();
    let stream = futures::stream::iter(frames).then(move |frame| async move {
        if !chunk_interval.is_zero() {
            tokio::time::sleep(chunk_interval).await;
        }
        Ok::<_, Infallible>(Bytes::from(frame))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
