//! The mock's `/v1/messages` speaks Anthropic's Messages API: it validates
//! requests like the real one and answers JSON or SSE with real usage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use axum::Router;
use axum::body::Body;
use http::Request;
use serde_json::{Value, json};
use tollgate_mock::{MockOptions, router};
use tower::ServiceExt;

const KEY: (&str, &str) = ("x-api-key", "sk-ant-test");
const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// `(event name, data)` of every SSE frame, checking the framing.
    fn events(&self) -> Vec<(String, Value)> {
        assert!(self.content_type.starts_with("text/event-stream"));
        assert!(self.text.ends_with("\n\n"));
        self.text
            .trim_end()
            .split("\n\n")
            .map(|frame| {
                let (event, data) = frame.split_once('\n').unwrap();
                let name = event.strip_prefix("event: ").unwrap().to_owned();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str());
                (name, data)
            })
            .collect()
    }
}

async fn send_raw(app: &Router, headers: &[(&str, &str)], body: String) -> Answer {
    let mut request = Request::post("/v1/messages").header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(response.headers().contains_key("request-id"));
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        content_type,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn send(app: &Router, body: Value) -> Answer {
    send_raw(app, &[KEY, VERSION], body.to_string()).await
}

fn app() -> Router {
    router(MockOptions::default()).0
}

fn ask(text: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": text}]})
}

fn weather_tools() -> Value {
    json!([
        {"name": "get_weather", "description": "Current weather",
         "input_schema": {"type": "object", "properties": {
             "location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
             "required": ["location"]}},
        {"name": "search", "input_schema": {"type": "object", "properties": {
            "query": {"type": "string"}, "limit": {"type": "integer"}, "exact": {"type": "boolean"}},
            "required": ["query", "limit"]}},
    ])
}

#[tokio::test]
async fn plain_message_has_anthropic_shape_and_usage() {
    let (app, recorder) = router(MockOptions::default());
    let answer = send(&app, ask("Hello there, mock!")).await;
    assert_eq!(answer.status, 200);
    assert!(answer.content_type.starts_with("application/json"));
    let v = answer.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_01"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    assert_eq!(v["content"][0]["type"], "text");
    let text = v["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 24);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    // 18 characters → 5 tokens, + 3 for the message.
    assert_eq!(v["usage"]["input_tokens"], 8);
    assert_eq!(v["usage"]["output_tokens"], 24);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);

    // Deterministic, and recorded with its headers.
    assert_eq!(
        send(&app, ask("Hello there, mock!")).await.json()["content"],
        v["content"]
    );
    assert_eq!(recorder.count(), 2);
    let seen = recorder.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-test");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["max_tokens"], 1024);
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_end_the_answer() {
    let app = app();
    let mut body = ask("Hello");
    body["max_tokens"] = json!(5);
    let v = send(&app, body).await.json();
    assert_eq!(
        v["content"][0]["text"].as_str().unwrap().split(' ').count(),
        5
    );
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 5);

    let full = send(&app, ask("Hello")).await.json();
    let words: Vec<&str> = full["content"][0]["text"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    let stop = format!(" {}", words[3]);
    let mut body = ask("Hello");
    body["stop_sequences"] = json!([stop, "never-there"]);
    let v = send(&app, body).await.json();
    let text = v["content"][0]["text"].as_str().unwrap();
    assert!(!text.contains(&stop) && !text.is_empty(), "{text}");
    assert_eq!(v["stop_reason"], "stop_sequence");
    assert_eq!(v["stop_sequence"], stop.as_str());
}

#[tokio::test]
async fn streaming_sends_anthropic_events() {
    let app = app();
    let plain = send(&app, ask("Stream me")).await.json();
    let mut body = ask("Stream me");
    body["stream"] = json!(true);
    let answer = send(&app, body).await;
    assert_eq!(answer.status, 200);
    let events = answer.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(
        names[3..names.len() - 3]
            .iter()
            .all(|n| *n == "content_block_delta")
    );
    assert_eq!(names.len(), 6 + 24);

    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        start["usage"]["input_tokens"],
        plain["usage"]["input_tokens"]
    );
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, plain["content"][0]["text"].as_str().unwrap());
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 24);
    // Exact framing of the first and last frames.
    assert!(answer.text.starts_with("event: message_start\ndata: {"));
    assert!(
        answer
            .text
            .ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    );
}

#[tokio::test]
async fn tools_are_called_by_choice_or_for_weather() {
    let app = app();
    let with_tools = |text: &str, choice: Value| {
        let mut body = ask(text);
        body["tools"] = weather_tools();
        if !choice.is_null() {
            body["tool_choice"] = choice;
        }
        body
    };
    // auto (the default) + "weather" → the first tool, its schema filled.
    let v = send(
        &app,
        with_tools("What's the weather in Paris?", Value::Null),
    )
    .await
    .json();
    assert_eq!(v["stop_reason"], "tool_use");
    let call = &v["content"][0];
    assert_eq!(call["type"], "tool_use");
    assert!(call["id"].as_str().unwrap().starts_with("toolu_01"));
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["input"], json!({"location": "Paris"}));
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let v = send(&app, with_tools("Tell me a story", json!({"type": "auto"})))
        .await
        .json();
    assert_eq!(
        (v["stop_reason"].as_str(), v["content"][0]["type"].as_str()),
        (Some("end_turn"), Some("text"))
    );
    let v = send(&app, with_tools("Tell me a story", json!({"type": "any"})))
        .await
        .json();
    assert_eq!(v["content"][0]["name"], "get_weather");
    let v = send(
        &app,
        with_tools("hi", json!({"type": "tool", "name": "search"})),
    )
    .await
    .json();
    assert_eq!(v["content"][0]["name"], "search");
    assert_eq!(
        v["content"][0]["input"],
        json!({"query": "mock", "limit": 1})
    );
    let v = send(&app, with_tools("weather?", json!({"type": "none"})))
        .await
        .json();
    assert_eq!(v["content"][0]["type"], "text");

    // Streamed: the input arrives as several partial_json fragments.
    let mut body = with_tools("weather in Paris", Value::Null);
    body["stream"] = json!(true);
    let events = send(&app, body).await.events();
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["input"], json!({}));
    let fragments: Vec<String> = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        fragments.len() >= 3 && fragments[0].is_empty(),
        "{fragments:?}"
    );
    let input: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(input, json!({"location": "Paris"}));
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );
}

#[tokio::test]
async fn tool_results_are_answered_with_text() {
    let app = app();
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 100, "tools": weather_tools(), "messages": [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "search", "input": {"query": "paris", "limit": 1}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C, sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "content": [{"type": "text", "text": "Paris, France"}], "is_error": false},
            {"type": "text", "text": "And the weather tomorrow?"}]},
    ]});
    let answer = send(&app, body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let v = answer.json();
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
}

#[tokio::test]
async fn cache_control_writes_then_reads_the_prefix() {
    let app = app();
    let system = json!([{"type": "text", "text": "You are a careful assistant. ".repeat(40),
                         "cache_control": {"type": "ephemeral"}}]);
    let body = |turns: Value| json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": system, "messages": turns});
    // 1 160 characters → 290 tokens cached; "hello world" (3) + 3 framing.
    let first_turn = json!([{"role": "user", "content": "hello world"}]);
    let first = send(&app, body(first_turn.clone())).await.json()["usage"].clone();
    assert_eq!(first["cache_creation_input_tokens"], 290);
    assert_eq!(first["cache_creation"]["ephemeral_5m_input_tokens"], 290);
    assert_eq!(first["cache_read_input_tokens"], 0);
    assert_eq!(first["input_tokens"], 6);
    let again = send(&app, body(first_turn.clone())).await.json()["usage"].clone();
    assert_eq!(again["cache_creation_input_tokens"], 0);
    assert_eq!(again["cache_read_input_tokens"], 290);
    assert_eq!(again["input_tokens"], 6);

    // The next turn caches the conversation too (1-hour TTL) and reads the
    // system prompt written before.
    let next_turn = json!([
        {"role": "user", "content": "hello world"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": [{"type": "text", "text": "And now?", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
    ]);
    let mut next = body(next_turn);
    next["system"][0]["cache_control"]["ttl"] = json!("1h");
    let usage = send(&app, next).await.json()["usage"].clone();
    assert_eq!(usage["cache_read_input_tokens"], 290);
    // 3 + 3 (hello world) + 3 + 1 (Hi!) + 3 + 2 (And now?).
    assert_eq!(usage["cache_creation"]["ephemeral_1h_input_tokens"], 15);
    assert_eq!(usage["input_tokens"], 0);

    // A top-level cache_control caches the whole prompt; each router has
    // its own cache.
    let mut auto = body(first_turn);
    auto["system"][0]
        .as_object_mut()
        .unwrap()
        .remove("cache_control");
    auto["cache_control"] = json!({"type": "ephemeral"});
    let fresh = router(MockOptions::default()).0;
    let usage = send(&fresh, auto).await.json()["usage"].clone();
    assert_eq!(usage["cache_creation_input_tokens"], 296);
    assert_eq!(usage["input_tokens"], 0);
}

/// `(status, error type, message fragment)` for a request that must fail.
async fn refused(app: &Router, headers: &[(&str, &str)], body: String) -> (u16, String, String) {
    let answer = send_raw(app, headers, body).await;
    let v = answer.json();
    assert_eq!(v["type"], "error", "{}", answer.text);
    (
        answer.status,
        v["error"]["type"].as_str().unwrap().to_owned(),
        v["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn headers_are_required() {
    let (app, recorder) = router(MockOptions::default());
    let body = ask("hi").to_string();
    let (status, kind, _) = refused(&app, &[VERSION], body.clone()).await;
    assert_eq!((status, kind.as_str()), (401, "authentication_error"));
    let (status, kind, message) = refused(&app, &[KEY], body.clone()).await;
    assert_eq!((status, kind.as_str()), (400, "invalid_request_error"));
    assert!(message.contains("anthropic-version"), "{message}");
    let (status, _, _) = refused(&app, &[KEY, VERSION], "not json".into()).await;
    assert_eq!(status, 400);
    assert_eq!(recorder.count(), 3, "refused requests are recorded too");
}

#[tokio::test]
async fn every_rule_is_enforced() {
    let app = app();
    let user = |content: Value| json!({"role": "user", "content": content});
    let assistant = |content: Value| json!({"role": "assistant", "content": content});
    let base = |messages: Value| json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages});
    let with = |key: &str, value: Value| {
        let mut body = base(json!([user(json!("hi"))]));
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = base(json!([user(json!("hi"))]));
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let call = json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}});
    let result = |id: &str| json!({"type": "tool_result", "tool_use_id": id, "content": "18°C"});
    let breakpoint = json!({"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}});

    let cases: Vec<(Value, &str)> = vec![
        (without("model"), "model: Field required"),
        (
            with("model", json!(7)),
            "model: Input should be a valid string",
        ),
        (without("max_tokens"), "max_tokens: Field required"),
        (with("max_tokens", json!(0)), "greater than or equal to 1"),
        (
            with("max_tokens", json!("10")),
            "max_tokens: Input should be a valid integer",
        ),
        (
            with("max_tokens", json!(1.5)),
            "max_tokens: Input should be a valid integer",
        ),
        (
            with("max_tokens", json!(100_000)),
            "maximum allowed number of output tokens",
        ),
        (without("messages"), "messages: Field required"),
        (with("messages", json!([])), "at least one message"),
        (
            with("messages", json!("hi")),
            "messages: Input should be a valid list",
        ),
        (
            base(json!([{"role": "system", "content": "x"}])),
            "messages.0.role",
        ),
        (
            base(json!([assistant(json!("x"))])),
            "first message must use the \"user\" role",
        ),
        (
            base(json!([user(json!("a")), user(json!("b"))])),
            "roles must alternate",
        ),
        (
            base(json!([{"role": "user", "content": "x", "name": "bob"}])),
            "messages.0.name: Extra inputs",
        ),
        (base(json!([user(json!(5))])), "messages.0.content"),
        (base(json!([user(json!(""))])), "non-empty content"),
        (base(json!([user(json!([]))])), "non-empty content"),
        (
            base(json!([user(json!([{"type": "text", "text": ""}]))])),
            "text content blocks must be non-empty",
        ),
        (
            base(json!([user(
                json!([{"type": "text", "text": "x", "extra": 1}])
            )])),
            "messages.0.content.0.extra: Extra inputs",
        ),
        (
            base(json!([user(json!([{"type": "audio"}]))])),
            "does not match any of the expected tags",
        ),
        (
            base(json!([user(json!([{"text": "x"}]))])),
            "discriminator 'type'",
        ),
        (
            base(json!([user(
                json!([{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}])
            )])),
            "media_type",
        ),
        (
            base(json!([user(json!([{"type": "image"}]))])),
            "source: Field required",
        ),
        (
            base(json!([user(
                json!([{"type": "image_url", "image_url": {"url": "x"}}])
            )])),
            "expected tags",
        ),
        (
            base(json!([user(json!([call]))])),
            "only allowed in \"assistant\" messages",
        ),
        (
            base(json!([
                user(json!("x")),
                assistant(json!([{"type": "tool_use", "id": "t1", "name": "f", "input": "{}"}]))
            ])),
            "input: Input should be a valid dictionary",
        ),
        (
            base(json!([
                user(json!("x")),
                assistant(json!([{"type": "tool_use", "id": "bad id", "name": "f", "input": {}}]))
            ])),
            "id: String should match pattern",
        ),
        (
            base(json!([
                user(json!("x")),
                assistant(json!([result("toolu_1")]))
            ])),
            "only allowed in \"user\" messages",
        ),
        (
            base(json!([user(json!([result("toolu_9")]))])),
            "unexpected `tool_use_id`",
        ),
        (
            base(json!([
                user(json!("x")),
                assistant(json!([call])),
                user(json!([result("toolu_2")]))
            ])),
            "unexpected `tool_use_id` found in `tool_result` blocks: toolu_2",
        ),
        (
            base(json!([
                user(json!("x")),
                assistant(json!([call])),
                user(json!("thanks"))
            ])),
            "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1",
        ),
        (
            base(json!([user(json!("x")), assistant(json!([call]))])),
            "without `tool_result` blocks",
        ),
        (
            base(json!([
                user(json!("x")),
                assistant(
                    json!([call, {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {}}])
                ),
                user(json!([result("toolu_1")]))
            ])),
            "toolu_2",
        ),
        (
            base(json!([
                user(json!("x")),
                assistant(json!([call])),
                user(json!([{"type": "text", "text": "first"}, result("toolu_1")]))
            ])),
            "must come first",
        ),
        (
            with("system", json!(5)),
            "system: Input should be a valid string",
        ),
        (
            with(
                "system",
                json!([{"type": "image", "source": {"type": "url", "url": "x"}}]),
            ),
            "system.0.type: Input should be 'text'",
        ),
        (
            with("tools", json!({"name": "f"})),
            "tools: Input should be a valid list",
        ),
        (
            with("tools", json!([{"name": "f"}])),
            "tools.0.input_schema: Field required",
        ),
        (
            with(
                "tools",
                json!([{"name": "f", "input_schema": {"type": "string"}}]),
            ),
            "input_schema.type",
        ),
        (
            with(
                "tools",
                json!([{"name": "bad name", "input_schema": {"type": "object"}}]),
            ),
            "tools.0.name",
        ),
        (
            with(
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            "tools.0.name: Field required",
        ),
        (
            with(
                "tools",
                json!([{"name": "f", "input_schema": {"type": "object"}}, {"name": "f", "input_schema": {"type": "object"}}]),
            ),
            "unique",
        ),
        (
            with("tool_choice", json!({"type": "required"})),
            "tool_choice.type",
        ),
        (
            with("tool_choice", json!("auto")),
            "tool_choice: Input should be a valid dictionary",
        ),
        (
            with("tool_choice", json!({"type": "any"})),
            "only be specified while providing tools",
        ),
        (
            {
                let mut body = with("tools", weather_tools());
                body["tool_choice"] = json!({"type": "tool", "name": "nope"});
                body
            },
            "Tool 'nope' not found",
        ),
        (
            {
                let mut body = with("tools", weather_tools());
                body["tool_choice"] = json!({"type": "tool"});
                body
            },
            "tool_choice.name: Field required",
        ),
        (
            with("temperature", json!(1.5)),
            "temperature: Input should be less than or equal to 1",
        ),
        (
            with("temperature", json!(-0.1)),
            "temperature: Input should be greater than or equal to 0",
        ),
        (
            with("temperature", json!("hot")),
            "temperature: Input should be a valid number",
        ),
        (with("top_p", json!(2)), "top_p"),
        (
            with("stop_sequences", json!("STOP")),
            "stop_sequences: Input should be a valid list",
        ),
        (with("stop_sequences", json!([1])), "stop_sequences.0"),
        (with("metadata", json!({"user_id": 5})), "metadata.user_id"),
        (
            with("metadata", json!({"session": "x"})),
            "metadata.session: Extra inputs",
        ),
        (
            with("stream", json!("yes")),
            "stream: Input should be a valid boolean",
        ),
        (with("n", json!(2)), "n: Extra inputs are not permitted"),
        (
            with("frequency_penalty", json!(0.5)),
            "frequency_penalty: Extra inputs are not permitted",
        ),
        (
            with("max_completion_tokens", json!(5)),
            "max_completion_tokens: Extra inputs",
        ),
        (
            with("thinking", json!({"type": "enabled", "budget_tokens": 10})),
            "budget_tokens",
        ),
        (
            with("cache_control", json!({"type": "persistent"})),
            "cache_control.type",
        ),
        (
            base(json!([user(json!([
                breakpoint, breakpoint, breakpoint, breakpoint, breakpoint
            ]))])),
            "A maximum of 4 blocks with cache_control may be provided. Found 5.",
        ),
    ];
    for (body, fragment) in cases {
        let (status, kind, message) = refused(&app, &[KEY, VERSION], body.to_string()).await;
        assert_eq!(
            (status, kind.as_str()),
            (400, "invalid_request_error"),
            "{body}: {message}"
        );
        assert!(
            message.contains(fragment),
            "{body}: {message:?} lacks {fragment:?}"
        );
    }

    // Everything optional, used correctly, passes (a thinking block sent
    // back carries the signature the mock gave it).
    let thought = send(
        &app,
        json!({"model": "claude-opus-4-6", "max_tokens": 2048,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [user(json!("Describe"))]}),
    )
    .await
    .json()["content"][0]
        .clone();
    assert_eq!(thought["type"], "thinking");
    let full = json!({
        "model": "claude-opus-4-6", "max_tokens": 2048, "stream": false,
        "system": [{"type": "text", "text": "Be brief."}],
        "temperature": 1, "top_p": 0.96, "top_k": 40, "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"}, "tools": weather_tools(),
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "service_tier": "auto",
        "messages": [user(json!([
            {"type": "text", "text": "Describe"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}, "title": "Notes"}])),
            assistant(json!([thought, {"type": "text", "text": "Sure"}])),
            user(json!("go on")),
        ],
    });
    let answer = send(&app, full).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn the_in_process_mock_speaks_anthropic_when_told_to() {
    use tollgate_providers::{Protocol, Upstream};
    let upstream =
        Upstream::in_process(router(MockOptions::default()).0).with_protocol(Protocol::Anthropic);
    let body = br#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = upstream
        .forward(
            axum::http::Method::POST,
            "/v1/messages",
            &axum::http::HeaderMap::new(),
            axum::body::Bytes::from_static(body),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["usage"]["output_tokens"], 8);
}

#[tokio::test]
async fn thinking_comes_first_with_a_signature_the_mock_checks() {
    let app = app();
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": weather_tools(), "messages": [turn("user", json!("What is the weather in Oslo?"))]});
    let answer = send(&app, body.clone()).await.json();
    let content = answer["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], "thinking");
    let thinking = content[0]["thinking"].as_str().unwrap();
    assert_eq!(thinking.split(' ').count(), 12);
    assert!(content[0]["signature"].as_str().unwrap().len() > 20);
    assert_eq!(content[1]["type"], "tool_use");
    // Thinking is output: 12 words plus the tool call.
    assert!(answer["usage"]["output_tokens"].as_u64().unwrap() > 12);

    // Continuing the tool loop needs the signed thinking first...
    let tool_use = content[1].clone();
    let result = json!({"role": "user", "content": [{"type": "tool_result",
        "tool_use_id": tool_use["id"], "content": "4 C"}]});
    let mut without = body.clone();
    without["messages"] = json!([
        turn("user", json!("What is the weather in Oslo?")),
        turn("assistant", json!([tool_use.clone()])),
        result.clone()
    ]);
    let (status, _, message) = refused(&app, &[KEY, VERSION], without.to_string()).await;
    assert_eq!(status, 400);
    assert!(
        message.contains("must start with a thinking block"),
        "{message}"
    );
    // ...untampered...
    let mut forged = content[0].clone();
    forged["thinking"] = json!("something else");
    let mut tampered = body.clone();
    tampered["messages"] = json!([
        turn("user", json!("What is the weather in Oslo?")),
        turn("assistant", json!([forged, tool_use.clone()])),
        result.clone()
    ]);
    let (status, _, message) = refused(&app, &[KEY, VERSION], tampered.to_string()).await;
    assert_eq!(status, 400);
    assert!(message.contains("Invalid `signature`"), "{message}");
    // ...and then it answers.
    let mut with = body.clone();
    with["messages"] = json!([
        turn("user", json!("What is the weather in Oslo?")),
        turn("assistant", json!([content[0].clone(), tool_use])),
        result
    ]);
    let again = send(&app, with).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["content"][1]["type"], "text");

    // Thinking refuses a forced tool and a temperature other than 1.
    for patch in [
        json!({"tool_choice": {"type": "any"}}),
        json!({"temperature": 0.3}),
    ] {
        let mut refused_body = body.clone();
        for (k, v) in patch.as_object().unwrap() {
            refused_body[k] = v.clone();
        }
        let (status, _, _) = refused(&app, &[KEY, VERSION], refused_body.to_string()).await;
        assert_eq!(status, 400, "{patch}");
    }
}

#[tokio::test]
async fn thinking_streams_as_thinking_and_signature_deltas() {
    let app = app();
    let body = json!({"model": "claude-opus-4-7", "max_tokens": 4000, "stream": true,
        "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"},
        "messages": [turn("user", json!("Hi"))]});
    let events = send(&app, body).await.events();
    let kinds: Vec<String> = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, d)| d["delta"]["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "thinking_delta").count(), 12);
    assert_eq!(kinds.iter().filter(|k| *k == "signature_delta").count(), 1);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(name, _)| name == "content_block_start")
        .map(|(_, d)| &d["content_block"])
        .collect();
    assert_eq!(starts[0]["type"], "thinking");
    assert_eq!(starts[1]["type"], "text");
}

#[tokio::test]
async fn structured_output_answers_json_that_fits_the_schema() {
    let app = app();
    let schema = json!({"type": "object", "properties": {
        "city": {"type": "string"}, "temp_c": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"type": "string", "enum": ["rain", "sun"]}},
        "required": ["city", "temp_c", "tags", "kind"], "additionalProperties": false});
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 200,
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
        "messages": [turn("user", json!("Weather report for Paris"))]});
    let answer = send(&app, body).await.json();
    let text = answer["content"][0]["text"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        parsed,
        json!({"city": "Paris", "temp_c": 1, "tags": [], "kind": "rain"})
    );
    assert_eq!(answer["stop_reason"], "end_turn");
    let bad = json!({"model": "claude-sonnet-4-5", "max_tokens": 200,
        "output_config": {"format": {"type": "json_object"}}, "messages": [turn("user", json!("x"))]});
    let (status, _, _) = refused(&app, &[KEY, VERSION], bad.to_string()).await;
    assert_eq!(status, 400);
}

fn turn(role: &str, content: Value) -> Value {
    json!({"role": role, "content": content})
}
