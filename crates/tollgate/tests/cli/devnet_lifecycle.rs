//! The real `tollgate devnet` binary and its anvil child: SIGTERM, SIGINT
//! and SIGHUP stop the chain; a parent killed outright (SIGKILL, no handler
//! runs) leaves no chain behind either; two devnets never share one
//! directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// A running `tollgate devnet`, its RPC port and its descendants.
struct Running {
    child: tokio::process::Child,
    port: u16,
    descendants: Vec<u32>,
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces, so split after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    // Gone, or a zombie waiting for a reaper: not running either way.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for pid in &all {
            if ppid_of(*pid) == Some(parent) && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

async fn answers(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

async fn start(dir: &Path) -> Running {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["devnet", "--config-out"])
        .arg(dir.join("tollgate.toml"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut port = None;
    let ready = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.trim().strip_prefix("rpc:") {
                port = url.trim().rsplit(':').next().and_then(|p| p.parse().ok());
            }
            if line.contains("Press Ctrl-C") {
                return;
            }
        }
        panic!("tollgate devnet exited before it was ready");
    })
    .await;
    assert!(ready.is_ok(), "tollgate devnet did not become ready");
    // Keep reading so a full pipe never blocks the child.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let port = port.expect("the rpc address is printed");
    assert!(answers(port).await);
    let pid = child.id().unwrap();
    let descendants = descendants(pid);
    assert!(!descendants.is_empty(), "anvil runs as a child");
    Running {
        child,
        port,
        descendants,
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (bounded) until nothing of `running` is left.
async fn nothing_left(running: &Running) {
    for _ in 0..300 {
        if !running.descendants.iter().any(|p| alive(*p)) && !answers(running.port).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<_> = running.descendants.iter().filter(|p| alive(**p)).collect();
    panic!("processes left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sigint_and_sighup_stop_the_chain() {
    for name in ["TERM", "INT", "HUP"] {
        let dir = tempfile::tempdir().unwrap();
        let mut running = start(dir.path()).await;
        signal(running.child.id().unwrap(), name);
        let status = tokio::time::timeout(Duration::from_secs(30), running.child.wait())
            .await
            .unwrap_or_else(|_| panic!("SIG{name}: tollgate devnet did not exit"))
            .unwrap();
        assert!(status.success(), "SIG{name}: a clean exit, got {status}");
        nothing_left(&running).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_parent_leaves_no_chain_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start(dir.path()).await;
    // SIGKILL: no handler, no destructor runs in the parent.
    running.child.start_kill().unwrap();
    let _ = running.child.wait().await;
    nothing_left(&running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devnets_in_one_directory_do_not_corrupt_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path()).await;
    let config = std::fs::read(dir.path().join("tollgate.toml")).unwrap();
    let secret = std::fs::read(dir.path().join("challenge.secret")).unwrap();
    for args in [
        vec!["devnet", "--config-out", "DIR/tollgate.toml"],
        vec!["serve", "--devnet", "--devnet-dir", "DIR"],
        vec!["demo", "--no-serve", "--dir", "DIR"],
    ] {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("DIR", dir.path().to_str().unwrap()))
            .collect();
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .args(&args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the second one is refused at once")
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} must be refused");
        assert!(
            stderr.contains("in use by another running tollgate")
                && stderr.contains(&format!("pid {}", first.child.id().unwrap())),
            "{args:?}: {stderr}"
        );
    }
    // The first one's files and chain are untouched.
    assert_eq!(
        std::fs::read(dir.path().join("tollgate.toml")).unwrap(),
        config
    );
    assert_eq!(
        std::fs::read(dir.path().join("challenge.secret")).unwrap(),
        secret
    );
    assert!(answers(first.port).await);
    signal(first.child.id().unwrap(), "TERM");
    first.child.wait().await.unwrap();
    nothing_left(&first).await;
    // Once it stopped, the directory can be used again.
    let mut again = start(dir.path()).await;
    again.child.start_kill().unwrap();
    let _ = again.child.wait().await;
    nothing_left(&again).await;
}
