//! OpenAI Chat Completions request → Anthropic Messages request.
//!
//! See the [module docs](super) for the decisions (unknown fields,
//! mid-conversation system messages, temperature, max_tokens, reasoning,
//! structured output, `user`).

mod checks;
mod messages;
mod reasoning;
mod tools;

use serde_json::Value;

use super::TranslateError;
use super::anthropic_types::{MessagesRequest, Metadata, OutputConfig};
use super::openai_types::{ChatRequest, Extra, Stop};

pub use reasoning::{MIN_THINKING_BUDGET, THINKING_BUDGETS, adaptive_effort, thinking_budget};

pub(crate) const UNSUPPORTED_PARAM: &str = "unsupported_parameter";
pub(crate) const UNSUPPORTED_VALUE: &str = "unsupported_value";
pub(crate) const INVALID_VALUE: &str = "invalid_value";
pub(crate) const MISSING: &str = "missing_required_parameter";

/// How a model thinks, if it does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ThinkingSupport {
    /// No extended thinking: `reasoning_effort` is refused.
    #[default]
    None,
    /// `thinking: {type: "enabled", budget_tokens}` (Claude 3.7 … 4.5).
    Budget,
    /// `thinking: {type: "adaptive"}` with `output_config.effort` (Claude
    /// 4.6 and later; Opus 4.7 accepts nothing else).
    Adaptive,
}

/// What the gateway knows about a model, for choices the client left open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelFacts {
    /// `max_tokens` sent when the client sets none (`None`: it must).
    pub default_max_tokens: Option<u32>,
    /// The model's output limit: a default raised to make room for
    /// thinking never goes above it.
    pub max_output_tokens: Option<u32>,
    pub thinking: ThinkingSupport,
    /// `output_config.format` (JSON outputs) and strict tool use.
    pub structured_outputs: bool,
}

/// Where the translation looks models up (the price table, in the gateway).
pub trait ModelCatalog: Sync {
    fn facts(&self, model: &str) -> Option<ModelFacts>;
}

impl<F: Fn(&str) -> Option<ModelFacts> + Sync> ModelCatalog for F {
    fn facts(&self, model: &str) -> Option<ModelFacts> {
        self(model)
    }
}

/// Everything a translation depends on besides the request.
#[derive(Clone, Copy)]
pub struct TranslateOptions<'a> {
    pub models: &'a dyn ModelCatalog,
    /// The gateway secret `user` is hashed with (HMAC-SHA256) before it
    /// becomes `metadata.user_id`; `None`: `user` is not forwarded.
    pub user_id_key: Option<&'a [u8]>,
}

impl std::fmt::Debug for TranslateOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is deliberately absent.
        f.debug_struct("TranslateOptions").finish_non_exhaustive()
    }
}

/// Translates `req` for the models and key in `opts`.
pub fn request(
    req: &ChatRequest,
    opts: &TranslateOptions<'_>,
) -> Result<MessagesRequest, TranslateError> {
    reject_unknown(&req.extra, "")?;
    checks::reject_unsupported(req)?;

    let model = match req.model.as_deref() {
        Some(m) if !m.is_empty() => m,
        _ => return Err(TranslateError::new("model", MISSING, "`model` is required")),
    };
    let messages = match req.messages.as_deref() {
        Some(m) if !m.is_empty() => m,
        Some(_) => {
            return Err(TranslateError::new(
                "messages",
                INVALID_VALUE,
                "`messages` must contain at least one message",
            ));
        }
        None => {
            return Err(TranslateError::new(
                "messages",
                MISSING,
                "`messages` is required",
            ));
        }
    };
    let facts = opts.models.facts(model).unwrap_or_default();

    if let Some(t) = req.temperature
        && !(0.0..=1.0).contains(&t)
    {
        return Err(TranslateError::new(
            "temperature",
            UNSUPPORTED_VALUE,
            format!(
                "temperature {t} is out of range for Anthropic models, which accept 0 to 1 \
                 (OpenAI's 0-2 range is neither clamped nor rescaled)"
            ),
        ));
    }
    if let Some(p) = req.top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(TranslateError::new(
            "top_p",
            INVALID_VALUE,
            format!("top_p {p} must be between 0 and 1"),
        ));
    }

    let stop_sequences = match &req.stop {
        None => None,
        Some(Stop::One(s)) => Some(vec![s.clone()]),
        Some(Stop::Many(v)) if v.is_empty() => None,
        Some(Stop::Many(v)) => Some(v.clone()),
    };

    let metadata = user_id(req, opts.user_id_key)?.map(|user_id| Metadata { user_id });
    check_metadata(req.metadata.as_ref())?;

    if let Some(o) = &req.stream_options {
        reject_unknown(&o.extra, "stream_options")?;
    }

    let (tools, tool_choice) = tools::tools(req, &facts)?;
    let (system, messages) = messages::messages_and_system(messages)?;
    let format = reasoning::output_format(req.response_format.as_ref(), model, &facts)?;
    let cap = client_max_tokens(req)?;
    let plan = reasoning::plan(req, model, &facts, cap, tool_choice.as_ref(), &messages)?;

    let output_config = (plan.effort.is_some() || format.is_some()).then(|| OutputConfig {
        effort: plan.effort.map(str::to_owned),
        format,
    });
    Ok(MessagesRequest {
        model: model.to_owned(),
        messages,
        max_tokens: plan.max_tokens,
        system,
        metadata,
        stop_sequences,
        stream: (req.stream == Some(true)).then_some(true),
        temperature: req.temperature,
        top_p: req.top_p,
        tools,
        tool_choice,
        thinking: plan.thinking,
        output_config,
    })
}

fn unknown_field(path: &str, key: &str) -> TranslateError {
    let param = if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    };
    TranslateError::new(
        param.clone(),
        UNSUPPORTED_PARAM,
        format!(
            "unknown parameter `{param}`: parameters this gateway cannot translate for Anthropic \
             models are rejected, not dropped"
        ),
    )
}

/// Rejects the first non-null field in `extra`.
pub(crate) fn reject_unknown(extra: &Extra, path: &str) -> Result<(), TranslateError> {
    match extra.iter().find(|(_, v)| !v.is_null()) {
        Some((k, _)) => Err(unknown_field(path, k)),
        None => Ok(()),
    }
}

pub(crate) fn unsupported(param: &str, why: &str) -> TranslateError {
    TranslateError::new(
        param,
        UNSUPPORTED_PARAM,
        format!("`{param}` is not supported for Anthropic models: {why}"),
    )
}

/// The output cap the client set (`(param, value)`), if any.
fn client_max_tokens(req: &ChatRequest) -> Result<Option<(&'static str, u32)>, TranslateError> {
    let (param, n) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(a), Some(b)) if a != b => {
            return Err(TranslateError::new(
                "max_tokens",
                INVALID_VALUE,
                "`max_tokens` and `max_completion_tokens` are both set, to different values",
            ));
        }
        (Some(a), _) => ("max_completion_tokens", a),
        (None, Some(b)) => ("max_tokens", b),
        (None, None) => return Ok(None),
    };
    match u32::try_from(n) {
        Ok(n) if n > 0 => Ok(Some((param, n))),
        _ => Err(TranslateError::new(
            param,
            INVALID_VALUE,
            format!("`{param}` must be between 1 and {}", u32::MAX),
        )),
    }
}

/// The default `max_tokens` for `model`, or why there is none.
pub(crate) fn default_max_tokens(model: &str, facts: &ModelFacts) -> Result<u32, TranslateError> {
    facts.default_max_tokens.filter(|n| *n > 0).ok_or_else(|| {
        TranslateError::new(
            "max_tokens",
            MISSING,
            format!(
                "Anthropic models require `max_tokens` and no default is configured for model \
                 `{model}`"
            ),
        )
    })
}

/// OpenAI's `metadata` (tags for stored completions, which never change the
/// answer): accepted when it is an object, never forwarded.
fn check_metadata(metadata: Option<&Value>) -> Result<(), TranslateError> {
    match metadata {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(TranslateError::new(
            "metadata",
            INVALID_VALUE,
            "`metadata` must be an object of string values",
        )),
    }
}

/// `metadata.user_id`: the keyed hash of `user` (or `safety_identifier`),
/// never the value itself — Anthropic forbids e-mail addresses, phone
/// numbers and other identifying data there, and a hash carries none.
fn user_id(req: &ChatRequest, key: Option<&[u8]>) -> Result<Option<String>, TranslateError> {
    let user = match (&req.safety_identifier, &req.user) {
        (Some(s), Some(u)) if s != u => {
            return Err(TranslateError::new(
                "safety_identifier",
                INVALID_VALUE,
                "`user` and `safety_identifier` are both set, to different values; Anthropic has \
                 one metadata.user_id",
            ));
        }
        (Some(s), _) | (None, Some(s)) if !s.is_empty() => s,
        _ => return Ok(None),
    };
    Ok(key.map(|key| hashed_user_id(key, user)))
}

/// `HMAC-SHA256(key, user)`, hex: stable per user and gateway secret, and
/// not reversible without the secret.
pub fn hashed_user_id(key: &[u8], user: &str) -> String {
    use hmac::Mac;
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(user.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rejects a key of `object` not in `allowed` (null values count as absent).
pub(crate) fn reject_unknown_keys(
    object: &serde_json::Map<String, Value>,
    path: &str,
    allowed: &[&str],
) -> Result<(), TranslateError> {
    match object
        .iter()
        .find(|(k, v)| !v.is_null() && !allowed.contains(&k.as_str()))
    {
        Some((k, _)) => Err(unknown_field(path, k)),
        None => Ok(()),
    }
}
