//! Pricing what a quoted call actually used, and recording it.
//!
//! The one rule for what a call costs: the upstream's own usage when the
//! answer arrived whole and reported it; otherwise what was delivered —
//! the prompt as quoted plus the output counted with the model's tokenizer
//! — never the worst case. Never above the quote the payer authorized.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tollgate_ledger::{Ledger, UsageRecord};
use tollgate_pricing::{Endpoint, UsageDetail, actual_cost_detail};

use crate::pricing::QuotedCall;
use crate::usage::DeliveredTokens;

/// Prices usage another way than the table's list prices (plans).
pub type CostFn = Arc<dyn Fn(UsageDetail) -> u128 + Send + Sync>;

/// Metering for one quoted call.
pub struct Meter {
    call: QuotedCall,
    route: String,
    /// A streamed chat whose client did not set `stream_options.include_usage`.
    hide_usage_chunk: bool,
    custom_cost: Option<CostFn>,
}

/// What a call is charged for, and on what evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub usage: UsageDetail,
    /// The upstream reported `usage` (else it was counted here).
    pub reported: bool,
    /// The answer arrived whole (a stream ran to its end).
    pub whole: bool,
    pub cost: u128,
}

impl Metered {
    /// Units for the receipt and the channel: input plus output tokens.
    pub fn units(&self) -> u64 {
        self.usage.input_tokens + self.usage.output_tokens
    }
}

impl Meter {
    pub fn new(call: QuotedCall, route: &str) -> Self {
        let streamed_chat = call.endpoint == Endpoint::Chat && call.is_streamed();
        let client_asked = call
            .request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        Self {
            call,
            route: route.to_owned(),
            hide_usage_chunk: streamed_chat && !client_asked,
            custom_cost: None,
        }
    }

    /// Prices usage with `cost` (capped at the quote) instead of the table.
    pub fn with_cost(mut self, cost: CostFn) -> Self {
        self.custom_cost = Some(cost);
        self
    }

    pub fn call(&self) -> &QuotedCall {
        &self.call
    }

    /// The worst case the payer authorized.
    pub fn quote(&self) -> u128 {
        self.call.quote.amount
    }

    /// Whether the client did not ask for the usage chunk we asked for.
    pub fn hides_usage_chunk(&self) -> bool {
        self.hide_usage_chunk
    }

    /// The body to send upstream: a streamed chat asks for its usage chunk.
    /// The client's bytes are untouched otherwise (the challenge digest is
    /// over the client's body, not this copy).
    pub fn upstream_body(&self, body: Bytes) -> Bytes {
        if !self.hide_usage_chunk {
            return body;
        }
        let mut request = self.call.request.clone();
        request["stream_options"]["include_usage"] = Value::Bool(true);
        serde_json::to_vec(&request)
            .map(Bytes::from)
            .unwrap_or(body)
    }

    /// A tokenizer for what the answer delivers.
    pub fn delivered(&self) -> DeliveredTokens {
        let call = &self.call;
        DeliveredTokens::new(
            call.table
                .chat_model(&call.quote.model)
                .map(|(_, price)| price.encoding),
        )
    }

    /// The prompt as quoted plus `output_tokens` delivered.
    pub fn counted(&self, output_tokens: u64) -> UsageDetail {
        UsageDetail {
            input_tokens: self.call.quote.input_units,
            output_tokens,
            ..UsageDetail::default()
        }
    }

    /// What `usage` costs by the table, never above the quote.
    pub fn cost(&self, usage: UsageDetail) -> u128 {
        if let Some(cost) = &self.custom_cost {
            return cost(usage).min(self.call.quote.amount);
        }
        let QuotedCall {
            endpoint,
            table,
            quote,
            ..
        } = &self.call;
        actual_cost_detail(table, *endpoint, quote, Some(usage))
    }

    /// The rule: reported usage for a whole answer, else what was counted;
    /// an answer that broke off before delivering any output costs nothing.
    pub fn settle(
        &self,
        reported: Option<UsageDetail>,
        whole: bool,
        output_delivered: u64,
    ) -> Metered {
        let (usage, reported) = match reported.filter(|_| whole) {
            Some(usage) => (usage, true),
            None => (self.counted(output_delivered), false),
        };
        let nothing_delivered = !whole && output_delivered == 0;
        Metered {
            usage,
            reported,
            whole,
            cost: if nothing_delivered {
                0
            } else {
                self.cost(usage)
            },
        }
    }

    /// Appends the usage record in the background: it is bookkeeping, the
    /// money is already accounted for.
    pub fn record(&self, challenge_id: &str, metered: Metered, ledger: Arc<dyn Ledger>) {
        let quote = &self.call.quote;
        let record = UsageRecord {
            challenge_id: Some(challenge_id.to_owned()),
            route: self.route.clone(),
            model: quote.model.clone(),
            quoted: quote.amount,
            input_tokens: metered.usage.input_tokens,
            cached_tokens: metered.usage.cached_tokens,
            output_tokens: metered.usage.output_tokens,
            actual_cost: metered.cost,
            usage_reported: metered.reported,
            recorded_at: unix_now(),
        };
        ledger.note_usage(record);
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
