//! What the OpenAI → Anthropic translation needs from the gateway: model
//! facts from the price table, the key `user` is hashed with, and the usage
//! it reports in the pricing crate's terms.

use std::sync::Arc;

use tollgate_pricing::{PriceTable, ThinkingMode, UsageDetail};
use tollgate_providers::anthropic::{
    AnthropicUsage, ModelCatalog, ModelFacts, ThinkingSupport, TranslateOptions,
};

/// Shared by every route that may translate.
pub struct Translation {
    table: Arc<PriceTable>,
    user_id_key: Vec<u8>,
}

impl std::fmt::Debug for Translation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translation").finish_non_exhaustive()
    }
}

impl Translation {
    pub fn new(table: Arc<PriceTable>, user_id_key: Vec<u8>) -> Self {
        Self { table, user_id_key }
    }

    pub fn options(&self) -> TranslateOptions<'_> {
        TranslateOptions {
            models: self,
            user_id_key: Some(&self.user_id_key),
        }
    }
}

impl ModelCatalog for Translation {
    fn facts(&self, model: &str) -> Option<ModelFacts> {
        let (_, price) = self.table.chat_model(model)?;
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Some(ModelFacts {
            default_max_tokens: Some(clamp(price.default_output_tokens())),
            max_output_tokens: Some(clamp(price.max_output_tokens)),
            thinking: match price.thinking {
                None => ThinkingSupport::None,
                Some(ThinkingMode::Budget) => ThinkingSupport::Budget,
                Some(ThinkingMode::Adaptive) => ThinkingSupport::Adaptive,
            },
            structured_outputs: price.structured_outputs,
        })
    }
}

/// Anthropic's own counts, priced field by field: uncached input, cache
/// reads, 5-minute and 1-hour cache writes, output (thinking included).
pub fn usage_detail(u: &AnthropicUsage) -> UsageDetail {
    UsageDetail {
        input_tokens: u.prompt_tokens(),
        cached_tokens: u.cache_read_input_tokens,
        cache_write_tokens: u.cache_creation_5m_input_tokens(),
        cache_write_1h_tokens: u.cache_creation_1h_input_tokens,
        output_tokens: u.output_tokens,
    }
}
