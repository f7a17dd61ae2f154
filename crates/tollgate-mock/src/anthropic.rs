//! `POST /v1/messages`: Anthropic's Messages API, plain and streamed.
//!
//! Every request is validated the way the real API does it, and a violation
//! is answered with Anthropic's error envelope
//! (`{"type":"error","error":{"type":"invalid_request_error","message":…}}`),
//! so a gateway translating OpenAI requests into Anthropic ones is tested
//! against the rules it must follow. The mock is deliberately stricter than
//! Anthropic in one respect: roles must alternate and the first message must
//! be `user` (Anthropic merges consecutive same-role turns; a translator
//! should not rely on it).
//!
//! Answers are deterministic:
//! - **Tool use**: with custom `tools`, the mock calls the first tool when
//!   `tool_choice` is `any`, the named tool when it is `tool`, and the first
//!   tool when it is `auto` (or absent) and the last user turn's text
//!   contains the word "weather". The input fills the tool schema's required
//!   properties (all properties when none is required): `"Paris"` for
//!   location-like strings, an enum's first value, `1`, `true`, `[]`, nested
//!   objects filled the same way. A last user turn carrying `tool_result`
//!   blocks is always answered with text.
//! - **Text**: `min(answer_tokens, max_tokens)` words of deterministic text
//!   (one word, one token); `stop_reason` is `end_turn`, `max_tokens` when
//!   truncated, or `stop_sequence` when a stop sequence occurs in the text.
//! - **Usage**: input is estimated at about four characters a token (3 per
//!   message, 1 600 per image). Blocks marked with `cache_control` (and a
//!   top-level `cache_control`, which marks the last block) end cached
//!   prefixes, in Anthropic's order: tools, system, messages. The first call
//!   for a prefix reports it as `cache_creation_input_tokens`, later calls
//!   (through this router) as `cache_read_input_tokens`, and `input_tokens`
//!   counts only what follows the last breakpoint, as Anthropic does. There
//!   is no minimum cacheable length.
//! - `thinking` is accepted; no thinking block is produced.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tollgate_pricing::PriceTable;

use crate::text::{estimate_tokens, seed, words};
use crate::{MockOptions, MockState, record};

/// Fields the Messages API accepts at the top level.
const TOP_LEVEL: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "context_management",
    "mcp_servers",
    "output_config",
    "inference_geo",
    "cache_control",
];
const MAX_CACHE_BREAKPOINTS: usize = 4;
const IMAGE_TOKENS: u64 = 1_600;
const TOKENS_PER_MESSAGE: u64 = 3;
const MEDIA_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Output limits of the Claude models Tollgate sells, to refuse a
/// `max_tokens` above them as Anthropic does (other models are not checked).
static TABLE: LazyLock<PriceTable> = LazyLock::new(PriceTable::builtin);

/// Hashes of the prompt prefixes written to the (mock) prompt cache.
type PromptCache = Arc<Mutex<HashSet<[u8; 32]>>>;

/// The `/v1/messages` route, with its own prompt cache.
pub(super) fn endpoint() -> MethodRouter<MockState> {
    let cache = PromptCache::default();
    post(
        move |State(state): State<MockState>,
              method: Method,
              uri: Uri,
              headers: HeaderMap,
              body: Bytes| {
            let cache = cache.clone();
            async move {
                let refused = check_headers(&headers);
                record(&state, method, &uri, headers, &body);
                tokio::time::sleep(state.options.latency).await;
                if let Some(refused) = refused {
                    return refused;
                }
                let request: Value = match serde_json::from_slice(&body) {
                    Ok(request) => request,
                    Err(e) => {
                        return invalid(format!(
                            "There was an issue with your request body: invalid JSON ({e})"
                        ));
                    }
                };
                match validate(&request) {
                    Ok(valid) => answer(&valid, &state.options, &cache),
                    Err(message) => invalid(message),
                }
            }
        },
    )
}

/// An error in Anthropic's envelope.
pub(crate) fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let request_id = format!("req_01{}", id_chars(&seed(message.as_bytes())));
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id,
    });
    (status, [("request-id", request_id)], axum::Json(body)).into_response()
}

fn invalid(message: String) -> Response {
    anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", &message)
}

fn check_headers(headers: &HeaderMap) -> Option<Response> {
    let present = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty())
    };
    if !present("x-api-key") {
        return Some(anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        ));
    }
    if !present("anthropic-version") {
        return Some(invalid("anthropic-version: header is required".into()));
    }
    None
}

// ------------------------------------------------------------ validation

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ttl {
    FiveMinutes,
    OneHour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ToolChoice<'a> {
    Auto,
    Any,
    Tool(&'a str),
    None,
}

/// One unit of the prompt, in cache order: what it hashes as, what it
/// costs, and whether a cache breakpoint ends on it.
struct PromptBlock {
    canonical: Vec<u8>,
    tokens: u64,
    cache: Option<Ttl>,
}

/// A request that passed validation.
struct Valid<'a> {
    model: &'a str,
    max_tokens: u64,
    stream: bool,
    /// Custom tools (name, input schema), in order.
    tools: Vec<(&'a str, &'a Value)>,
    tool_choice: ToolChoice<'a>,
    stop_sequences: Vec<&'a str>,
    messages: &'a [Value],
    prompt: Vec<PromptBlock>,
}

type Invalid = String;

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

fn validate(request: &Value) -> Result<Valid<'_>, Invalid> {
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
    validate_thinking(body, max_tokens)?;
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
    })
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
            required_string(object, path, "signature")?;
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

fn validate_thinking(body: &Map<String, Value>, max_tokens: u64) -> Result<(), Invalid> {
    let Some(thinking) = body.get("thinking") else {
        return Ok(());
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
            Ok(())
        }
        Some("disabled" | "adaptive") => Ok(()),
        _ => Err("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'".into()),
    }
}

// --------------------------------------------------------------- answers

/// Token counts Anthropic reports for the prompt.
#[derive(Debug, Default, Clone, Copy)]
struct InputUsage {
    uncached: u64,
    cache_read: u64,
    cache_write_5m: u64,
    cache_write_1h: u64,
}

impl InputUsage {
    fn json(self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.uncached,
            "cache_creation_input_tokens": self.cache_write_5m + self.cache_write_1h,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m,
                "ephemeral_1h_input_tokens": self.cache_write_1h,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        })
    }
}

/// Splits the prompt into uncached input, cache reads and cache writes,
/// reading and updating the mock's prompt cache.
fn input_usage(model: &str, prompt: &[PromptBlock], cache: &PromptCache) -> InputUsage {
    let total: u64 = prompt.iter().map(|b| b.tokens).sum();
    let Some(last) = prompt.iter().rposition(|b| b.cache.is_some()) else {
        return InputUsage {
            uncached: total,
            ..InputUsage::default()
        };
    };
    // The hash and token count of every prefix ending at a block boundary.
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    let mut tokens = 0;
    let mut prefixes = Vec::with_capacity(prompt.len());
    for block in prompt {
        hasher.update((block.canonical.len() as u64).to_be_bytes());
        hasher.update(&block.canonical);
        tokens += block.tokens;
        prefixes.push((<[u8; 32]>::from(hasher.clone().finalize()), tokens));
    }
    let Ok(mut cached) = cache.lock() else {
        return InputUsage {
            uncached: total,
            ..InputUsage::default()
        };
    };
    // The longest prefix already cached, up to the last breakpoint.
    let hit = (0..=last).rev().find(|&i| cached.contains(&prefixes[i].0));
    let read = hit.map_or(0, |i| prefixes[i].1);
    let mut usage = InputUsage {
        uncached: total - prefixes[last].1,
        cache_read: read,
        ..InputUsage::default()
    };
    let first_new = hit.map_or(0, |i| i + 1);
    for i in first_new..=last {
        // A block is written with the TTL of the breakpoint that ends its
        // prefix segment.
        let ttl = prompt[i..=last].iter().find_map(|b| b.cache);
        match ttl {
            Some(Ttl::OneHour) => usage.cache_write_1h += prompt[i].tokens,
            _ => usage.cache_write_5m += prompt[i].tokens,
        }
    }
    for (i, block) in prompt.iter().enumerate().take(last + 1) {
        if block.cache.is_some() {
            cached.insert(prefixes[i].0);
        }
    }
    usage
}

enum Content {
    Text {
        text: String,
        stop_reason: &'static str,
        stop_sequence: Option<String>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

fn answer(valid: &Valid<'_>, options: &MockOptions, cache: &PromptCache) -> Response {
    let digest = seed(
        serde_json::to_string(valid.messages)
            .unwrap_or_default()
            .as_bytes(),
    );
    let derived = |salt: &[u8]| id_chars(&seed(&[&digest[..], salt].concat()));
    let usage = input_usage(valid.model, &valid.prompt, cache);
    let content = match tool_to_call(valid) {
        Some((name, schema)) => Content::ToolUse {
            id: format!("toolu_01{}", derived(b"tool")),
            name: name.to_owned(),
            input: fill_schema(schema, None),
        },
        None => text_answer(valid, options, &digest),
    };
    let output_tokens = match &content {
        Content::Text { text, .. } => pieces(text).len().max(1) as u64,
        Content::ToolUse { name, input, .. } => estimate_tokens(&format!("{name}{input}")),
    };
    let id = format!("msg_01{}", id_chars(&digest));
    let request_id = format!("req_01{}", derived(b"req"));
    if valid.stream {
        return stream(
            valid,
            &id,
            &request_id,
            &content,
            usage,
            output_tokens,
            options.chunk_interval,
        );
    }
    let (block, stop_reason, stop_sequence) = match &content {
        Content::Text {
            text,
            stop_reason,
            stop_sequence,
        } => (
            json!({"type": "text", "text": text}),
            *stop_reason,
            stop_sequence.clone(),
        ),
        Content::ToolUse { id, name, input } => (
            json!({"type": "tool_use", "id": id, "name": name, "input": input}),
            "tool_use",
            None,
        ),
    };
    let body = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": valid.model,
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage.json(output_tokens),
    });
    (
        StatusCode::OK,
        [("request-id", request_id)],
        axum::Json(body),
    )
        .into_response()
}

/// The tool the mock calls, if any (see the module documentation).
fn tool_to_call<'a>(valid: &Valid<'a>) -> Option<(&'a str, &'a Value)> {
    let first = *valid.tools.first()?;
    let last_user = valid
        .messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    let blocks = last_user.get("content").and_then(Value::as_array);
    let answers_tools = blocks.is_some_and(|blocks| {
        blocks
            .iter()
            .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
    });
    if answers_tools {
        return None;
    }
    match valid.tool_choice {
        ToolChoice::None => None,
        ToolChoice::Any => Some(first),
        ToolChoice::Tool(name) => valid.tools.iter().copied().find(|(n, _)| *n == name),
        ToolChoice::Auto => {
            let text = match last_user.get("content") {
                Some(Value::String(s)) => s.clone(),
                _ => blocks
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let asks_weather = text
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w.eq_ignore_ascii_case("weather"));
            asks_weather.then_some(first)
        }
    }
}

/// A small value that fits `schema` (see the module documentation).
fn fill_schema(schema: &Value, name: Option<&str>) -> Value {
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let empty = Map::new();
            let properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut out = Map::new();
            for (key, property) in properties {
                if required.is_empty() || required.contains(&key.as_str()) {
                    out.insert(key.clone(), fill_schema(property, Some(key)));
                }
            }
            Value::Object(out)
        }
        "integer" | "number" => json!(1),
        "boolean" => json!(true),
        "array" => json!([]),
        "null" => Value::Null,
        _ => {
            let name = name.unwrap_or_default().to_ascii_lowercase();
            let place = ["location", "city", "place", "address", "where"]
                .iter()
                .any(|p| name.contains(p));
            json!(if place { "Paris" } else { "mock" })
        }
    }
}

fn text_answer(valid: &Valid<'_>, options: &MockOptions, seed: &[u8; 32]) -> Content {
    let wanted = options.answer_tokens.max(1);
    let count = wanted.min(valid.max_tokens);
    let mut text = words(seed, count as usize).join(" ");
    let mut stop_reason = if count < wanted {
        "max_tokens"
    } else {
        "end_turn"
    };
    let mut stop_sequence = None;
    let earliest = valid
        .stop_sequences
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(*s).filter(|at| *at > 0).map(|at| (at, *s)))
        .min_by_key(|(at, _)| *at);
    if let Some((at, sequence)) = earliest {
        text.truncate(at);
        stop_reason = "stop_sequence";
        stop_sequence = Some(sequence.to_owned());
    }
    Content::Text {
        text,
        stop_reason,
        stop_sequence,
    }
}

/// The text as streamed: one word (one token) per delta.
fn pieces(text: &str) -> Vec<String> {
    text.split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            }
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// `input` as several `partial_json` fragments (the first empty, as
/// Anthropic sends it).
fn json_fragments(input: &str) -> Vec<String> {
    let mut fragments = vec![String::new()];
    let mut current = String::new();
    for c in input.chars() {
        current.push(c);
        if current.len() >= 8 {
            fragments.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        fragments.push(current);
    }
    fragments
}

fn stream(
    valid: &Valid<'_>,
    id: &str,
    request_id: &str,
    content: &Content,
    usage: InputUsage,
    output_tokens: u64,
    interval: Duration,
) -> Response {
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": valid.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage.json(1),
        }}),
    )];
    let (start, deltas, stop_reason, stop_sequence) = match content {
        Content::Text {
            text,
            stop_reason,
            stop_sequence,
        } => (
            json!({"type": "text", "text": ""}),
            pieces(text)
                .into_iter()
                .map(|t| json!({"type": "text_delta", "text": t}))
                .collect::<Vec<_>>(),
            *stop_reason,
            stop_sequence.clone(),
        ),
        Content::ToolUse { id, name, input } => (
            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            json_fragments(&input.to_string())
                .into_iter()
                .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                .collect(),
            "tool_use",
            None,
        ),
    };
    events.push((
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": start}),
    ));
    events.push(("ping", json!({"type": "ping"})));
    for delta in deltas {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    let final_usage = usage.json(output_tokens);
    events.push((
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        "usage": {
            "input_tokens": final_usage["input_tokens"],
            "cache_creation_input_tokens": final_usage["cache_creation_input_tokens"],
            "cache_read_input_tokens": final_usage["cache_read_input_tokens"],
            "output_tokens": output_tokens,
        }}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let frames: Vec<String> = events
        .into_iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    let stream = futures::stream::iter(frames).then(move |frame| async move {
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        Ok::<_, Infallible>(Bytes::from(frame))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("request-id", request_id)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// 22 id characters (`[A-Za-z0-9]`) drawn from a seed, like Anthropic's.
fn id_chars(seed: &[u8; 32]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    seed[..22]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
