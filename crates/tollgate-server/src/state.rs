//! What every request shares: the payment gate, the ledger, limits, and the
//! configured routes. The first link of the server's module chain: it
//! imports nothing of the server but configuration types.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tollgate_ledger::Ledger;
use tollgate_payments::PaymentGate;
use tollgate_providers::Upstream;

use crate::pricing::Pricing;

/// Shared by every route.
pub struct Gateway {
    pub gate: PaymentGate,
    pub ledger: Arc<dyn Ledger>,
    pub max_body_bytes: usize,
    pub settle_after_upstream: bool,
    /// How long a session stream waits for a voucher once it asked.
    pub stream_voucher_timeout: Duration,
    /// A session stream charges what it delivered every this many output
    /// tokens (a checkpoint), so a crash loses at most that much.
    pub stream_checkpoint_tokens: u64,
    /// A streamed request's session challenge asks for its prompt plus
    /// this many output tokens priced (capped at its worst case).
    pub stream_challenge_tokens: u64,
    /// The session amount asked by a challenge that buys nothing itself
    /// (`HEAD`, voucher top-ups).
    pub session_floor: u128,
}

/// The API a route's clients speak, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    OpenAiChat,
    AnthropicMessages,
    Other,
}

impl ClientApi {
    pub fn of_path(path: &str) -> Self {
        if path.ends_with("/chat/completions") {
            Self::OpenAiChat
        } else if path.ends_with("/messages") {
            Self::AnthropicMessages
        } else {
            Self::Other
        }
    }
}

/// One configured method + path.
pub struct Route {
    pub scope: String,
    /// The default upstream.
    pub upstream: Upstream,
    /// Model-id prefix → upstream, for models another upstream serves.
    pub model_upstreams: Vec<(String, Upstream)>,
    /// What clients of this route speak (decides translation).
    pub client_api: ClientApi,
    pub pricing: Pricing,
    /// What the Anthropic translation needs (model facts, user-id key).
    pub translation: Arc<crate::translation::Translation>,
}

#[derive(Deserialize)]
struct ModelOnly {
    model: Option<String>,
}

impl Route {
    /// The upstream serving `body`'s model on this route.
    pub fn upstream_for(&self, body: &[u8]) -> &Upstream {
        if self.model_upstreams.is_empty() {
            return &self.upstream;
        }
        let model = serde_json::from_slice::<ModelOnly>(body)
            .ok()
            .and_then(|m| m.model)
            .unwrap_or_default();
        self.model_upstreams
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(&self.upstream, |(_, upstream)| upstream)
    }
}
