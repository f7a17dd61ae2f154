//! `tools`/`functions`, `tool_choice`/`function_call`, `parallel_tool_calls`.

use serde_json::{Value, json};

use super::{INVALID_VALUE, MISSING, ModelFacts, reject_unknown, unsupported};
use crate::anthropic::TranslateError;
use crate::anthropic::anthropic_types::{Tool, ToolChoice};
use crate::anthropic::openai_types::{self as oa, ChatRequest, FunctionCallChoice};

fn default_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

/// One function definition. `strict: true` becomes Anthropic's strict tool
/// use where the model has it (inputs validated against the schema);
/// elsewhere the tool is sent without it and only a JSON object is
/// guaranteed (see the module docs).
fn function_def(
    f: &oa::FunctionDef,
    path: &str,
    facts: &ModelFacts,
) -> Result<Tool, TranslateError> {
    reject_unknown(&f.extra, path)?;
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
        strict: (f.strict == Some(true) && facts.structured_outputs).then_some(true),
    })
}

/// `tools`/`functions` → `tools`; `tool_choice`/`function_call` and
/// `parallel_tool_calls` → `tool_choice`.
pub(super) fn tools(
    req: &ChatRequest,
    facts: &ModelFacts,
) -> Result<(Option<Vec<Tool>>, Option<ToolChoice>), TranslateError> {
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
            out.push(function_def(f, &format!("{path}.function"), facts)?);
        }
    }
    if let Some(fs) = &req.functions {
        for (k, f) in fs.iter().enumerate() {
            out.push(function_def(f, &format!("functions[{k}]"), facts)?);
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
