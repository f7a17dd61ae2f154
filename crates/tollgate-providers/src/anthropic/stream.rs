//! Anthropic Messages SSE events → OpenAI `chat.completion.chunk`s.
//!
//! Feed each upstream event (its `event:` name and `data:` text) to
//! [`StreamTranslator::on_event`]; send every returned string to the client
//! as `data: <string>\n\n`. When [`StreamTranslator::finished`] turns true
//! after `message_stop`, send `data: [DONE]`; when it turned true because of
//! an error ([`StreamTranslator::errored`]), close the stream without
//! `[DONE]`.
//!
//! | Anthropic event                         | chunks emitted |
//! |-----------------------------------------|----------------|
//! | `message_start`                         | `delta: {"role":"assistant","content":""}` |
//! | `content_block_start` text              | content delta if the block starts with text |
//! | `content_block_start` tool_use          | `tool_calls: [{index, id, type: "function", function: {name, arguments: ""}}]`, `index` 0-based among tool calls |
//! | `content_block_delta` `text_delta`      | `delta: {"content": text}` |
//! | `content_block_delta` `input_json_delta`| `tool_calls: [{index, function: {arguments: fragment}}]` (empty fragments skipped) |
//! | `content_block_stop` tool_use           | `arguments: "{}"` if no fragment arrived (as the non-streamed answer has) |
//! | `content_block_delta` `thinking_delta`  | `delta: {"reasoning_content": text}` |
//! | `content_block_stop` thinking / redacted_thinking | `delta: {"thinking_blocks": [the whole signed block]}` (for clients that send it back) |
//! | `signature_delta`                       | nothing (the signature goes into the block above) |
//! | citations, server-tool blocks, `ping`, unknown events | nothing |
//! | `message_delta`                         | nothing: stop reason and usage are recorded |
//! | `message_stop`                          | `delta: {}` with `finish_reason`, then with `include_usage` a usage chunk (`choices: []`) |
//! | `error`                                 | `{"error":{"message","type","param":null,"code"}}` (see [`super::from_anthropic::error`]); translation ends |
//!
//! Usage is combined per field: `message_start` and `message_delta` may both
//! carry any field, and `message_delta`'s counts are cumulative, so the
//! latest non-null value of each field wins — nothing is added twice.
//!
//! With legacy `functions` the single call is streamed as
//! `delta.function_call` (`name`, then `arguments` fragments) and the finish
//! reason is `function_call`.

use serde::Serialize;

use super::anthropic_types::{BlockDelta, ResponseBlock, StreamEvent, Usage};
use super::from_anthropic::{self, arguments_text, completion_id};
use super::openai_types::{
    ChatCompletionChunk, ChunkChoice, ChunkDelta, FunctionCallDelta, ThinkingBlock, ToolCallDelta,
};
use super::{AnthropicUsage, TranslateError};

#[derive(Debug, Clone)]
enum Block {
    Text,
    Tool {
        /// Index among the tool calls (OpenAI's `index`).
        call: u32,
        /// Streamed as a legacy `function_call`.
        legacy: bool,
        /// An `arguments` fragment has been sent.
        sent_args: bool,
        /// The input given at `content_block_start` (normally `{}`).
        start_input: serde_json::Value,
    },
    /// A thinking block being streamed: its text and signature so far.
    Thinking(ThinkingBlock),
    Ignored,
}

/// Translates one Anthropic stream; one per response.
#[derive(Debug, Clone)]
pub struct StreamTranslator {
    model: String,
    include_usage: bool,
    created: i64,
    legacy_functions: bool,
    id: String,
    blocks: Vec<Block>,
    tool_calls: u32,
    stop_reason: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_1h_input_tokens: Option<u64>,
    finished: bool,
    errored: bool,
}

impl StreamTranslator {
    /// `model`: the model the client asked for; `include_usage`: its
    /// `stream_options.include_usage`; `created`: Unix seconds for every
    /// chunk.
    pub fn new(model: &str, include_usage: bool, created: i64) -> Self {
        Self {
            model: model.to_owned(),
            include_usage,
            created,
            legacy_functions: false,
            id: completion_id("unknown"),
            blocks: Vec::new(),
            tool_calls: 0,
            stop_reason: None,
            input_tokens: None,
            output_tokens: None,
            cache_creation_input_tokens: None,
            cache_read_input_tokens: None,
            cache_creation_1h_input_tokens: None,
            finished: false,
            errored: false,
        }
    }

    /// Stream the first tool call as a legacy `function_call`.
    pub fn with_legacy_functions(mut self, legacy: bool) -> Self {
        self.legacy_functions = legacy;
        self
    }

    /// The translation is over: `message_stop` or an `error` arrived.
    /// Later events are ignored.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// It ended with an error: close the stream without `[DONE]`.
    pub fn errored(&self) -> bool {
        self.errored
    }

    /// The last `stop_reason` seen.
    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    /// Token totals so far, as Anthropic reported them, for billing (0 for
    /// counts not yet seen). Read it once [`Self::finished`]: the metering
    /// of a translated stream uses this, not the OpenAI usage chunk.
    pub fn usage(&self) -> AnthropicUsage {
        AnthropicUsage {
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_creation_input_tokens: self.cache_creation_input_tokens.unwrap_or(0),
            cache_read_input_tokens: self.cache_read_input_tokens.unwrap_or(0),
            cache_creation_1h_input_tokens: self
                .cache_creation_1h_input_tokens
                .unwrap_or(0)
                .min(self.cache_creation_input_tokens.unwrap_or(0)),
        }
    }

    fn record_usage(&mut self, u: &Usage) {
        fn latest(slot: &mut Option<u64>, v: Option<u64>) {
            if v.is_some() {
                *slot = v;
            }
        }
        latest(&mut self.input_tokens, u.input_tokens);
        latest(&mut self.output_tokens, u.output_tokens);
        latest(
            &mut self.cache_creation_input_tokens,
            u.cache_creation_input_tokens,
        );
        latest(&mut self.cache_read_input_tokens, u.cache_read_input_tokens);
        latest(
            &mut self.cache_creation_1h_input_tokens,
            u.cache_creation.and_then(|c| c.ephemeral_1h_input_tokens),
        );
    }

    fn chunk(&self, delta: ChunkDelta<'_>, finish_reason: Option<&'static str>) -> String {
        to_json(&ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: self.include_usage.then_some(None),
        })
    }

    fn usage_chunk(&self) -> String {
        to_json(&ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: Vec::new(),
            usage: Some(Some(self.usage().to_openai())),
        })
    }

    fn tool_delta(
        &self,
        call: u32,
        legacy: bool,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
    ) -> String {
        let function = FunctionCallDelta {
            name,
            arguments: Some(arguments),
        };
        let delta = if legacy {
            ChunkDelta {
                function_call: Some(function),
                ..ChunkDelta::default()
            }
        } else {
            ChunkDelta {
                tool_calls: Some([ToolCallDelta {
                    index: call,
                    id,
                    kind: id.map(|_| "function"),
                    function,
                }]),
                ..ChunkDelta::default()
            }
        };
        self.chunk(delta, None)
    }

    fn reasoning_delta(&self, text: &str) -> String {
        self.chunk(
            ChunkDelta {
                reasoning_content: Some(text),
                ..ChunkDelta::default()
            },
            None,
        )
    }

    fn text_delta(&self, text: &str) -> String {
        self.chunk(
            ChunkDelta {
                content: Some(text),
                ..ChunkDelta::default()
            },
            None,
        )
    }

    /// Translates one event. `event` is the SSE `event:` name (may be
    /// empty; the `data` JSON's `type` decides). Returns the chunk JSON
    /// strings to send, in order. An `Err` means the upstream sent an event
    /// that cannot be read (code `upstream_invalid_event`); the translation
    /// is then over and errored.
    pub fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<String>, TranslateError> {
        if self.finished || event == "ping" {
            return Ok(Vec::new());
        }
        let data = data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let ev: StreamEvent = match serde_json::from_str(data) {
            Ok(ev) => ev,
            Err(e) => {
                self.finished = true;
                self.errored = true;
                return Err(TranslateError::body(
                    "upstream_invalid_event",
                    format!("unreadable Anthropic stream event `{event}`: {e}"),
                ));
            }
        };
        let mut out = Vec::new();
        match ev {
            StreamEvent::MessageStart { message } => {
                self.id = completion_id(&message.id);
                self.record_usage(&message.usage);
                out.push(self.chunk(
                    ChunkDelta {
                        role: Some("assistant"),
                        content: Some(""),
                        ..ChunkDelta::default()
                    },
                    None,
                ));
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let block = match content_block {
                    ResponseBlock::Text { text } => {
                        if !text.is_empty() {
                            out.push(self.text_delta(&text));
                        }
                        Block::Text
                    }
                    ResponseBlock::ToolUse { id, name, input } => {
                        let call = self.tool_calls;
                        self.tool_calls += 1;
                        let legacy = self.legacy_functions && call == 0;
                        // Legacy deltas have no index; later calls (not
                        // expected: parallel use is disabled) use tool_calls.
                        out.push(self.tool_delta(call, legacy, Some(&id), Some(&name), ""));
                        Block::Tool {
                            call,
                            legacy,
                            sent_args: false,
                            start_input: input,
                        }
                    }
                    ResponseBlock::Thinking {
                        thinking,
                        signature,
                    } => {
                        if !thinking.is_empty() {
                            out.push(self.reasoning_delta(&thinking));
                        }
                        Block::Thinking(ThinkingBlock::Thinking {
                            thinking,
                            signature,
                        })
                    }
                    ResponseBlock::RedactedThinking { data } => {
                        Block::Thinking(ThinkingBlock::RedactedThinking { data })
                    }
                    ResponseBlock::Other => Block::Ignored,
                };
                let i = index as usize;
                if self.blocks.len() <= i {
                    self.blocks.resize(i + 1, Block::Ignored);
                }
                self.blocks[i] = block;
            }
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => {
                    if !text.is_empty() {
                        out.push(self.text_delta(&text));
                    }
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    if !partial_json.is_empty()
                        && let Some(Block::Tool {
                            call,
                            legacy,
                            sent_args,
                            ..
                        }) = self.blocks.get_mut(index as usize)
                    {
                        *sent_args = true;
                        let (call, legacy) = (*call, *legacy);
                        out.push(self.tool_delta(call, legacy, None, None, &partial_json));
                    }
                }
                BlockDelta::ThinkingDelta { thinking } => {
                    if let Some(Block::Thinking(ThinkingBlock::Thinking {
                        thinking: all, ..
                    })) = self.blocks.get_mut(index as usize)
                    {
                        all.push_str(&thinking);
                    }
                    if !thinking.is_empty() {
                        out.push(self.reasoning_delta(&thinking));
                    }
                }
                BlockDelta::SignatureDelta { signature } => {
                    if let Some(Block::Thinking(ThinkingBlock::Thinking {
                        signature: all, ..
                    })) = self.blocks.get_mut(index as usize)
                    {
                        all.push_str(&signature);
                    }
                }
                BlockDelta::Other => {}
            },
            StreamEvent::ContentBlockStop { index } => {
                if let Some(Block::Thinking(block)) = self.blocks.get(index as usize) {
                    out.push(self.chunk(
                        ChunkDelta {
                            thinking_blocks: Some([block]),
                            ..ChunkDelta::default()
                        },
                        None,
                    ));
                }
                if let Some(Block::Tool {
                    call,
                    legacy,
                    sent_args: false,
                    start_input,
                }) = self.blocks.get(index as usize)
                {
                    // No fragment: the input was complete at the start
                    // (normally `{}`); send it so arguments parse as JSON.
                    let args = arguments_text(start_input);
                    out.push(self.tool_delta(*call, *legacy, None, None, &args));
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                if let Some(u) = usage {
                    self.record_usage(&u);
                }
            }
            StreamEvent::MessageStop => {
                let mut finish = from_anthropic::finish_reason(self.stop_reason.as_deref());
                if finish == "tool_calls" && self.legacy_functions && self.tool_calls == 1 {
                    finish = "function_call";
                }
                out.push(self.chunk(ChunkDelta::default(), Some(finish)));
                if self.include_usage {
                    out.push(self.usage_chunk());
                }
                self.finished = true;
            }
            StreamEvent::Error { error } => {
                let (_, body) = from_anthropic::error_object(500, &error);
                out.push(body.to_string());
                self.finished = true;
                self.errored = true;
            }
            StreamEvent::Ping | StreamEvent::Other => {}
        }
        Ok(out)
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    // Our own chunk types (strings, numbers, maps with string keys) always
    // serialize; an empty object is a harmless stand-in should one not.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}
