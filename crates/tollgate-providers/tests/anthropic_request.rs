//! Golden tests: OpenAI Chat Completions request → Anthropic Messages
//! request. Fixtures: `tests/fixtures/anthropic/requests/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;

use serde_json::{Value, json};
use tollgate_providers::anthropic::openai_types::ChatRequest;
use tollgate_providers::anthropic::{
    DefaultMaxTokens, ModelFacts, RequestInfo, ThinkingSupport, TranslateError, TranslateOptions,
    to_anthropic, translate_request_body,
};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic/requests")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// What the fixtures assume about models: `claude-*` answer 4096 tokens by
/// default; Claude 3.5 Haiku neither thinks nor has structured outputs;
/// 4.6+ models think adaptively; the rest think with a budget.
fn facts(model: &str) -> Option<ModelFacts> {
    let claude = ModelFacts {
        default_max_tokens: Some(4096),
        max_output_tokens: Some(64_000),
        thinking: ThinkingSupport::Budget,
        structured_outputs: true,
    };
    if !model.starts_with("claude-") {
        return None;
    }
    Some(if model.starts_with("claude-3-5-haiku") {
        ModelFacts {
            max_output_tokens: Some(8192),
            thinking: ThinkingSupport::None,
            structured_outputs: false,
            ..claude
        }
    } else if ["claude-opus-4-6", "claude-opus-4-7", "claude-sonnet-4-6"]
        .iter()
        .any(|p| model.starts_with(p))
    {
        ModelFacts {
            max_output_tokens: Some(128_000),
            thinking: ThinkingSupport::Adaptive,
            ..claude
        }
    } else {
        claude
    })
}

/// The gateway secret `user` is hashed with in the fixtures.
const USER_KEY: &[u8] = b"fixture-user-id-key";

fn options() -> TranslateOptions<'static> {
    TranslateOptions {
        models: &facts,
        user_id_key: Some(USER_KEY),
    }
}

fn translate(input: &Value) -> Result<(Value, RequestInfo), TranslateError> {
    let body = serde_json::to_vec(input).unwrap();
    let (out, info) = translate_request_body(&body, &options())?;
    Ok((serde_json::from_slice(&out).unwrap(), info))
}

/// Shallow merge; a null in `patch` removes the key.
fn merge(base: &Value, patch: &Value) -> Value {
    let mut out = base.clone();
    let obj = out.as_object_mut().unwrap();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    out
}

fn assert_json_eq(actual: &Value, expected: &Value, what: &str) {
    assert!(
        actual == expected,
        "{what}: translation differs from the golden output\n--- actual ---\n{}\n--- expected ---\n{}",
        serde_json::to_string_pretty(actual).unwrap(),
        serde_json::to_string_pretty(expected).unwrap()
    );
}

fn golden(name: &str) -> RequestInfo {
    let f = fixture(name);
    let (actual, info) = translate(&f["input"]).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_json_eq(&actual, &f["expected"], name);
    info
}

#[test]
fn multi_turn_tool_conversation() {
    let info = golden("multi_turn_tools.json");
    assert!(!info.stream && !info.include_usage && !info.legacy_functions);
    assert_eq!(info.model, "claude-sonnet-4-5");
}

#[test]
fn tool_results_then_user_text_share_one_turn_and_same_roles_merge() {
    golden("tool_results_then_user_merged.json");
}

#[test]
fn images_from_data_urls_and_http_urls() {
    golden("images.json");
}

#[test]
fn pdf_file_part_becomes_a_document() {
    golden("pdf_file.json");
}

#[test]
fn leading_system_and_developer_messages_become_system_blocks() {
    golden("system_and_developer.json");
}

#[test]
fn sampling_parameters_user_and_stream() {
    let info = golden("sampling_and_stream.json");
    assert!(info.stream);
    assert!(info.include_usage);
    assert_eq!(info.model, "claude-haiku-4-5");
}

#[test]
fn stop_array_and_temperature_bound() {
    let info = golden("stop_array.json");
    assert!(!info.stream);
}

#[test]
fn max_tokens_default_per_model() {
    golden("max_tokens_default.json");
}

#[test]
fn legacy_functions_and_function_messages() {
    let info = golden("legacy_functions.json");
    assert!(info.legacy_functions);
}

#[test]
fn legacy_function_call_auto_and_empty_arguments() {
    let info = golden("legacy_function_call_auto.json");
    assert!(info.legacy_functions);
}

#[test]
fn tool_choice_variants() {
    let f = fixture("tool_choice.json");
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let input = merge(&f["base_input"], &case["patch"]);
        let expected = merge(&f["base_expected"], &case["expected_patch"]);
        let (actual, _) = translate(&input).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_json_eq(&actual, &expected, name);
    }
}

#[test]
fn parameter_mappings() {
    let f = fixture("parameters.json");
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let input = merge(&f["base_input"], &case["patch"]);
        let expected = merge(&f["base_expected"], &case["expected_patch"]);
        let (actual, _) = translate(&input).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_json_eq(&actual, &expected, name);
    }
}

#[test]
fn user_is_forwarded_only_as_a_hash_and_only_with_a_key() {
    let input = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "user": "bob@example.org",
        "messages": [{"role": "user", "content": "Hi"}]});
    let (out, _) = translate(&input).unwrap();
    let id = out["metadata"]["user_id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!out.to_string().contains("bob"));
    // Another key, another id; no key, no id.
    let body = serde_json::to_vec(&input).unwrap();
    let other = TranslateOptions {
        models: &facts,
        user_id_key: Some(b"another-key"),
    };
    let (again, _) = translate_request_body(&body, &other).unwrap();
    let again: Value = serde_json::from_slice(&again).unwrap();
    assert_ne!(again["metadata"]["user_id"], out["metadata"]["user_id"]);
    let keyless = TranslateOptions {
        models: &facts,
        user_id_key: None,
    };
    let (none, _) = translate_request_body(&body, &keyless).unwrap();
    let none: Value = serde_json::from_slice(&none).unwrap();
    assert!(none.get("metadata").is_none(), "{none}");
}

#[test]
fn rejected_parameters_name_the_parameter() {
    let f = fixture("rejections.json");
    let cases = f["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let input = merge(&f["base_input"], &case["patch"]);
        let want_param = case["param"].as_str();
        let want_code = case["code"].as_str().unwrap();
        match translate(&input) {
            Ok((out, _)) => failures.push(format!("{name}: accepted, translated to {out}")),
            Err(e) => {
                if e.param.as_deref() != want_param || e.code != want_code {
                    failures.push(format!(
                        "{name}: got param {:?} code {:?} ({}), want param {want_param:?} code {want_code:?}",
                        e.param, e.code, e.message
                    ));
                }
                if e.message.is_empty() {
                    failures.push(format!("{name}: empty message"));
                }
                if e.status() != 400 {
                    failures.push(format!("{name}: status {}", e.status()));
                }
                let body = e.to_openai_body();
                if body["error"]["param"].as_str() != want_param
                    || body["error"]["type"] != "invalid_request_error"
                    || body["error"]["code"] != want_code
                {
                    failures.push(format!("{name}: body {body}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn unsupported_parameter_messages_explain() {
    let base = json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}]});
    let e = translate(&merge(&base, &json!({"temperature": 1.7}))).unwrap_err();
    assert!(e.message.contains("0 to 1"), "{}", e.message);
    let e = translate(&merge(
        &base,
        &json!({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}),
    ))
    .unwrap_err();
    assert!(e.message.contains("system"), "{}", e.message);
    let e = translate(&merge(&base, &json!({"n": 3}))).unwrap_err();
    assert!(e.message.contains("`n`"), "{}", e.message);
    assert_eq!(e.to_string(), format!("n: {}", e.message));
}

#[test]
fn null_valued_unknown_fields_count_as_absent() {
    let input = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "whatever": null,
        "messages": [{"role": "user", "content": "Hi", "extra_field": null}]});
    let (out, _) = translate(&input).unwrap();
    assert_eq!(out["messages"][0]["content"][0]["text"], "Hi");
}

#[test]
fn typed_entry_point_matches_the_body_entry_point() {
    let f = fixture("multi_turn_tools.json");
    let req: ChatRequest = serde_json::from_value(f["input"].clone()).unwrap();
    let out = to_anthropic::request(&req, &options()).unwrap();
    assert_json_eq(
        &serde_json::to_value(&out).unwrap(),
        &f["expected"],
        "typed",
    );
    assert_eq!(out.max_tokens, 1024);
    assert_eq!(out.messages.len(), 5);
}

#[test]
fn stream_options_without_stream_do_not_request_usage() {
    let input = json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
        "stream_options": {"include_usage": true, "include_obfuscation": false},
        "messages": [{"role": "user", "content": "Hi"}]});
    let (out, info) = translate(&input).unwrap();
    assert!(out.get("stream").is_none());
    assert!(!info.stream && !info.include_usage);
}

#[test]
fn default_max_tokens_helper() {
    let d = DefaultMaxTokens::new(None)
        .with_prefix("claude-", 4096)
        .with_prefix("claude-3-haiku", 2048);
    assert_eq!(d.get("claude-3-haiku-20240307"), Some(2048));
    assert_eq!(d.get("claude-sonnet-4-5"), Some(4096));
    assert_eq!(d.get("gpt-4o"), None);
    let body = br#"{"model":"claude-3-haiku-1","messages":[{"role":"user","content":"x"}]}"#;
    let with = |models| TranslateOptions {
        models,
        user_id_key: None,
    };
    let (out, _) = translate_request_body(body, &with(&d)).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["max_tokens"], 2048);
    // A default of 0 is no default.
    let zero = |_: &str| {
        Some(ModelFacts {
            default_max_tokens: Some(0),
            ..ModelFacts::default()
        })
    };
    let err = translate_request_body(body, &with(&zero)).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("max_tokens"));
}

#[test]
fn not_json_is_an_invalid_body() {
    let e = translate_request_body(b"{not json", &options()).unwrap_err();
    assert_eq!(e.code, "invalid_request_body");
    assert_eq!(e.param, None);
    assert_eq!(e.status(), 400);
}
