//! Reading usage: what the upstream reports (a JSON body's `usage`, an SSE
//! usage chunk, Anthropic's `message_start`/`message_delta`, a Responses
//! `response.completed`), and what a stream delivered, counted with the
//! model's tokenizer when the upstream reports nothing.

use serde_json::Value;
use tollgate_pricing::tokens::Encoding;
use tollgate_pricing::{Endpoint, UsageDetail};

use crate::sse::SseEvent;

/// What an answer's `usage` member reports, in `endpoint`'s format.
pub fn usage_report(endpoint: Endpoint, usage: &Value) -> Option<UsageDetail> {
    match endpoint {
        Endpoint::Messages => UsageDetail::from_anthropic(usage),
        _ => openai_usage(usage),
    }
}

/// OpenAI's usage object (chat/embeddings or Responses field names).
pub fn openai_usage(usage: &Value) -> Option<UsageDetail> {
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| usage.get(*n).and_then(Value::as_u64))
    };
    let input_tokens = field(&["prompt_tokens", "input_tokens"])?;
    Some(UsageDetail {
        input_tokens,
        cached_tokens: usage
            .pointer("/prompt_tokens_details/cached_tokens")
            .or_else(|| usage.pointer("/input_tokens_details/cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
        output_tokens: field(&["completion_tokens", "output_tokens"]).unwrap_or(0),
        ..UsageDetail::default()
    })
}

/// What one event of a stream means for metering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventReading {
    /// A chat chunk that carries only usage (`choices: []`): hidden from
    /// clients that did not ask for it.
    pub usage_only: bool,
}

/// Follows the usage a stream reports, event by event.
#[derive(Debug, Default, Clone)]
pub struct StreamUsage {
    reported: Option<UsageDetail>,
}

impl StreamUsage {
    pub fn reported(&self) -> Option<UsageDetail> {
        self.reported
    }

    /// Notes the usage `event` reports.
    pub fn observe(&mut self, event: &SseEvent) -> EventReading {
        let plain = EventReading { usage_only: false };
        let Some(data) = event.data.as_deref() else {
            return plain;
        };
        // Only usage-bearing events are parsed; the rest pass untouched.
        if !data.contains("\"usage\"") {
            return plain;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return plain;
        };
        match chunk["type"].as_str() {
            // Anthropic: input and cache counts come with `message_start`,
            // the cumulative output (and sometimes input) with `message_delta`.
            Some("message_start") => {
                if let Some(found) = UsageDetail::from_anthropic(&chunk["message"]["usage"]) {
                    self.reported = Some(found);
                }
                return plain;
            }
            Some("message_delta") => {
                let delta = &chunk["usage"];
                let mut current = self.reported.unwrap_or_default();
                if delta.get("input_tokens").and_then(Value::as_u64).is_some()
                    && let Some(full) = UsageDetail::from_anthropic(delta)
                {
                    current = UsageDetail {
                        output_tokens: current.output_tokens,
                        ..full
                    };
                }
                if let Some(output) = delta.get("output_tokens").and_then(Value::as_u64) {
                    current.output_tokens = output;
                }
                self.reported = Some(current);
                return plain;
            }
            _ => {}
        }
        // Chat chunks carry `usage`; Responses events carry `response.usage`.
        let reported =
            openai_usage(&chunk["usage"]).or_else(|| openai_usage(&chunk["response"]["usage"]));
        if let Some(found) = reported {
            self.reported = Some(found);
        }
        EventReading {
            usage_only: reported.is_some()
                && chunk["choices"].as_array().is_some_and(Vec::is_empty),
        }
    }
}

/// Whether `event` is a chat chunk that carries only usage (`choices: []`).
pub fn is_usage_only_chunk(event: &SseEvent) -> bool {
    let Some(data) = event.data.as_deref() else {
        return false;
    };
    if !data.contains("\"usage\"") {
        return false;
    }
    serde_json::from_str::<Value>(data).is_ok_and(|chunk| {
        openai_usage(&chunk["usage"]).is_some()
            && chunk["choices"].as_array().is_some_and(Vec::is_empty)
    })
}

/// Counts what a stream delivers, with the model's tokenizer.
#[derive(Debug, Clone)]
pub struct DeliveredTokens {
    encoding: Option<Encoding>,
}

impl DeliveredTokens {
    pub fn new(encoding: Option<Encoding>) -> Self {
        Self { encoding }
    }

    /// Output tokens `event` delivers (content, tool-call arguments,
    /// reasoning).
    pub fn in_event(&self, event: &SseEvent) -> u64 {
        let Some(encoding) = self.encoding else {
            return 0;
        };
        let Some(chunk) = event.json() else {
            return 0;
        };
        let text = delivered_text(&chunk);
        if text.is_empty() {
            0
        } else {
            encoding.count(&text).max(1)
        }
    }

    /// Output tokens in a whole non-streamed answer.
    pub fn in_body(&self, body: &Value) -> u64 {
        let Some(encoding) = self.encoding else {
            return 0;
        };
        let mut text = String::new();
        if let Some(choices) = body["choices"].as_array() {
            for choice in choices {
                let message = &choice["message"];
                for field in ["content", "reasoning_content", "refusal"] {
                    if let Some(part) = message[field].as_str() {
                        text.push_str(part);
                    }
                }
                if let Some(calls) = message["tool_calls"].as_array() {
                    for call in calls {
                        text.push_str(call["function"]["name"].as_str().unwrap_or(""));
                        text.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                    }
                }
            }
        }
        // Anthropic Messages content blocks.
        if let Some(blocks) = body["content"].as_array() {
            for block in blocks {
                for field in ["text", "thinking"] {
                    if let Some(part) = block[field].as_str() {
                        text.push_str(part);
                    }
                }
                if block["type"] == "tool_use" {
                    text.push_str(&block["input"].to_string());
                }
            }
        }
        // Responses output items.
        if let Some(items) = body["output"].as_array() {
            for item in items {
                if let Some(parts) = item["content"].as_array() {
                    for part in parts {
                        text.push_str(part["text"].as_str().unwrap_or(""));
                    }
                }
            }
        }
        if text.is_empty() {
            0
        } else {
            encoding.count(&text)
        }
    }
}

/// The text an event delivers: chat deltas (content, reasoning, tool-call
/// arguments), Responses text deltas, Anthropic text/tool/thinking deltas.
fn delivered_text(chunk: &Value) -> String {
    let mut delivered = String::new();
    if let Some(choices) = chunk["choices"].as_array() {
        for choice in choices {
            let delta = &choice["delta"];
            for field in ["content", "reasoning_content", "refusal"] {
                if let Some(part) = delta[field].as_str() {
                    delivered.push_str(part);
                }
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                for call in calls {
                    delivered.push_str(call["function"]["name"].as_str().unwrap_or(""));
                    delivered.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                }
            }
        }
    }
    if let Some(delta) = chunk["delta"].as_str() {
        delivered.push_str(delta);
    }
    for field in ["text", "partial_json", "thinking"] {
        if let Some(part) = chunk["delta"][field].as_str() {
            delivered.push_str(part);
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseFramer;

    fn events(stream: &str) -> Vec<SseEvent> {
        let mut framer = SseFramer::new();
        let mut out = framer.push(stream.as_bytes()).unwrap();
        out.extend(framer.finish());
        out
    }

    #[test]
    fn anthropic_stream_usage_is_combined_without_double_counting() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":20,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":50,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n",
        );
        let mut usage = StreamUsage::default();
        for event in events(stream) {
            assert!(!usage.observe(&event).usage_only);
        }
        let usage = usage.reported().unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.cached_tokens,
                usage.cache_write_tokens,
                usage.output_tokens
            ),
            (170, 50, 100, 42)
        );
    }

    #[test]
    fn the_chat_usage_chunk_is_read_and_marked_usage_only() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,",
            "\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut usage = StreamUsage::default();
        let readings: Vec<bool> = events(stream)
            .iter()
            .map(|e| usage.observe(e).usage_only)
            .collect();
        assert_eq!(readings, vec![false, true, false]);
        let usage = usage.reported().unwrap();
        assert_eq!(
            (usage.input_tokens, usage.cached_tokens, usage.output_tokens),
            (7, 3, 2)
        );
    }
}
