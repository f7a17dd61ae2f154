//! The plan request body, validated before any challenge, and its price:
//! model resolution (`model_optimization`), worst case and actual cost.

use serde_json::{Value, json};
use tollgate_pricing::{Endpoint, PriceTable, Quote, UsageDetail, actual_cost_detail, per_million};

use crate::config::{CustomPrice, OptimizationRule, PlanConfig, PlansConfig};

/// A validated plan request.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub plan: String,
    pub model: Option<String>,
    pub messages: Vec<Value>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub stream: bool,
}

/// A 400 before any challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub param: &'static str,
    pub message: String,
}

fn invalid(param: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        param,
        message: message.into(),
    }
}

const FIELDS: [&str; 7] = [
    "plan",
    "model_optimization",
    "model",
    "messages",
    "max_tokens",
    "temperature",
    "stream",
];

impl PlanRequest {
    pub fn parse(body: &[u8], config: &PlansConfig) -> Result<Self, Invalid> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| invalid("body", format!("the body is not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("body", "the body must be a JSON object"))?;
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(invalid("body", format!("unknown field `{unknown}`")));
        }
        let plan = object
            .get("plan")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("plan", "`plan` is required"))?;
        if !config.plans.iter().any(|p| p.name == plan) {
            let names: Vec<&str> = config.plans.iter().map(|p| p.name.as_str()).collect();
            return Err(invalid(
                "plan",
                format!("unknown plan; expected one of {}", names.join(", ")),
            ));
        }
        let model_optimization = match object.get("model_optimization") {
            Some(Value::Bool(b)) => *b,
            None => {
                return Err(invalid(
                    "model_optimization",
                    "`model_optimization` is required",
                ));
            }
            Some(_) => return Err(invalid("model_optimization", "must be a boolean")),
        };
        let model = match object.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
            Some(_) => return Err(invalid("model", "must be a non-empty string")),
        };
        match (model_optimization, &model) {
            (false, None) => {
                return Err(invalid(
                    "model",
                    "`model` is required when model_optimization is false",
                ));
            }
            (true, Some(_)) => {
                return Err(invalid(
                    "model",
                    "omit `model` when model_optimization is true",
                ));
            }
            _ => {}
        }
        let messages = object
            .get("messages")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid("messages", "`messages` must be a non-empty array"))?;
        for (i, message) in messages.iter().enumerate() {
            let role = message.get("role").and_then(Value::as_str);
            if !matches!(
                role,
                Some("system" | "developer" | "user" | "assistant" | "tool")
            ) {
                return Err(invalid(
                    "messages",
                    format!("messages[{i}].role is missing or unknown"),
                ));
            }
            if message.get("content").is_none() {
                return Err(invalid(
                    "messages",
                    format!("messages[{i}].content is required"),
                ));
            }
        }
        let max_tokens = match object.get("max_tokens") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("max_tokens", "must be a positive integer"))?,
            ),
        };
        let temperature = match object.get("temperature") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|t| (0.0..=2.0).contains(t))
                    .ok_or_else(|| invalid("temperature", "must be a number from 0 to 2"))?,
            ),
        };
        let stream = match object.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("stream", "must be a boolean")),
        };
        Ok(Self {
            plan: plan.to_owned(),
            model,
            messages: messages.clone(),
            max_tokens,
            temperature,
            stream,
        })
    }

    /// The OpenAI-compatible body sent to the runtime.
    pub fn upstream_body(&self, model: &str, max_tokens: u64) -> Value {
        let mut body = json!({
            "model": model,
            "messages": self.messages,
            "max_tokens": max_tokens,
            "stream": self.stream,
        });
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        body
    }
}

/// The plan's choice for this request, and what it costs at most.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub model: String,
    /// The upstream (runtime) name.
    pub runtime: String,
    pub input_tokens: u64,
    pub output_cap: u64,
    /// Base units, plan multiplier applied.
    pub worst_case: u128,
    pub quote: Option<Quote>,
    pub price: Option<CustomPrice>,
    pub multiplier_bps: u32,
}

/// Why a request cannot be served on its plan (400).
pub type Unservable = Invalid;

fn apply_multiplier(amount: u128, bps: u32) -> u128 {
    (amount * u128::from(bps)).div_ceil(10_000)
}

/// Prices `request` on `model` within `plan`'s caps.
fn price_on(
    request: &PlanRequest,
    plan: &PlanConfig,
    config: &PlansConfig,
    table: &PriceTable,
    model: &str,
) -> Result<Resolution, Unservable> {
    let entry = config.models.get(model).ok_or_else(|| {
        invalid(
            "model",
            format!("plan {} does not offer {model}", plan.name),
        )
    })?;
    let output_cap = request
        .max_tokens
        .unwrap_or(plan.max_output_tokens)
        .min(plan.max_output_tokens);
    let (input_tokens, list, quote) = match entry.custom_price {
        Some(price) => {
            // Open models' tokenizers differ from OpenAI's: count with the
            // same conservative estimate as Claude's.
            let text = serde_json::to_string(&request.messages).unwrap_or_default();
            let input = tollgate_pricing::tokens::claude_estimate(&text);
            if input + output_cap > price.context_window {
                return Err(invalid(
                    "messages",
                    format!("the prompt and output cap exceed {model}'s context window"),
                ));
            }
            let list = per_million(input, price.input_per_mtok)
                + per_million(output_cap, price.output_per_mtok);
            (input, table.finalize(list), None)
        }
        None => {
            let body = request.upstream_body(model, output_cap);
            let quote = Endpoint::Chat
                .quote(table, &body)
                .map_err(|e| invalid("messages", e.message))?;
            (quote.input_units, quote.amount, Some(quote))
        }
    };
    if input_tokens > plan.max_input_tokens {
        return Err(invalid(
            "messages",
            format!(
                "the prompt (~{input_tokens} tokens) exceeds plan {}'s input cap of {}",
                plan.name, plan.max_input_tokens
            ),
        ));
    }
    Ok(Resolution {
        model: model.to_owned(),
        runtime: entry.upstream.clone(),
        input_tokens,
        output_cap,
        worst_case: apply_multiplier(list, plan.price_multiplier_bps),
        quote,
        price: entry.custom_price,
        multiplier_bps: plan.price_multiplier_bps,
    })
}

/// Resolves the model: the requested one (which the plan must offer), or
/// by the configured optimization rule.
pub fn resolve(
    request: &PlanRequest,
    config: &PlansConfig,
    table: &PriceTable,
) -> Result<Resolution, Unservable> {
    let plan = config
        .plans
        .iter()
        .find(|p| p.name == request.plan)
        .ok_or_else(|| invalid("plan", "unknown plan"))?;
    if let Some(model) = &request.model {
        if !plan.models.contains(model) {
            return Err(invalid(
                "model",
                format!("plan {} does not offer {model}", plan.name),
            ));
        }
        return price_on(request, plan, config, table, model);
    }
    let mut best: Option<Resolution> = None;
    let mut last_error = None;
    for model in &plan.models {
        match price_on(request, plan, config, table, model) {
            Ok(candidate) => {
                if config.optimization == OptimizationRule::FirstFit {
                    return Ok(candidate);
                }
                if best
                    .as_ref()
                    .is_none_or(|b| candidate.worst_case < b.worst_case)
                {
                    best = Some(candidate);
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    best.ok_or_else(|| last_error.unwrap_or_else(|| invalid("plan", "no model fits")))
}

impl Resolution {
    /// What reported usage costs, never above the worst case.
    pub fn actual_cost(&self, table: &PriceTable, usage: UsageDetail) -> u128 {
        let list = match (&self.quote, self.price) {
            (Some(quote), _) => actual_cost_detail(table, Endpoint::Chat, quote, Some(usage)),
            (None, Some(price)) => table.finalize(
                per_million(usage.input_tokens, price.input_per_mtok)
                    + per_million(usage.output_tokens, price.output_per_mtok),
            ),
            (None, None) => return self.worst_case,
        };
        apply_multiplier(list, self.multiplier_bps).min(self.worst_case)
    }
}
