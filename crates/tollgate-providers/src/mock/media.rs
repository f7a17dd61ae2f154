//! Images (a real 1×1 PNG) for `/v1/images/generations`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::openai_error;

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
