//! What a call actually cost, from the usage the upstream reported.

use crate::table::{PriceTable, per_million};
use crate::{Endpoint, Quote};

/// Token usage as reported by an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub input_tokens: u64,
    /// The part of `input_tokens` served from the prompt cache.
    pub cached_tokens: u64,
    pub output_tokens: u64,
}

/// The usage priced by the table (markup and minimum applied), never above
/// the quote the payer authorized. `None` usage (the upstream reported
/// none, e.g. images and speech) costs the quote.
pub fn actual_cost(
    table: &PriceTable,
    endpoint: Endpoint,
    quote: &Quote,
    usage: Option<Usage>,
) -> u128 {
    let Some(usage) = usage else {
        return quote.amount;
    };
    let list = match endpoint {
        Endpoint::Chat | Endpoint::Responses => match table.chat_model(&quote.model) {
            Some((_, price)) => {
                let cached = usage.cached_tokens.min(usage.input_tokens);
                per_million(usage.input_tokens - cached, price.input_per_mtok)
                    + per_million(
                        cached,
                        price.cached_input_per_mtok.unwrap_or(price.input_per_mtok),
                    )
                    + per_million(usage.output_tokens, price.output_per_mtok)
            }
            None => return quote.amount,
        },
        Endpoint::Embeddings => match table.embeddings.get(&quote.model) {
            Some(price) => per_million(usage.input_tokens, price.input_per_mtok),
            None => return quote.amount,
        },
        Endpoint::Images | Endpoint::Speech | Endpoint::Transcription => return quote.amount,
    };
    table.finalize(list).min(quote.amount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_usage_is_priced_per_field_and_capped_by_the_quote() {
        let text = crate::BUILTIN_TABLE.replace("minimum_charge = 100", "minimum_charge = 0");
        let table = PriceTable::from_toml(&text).unwrap();
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 100});
        let quote = crate::quote::chat(&table, &body).unwrap();
        assert_eq!(quote.amount, 1023);
        // Prices are base units per million tokens: 2.5 USD/M = 2.5 units a token.
        let usage = Usage {
            input_tokens: 101,
            cached_tokens: 40,
            output_tokens: 24,
        };
        // 61 × 2.5 = 152.5 → 153; 40 × 1.25 = 50; 24 × 10 = 240.
        assert_eq!(
            actual_cost(&table, Endpoint::Chat, &quote, Some(usage)),
            443
        );
        let huge = Usage {
            input_tokens: 1_000_000,
            cached_tokens: 0,
            output_tokens: 0,
        };
        assert_eq!(
            actual_cost(&table, Endpoint::Chat, &quote, Some(huge)),
            1023
        );
        assert_eq!(actual_cost(&table, Endpoint::Chat, &quote, None), 1023);
    }
}
