//! Deterministic text and token estimates.

use sha2::{Digest, Sha256};

const WORDS: &[&str] = &[
    "payment", "channel", "voucher", "gateway", "token", "settle", "agent", "receipt", "escrow",
    "request", "stream", "ledger", "model", "answer", "chain", "block", "signed", "quote", "price",
    "usage", "route", "credit", "balance", "transfer",
];

/// A seed that depends only on `input`.
pub fn seed(input: &[u8]) -> [u8; 32] {
    Sha256::digest(input).into()
}

/// `count` words chosen from the seed; each word is one token.
pub fn words(seed: &[u8; 32], count: usize) -> Vec<&'static str> {
    (0..count)
        .map(|i| WORDS[seed[i % seed.len()].wrapping_add(i as u8) as usize % WORDS.len()])
        .collect()
}

/// Roughly four characters per token, never zero for non-empty text.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}
