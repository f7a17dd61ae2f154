//! Quotes are pure functions of the request and the table: fixed requests
//! give fixed integers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use serde_json::json;
use tollgate_pricing::{PriceTable, quote};

fn table() -> PriceTable {
    PriceTable::builtin()
}

fn table_with(policy: &str) -> PriceTable {
    let text = tollgate_pricing::BUILTIN_TABLE.replace(
        "markup_bps = 0\n# No request is sold for less than this.\nminimum_charge = 100",
        policy,
    );
    PriceTable::from_toml(&text).unwrap()
}

#[test]
fn chat_quote_is_input_tokens_plus_the_output_cap() {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 100});
    let q = quote::chat(&table(), &body).unwrap();
    // 3 priming + 3 framing + 1 ("user") + 2 ("hello world") = 9 input tokens.
    assert_eq!(q.input_units, 9);
    assert_eq!(q.output_units, 100);
    // ceil(9 × 2.50 USD/M) + 100 × 10 USD/M = 23 + 1000 base units.
    assert_eq!(q.amount, 1023);
    assert_eq!(q.model, "gpt-4o");
    assert!(
        q.description.contains("up to 100 output tokens"),
        "{}",
        q.description
    );

    // An alias prices as its model; max_completion_tokens wins over max_tokens.
    let body = json!({"model": "gpt-4o-2024-08-06", "messages": [{"role": "user", "content": "hello world"}],
                      "max_tokens": 5, "max_completion_tokens": 100});
    assert_eq!(quote::chat(&table(), &body).unwrap().amount, 1023);
}

#[test]
fn chat_without_a_cap_uses_the_model_limit_and_n_multiplies_output() {
    let body =
        json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hello world"}]});
    let q = quote::chat(&table(), &body).unwrap();
    assert_eq!(q.output_units, 4096);
    // ceil(9 × 0.5/M) = 5, 4096 × 1.5/M = 6144.
    assert_eq!(q.amount, 5 + 6144);

    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world"}],
                      "max_completion_tokens": 50, "n": 2});
    let q = quote::chat(&table_with("markup_bps = 0\nminimum_charge = 0"), &body).unwrap();
    // ceil(9 × 0.15/M) = 2, ceil(100 × 0.60/M) = 60.
    assert_eq!(q.amount, 62);
    // The default table's floor applies.
    assert_eq!(quote::chat(&table(), &body).unwrap().amount, 100);
}

#[test]
fn markup_rounds_up() {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 100});
    let q = quote::chat(&table_with("markup_bps = 1000\nminimum_charge = 0"), &body).unwrap();
    assert_eq!(q.amount, 1126); // ceil(1023 × 1.1)
}

#[test]
fn images_and_tools_add_input_tokens() {
    let text_only = json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]});
    let base = quote::chat(&table(), &text_only).unwrap().input_units;
    let low = json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hello world"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]}]});
    assert_eq!(quote::chat(&table(), &low).unwrap().input_units, base + 85);
    let high = json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hello world"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]});
    assert_eq!(
        quote::chat(&table(), &high).unwrap().input_units,
        base + 85 + 8 * 170
    );
    let tools = json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hello world"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]});
    assert!(quote::chat(&table(), &tools).unwrap().input_units > base);
}

#[test]
fn bad_chat_requests_name_the_parameter() {
    let cases = [
        (json!([1, 2]), None, "invalid-body"),
        (json!({"messages": []}), Some("model"), "missing-parameter"),
        (
            json!({"model": 4, "messages": []}),
            Some("model"),
            "invalid-type",
        ),
        (
            json!({"model": "gpt-5-ultra", "messages": [{"role": "user", "content": "x"}]}),
            Some("model"),
            "unknown-model",
        ),
        (
            json!({"model": "gpt-4o"}),
            Some("messages"),
            "missing-parameter",
        ),
        (
            json!({"model": "gpt-4o", "messages": "hi"}),
            Some("messages"),
            "invalid-type",
        ),
        (
            json!({"model": "gpt-4o", "messages": []}),
            Some("messages"),
            "invalid-value",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"content": "x"}]}),
            Some("messages"),
            "invalid-type",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}),
            Some("messages"),
            "invalid-type",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 9}),
            Some("n"),
            "invalid-value",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": "2"}),
            Some("n"),
            "invalid-type",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1_000_000}),
            Some("max_tokens"),
            "invalid-value",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            Some("max_tokens"),
            "invalid-type",
        ),
        (
            json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            Some("messages"),
            "unsupported-input",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            Some("messages"),
            "unsupported-input",
        ),
    ];
    for (body, param, code) in cases {
        let error = quote::chat(&table(), &body).unwrap_err();
        assert_eq!((error.param, error.code), (param, code), "{body}: {error}");
    }
    // A prompt that leaves no room for the output cap.
    let long = "word ".repeat(9_000);
    let body = json!({"model": "gpt-4", "messages": [{"role": "user", "content": long}], "max_tokens": 100});
    assert_eq!(
        quote::chat(&table(), &body).unwrap_err().code,
        "context-length-exceeded"
    );
}

#[test]
fn embeddings_are_priced_by_input_tokens() {
    let free_floor = table_with("markup_bps = 0\nminimum_charge = 0");
    let one = json!({"model": "text-embedding-3-small", "input": "hello world"});
    assert_eq!(quote::embeddings(&free_floor, &one).unwrap().amount, 1); // ceil(2 × 0.02/M)
    assert_eq!(quote::embeddings(&table(), &one).unwrap().amount, 100);
    let many = json!({"model": "text-embedding-3-large", "input": ["hello world", "tiktoken is great!", [1, 2, 3]]});
    let q = quote::embeddings(&free_floor, &many).unwrap();
    assert_eq!(q.input_units, 2 + 6 + 3);
    assert_eq!(q.amount, 2); // ceil(11 × 0.13/M)
    for (body, code) in [
        (
            json!({"model": "text-embedding-3-small"}),
            "missing-parameter",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": []}),
            "invalid-value",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": [{"a": 1}]}),
            "invalid-type",
        ),
        (json!({"model": "gpt-4o", "input": "x"}), "unknown-model"),
        (
            json!({"model": "text-embedding-3-small", "input": "word ".repeat(9000)}),
            "context-length-exceeded",
        ),
    ] {
        assert_eq!(
            quote::embeddings(&table(), &body).unwrap_err().code,
            code,
            "{body}"
        );
    }
}

#[test]
fn images_are_priced_per_image_by_quality_and_size() {
    let q = |body| quote::images(&table(), &body);
    assert_eq!(
        q(json!({"prompt": "a lake", "n": 3})).unwrap().amount,
        60_000
    ); // dall-e-2 default
    assert_eq!(
        q(json!({"model": "dall-e-3", "prompt": "a lake", "quality": "hd", "size": "1024x1792"}))
            .unwrap()
            .amount,
        120_000
    );
    assert_eq!(
        q(json!({"model": "gpt-image-1", "prompt": "a lake", "quality": "auto", "size": "auto"}))
            .unwrap()
            .amount,
        250_000
    );
    assert_eq!(
        q(json!({"model": "gpt-image-1", "prompt": "a lake", "n": 2, "quality": "low"}))
            .unwrap()
            .amount,
        22_000
    );
    assert_eq!(
        q(json!({"model": "dall-e-3", "prompt": "x", "n": 2}))
            .unwrap_err()
            .param,
        Some("n")
    );
    assert_eq!(
        q(json!({"model": "dall-e-2", "prompt": "x", "size": "999x999"}))
            .unwrap_err()
            .param,
        Some("size")
    );
    assert_eq!(
        q(json!({"model": "dall-e-2"})).unwrap_err().param,
        Some("prompt")
    );
}

#[test]
fn audio_is_priced_by_characters_and_seconds() {
    let free_floor = table_with("markup_bps = 0\nminimum_charge = 0");
    let speech = json!({"model": "tts-1-hd", "input": "Hello, world!", "voice": "alloy"});
    assert_eq!(quote::speech(&free_floor, &speech).unwrap().amount, 390); // 13 × 30/M
    assert_eq!(
        quote::speech(&table(), &json!({"model": "tts-1", "input": "Hi"}))
            .unwrap_err()
            .param,
        Some("voice")
    );
    let q = quote::transcription(&free_floor, "whisper-1", 61.2).unwrap();
    assert_eq!((q.input_units, q.amount), (62, 6_200));
    assert_eq!(
        quote::transcription(&table(), "whisper-1", 0.0)
            .unwrap_err()
            .code,
        "unreadable-audio"
    );
    assert_eq!(
        quote::transcription(&table(), "whisper-9", 3.0)
            .unwrap_err()
            .code,
        "unknown-model"
    );
}

#[test]
fn the_shipped_table_loads_and_rejects_broken_overrides() {
    let t = table();
    assert!(t.chat.len() >= 12 && t.embeddings.len() == 3 && t.images.len() == 3);
    let broken = tollgate_pricing::BUILTIN_TABLE.replace("default_size = \"1024x1024\"\ndefault_quality = \"standard\"\nper_image = { \"standard:256x256\"", "default_size = \"1x1\"\ndefault_quality = \"standard\"\nper_image = { \"standard:256x256\"");
    assert!(PriceTable::from_toml(&broken).is_err());
    assert!(
        PriceTable::from_toml(
            "[pricing]\nmarkup_bps = 0\nminimum_charge = 0\n[chat.x]\nencoding = \"o200k\""
        )
        .is_err()
    );
}
