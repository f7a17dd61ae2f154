//! OpenAI routes priced per request from the price table: worst-case quotes
//! in the challenge, usage metered from the upstream's answer, bad requests
//! refused before any challenge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use common::*;
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::Ledger;

const QUOTED_CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Explain payment channels in one line."}],"max_tokens":64}"#;
const QUOTED_STREAM: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Explain payment channels in one line."}],"max_tokens":64,"stream":true}"#;

fn quoted() -> Options {
    Options {
        quoted: true,
        ..Options::default()
    }
}

/// Pays `body` on `path`, asserting the quoted amount; returns the response
/// and the challenge id.
async fn pay_quoted(
    h: &Harness,
    gw: &Gateway,
    path: &str,
    body: &str,
    expected: u128,
) -> (reqwest::Response, String) {
    let url = format!("{}{path}", gw.url);
    let challenge = challenges(&post(&h.http, &url, body, None).await).remove(0);
    let request = challenge.request.decode_value().unwrap();
    assert_eq!(
        request["amount"],
        expected.to_string(),
        "quoted amount for {path}"
    );
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let before = h.balance(DEV_ACCOUNTS[RECIPIENT].address).await;
    let response = post(&h.http, &url, body, Some(&auth)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("payment-receipt").is_some());
    assert_eq!(
        h.balance(DEV_ACCOUNTS[RECIPIENT].address).await - before,
        expected
    );
    assert_forwarded_exactly(h, path, body);
    (response, challenge.id)
}

/// The upstream saw the route's path, our key, none of the payer's headers,
/// and the client's body (streamed chats: plus the usage request).
fn assert_forwarded_exactly(h: &Harness, path: &str, body: &str) {
    let seen = h
        .upstream
        .requests()
        .pop()
        .expect("the upstream was called");
    assert_eq!(seen.path, path);
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {UPSTREAM_KEY}")
    );
    assert!(
        seen.headers
            .keys()
            .all(|k| !k.as_str().starts_with("payment") && k != "accept-payment")
    );
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    let client: serde_json::Value = serde_json::from_str(body).unwrap();
    let mut expected = client.clone();
    if expected["stream"] == true && expected.pointer("/stream_options/include_usage").is_none() {
        expected["stream_options"] = serde_json::json!({"include_usage": true});
    }
    assert_eq!(sent, expected);
    if sent == client {
        assert_eq!(
            seen.body,
            body.as_bytes(),
            "unchanged bodies are forwarded byte for byte"
        );
    }
}

/// Usage records are written just after the response; poll briefly.
async fn usage(h: &Harness, challenge_id: &str) -> tollgate_ledger::UsageRecord {
    let ledger = h.ledger(&quoted());
    for _ in 0..100 {
        if let Some(record) = ledger.usage_for(challenge_id).await.unwrap().pop() {
            return record;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no usage recorded for the call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_quoted_worst_case_and_metered_from_usage() {
    let h = Harness::start().await;
    let gw = h.gateway(&quoted()).await;
    // 14 input tokens × 2.5 + 64 output tokens × 10 (base units per token).
    let (response, id) = pay_quoted(&h, &gw, "/v1/chat/completions", QUOTED_CHAT, 35 + 640).await;
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["usage"]["completion_tokens"], 24);

    let record = usage(&h, &id).await;
    assert_eq!((record.model.as_str(), record.quoted), ("gpt-4o", 675));
    assert!(record.usage_reported);
    // The mock reports 16 prompt and 24 completion tokens: 40 + 240.
    assert_eq!(
        (
            record.input_tokens,
            record.output_tokens,
            record.actual_cost
        ),
        (16, 24, 280)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chat_passes_chunks_through_and_meters_the_hidden_usage_chunk() {
    let h = Harness::start().await;
    let gw = h.gateway(&quoted()).await;
    let (response, id) = pay_quoted(&h, &gw, "/v1/chat/completions", QUOTED_STREAM, 675).await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(
        !text.contains("\"prompt_tokens\""),
        "the client did not ask for usage: {text}"
    );
    assert!(text.matches("chat.completion.chunk").count() >= 24);

    // We asked the upstream for usage on the client's behalf …
    let sent: serde_json::Value = serde_json::from_slice(&h.upstream.requests()[0].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // … and metered it.
    let record = usage(&h, &id).await;
    assert!(record.usage_reported);
    assert_eq!(
        (
            record.input_tokens,
            record.output_tokens,
            record.actual_cost
        ),
        (16, 24, 280)
    );

    // A client that asks for usage gets the chunk.
    let with_usage = QUOTED_STREAM.replace(
        "\"stream\":true",
        "\"stream\":true,\"stream_options\":{\"include_usage\":true}",
    );
    let (response, _) = pay_quoted(&h, &gw, "/v1/chat/completions", &with_usage, 675).await;
    assert!(response.text().await.unwrap().contains("\"prompt_tokens\""));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_images_are_quoted_from_the_table() {
    let h = Harness::start().await;
    let gw = h.gateway(&quoted()).await;
    // 2 tokens × 0.13 → 1 base unit, raised to the 100 minimum.
    let body = r#"{"model":"text-embedding-3-large","input":"hello world"}"#;
    let (response, id) = pay_quoted(&h, &gw, "/v1/embeddings", body, 100).await;
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "list");
    assert_eq!(usage(&h, &id).await.actual_cost, 100);

    let body = r#"{"model":"dall-e-3","prompt":"a lake at dawn","size":"1792x1024","quality":"hd","response_format":"b64_json"}"#;
    let (response, id) = pay_quoted(&h, &gw, "/v1/images/generations", body, 120_000).await;
    let answer: serde_json::Value = response.json().await.unwrap();
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        answer["data"][0]["b64_json"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let record = usage(&h, &id).await;
    assert_eq!(
        (record.quoted, record.actual_cost, record.usage_reported),
        (120_000, 120_000, false)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpriceable_requests_get_a_clear_400_without_a_challenge() {
    let h = Harness::start().await;
    let gw = h.gateway(&quoted()).await;
    let chat = format!("{}/v1/chat/completions", gw.url);
    let images = format!("{}/v1/images/generations", gw.url);
    let cases = [
        (
            &chat,
            r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#,
            "unknown-model",
            Some("model"),
        ),
        (
            &chat,
            r#"{"model":"gpt-4o"}"#,
            "missing-parameter",
            Some("messages"),
        ),
        (
            &chat,
            r#"{"model":"gpt-4o","messages":"hello"}"#,
            "invalid-type",
            Some("messages"),
        ),
        (
            &chat,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"n":50}"#,
            "invalid-value",
            Some("n"),
        ),
        (
            &chat,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":99999999}"#,
            "invalid-value",
            Some("max_tokens"),
        ),
        (&chat, "this is not json", "invalid-json", None),
        (
            &images,
            r#"{"model":"dall-e-3","prompt":"x","n":4}"#,
            "invalid-value",
            Some("n"),
        ),
    ];
    for (url, body, code, param) in cases {
        let response = post(&h.http, url, body, None).await;
        assert_eq!(response.status(), 400, "{body}");
        assert!(
            response.headers().get("www-authenticate").is_none(),
            "{body}"
        );
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{body}");
        assert_eq!(problem["error"]["type"], "invalid_request_error");
        assert_eq!(
            problem["error"]["param"],
            serde_json::json!(param),
            "{body}"
        );
    }
    assert_eq!(h.upstream.count(), 0);
    gw.stop().await;
}

/// A multipart field: name and bytes.
type Field<'a> = (&'a str, &'a [u8]);

fn multipart(fields: &[Field]) -> (String, Vec<u8>) {
    let boundary = "tollgate-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        let filename = if *name == "file" {
            "; filename=\"clip.wav\"\r\nContent-Type: audio/wav"
        } else {
            ""
        };
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_raw(
    h: &Harness,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    auth: Option<&str>,
) -> reqwest::Response {
    let mut request = h
        .http
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_responses_are_quoted_paid_and_served() {
    let h = Harness::start().await;
    let gw = h.gateway(&quoted()).await;

    // Transcription: 2.5 s of audio → 3 s × 6000 per minute = 300.
    let url = format!("{}/v1/audio/transcriptions", gw.url);
    let wav = tollgate_pricing::audio::silent_wav(2.5);
    let (content_type, body) = multipart(&[("model", b"whisper-1"), ("file", &wav)]);
    let challenge =
        challenges(&post_raw(&h, &url, &content_type, body.clone(), None).await).remove(0);
    assert_eq!(challenge.request.decode_value().unwrap()["amount"], "300");
    assert!(
        challenge
            .description
            .as_deref()
            .unwrap()
            .contains("3 s of audio")
    );
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let response = post_raw(&h, &url, &content_type, body, Some(&auth)).await;
    assert_eq!(response.status(), 200);
    let transcript: serde_json::Value = response.json().await.unwrap();
    assert_eq!(transcript["text"], "Pay per request, settle on chain.");

    // Speech: 22 characters × 15 per character.
    let body = r#"{"model":"tts-1","voice":"alloy","input":"Hello from the gateway"}"#;
    let (response, _) = pay_quoted(&h, &gw, "/v1/audio/speech", body, 330).await;
    assert_eq!(response.headers()["content-type"], "audio/wav");
    assert_eq!(&response.bytes().await.unwrap()[..4], b"RIFF");

    // Responses: 8 input tokens × 2.5 + 10 output tokens × 10.
    let body = r#"{"model":"gpt-4o","input":"Say hi","max_output_tokens":10}"#;
    let (response, id) = pay_quoted(&h, &gw, "/v1/responses", body, 120).await;
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    let record = usage(&h, &id).await;
    assert!(record.usage_reported);
    assert_eq!(record.output_tokens, 10);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_a_clear_400_without_a_challenge() {
    let h = Harness::start().await;
    let gw = h.gateway(&quoted()).await;
    let url = format!("{}/v1/audio/transcriptions", gw.url);
    let wav = tollgate_pricing::audio::silent_wav(1.0);
    let cases: [(Vec<Field>, &str); 3] = [
        (vec![("model", b"whisper-1")], "missing-parameter"),
        (
            vec![("model", b"whisper-1"), ("file", b"definitely not audio")],
            "unreadable-audio",
        ),
        (
            vec![("model", b"whisper-9"), ("file", &wav)],
            "unknown-model",
        ),
    ];
    for (fields, code) in cases {
        let (content_type, body) = multipart(&fields);
        let response = post_raw(&h, &url, &content_type, body, None).await;
        assert_eq!(response.status(), 400, "{code}");
        assert!(response.headers().get("www-authenticate").is_none());
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code);
    }
    let response = post_raw(&h, &url, "application/json", b"{}".to_vec(), None).await;
    assert_eq!(response.status(), 400);
    assert_eq!(h.upstream.count(), 0);
    gw.stop().await;
}
