//! Worst-case quotes: what a request may cost at most, from its body and
//! the price table alone. Pure functions, no I/O.

use serde_json::Value;

use crate::table::{ChatPrice, PriceTable, per_million};
use crate::tokens::Encoding;

/// The most choices a chat request may ask for.
pub const MAX_CHOICES: u64 = 8;
/// Tokens OpenAI adds around each chat message, and to prime the reply.
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
const REPLY_PRIMING_TOKENS: u64 = 3;
/// Worst case for a high-detail image: scaled to fit 2048×2048, shortest
/// side 768 px → at most 2×4 tiles of 512 px.
const MAX_IMAGE_TILES: u64 = 8;
const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Tokens of the system prompt Anthropic adds when a request carries
/// `tools`: above every value Anthropic documents (530 for Claude 3 Opus,
/// 346 for Claude 4 models), with room for the Opus 4.7+ tokenizer.
pub const CLAUDE_TOOL_PROMPT_TOKENS: u64 = 600;

/// A price for one request, with what it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Canonical model id.
    pub model: String,
    /// Base units to ask for (markup and minimum applied).
    pub amount: u128,
    /// What is bought, in plain words (goes into the challenge).
    pub description: String,
    /// Input tokens (or characters, or audio seconds) counted.
    pub input_units: u64,
    /// Output tokens (or images) at most.
    pub output_units: u64,
}

/// Why a request cannot be quoted: always the client's fault (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QuoteError {
    /// The offending request parameter, as OpenAI names it.
    pub param: Option<&'static str>,
    pub message: String,
    /// A stable machine code.
    pub code: &'static str,
}

fn bad(param: &'static str, code: &'static str, message: impl Into<String>) -> QuoteError {
    QuoteError {
        param: Some(param),
        message: message.into(),
        code,
    }
}

fn object(body: &Value) -> Result<&serde_json::Map<String, Value>, QuoteError> {
    body.as_object().ok_or_else(|| QuoteError {
        param: None,
        message: "the request body must be a JSON object".into(),
        code: "invalid-body",
    })
}

fn model_name(body: &serde_json::Map<String, Value>) -> Result<&str, QuoteError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m),
        Some(_) => Err(bad(
            "model",
            "invalid-type",
            "`model` must be a non-empty string",
        )),
        None => Err(bad("model", "missing-parameter", "`model` is required")),
    }
}

fn unknown_model(model: &str) -> QuoteError {
    bad(
        "model",
        "unknown-model",
        format!("model {model:?} is not sold by this gateway"),
    )
}

/// Optional positive integer parameter.
fn positive(
    body: &serde_json::Map<String, Value>,
    key: &'static str,
) -> Result<Option<u64>, QuoteError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(bad(
                key,
                "invalid-type",
                format!("`{key}` must be a positive integer"),
            )),
        },
    }
}

// ------------------------------------------------------------------ chat

/// Chat completions: input counted with the model's tokenizer plus message
/// framing and image tokens, output at its cap (`max_completion_tokens`,
/// `max_tokens`, or the model's limit) times `n`.
pub fn chat(table: &PriceTable, body: &Value) -> Result<Quote, QuoteError> {
    let body = object(body)?;
    let requested = model_name(body)?;
    let (model, price) = table
        .chat_model(requested)
        .ok_or_else(|| unknown_model(requested))?;
    let messages = messages_param(body)?;
    let n = positive(body, "n")?.unwrap_or(1);
    if n > MAX_CHOICES {
        return Err(bad(
            "n",
            "invalid-value",
            format!("`n` must be at most {MAX_CHOICES}"),
        ));
    }
    if n > 1 && price.is_anthropic() {
        return Err(bad(
            "n",
            "unsupported-input",
            format!("{model} answers one choice per request; `n` must be 1"),
        ));
    }
    let cap = match positive(body, "max_completion_tokens")? {
        Some(cap) => Some(("max_completion_tokens", cap)),
        None => positive(body, "max_tokens")?.map(|cap| ("max_tokens", cap)),
    };
    let output_tokens = output_cap(price, model, cap)?;

    let mut input_tokens = REPLY_PRIMING_TOKENS;
    for (index, message) in messages.iter().enumerate() {
        input_tokens += message_tokens(price, message, index)?;
    }
    if let Some(tools) = body.get("tools").or_else(|| body.get("functions")) {
        // Tool schemas are serialised into the prompt; their JSON is a
        // conservative stand-in for OpenAI's internal rendering.
        input_tokens += price.encoding.count(&tools.to_string());
        if price.is_anthropic() {
            input_tokens += CLAUDE_TOOL_PROMPT_TOKENS;
        }
    }
    fits_context(price, model, "messages", input_tokens, output_tokens)?;
    let list = per_million(input_tokens, price.input_per_mtok)
        + per_million(output_tokens * n, price.output_per_mtok);
    let choices = if n > 1 {
        format!(" × {n} choices")
    } else {
        String::new()
    };
    Ok(Quote {
        model: model.to_owned(),
        amount: table.finalize(list),
        description: format!(
            "{model} chat completion: {input_tokens} input tokens, up to {output_tokens} output tokens{choices}"
        ),
        input_units: input_tokens,
        output_units: output_tokens * n,
    })
}

fn messages_param(body: &serde_json::Map<String, Value>) -> Result<&Vec<Value>, QuoteError> {
    match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => Ok(m),
        Some(Value::Array(_)) => Err(bad(
            "messages",
            "invalid-value",
            "`messages` must not be empty",
        )),
        Some(_) => Err(bad(
            "messages",
            "invalid-type",
            "`messages` must be an array",
        )),
        None => Err(bad(
            "messages",
            "missing-parameter",
            "`messages` is required",
        )),
    }
}

fn message_tokens(price: &ChatPrice, message: &Value, index: usize) -> Result<u64, QuoteError> {
    let message = message.as_object().ok_or_else(|| {
        bad(
            "messages",
            "invalid-type",
            format!("messages[{index}] must be an object"),
        )
    })?;
    let role = message.get("role").and_then(Value::as_str).ok_or_else(|| {
        bad(
            "messages",
            "invalid-type",
            format!("messages[{index}].role must be a string"),
        )
    })?;
    let encoding = price.encoding;
    let mut tokens = TOKENS_PER_MESSAGE + encoding.count(role);
    if let Some(name) = message.get("name").and_then(Value::as_str) {
        tokens += TOKENS_PER_NAME + encoding.count(name);
    }
    match message.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => tokens += encoding.count(text),
        Some(Value::Array(parts)) => {
            for part in parts {
                tokens += part_tokens(price, part, index)?;
            }
        }
        Some(_) => {
            return Err(bad(
                "messages",
                "invalid-type",
                format!("messages[{index}].content must be a string or an array of parts"),
            ));
        }
    }
    for key in ["tool_calls", "function_call"] {
        if let Some(calls) = message.get(key) {
            tokens += encoding.count(&calls.to_string());
        }
    }
    Ok(tokens)
}

fn part_tokens(price: &ChatPrice, part: &Value, index: usize) -> Result<u64, QuoteError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "text" => Ok(price
            .encoding
            .count(part.get("text").and_then(Value::as_str).unwrap_or_default())),
        "image_url" => image_tokens(
            price,
            "messages",
            part.pointer("/image_url/detail").and_then(Value::as_str),
            part.pointer("/image_url/url").and_then(Value::as_str),
        ),
        other => Err(bad(
            "messages",
            "unsupported-input",
            format!(
                "messages[{index}] has a content part of type {other:?}, which this gateway does not sell"
            ),
        )),
    }
}

/// The Responses API: `instructions` and `input` (a string or a list of
/// items) counted like chat messages; output at `max_output_tokens` or the
/// model's limit.
pub fn responses(table: &PriceTable, body: &Value) -> Result<Quote, QuoteError> {
    let body = object(body)?;
    let requested = model_name(body)?;
    let (model, price) = table
        .chat_model(requested)
        .ok_or_else(|| unknown_model(requested))?;
    let mut input_tokens = REPLY_PRIMING_TOKENS;
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            input_tokens += TOKENS_PER_MESSAGE + price.encoding.count(text)
        }
        Some(_) => {
            return Err(bad(
                "instructions",
                "invalid-type",
                "`instructions` must be a string",
            ));
        }
    }
    match body.get("input") {
        Some(Value::String(text)) if !text.is_empty() => {
            input_tokens += TOKENS_PER_MESSAGE + price.encoding.count(text);
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            for (index, item) in items.iter().enumerate() {
                input_tokens += response_item_tokens(price, item, index)?;
            }
        }
        Some(_) => {
            return Err(bad(
                "input",
                "invalid-type",
                "`input` must be a non-empty string or array",
            ));
        }
        None => return Err(bad("input", "missing-parameter", "`input` is required")),
    }
    if let Some(tools) = body.get("tools") {
        input_tokens += price.encoding.count(&tools.to_string());
    }
    let cap = positive(body, "max_output_tokens")?.map(|cap| ("max_output_tokens", cap));
    let output_tokens = output_cap(price, model, cap)?;
    fits_context(price, model, "input", input_tokens, output_tokens)?;
    let list = per_million(input_tokens, price.input_per_mtok)
        + per_million(output_tokens, price.output_per_mtok);
    Ok(Quote {
        model: model.to_owned(),
        amount: table.finalize(list),
        description: format!(
            "{model} response: {input_tokens} input tokens, up to {output_tokens} output tokens"
        ),
        input_units: input_tokens,
        output_units: output_tokens,
    })
}

fn response_item_tokens(price: &ChatPrice, item: &Value, index: usize) -> Result<u64, QuoteError> {
    let Some(item) = item.as_object() else {
        return Err(bad(
            "input",
            "invalid-type",
            format!("input[{index}] must be an object"),
        ));
    };
    let encoding = price.encoding;
    let mut tokens = TOKENS_PER_MESSAGE;
    if let Some(role) = item.get("role").and_then(Value::as_str) {
        tokens += encoding.count(role);
    }
    match item.get("content") {
        None | Some(Value::Null) => {
            tokens += encoding.count(&Value::Object(item.clone()).to_string())
        }
        Some(Value::String(text)) => tokens += encoding.count(text),
        Some(Value::Array(parts)) => {
            for part in parts {
                tokens += match part.get("type").and_then(Value::as_str).unwrap_or_default() {
                    "input_text" | "output_text" | "text" => {
                        encoding.count(part.get("text").and_then(Value::as_str).unwrap_or_default())
                    }
                    "input_image" => image_tokens(
                        price,
                        "input",
                        part.get("detail").and_then(Value::as_str),
                        part.get("image_url").and_then(Value::as_str),
                    )?,
                    other => {
                        return Err(bad(
                            "input",
                            "unsupported-input",
                            format!(
                                "input[{index}] has a content part of type {other:?}, which this gateway does not sell"
                            ),
                        ));
                    }
                };
            }
        }
        Some(_) => {
            return Err(bad(
                "input",
                "invalid-type",
                format!("input[{index}].content must be a string or an array"),
            ));
        }
    }
    Ok(tokens)
}

/// The output cap the request set (`(param, value)`), within the model's
/// limit, or the model's default when it set none (its limit, or for Claude
/// the `default_max_tokens` the translator sends).
fn output_cap(
    price: &ChatPrice,
    model: &str,
    cap: Option<(&'static str, u64)>,
) -> Result<u64, QuoteError> {
    match cap {
        Some((param, cap)) if cap > price.max_output_tokens => Err(bad(
            param,
            "invalid-value",
            format!(
                "`{param}` is {cap}, above {model}'s limit of {}",
                price.max_output_tokens
            ),
        )),
        Some((_, cap)) => Ok(cap),
        None => Ok(price.default_output_tokens()),
    }
}

/// Input plus the output cap must fit the model's context window.
fn fits_context(
    price: &ChatPrice,
    model: &str,
    param: &'static str,
    input_tokens: u64,
    output_tokens: u64,
) -> Result<(), QuoteError> {
    if input_tokens + output_tokens > price.context_window {
        return Err(bad(
            param,
            "context-length-exceeded",
            format!(
                "{input_tokens} input tokens plus {output_tokens} output tokens exceed {model}'s context window of {}",
                price.context_window
            ),
        ));
    }
    Ok(())
}

/// Tokens for one image input: the base for `detail: low`, otherwise the
/// worst-case tiling. Claude models (`image_max_tokens`) price an inline
/// (`data:` URL) image by its size and any other image at that maximum.
fn image_tokens(
    price: &ChatPrice,
    param: &'static str,
    detail: Option<&str>,
    url: Option<&str>,
) -> Result<u64, QuoteError> {
    if let Some(cap) = price.image_max_tokens {
        let size = url.and_then(crate::image::data_url_dimensions);
        return Ok(crate::image::claude_image_tokens(size, cap));
    }
    let (Some(base), Some(tile)) = (price.image_base_tokens, price.image_tile_tokens) else {
        return Err(bad(
            param,
            "unsupported-input",
            "this model does not accept image inputs",
        ));
    };
    Ok(if detail == Some("low") {
        base
    } else {
        base + tile * MAX_IMAGE_TILES
    })
}

// -------------------------------------------------------------- messages

/// Anthropic's Messages API, for Claude models: `tools` (definitions plus
/// Anthropic's tool-use system prompt), `system` and `messages` (text,
/// image, tool_use, tool_result, text documents, thinking) counted with the
/// model's estimate; output at the required `max_tokens`. Blocks marked with
/// `cache_control` (and everything before them, the cached prefix) are
/// priced as cache writes — the worst case, since a write costs more than
/// plain input and a hit is unknowable in advance; a top-level
/// `cache_control` marks the whole prompt.
pub fn messages(table: &PriceTable, body: &Value) -> Result<Quote, QuoteError> {
    let body = object(body)?;
    let requested = model_name(body)?;
    let (model, price) = table
        .chat_model(requested)
        .filter(|(_, price)| price.is_anthropic())
        .ok_or_else(|| {
            bad(
                "model",
                "unknown-model",
                format!("model {requested:?} is not sold on the Messages API by this gateway"),
            )
        })?;
    let Some(max_tokens) = positive(body, "max_tokens")? else {
        return Err(bad(
            "max_tokens",
            "missing-parameter",
            "`max_tokens` is required",
        ));
    };
    let output_tokens = output_cap(price, model, Some(("max_tokens", max_tokens)))?;
    let messages = messages_param(body)?;
    let encoding = price.encoding;
    let mut prompt = CachedPrompt::default();

    match body.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            if !tools.is_empty() {
                prompt.add(CLAUDE_TOOL_PROMPT_TOKENS);
            }
            for tool in tools {
                prompt.add(encoding.count(&tool.to_string()));
                prompt.mark(tool.get("cache_control"), "tools")?;
            }
        }
        Some(_) => return Err(bad("tools", "invalid-type", "`tools` must be an array")),
    }
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => prompt.add(TOKENS_PER_MESSAGE + encoding.count(text)),
        Some(Value::Array(blocks)) => {
            prompt.add(TOKENS_PER_MESSAGE);
            for block in blocks {
                let text = (block.get("type").and_then(Value::as_str) == Some("text"))
                    .then(|| block.get("text").and_then(Value::as_str))
                    .flatten()
                    .ok_or_else(|| {
                        bad(
                            "system",
                            "invalid-type",
                            "`system` must be a string or an array of text blocks",
                        )
                    })?;
                prompt.add(encoding.count(text));
                prompt.mark(block.get("cache_control"), "system")?;
            }
        }
        Some(_) => {
            return Err(bad(
                "system",
                "invalid-type",
                "`system` must be a string or an array of text blocks",
            ));
        }
    }
    for (index, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        let Some(role @ ("user" | "assistant")) = role else {
            return Err(bad(
                "messages",
                "invalid-value",
                format!("messages[{index}].role must be \"user\" or \"assistant\""),
            ));
        };
        prompt.add(TOKENS_PER_MESSAGE + encoding.count(role));
        match message.get("content") {
            Some(Value::String(text)) => prompt.add(encoding.count(text)),
            Some(Value::Array(blocks)) => {
                for block in blocks {
                    prompt.add(claude_block_tokens(price, block, index)?);
                    prompt.mark(block.get("cache_control"), "messages")?;
                    // A breakpoint inside a tool_result: the whole block is
                    // counted as written (a slight, safe over-count).
                    let nested = block.get("content").and_then(Value::as_array);
                    for part in nested.into_iter().flatten() {
                        prompt.mark(part.get("cache_control"), "messages")?;
                    }
                }
            }
            _ => {
                return Err(bad(
                    "messages",
                    "invalid-type",
                    format!("messages[{index}].content must be a string or an array of blocks"),
                ));
            }
        }
    }
    prompt.mark(body.get("cache_control"), "cache_control")?;
    prompt.add(REPLY_PRIMING_TOKENS);

    let input_tokens = prompt.total;
    fits_context(price, model, "messages", input_tokens, output_tokens)?;
    let one_hour = prompt.one_hour_end;
    let five_minute = prompt.five_minute_end.saturating_sub(one_hour);
    let uncached = input_tokens - one_hour - five_minute;
    // A write is never priced below plain input (the worst case).
    let write_price = price
        .cache_write_input_per_mtok
        .unwrap_or(price.input_per_mtok)
        .max(price.input_per_mtok);
    let write_1h_price = price
        .cache_write_1h_input_per_mtok
        .unwrap_or(write_price)
        .max(write_price);
    let list = per_million(uncached, price.input_per_mtok)
        + per_million(five_minute, write_price)
        + per_million(one_hour, write_1h_price)
        + per_million(output_tokens, price.output_per_mtok);
    let writes = if one_hour + five_minute > 0 {
        format!(" ({} as cache writes)", one_hour + five_minute)
    } else {
        String::new()
    };
    Ok(Quote {
        model: model.to_owned(),
        amount: table.finalize(list),
        description: format!(
            "{model} message: {input_tokens} input tokens{writes}, up to {output_tokens} output tokens"
        ),
        input_units: input_tokens,
        output_units: output_tokens,
    })
}

/// Input tokens in Anthropic's cache order (tools, system, messages) and
/// where the cached prefixes end.
#[derive(Default)]
struct CachedPrompt {
    total: u64,
    /// Tokens up to the last 5-minute / 1-hour `cache_control` breakpoint.
    five_minute_end: u64,
    one_hour_end: u64,
}

impl CachedPrompt {
    fn add(&mut self, tokens: u64) {
        self.total += tokens;
    }

    /// A `cache_control` on the block just added ends a cached prefix here.
    fn mark(
        &mut self,
        cache_control: Option<&Value>,
        param: &'static str,
    ) -> Result<(), QuoteError> {
        let Some(control) = cache_control.filter(|c| !c.is_null()) else {
            return Ok(());
        };
        let invalid = || {
            bad(
                param,
                "invalid-value",
                "`cache_control` must be {\"type\": \"ephemeral\"} with an optional `ttl` of \"5m\" or \"1h\"",
            )
        };
        if control.get("type").and_then(Value::as_str) != Some("ephemeral") {
            return Err(invalid());
        }
        match control.get("ttl") {
            None | Some(Value::Null) => self.five_minute_end = self.total,
            Some(Value::String(ttl)) if ttl == "5m" => self.five_minute_end = self.total,
            Some(Value::String(ttl)) if ttl == "1h" => self.one_hour_end = self.total,
            Some(_) => return Err(invalid()),
        }
        Ok(())
    }
}

/// Tokens of one content block of a Messages request.
fn claude_block_tokens(price: &ChatPrice, block: &Value, index: usize) -> Result<u64, QuoteError> {
    let encoding = price.encoding;
    let text = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or_default();
    let kind = block
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(match kind {
        "text" => encoding.count(text("text")),
        "image" => claude_image_block_tokens(price, block, index)?,
        "tool_use" => {
            let input = block.get("input").map(Value::to_string).unwrap_or_default();
            encoding.count(text("id")) + encoding.count(text("name")) + encoding.count(&input)
        }
        "tool_result" => {
            let content = match block.get("content") {
                None | Some(Value::Null) => 0,
                Some(Value::String(s)) => encoding.count(s),
                Some(Value::Array(parts)) => {
                    let mut sum = 0;
                    for part in parts {
                        sum += claude_block_tokens(price, part, index)?;
                    }
                    sum
                }
                Some(_) => {
                    return Err(bad(
                        "messages",
                        "invalid-type",
                        format!(
                            "messages[{index}] has a tool_result whose content is neither a string nor blocks"
                        ),
                    ));
                }
            };
            encoding.count(text("tool_use_id")) + content
        }
        "document" => match block.pointer("/source/type").and_then(Value::as_str) {
            Some("text") => {
                encoding.count(
                    block
                        .pointer("/source/data")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ) + encoding.count(text("title"))
                    + encoding.count(text("context"))
            }
            _ => {
                return Err(bad(
                    "messages",
                    "unsupported-input",
                    format!(
                        "messages[{index}] has a PDF or file document, whose size cannot be bounded before the call; send its text instead"
                    ),
                ));
            }
        },
        "thinking" => encoding.count(text("thinking")) + encoding.count(text("signature")),
        "redacted_thinking" => encoding.count(text("data")),
        other => {
            return Err(bad(
                "messages",
                "unsupported-input",
                format!(
                    "messages[{index}] has a content block of type {other:?}, which this gateway does not sell"
                ),
            ));
        }
    })
}

fn claude_image_block_tokens(
    price: &ChatPrice,
    block: &Value,
    index: usize,
) -> Result<u64, QuoteError> {
    let Some(cap) = price.image_max_tokens else {
        return Err(bad(
            "messages",
            "unsupported-input",
            format!("messages[{index}] has an image, which this model does not accept"),
        ));
    };
    let source = block.get("source");
    let size = match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("base64") => source
            .and_then(|s| s.get("data"))
            .and_then(Value::as_str)
            .and_then(crate::image::base64_dimensions),
        _ => None,
    };
    Ok(crate::image::claude_image_tokens(size, cap))
}

// ------------------------------------------------------------ embeddings

/// Embeddings: every input's tokens, each within the model's limit.
pub fn embeddings(table: &PriceTable, body: &Value) -> Result<Quote, QuoteError> {
    let body = object(body)?;
    let model = model_name(body)?;
    let (model, price) = table
        .embeddings
        .get_key_value(model)
        .ok_or_else(|| unknown_model(model))?;
    let counts: Vec<u64> = match body.get("input") {
        Some(Value::String(text)) => vec![price.encoding.count(text)],
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_EMBEDDING_INPUTS => {
            items
                .iter()
                .map(|item| embedding_input_tokens(price.encoding, item))
                .collect::<Result<_, _>>()?
        }
        Some(Value::Array(_)) => {
            return Err(bad(
                "input",
                "invalid-value",
                format!("`input` must hold 1 to {MAX_EMBEDDING_INPUTS} items"),
            ));
        }
        Some(_) => {
            return Err(bad(
                "input",
                "invalid-type",
                "`input` must be a string or an array",
            ));
        }
        None => return Err(bad("input", "missing-parameter", "`input` is required")),
    };
    if let Some(too_long) = counts.iter().find(|c| **c > price.max_input_tokens) {
        return Err(bad(
            "input",
            "context-length-exceeded",
            format!(
                "an input has {too_long} tokens; {model} takes at most {}",
                price.max_input_tokens
            ),
        ));
    }
    let tokens: u64 = counts.iter().sum();
    Ok(Quote {
        model: model.clone(),
        amount: table.finalize(per_million(tokens, price.input_per_mtok)),
        description: format!(
            "{model} embeddings: {tokens} input tokens in {} inputs",
            counts.len()
        ),
        input_units: tokens,
        output_units: 0,
    })
}

fn embedding_input_tokens(encoding: Encoding, item: &Value) -> Result<u64, QuoteError> {
    match item {
        Value::String(text) => Ok(encoding.count(text)),
        Value::Number(_) => Ok(1),
        Value::Array(ids) if ids.iter().all(Value::is_u64) => Ok(ids.len() as u64),
        _ => Err(bad(
            "input",
            "invalid-type",
            "`input` items must be strings or token arrays",
        )),
    }
}

// ---------------------------------------------------------------- images

/// Image generation: `n` images of the requested quality and size (`auto`
/// means the dearest one the model offers).
pub fn images(table: &PriceTable, body: &Value) -> Result<Quote, QuoteError> {
    let body = object(body)?;
    let model = match body.get("model") {
        None | Some(Value::Null) => "dall-e-2",
        Some(_) => model_name(body)?,
    };
    let (model, price) = table
        .images
        .get_key_value(model)
        .ok_or_else(|| unknown_model(model))?;
    match body.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => {}
        Some(_) => {
            return Err(bad(
                "prompt",
                "invalid-type",
                "`prompt` must be a non-empty string",
            ));
        }
        None => return Err(bad("prompt", "missing-parameter", "`prompt` is required")),
    }
    let n = positive(body, "n")?.unwrap_or(1);
    if n > price.max_n {
        return Err(bad(
            "n",
            "invalid-value",
            format!("{model} makes at most {} images per request", price.max_n),
        ));
    }
    let text = |key: &'static str, default: &str| -> Result<String, QuoteError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad(
                key,
                "invalid-type",
                format!("`{key}` must be a string"),
            )),
        }
    };
    let size = text("size", &price.default_size)?;
    let quality = text("quality", &price.default_quality)?;
    let matches = |key: &str| {
        let (q, s) = key.split_once(':').unwrap_or_default();
        (quality == "auto" || q == quality) && (size == "auto" || s == size)
    };
    let per_image = price
        .per_image
        .iter()
        .filter(|(key, _)| matches(key))
        .map(|(_, p)| *p)
        .max()
        .ok_or_else(|| {
            let offered: Vec<&str> = price.per_image.keys().map(String::as_str).collect();
            bad(
                "size",
                "invalid-value",
                format!(
                    "{model} does not offer {quality} {size}; it offers {}",
                    offered.join(", ")
                ),
            )
        })?;
    Ok(Quote {
        model: model.clone(),
        amount: table.finalize(per_image * u128::from(n)),
        description: format!("{model}: {n} image(s), {quality} {size}"),
        input_units: 0,
        output_units: n,
    })
}

// ----------------------------------------------------------------- audio

/// Speech: priced by input characters.
pub fn speech(table: &PriceTable, body: &Value) -> Result<Quote, QuoteError> {
    let body = object(body)?;
    let model = model_name(body)?;
    let (model, price) = table
        .speech
        .get_key_value(model)
        .ok_or_else(|| unknown_model(model))?;
    let input = match body.get("input") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(_) => {
            return Err(bad(
                "input",
                "invalid-type",
                "`input` must be a non-empty string",
            ));
        }
        None => return Err(bad("input", "missing-parameter", "`input` is required")),
    };
    if !matches!(
        body.get("voice"),
        Some(Value::String(_)) | Some(Value::Object(_))
    ) {
        return Err(bad("voice", "missing-parameter", "`voice` is required"));
    }
    let chars = input.chars().count() as u64;
    if chars > price.max_input_chars {
        return Err(bad(
            "input",
            "invalid-value",
            format!(
                "`input` has {chars} characters; at most {}",
                price.max_input_chars
            ),
        ));
    }
    Ok(Quote {
        model: model.clone(),
        amount: table.finalize(per_million(chars, price.per_mchar)),
        description: format!("{model} speech: {chars} characters"),
        input_units: chars,
        output_units: 0,
    })
}

/// Transcription: priced by the audio's duration (whole seconds, rounded up).
pub fn transcription(
    table: &PriceTable,
    model: &str,
    duration_secs: f64,
) -> Result<Quote, QuoteError> {
    let (model, price) = table
        .transcription
        .get_key_value(model)
        .ok_or_else(|| unknown_model(model))?;
    if !duration_secs.is_finite() || duration_secs <= 0.0 {
        return Err(bad(
            "file",
            "unreadable-audio",
            "the audio duration could not be determined",
        ));
    }
    let seconds = duration_secs.ceil() as u64;
    Ok(Quote {
        model: model.clone(),
        amount: table.finalize((u128::from(seconds) * price.per_minute).div_ceil(60)),
        description: format!("{model} transcription: {seconds} s of audio"),
        input_units: seconds,
        output_units: 0,
    })
}
