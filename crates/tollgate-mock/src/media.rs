//! Images (a real 1×1 PNG) for `/v1/images/generations`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::openai_error;

/// A valid 1×1 PNG.
pub const PNG_1X1_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

pub fn images(request: &Value) -> Response {
    let Some(prompt) = request.get("prompt").and_then(Value::as_str) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "'prompt' is a required property",
            Some("prompt"),
        );
    };
    let n = request
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10);
    let as_b64 = request.get("response_format").and_then(Value::as_str) == Some("b64_json");
    let image = |_| {
        if as_b64 {
            json!({"b64_json": PNG_1X1_BASE64, "revised_prompt": prompt})
        } else {
            json!({"url": format!("data:image/png;base64,{PNG_1X1_BASE64}"), "revised_prompt": prompt})
        }
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let data: Vec<Value> = (0..n).map(image).collect();
    (
        StatusCode::OK,
        axum::Json(json!({"created": created, "data": data})),
    )
        .into_response()
}

/// `/v1/audio/speech`: a short WAV of silence, length following the input.
pub fn speech(request: &Value) -> Response {
    let Some(input) = request.get("input").and_then(Value::as_str) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "'input' is a required property",
            Some("input"),
        );
    };
    // About 15 characters a second, at least a tenth of a second.
    let seconds = (input.chars().count() as f64 / 15.0).max(0.1);
    let wav = tollgate_pricing::audio::silent_wav(seconds);
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "audio/wav")],
        wav,
    )
        .into_response()
}

/// `/v1/audio/transcriptions`: a fixed transcript (JSON, or plain text).
pub fn transcription(fields: &std::collections::HashMap<String, bytes::Bytes>) -> Response {
    if fields.get("file").is_none_or(|f| f.is_empty()) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "'file' is a required property",
            Some("file"),
        );
    }
    let text = "Pay per request, settle on chain.";
    match fields.get("response_format").map(|f| f.as_ref()) {
        Some(b"text") => (StatusCode::OK, text.to_owned()).into_response(),
        _ => (
            StatusCode::OK,
            axum::Json(json!({"text": text, "usage": {"type": "duration", "seconds": 1}})),
        )
            .into_response(),
    }
}
