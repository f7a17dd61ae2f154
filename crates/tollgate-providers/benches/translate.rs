//! OpenAI ⇄ Anthropic translation cost: per request (a ~2 KB multi-turn
//! request with tools, parsed, validated, translated and serialized), per
//! response (a Messages response with text and two tool calls → OpenAI
//! JSON), per error, and per streamed event (one `text_delta`, one
//! `input_json_delta`, and a whole recorded tool-call transcript).
//!
//! Run: `cargo bench -p tollgate-providers --bench translate`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tollgate_providers::anthropic::openai_types::ChatRequest;
use tollgate_providers::anthropic::{
    DefaultMaxTokens, ResponseOptions, StreamTranslator, TranslateOptions, from_anthropic,
    translate_request_body,
};

const TOOL_STREAM: &str = include_str!("../tests/fixtures/anthropic/streams/tool_calls.sse");

/// A realistic agent turn: system prompt, two tools, a parallel tool call
/// and its results, then a follow-up question.
fn request_body() -> Vec<u8> {
    let weather_schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        },
        "required": ["city"]
    });
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "temperature": 0.3,
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "user-8f14e45f",
        "messages": [
            {"role": "system", "content": "You are a concise travel assistant. Use the tools to answer questions about weather and forecasts. Prefer metric units unless the user asks otherwise, and never invent data the tools did not return."},
            {"role": "user", "content": "I'm flying to Paris tomorrow and to Tokyo next week. What's the weather like in both cities right now?"},
            {"role": "assistant", "content": "Let me check both cities.", "tool_calls": [
                {"id": "call_9f2a1c", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}},
                {"id": "call_b7d3e0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\",\"unit\":\"celsius\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_9f2a1c", "content": "{\"temp\":18,\"sky\":\"overcast\",\"wind_kmh\":14,\"humidity\":0.72}"},
            {"role": "tool", "tool_call_id": "call_b7d3e0", "content": "{\"temp\":24,\"sky\":\"clear\",\"wind_kmh\":6,\"humidity\":0.55}"},
            {"role": "assistant", "content": "Paris is 18 °C and overcast with a light wind; Tokyo is 24 °C and clear. Pack a light jacket for Paris."},
            {"role": "user", "content": [
                {"type": "text", "text": "Thanks! Will it rain in Paris tomorrow afternoon? And what about the weekend in Tokyo?"}
            ]}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Current weather conditions for a city.", "parameters": weather_schema}},
            {"type": "function", "function": {"name": "get_forecast", "description": "Hourly forecast for a city over the next days, including precipitation probability.", "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days_ahead": {"type": "integer", "minimum": 0, "maximum": 10},
                    "hours": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 23}}
                },
                "required": ["city", "days_ahead"]
            }}}
        ],
        "tool_choice": "auto"
    });
    serde_json::to_vec(&body).unwrap()
}

fn response_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "text", "text": "I'll get the forecasts for both."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_forecast", "input": {"city": "Paris", "days_ahead": 1, "hours": [12, 13, 14, 15, 16, 17]}},
            {"type": "tool_use", "id": "toolu_01B7vR2y8Mtx5fPq3KjW1nZs", "name": "get_forecast", "input": {"city": "Tokyo", "days_ahead": 5}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 612, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1024, "output_tokens": 118, "service_tier": "standard"}
    }))
    .unwrap()
}

fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_owned());
                }
            }
            Some((event?, data?))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let req = request_body();
    println!("request body: {} bytes", req.len());
    let models = DefaultMaxTokens::new(None).with_prefix("claude-", 4096);
    let defaults = TranslateOptions {
        models: &models,
        user_id_key: Some(b"bench-user-id-key"),
    };
    let (out, _) = translate_request_body(&req, &defaults).unwrap();
    println!("anthropic body: {} bytes", out.len());

    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Bytes(req.len() as u64));
    g.bench_function("translate_2kb_multi_turn_tools", |b| {
        b.iter(|| translate_request_body(black_box(&req), &defaults).unwrap())
    });
    g.bench_function("parse_only", |b| {
        b.iter(|| serde_json::from_slice::<ChatRequest>(black_box(&req)).unwrap())
    });
    g.finish();

    let resp = response_body();
    let opts = ResponseOptions {
        requested_model: "claude-sonnet-4-5",
        created: 1_750_000_000,
        legacy_functions: false,
    };
    let mut g = c.benchmark_group("response");
    g.throughput(Throughput::Bytes(resp.len() as u64));
    g.bench_function("text_and_two_tool_calls", |b| {
        b.iter(|| from_anthropic::response_body(black_box(&resp), &opts).unwrap())
    });
    g.finish();
    let err = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    c.bench_function("error/overloaded", |b| {
        b.iter(|| from_anthropic::error(529, black_box(err)))
    });

    // Per event, in a translator that is mid-stream.
    let start = r#"{"type":"message_start","message":{"id":"msg_01Stream1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#;
    let text_delta = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the forecast shows light rain after"}}"#;
    let json_delta = r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"days_ahead\": 1, \"ho"}}"#;
    let mut t = StreamTranslator::new("claude-sonnet-4-5", true, 1_750_000_000);
    t.on_event("message_start", start).unwrap();
    t.on_event(
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    )
    .unwrap();
    t.on_event(
        "content_block_start",
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_forecast","input":{}}}"#,
    )
    .unwrap();
    let mut g = c.benchmark_group("stream_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("text_delta", |b| {
        b.iter(|| {
            t.on_event("content_block_delta", black_box(text_delta))
                .unwrap()
        })
    });
    g.bench_function("input_json_delta", |b| {
        b.iter(|| {
            t.on_event("content_block_delta", black_box(json_delta))
                .unwrap()
        })
    });
    g.bench_function("ping", |b| {
        b.iter(|| {
            t.on_event("ping", black_box(r#"{"type": "ping"}"#))
                .unwrap()
        })
    });
    g.finish();

    let events = sse_events(TOOL_STREAM);
    let mut g = c.benchmark_group("stream_transcript");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function(format!("tool_calls_{}_events", events.len()), |b| {
        b.iter(|| {
            let mut t = StreamTranslator::new("claude-sonnet-4-5", true, 1_750_000_000);
            let mut n = 0;
            for (e, d) in &events {
                n += t.on_event(e, d).unwrap().len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
