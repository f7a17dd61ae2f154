//! Token counting with OpenAI's real BPE encodings.

use std::hash::BuildHasher;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, o-series.
    O200k,
    /// GPT-4, GPT-3.5, text-embedding-3.
    Cl100k,
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
        let tokenizer = match self {
            Self::O200k => bpe_openai::o200k_base(),
            Self::Cl100k => bpe_openai::cl100k_base(),
        };
        tokenizer.count(text) as u64
    }
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

/// Loads both encodings (a few hundred milliseconds) so the first request
/// does not pay for it.
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
    fn cached_counts_equal_fresh_counts() {
        let long = "tiktoken is great! ".repeat(40);
        let fresh = Encoding::Cl100k.count_uncached(&long);
        assert_eq!(Encoding::Cl100k.count(&long), fresh);
        assert_eq!(Encoding::Cl100k.count(&long), fresh);
        assert_ne!(Encoding::O200k.count(&long), 0);
    }
}
