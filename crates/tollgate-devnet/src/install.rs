//! Installing anvil from npm into a cache directory, once.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::DevnetError;

pub const ANVIL_PACKAGE: &str = "@foundry-rs/anvil-linux-amd64";
pub const ANVIL_VERSION: &str = "1.7.1";

/// `$TOLLGATE_CACHE_DIR`, else `$XDG_CACHE_HOME/tollgate`, else
/// `~/.cache/tollgate`, else `./.tollgate/cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TOLLGATE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("tollgate");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache/tollgate");
    }
    PathBuf::from(".tollgate/cache")
}

/// Where the binary lives once installed under `cache`.
pub fn anvil_binary(cache: &Path) -> PathBuf {
    cache
        .join(format!("anvil-{ANVIL_VERSION}"))
        .join("node_modules")
        .join(ANVIL_PACKAGE)
        .join("bin/anvil")
}

/// Returns the binary, running `npm install` first when it is missing.
/// `$TOLLGATE_ANVIL_BIN` points at an existing binary instead.
pub(crate) async fn ensure_anvil(cache: &Path) -> Result<PathBuf, DevnetError> {
    if let Some(bin) = std::env::var_os("TOLLGATE_ANVIL_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let binary = anvil_binary(cache);
    let prefix = cache.join(format!("anvil-{ANVIL_VERSION}"));
    npm_install(
        &prefix,
        &[&format!("{ANVIL_PACKAGE}@{ANVIL_VERSION}")],
        &binary,
    )
    .await?;
    Ok(binary)
}

/// Installs npm `packages` under `prefix` unless `probe` (a file the install
/// creates) already exists. Used for anvil and for the interop clients.
///
/// The install happens in a private directory that is then renamed into
/// place, so concurrent installers (parallel tests, several processes) never
/// see a half-installed package: the first rename wins, the others discard
/// their copy.
pub async fn npm_install(
    prefix: &Path,
    packages: &[&str],
    probe: &Path,
) -> Result<(), DevnetError> {
    if probe.exists() {
        return Ok(());
    }
    let fail = |what: String| DevnetError::Install(what);
    let parent = prefix.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| fail(format!("{}: {e}", parent.display())))?;
    let staging = parent.join(format!(
        ".{}.{}-{}",
        prefix.file_name().and_then(|n| n.to_str()).unwrap_or("npm"),
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&staging).map_err(|e| fail(format!("{}: {e}", staging.display())))?;
    let output = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&staging)
        .args(packages)
        .output()
        .await
        .map_err(|e| fail(format!("running npm (is Node.js installed?): {e}")))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(fail(format!(
            "npm exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    if std::fs::rename(&staging, prefix).is_err() {
        // Someone else finished first; theirs is as good as ours.
        let _ = std::fs::remove_dir_all(&staging);
    }
    if probe.exists() {
        Ok(())
    } else {
        Err(fail(format!(
            "npm finished but {} is missing",
            probe.display()
        )))
    }
}

static STAGING_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
