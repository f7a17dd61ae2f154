//! `POST /v1/embeddings`: unit vectors derived from the input text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::openai_error;
use crate::text::{estimate_tokens, seed};

const DEFAULT_DIMENSIONS: usize = 256;

pub fn respond(request: &Value) -> Response {
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            Some("model"),
        );
    };
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "'input' must be a non-empty string or array",
                Some("input"),
            );
        }
    };
    let dimensions = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_DIMENSIONS, |d| d.clamp(1, 4096) as usize);
    let as_base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let prompt_tokens: u64 = inputs.iter().map(|s| estimate_tokens(s)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = unit_vector(text, dimensions);
            let embedding = if as_base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn unit_vector(text: &str, dimensions: usize) -> Vec<f32> {
    let seed = seed(text.as_bytes());
    let raw: Vec<f32> = (0..dimensions)
        .map(|i| f32::from(seed[i % 32].wrapping_mul(i as u8 | 1)) - 127.5)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}
