//! Messages: system and developer text, turns, content parts, tool calls
//! and results.

use serde_json::{Map, Value};

use super::{
    INVALID_VALUE, MISSING, UNSUPPORTED_PARAM, UNSUPPORTED_VALUE, reject_unknown, unsupported,
};
use crate::anthropic::TranslateError;
use crate::anthropic::anthropic_types::{
    CacheControl, ContentBlock, Message, Role, Source, TextBlock, ToolResultContent,
};
use crate::anthropic::openai_types::{self as oa, Content, ContentPart};

/// Image types Anthropic accepts.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

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
        (
            "reasoning_content",
            m.reasoning_content.as_ref().is_some_and(|r| !r.is_null()),
        ),
        ("thinking_blocks", m.thinking_blocks.is_some()),
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

pub(super) fn messages_and_system(
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
                system.extend(text_only(m.content.as_ref(), &path)?);
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
                    &[
                        "content",
                        "tool_calls",
                        "function_call",
                        "refusal",
                        "reasoning_content",
                        "thinking_blocks",
                    ],
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
    check_breakpoints(&system, &turns.turns)?;
    let system = (!system.is_empty()).then_some(system);
    Ok((system, turns.turns))
}

/// Anthropic takes at most this many `cache_control` breakpoints.
const MAX_CACHE_BREAKPOINTS: usize = 4;

fn check_breakpoints(system: &[TextBlock], turns: &[Message]) -> Result<(), TranslateError> {
    let in_block = |b: &ContentBlock| match b {
        ContentBlock::Text { cache_control, .. }
        | ContentBlock::Image { cache_control, .. }
        | ContentBlock::Document { cache_control, .. } => usize::from(cache_control.is_some()),
        ContentBlock::ToolResult {
            content: Some(ToolResultContent::Blocks(parts)),
            ..
        } => parts.iter().filter(|p| p.cache_control.is_some()).count(),
        _ => 0,
    };
    let count = system.iter().filter(|b| b.cache_control.is_some()).count()
        + turns
            .iter()
            .flat_map(|t| &t.content)
            .map(in_block)
            .sum::<usize>();
    if count > MAX_CACHE_BREAKPOINTS {
        return Err(TranslateError::new(
            "messages",
            INVALID_VALUE,
            format!(
                "{count} content parts carry `cache_control`; Anthropic allows at most \
                 {MAX_CACHE_BREAKPOINTS} cache breakpoints"
            ),
        ));
    }
    Ok(())
}

/// A content part's `cache_control`, checked: `{"type":"ephemeral"}` with
/// an optional `ttl` of `5m` or `1h`.
fn cache_control(p: &ContentPart, path: &str) -> Result<Option<CacheControl>, TranslateError> {
    let Some(value) = p.cache_control.as_ref().filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let invalid = || {
        TranslateError::new(
            format!("{path}.cache_control"),
            INVALID_VALUE,
            "`cache_control` must be {\"type\": \"ephemeral\"} with an optional `ttl` of \"5m\" \
             or \"1h\"",
        )
    };
    let control: CacheControl = serde_json::from_value(value.clone()).map_err(|_| invalid())?;
    let extra = value
        .as_object()
        .is_some_and(|o| o.keys().any(|k| k != "type" && k != "ttl"));
    if extra || !matches!(control.ttl.as_deref(), None | Some("5m" | "1h")) {
        return Err(invalid());
    }
    Ok(Some(control))
}

/// Text of a system/developer (or tool) message: a string or text parts,
/// with their cache breakpoints.
fn text_only(content: Option<&Content>, path: &str) -> Result<Vec<TextBlock>, TranslateError> {
    match content {
        None => Err(TranslateError::new(
            format!("{path}.content"),
            MISSING,
            "this message needs `content`",
        )),
        Some(Content::Text(t)) => Ok(vec![TextBlock::new(t.clone())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let ppath = format!("{path}.content[{j}]");
                if p.kind == "text" {
                    reject_unknown(&p.extra, &ppath)?;
                }
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => {
                        Ok(TextBlock::new(t.clone()).cached(cache_control(p, &ppath)?))
                    }
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
        Some(Content::Text(t)) => Ok(vec![ContentBlock::text(t.clone())]),
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
    let cache = cache_control(p, path)?;
    match p.kind.as_str() {
        "text" => match &p.text {
            Some(t) => Ok(ContentBlock::Text {
                text: t.clone(),
                cache_control: cache,
            }),
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
                cache_control: cache,
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
                cache_control: cache,
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
    // Signed thinking from the answer this message repeats goes first, as
    // Anthropic returned it.
    let mut blocks: Vec<ContentBlock> = m
        .thinking_blocks
        .iter()
        .flatten()
        .map(|b| match b {
            oa::ThinkingBlock::Thinking {
                thinking,
                signature,
            } => ContentBlock::Thinking {
                thinking: thinking.clone(),
                signature: signature.clone(),
            },
            oa::ThinkingBlock::RedactedThinking { data } => {
                ContentBlock::RedactedThinking { data: data.clone() }
            }
        })
        .collect();
    let mut text = |t: &str, cache_control: Option<CacheControl>| {
        // Anthropic rejects empty text blocks; an empty string next to tool
        // calls is the usual OpenAI shape and says nothing.
        if !t.is_empty() {
            blocks.push(ContentBlock::Text {
                text: t.to_owned(),
                cache_control,
            });
        }
    };
    match &m.content {
        None => {}
        Some(Content::Text(t)) => text(t, None),
        Some(Content::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let ppath = format!("{path}.content[{j}]");
                if matches!(p.kind.as_str(), "text" | "refusal") {
                    reject_unknown(&p.extra, &ppath)?;
                }
                match (p.kind.as_str(), &p.text, &p.refusal) {
                    ("text", Some(t), _) | ("refusal", _, Some(t)) => {
                        text(t, cache_control(p, &ppath)?)
                    }
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
        text(r, None);
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
                .filter(|t| !t.text.is_empty())
                .collect();
            Ok((!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
