//! The plan endpoint's test helpers: its `[plans]` config, turn bodies,
//! its problems and challenges.

use serde_json::{Value, json};

use super::{Harness, Options, challenges, post};

pub const BUCKET: u128 = 500;

pub fn plans_toml(extra: &str, qwen_input_price: u64, broken_runtime: Option<&str>) -> String {
    let broken = broken_runtime
        .map(|url| {
            format!(
                r#"
[upstreams.broken]
kind = "openai_compatible"
base_url = "{url}"

[plans.models."broken/model"]
upstream = "broken"
input_per_mtok = 50000
output_per_mtok = 200000
context_window = 32768
"#
            )
        })
        .unwrap_or_default();
    let broken_in_plan = if broken_runtime.is_some() {
        r#", "broken/model""#
    } else {
        ""
    };
    format!(
        r#"
[plans]
voucher_bucket = {BUCKET}
suggested_deposit = 5000000
{extra}

[plans.models."Qwen/Qwen3-8B-AWQ"]
upstream = "openai"
input_per_mtok = {qwen_input_price}
output_per_mtok = 200000
context_window = 4096

[plans.models."gpt-4o-mini"]
upstream = "openai"

[plans.models."claude-haiku-4-5"]
upstream = "claude"

[plans.plans.Starter]
models = ["Qwen/Qwen3-8B-AWQ"{broken_in_plan}]
max_input_tokens = 2000
max_output_tokens = 256

[plans.plans.Plus]
models = ["Qwen/Qwen3-8B-AWQ", "gpt-4o-mini"]
max_input_tokens = 60000
max_output_tokens = 512

[plans.plans.Premium]
models = ["claude-haiku-4-5", "gpt-4o-mini", "Qwen/Qwen3-8B-AWQ"]
max_input_tokens = 60000
max_output_tokens = 4096
price_multiplier_bps = 15000
{broken}"#
    )
}

pub fn plan_options(plans: String) -> Options {
    Options {
        quoted: true,
        session: true,
        plans: Some(plans),
        ..Options::default()
    }
}

pub fn turn(plan: &str, model: Option<&str>, messages: Value, max_tokens: u64) -> String {
    let mut body = json!({
        "plan": plan,
        "model_optimization": model.is_none(),
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
    });
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    body.to_string()
}

pub fn ask(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Asserts the plan problem shape and returns its body.
pub async fn plan_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "expected {code}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().get("payment-receipt").is_none());
    let fresh = response.headers().get("www-authenticate").is_some();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    if status == 402 {
        assert!(fresh, "{code}: a 402 carries a fresh challenge");
        assert!(body["challengeId"].is_string());
    } else {
        assert!(!fresh, "{code}: only 402s carry a challenge");
    }
    body
}

pub async fn plan_challenge(h: &Harness, url: &str, body: &str) -> mpp::PaymentChallenge {
    let response = post(&h.http, url, body, None).await;
    assert_eq!(response.status(), 402);
    let all = challenges(&response);
    assert_eq!(all.len(), 1, "the plan endpoint offers a session only");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payment_required");
    all[0].clone()
}

pub fn number(v: &Value) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}
