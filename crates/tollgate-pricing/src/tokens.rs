//! Token counting with OpenAI's real BPE encodings, and a conservative
//! estimate for Anthropic's Claude models (whose tokenizers are not public).

use std::hash::BuildHasher;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, o-series.
    O200k,
    /// GPT-4, GPT-3.5, text-embedding-3.
    Cl100k,
    /// Claude 3 through Claude Opus 4.6 / Sonnet 4.6 / Haiku 4.5: an
    /// estimate, see [`claude_estimate`].
    #[serde(rename = "claude_estimate")]
    ClaudeEstimate,
    /// The tokenizer introduced with Claude Opus 4.7 (Anthropic: 1.0–1.35×
    /// the previous tokenizer's counts): an estimate, see
    /// [`claude47_estimate`].
    #[serde(rename = "claude47_estimate")]
    Claude47Estimate,
}

impl Encoding {
    /// Tokens in `text`. Long texts are remembered: a paid request is quoted
    /// twice (challenge, then credential), and conversations resend their
    /// history every turn.
    pub fn count(self, text: &str) -> u64 {
        if text.len() < CACHE_MIN_BYTES {
            return self.count_uncached(text);
        }
        let key = (self, CACHE.hasher.hash_one(text));
        if let Some(count) = CACHE.lookup(&key) {
            return count;
        }
        let count = self.count_uncached(text);
        CACHE.store(key, count);
        count
    }

    fn count_uncached(self, text: &str) -> u64 {
        match self {
            Self::O200k => bpe_openai::o200k_base().count(text) as u64,
            Self::Cl100k => bpe_openai::cl100k_base().count(text) as u64,
            Self::ClaudeEstimate => claude_estimate(text),
            Self::Claude47Estimate => claude47_estimate(text),
        }
    }

    /// An Anthropic (Claude) model's encoding: counts are estimates.
    pub fn is_claude(self) -> bool {
        matches!(self, Self::ClaudeEstimate | Self::Claude47Estimate)
    }
}

/// Claude 3 – 4.6 tokens in `text`, estimated as
/// `max(⌈o200k × 5/4⌉, ⌈UTF-8 bytes / 3⌉)`.
///
/// Anthropic does not publish Claude's tokenizer (only a paid counting
/// endpoint), so a quote cannot count exactly. The estimate errs high on
/// purpose: an under-count is a loss (the upstream bills real tokens, the
/// payer authorized fewer and is never charged above the quote), while an
/// over-count only raises the amount held — the charge is settled from the
/// usage the upstream reports. Two floors, the larger wins:
/// - o200k (200k vocabulary) needs no more tokens than Claude's smaller
///   vocabulary on English and code; 25 % headroom covers what it merges
///   better than Claude does;
/// - one token per 3 bytes: Claude averages about 3.5–4 characters a token
///   on English prose, so this floor alone is above the real count there,
///   and it keeps scripts and symbol-heavy text (where o200k is far more
///   efficient than Claude) from being under-counted.
pub fn claude_estimate(text: &str) -> u64 {
    let bpe = bpe_openai::o200k_base().count(text) as u64;
    (bpe * 5).div_ceil(4).max((text.len() as u64).div_ceil(3))
}

/// Tokens for the tokenizer of Claude Opus 4.7 and later: the
/// [`claude_estimate`] scaled by 1.35, the top of Anthropic's stated range
/// for the new tokenizer (`max(⌈o200k × 27/16⌉, ⌈bytes × 9/20⌉)`).
pub fn claude47_estimate(text: &str) -> u64 {
    let bpe = bpe_openai::o200k_base().count(text) as u64;
    (bpe * 27)
        .div_ceil(16)
        .max((text.len() as u64 * 9).div_ceil(20))
}

/// Texts shorter than this are counted every time (it is cheaper).
const CACHE_MIN_BYTES: usize = 256;
/// Entries before the cache starts over.
const CACHE_CAPACITY: usize = 16_384;

/// Token counts by (encoding, keyed SipHash of the text). The hash key is
/// random per process, so collisions cannot be provoked by crafted input.
struct CountCache {
    hasher: std::collections::hash_map::RandomState,
    counts: std::sync::Mutex<std::collections::HashMap<(Encoding, u64), u64>>,
}

impl CountCache {
    fn lookup(&self, key: &(Encoding, u64)) -> Option<u64> {
        self.counts.lock().ok()?.get(key).copied()
    }

    fn store(&self, key: (Encoding, u64), count: u64) {
        if let Ok(mut counts) = self.counts.lock() {
            if counts.len() >= CACHE_CAPACITY {
                counts.clear();
            }
            counts.insert(key, count);
        }
    }
}

static CACHE: std::sync::LazyLock<CountCache> = std::sync::LazyLock::new(|| CountCache {
    hasher: std::collections::hash_map::RandomState::new(),
    counts: std::sync::Mutex::new(std::collections::HashMap::new()),
});

/// Loads both encodings (a few hundred milliseconds, about 100 MB resident)
/// ahead of use. The gateway does not: each encoding loads on the first
/// request that counts with it; benches call this to keep the load out of
/// their figures.
pub fn warm_up() {
    Encoding::O200k.count("warm");
    Encoding::Cl100k.count("warm");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_openai_tokenizers() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(Encoding::Cl100k.count("hello world"), 2);
        assert_eq!(Encoding::O200k.count("hello world"), 2);
        assert_eq!(Encoding::Cl100k.count("tiktoken is great!"), 6);
        assert_eq!(Encoding::O200k.count(""), 0);
    }

    #[test]
    fn claude_estimates_stay_above_the_o200k_count() {
        // "hello world": 2 o200k tokens, 11 bytes → max(3, 4) and max(4, 5).
        assert_eq!(Encoding::ClaudeEstimate.count("hello world"), 4);
        assert_eq!(Encoding::Claude47Estimate.count("hello world"), 5);
        assert_eq!(Encoding::ClaudeEstimate.count(""), 0);
        // Multi-byte scripts: the byte floor (9 bytes → 3).
        assert!(Encoding::ClaudeEstimate.count("日本語") >= 3);
        let prose = "The gateway quotes every request before it is paid. ".repeat(20);
        let o200k = Encoding::O200k.count(&prose);
        let claude = Encoding::ClaudeEstimate.count(&prose);
        let claude47 = Encoding::Claude47Estimate.count(&prose);
        assert!(
            claude >= o200k * 5 / 4 && claude47 > claude,
            "{o200k} {claude} {claude47}"
        );
        assert!(Encoding::ClaudeEstimate.is_claude() && !Encoding::O200k.is_claude());
    }

    #[test]
    fn cached_counts_equal_fresh_counts() {
        let long = "tiktoken is great! ".repeat(40);
        let fresh = Encoding::Cl100k.count_uncached(&long);
        assert_eq!(Encoding::Cl100k.count(&long), fresh);
        assert_eq!(Encoding::Cl100k.count(&long), fresh);
        assert_ne!(Encoding::O200k.count(&long), 0);
    }
}
