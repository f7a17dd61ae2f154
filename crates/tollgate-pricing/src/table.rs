//! The price table: which models are sold and at what price.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::tokens::Encoding;

/// The table shipped with Tollgate: OpenAI's models, then Anthropic's
/// (`prices/anthropic.toml` only adds `[chat."claude-…"]` entries).
pub const BUILTIN_TABLE: &str = concat!(
    include_str!("../prices/openai.toml"),
    include_str!("../prices/anthropic.toml"),
);

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("price table is not valid TOML: {0}")]
    Syntax(String),
    #[error("price table: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    pricing: Policy,
    #[serde(default)]
    chat: BTreeMap<String, ChatPrice>,
    #[serde(default)]
    embeddings: BTreeMap<String, EmbeddingPrice>,
    #[serde(default)]
    images: BTreeMap<String, ImagePrice>,
    #[serde(default)]
    transcription: BTreeMap<String, TranscriptionPrice>,
    #[serde(default)]
    speech: BTreeMap<String, SpeechPrice>,
}

/// Markup and floor applied to every quote.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub markup_bps: u32,
    pub minimum_charge: u128,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChatPrice {
    pub encoding: Encoding,
    pub input_per_mtok: u128,
    /// Input served from the prompt cache (OpenAI cached input, Anthropic
    /// cache hits).
    #[serde(default)]
    pub cached_input_per_mtok: Option<u128>,
    /// Anthropic prompt-cache writes with the default 5-minute TTL (`None`:
    /// priced as input).
    #[serde(default)]
    pub cache_write_input_per_mtok: Option<u128>,
    /// Anthropic prompt-cache writes with the 1-hour TTL (`None`: priced as
    /// 5-minute writes).
    #[serde(default)]
    pub cache_write_1h_input_per_mtok: Option<u128>,
    pub output_per_mtok: u128,
    pub context_window: u64,
    pub max_output_tokens: u64,
    /// The output cap assumed when a request sets none (`None`: the model's
    /// `max_output_tokens`). Anthropic requires `max_tokens`, so requests
    /// translated to Claude send this value.
    #[serde(default)]
    pub default_max_tokens: Option<u64>,
    /// Image inputs: tokens for the base and per 512-px tile (`None`: the
    /// model takes no images).
    #[serde(default)]
    pub image_base_tokens: Option<u64>,
    #[serde(default)]
    pub image_tile_tokens: Option<u64>,
    /// Claude image inputs: the most tokens one image costs once Anthropic
    /// has scaled it down (priced by size when the size is known).
    #[serde(default)]
    pub image_max_tokens: Option<u64>,
    /// Claude's extended thinking, if the model has it.
    #[serde(default)]
    pub thinking: Option<ThinkingMode>,
    /// Claude's structured outputs (JSON schema answers, strict tools).
    #[serde(default)]
    pub structured_outputs: bool,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// How a Claude model thinks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ThinkingMode {
    /// `thinking.budget_tokens`.
    Budget,
    /// `thinking.type = "adaptive"` with `output_config.effort`.
    Adaptive,
}

impl ChatPrice {
    /// An Anthropic (Claude) model: sold on the Messages route too.
    pub fn is_anthropic(&self) -> bool {
        self.encoding.is_claude()
    }

    /// The output cap for a request that sets none.
    pub fn default_output_tokens(&self) -> u64 {
        self.default_max_tokens.unwrap_or(self.max_output_tokens)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingPrice {
    pub encoding: Encoding,
    pub input_per_mtok: u128,
    pub max_input_tokens: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImagePrice {
    pub max_n: u64,
    pub default_size: String,
    pub default_quality: String,
    /// `"quality:size"` → base units per image.
    pub per_image: BTreeMap<String, u128>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TranscriptionPrice {
    pub per_minute: u128,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpeechPrice {
    pub per_mchar: u128,
    pub max_input_chars: u64,
}

/// A parsed, validated price table with alias lookup.
#[derive(Debug, Clone)]
pub struct PriceTable {
    pub policy: Policy,
    pub chat: BTreeMap<String, ChatPrice>,
    pub embeddings: BTreeMap<String, EmbeddingPrice>,
    pub images: BTreeMap<String, ImagePrice>,
    pub transcription: BTreeMap<String, TranscriptionPrice>,
    pub speech: BTreeMap<String, SpeechPrice>,
    aliases: HashMap<String, String>,
}

impl PriceTable {
    /// The table shipped with Tollgate.
    // The shipped table is compiled in and validated by a unit test, so a
    // failure here is a broken build artefact, not a runtime condition.
    #[allow(clippy::panic)]
    pub fn builtin() -> Self {
        // The shipped table is validated by a unit test; a broken build
        // artefact is a programming error.
        Self::from_toml(BUILTIN_TABLE).unwrap_or_else(|e| panic!("builtin price table: {e}"))
    }

    pub fn from_toml(text: &str) -> Result<Self, TableError> {
        let raw: RawTable = toml::from_str(text).map_err(|e| TableError::Syntax(e.to_string()))?;
        if raw.pricing.markup_bps > 100_000 {
            return Err(TableError::Invalid(
                "pricing.markup_bps above 100000 (1000%)".into(),
            ));
        }
        let mut aliases = HashMap::new();
        for (name, price) in &raw.chat {
            if price.max_output_tokens == 0 || price.max_output_tokens > price.context_window {
                return Err(TableError::Invalid(format!(
                    "chat.{name}: max_output_tokens must be in 1..=context_window"
                )));
            }
            if price
                .default_max_tokens
                .is_some_and(|d| d == 0 || d > price.max_output_tokens)
            {
                return Err(TableError::Invalid(format!(
                    "chat.{name}: default_max_tokens must be in 1..=max_output_tokens"
                )));
            }
            for alias in &price.aliases {
                if aliases.insert(alias.clone(), name.clone()).is_some()
                    || raw.chat.contains_key(alias)
                {
                    return Err(TableError::Invalid(format!(
                        "chat alias {alias:?} is declared twice"
                    )));
                }
            }
        }
        for (name, price) in &raw.images {
            let default = format!("{}:{}", price.default_quality, price.default_size);
            if !price.per_image.contains_key(&default) {
                return Err(TableError::Invalid(format!(
                    "images.{name}: no price for the default {default:?}"
                )));
            }
            if price.max_n == 0 {
                return Err(TableError::Invalid(format!(
                    "images.{name}: max_n must be at least 1"
                )));
            }
        }
        Ok(Self {
            policy: raw.pricing,
            chat: raw.chat,
            embeddings: raw.embeddings,
            images: raw.images,
            transcription: raw.transcription,
            speech: raw.speech,
            aliases,
        })
    }

    /// The chat model called `name` (or one of its aliases).
    pub fn chat_model(&self, name: &str) -> Option<(&str, &ChatPrice)> {
        let canonical = self.aliases.get(name).map_or(name, String::as_str);
        self.chat
            .get_key_value(canonical)
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Applies markup (rounded up) and the minimum charge.
    pub fn finalize(&self, list_price: u128) -> u128 {
        let marked = (list_price * (10_000 + u128::from(self.policy.markup_bps))).div_ceil(10_000);
        marked.max(self.policy.minimum_charge)
    }
}

/// `ceil(units × price_per_million / 10^6)`: the money rule for per-token
/// (and per-character) prices.
pub fn per_million(units: u64, price_per_million: u128) -> u128 {
    (u128::from(units) * price_per_million).div_ceil(1_000_000)
}
