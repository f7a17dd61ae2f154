//! Python SDK scripts, and `tollgate pay proxy` as a child process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tollgate_devnet::DEV_ACCOUNTS;

use crate::common::{Harness, PAYER};

/// Runs `tests/python/<script> <args…>` with the SDKs on `PYTHONPATH`;
/// returns its JSON output.
pub async fn run_script(script: &str, args: &[&str], site: &Path) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let run = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .env("PYTHONPATH", site)
        .env("OPENAI_LOG", "")
        .env("ANTHROPIC_LOG", "")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the SDK script finishes")
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// `tollgate pay proxy` as a child process; its URL from the line it prints.
pub struct CliProxy {
    child: tokio::process::Child,
    pub url: String,
    /// Collects stderr as it comes (a full pipe would block the proxy).
    stderr: tokio::task::JoinHandle<String>,
}

impl CliProxy {
    pub async fn start(h: &Harness, target: &str, extra: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([
                "pay",
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--target",
                target,
            ])
            .args(extra)
            .arg("--rpc-url")
            .arg(h.devnet.rpc_url())
            .arg("--state")
            .arg(h.dir.path().join("proxy-pay.db"))
            .env("TOLLGATE_PRIVATE_KEY", DEV_ACCOUNTS[PAYER].private_key)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the tollgate binary starts");
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut all = String::new();
            let _ = err.read_to_string(&mut all).await;
            all
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the proxy prints its address")
            .unwrap()
            .expect("a line on stdout");
        let url = line
            .split_once("listening on ")
            .and_then(|(_, rest)| rest.split(',').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        assert!(line.contains(target), "{line}");
        Self { child, url, stderr }
    }

    /// Stops the proxy; returns what it wrote on stderr.
    pub async fn stop(mut self) -> String {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
        let stderr = self.stderr.await.unwrap();
        let key = DEV_ACCOUNTS[PAYER].private_key.trim_start_matches("0x");
        assert!(!stderr.contains(key), "the key never shows");
        assert!(
            !stderr.to_lowercase().contains("authorization: payment"),
            "no credential shows"
        );
        stderr
    }
}

/// The amounts of the `* charge: N of …` lines `-v` printed.
pub fn charged(stderr: &str) -> Vec<u128> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("* charge: "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}
