//! What a call actually cost, from the usage the upstream reported.

use serde_json::Value;

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

impl Usage {
    /// This usage plus the prompt-cache writes Anthropic reports (5-minute
    /// and 1-hour TTL), which are part of `input_tokens`.
    pub fn with_cache_writes(self, five_minute: u64, one_hour: u64) -> UsageDetail {
        UsageDetail {
            input_tokens: self.input_tokens,
            cached_tokens: self.cached_tokens,
            cache_write_tokens: five_minute,
            cache_write_1h_tokens: one_hour,
            output_tokens: self.output_tokens,
        }
    }
}

/// [`Usage`] with prompt-cache writes, which Anthropic bills above the input
/// price. Every count is a part of `input_tokens`, which holds **all** input
/// tokens, as OpenAI's `prompt_tokens` does.
///
/// Anthropic's own `usage.input_tokens` excludes the cache: fill this from
/// an Anthropic usage object with [`UsageDetail::from_anthropic`] (or
/// `input_tokens = input_tokens + cache_read_input_tokens +
/// cache_creation_input_tokens`, `cached_tokens = cache_read_input_tokens`,
/// `cache_write_tokens = cache_creation_input_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageDetail {
    /// All input tokens: uncached, cache reads and cache writes.
    pub input_tokens: u64,
    /// Cache reads (hits), priced at `cached_input_per_mtok`.
    pub cached_tokens: u64,
    /// Cache writes with the 5-minute TTL, at `cache_write_input_per_mtok`.
    pub cache_write_tokens: u64,
    /// Cache writes with the 1-hour TTL, at `cache_write_1h_input_per_mtok`.
    pub cache_write_1h_tokens: u64,
    pub output_tokens: u64,
}

impl From<Usage> for UsageDetail {
    fn from(usage: Usage) -> Self {
        usage.with_cache_writes(0, 0)
    }
}

impl UsageDetail {
    /// Reads an Anthropic Messages `usage` object (from a response, or the
    /// cumulative one of a streamed `message_delta`; `message_start`'s
    /// `output_tokens` is a placeholder). Cache writes count as 5-minute
    /// writes unless `cache_creation` splits them by TTL.
    pub fn from_anthropic(usage: &Value) -> Option<Self> {
        let field = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
        let uncached = usage.get("input_tokens")?.as_u64()?;
        let reads = field("cache_read_input_tokens");
        let writes = field("cache_creation_input_tokens");
        let one_hour = usage
            .pointer("/cache_creation/ephemeral_1h_input_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(writes);
        Some(Self {
            input_tokens: uncached + reads + writes,
            cached_tokens: reads,
            cache_write_tokens: writes - one_hour,
            cache_write_1h_tokens: one_hour,
            output_tokens: field("output_tokens"),
        })
    }

    /// The usage without the cache-write split (writes count as input).
    pub fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            cached_tokens: self.cached_tokens,
            output_tokens: self.output_tokens,
        }
    }
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
    actual_cost_detail(table, endpoint, quote, usage.map(UsageDetail::from))
}

/// [`actual_cost`] for usage with prompt-cache writes: uncached input, cache
/// reads, cache writes (each TTL) and output are each priced at their own
/// price (a missing price falls back to the input price).
pub fn actual_cost_detail(
    table: &PriceTable,
    endpoint: Endpoint,
    quote: &Quote,
    usage: Option<UsageDetail>,
) -> u128 {
    let Some(usage) = usage else {
        return quote.amount;
    };
    let list = match endpoint {
        Endpoint::Chat | Endpoint::Responses | Endpoint::Messages => {
            match table.chat_model(&quote.model) {
                Some((_, price)) => {
                    let mut left = usage.input_tokens;
                    let mut take = |n: u64| {
                        let n = n.min(left);
                        left -= n;
                        n
                    };
                    let reads = take(usage.cached_tokens);
                    let writes = take(usage.cache_write_tokens);
                    let writes_1h = take(usage.cache_write_1h_tokens);
                    let write_price = price
                        .cache_write_input_per_mtok
                        .unwrap_or(price.input_per_mtok);
                    per_million(left, price.input_per_mtok)
                        + per_million(
                            reads,
                            price.cached_input_per_mtok.unwrap_or(price.input_per_mtok),
                        )
                        + per_million(writes, write_price)
                        + per_million(
                            writes_1h,
                            price.cache_write_1h_input_per_mtok.unwrap_or(write_price),
                        )
                        + per_million(usage.output_tokens, price.output_per_mtok)
                }
                None => return quote.amount,
            }
        }
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

    #[test]
    fn anthropic_usage_prices_reads_and_writes_apart() {
        let text = crate::BUILTIN_TABLE.replace("minimum_charge = 100", "minimum_charge = 0");
        let table = PriceTable::from_toml(&text).unwrap();
        let quote = Quote {
            model: "claude-sonnet-4-5-20250929".into(),
            amount: 1_000_000,
            description: String::new(),
            input_units: 0,
            output_units: 0,
        };
        let usage = UsageDetail::from_anthropic(&json!({
            "input_tokens": 100, "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 2000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500},
            "output_tokens": 50,
        }))
        .unwrap();
        assert_eq!(usage.input_tokens, 3100);
        assert_eq!(
            (usage.cache_write_tokens, usage.cache_write_1h_tokens),
            (1500, 500)
        );
        // 100 × 3 + 1000 × 0.3 + 1500 × 3.75 + 500 × 6 + 50 × 15 (units a token).
        assert_eq!(
            actual_cost_detail(&table, Endpoint::Messages, &quote, Some(usage)),
            300 + 300 + 5625 + 3000 + 750
        );
        // Without the split, writes are priced as input.
        assert_eq!(
            actual_cost(&table, Endpoint::Messages, &quote, Some(usage.usage())),
            2100 * 3 + 300 + 750
        );
    }
}
