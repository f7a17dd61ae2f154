//! Deterministic answers: JSON and SSE, with usage and the prompt cache.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::PromptCache;
use super::validate::{PromptBlock, ToolChoice, Ttl, Valid};
use crate::MockOptions;
use crate::schema::fill_schema;
use crate::text::{estimate_tokens, seed, words};

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

pub(super) fn answer(valid: &Valid<'_>, options: &MockOptions, cache: &PromptCache) -> Response {
    if crate::asks_for_a_rate_limit(valid.messages) {
        let mut response = super::anthropic_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        );
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("7"));
        return response;
    }
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
    // Thinking comes first and counts as output, as Anthropic bills it.
    let thinking = valid
        .thinking
        .then(|| words(&seed(&[&digest[..], b"think"].concat()), THINKING_WORDS).join(" "));
    let thinking_tokens = thinking.as_deref().map_or(0, |t| pieces(t).len() as u64);
    let output_tokens = thinking_tokens
        + match &content {
            Content::Text { text, .. } => pieces(text).len().max(1) as u64,
            Content::ToolUse { name, input, .. } => estimate_tokens(&format!("{name}{input}")),
        };
    let id = format!("msg_01{}", id_chars(&digest));
    let request_id = format!("req_01{}", derived(b"req"));
    if valid.stream {
        return stream(
            valid,
            Answer {
                id: &id,
                request_id: &request_id,
                thinking: thinking.as_deref(),
                content: &content,
            },
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
    let mut blocks = Vec::new();
    if let Some(thinking) = &thinking {
        blocks.push(json!({"type": "thinking", "thinking": thinking,
            "signature": super::signature(thinking)}));
    }
    blocks.push(block);
    let body = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": valid.model,
        "content": blocks,
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

/// Words of thinking before an answer, when thinking is on.
const THINKING_WORDS: usize = 12;

fn text_answer(valid: &Valid<'_>, options: &MockOptions, seed: &[u8; 32]) -> Content {
    if let Some(schema) = valid.output_schema {
        // Structured output: JSON that fits the schema, whole.
        return Content::Text {
            text: fill_schema(schema, None).to_string(),
            stop_reason: "end_turn",
            stop_sequence: None,
        };
    }
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

/// What a streamed answer is made of.
struct Answer<'a> {
    id: &'a str,
    request_id: &'a str,
    thinking: Option<&'a str>,
    content: &'a Content,
}

fn stream(
    valid: &Valid<'_>,
    answer: Answer<'_>,
    usage: InputUsage,
    output_tokens: u64,
    interval: Duration,
) -> Response {
    let Answer {
        id,
        request_id,
        thinking,
        content,
    } = answer;
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
    let mut index = 0;
    if let Some(thinking) = thinking {
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ));
        for piece in pieces(thinking) {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": piece}}),
            ));
        }
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": super::signature(thinking)}}),
        ));
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        index = 1;
    }
    events.push((
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": start}),
    ));
    events.push(("ping", json!({"type": "ping"})));
    for delta in deltas {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        ));
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
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
pub(super) fn id_chars(seed: &[u8; 32]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    seed[..22]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
