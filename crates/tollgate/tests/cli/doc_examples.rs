//! The docs show real output: the 402 example in docs/payments.md is what a
//! fresh `tollgate serve --devnet` answers today (every challenge parameter
//! but `id` and `expires`), and the README's worst-case figure for a "hi"
//! without `max_tokens` is that challenge's amount.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn doc(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// The request body, the `WWW-Authenticate` values and the problem body of
/// the first example in docs/payments.md.
fn payments_example() -> (String, Vec<String>, Value) {
    let text = doc("docs/payments.md");
    let blocks: Vec<&str> = text.split("```http\n").skip(1).take(2).collect();
    let request = blocks[0].split("```").next().unwrap();
    let body = request.lines().last().unwrap().to_owned();
    let response = blocks[1].split("```").next().unwrap();
    let challenges = response
        .lines()
        .filter_map(|l| l.strip_prefix("www-authenticate: "))
        .map(str::to_owned)
        .collect();
    let problem = serde_json::from_str(response.trim().lines().last().unwrap()).unwrap();
    (body, challenges, problem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payments_doc_shows_what_serve_devnet_answers() {
    let (body, documented, documented_problem) = payments_example();
    assert_eq!(
        documented.len(),
        3,
        "three offers: charge, session v2, session v1"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--devnet", "--devnet-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("tollgate listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("serve --devnet exited before listening");
    })
    .await
    .expect("serve --devnet starts");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    let live: Vec<mpp::PaymentChallenge> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| mpp::parse_www_authenticate(v.to_str().unwrap()).unwrap())
        .collect();
    let live_problem: Value = response.json().await.unwrap();
    assert_eq!(live.len(), documented.len());
    for (live, documented) in live.iter().zip(&documented) {
        let documented = mpp::parse_www_authenticate(documented).unwrap();
        assert_eq!(live.realm, documented.realm);
        assert_eq!(live.method.as_str(), documented.method.as_str());
        assert_eq!(live.intent.as_str(), documented.intent.as_str());
        assert_eq!(
            live.request.decode_value().unwrap(),
            documented.request.decode_value().unwrap(),
            "the {} request in docs/payments.md is stale",
            live.intent.as_str()
        );
        assert_eq!(live.description, documented.description);
        assert_eq!(live.digest, documented.digest);
        assert_eq!(
            live.opaque.as_ref().map(|o| o.decode_value().unwrap()),
            documented
                .opaque
                .as_ref()
                .map(|o| o.decode_value().unwrap())
        );
    }
    let mut without_id = live_problem.clone();
    without_id["challengeId"] = documented_problem["challengeId"].clone();
    assert_eq!(without_id, documented_problem);

    // The README's figure: a "hi" without max_tokens, as a charge.
    let amount = live[0].request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(amount, "9833");
    assert!(doc("README.md").contains("9 833 base units"));
    assert!(doc("docs/payments.md").contains(&format!("costs {amount} base units")));

    let pid = child.id().unwrap().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("serve --devnet stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
