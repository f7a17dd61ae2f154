//! Request validation, as strict as the Messages API.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::{
    IMAGE_TOKENS, MAX_CACHE_BREAKPOINTS, MEDIA_TYPES, TABLE, TOKENS_PER_MESSAGE, TOP_LEVEL,
};
use crate::text::estimate_tokens;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ttl {
    FiveMinutes,
    OneHour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ToolChoice<'a> {
    Auto,
    Any,
    Tool(&'a str),
    None,
}

/// One unit of the prompt, in cache order: what it hashes as, what it
/// costs, and whether a cache breakpoint ends on it.
pub(super) struct PromptBlock {
    pub(super) canonical: Vec<u8>,
    pub(super) tokens: u64,
    pub(super) cache: Option<Ttl>,
}

/// A request that passed validation.
pub(super) struct Valid<'a> {
    pub(super) model: &'a str,
    pub(super) max_tokens: u64,
    pub(super) stream: bool,
    /// Custom tools (name, input schema), in order.
    pub(super) tools: Vec<(&'a str, &'a Value)>,
    pub(super) tool_choice: ToolChoice<'a>,
    pub(super) stop_sequences: Vec<&'a str>,
    pub(super) messages: &'a [Value],
    pub(super) prompt: Vec<PromptBlock>,
    /// Thinking is on (enabled or adaptive).
    pub(super) thinking: bool,
    /// `output_config.format.schema`: answer with JSON fitting it.
    pub(super) output_schema: Option<&'a Value>,
}

pub(super) type Invalid = String;

fn extra(path: &str, key: &str) -> Invalid {
    if path.is_empty() {
        format!("{key}: Extra inputs are not permitted")
    } else {
        format!("{path}.{key}: Extra inputs are not permitted")
    }
}

fn only_keys(object: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), Invalid> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(extra(path, key)),
        None => Ok(()),
    }
}

fn as_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Invalid> {
    value
        .as_object()
        .ok_or_else(|| format!("{path}: Input should be a valid dictionary or object"))
}

fn string<'a>(
    object: &'a Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<&'a str>, Invalid> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{path}.{key}: Input should be a valid string")),
    }
}

fn required_string<'a>(
    object: &'a Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<&'a str, Invalid> {
    string(object, path, key)?.ok_or_else(|| format!("{path}.{key}: Field required"))
}

fn number_in(body: &Map<String, Value>, key: &str, low: f64, high: f64) -> Result<(), Invalid> {
    let Some(value) = body.get(key) else {
        return Ok(());
    };
    let n = value
        .as_f64()
        .ok_or_else(|| format!("{key}: Input should be a valid number"))?;
    if n < low {
        return Err(format!(
            "{key}: Input should be greater than or equal to {low}"
        ));
    }
    if n > high {
        return Err(format!(
            "{key}: Input should be less than or equal to {high}"
        ));
    }
    Ok(())
}

fn cache_control(value: Option<&Value>, path: &str) -> Result<Option<Ttl>, Invalid> {
    let Some(value) = value else {
        return Ok(None);
    };
    let path = format!("{path}.cache_control");
    let object = as_object(value, &path)?;
    only_keys(object, &path, &["type", "ttl"])?;
    if object.get("type").and_then(Value::as_str) != Some("ephemeral") {
        return Err(format!("{path}.type: Input should be 'ephemeral'"));
    }
    match object.get("ttl") {
        None => Ok(Some(Ttl::FiveMinutes)),
        Some(Value::String(t)) if t == "5m" => Ok(Some(Ttl::FiveMinutes)),
        Some(Value::String(t)) if t == "1h" => Ok(Some(Ttl::OneHour)),
        Some(_) => Err(format!("{path}.ttl: Input should be '5m' or '1h'")),
    }
}

/// `block` without its `cache_control`, serialised: what a prefix hashes.
fn canonical(block: &Value) -> Vec<u8> {
    let mut block = block.clone();
    if let Some(object) = block.as_object_mut() {
        object.remove("cache_control");
    }
    serde_json::to_vec(&block).unwrap_or_default()
}

pub(super) fn validate(request: &Value) -> Result<Valid<'_>, Invalid> {
    let body = request
        .as_object()
        .ok_or("Input should be a valid dictionary")?;
    if let Some(key) = body.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(extra("", key));
    }
    let model = match body.get("model") {
        None => return Err("model: Field required".into()),
        Some(Value::String(m)) if !m.is_empty() => m.as_str(),
        Some(_) => return Err("model: Input should be a valid string".into()),
    };
    let max_tokens = match body.get("max_tokens") {
        None => return Err("max_tokens: Field required".into()),
        Some(v) => match (v.as_u64(), v.as_i64()) {
            (Some(n), _) if n >= 1 => n,
            (_, Some(_)) => {
                return Err("max_tokens: Input should be greater than or equal to 1".into());
            }
            _ => return Err("max_tokens: Input should be a valid integer".into()),
        },
    };
    if let Some((_, price)) = TABLE.chat_model(model).filter(|(_, p)| p.is_anthropic())
        && max_tokens > price.max_output_tokens
    {
        return Err(format!(
            "max_tokens: {max_tokens} > {}, which is the maximum allowed number of output tokens for {model}",
            price.max_output_tokens
        ));
    }
    let messages = match body.get("messages") {
        None => return Err("messages: Field required".into()),
        Some(Value::Array(m)) if m.is_empty() => {
            return Err("messages: at least one message is required".into());
        }
        Some(Value::Array(m)) => m.as_slice(),
        Some(_) => return Err("messages: Input should be a valid list".into()),
    };

    let mut prompt = Vec::new();
    let tools = validate_tools(body, &mut prompt)?;
    let tool_choice = validate_tool_choice(body, &tools)?;
    validate_system(body, &mut prompt)?;
    validate_messages(messages, &mut prompt)?;
    if let Some(ttl) = cache_control(body.get("cache_control"), "")
        .map_err(|e| e.trim_start_matches('.').to_owned())?
        && let Some(last) = prompt.iter_mut().rev().find(|b| b.tokens > 0)
    {
        last.cache = Some(ttl);
    }
    let breakpoints = prompt.iter().filter(|b| b.cache.is_some()).count();
    if breakpoints > MAX_CACHE_BREAKPOINTS {
        return Err(format!(
            "A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}."
        ));
    }

    number_in(body, "temperature", 0.0, 1.0)?;
    number_in(body, "top_p", 0.0, 1.0)?;
    if let Some(k) = body.get("top_k")
        && k.as_u64().is_none()
    {
        return Err("top_k: Input should be a valid integer, greater than or equal to 0".into());
    }
    let stop_sequences = match body.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .ok_or_else(|| format!("stop_sequences.{i}: Input should be a valid string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("stop_sequences: Input should be a valid list".into()),
    };
    if let Some(metadata) = body.get("metadata") {
        let metadata = as_object(metadata, "metadata")?;
        only_keys(metadata, "metadata", &["user_id"])?;
        if !matches!(
            metadata.get("user_id"),
            None | Some(Value::Null) | Some(Value::String(_))
        ) {
            return Err("metadata.user_id: Input should be a valid string".into());
        }
    }
    let stream = match body.get("stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("stream: Input should be a valid boolean".into()),
    };
    let thinking = validate_thinking(body, max_tokens)?;
    if thinking {
        if matches!(tool_choice, ToolChoice::Any | ToolChoice::Tool(_)) {
            return Err("Thinking may not be enabled when tool_choice forces tool use.".into());
        }
        if body
            .get("temperature")
            .and_then(Value::as_f64)
            .is_some_and(|t| t != 1.0)
        {
            return Err("`temperature` may only be set to 1 when thinking is enabled.".into());
        }
        continued_turn_thinks(messages)?;
    }
    let output_schema = validate_output_config(body)?;
    if let Some(tier) = body.get("service_tier")
        && !matches!(tier.as_str(), Some("auto" | "standard_only"))
    {
        return Err("service_tier: Input should be 'auto' or 'standard_only'".into());
    }
    Ok(Valid {
        model,
        max_tokens,
        stream,
        tools,
        tool_choice,
        stop_sequences,
        messages,
        prompt,
        thinking,
        output_schema,
    })
}

/// With thinking on, the assistant turn a request continues (a prefill, or
/// the tool calls its last message answers) must start with its thinking.
fn continued_turn_thinks(messages: &[Value]) -> Result<(), Invalid> {
    let kind = |m: &Value| {
        m.get("content")
            .and_then(Value::as_array)
            .and_then(|blocks| blocks.first())
            .and_then(|b| b.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("text")
            .to_owned()
    };
    let Some(last) = messages.last() else {
        return Ok(());
    };
    let answers_tools = last
        .get("content")
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    let continued = if last.get("role").and_then(Value::as_str) == Some("assistant") {
        Some(messages.len() - 1)
    } else if answers_tools && messages.len() >= 2 {
        Some(messages.len() - 2)
    } else {
        None
    };
    if let Some(i) = continued {
        let first = kind(&messages[i]);
        if first != "thinking" && first != "redacted_thinking" {
            return Err(format!(
                "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`."
            ));
        }
    }
    Ok(())
}

/// `output_config`: an `effort`, and a `json_schema` `format` (returned).
fn validate_output_config(body: &Map<String, Value>) -> Result<Option<&Value>, Invalid> {
    let Some(config) = body.get("output_config") else {
        return Ok(None);
    };
    let config = as_object(config, "output_config")?;
    only_keys(config, "output_config", &["effort", "format"])?;
    if let Some(effort) = config.get("effort")
        && !matches!(
            effort.as_str(),
            Some("low" | "medium" | "high" | "xhigh" | "max")
        )
    {
        return Err(
            "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
                .into(),
        );
    }
    let Some(format) = config.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let format = as_object(format, "output_config.format")?;
    only_keys(format, "output_config.format", &["type", "schema"])?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Err("output_config.format.type: Input should be 'json_schema'".into());
    }
    match format.get("schema") {
        Some(schema @ Value::Object(_)) => Ok(Some(schema)),
        Some(_) => Err("output_config.format.schema: Input should be a valid dictionary".into()),
        None => Err("output_config.format.schema: Field required".into()),
    }
}

fn validate_tools<'a>(
    body: &'a Map<String, Value>,
    prompt: &mut Vec<PromptBlock>,
) -> Result<Vec<(&'a str, &'a Value)>, Invalid> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err("tools: Input should be a valid list".into()),
    };
    let mut custom = Vec::new();
    let mut names = HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools.{i}");
        let object = as_object(tool, &path)?;
        let name = required_string(object, &path, "name")?;
        let kind = string(object, &path, "type")?;
        if kind.is_none_or(|k| k == "custom") {
            only_keys(
                object,
                &path,
                &[
                    "type",
                    "name",
                    "description",
                    "input_schema",
                    "cache_control",
                    "strict",
                    "input_examples",
                ],
            )?;
            let valid_name = (1..=128).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return Err(format!(
                    "{path}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                ));
            }
            string(object, &path, "description")?;
            let schema = object
                .get("input_schema")
                .ok_or_else(|| format!("{path}.input_schema: Field required"))?;
            let schema_object = as_object(schema, &format!("{path}.input_schema"))?;
            if schema_object.get("type").and_then(Value::as_str) != Some("object") {
                return Err(format!(
                    "{path}.input_schema.type: Input should be 'object'"
                ));
            }
            custom.push((name, schema));
        }
        if !names.insert(name) {
            return Err("tools: Tool names must be unique.".into());
        }
        prompt.push(PromptBlock {
            canonical: canonical(tool),
            tokens: estimate_tokens(&tool.to_string()),
            cache: cache_control(object.get("cache_control"), &path)?,
        });
    }
    Ok(custom)
}

fn validate_tool_choice<'a>(
    body: &'a Map<String, Value>,
    tools: &[(&str, &Value)],
) -> Result<ToolChoice<'a>, Invalid> {
    let Some(choice) = body.get("tool_choice") else {
        return Ok(ToolChoice::Auto);
    };
    let object = as_object(choice, "tool_choice")?;
    let kind = required_string(object, "tool_choice", "type")?;
    let allowed: &[&str] = if kind == "tool" {
        &["type", "name", "disable_parallel_tool_use"]
    } else {
        &["type", "disable_parallel_tool_use"]
    };
    only_keys(object, "tool_choice", allowed)?;
    if !matches!(
        object.get("disable_parallel_tool_use"),
        None | Some(Value::Bool(_))
    ) {
        return Err(
            "tool_choice.disable_parallel_tool_use: Input should be a valid boolean".into(),
        );
    }
    let choice = match kind {
        "auto" => ToolChoice::Auto,
        "none" => ToolChoice::None,
        "any" => ToolChoice::Any,
        "tool" => ToolChoice::Tool(required_string(object, "tool_choice", "name")?),
        other => {
            return Err(format!(
                "tool_choice.type: Input tag '{other}' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
            ));
        }
    };
    if matches!(choice, ToolChoice::Any | ToolChoice::Tool(_)) && tools.is_empty() {
        return Err("tool_choice: tool_choice may only be specified while providing tools".into());
    }
    if let ToolChoice::Tool(name) = choice
        && !tools.iter().any(|(n, _)| *n == name)
    {
        return Err(format!(
            "tool_choice.name: Tool '{name}' not found in the provided tools"
        ));
    }
    Ok(choice)
}

fn validate_system(
    body: &Map<String, Value>,
    prompt: &mut Vec<PromptBlock>,
) -> Result<(), Invalid> {
    match body.get("system") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(text)) => {
            prompt.push(PromptBlock {
                canonical: canonical(&json!({"type": "text", "text": text})),
                tokens: estimate_tokens(text),
                cache: None,
            });
            Ok(())
        }
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                let path = format!("system.{i}");
                let object = as_object(block, &path)?;
                if object.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(format!("{path}.type: Input should be 'text'"));
                }
                only_keys(
                    object,
                    &path,
                    &["type", "text", "cache_control", "citations"],
                )?;
                let text = required_string(object, &path, "text")?;
                if text.is_empty() {
                    return Err("system: text content blocks must be non-empty".into());
                }
                prompt.push(PromptBlock {
                    canonical: canonical(block),
                    tokens: estimate_tokens(text),
                    cache: cache_control(object.get("cache_control"), &path)?,
                });
            }
            Ok(())
        }
        Some(_) => Err("system: Input should be a valid string or a list of text blocks".into()),
    }
}

fn validate_messages(messages: &[Value], prompt: &mut Vec<PromptBlock>) -> Result<(), Invalid> {
    let mut previous_role = None;
    // tool_use ids of the previous (assistant) message, with its index.
    let mut pending: Option<(usize, Vec<String>)> = None;
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages.{i}");
        let object = as_object(message, &path)?;
        only_keys(object, &path, &["role", "content"])?;
        let role = match object.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant")) => role,
            Some(_) => {
                return Err(format!(
                    "{path}.role: Input should be 'user' or 'assistant'"
                ));
            }
            None => return Err(format!("{path}.role: Field required")),
        };
        if i == 0 && role != "user" {
            return Err("messages: first message must use the \"user\" role".into());
        }
        if previous_role == Some(role) {
            return Err(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            ));
        }
        previous_role = Some(role);
        prompt.push(PromptBlock {
            canonical: format!("role:{role}").into_bytes(),
            tokens: TOKENS_PER_MESSAGE,
            cache: None,
        });
        let last_assistant = i + 1 == messages.len() && role == "assistant";
        let empty = || {
            format!(
                "{path}: all messages must have non-empty content except for the optional final assistant message"
            )
        };
        let mut tool_uses = Vec::new();
        let mut tool_results = Vec::new();
        match object.get("content") {
            None => return Err(format!("{path}.content: Field required")),
            Some(Value::String(text)) => {
                if text.is_empty() && !last_assistant {
                    return Err(empty());
                }
                prompt.push(PromptBlock {
                    canonical: canonical(&json!({"type": "text", "text": text})),
                    tokens: estimate_tokens(text),
                    cache: None,
                });
            }
            Some(Value::Array(blocks)) => {
                if blocks.is_empty() && !last_assistant {
                    return Err(empty());
                }
                let mut other_content = false;
                for (j, block) in blocks.iter().enumerate() {
                    let block_path = format!("{path}.content.{j}");
                    let (tokens, cache, kind) = validate_block(block, &block_path, role)?;
                    match kind {
                        BlockKind::ToolUse(id) => {
                            if tool_uses.contains(&id) {
                                return Err(format!(
                                    "{path}: `tool_use` ids must be unique; {id} is repeated"
                                ));
                            }
                            tool_uses.push(id);
                        }
                        BlockKind::ToolResult(id) => {
                            if other_content {
                                return Err(format!(
                                    "{path}: `tool_result` blocks must come first in the content array, before any other content"
                                ));
                            }
                            let expected =
                                pending.as_ref().is_some_and(|(_, ids)| ids.contains(&id));
                            if !expected {
                                return Err(format!(
                                    "{block_path}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                                ));
                            }
                            tool_results.push(id);
                        }
                        BlockKind::Other => other_content = true,
                    }
                    prompt.push(PromptBlock {
                        canonical: canonical(block),
                        tokens,
                        cache,
                    });
                }
            }
            Some(_) => {
                return Err(format!(
                    "{path}.content: Input should be a valid string or a list of content blocks"
                ));
            }
        }
        if let Some((index, ids)) = pending.take() {
            let missing: Vec<&str> = ids
                .iter()
                .filter(|id| !tool_results.contains(id))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(unanswered(index, &missing));
            }
        }
        if !tool_uses.is_empty() {
            pending = Some((i, tool_uses));
        }
    }
    match pending {
        Some((index, ids)) => {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            Err(unanswered(index, &ids))
        }
        None => Ok(()),
    }
}

fn unanswered(index: usize, ids: &[&str]) -> Invalid {
    format!(
        "messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
        ids.join(", ")
    )
}

enum BlockKind {
    ToolUse(String),
    ToolResult(String),
    Other,
}

/// Validates one content block; returns its token estimate, its cache
/// breakpoint and what kind of block it is.
fn validate_block(
    block: &Value,
    path: &str,
    role: &str,
) -> Result<(u64, Option<Ttl>, BlockKind), Invalid> {
    let object = as_object(block, path)?;
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => {
            return Err(format!(
                "{path}: Unable to extract tag using discriminator 'type'"
            ));
        }
    };
    let only_in = |wanted: &str| {
        if role == wanted {
            Ok(())
        } else {
            Err(format!(
                "{path}: `{kind}` blocks are only allowed in \"{wanted}\" messages"
            ))
        }
    };
    let cache = cache_control(object.get("cache_control"), path)?;
    let (tokens, block_kind) = match kind {
        "text" => {
            only_keys(
                object,
                path,
                &["type", "text", "cache_control", "citations"],
            )?;
            let text = required_string(object, path, "text")?;
            if text.is_empty() {
                return Err("messages: text content blocks must be non-empty".into());
            }
            (estimate_tokens(text), BlockKind::Other)
        }
        "image" => {
            only_keys(object, path, &["type", "source", "cache_control"])?;
            validate_image_source(object, path)?;
            (IMAGE_TOKENS, BlockKind::Other)
        }
        "document" => {
            only_keys(
                object,
                path,
                &[
                    "type",
                    "source",
                    "title",
                    "context",
                    "citations",
                    "cache_control",
                ],
            )?;
            let source = object
                .get("source")
                .ok_or_else(|| format!("{path}.source: Field required"))?;
            let source = as_object(source, &format!("{path}.source"))?;
            let tokens = match source.get("type").and_then(Value::as_str) {
                Some("text") => estimate_tokens(required_string(source, path, "data")?),
                Some("base64" | "url" | "file" | "content") => IMAGE_TOKENS,
                _ => {
                    return Err(format!(
                        "{path}.source.type: Input should be 'base64', 'text', 'content', 'url' or 'file'"
                    ));
                }
            };
            string(object, path, "title")?;
            string(object, path, "context")?;
            (tokens, BlockKind::Other)
        }
        "tool_use" => {
            only_in("assistant")?;
            only_keys(
                object,
                path,
                &["type", "id", "name", "input", "cache_control"],
            )?;
            let id = required_string(object, path, "id")?;
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "{path}.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                ));
            }
            let name = required_string(object, path, "name")?;
            if name.is_empty() {
                return Err(format!(
                    "{path}.name: String should have at least 1 character"
                ));
            }
            let input = match object.get("input") {
                Some(input @ Value::Object(_)) => input,
                Some(_) => return Err(format!("{path}.input: Input should be a valid dictionary")),
                None => return Err(format!("{path}.input: Field required")),
            };
            (
                estimate_tokens(&format!("{name}{input}")),
                BlockKind::ToolUse(id.to_owned()),
            )
        }
        "tool_result" => {
            only_in("user")?;
            only_keys(
                object,
                path,
                &[
                    "type",
                    "tool_use_id",
                    "content",
                    "is_error",
                    "cache_control",
                ],
            )?;
            let id = required_string(object, path, "tool_use_id")?;
            if !matches!(object.get("is_error"), None | Some(Value::Bool(_))) {
                return Err(format!("{path}.is_error: Input should be a valid boolean"));
            }
            let tokens = match object.get("content") {
                None => 0,
                Some(Value::String(text)) => estimate_tokens(text),
                Some(Value::Array(parts)) => {
                    let mut tokens = 0;
                    for (k, part) in parts.iter().enumerate() {
                        let part_path = format!("{path}.content.{k}");
                        let part_kind = part.get("type").and_then(Value::as_str);
                        if !matches!(part_kind, Some("text" | "image" | "document")) {
                            return Err(format!(
                                "{part_path}.type: Input should be 'text', 'image' or 'document'"
                            ));
                        }
                        tokens += validate_block(part, &part_path, role)?.0;
                    }
                    tokens
                }
                Some(_) => {
                    return Err(format!(
                        "{path}.content: Input should be a valid string or a list of content blocks"
                    ));
                }
            };
            (tokens, BlockKind::ToolResult(id.to_owned()))
        }
        "thinking" => {
            only_in("assistant")?;
            only_keys(object, path, &["type", "thinking", "signature"])?;
            let thinking = required_string(object, path, "thinking")?;
            let signature = required_string(object, path, "signature")?;
            if signature != super::signature(thinking) {
                return Err(format!("{path}: Invalid `signature` in `thinking` block"));
            }
            (estimate_tokens(thinking), BlockKind::Other)
        }
        "redacted_thinking" => {
            only_in("assistant")?;
            only_keys(object, path, &["type", "data"])?;
            (
                estimate_tokens(required_string(object, path, "data")?),
                BlockKind::Other,
            )
        }
        other => {
            return Err(format!(
                "{path}.type: Input tag '{other}' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking'"
            ));
        }
    };
    Ok((tokens, cache, block_kind))
}

fn validate_image_source(object: &Map<String, Value>, path: &str) -> Result<(), Invalid> {
    let path = format!("{path}.source");
    let source = object
        .get("source")
        .ok_or_else(|| format!("{path}: Field required"))?;
    let source = as_object(source, &path)?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            only_keys(source, &path, &["type", "media_type", "data"])?;
            let media_type = required_string(source, &path, "media_type")?;
            if !MEDIA_TYPES.contains(&media_type) {
                return Err(format!(
                    "{path}.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                ));
            }
            if required_string(source, &path, "data")?.is_empty() {
                return Err(format!("{path}.data: image data must be non-empty"));
            }
        }
        Some("url") => {
            only_keys(source, &path, &["type", "url"])?;
            required_string(source, &path, "url")?;
        }
        Some("file") => {
            only_keys(source, &path, &["type", "file_id"])?;
            required_string(source, &path, "file_id")?;
        }
        _ => {
            return Err(format!(
                "{path}.type: Input should be 'base64', 'url' or 'file'"
            ));
        }
    }
    Ok(())
}

/// Whether the request thinks.
fn validate_thinking(body: &Map<String, Value>, max_tokens: u64) -> Result<bool, Invalid> {
    let Some(thinking) = body.get("thinking") else {
        return Ok(false);
    };
    let object = as_object(thinking, "thinking")?;
    match object.get("type").and_then(Value::as_str) {
        Some("enabled") => {
            only_keys(object, "thinking", &["type", "budget_tokens", "display"])?;
            let budget = object
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or("thinking.enabled.budget_tokens: Field required")?;
            if budget < 1024 {
                return Err(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                        .into(),
                );
            }
            if max_tokens <= budget {
                return Err("`max_tokens` must be greater than `thinking.budget_tokens`".into());
            }
            Ok(true)
        }
        Some("adaptive") => {
            only_keys(object, "thinking", &["type", "display"])?;
            Ok(true)
        }
        Some("disabled") => Ok(false),
        _ => Err("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'".into()),
    }
}
