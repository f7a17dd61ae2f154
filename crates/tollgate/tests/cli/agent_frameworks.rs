//! What agent frameworks send by default works through `tollgate pay
//! proxy` on the local chain: `openai-agents` with a default (strict)
//! `@function_tool` on a Claude model and on gpt-4o-mini, a
//! `langchain-openai` `bind_tools` loop on Claude (plain and streamed),
//! `models.retrieve`, `count_tokens`, structured output through the SDK's
//! `.parse()` and `reasoning_effort` on Claude. The payer pays exactly the
//! amounts of the charges the proxy made, one per model call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::{common, support};

use common::*;
use serde_json::json;
use support::sdk::{CliProxy, charged, run_script};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_mock::MockOptions;

/// The SDKs and frameworks, pinned, installed together.
const FRAMEWORKS_PY: &str =
    "openai==3.52.0 anthropic==1.13.0 openai-agents==0.24.0 langchain-openai==1.7.4";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_frameworks_work_through_the_paying_proxy() {
    let site = python_packages(FRAMEWORKS_PY).await;
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let recipient_before = h.balance(recipient).await;
    let recipient_arg = recipient.to_string();
    let proxy = CliProxy::start(
        &h,
        &gw.url,
        &[
            "--intent",
            "charge",
            "--allow-recipient",
            &recipient_arg,
            "--max-amount",
            "2000000",
            "-v",
        ],
    )
    .await;
    let out = run_script("agent_frameworks.py", &[&proxy.url], &site).await;

    // openai-agents, default strict tool: the tool runs, the second turn answers.
    for agent in ["agents_claude", "agents_gpt"] {
        assert_eq!(
            out[agent]["tool_runs"],
            json!(["Paris"]),
            "{agent}: {out:#}"
        );
        let last = out[agent]["final"].as_str().unwrap();
        assert!(!last.is_empty(), "{agent}: {out:#}");
    }
    // langchain bind_tools loop, plain and streamed.
    for run in ["langchain_claude", "langchain_claude_stream"] {
        assert_eq!(out[run]["tool"], "weather", "{run}: {out:#}");
        assert_eq!(out[run]["args"], json!({"city": "Paris"}));
        assert!(!out[run]["answer"].as_str().unwrap().is_empty(), "{run}");
    }
    assert_eq!(out["models_retrieve"]["id"], "gpt-4o-mini");
    assert_eq!(out["models_retrieve"]["object"], "model");
    assert!(out["models_retrieve"]["input_per_mtok"].is_string());
    for parse in ["parse_gpt", "parse_claude"] {
        assert_eq!(
            out[parse],
            json!({"city": "Paris", "temp_c": 1.0}),
            "{parse}"
        );
    }
    let reasoning = &out["reasoning_claude"];
    assert_eq!(
        reasoning["reasoning"].as_str().unwrap().split(' ').count(),
        12
    );
    assert_eq!(reasoning["blocks"], json!(["thinking"]));
    assert!(out["count_tokens"]["input_tokens"].as_u64().unwrap() > 0);

    // What reached the upstream: strict tools as Anthropic strict tools, the
    // schema as Anthropic's JSON output, no SDK telemetry or client keys.
    let seen = h.upstream.requests();
    let messages: Vec<serde_json::Value> = seen
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m["tools"][0]["strict"] == true),
        "the agent's strict tool is sent as an Anthropic strict tool"
    );
    assert!(
        messages
            .iter()
            .any(|m| m["output_config"]["format"]["type"] == "json_schema")
    );
    assert!(messages.iter().any(|m| m["thinking"]["type"] == "enabled"));
    for request in &seen {
        for name in request.headers.keys() {
            let name = name.as_str();
            assert!(
                !name.starts_with("x-stainless")
                    && name != "user-agent"
                    && name != "openai-organization",
                "{} reached the upstream with {name}",
                request.path
            );
        }
        assert!(!format!("{:?}", request.headers).contains("client-key-not-for-upstream"));
    }

    // Every model call was paid once, and the payer paid exactly that.
    let stderr = proxy.stop().await;
    let amounts = charged(&stderr);
    let model_calls = seen
        .iter()
        .filter(|r| r.path == "/v1/messages" || r.path == "/v1/chat/completions")
        .count();
    assert_eq!(
        amounts.len(),
        model_calls,
        "one charge per model call: {stderr}"
    );
    let total: u128 = amounts.iter().sum();
    assert_eq!(h.balance(recipient).await - recipient_before, total);
    gw.stop().await;
}
