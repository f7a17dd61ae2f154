//! Worst-case quotes: what a request may cost at most, from its body and
//! the price table alone. Pure functions, no I/O.

use serde_json::Value;

use crate::table::{ChatPrice, PriceTable, per_million};
use crate::tokens::Encoding;

/// The most choices a chat request may ask for.
pub const MAX_CHOICES: u64 = 8;
/// Tokens OpenAI adds around each chat message, and to prime the reply.
pub(crate) const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
pub(crate) const REPLY_PRIMING_TOKENS: u64 = 3;
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

pub(crate) fn bad(
    param: &'static str,
    code: &'static str,
    message: impl Into<String>,
) -> QuoteError {
    QuoteError {
        param: Some(param),
        message: message.into(),
        code,
    }
}

pub(crate) fn object(body: &Value) -> Result<&serde_json::Map<String, Value>, QuoteError> {
    body.as_object().ok_or_else(|| QuoteError {
        param: None,
        message: "the request body must be a JSON object".into(),
        code: "invalid-body",
    })
}

pub(crate) fn model_name(body: &serde_json::Map<String, Value>) -> Result<&str, QuoteError> {
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
pub(crate) fn positive(
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

pub(crate) fn messages_param(
    body: &serde_json::Map<String, Value>,
) -> Result<&Vec<Value>, QuoteError> {
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
pub(crate) fn output_cap(
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
pub(crate) fn fits_context(
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

mod messages;
pub use messages::{chat_via_messages, messages, messages_input_tokens};

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
