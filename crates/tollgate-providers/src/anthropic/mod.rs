//! OpenAI Chat Completions ⇄ Anthropic Messages translation.
//!
//! Existing OpenAI tooling sends `POST /v1/chat/completions` naming a Claude
//! model; the gateway turns the request into an Anthropic Messages request
//! ([`to_anthropic`]), forwards it, and turns the answer back: a JSON
//! response ([`from_anthropic::response`]), an SSE stream
//! ([`stream::StreamTranslator`]) or an error ([`from_anthropic::error`]).
//! Everything here is a pure function over typed structures
//! ([`openai_types`], [`anthropic_types`]); no I/O.
//!
//! # Decisions
//!
//! * **Nothing is silently dropped.** A parameter Anthropic cannot honour is
//!   a [`TranslateError`] (HTTP 400) naming the parameter, unless it carries
//!   its neutral value (`n: 1`, `logprobs: false`, penalties `0`,
//!   `logit_bias: {}`, `response_format: {"type":"text"}`,
//!   `modalities: ["text"]`, `store: false`, `service_tier` `auto`/`default`,
//!   `parallel_tool_calls: true`, `reasoning_effort: "none"`). Rejected:
//!   `n > 1`, `logprobs`, `top_logprobs`, `logit_bias`, non-zero
//!   `presence_penalty` / `frequency_penalty`, `response_format`
//!   `json_object` (and `json_schema` on a model without structured
//!   outputs), `seed`, `audio`, `modalities` other than text, `prediction`,
//!   `reasoning_effort` on a model without extended thinking, `verbosity`,
//!   `web_search_options`, `store: true`, other `service_tier`s,
//!   non-`function` tools, `allowed_tools` tool choice, per-message `name`
//!   (the model would see it on OpenAI; Anthropic has nowhere to put it),
//!   audio and `file_id` parts.
//! * **Mapped parameters** (see [`to_anthropic`]): `strict: true` tools →
//!   Anthropic's strict tool use on models with structured outputs (inputs
//!   validated against the schema); on other models the tool is sent
//!   without it, and only a JSON object input is guaranteed.
//!   `response_format: json_schema` → `output_config.format` (JSON outputs).
//!   `reasoning_effort` → `thinking` (a budget, or adaptive thinking with
//!   `output_config.effort`; the table is in `to_anthropic::reasoning`);
//!   the thinking comes back as `message.reasoning_content` (and
//!   `delta.reasoning_content` in streams) plus the signed
//!   `thinking_blocks`, which a client may send back on the assistant
//!   message to continue a tool loop with thinking. `cache_control` on
//!   content parts passes through. `metadata` is accepted and not
//!   forwarded (OpenAI defines it as never affecting the answer). `user` /
//!   `safety_identifier` become `metadata.user_id` only as
//!   `HMAC-SHA256(gateway secret, user)` in hex, never the value itself.
//! * **Unknown fields are rejected** (400, `unsupported_parameter`, naming
//!   the field, e.g. `messages[2].foo`). A field this module does not know
//!   may change the answer's meaning; failing loudly is safer than a
//!   translation that looks right and is not. A `null` value counts as
//!   absent. The only known fields accepted and ignored are pure transport
//!   or caching hints with no effect on the answer, or redundant:
//!   `prompt_cache_key`, `stream_options.include_obfuscation`,
//!   `image_url.detail` (Claude picks its own resolution), `stream_options`
//!   without `stream`, `name` on a `tool` message (the `tool_call_id`
//!   already says which call it answers), `metadata`, and an assistant
//!   message's `reasoning_content` (an earlier answer's thinking, which
//!   Anthropic cannot take back without its signature and ignores in
//!   earlier turns anyway).
//! * **System and developer messages** that come before the first
//!   user/assistant/tool message become the top-level `system` text blocks,
//!   in order (one block per text part). One that comes **later is rejected**
//!   (400, `param: "messages[i].role"`): Anthropic has no mid-conversation
//!   system turn, and hoisting it would show the model an instruction at a
//!   different point than the client put it — e.g. "from now on answer in
//!   French" would reach back over earlier turns — while wrapping it in a
//!   user turn would change who said it. Both change meaning invisibly; an
//!   error the client can act on does not.
//! * **`temperature` outside 0–1 is rejected** rather than clamped or
//!   rescaled: OpenAI allows 0–2, Anthropic 0–1. Clamping would make 1.5
//!   behave like 1.0 without telling anyone; rescaling (t/2) would change
//!   every request, including the common 0.7. Values in 0–1 pass unchanged.
//! * **`max_tokens`**: `max_completion_tokens`, else `max_tokens` (both with
//!   different values → 400), else the per-model default from the caller's
//!   [`ModelCatalog`] (raised by the thinking budget when `reasoning_effort`
//!   asks for thinking); no default → 400 naming `max_tokens`.
//! * **Thinking in tool loops**: Anthropic requires an assistant turn that
//!   is continued (a prefill, or the tool calls the last message answers) to
//!   start with its signed thinking when thinking is on. When the client did
//!   not send that turn's `thinking_blocks` back, the request is sent
//!   without thinking instead of failing. With thinking, `tool_choice` must
//!   be `auto`/`none`, `temperature` 1 and `top_p` ≥ 0.95 (refused otherwise).
//! * **Turns**: consecutive same-role turns are merged (Anthropic requires
//!   alternation); `tool` (and legacy `function`) messages become
//!   `tool_result` blocks in one user turn right after the assistant's
//!   `tool_use` turn, and a following user message joins that turn after the
//!   results. A tool message must answer a call of the assistant message
//!   just before it (as OpenAI itself requires), else 400. A trailing
//!   assistant message is sent as is, which Anthropic treats as a prefill
//!   the answer continues from.
//! * **Legacy `functions`/`function_call`**: mapped to tools with
//!   `disable_parallel_tool_use` (the legacy answer carries one call), and
//!   the answer is given in the legacy shape (`message.function_call`,
//!   `finish_reason: "function_call"`) — see [`RequestInfo::legacy_functions`].
//! * **Finish reasons**: `end_turn`/`stop_sequence` → `stop`, `max_tokens` and
//!   `model_context_window_exceeded` → `length`, `tool_use` → `tool_calls`,
//!   `refusal` → `content_filter`, `pause_turn` → `length` (the turn is
//!   unfinished and must be continued, which `length` tells a client and
//!   `stop` would hide; it only happens with Anthropic server tools, which
//!   this translation never sends), anything else → `stop`.
//! * **Errors**: see [`from_anthropic::error`]; `overloaded_error` (529) → 503
//!   because OpenAI clients retry 503 and do not know 529; the gateway's own
//!   upstream key failing (401/403/402) → 502, since the payer's
//!   credentials were not involved and the payer cannot fix it.
//! * **Streams**: see [`stream`]. An Anthropic `error` event becomes one
//!   `data: {"error":{"message","type","param":null,"code"}}` payload (the
//!   same body as the HTTP error mapping) and ends the translation; the
//!   caller should then close the stream *without* `data: [DONE]`, so the
//!   client cannot mistake it for a complete answer.

pub mod anthropic_types;
pub mod from_anthropic;
pub mod openai_types;
pub mod stream;
pub mod to_anthropic;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use from_anthropic::ResponseOptions;
pub use stream::StreamTranslator;
pub use to_anthropic::{ModelCatalog, ModelFacts, ThinkingSupport, TranslateOptions};

/// A request the translation refuses, or (codes starting `upstream_`) an
/// upstream answer it cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    /// The offending parameter, as a path: `temperature`,
    /// `messages[3].tool_calls[0].function.arguments`.
    pub param: Option<String>,
    pub message: String,
    /// `unsupported_parameter`, `unsupported_value`, `invalid_value`,
    /// `missing_required_parameter`, `invalid_request_body`, or
    /// `upstream_invalid_response` / `upstream_invalid_event`.
    pub code: &'static str,
}

impl TranslateError {
    pub fn new(param: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            message: message.into(),
            code,
        }
    }

    pub(crate) fn body(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: None,
            message: message.into(),
            code,
        }
    }

    /// Whether the upstream, not the client, is at fault.
    pub fn is_upstream(&self) -> bool {
        self.code.starts_with("upstream_")
    }

    /// 400 for the client's request, 502 for an unreadable upstream answer.
    pub fn status(&self) -> u16 {
        if self.is_upstream() { 502 } else { 400 }
    }

    /// `{"error":{"message","type","param","code"}}`, OpenAI's error shape.
    pub fn to_openai_body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": if self.is_upstream() { "server_error" } else { "invalid_request_error" },
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.param {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TranslateError {}

/// What the caller needs to know about a translated request to handle the
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The model the client asked for, echoed in every answer.
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    pub include_usage: bool,
    /// The client used legacy `functions`: answer with `function_call`.
    pub legacy_functions: bool,
}

impl RequestInfo {
    pub fn from_request(req: &openai_types::ChatRequest) -> Self {
        Self {
            model: req.model.clone().unwrap_or_default(),
            stream: req.stream == Some(true),
            include_usage: req.stream == Some(true)
                && req
                    .stream_options
                    .as_ref()
                    .and_then(|o| o.include_usage)
                    .unwrap_or(false),
            legacy_functions: req.functions.is_some() && req.tools.is_none(),
        }
    }

    /// Options for [`from_anthropic::response_with`].
    pub fn response_options(&self, created: i64) -> ResponseOptions<'_> {
        ResponseOptions {
            requested_model: &self.model,
            created,
            legacy_functions: self.legacy_functions,
        }
    }

    /// A translator for this request's stream.
    pub fn stream_translator(&self, created: i64) -> StreamTranslator {
        StreamTranslator::new(&self.model, self.include_usage, created)
            .with_legacy_functions(self.legacy_functions)
    }
}

/// Parses an OpenAI Chat Completions body and translates it: the Anthropic
/// Messages JSON to send, and what the answer's translation needs.
///
/// This is the one validating entry point: every rule the translation
/// enforces is checked here, so calling it before a payment challenge
/// refuses (400) what would otherwise be refused after payment. It is pure
/// and costs about one parse and one serialization of the body.
pub fn translate_request_body(
    body: &[u8],
    opts: &TranslateOptions<'_>,
) -> Result<(Vec<u8>, RequestInfo), TranslateError> {
    let req: openai_types::ChatRequest = serde_json::from_slice(body).map_err(|e| {
        TranslateError::body(
            "invalid_request_body",
            format!("the request body is not a valid Chat Completions request: {e}"),
        )
    })?;
    let out = to_anthropic::request(&req, opts)?;
    let json = serde_json::to_vec(&out).map_err(|e| {
        TranslateError::body(
            "invalid_request_body",
            format!("the Anthropic request could not be written: {e}"),
        )
    })?;
    Ok((json, RequestInfo::from_request(&req)))
}

/// Default `max_tokens` per model, for requests that set none: the longest
/// matching prefix wins, else `fallback`. A [`ModelCatalog`] that knows
/// nothing else (no thinking, no structured outputs).
///
/// ```
/// # use tollgate_providers::anthropic::{DefaultMaxTokens, ModelCatalog};
/// let d = DefaultMaxTokens::new(Some(4096)).with_prefix("claude-3-haiku", 2048);
/// assert_eq!(d.get("claude-3-haiku-20240307"), Some(2048));
/// assert_eq!(d.get("claude-sonnet-4-5"), Some(4096));
/// assert_eq!(d.facts("claude-sonnet-4-5").unwrap().default_max_tokens, Some(4096));
/// ```
#[derive(Debug, Clone, Default)]
pub struct DefaultMaxTokens {
    prefixes: Vec<(String, u32)>,
    fallback: Option<u32>,
}

impl DefaultMaxTokens {
    pub fn new(fallback: Option<u32>) -> Self {
        Self {
            prefixes: Vec::new(),
            fallback,
        }
    }

    pub fn with_prefix(mut self, prefix: impl Into<String>, max_tokens: u32) -> Self {
        self.prefixes.push((prefix.into(), max_tokens));
        self
    }

    pub fn get(&self, model: &str) -> Option<u32> {
        self.prefixes
            .iter()
            .filter(|(p, _)| model.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, n)| *n)
            .or(self.fallback)
    }
}

impl ModelCatalog for DefaultMaxTokens {
    fn facts(&self, model: &str) -> Option<ModelFacts> {
        Some(ModelFacts {
            default_max_tokens: self.get(model),
            ..ModelFacts::default()
        })
    }
}

/// Anthropic token counts for billing, as the upstream reported them. Input
/// is split three ways: uncached `input_tokens`, tokens written to the cache
/// (`cache_creation_input_tokens`, of which
/// `cache_creation_1h_input_tokens` with the 1-hour TTL, the rest 5-minute)
/// and tokens read from it. `output_tokens` includes thinking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnthropicUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_creation_1h_input_tokens: u64,
}

impl AnthropicUsage {
    /// From a non-streamed Messages response body; `None` if it has no
    /// readable `usage`.
    pub fn from_response_body(body: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Body {
            usage: anthropic_types::Usage,
        }
        serde_json::from_slice::<Body>(body)
            .ok()
            .map(|b| Self::from(&b.usage))
    }

    /// Cache writes with the 5-minute TTL.
    pub fn cache_creation_5m_input_tokens(&self) -> u64 {
        self.cache_creation_input_tokens - self.cache_creation_1h_input_tokens
    }

    /// All input tokens, however they were cached: OpenAI's `prompt_tokens`.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
    }

    /// OpenAI's usage object: `prompt_tokens` = input + cache creation +
    /// cache read, `completion_tokens` = output,
    /// `prompt_tokens_details.cached_tokens` = cache read.
    pub fn to_openai(&self) -> openai_types::Usage {
        let prompt = self.prompt_tokens();
        openai_types::Usage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            total_tokens: prompt + self.output_tokens,
            prompt_tokens_details: Some(openai_types::PromptTokensDetails {
                cached_tokens: self.cache_read_input_tokens,
            }),
        }
    }
}

impl From<&anthropic_types::Usage> for AnthropicUsage {
    fn from(u: &anthropic_types::Usage) -> Self {
        let creation = u.cache_creation_input_tokens.unwrap_or(0);
        Self {
            input_tokens: u.input_tokens.unwrap_or(0),
            output_tokens: u.output_tokens.unwrap_or(0),
            cache_creation_input_tokens: creation,
            cache_read_input_tokens: u.cache_read_input_tokens.unwrap_or(0),
            cache_creation_1h_input_tokens: u
                .cache_creation
                .and_then(|c| c.ephemeral_1h_input_tokens)
                .unwrap_or(0)
                .min(creation),
        }
    }
}
