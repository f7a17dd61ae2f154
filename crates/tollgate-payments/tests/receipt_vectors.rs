//! `tempo-receipt-verification.json`: a push (`hash`) credential is checked
//! against the transaction receipt, served by a loopback JSON-RPC stand-in
//! for the chain, through the same verifier the gateway uses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};
use tollgate_ledger::SqliteLedger;
use tollgate_payments::{
    Address, ChainSettings, ChargeOffer, ProblemKind, SubmissionModes, TempoChargeVerifier,
};

fn vectors() -> Value {
    let dir = std::env::var_os("TOLLGATE_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors"));
    let text = std::fs::read_to_string(dir.join("tempo-receipt-verification.json"))
        .expect("vectors present");
    serde_json::from_str(&text).unwrap()
}

/// Completes the vector's partial receipt into what a node returns.
fn full_receipt(partial: &Value) -> Value {
    let zero32 = format!("0x{}", "00".repeat(32));
    let sender = partial["logs"][0]["topics"][1]
        .as_str()
        .map(|t| format!("0x{}", &t[26..]))
        .unwrap_or_else(|| format!("0x{}", "00".repeat(20)));
    let logs: Vec<Value> = partial["logs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, log)| {
            let mut log = log.clone();
            log["blockHash"] = json!(zero32);
            log["blockNumber"] = json!("0x1");
            log["transactionHash"] = partial["transactionHash"].clone();
            log["transactionIndex"] = json!("0x0");
            log["logIndex"] = json!(format!("0x{i:x}"));
            log["removed"] = json!(false);
            log
        })
        .collect();
    json!({
        "transactionHash": partial["transactionHash"],
        "transactionIndex": "0x0",
        "blockHash": zero32,
        "blockNumber": "0x1",
        "from": sender,
        "to": partial["logs"][0]["address"],
        "cumulativeGasUsed": "0x5208",
        "gasUsed": "0x5208",
        "effectiveGasPrice": "0x1",
        "contractAddress": null,
        "logs": logs,
        "logsBloom": format!("0x{}", "00".repeat(256)),
        "status": partial["status"],
        "type": "0x76",
        "feeToken": partial["logs"][0]["address"],
        "feePayer": sender,
    })
}

async fn rpc_stub(chain_id: u64, receipt: Value) -> String {
    let app = axum::Router::new().route(
        "/",
        post(move |Json(call): Json<Value>| {
            let receipt = receipt.clone();
            async move {
                let result = match call["method"].as_str().unwrap_or_default() {
                    "eth_chainId" => json!(format!("0x{chain_id:x}")),
                    "eth_getTransactionReceipt" => receipt,
                    _ => Value::Null,
                };
                Json(json!({"jsonrpc": "2.0", "id": call["id"], "result": result}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn receipt_verification_vectors() {
    let file = vectors();
    let mut ran = 0;
    for scenario in file["scenarios"].as_array().unwrap() {
        let name = scenario["name"].as_str().unwrap();
        let input = &scenario["input"];
        let request = &input["credential"]["challenge"]["request"];
        let chain_id = request
            .pointer("/methodDetails/chainId")
            .and_then(Value::as_u64)
            .unwrap_or(4217);
        let url = rpc_stub(chain_id, full_receipt(&input["receipt"])).await;
        let verifier = TempoChargeVerifier::new(
            ChainSettings {
                rpc_url: url,
                rpc_timeout: Duration::from_secs(5),
                confirm_timeout: Duration::from_secs(5),
                fee_payer: None,
                fee_token: None,
            },
            Arc::new(SqliteLedger::in_memory().unwrap()),
        )
        .unwrap();

        let mut echo = input["credential"]["challenge"].clone();
        echo["request"] = json!(mpp::Base64UrlJson::from_value(request).unwrap().raw());
        let credential: mpp::PaymentCredential = serde_json::from_value(
            json!({"challenge": echo, "payload": input["credential"]["payload"]}),
        )
        .unwrap();
        let offer = ChargeOffer {
            amount: request["amount"].as_str().unwrap().parse().unwrap(),
            currency: request["currency"]
                .as_str()
                .unwrap()
                .parse::<Address>()
                .unwrap(),
            recipient: request["recipient"]
                .as_str()
                .unwrap()
                .parse::<Address>()
                .unwrap(),
            chain_id,
            fee_payer: false,
            modes: SubmissionModes::default(),
            description: None,
        };
        verifier.precheck(&credential, &offer).await.unwrap();
        let outcome = verifier.settle(&credential).await;
        let expected = &scenario["expected"];
        if expected["ok"] == true {
            let settled = outcome.unwrap_or_else(|p| panic!("{name}: {p}"));
            assert_eq!(
                settled.reference,
                expected["value"]["reference"].as_str().unwrap(),
                "{name}"
            );
            let receipt = mpp::parse_receipt(&settled.receipt_header).unwrap();
            assert_eq!(
                receipt.status.to_string().to_ascii_lowercase(),
                "success",
                "{name}"
            );
        } else {
            let problem = outcome.expect_err(name);
            println!("{name}: refused: {problem}");
            assert!(
                matches!(
                    problem.kind,
                    ProblemKind::VerificationFailed | ProblemKind::CredentialReplayed
                ),
                "{name}: {problem}"
            );
            if let Some(fragment) = expected
                .pointer("/error/messageContains")
                .and_then(Value::as_str)
            {
                assert!(problem.detail.contains(fragment), "{name}: {problem}");
            }
        }
        ran += 1;
    }
    assert_eq!(ran, 5);
}
