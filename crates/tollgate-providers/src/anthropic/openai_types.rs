//! OpenAI Chat Completions wire types: the request as clients send it, the
//! response, stream chunks and the error body.
//!
//! Request types keep every field the OpenAI API defines, including the
//! ones Anthropic cannot honour (typed loosely as [`Value`] so that any
//! value reaches the validation and gets a precise error), and collect
//! anything else in `extra` so unknown fields can be rejected by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fields this module does not know, by name.
pub type Extra = BTreeMap<String, Value>;

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Stop>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub safety_identifier: Option<String>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    /// Legacy function calling.
    pub functions: Option<Vec<FunctionDef>>,
    pub function_call: Option<FunctionCallChoice>,
    // Known parameters Anthropic cannot honour: accepted only at their
    // neutral value.
    pub n: Option<Value>,
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<Value>,
    pub logit_bias: Option<Value>,
    pub presence_penalty: Option<Value>,
    pub frequency_penalty: Option<Value>,
    pub response_format: Option<Value>,
    pub seed: Option<Value>,
    pub modalities: Option<Value>,
    pub audio: Option<Value>,
    pub prediction: Option<Value>,
    pub reasoning_effort: Option<Value>,
    pub verbosity: Option<Value>,
    pub web_search_options: Option<Value>,
    pub service_tier: Option<Value>,
    pub store: Option<Value>,
    pub metadata: Option<Value>,
    /// A cache-routing hint with no effect on the answer: ignored.
    pub prompt_cache_key: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
    /// Random padding against length side channels: ignored.
    pub include_obfuscation: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// One message of any role; which fields are allowed depends on `role`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
    pub name: Option<String>,
    pub tool_calls: Option<Vec<ToolCall>>,
    pub tool_call_id: Option<String>,
    /// Legacy assistant function call.
    pub function_call: Option<FunctionCall>,
    pub refusal: Option<String>,
    pub audio: Option<Value>,
    /// An earlier answer's reasoning text (see [`ResponseMessage`]): Anthropic
    /// cannot take it back without its signature, and ignores earlier turns'
    /// thinking anyway, so it is accepted and not sent.
    pub reasoning_content: Option<Value>,
    /// An earlier answer's signed thinking blocks, sent back as they were.
    pub thinking_blocks: Option<Vec<ThinkingBlock>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A thinking block as answers carry it (`thinking_blocks`) and requests
/// send it back: Anthropic's own shape, signature included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThinkingBlock {
    Thinking { thinking: String, signature: String },
    RedactedThinking { data: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A content part: `text`, `image_url`, `input_audio`, `file`, `refusal`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub image_url: Option<ImageUrl>,
    pub input_audio: Option<Value>,
    pub file: Option<FilePart>,
    pub refusal: Option<String>,
    /// Anthropic's prompt-cache breakpoint, passed through.
    pub cache_control: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    /// A resolution hint: ignored (Claude picks its own).
    pub detail: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FilePart {
    pub file_data: Option<String>,
    pub file_id: Option<String>,
    pub filename: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An assistant's tool call, in a request's history or in a response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: Option<FunctionCall>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text of the arguments object.
    pub arguments: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: Option<FunctionDef>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `tool_choice`: `"auto" | "none" | "required"` or an object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Object(ToolChoiceObject),
}

/// `{"type":"function","function":{"name":...}}` (or `allowed_tools`,
/// `custom`, which are rejected).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolChoiceObject {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: Option<NamedFunction>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// Legacy `function_call`: `"auto" | "none"` or `{"name":...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FunctionCallChoice {
    Mode(String),
    Named(NamedFunction),
}

// ---------------------------------------------------------------------------
// Responses.

/// A non-streamed `chat.completion`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    /// Always `null`: Anthropic has no log probabilities.
    pub logprobs: Option<Value>,
    pub finish_reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResponseMessage {
    pub role: String,
    /// Concatenated text blocks; `null` when there are none.
    pub content: Option<String>,
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ResponseToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    /// The model's thinking, as text (the convention of OpenAI-compatible
    /// reasoning servers); absent when it did not think.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The same thinking as signed Anthropic blocks, for clients that send
    /// them back in a tool loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<ThinkingBlock>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResponseToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    pub cached_tokens: u64,
}

/// A `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatCompletionChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: i64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoice<'a>>,
    /// Absent unless the client asked for usage; then `null` on every
    /// chunk but the last, which has the totals and no choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: ChunkDelta<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChunkDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    /// A whole thinking block with its signature, once it is complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<[&'a ThinkingBlock; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[ToolCallDelta<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallDelta<'a>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCallDelta<'a> {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionCallDelta<'a>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FunctionCallDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<&'a str>,
}

/// `{"error":{...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}
