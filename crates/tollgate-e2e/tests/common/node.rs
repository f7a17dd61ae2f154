//! Running the reference TypeScript SDK (npm `mppx@0.11.0`) and other npm
//! packages from node scripts in `tests/node/`.

use std::path::{Path, PathBuf};

use tollgate_devnet::{cache_dir, npm_install};

pub const MPPX: &str = "mppx@0.11.0";
pub const VIEM: &str = "viem@2.57.0";
pub const PLAYWRIGHT: &str = "playwright-core@1.65.1";

/// The shared install of mppx and viem (the same prefix the other interop
/// tests use, so it is downloaded once).
pub async fn mppx_prefix() -> PathBuf {
    let prefix = cache_dir().join("mppx-0.11.0");
    let bin = prefix.join("node_modules/.bin/mppx");
    npm_install(&prefix, &[MPPX, VIEM], &bin)
        .await
        .expect("mppx installs from npm");
    prefix
}

/// playwright-core (no bundled browser: it drives Debian's chromium).
pub async fn playwright_prefix() -> PathBuf {
    let prefix = cache_dir().join("playwright-core-1.65.1");
    let probe = prefix.join("node_modules/playwright-core/package.json");
    npm_install(&prefix, &[PLAYWRIGHT], &probe)
        .await
        .expect("playwright-core installs from npm");
    prefix
}

/// Copies `tests/node/<script>` next to the prefix's `node_modules` (ESM
/// ignores `NODE_PATH`), under a per-process name.
pub fn place_script(prefix: &Path, script: &str) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node")
        .join(script);
    let stem = script.trim_end_matches(".mjs");
    let target = prefix.join(format!("tollgate-{stem}-{}.mjs", std::process::id()));
    std::fs::copy(&source, &target).expect("the node script copies into the prefix");
    target
}

/// Runs a node script from `prefix` with `env`; returns its stdout parsed
/// as JSON, panicking with both streams when it fails.
pub async fn run_script(prefix: &Path, script: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let placed = place_script(prefix, script);
    let mut command = tokio::process::Command::new("node");
    command
        .arg(&placed)
        .current_dir(prefix)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(180), command.output()).await;
    let _ = std::fs::remove_file(&placed);
    let output = output
        .unwrap_or_else(|_| panic!("{script} ran over 180 s"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} prints JSON ({e}):\n{stdout}\n{stderr}"))
}
