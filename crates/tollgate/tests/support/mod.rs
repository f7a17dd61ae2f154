//! Running the real `tollgate` binary as a child process for tests.
#![allow(dead_code)] // each test file uses a different part

pub mod sdk;

use std::process::Stdio;
use std::time::Duration;

use crate::common::{Harness, Options, RECIPIENT, SECRET, UPSTREAM_KEY};
use tollgate_devnet::DEV_ACCOUNTS;

/// The gateway as a child process.
pub struct Process {
    pub child: tokio::process::Child,
    pub url: String,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn launch(h: &Harness, options: &Options) -> Process {
    launch_on(h, options, free_port()).await
}

/// [`launch`] on a given port (a restarted instance comes back on its own).
pub async fn launch_on(h: &Harness, options: &Options, port: u16) -> Process {
    let config = h.dir.path().join(format!("tollgate-{port}.toml"));
    std::fs::write(&config, h.config_text(options)).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    if let Some(url) = &options.pg_url {
        command.env("E2E_PG_URL", url);
    }
    let child = command
        .args(["serve", "--config"])
        .arg(&config)
        .env("TOLLGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("E2E_SECRET_0", SECRET)
        .env("E2E_UPSTREAM_KEY", UPSTREAM_KEY)
        .env("E2E_OPERATOR_KEY", DEV_ACCOUNTS[RECIPIENT].private_key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the tollgate binary starts");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if let Ok(r) = h.http.get(format!("{url}/healthz")).send().await
            && r.status() == 200
        {
            return Process { child, url, port };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not come up");
}

impl Process {
    /// SIGKILL: no shutdown hooks, nothing beyond what was committed.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

/// Runs `tollgate <command> --config <the harness's config> <args>` and
/// returns its stdout; panics with stderr when it fails.
pub async fn run_cli(h: &Harness, options: &Options, command: &str, args: &[&str]) -> String {
    let config = h.dir.path().join("tollgate.toml");
    std::fs::write(&config, h.config_text(options)).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg(command)
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("E2E_SECRET_0", SECRET)
        .env("E2E_UPSTREAM_KEY", UPSTREAM_KEY)
        .env("E2E_OPERATOR_KEY", DEV_ACCOUNTS[RECIPIENT].private_key)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "tollgate {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
