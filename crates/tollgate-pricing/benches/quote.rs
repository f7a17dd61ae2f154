//! Quote latency for a ~4 000-token chat request (real BPE count, framing,
//! price arithmetic). Run: `cargo bench -p tollgate-pricing --bench quote`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tollgate_pricing::{PriceTable, quote};

/// English-like prose, ~4 000 o200k tokens.
fn prose() -> String {
    let sentence = "The gateway quotes every request before it is paid, counting tokens with the model's own encoding, then asks the payer for the worst case. ";
    sentence.repeat(150)
}

fn bench(c: &mut Criterion) {
    let table = PriceTable::builtin();
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": prose()},
        ],
        "max_tokens": 1024,
    });
    let q = quote::chat(&table, &body).unwrap();
    println!(
        "quoted {} input tokens → {} base units",
        q.input_units, q.amount
    );
    c.bench_function("quote/chat_4000_tokens_cached", |b| {
        b.iter(|| quote::chat(&table, black_box(&body)).unwrap())
    });
    // A fresh text every iteration: the tokenizer's real cost.
    let mut n = 0u64;
    c.bench_function("quote/chat_4000_tokens_cold", |b| {
        b.iter(|| {
            n += 1;
            let mut fresh = body.clone();
            fresh["messages"][1]["content"] = json!(format!("{n} {}", prose()));
            quote::chat(&table, &fresh).unwrap()
        })
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    c.bench_function("quote/chat_4000_tokens_from_bytes", |b| {
        b.iter(|| {
            let parsed: serde_json::Value = serde_json::from_slice(black_box(&bytes)).unwrap();
            quote::chat(&table, &parsed).unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
