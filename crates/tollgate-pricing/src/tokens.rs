//! Token counting with OpenAI's real BPE encodings.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, o-series.
    O200k,
    /// GPT-4, GPT-3.5, text-embedding-3.
    Cl100k,
}

impl Encoding {
    pub fn count(self, text: &str) -> u64 {
        let tokenizer = match self {
            Self::O200k => bpe_openai::o200k_base(),
            Self::Cl100k => bpe_openai::cl100k_base(),
        };
        tokenizer.count(text) as u64
    }
}

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
}
