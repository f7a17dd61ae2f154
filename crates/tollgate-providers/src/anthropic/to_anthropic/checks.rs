//! Known OpenAI parameters Anthropic cannot honour: accepted only at their
//! neutral value, refused otherwise.

use serde_json::{Map, Value};

use super::unsupported;
use crate::anthropic::TranslateError;
use crate::anthropic::openai_types::ChatRequest;

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

/// Known OpenAI parameters Anthropic cannot honour: only their neutral
/// values pass.
pub(super) fn reject_unsupported(req: &ChatRequest) -> Result<(), TranslateError> {
    type Check = (
        &'static str,
        fn(&ChatRequest) -> Option<&Value>,
        fn(&Value) -> bool,
        &'static str,
    );
    const CHECKS: &[Check] = &[
        (
            "n",
            |r| r.n.as_ref(),
            |v| v.as_u64() == Some(1),
            "Anthropic returns exactly one choice (only n = 1 is accepted)",
        ),
        (
            "logprobs",
            |r| r.logprobs.as_ref(),
            |v| v == &Value::Bool(false),
            "Anthropic does not return log probabilities",
        ),
        (
            "top_logprobs",
            |r| r.top_logprobs.as_ref(),
            is_zero,
            "Anthropic does not return log probabilities",
        ),
        (
            "logit_bias",
            |r| r.logit_bias.as_ref(),
            |v| v.as_object().is_some_and(Map::is_empty),
            "Anthropic has no token biasing",
        ),
        (
            "presence_penalty",
            |r| r.presence_penalty.as_ref(),
            is_zero,
            "Anthropic has no presence penalty (only 0 is accepted)",
        ),
        (
            "frequency_penalty",
            |r| r.frequency_penalty.as_ref(),
            is_zero,
            "Anthropic has no frequency penalty (only 0 is accepted)",
        ),
        (
            "seed",
            |r| r.seed.as_ref(),
            |_| false,
            "Anthropic has no deterministic sampling seed",
        ),
        (
            "modalities",
            |r| r.modalities.as_ref(),
            |v| v.as_array().is_some_and(|a| a.iter().all(|m| m == "text")),
            "Anthropic models answer in text only",
        ),
        (
            "audio",
            |r| r.audio.as_ref(),
            |_| false,
            "Anthropic models do not produce audio",
        ),
        (
            "prediction",
            |r| r.prediction.as_ref(),
            |_| false,
            "Anthropic has no predicted outputs",
        ),
        (
            "verbosity",
            |r| r.verbosity.as_ref(),
            |_| false,
            "Anthropic has no verbosity control",
        ),
        (
            "web_search_options",
            |r| r.web_search_options.as_ref(),
            |_| false,
            "OpenAI's built-in web search is not available",
        ),
        (
            "service_tier",
            |r| r.service_tier.as_ref(),
            |v| v == "auto" || v == "default",
            "only \"auto\" and \"default\" are accepted",
        ),
        (
            "store",
            |r| r.store.as_ref(),
            |v| v == &Value::Bool(false),
            "completions are not stored",
        ),
    ];
    for (name, get, neutral, why) in CHECKS {
        if let Some(v) = get(req)
            && !v.is_null()
            && !neutral(v)
        {
            return Err(unsupported(name, why));
        }
    }
    Ok(())
}
