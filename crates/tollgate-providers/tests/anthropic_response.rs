//! Golden tests: Anthropic Messages response → OpenAI `chat.completion`,
//! and Anthropic errors → OpenAI errors. Fixtures:
//! `tests/fixtures/anthropic/responses/` and `errors.json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;

use serde_json::{Value, json};
use tollgate_providers::anthropic::anthropic_types::MessagesResponse;
use tollgate_providers::anthropic::{
    AnthropicUsage, ResponseOptions, TranslateOptions, from_anthropic, translate_request_body,
};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn golden(name: &str) {
    let f = fixture(&format!("responses/{name}"));
    let opts = ResponseOptions {
        requested_model: f["options"]["requested_model"].as_str().unwrap(),
        created: f["options"]["created"].as_i64().unwrap(),
        legacy_functions: f["options"]["legacy_functions"].as_bool().unwrap(),
    };
    // Through the body entry point…
    let body = serde_json::to_vec(&f["input"]).unwrap();
    let out: Value =
        serde_json::from_slice(&from_anthropic::response_body(&body, &opts).unwrap().0).unwrap();
    assert!(
        out == f["expected"],
        "{name}: translation differs\n--- actual ---\n{}\n--- expected ---\n{}",
        serde_json::to_string_pretty(&out).unwrap(),
        serde_json::to_string_pretty(&f["expected"]).unwrap()
    );
    // …and the typed one.
    let msg: MessagesResponse = serde_json::from_value(f["input"].clone()).unwrap();
    let typed = from_anthropic::response_with(&msg, &opts);
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        f["expected"],
        "{name}"
    );
}

#[test]
fn text_blocks_are_concatenated() {
    golden("text.json");
}

#[test]
fn tool_use_blocks_become_tool_calls_with_cache_usage() {
    golden("tool_use.json");
}

#[test]
fn tool_use_only_has_null_content() {
    golden("tool_use_only.json");
}

#[test]
fn max_tokens_is_length() {
    golden("max_tokens.json");
}

#[test]
fn stop_sequence_is_stop() {
    golden("stop_sequence.json");
}

#[test]
fn refusal_is_content_filter() {
    golden("refusal.json");
}

#[test]
fn pause_turn_is_length_and_server_tool_blocks_are_left_out() {
    golden("pause_turn_and_unknown_blocks.json");
}

#[test]
fn thinking_becomes_reasoning_content_and_signed_blocks() {
    golden("thinking.json");
}

#[test]
fn legacy_functions_answer_with_function_call() {
    golden("legacy_function_call.json");
}

#[test]
fn response_stamps_the_current_time() {
    let f = fixture("responses/text.json");
    let msg: MessagesResponse = serde_json::from_value(f["input"].clone()).unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = from_anthropic::response(&msg, "claude-x");
    assert!(out.created >= before && out.created <= before + 5);
    assert_eq!(out.model, "claude-x");
    assert_eq!(out.object, "chat.completion");
}

#[test]
fn legacy_request_round_trip_uses_request_info() {
    let body = br#"{"model":"claude-sonnet-4-5","max_tokens":50,
        "functions":[{"name":"convert"}],"messages":[{"role":"user","content":"x"}]}"#;
    let (_, info) = translate_request_body(
        body,
        &TranslateOptions {
            models: &|_: &str| None,
            user_id_key: None,
        },
    )
    .unwrap();
    assert!(info.legacy_functions);
    let f = fixture("responses/legacy_function_call.json");
    let body = serde_json::to_vec(&f["input"]).unwrap();
    let out: Value = serde_json::from_slice(
        &from_anthropic::response_body(&body, &info.response_options(1750000008))
            .unwrap()
            .0,
    )
    .unwrap();
    assert_eq!(out, f["expected"]);
}

#[test]
fn unreadable_response_is_an_upstream_error() {
    let opts = ResponseOptions {
        requested_model: "m",
        created: 0,
        legacy_functions: false,
    };
    let e = from_anthropic::response_body(b"<html>", &opts).unwrap_err();
    assert_eq!(e.code, "upstream_invalid_response");
    assert_eq!(e.status(), 502);
}

#[test]
fn usage_from_a_response_body() {
    let f = fixture("responses/tool_use.json");
    let body = serde_json::to_vec(&f["input"]).unwrap();
    let u = AnthropicUsage::from_response_body(&body).unwrap();
    assert_eq!(
        u,
        AnthropicUsage {
            input_tokens: 20,
            output_tokens: 95,
            cache_creation_input_tokens: 1500,
            cache_read_input_tokens: 3000,
            cache_creation_1h_input_tokens: 0,
        }
    );
    assert_eq!(u.prompt_tokens(), 4520);
    assert_eq!(
        serde_json::to_value(u.to_openai()).unwrap(),
        f["expected"]["usage"]
    );
    // Null and missing cache fields count as zero.
    let u = AnthropicUsage::from_response_body(
        br#"{"usage":{"input_tokens":3,"output_tokens":4,"cache_read_input_tokens":null}}"#,
    )
    .unwrap();
    assert_eq!(u.prompt_tokens(), 3);
    assert_eq!(AnthropicUsage::from_response_body(b"{}"), None);
    assert_eq!(AnthropicUsage::from_response_body(b"nope"), None);
}

#[test]
fn anthropic_errors_map_to_openai_errors() {
    let f = fixture("errors.json");
    let cases = f["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let status = case["status"].as_u64().unwrap() as u16;
        let body = match &case["body"] {
            Value::String(s) => s.clone().into_bytes(),
            v => serde_json::to_vec(v).unwrap(),
        };
        let (got_status, got_body) = from_anthropic::error(status, &body);
        if got_status as u64 != case["expected_status"].as_u64().unwrap()
            || got_body != case["expected_body"]
        {
            failures.push(format!(
                "{name}: got {got_status} {got_body}, want {} {}",
                case["expected_status"], case["expected_body"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn overloaded_is_a_retryable_503() {
    let (status, body) = from_anthropic::error(
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}})
    );
}
