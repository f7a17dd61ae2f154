//! OpenAI routes priced per request from the price table: worst-case quotes
//! in the challenge, usage metered from the upstream's answer, bad requests
//! refused before any challenge.

mod common;

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
    (response, challenge.id)
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
