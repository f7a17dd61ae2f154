//! `tollgate demo --no-serve`: the README's first command runs the whole
//! walkthrough on a fresh local chain and exits 0 only when every step
//! succeeded; a failing step exits non-zero and names the step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_devnet::DEV_ACCOUNTS;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `tollgate demo --no-serve <args>` in `cwd` (the environment,
/// `TOLLGATE_CACHE_DIR` included, is inherited), killed after two minutes.
fn demo(cwd: &Path, args: &[&str]) -> Run {
    let out = cwd.join("demo.stdout");
    let err = cwd.join("demo.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["demo", "--no-serve"])
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("the tollgate binary runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the demo did not finish in time:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

#[test]
fn the_demo_walks_through_a_402_a_charge_and_a_session_and_the_balances_add_up() {
    let cwd = tempfile::tempdir().unwrap();
    let run = demo(cwd.path(), &[]);
    let out = &run.stdout;
    assert_eq!(run.code, Some(0), "stdout:\n{out}\nstderr:\n{}", run.stderr);
    let expected = [
        // Setup.
        "Step 1/6 · Start a local Tempo chain",
        "channel reserve (TIP-1034, session protocol v2) at 0x",
        "Step 2/6 · Start the gateway",
        // The unpaid request and its decoded challenges.
        "← 402 Payment Required with 2 offers",
        "offer 1 · tempo/charge",
        "offer 2 · tempo/session",
        "reserve (v2)",
        "expires",
        "challenge decoded",
        // The charge, its receipt and the balances.
        "by charge (pull mode)",
        "charge receipt (Payment-Receipt, decoded)",
        "reference          0x",
        "the payer paid exactly the charge",
        // The session: opened, three requests, a visible stream, a close.
        "session opened: channel 0x",
        "Request 2 of 3 (session)",
        "same channel",
        "acceptedCumulative",
        "Request 3 of 3 (session, streamed",
        "streamed text, as it arrives:",
        "    │ ",
        "⏸ payment-need-voucher",
        "the client signed a voucher for cumulative",
        "final receipt (the stream's last event)",
        "channel closed; settlement transaction 0x",
        "txHash",
        // The totals.
        "Step 6/6 · Check that the balances add up",
        "payer's loss",
        "✓ the balances add up",
        "✓ Every step succeeded.",
    ];
    for text in expected {
        assert!(out.contains(text), "missing {text:?} in:\n{out}");
    }
    assert_eq!(out.matches("→ ✓ holds").count(), 2, "{out}");
    assert!(!out.contains('✗'), "{out}");
    // Addresses and hashes are shortened; no key is printed.
    assert!(out.contains("0x7099…79c8"), "{out}");
    for account in &DEV_ACCOUNTS {
        let key = account.private_key.trim_start_matches("0x");
        assert!(!out.contains(key) && !run.stderr.contains(key));
    }
    // The demo keeps its files in its own directory.
    assert!(cwd.path().join(".tollgate/demo/tollgate.toml").is_file());
}

#[test]
fn a_failing_step_exits_non_zero_and_names_the_step() {
    let cwd = tempfile::tempdir().unwrap();
    // The demo's directory is a file: starting the gateway fails.
    std::fs::write(cwd.path().join("occupied"), "").unwrap();
    let run = demo(cwd.path(), &["--dir", "occupied"]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("✗ step 2 failed"),
        "stdout:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("step 2 (Start the gateway) failed"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(!run.stdout.contains("Every step succeeded"));
}
