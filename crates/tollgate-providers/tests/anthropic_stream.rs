//! Golden tests: Anthropic SSE transcripts → OpenAI `chat.completion.chunk`
//! sequences. Fixtures: `tests/fixtures/anthropic/streams/NAME.sse` and
//! `NAME.expected.json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use tollgate_providers::anthropic::{
    AnthropicUsage, RequestInfo, StreamTranslator, TranslateOptions, translate_request_body,
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic/streams")
}

/// SSE text → (event, data) pairs, as an SSE reader would deliver them.
fn parse_sse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = String::new();
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !event.is_empty() || !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}

struct Run {
    chunks: Vec<Value>,
    translator: StreamTranslator,
    expected: Value,
}

fn run(name: &str) -> Run {
    let sse = std::fs::read_to_string(dir().join(format!("{name}.sse"))).unwrap();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join(format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    let mut t = StreamTranslator::new(
        expected["model"].as_str().unwrap(),
        expected["include_usage"].as_bool().unwrap(),
        expected["created"].as_i64().unwrap(),
    )
    .with_legacy_functions(expected["legacy_functions"].as_bool().unwrap());
    let mut chunks = Vec::new();
    for (event, data) in parse_sse(&sse) {
        for s in t.on_event(&event, &data).unwrap() {
            chunks.push(serde_json::from_str::<Value>(&s).unwrap());
        }
    }
    Run {
        chunks,
        translator: t,
        expected,
    }
}

fn golden(name: &str) -> Run {
    let r = run(name);
    let want = r.expected["chunks"].as_array().unwrap();
    assert!(
        &r.chunks == want,
        "{name}: chunk sequence differs\n--- actual ---\n{}\n--- expected ---\n{}",
        r.chunks
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        want.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let usage: AnthropicUsage =
        serde_json::from_value(r.expected["anthropic_usage"].clone()).unwrap();
    assert_eq!(r.translator.usage(), usage, "{name}: billing usage");
    assert_eq!(
        r.translator.finished(),
        r.expected["finished"].as_bool().unwrap()
    );
    assert_eq!(
        r.translator.errored(),
        r.expected["errored"].as_bool().unwrap()
    );
    r
}

/// Reassembles each tool call from its deltas, as an OpenAI client does.
fn reassemble_tool_calls(chunks: &[Value]) -> BTreeMap<u64, (String, String, String)> {
    let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    for c in chunks {
        let Some(tcs) = c.pointer("/choices/0/delta/tool_calls") else {
            continue;
        };
        for tc in tcs.as_array().unwrap() {
            let e = calls.entry(tc["index"].as_u64().unwrap()).or_default();
            if let Some(id) = tc["id"].as_str() {
                e.0 = id.to_owned();
            }
            if let Some(n) = tc["function"]["name"].as_str() {
                e.1 = n.to_owned();
            }
            if let Some(a) = tc["function"]["arguments"].as_str() {
                e.2.push_str(a);
            }
        }
    }
    calls
}

#[test]
fn text_answer_with_usage_chunk() {
    let r = golden("text");
    // The usage chunk is the last one and has no choices.
    let last = r.chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 2125);
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert_eq!(r.translator.stop_reason(), Some("end_turn"));
}

#[test]
fn two_tool_calls_streamed_in_fragments() {
    let r = golden("tool_calls");
    let calls = reassemble_tool_calls(&r.chunks);
    assert_eq!(calls.len(), 2);
    let (id, name, args) = &calls[&0];
    assert_eq!(
        (id.as_str(), name.as_str()),
        ("toolu_01Paris", "get_weather")
    );
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"city": "Paris", "unit": "celsius"})
    );
    let (id, _, args) = &calls[&1];
    assert_eq!(id, "toolu_01Tokyo");
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"city": "Tokyo", "unit": "celsius"})
    );
}

#[test]
fn thinking_and_unknown_events_are_skipped() {
    golden("thinking_then_text");
}

#[test]
fn legacy_function_call_stream() {
    golden("legacy_function");
}

#[test]
fn error_event_becomes_an_error_payload_and_ends_the_stream() {
    let r = golden("error");
    let last = r.chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "overloaded");
    assert!(last.get("choices").is_none());
}

#[test]
fn usage_is_not_double_counted_across_repeated_message_deltas() {
    let mut t = StreamTranslator::new("claude-sonnet-4-5", true, 1);
    let start = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#;
    assert_eq!(t.on_event("message_start", start).unwrap().len(), 1);
    for (out, input) in [(7, None), (15, Some(10)), (20, None)] {
        let mut u = json!({"output_tokens": out});
        if let Some(i) = input {
            u["input_tokens"] = json!(i);
        }
        let ev = json!({"type": "message_delta", "delta": {"stop_reason": null}, "usage": u});
        assert!(
            t.on_event("message_delta", &ev.to_string())
                .unwrap()
                .is_empty()
        );
    }
    let ev = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"cache_creation_input_tokens": 3, "output_tokens": 20}});
    t.on_event("message_delta", &ev.to_string()).unwrap();
    assert_eq!(
        t.usage(),
        AnthropicUsage {
            input_tokens: 10,
            output_tokens: 20,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 5,
            cache_creation_1h_input_tokens: 0,
        }
    );
    let out = t
        .on_event("message_stop", r#"{"type":"message_stop"}"#)
        .unwrap();
    assert_eq!(out.len(), 2);
    let usage: Value = serde_json::from_str(&out[1]).unwrap();
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 18, "completion_tokens": 20, "total_tokens": 38,
               "prompt_tokens_details": {"cached_tokens": 5}})
    );
    assert!(t.finished() && !t.errored());
    // Anything after message_stop is ignored.
    assert!(
        t.on_event("message_stop", r#"{"type":"message_stop"}"#)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unreadable_event_is_an_upstream_error() {
    let mut t = StreamTranslator::new("m", false, 1);
    let e = t.on_event("content_block_delta", "{not json").unwrap_err();
    assert_eq!(e.code, "upstream_invalid_event");
    assert_eq!(e.status(), 502);
    assert_eq!(e.to_openai_body()["error"]["type"], "server_error");
    assert!(t.finished() && t.errored());
}

#[test]
fn ping_and_empty_data_send_nothing() {
    let mut t = StreamTranslator::new("m", false, 1);
    assert!(t.on_event("ping", "").unwrap().is_empty());
    assert!(t.on_event("", "   ").unwrap().is_empty());
    assert!(t.on_event("", r#"{"type":"ping"}"#).unwrap().is_empty());
    assert!(!t.finished());
}

#[test]
fn block_start_with_content_is_not_lost() {
    let mut t = StreamTranslator::new("m", false, 1);
    let out = t
        .on_event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Hi"}}"#,
        )
        .unwrap();
    let c: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(c["choices"][0]["delta"]["content"], "Hi");
    // A tool_use whose input is complete at the start and gets no fragment.
    let out = t
        .on_event(
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_x","name":"f","input":{"a":1}}}"#,
        )
        .unwrap();
    assert_eq!(out.len(), 1);
    let out = t
        .on_event(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":1}"#,
        )
        .unwrap();
    let c: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(
        c["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "function": {"arguments": "{\"a\":1}"}})
    );
    // Without message_start the id is a placeholder, never empty.
    assert_eq!(c["id"], "chatcmpl-unknown");
}

#[test]
fn request_info_builds_the_matching_translator() {
    let body = br#"{"model":"claude-haiku-4-5","max_tokens":5,"stream":true,
        "stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}"#;
    let (_, info) = translate_request_body(
        body,
        &TranslateOptions {
            models: &|_: &str| None,
            user_id_key: None,
        },
    )
    .unwrap();
    assert_eq!(
        info,
        RequestInfo {
            model: "claude-haiku-4-5".into(),
            stream: true,
            include_usage: true,
            legacy_functions: false,
        }
    );
    let mut t = info.stream_translator(99);
    let out = t
        .on_event(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_z","content":[],"usage":{"input_tokens":1,"output_tokens":1}}}"#,
        )
        .unwrap();
    let c: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(c["model"], "claude-haiku-4-5");
    assert_eq!(c["created"], 99);
    assert_eq!(c["id"], "chatcmpl-msg_z");
    assert_eq!(c["usage"], Value::Null);
    assert!(c.as_object().unwrap().contains_key("usage"));
}
