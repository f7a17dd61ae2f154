//! Anthropic's Messages API: quotes, and the input count `count_tokens`
//! answers with.

use serde_json::Value;

use super::{
    CLAUDE_TOOL_PROMPT_TOKENS, Quote, QuoteError, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, bad,
    fits_context, messages_param, model_name, object, output_cap, positive,
};
use crate::table::{ChatPrice, PriceTable, per_million};

/// Anthropic's Messages API, for Claude models: `tools` (definitions plus
/// Anthropic's tool-use system prompt), `system` and `messages` (text,
/// image, tool_use, tool_result, text documents, thinking) counted with the
/// model's estimate; output at the required `max_tokens`. Blocks marked with
/// `cache_control` (and everything before them, the cached prefix) are
/// priced as cache writes — the worst case, since a write costs more than
/// plain input and a hit is unknowable in advance; a top-level
/// `cache_control` marks the whole prompt.
pub fn messages(table: &PriceTable, body: &Value) -> Result<Quote, QuoteError> {
    messages_quote(table, body, "message")
}

/// A chat completion translated into a Messages request, priced as what is
/// sent upstream: `body` is the translated Messages request, so its
/// `max_tokens` already holds the thinking budget the translation chose
/// and its blocks the `cache_control` breakpoints the client set.
pub fn chat_via_messages(table: &PriceTable, body: &Value) -> Result<Quote, QuoteError> {
    messages_quote(table, body, "chat completion")
}

/// The input tokens of a Messages request, counted as quotes count them
/// (`POST /v1/messages/count_tokens`): the canonical model and the count.
/// `max_tokens` is not needed.
pub fn messages_input_tokens(
    table: &PriceTable,
    body: &Value,
) -> Result<(String, u64), QuoteError> {
    let body = object(body)?;
    let (model, price) = claude_model(table, body)?;
    let prompt = prompt_tokens(price, body)?;
    Ok((model.to_owned(), prompt.total))
}

fn claude_model<'t>(
    table: &'t PriceTable,
    body: &serde_json::Map<String, Value>,
) -> Result<(&'t str, &'t ChatPrice), QuoteError> {
    let requested = model_name(body)?;
    table
        .chat_model(requested)
        .filter(|(_, price)| price.is_anthropic())
        .ok_or_else(|| {
            bad(
                "model",
                "unknown-model",
                format!("model {requested:?} is not sold on the Messages API by this gateway"),
            )
        })
}

fn messages_quote(table: &PriceTable, body: &Value, what: &str) -> Result<Quote, QuoteError> {
    let body = object(body)?;
    let (model, price) = claude_model(table, body)?;
    let Some(max_tokens) = positive(body, "max_tokens")? else {
        return Err(bad(
            "max_tokens",
            "missing-parameter",
            "`max_tokens` is required",
        ));
    };
    let output_tokens = output_cap(price, model, Some(("max_tokens", max_tokens)))?;
    let prompt = prompt_tokens(price, body)?;
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
            "{model} {what}: {input_tokens} input tokens{writes}, up to {output_tokens} output tokens"
        ),
        input_units: input_tokens,
        output_units: output_tokens,
    })
}

/// Every input token of a Messages request, in Anthropic's cache order
/// (tools, system, messages), with where the cached prefixes end. A JSON
/// output schema (`output_config.format`) is counted like a tool: its
/// definition plus the system prompt Anthropic adds for it.
fn prompt_tokens(
    price: &ChatPrice,
    body: &serde_json::Map<String, Value>,
) -> Result<CachedPrompt, QuoteError> {
    let messages = messages_param(body)?;
    let encoding = price.encoding;
    let mut prompt = CachedPrompt::default();
    // Counted first: inside any cached prefix, the dearer worst case.
    let format = body
        .get("output_config")
        .and_then(|c| c.get("format"))
        .filter(|f| !f.is_null());
    if let Some(format) = format {
        prompt.add(CLAUDE_TOOL_PROMPT_TOKENS + encoding.count(&format.to_string()));
    }
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
    Ok(prompt)
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
