//! `reasoning_effort` → extended thinking, and `response_format` →
//! structured output, with the `max_tokens` they imply.
//!
//! # Thinking budgets
//!
//! | `reasoning_effort` | budget models (`thinking.budget_tokens`) | adaptive models (`output_config.effort`) |
//! |--------------------|-----------------------------------------:|------------------------------------------|
//! | `none`             | no thinking                               | no thinking                              |
//! | `minimal`          | 1 024                                     | `low`                                    |
//! | `low`              | 2 048                                     | `low`                                    |
//! | `medium`           | 8 192                                     | `medium`                                 |
//! | `high`             | 16 384                                    | `high`                                   |
//! | `xhigh`            | 32 000                                    | `max`                                    |
//!
//! Thinking tokens are output tokens, and OpenAI counts reasoning inside
//! `max_completion_tokens`, so a client's cap is kept as Anthropic's
//! `max_tokens` and the budget fits below it (`min(budget, cap - 1)`; a cap
//! that leaves less than Anthropic's minimum budget of 1 024 is refused).
//! Without a cap, `max_tokens` is the model's default answer length plus the
//! budget (within the model's output limit), so thinking does not eat the
//! answer. Quotes price the translated request, so they see this
//! `max_tokens`: the worst case counts every thinking token as output.

use serde_json::Value;

use super::{
    INVALID_VALUE, ModelFacts, ThinkingSupport, UNSUPPORTED_VALUE, default_max_tokens,
    reject_unknown_keys, unsupported,
};
use crate::anthropic::TranslateError;
use crate::anthropic::anthropic_types::{
    ContentBlock, Message, OutputFormat, Role, Thinking, ToolChoice,
};
use crate::anthropic::openai_types::ChatRequest;

/// Anthropic's smallest `budget_tokens`.
pub const MIN_THINKING_BUDGET: u32 = 1024;

/// `reasoning_effort` → `budget_tokens` for models with budgeted thinking.
pub const THINKING_BUDGETS: [(&str, u32); 5] = [
    ("minimal", MIN_THINKING_BUDGET),
    ("low", 2048),
    ("medium", 8192),
    ("high", 16_384),
    ("xhigh", 32_000),
];

/// The thinking budget for an effort (`None`: `none`, or unknown).
pub fn thinking_budget(effort: &str) -> Option<u32> {
    THINKING_BUDGETS
        .iter()
        .find(|(name, _)| *name == effort)
        .map(|(_, budget)| *budget)
}

/// `reasoning_effort` → `output_config.effort` for adaptive models.
pub fn adaptive_effort(effort: &str) -> Option<&'static str> {
    Some(match effort {
        "minimal" | "low" => "low",
        "medium" => "medium",
        "high" => "high",
        "xhigh" => "max",
        _ => return None,
    })
}

/// What the request's thinking looks like on the wire.
pub(super) struct Plan {
    pub max_tokens: u32,
    pub thinking: Option<Thinking>,
    pub effort: Option<&'static str>,
}

/// `reasoning_effort` (with the output cap) → `thinking`, `effort` and
/// `max_tokens`; refuses what thinking cannot be combined with.
pub(super) fn plan(
    req: &ChatRequest,
    model: &str,
    facts: &ModelFacts,
    cap: Option<(&'static str, u32)>,
    tool_choice: Option<&ToolChoice>,
    messages: &[Message],
) -> Result<Plan, TranslateError> {
    let plain = |cap: Option<(&str, u32)>| -> Result<Plan, TranslateError> {
        Ok(Plan {
            max_tokens: match cap {
                Some((_, n)) => n,
                None => default_max_tokens(model, facts)?,
            },
            thinking: None,
            effort: None,
        })
    };
    let effort = match req.reasoning_effort.as_ref() {
        None | Some(Value::Null) => return plain(cap),
        Some(Value::String(e)) if e == "none" => return plain(cap),
        Some(Value::String(e)) if thinking_budget(e).is_some() => e.as_str(),
        Some(_) => {
            return Err(TranslateError::new(
                "reasoning_effort",
                INVALID_VALUE,
                "`reasoning_effort` must be one of none, minimal, low, medium, high, xhigh",
            ));
        }
    };
    if facts.thinking == ThinkingSupport::None {
        return Err(unsupported(
            "reasoning_effort",
            &format!("{model} has no extended thinking"),
        ));
    }
    if matches!(
        tool_choice,
        Some(ToolChoice::Any { .. } | ToolChoice::Tool { .. })
    ) {
        return Err(TranslateError::new(
            "tool_choice",
            UNSUPPORTED_VALUE,
            "with `reasoning_effort`, Anthropic models only take tool_choice `auto` or `none` \
             (extended thinking cannot be combined with a forced tool call)",
        ));
    }
    if let Some(t) = req.temperature
        && t != 1.0
    {
        return Err(TranslateError::new(
            "temperature",
            UNSUPPORTED_VALUE,
            "with `reasoning_effort`, Anthropic models take no temperature other than 1",
        ));
    }
    if let Some(p) = req.top_p
        && p < 0.95
    {
        return Err(TranslateError::new(
            "top_p",
            UNSUPPORTED_VALUE,
            "with `reasoning_effort`, Anthropic models take top_p between 0.95 and 1 only",
        ));
    }
    if continues_without_thinking(messages) {
        // Anthropic requires the assistant turn being continued to start with
        // its signed thinking; without `thinking_blocks` from the client the
        // turn goes on without thinking (documented), rather than failing.
        return plain(cap);
    }
    let budget = thinking_budget(effort).unwrap_or(MIN_THINKING_BUDGET);
    let max_tokens = match cap {
        Some((param, n)) => {
            if n <= MIN_THINKING_BUDGET {
                return Err(TranslateError::new(
                    param,
                    INVALID_VALUE,
                    format!(
                        "with `reasoning_effort`, `{param}` must be above {MIN_THINKING_BUDGET}: \
                         it includes the thinking, whose smallest budget on Anthropic models is \
                         {MIN_THINKING_BUDGET} tokens"
                    ),
                ));
            }
            n
        }
        None => {
            let raised = default_max_tokens(model, facts)?.saturating_add(budget);
            facts.max_output_tokens.map_or(raised, |m| raised.min(m))
        }
    };
    Ok(match facts.thinking {
        ThinkingSupport::Adaptive => Plan {
            max_tokens,
            thinking: Some(Thinking::Adaptive),
            effort: adaptive_effort(effort),
        },
        _ => Plan {
            max_tokens,
            thinking: Some(Thinking::Enabled {
                budget_tokens: budget
                    .min(max_tokens.saturating_sub(1))
                    .max(MIN_THINKING_BUDGET),
            }),
            effort: None,
        },
    })
}

/// Whether the request continues an assistant turn (a prefill, or tool
/// results answering its calls) that does not start with a thinking block.
fn continues_without_thinking(messages: &[Message]) -> bool {
    let Some(last) = messages.last() else {
        return false;
    };
    let continued = match last.role {
        Role::Assistant => Some(last),
        Role::User => {
            let answers_tools = last
                .content
                .iter()
                .any(|b| matches!(b, ContentBlock::ToolResult { .. }));
            answers_tools
                .then(|| messages.iter().rev().nth(1))
                .flatten()
                .filter(|m| m.role == Role::Assistant)
        }
    };
    continued.is_some_and(|m| {
        !matches!(
            m.content.first(),
            Some(ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. })
        )
    })
}

/// `response_format` → `output_config.format`: `json_schema` becomes
/// Anthropic's JSON output on models that have it; `text` is the default;
/// `json_object` (JSON without a schema) has no Anthropic counterpart.
pub(super) fn output_format(
    format: Option<&Value>,
    model: &str,
    facts: &ModelFacts,
) -> Result<Option<OutputFormat>, TranslateError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let object = format.as_object().ok_or_else(|| {
        TranslateError::new(
            "response_format",
            INVALID_VALUE,
            "`response_format` must be an object",
        )
    })?;
    match object.get("type").and_then(Value::as_str) {
        Some("text") => {
            reject_unknown_keys(object, "response_format", &["type"])?;
            Ok(None)
        }
        Some("json_schema") => {
            reject_unknown_keys(object, "response_format", &["type", "json_schema"])?;
            let spec = object
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    TranslateError::new(
                        "response_format.json_schema",
                        super::MISSING,
                        "a json_schema response_format needs `json_schema`",
                    )
                })?;
            reject_unknown_keys(
                spec,
                "response_format.json_schema",
                &["name", "description", "schema", "strict"],
            )?;
            let schema = match spec.get("schema") {
                Some(schema @ Value::Object(_)) => schema.clone(),
                Some(_) => {
                    return Err(TranslateError::new(
                        "response_format.json_schema.schema",
                        INVALID_VALUE,
                        "`schema` must be a JSON Schema object",
                    ));
                }
                None => {
                    return Err(TranslateError::new(
                        "response_format.json_schema.schema",
                        super::MISSING,
                        "a json_schema response_format needs `schema`",
                    ));
                }
            };
            if !facts.structured_outputs {
                return Err(unsupported(
                    "response_format",
                    &format!("{model} has no structured outputs (JSON schema answers)"),
                ));
            }
            Ok(Some(OutputFormat::JsonSchema { schema }))
        }
        Some("json_object") => Err(unsupported(
            "response_format",
            "Anthropic has no JSON mode without a schema; send a `json_schema` response_format \
             instead",
        )),
        _ => Err(TranslateError::new(
            "response_format.type",
            INVALID_VALUE,
            "`response_format.type` must be text, json_schema or json_object",
        )),
    }
}
