//! OpenAI Chat Completions request → Anthropic Messages request.
//!
//! See the [module docs](super) for the decisions (unknown fields,
//! mid-conversation system messages, temperature, max_tokens).

use serde_json::{Map, Value, json};

use super::TranslateError;
use super::anthropic_types::{
    ContentBlock, Message, MessagesRequest, Metadata, Role, Source, TextBlock, Tool, ToolChoice,
    ToolResultContent,
};
use super::openai_types::{
    self as oa, ChatRequest, Content, ContentPart, Extra, FunctionCallChoice, Stop,
};

const UNSUPPORTED_PARAM: &str = "unsupported_parameter";
const UNSUPPORTED_VALUE: &str = "unsupported_value";
const INVALID_VALUE: &str = "invalid_value";
const MISSING: &str = "missing_required_parameter";

/// Image types Anthropic accepts.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Translates `req`; `defaults(model)` gives `max_tokens` when the client
/// set none.
pub fn request(
    req: &ChatRequest,
    defaults: &dyn Fn(&str) -> Option<u32>,
) -> Result<MessagesRequest, TranslateError> {
    reject_unknown(&req.extra, "")?;
    reject_unsupported(req)?;

    let model = match req.model.as_deref() {
        Some(m) if !m.is_empty() => m,
        _ => return Err(TranslateError::new("model", MISSING, "`model` is required")),
    };
    let messages = match req.messages.as_deref() {
        Some(m) if !m.is_empty() => m,
        Some(_) => {
            return Err(TranslateError::new(
                "messages",
                INVALID_VALUE,
                "`messages` must contain at least one message",
            ));
        }
        None => {
            return Err(TranslateError::new(
                "messages",
                MISSING,
                "`messages` is required",
            ));
        }
    };

    let max_tokens = max_tokens(req, model, defaults)?;

    if let Some(t) = req.temperature
        && !(0.0..=1.0).contains(&t)
    {
        return Err(TranslateError::new(
            "temperature",
            UNSUPPORTED_VALUE,
            format!(
                "temperature {t} is out of range for Anthropic models, which accept 0 to 1 \
                 (OpenAI's 0-2 range is neither clamped nor rescaled)"
            ),
        ));
    }
    if let Some(p) = req.top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(TranslateError::new(
            "top_p",
            INVALID_VALUE,
            format!("top_p {p} must be between 0 and 1"),
        ));
    }

    let stop_sequences = match &req.stop {
        None => None,
        Some(Stop::One(s)) => Some(vec![s.clone()]),
        Some(Stop::Many(v)) if v.is_empty() => None,
        Some(Stop::Many(v)) => Some(v.clone()),
    };

    let metadata = user_id(req)?.map(|user_id| Metadata { user_id });

    if let Some(o) = &req.stream_options {
        reject_unknown(&o.extra, "stream_options")?;
    }

    let (tools, tool_choice) = tools(req)?;
    let (system, messages) = messages_and_system(messages)?;

    Ok(MessagesRequest {
        model: model.to_owned(),
        messages,
        max_tokens,
        system,
        metadata,
        stop_sequences,
        stream: (req.stream == Some(true)).then_some(true),
        temperature: req.temperature,
        top_p: req.top_p,
        tools,
        tool_choice,
    })
}

fn unknown_field(path: &str, key: &str) -> TranslateError {
    let param = if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    };
    TranslateError::new(
        param.clone(),
        UNSUPPORTED_PARAM,
        format!(
            "unknown parameter `{param}`: parameters this gateway cannot translate for Anthropic \
             models are rejected, not dropped"
        ),
    )
}

/// Rejects the first non-null field in `extra`.
fn reject_unknown(extra: &Extra, path: &str) -> Result<(), TranslateError> {
    match extra.iter().find(|(_, v)| !v.is_null()) {
        Some((k, _)) => Err(unknown_field(path, k)),
        None => Ok(()),
    }
}

fn unsupported(param: &str, why: &str) -> TranslateError {
    TranslateError::new(
        param,
        UNSUPPORTED_PARAM,
        format!("`{param}` is not supported for Anthropic models: {why}"),
    )
}

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

/// Known OpenAI parameters Anthropic cannot honour: only their neutral
/// values pass.
fn reject_unsupported(req: &ChatRequest) -> Result<(), TranslateError> {
    type Check = (
        &'static str,
        fn(&ChatRequest) -> Option<&Value>,
        fn(&Value) -> bool,
        &'static str,
    );
    const CHECKS: &[Check] = &[
        (
            "n",
            |r| r.n.as_ref(),
            |v| v.as_u64() == Some(1),
            "Anthropic returns exactly one choice (only n = 1 is accepted)",
        ),
        (
            "logprobs",
            |r| r.logprobs.as_ref(),
            |v| v == &Value::Bool(false),
            "Anthropic does not return log probabilities",
        ),
        (
            "top_logprobs",
            |r| r.top_logprobs.as_ref(),
            is_zero,
            "Anthropic does not return log probabilities",
        ),
        (
            "logit_bias",
            |r| r.logit_bias.as_ref(),
            |v| v.as_object().is_some_and(Map::is_empty),
            "Anthropic has no token biasing",
        ),
        (
            "presence_penalty",
            |r| r.presence_penalty.as_ref(),
            is_zero,
            "Anthropic has no presence penalty (only 0 is accepted)",
        ),
        (
            "frequency_penalty",
            |r| r.frequency_penalty.as_ref(),
            is_zero,
            "Anthropic has no frequency penalty (only 0 is accepted)",
        ),
        (
            "response_format",
            |r| r.response_format.as_ref(),
            |v| {
                v.get("type").and_then(Value::as_str) == Some("text")
                    && v.as_object().is_some_and(|o| o.len() == 1)
            },
            "Anthropic has no JSON mode or JSON-schema output; only {\"type\":\"text\"} is accepted",
        ),
        (
            "seed",
            |r| r.seed.as_ref(),
            |_| false,
            "Anthropic has no deterministic sampling seed",
        ),
        (
            "modalities",
            |r| r.modalities.as_ref(),
            |v| v.as_array().is_some_and(|a| a.iter().all(|m| m == "text")),
            "Anthropic models answer in text only",
        ),
        (
            "audio",
            |r| r.audio.as_ref(),
            |_| false,
            "Anthropic models do not produce audio",
        ),
        (
            "prediction",
            |r| r.prediction.as_ref(),
            |_| false,
            "Anthropic has no predicted outputs",
        ),
        (
            "reasoning_effort",
            |r| r.reasoning_effort.as_ref(),
            |_| false,
            "there is no faithful mapping to Anthropic's extended thinking budget",
        ),
        (
            "verbosity",
            |r| r.verbosity.as_ref(),
            |_| false,
            "Anthropic has no verbosity control",
        ),
        (
            "web_search_options",
            |r| r.web_search_options.as_ref(),
            |_| false,
            "OpenAI's built-in web search is not available",
        ),
        (
            "service_tier",
            |r| r.service_tier.as_ref(),
            |v| v == "auto" || v == "default",
            "only \"auto\" and \"default\" are accepted",
        ),
        (
            "store",
            |r| r.store.as_ref(),
            |v| v == &Value::Bool(false),
            "completions are not stored",
        ),
        (
            "metadata",
            |r| r.metadata.as_ref(),
            |v| v.as_object().is_some_and(Map::is_empty),
            "OpenAI stored-completion metadata has no Anthropic counterpart (use `user` for \
             Anthropic's metadata.user_id)",
        ),
    ];
    for (name, get, neutral, why) in CHECKS {
        if let Some(v) = get(req)
            && !v.is_null()
            && !neutral(v)
        {
            return Err(unsupported(name, why));
        }
    }
    Ok(())
}

fn max_tokens(
    req: &ChatRequest,
    model: &str,
    defaults: &dyn Fn(&str) -> Option<u32>,
) -> Result<u32, TranslateError> {
    let (param, n) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(a), Some(b)) if a != b => {
            return Err(TranslateError::new(
                "max_tokens",
                INVALID_VALUE,
                "`max_tokens` and `max_completion_tokens` are both set, to different values",
            ));
        }
        (Some(a), _) => ("max_completion_tokens", a),
        (None, Some(b)) => ("max_tokens", b),
        (None, None) => {
            return defaults(model).filter(|n| *n > 0).ok_or_else(|| {
                TranslateError::new(
                    "max_tokens",
                    MISSING,
                    format!(
                        "Anthropic models require `max_tokens` and no default is configured for \
                         model `{model}`"
                    ),
                )
            });
        }
    };
    match u32::try_from(n) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(TranslateError::new(
            param,
            INVALID_VALUE,
            format!("`{param}` must be between 1 and {}", u32::MAX),
        )),
    }
}

fn user_id(req: &ChatRequest) -> Result<Option<String>, TranslateError> {
    match (&req.safety_identifier, &req.user) {
        (Some(s), Some(u)) if s != u => Err(TranslateError::new(
            "safety_identifier",
            INVALID_VALUE,
            "`user` and `safety_identifier` are both set, to different values; Anthropic has one \
             metadata.user_id",
        )),
        (Some(s), _) | (None, Some(s)) if !s.is_empty() => Ok(Some(s.clone())),
        _ => Ok(None),
    }
}

fn default_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

fn function_def(f: &oa::FunctionDef, path: &str) -> Result<Tool, TranslateError> {
    reject_unknown(&f.extra, path)?;
    if f.strict == Some(true) {
        return Err(unsupported(
            &format!("{path}.strict"),
            "Anthropic does not guarantee schema-conformant arguments, so `strict: true` cannot \
             be honoured",
        ));
    }
    if f.name.is_empty() {
        return Err(TranslateError::new(
            format!("{path}.name"),
            MISSING,
            "a function needs a `name`",
        ));
    }
    Ok(Tool {
        name: f.name.clone(),
        description: f.description.clone().filter(|d| !d.is_empty()),
        input_schema: f.parameters.clone().unwrap_or_else(default_schema),
    })
}

/// `tools`/`functions` → `tools`; `tool_choice`/`function_call` and
/// `parallel_tool_calls` → `tool_choice`.
fn tools(req: &ChatRequest) -> Result<(Option<Vec<Tool>>, Option<ToolChoice>), TranslateError> {
    if req.tools.is_some() && req.functions.is_some() {
        return Err(TranslateError::new(
            "functions",
            INVALID_VALUE,
            "`functions` (legacy) and `tools` cannot be used together",
        ));
    }
    if req.tool_choice.is_some() && req.function_call.is_some() {
        return Err(TranslateError::new(
            "function_call",
            INVALID_VALUE,
            "`function_call` (legacy) and `tool_choice` cannot be used together",
        ));
    }
    let legacy = req.functions.is_some();
    let mut out = Vec::new();
    if let Some(tools) = &req.tools {
        for (k, t) in tools.iter().enumerate() {
            let path = format!("tools[{k}]");
            if t.kind != "function" {
                return Err(unsupported(
                    &format!("{path}.type"),
                    &format!("only function tools can be translated, not `{}`", t.kind),
                ));
            }
            reject_unknown(&t.extra, &path)?;
            let Some(f) = &t.function else {
                return Err(TranslateError::new(
                    format!("{path}.function"),
                    MISSING,
                    "a function tool needs `function`",
                ));
            };
            out.push(function_def(f, &format!("{path}.function"))?);
        }
    }
    if let Some(fs) = &req.functions {
        for (k, f) in fs.iter().enumerate() {
            out.push(function_def(f, &format!("functions[{k}]"))?);
        }
    }

    let known = |name: &str| out.iter().any(|t| t.name == name);
    // (param name for errors, choice)
    enum Want<'a> {
        Auto,
        None,
        Any,
        Named(&'a str),
    }
    let want = if let Some(tc) = &req.tool_choice {
        match tc {
            oa::ToolChoice::Mode(m) => match m.as_str() {
                "auto" => Some(Want::Auto),
                "none" => Some(Want::None),
                "required" => Some(Want::Any),
                other => {
                    return Err(TranslateError::new(
                        "tool_choice",
                        INVALID_VALUE,
                        format!(
                            "unknown tool_choice `{other}` (expected auto, none, required or a \
                             named function)"
                        ),
                    ));
                }
            },
            oa::ToolChoice::Object(o) => {
                if o.kind == "function" {
                    reject_unknown(&o.extra, "tool_choice")?;
                }
                match (o.kind.as_str(), &o.function) {
                    ("function", Some(f)) => Some(Want::Named(&f.name)),
                    ("function", None) => {
                        return Err(TranslateError::new(
                            "tool_choice.function",
                            MISSING,
                            "a named tool_choice needs `function.name`",
                        ));
                    }
                    (other, _) => {
                        return Err(unsupported(
                            "tool_choice",
                            &format!("tool_choice type `{other}` cannot be translated"),
                        ));
                    }
                }
            }
        }
    } else if let Some(fc) = &req.function_call {
        match fc {
            FunctionCallChoice::Mode(m) if m == "auto" => Some(Want::Auto),
            FunctionCallChoice::Mode(m) if m == "none" => Some(Want::None),
            FunctionCallChoice::Mode(m) => {
                return Err(TranslateError::new(
                    "function_call",
                    INVALID_VALUE,
                    format!("unknown function_call `{m}` (expected auto, none or {{\"name\"}})"),
                ));
            }
            FunctionCallChoice::Named(n) => Some(Want::Named(&n.name)),
        }
    } else {
        None
    };
    let choice_param = if req.function_call.is_some() {
        "function_call"
    } else {
        "tool_choice"
    };

    if out.is_empty() {
        return match want {
            None | Some(Want::Auto) | Some(Want::None) => Ok((None, None)),
            Some(_) => Err(TranslateError::new(
                choice_param,
                INVALID_VALUE,
                format!("`{choice_param}` requires at least one tool"),
            )),
        };
    }

    // Legacy function calling answers with a single `function_call`.
    let disable_parallel = (legacy || req.parallel_tool_calls == Some(false)).then_some(true);
    let choice = match want {
        Some(Want::None) => Some(ToolChoice::None),
        Some(Want::Any) => Some(ToolChoice::Any {
            disable_parallel_tool_use: disable_parallel,
        }),
        Some(Want::Named(name)) => {
            if !known(name) {
                return Err(TranslateError::new(
                    choice_param,
                    INVALID_VALUE,
                    format!("`{choice_param}` names `{name}`, which is not among the tools"),
                ));
            }
            Some(ToolChoice::Tool {
                name: name.to_owned(),
                disable_parallel_tool_use: disable_parallel,
            })
        }
        Some(Want::Auto) => Some(ToolChoice::Auto {
            disable_parallel_tool_use: disable_parallel,
        }),
        None => disable_parallel.map(|d| ToolChoice::Auto {
            disable_parallel_tool_use: Some(d),
        }),
    };
    Ok((Some(out), choice))
}

/// A tool call awaiting its result.
struct Pending {
    id: String,
    name: String,
    answered: bool,
}

struct Turns {
    turns: Vec<Message>,
}

impl Turns {
    /// Appends blocks as `role`, merging into the previous turn when it has
    /// the same role (Anthropic requires alternation).
    fn push(&mut self, role: Role, blocks: Vec<ContentBlock>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => self.turns.push(Message {
                role,
                content: blocks,
            }),
        }
    }
}

/// Fields a message of `role` may not carry.
fn reject_fields(m: &oa::Message, path: &str, allowed: &[&str]) -> Result<(), TranslateError> {
    reject_unknown(&m.extra, path)?;
    let present = [
        ("content", m.content.is_some()),
        ("name", m.name.is_some()),
        ("tool_calls", m.tool_calls.is_some()),
        ("tool_call_id", m.tool_call_id.is_some()),
        ("function_call", m.function_call.is_some()),
        ("refusal", m.refusal.is_some()),
        ("audio", m.audio.as_ref().is_some_and(|a| !a.is_null())),
    ];
    for (field, is_set) in present {
        if is_set && !allowed.contains(&field) {
            let param = format!("{path}.{field}");
            return Err(if field == "name" {
                unsupported(
                    &param,
                    "Anthropic messages have no participant name, and dropping it would change \
                     what the model sees",
                )
            } else if field == "audio" {
                unsupported(&param, "Anthropic models do not take audio")
            } else {
                TranslateError::new(
                    param,
                    UNSUPPORTED_PARAM,
                    format!("`{field}` is not valid on a `{}` message", m.role),
                )
            });
        }
    }
    Ok(())
}

fn messages_and_system(
    messages: &[oa::Message],
) -> Result<(Option<Vec<TextBlock>>, Vec<Message>), TranslateError> {
    let mut system: Vec<TextBlock> = Vec::new();
    let mut turns = Turns {
        turns: Vec::with_capacity(messages.len()),
    };
    let mut started = false;
    let mut pending: Vec<Pending> = Vec::new();

    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        match m.role.as_str() {
            "system" | "developer" => {
                reject_fields(m, &path, &["content"])?;
                if started {
                    return Err(TranslateError::new(
                        format!("{path}.role"),
                        UNSUPPORTED_VALUE,
                        format!(
                            "a `{}` message after the conversation has started cannot be \
                             translated: Anthropic takes system instructions only before the \
                             first turn, and moving this one there would change what the model \
                             sees; put system and developer messages first",
                            m.role
                        ),
                    ));
                }
                for text in text_only(m.content.as_ref(), &path)? {
                    system.push(TextBlock::new(text));
                }
            }
            "user" => {
                reject_fields(m, &path, &["content"])?;
                started = true;
                pending.clear();
                let blocks = user_content(m.content.as_ref(), &path)?;
                turns.push(Role::User, blocks);
            }
            "assistant" => {
                reject_fields(
                    m,
                    &path,
                    &["content", "tool_calls", "function_call", "refusal"],
                )?;
                started = true;
                pending.clear();
                let blocks = assistant_content(m, i, &path, &mut pending)?;
                turns.push(Role::Assistant, blocks);
            }
            "tool" => {
                // `name` (the function's) is redundant with the id: ignored.
                reject_fields(m, &path, &["content", "tool_call_id", "name"])?;
                started = true;
                let Some(id) = m.tool_call_id.as_deref() else {
                    return Err(TranslateError::new(
                        format!("{path}.tool_call_id"),
                        MISSING,
                        "a `tool` message needs `tool_call_id`",
                    ));
                };
                let Some(p) = pending.iter_mut().find(|p| p.id == id && !p.answered) else {
                    return Err(TranslateError::new(
                        format!("{path}.tool_call_id"),
                        INVALID_VALUE,
                        format!(
                            "tool_call_id `{id}` does not answer an unanswered tool call of the \
                             assistant message just before it"
                        ),
                    ));
                };
                p.answered = true;
                let content = tool_result_content(m.content.as_ref(), &path)?;
                turns.push(
                    Role::User,
                    vec![ContentBlock::ToolResult {
                        tool_use_id: id.to_owned(),
                        content,
                    }],
                );
            }
            "function" => {
                // Legacy function result: `name` says which call it answers.
                reject_fields(m, &path, &["content", "name"])?;
                started = true;
                let Some(name) = m.name.as_deref() else {
                    return Err(TranslateError::new(
                        format!("{path}.name"),
                        MISSING,
                        "a `function` message needs `name`",
                    ));
                };
                let Some(p) = pending.iter_mut().find(|p| p.name == name && !p.answered) else {
                    return Err(TranslateError::new(
                        format!("{path}.name"),
                        INVALID_VALUE,
                        format!(
                            "function `{name}` does not answer an unanswered call of the \
                             assistant message just before it"
                        ),
                    ));
                };
                p.answered = true;
                let content = tool_result_content(m.content.as_ref(), &path)?;
                turns.push(
                    Role::User,
                    vec![ContentBlock::ToolResult {
                        tool_use_id: p.id.clone(),
                        content,
                    }],
                );
            }
            other => {
                return Err(TranslateError::new(
                    format!("{path}.role"),
                    INVALID_VALUE,
                    format!("unknown role `{other}`"),
                ));
            }
        }
    }
    let system = (!system.is_empty()).then_some(system);
    Ok((system, turns.turns))
}

/// Text of a system/developer message: a string or text parts.
fn text_only(content: Option<&Content>, path: &str) -> Result<Vec<String>, TranslateError> {
    match content {
        None => Err(TranslateError::new(
            format!("{path}.content"),
            MISSING,
            "this message needs `content`",
        )),
        Some(Content::Text(t)) => Ok(vec![t.clone()]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let ppath = format!("{path}.content[{j}]");
                if p.kind == "text" {
                    reject_unknown(&p.extra, &ppath)?;
                }
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => Ok(t.clone()),
                    ("text", None) => Err(TranslateError::new(
                        format!("{ppath}.text"),
                        MISSING,
                        "a text part needs `text`",
                    )),
                    (kind, _) => Err(unsupported(
                        &format!("{ppath}.type"),
                        &format!("a `{kind}` part cannot appear in this message"),
                    )),
                }
            })
            .collect(),
    }
}

fn user_content(
    content: Option<&Content>,
    path: &str,
) -> Result<Vec<ContentBlock>, TranslateError> {
    match content {
        None => Err(TranslateError::new(
            format!("{path}.content"),
            MISSING,
            "a user message needs `content`",
        )),
        Some(Content::Text(t)) => Ok(vec![ContentBlock::Text { text: t.clone() }]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| user_part(p, &format!("{path}.content[{j}]")))
            .collect(),
    }
}

fn user_part(p: &ContentPart, path: &str) -> Result<ContentBlock, TranslateError> {
    if matches!(p.kind.as_str(), "text" | "image_url" | "file") {
        reject_unknown(&p.extra, path)?;
    }
    match p.kind.as_str() {
        "text" => match &p.text {
            Some(t) => Ok(ContentBlock::Text { text: t.clone() }),
            None => Err(TranslateError::new(
                format!("{path}.text"),
                MISSING,
                "a text part needs `text`",
            )),
        },
        "image_url" => {
            let Some(img) = &p.image_url else {
                return Err(TranslateError::new(
                    format!("{path}.image_url"),
                    MISSING,
                    "an image_url part needs `image_url`",
                ));
            };
            let ipath = format!("{path}.image_url");
            reject_unknown(&img.extra, &ipath)?;
            Ok(ContentBlock::Image {
                source: image_source(&img.url, &format!("{ipath}.url"))?,
            })
        }
        "file" => {
            let Some(f) = &p.file else {
                return Err(TranslateError::new(
                    format!("{path}.file"),
                    MISSING,
                    "a file part needs `file`",
                ));
            };
            let fpath = format!("{path}.file");
            reject_unknown(&f.extra, &fpath)?;
            if f.file_id.is_some() {
                return Err(unsupported(
                    &format!("{fpath}.file_id"),
                    "OpenAI file ids cannot be resolved; send the file inline as `file_data`",
                ));
            }
            let Some(data) = &f.file_data else {
                return Err(TranslateError::new(
                    format!("{fpath}.file_data"),
                    MISSING,
                    "a file part needs `file_data`",
                ));
            };
            let dpath = format!("{fpath}.file_data");
            let (media_type, b64) = parse_data_url(data, &dpath)?;
            if media_type != "application/pdf" {
                return Err(unsupported(
                    &dpath,
                    &format!("only PDF files can be sent to Anthropic models, not `{media_type}`"),
                ));
            }
            Ok(ContentBlock::Document {
                source: Source::Base64 {
                    media_type: media_type.to_owned(),
                    data: b64.to_owned(),
                },
                title: f.filename.clone(),
            })
        }
        "input_audio" => Err(unsupported(
            &format!("{path}.input_audio"),
            "Anthropic models do not take audio",
        )),
        other => Err(unsupported(
            &format!("{path}.type"),
            &format!("a `{other}` part cannot be sent to Anthropic models"),
        )),
    }
}

/// `data:<media type>;base64,<data>` → (media type, data).
fn parse_data_url<'a>(url: &'a str, path: &str) -> Result<(&'a str, &'a str), TranslateError> {
    let bad = |why: &str| TranslateError::new(path, INVALID_VALUE, why.to_owned());
    let rest = url
        .strip_prefix("data:")
        .ok_or_else(|| bad("expected a data URL"))?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| bad("malformed data URL: no `,`"))?;
    let media_type = meta
        .strip_suffix(";base64")
        .ok_or_else(|| bad("only base64 data URLs can be translated"))?;
    // Parameters such as `;charset=...` before `;base64` are not expected
    // for binary data; take the bare type.
    let media_type = media_type.split(';').next().unwrap_or_default();
    if media_type.is_empty() {
        return Err(bad("the data URL has no media type"));
    }
    Ok((media_type, data))
}

fn image_source(url: &str, path: &str) -> Result<Source, TranslateError> {
    if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url, path)?;
        let media_type = media_type.to_ascii_lowercase();
        let media_type = if media_type == "image/jpg" {
            "image/jpeg".to_owned()
        } else {
            media_type
        };
        if !IMAGE_TYPES.contains(&media_type.as_str()) {
            return Err(TranslateError::new(
                path,
                UNSUPPORTED_VALUE,
                format!(
                    "image type `{media_type}` is not supported by Anthropic models (jpeg, png, \
                     gif or webp)"
                ),
            ));
        }
        Ok(Source::Base64 {
            media_type,
            data: data.to_owned(),
        })
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(Source::Url {
            url: url.to_owned(),
        })
    } else {
        Err(TranslateError::new(
            path,
            INVALID_VALUE,
            "an image URL must be an http(s) URL or a base64 data URL",
        ))
    }
}

fn assistant_content(
    m: &oa::Message,
    i: usize,
    path: &str,
    pending: &mut Vec<Pending>,
) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut blocks = Vec::new();
    let mut text = |t: &str| {
        // Anthropic rejects empty text blocks; an empty string next to tool
        // calls is the usual OpenAI shape and says nothing.
        if !t.is_empty() {
            blocks.push(ContentBlock::Text { text: t.to_owned() });
        }
    };
    match &m.content {
        None => {}
        Some(Content::Text(t)) => text(t),
        Some(Content::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let ppath = format!("{path}.content[{j}]");
                if matches!(p.kind.as_str(), "text" | "refusal") {
                    reject_unknown(&p.extra, &ppath)?;
                }
                match (p.kind.as_str(), &p.text, &p.refusal) {
                    ("text", Some(t), _) | ("refusal", _, Some(t)) => text(t),
                    ("text", None, _) | ("refusal", _, None) => {
                        return Err(TranslateError::new(
                            ppath,
                            MISSING,
                            format!("a `{}` part needs its text", p.kind),
                        ));
                    }
                    (kind, _, _) => {
                        return Err(unsupported(
                            &format!("{ppath}.type"),
                            &format!("a `{kind}` part cannot appear in an assistant message"),
                        ));
                    }
                }
            }
        }
    }
    if let Some(r) = &m.refusal {
        text(r);
    }
    if let Some(calls) = &m.tool_calls {
        for (k, c) in calls.iter().enumerate() {
            let cpath = format!("{path}.tool_calls[{k}]");
            match c.kind.as_deref() {
                Some("function") | None => {}
                Some(other) => {
                    return Err(unsupported(
                        &format!("{cpath}.type"),
                        &format!("only function tool calls can be translated, not `{other}`"),
                    ));
                }
            }
            reject_unknown(&c.extra, &cpath)?;
            let Some(id) = c.id.as_deref().filter(|id| !id.is_empty()) else {
                return Err(TranslateError::new(
                    format!("{cpath}.id"),
                    MISSING,
                    "a tool call needs an `id`",
                ));
            };
            let Some(f) = &c.function else {
                return Err(TranslateError::new(
                    format!("{cpath}.function"),
                    MISSING,
                    "a tool call needs `function`",
                ));
            };
            let input = arguments(&f.arguments, &format!("{cpath}.function.arguments"))?;
            pending.push(Pending {
                id: id.to_owned(),
                name: f.name.clone(),
                answered: false,
            });
            blocks.push(ContentBlock::ToolUse {
                id: id.to_owned(),
                name: f.name.clone(),
                input,
            });
        }
    }
    if let Some(f) = &m.function_call {
        // Legacy calls have no id: make one that the following `function`
        // message is matched to by name.
        let id = format!("toolu_legacy_{i}");
        let input = arguments(&f.arguments, &format!("{path}.function_call.arguments"))?;
        pending.push(Pending {
            id: id.clone(),
            name: f.name.clone(),
            answered: false,
        });
        blocks.push(ContentBlock::ToolUse {
            id,
            name: f.name.clone(),
            input,
        });
    }
    Ok(blocks)
}

/// The arguments JSON text → the `input` object. Blank text is `{}` (a call
/// without arguments).
fn arguments(text: &str, path: &str) -> Result<Value, TranslateError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(TranslateError::new(
            path,
            INVALID_VALUE,
            "tool call arguments must be a JSON object",
        )),
        Err(e) => Err(TranslateError::new(
            path,
            INVALID_VALUE,
            format!("tool call arguments are not valid JSON: {e}"),
        )),
    }
}

fn tool_result_content(
    content: Option<&Content>,
    path: &str,
) -> Result<Option<ToolResultContent>, TranslateError> {
    match content {
        None => Ok(None),
        Some(Content::Text(t)) if t.is_empty() => Ok(None),
        Some(Content::Text(t)) => Ok(Some(ToolResultContent::Text(t.clone()))),
        Some(c) => {
            let blocks: Vec<TextBlock> = text_only(Some(c), path)?
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(TextBlock::new)
                .collect();
            Ok((!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        assert_eq!(
            parse_data_url("data:image/png;base64,AAAA", "p").unwrap(),
            ("image/png", "AAAA")
        );
        assert_eq!(
            parse_data_url("data:application/pdf;name=a.pdf;base64,JVBE", "p").unwrap(),
            ("application/pdf", "JVBE")
        );
        for bad in [
            "image/png;base64,AAAA",
            "data:image/png,AAAA",
            "data:;base64,AA",
            "data:x",
        ] {
            let e = parse_data_url(bad, "messages[0].content[0].image_url.url").unwrap_err();
            assert_eq!(
                e.param.as_deref(),
                Some("messages[0].content[0].image_url.url")
            );
        }
        assert_eq!(
            image_source("data:IMAGE/JPG;base64,AA", "p").unwrap(),
            Source::Base64 {
                media_type: "image/jpeg".into(),
                data: "AA".into()
            }
        );
    }

    #[test]
    fn arguments_must_be_a_json_object() {
        assert_eq!(arguments(" ", "p").unwrap(), json!({}));
        assert_eq!(arguments(r#"{"a":[1]}"#, "p").unwrap(), json!({"a": [1]}));
        for bad in ["null", "\"x\"", "{", "[]"] {
            let e = arguments(bad, "messages[1].tool_calls[0].function.arguments").unwrap_err();
            assert_eq!(e.code, INVALID_VALUE);
            assert_eq!(
                e.param.as_deref(),
                Some("messages[1].tool_calls[0].function.arguments")
            );
        }
    }
}
