//! The built-in mock speaks OpenAI's wire format: JSON and SSE with usage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use axum::body::Body;
use http::Request;
use tollgate_mock::{MockOptions, router};
use tower::ServiceExt;

async fn call(body: &str, path: &str) -> (u16, String, String) {
    let (app, recorder) = router(MockOptions::default());
    let response = app
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(recorder.count(), 1);
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn chat_is_deterministic_with_realistic_usage() {
    let body =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there, mock!"}]}"#;
    let (status, content_type, first) = call(body, "/v1/chat/completions").await;
    let (_, _, second) = call(body, "/v1/chat/completions").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"));
    let a: serde_json::Value = serde_json::from_str(&first).unwrap();
    let b: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    assert_eq!(a["object"], "chat.completion");
    // 18 chars → 5 tokens, + 3 per message + 3 for the reply.
    assert_eq!(a["usage"]["prompt_tokens"], 11);
    assert_eq!(a["usage"]["completion_tokens"], 24);
    assert_eq!(a["usage"]["total_tokens"], 35);
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn streaming_sends_chunks_a_usage_chunk_and_done() {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":5}"#;
    let (status, content_type, text) = call(body, "/v1/chat/completions").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/event-stream"));
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content.split(' ').count(), 5);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn embeddings_float_and_base64_and_errors() {
    let (status, _, text) = call(
        r#"{"model":"text-embedding-3-small","input":["a","bb"],"dimensions":8}"#,
        "/v1/embeddings",
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let vector: Vec<f64> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(vector.len(), 8);
    let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);

    let (_, _, text) = call(
        r#"{"model":"m","input":"a","encoding_format":"base64","dimensions":4}"#,
        "/v1/embeddings",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["data"][0]["embedding"].is_string());

    let (status, _, text) = call(r#"{"input":"a"}"#, "/v1/embeddings").await;
    assert_eq!(status, 400);
    assert!(text.contains("invalid_request_error"));
    let (status, _, _) = call("not json", "/v1/chat/completions").await;
    assert_eq!(status, 400);
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `data:` payloads of an SSE body, without `[DONE]`.
fn chunks(text: &str) -> Vec<serde_json::Value> {
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    text.split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(json)
        .collect()
}

const WEATHER_TOOLS: &str = r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["city","unit"],"additionalProperties":false},"strict":true}},{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"zone":{"type":"string"}}}}}]"#;

#[tokio::test]
async fn tools_are_called_when_forced_or_triggered() {
    let ask = |prompt: &str, extra: &str| {
        format!(
            r#"{{"model":"gpt-4o-mini","tools":{WEATHER_TOOLS},"messages":[{{"role":"user","content":"{prompt}"}}]{extra}}}"#
        )
    };
    // Triggered: the user asks about the weather.
    let (status, _, text) = call(
        &ask("What's the weather in Paris?", ""),
        "/v1/chat/completions",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let a = json(&text);
    let choice = &a["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call0 = &choice["message"]["tool_calls"][0];
    assert_eq!(call0["type"], "function");
    assert!(call0["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call0["function"]["name"], "get_weather");
    let args = json(call0["function"]["arguments"].as_str().unwrap());
    assert_eq!(
        args,
        serde_json::json!({"city": "Paris", "unit": "celsius"})
    );
    // Not triggered: text. Forced (required / named): a call.
    let (_, _, text) = call(&ask("Say hi", ""), "/v1/chat/completions").await;
    assert_eq!(json(&text)["choices"][0]["finish_reason"], "stop");
    let (_, _, text) = call(
        &ask("Say hi", r#","tool_choice":"required""#),
        "/v1/chat/completions",
    )
    .await;
    assert_eq!(
        json(&text)["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let named = r#","tool_choice":{"type":"function","function":{"name":"get_time"}}"#;
    let (_, _, text) = call(&ask("Weather?", named), "/v1/chat/completions").await;
    assert_eq!(
        json(&text)["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    let (_, _, text) = call(
        &ask("Weather?", r#","tool_choice":"none""#),
        "/v1/chat/completions",
    )
    .await;
    assert_eq!(json(&text)["choices"][0]["finish_reason"], "stop");
    let bad = r#","tool_choice":{"type":"function","function":{"name":"nope"}}"#;
    let (status, _, _) = call(&ask("x", bad), "/v1/chat/completions").await;
    assert_eq!(status, 400);

    // A tool result is answered with text.
    let answered = format!(
        r#"{{"model":"gpt-4o-mini","tools":{WEATHER_TOOLS},"messages":[{{"role":"user","content":"Weather in Paris?"}},{{"role":"assistant","content":null,"tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"call_1","content":"sunny"}}]}}"#
    );
    let (_, _, text) = call(&answered, "/v1/chat/completions").await;
    assert_eq!(json(&text)["choices"][0]["finish_reason"], "stop");

    // Streamed: id and name first, then argument fragments that add up.
    let (_, _, text) = call(
        &ask("Weather in Paris?", r#","stream":true"#),
        "/v1/chat/completions",
    )
    .await;
    let chunks = chunks(&text);
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["function"]["name"], "get_weather");
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(json(&arguments)["city"], "Paris");
    assert!(chunks.len() > 3);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn n_choices_and_logprobs() {
    let body = r#"{"model":"gpt-4o-mini","n":3,"logprobs":true,"top_logprobs":2,"max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}"#;
    let (status, _, text) = call(body, "/v1/chat/completions").await;
    assert_eq!(status, 200, "{text}");
    let a = json(&text);
    let choices = a["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    assert_eq!(a["usage"]["completion_tokens"], 15);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let content = c["logprobs"]["content"].as_array().unwrap();
        assert_eq!(content.len(), 5);
        assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
        assert!(content[0]["logprob"].as_f64().unwrap() <= 0.0);
    }
    assert_ne!(
        choices[0]["message"]["content"],
        choices[1]["message"]["content"]
    );
    let streamed = r#"{"model":"gpt-4o-mini","n":2,"logprobs":true,"stream":true,"max_tokens":3,"messages":[{"role":"user","content":"Hi"}]}"#;
    let (_, _, text) = call(streamed, "/v1/chat/completions").await;
    let chunks = chunks(&text);
    let indexes: std::collections::BTreeSet<u64> = chunks
        .iter()
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes.into_iter().collect::<Vec<_>>(), [0, 1]);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["logprobs"]["content"][0]["token"].is_string())
    );
    // OpenAI's own rules.
    for bad in [
        r#"{"model":"m","n":0,"messages":[{"role":"user","content":"Hi"}]}"#,
        r#"{"model":"m","top_logprobs":2,"messages":[{"role":"user","content":"Hi"}]}"#,
    ] {
        assert_eq!(call(bad, "/v1/chat/completions").await.0, 400, "{bad}");
    }
}

#[tokio::test]
async fn response_formats_answer_valid_json() {
    let schema = r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"tags":{"type":"array","items":{"type":"string"}}},"required":["name","age","tags"],"additionalProperties":false}"#;
    let body = format!(
        r#"{{"model":"gpt-4o-mini","response_format":{{"type":"json_schema","json_schema":{{"name":"person","strict":true,"schema":{schema}}}}},"messages":[{{"role":"user","content":"Who?"}}]}}"#
    );
    let (status, _, text) = call(&body, "/v1/chat/completions").await;
    assert_eq!(status, 200, "{text}");
    let content = json(&text)["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        json(&content),
        serde_json::json!({"name": "mock", "age": 1, "tags": []})
    );
    // JSON mode: an object, and only when the messages mention JSON.
    let object = r#"{"model":"gpt-4o-mini","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"Answer in JSON"}]}"#;
    let (_, _, text) = call(object, "/v1/chat/completions").await;
    let content = json(&text)["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(json(&content).is_object());
    let unmentioned = r#"{"model":"gpt-4o-mini","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"Answer"}]}"#;
    assert_eq!(call(unmentioned, "/v1/chat/completions").await.0, 400);
}
