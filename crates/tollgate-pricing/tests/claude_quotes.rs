//! Claude models: chat quotes (OpenAI format, translated by the gateway),
//! native Messages quotes, cache pricing and aliases. Prices are base units
//! per million tokens, so "3.75 USD/M" is 3.75 units a token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use serde_json::{Value, json};
use tollgate_pricing::tokens::Encoding;
use tollgate_pricing::{
    Endpoint, PriceTable, ThinkingMode, Usage, UsageDetail, actual_cost, actual_cost_detail,
    per_million, quote,
};

/// A 200 × 200 PNG header (signature and IHDR), base64.
const PNG_200: &str = "iVBORw0KGgoAAAANSUhEUgAAAMgAAADICAYAAAAAAAAA";

fn table() -> PriceTable {
    PriceTable::builtin()
}

fn no_floor() -> PriceTable {
    let text =
        tollgate_pricing::BUILTIN_TABLE.replace("minimum_charge = 100", "minimum_charge = 0");
    PriceTable::from_toml(&text).unwrap()
}

fn long_system(cache_control: Value) -> Value {
    json!([{"type": "text", "text": "word ".repeat(300), "cache_control": cache_control}])
}

#[test]
fn aliases_resolve_to_dated_ids() {
    let t = table();
    for (alias, id) in [
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet-20250219"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022"),
        ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
        ("claude-opus-4-5", "claude-opus-4-5-20251101"),
        ("claude-opus-4-1", "claude-opus-4-1-20250805"),
        ("claude-opus-4-0", "claude-opus-4-20250514"),
        ("claude-sonnet-4-0", "claude-sonnet-4-20250514"),
        ("claude-opus-4-6", "claude-opus-4-6"),
    ] {
        let (canonical, price) = t.chat_model(alias).unwrap();
        assert_eq!(canonical, id);
        assert!(price.is_anthropic());
        assert!(price.cache_write_input_per_mtok.unwrap() > price.input_per_mtok);
    }
    let (_, sonnet) = t.chat_model("claude-sonnet-4-5").unwrap();
    assert_eq!(
        (
            sonnet.input_per_mtok,
            sonnet.cached_input_per_mtok,
            sonnet.cache_write_input_per_mtok,
            sonnet.cache_write_1h_input_per_mtok,
            sonnet.output_per_mtok
        ),
        (
            3_000_000,
            Some(300_000),
            Some(3_750_000),
            Some(6_000_000),
            15_000_000
        )
    );
    assert_eq!(
        (
            sonnet.context_window,
            sonnet.max_output_tokens,
            sonnet.default_max_tokens
        ),
        (200_000, 64_000, Some(4_096))
    );
    assert!(!t.chat_model("gpt-4o").unwrap().1.is_anthropic());
}

#[test]
fn chat_quote_prices_claude_with_the_estimate() {
    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 100});
    let q = quote::chat(&table(), &body).unwrap();
    // 3 priming + 3 framing + "user" (2) + "hello world" (4, its 11 bytes / 3).
    assert_eq!(q.input_units, 12);
    assert_eq!(q.model, "claude-sonnet-4-5-20250929");
    // 12 × 3 + 100 × 15.
    assert_eq!(q.amount, 36 + 1_500);

    // No cap: the model's default_max_tokens (what the translator sends).
    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hello world"}]});
    let q = quote::chat(&table(), &body).unwrap();
    assert_eq!(q.output_units, 4_096);
    assert_eq!(q.amount, 36 + 4_096 * 15);

    // Tools add their JSON and Anthropic's tool-use system prompt.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hello world"}],
                      "max_tokens": 100, "tools": tools});
    let q = quote::chat(&table(), &body).unwrap();
    assert_eq!(
        q.input_units,
        12 + 600 + Encoding::ClaudeEstimate.count(&tools.to_string())
    );

    // One choice only; images priced by size when inline.
    let n2 = json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}], "n": 2});
    let e = quote::chat(&table(), &n2).unwrap_err();
    assert_eq!((e.param, e.code), (Some("n"), "unsupported-input"));
    let image = |url: &str| {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    let inline = quote::chat(
        &table(),
        &image(&format!("data:image/png;base64,{PNG_200}")),
    )
    .unwrap();
    let remote = quote::chat(&table(), &image("https://example.com/cat.png")).unwrap();
    // 200 × 200 px: 8 × 8 patches of 28 px = 64 tokens; unknown size: 1 600.
    assert_eq!(remote.input_units - inline.input_units, 1_600 - 64);
}

#[test]
fn messages_quote_counts_system_messages_and_max_tokens() {
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 50, "system": "Be brief.",
                      "messages": [{"role": "user", "content": "hello world"}]});
    let q = quote::messages(&table(), &body).unwrap();
    // system 3 + "Be brief." (4); message 3 + "user" (2) + 4; priming 3.
    assert_eq!(q.input_units, 19);
    assert_eq!(q.output_units, 50);
    // 19 × 1 + 50 × 5.
    assert_eq!(q.amount, 269);
    assert_eq!(q.model, "claude-haiku-4-5-20251001");
    // The endpoint dispatches to the same quote.
    let endpoint = tollgate_pricing::Endpoint::parse("messages").unwrap();
    assert_eq!(endpoint, Endpoint::Messages);
    assert_eq!(endpoint.quote(&table(), &body).unwrap(), q);

    // Block content, a tool round trip and images.
    let body = json!({"model": "claude-opus-4-7", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hello world"},
                                     {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}]}]});
    let q = quote::messages(&table(), &body).unwrap();
    // Opus 4.7's vision takes up to 4 784 tokens an image.
    assert!(q.input_units > 4_784, "{}", q.input_units);
    let inline = json!({"model": "claude-opus-4-7", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_200}}]}]});
    // 3 framing + "user" (2 with the Opus 4.7 estimate) + 64 + 3 priming.
    assert_eq!(quote::messages(&table(), &inline).unwrap().input_units, 72);
}

#[test]
fn messages_quote_prices_cached_prefixes_as_writes() {
    let t = no_floor();
    let quote_with = |system: Value, extra: Value| {
        let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": system,
                              "messages": [{"role": "user", "content": "hello world"}]});
        if let Value::Object(extra) = extra {
            body.as_object_mut().unwrap().extend(extra);
        }
        quote::messages(&t, &body).unwrap()
    };
    // system 3 + 500 ("word " × 300: 1 500 bytes / 3); message 9; priming 3.
    let plain = quote_with(long_system(Value::Null), json!({}));
    assert_eq!(plain.input_units, 515);
    assert_eq!(plain.amount, 515 * 3 + 1_500);
    // The 503-token prefix is written to the 5-minute cache: ⌈503 × 3.75⌉.
    let cached = quote_with(long_system(json!({"type": "ephemeral"})), json!({}));
    assert_eq!(cached.amount, 36 + 1_887 + 1_500);
    assert!(
        cached.description.contains("503 as cache writes"),
        "{}",
        cached.description
    );
    // 1-hour writes cost twice the input price.
    let hour = quote_with(
        long_system(json!({"type": "ephemeral", "ttl": "1h"})),
        json!({}),
    );
    assert_eq!(hour.amount, 36 + 503 * 6 + 1_500);
    // A top-level cache_control caches the whole prompt (priming aside).
    let auto = quote_with(
        long_system(Value::Null),
        json!({"cache_control": {"type": "ephemeral"}}),
    );
    assert_eq!(auto.amount, 9 + 1_920 + 1_500);
    let bad = quote::messages(
        &t,
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 1, "system": long_system(json!({"type": "forever"})),
                "messages": [{"role": "user", "content": "x"}]}),
    )
    .unwrap_err();
    assert_eq!((bad.param, bad.code), (Some("system"), "invalid-value"));
}

#[test]
fn bad_messages_requests_name_the_parameter() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            json!({"model": "claude-sonnet-4-5", "messages": user}),
            "max_tokens",
            "missing-parameter",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": user, "max_tokens": 0}),
            "max_tokens",
            "invalid-type",
        ),
        (
            json!({"model": "claude-3-5-haiku-latest", "messages": user, "max_tokens": 10_000}),
            "max_tokens",
            "invalid-value",
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "max_tokens": 10}),
            "model",
            "unknown-model",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": [], "max_tokens": 10}),
            "messages",
            "invalid-value",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "system", "content": "x"}], "max_tokens": 10}),
            "messages",
            "invalid-value",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}]}]}),
            "messages",
            "unsupported-input",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": user, "max_tokens": 10, "system": 5}),
            "system",
            "invalid-type",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": user, "max_tokens": 10, "tools": {}}),
            "tools",
            "invalid-type",
        ),
    ];
    for (body, param, code) in cases {
        let error = quote::messages(&table(), &body).unwrap_err();
        assert_eq!(
            (error.param, error.code),
            (Some(param), code),
            "{body}: {error}"
        );
    }
    let missing = quote::messages(
        &table(),
        &json!({"model": "claude-sonnet-4-5", "messages": user}),
    )
    .unwrap_err();
    assert!(
        missing.message.contains("max_tokens"),
        "{}",
        missing.message
    );
}

#[test]
fn context_windows_bound_claude_prompts() {
    // 600 000 bytes: at least 200 000 estimated tokens, over Haiku's window.
    let long = "word ".repeat(120_000);
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": long}]});
    let error = quote::messages(&table(), &body).unwrap_err();
    assert_eq!(
        (error.param, error.code),
        (Some("messages"), "context-length-exceeded")
    );
    assert_eq!(
        quote::chat(&table(), &body).unwrap_err().code,
        "context-length-exceeded"
    );
    // Sonnet 4.6 has a 1M window at the same prices.
    let body = json!({"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": [{"role": "user", "content": long}]});
    assert!(quote::messages(&table(), &body).unwrap().input_units > 200_000);
}

#[test]
fn actual_cost_prices_cache_reads_and_writes() {
    let t = no_floor();
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": long_system(json!({"type": "ephemeral"})),
                      "messages": [{"role": "user", "content": "hello world"}]});
    let q = quote::messages(&t, &body).unwrap();
    assert_eq!(q.amount, 3_423);
    // First call: Anthropic reports the prefix as written.
    let first = UsageDetail::from_anthropic(
        &json!({"input_tokens": 12, "cache_creation_input_tokens": 480,
        "cache_read_input_tokens": 0, "output_tokens": 20}),
    )
    .unwrap();
    // 12 × 3 + 480 × 3.75 + 20 × 15.
    assert_eq!(
        actual_cost_detail(&t, Endpoint::Messages, &q, Some(first)),
        36 + 1_800 + 300
    );
    // Later call: the prefix is read at a tenth of the input price.
    let later = UsageDetail::from_anthropic(
        &json!({"input_tokens": 12, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 480, "output_tokens": 20}),
    )
    .unwrap();
    assert_eq!(
        actual_cost_detail(&t, Endpoint::Messages, &q, Some(later)),
        36 + 144 + 300
    );
    // OpenAI-shaped usage (no writes) through the old entry point.
    let usage = Usage {
        input_tokens: 492,
        cached_tokens: 480,
        output_tokens: 20,
    };
    assert_eq!(
        actual_cost(&t, Endpoint::Chat, &q, Some(usage)),
        36 + 144 + 300
    );
    // Never above the quote.
    let huge = UsageDetail {
        output_tokens: 1_000_000,
        ..UsageDetail::default()
    };
    assert_eq!(
        actual_cost_detail(&t, Endpoint::Messages, &q, Some(huge)),
        q.amount
    );
}

#[test]
fn table_says_which_claude_models_think_and_have_structured_outputs() {
    let t = PriceTable::builtin();
    let facts = |m: &str| {
        let (_, p) = t.chat_model(m).unwrap();
        (p.thinking, p.structured_outputs)
    };
    assert_eq!(
        facts("claude-opus-4-7"),
        (Some(ThinkingMode::Adaptive), true)
    );
    assert_eq!(
        facts("claude-sonnet-4-6"),
        (Some(ThinkingMode::Adaptive), true)
    );
    assert_eq!(
        facts("claude-sonnet-4-5"),
        (Some(ThinkingMode::Budget), true)
    );
    assert_eq!(
        facts("claude-haiku-4-5"),
        (Some(ThinkingMode::Budget), true)
    );
    assert_eq!(
        facts("claude-3-7-sonnet-latest"),
        (Some(ThinkingMode::Budget), false)
    );
    assert_eq!(facts("claude-3-5-haiku-latest"), (None, false));
    assert_eq!(facts("gpt-4o"), (None, false));
}

#[test]
fn a_translated_chat_is_priced_as_the_messages_request_sent() {
    let t = PriceTable::builtin();
    // What the translation sends for `reasoning_effort: "medium"` without a
    // cap: the default 4096 plus the 8192 budget; thinking is output.
    let sent = json!({"model": "claude-sonnet-4-5", "max_tokens": 12288,
        "thinking": {"type": "enabled", "budget_tokens": 8192},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]});
    let q = quote::chat_via_messages(&t, &sent).unwrap();
    assert_eq!(q.output_units, 12288);
    assert!(
        q.description.contains("chat completion"),
        "{}",
        q.description
    );
    let plain = quote::messages(&t, &sent).unwrap();
    assert_eq!((q.amount, q.input_units), (plain.amount, plain.input_units));
    let (_, price) = t.chat_model("claude-sonnet-4-5").unwrap();
    assert!(q.amount >= t.finalize(per_million(12288, price.output_per_mtok)));
}

#[test]
fn a_json_output_schema_is_counted_as_input() {
    let t = PriceTable::builtin();
    let base = json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Extract the city."}]});
    let mut with_schema = base.clone();
    with_schema["output_config"] = json!({"format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": false}}});
    let a = quote::messages(&t, &base).unwrap();
    let b = quote::messages(&t, &with_schema).unwrap();
    assert!(b.input_units >= a.input_units + quote::CLAUDE_TOOL_PROMPT_TOKENS + 10);
    assert!(b.amount > a.amount);
}

#[test]
fn cache_control_in_a_translated_chat_is_priced_as_cache_writes() {
    let t = PriceTable::builtin();
    let long = "policy ".repeat(400);
    let cached = json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
        "system": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]});
    let mut uncached = cached.clone();
    uncached["system"][0]
        .as_object_mut()
        .unwrap()
        .remove("cache_control");
    let a = quote::chat_via_messages(&t, &uncached).unwrap();
    let b = quote::chat_via_messages(&t, &cached).unwrap();
    assert_eq!(a.input_units, b.input_units);
    assert!(
        b.description.contains("as cache writes"),
        "{}",
        b.description
    );
    // 1-hour writes cost twice the input price.
    assert!(b.amount > a.amount);
}

#[test]
fn count_tokens_counts_what_the_quote_counts() {
    let t = PriceTable::builtin();
    let body = json!({"model": "claude-haiku-4-5", "system": "Be brief.",
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]});
    let (model, tokens) = quote::messages_input_tokens(&t, &body).unwrap();
    assert_eq!(model, "claude-haiku-4-5-20251001");
    let mut priced = body.clone();
    priced["max_tokens"] = json!(10);
    assert_eq!(tokens, quote::messages(&t, &priced).unwrap().input_units);
    assert!(tokens > quote::CLAUDE_TOOL_PROMPT_TOKENS);
    let e =
        quote::messages_input_tokens(&t, &json!({"model": "gpt-4o", "messages": []})).unwrap_err();
    assert_eq!(e.param, Some("model"));
}
