//! A local Tempo chain for development and tests: `anvil --network tempo`
//! from the npm package `@foundry-rs/anvil-linux-amd64`, installed on first
//! use into a cache directory.
//!
//! Sessions on it:
//! - v1: [`escrow`] compiles and deploys our `TempoStreamChannel` escrow
//!   ([`DevnetOptions::escrow`], address from [`Devnet::escrow`]).
//! - v2: [`reserve`] places our stand-in for the TIP-1034 channel reserve at
//!   the precompile address [`CHANNEL_RESERVE`] ([`DevnetOptions::channel_reserve`],
//!   on by default). The chain is then reached through a small RPC front
//!   ([`Devnet::rpc_url`]) that tells the stand-in each opening
//!   transaction's expiring-nonce hash and grants it the payer's allowance;
//!   [`Devnet::anvil_url`] bypasses it. ABI: [`ITIP20ChannelReserve`];
//!   state: [`reserve::read_channel`], [`reserve::read_channel_state`].
#![forbid(unsafe_code)]

mod accounts;
pub mod escrow;
mod front;
mod install;
pub mod reserve;
mod rpc;
pub mod solc;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub use accounts::{DEV_ACCOUNTS, DevAccount};
pub use install::{ANVIL_PACKAGE, ANVIL_VERSION, anvil_binary, cache_dir, npm_install};
pub use reserve::{CHANNEL_RESERVE, CHANNEL_RESERVE_ADDRESS, ITIP20ChannelReserve};
pub use rpc::{RpcClient, RpcError};
pub use solc::Compiled;

/// Chain id the devnet runs with (Tempo's Moderato testnet id).
pub const DEVNET_CHAIN_ID: u64 = 42431;
/// pathUSD, a TIP-20 token with 6 decimals that every dev account holds.
pub const PATH_USD: &str = "0x20c0000000000000000000000000000000000000";
/// AlphaUSD, a second genesis TIP-20 token.
pub const ALPHA_USD: &str = "0x20c0000000000000000000000000000000000001";

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error("cannot install {ANVIL_PACKAGE}@{ANVIL_VERSION}: {0}")]
    Install(String),
    #[error("cannot compile our contracts: {0}")]
    Compile(String),
    #[error("cannot start anvil: {0}")]
    Start(String),
    #[error("chain RPC failed: {0}")]
    Rpc(#[from] RpcError),
}

/// A running local chain. Dropping it stops the chain.
pub struct Devnet {
    /// Dropped (and so killed) before `child`: it must not outlive us, nor
    /// act on a pid we already reaped.
    watchdog: Option<Child>,
    child: Child,
    /// anvil's own port.
    anvil_port: u16,
    /// In front of anvil when the channel reserve is installed.
    front: Option<front::Front>,
    rpc: RpcClient,
    escrow: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Loopback port of [`Devnet::rpc_url`]; a free one when `None`.
    pub port: Option<u16>,
    /// Where anvil is installed; [`cache_dir`] when `None`.
    pub cache_dir: Option<PathBuf>,
    /// Compile and deploy the v1 session escrow.
    pub escrow: bool,
    /// Install the v2 channel reserve stand-in at [`CHANNEL_RESERVE`] and
    /// serve the chain through the RPC front. On by default: it costs one
    /// cached compile and a few storage writes, and v2 is the protocol
    /// servers offer where the chain has the reserve.
    pub channel_reserve: bool,
}

impl Default for DevnetOptions {
    fn default() -> Self {
        Self {
            port: None,
            cache_dir: None,
            escrow: false,
            channel_reserve: true,
        }
    }
}

impl Devnet {
    /// Installs anvil if needed, starts it and waits until it answers.
    pub async fn start(options: DevnetOptions) -> Result<Self, DevnetError> {
        let cache = options.cache_dir.unwrap_or_else(cache_dir);
        let binary = install::ensure_anvil(&cache).await?;
        // Compile while nothing runs yet (first use installs solc).
        let bytecode = match options.escrow {
            true => Some(escrow::escrow_bytecode(&cache).await?),
            false => None,
        };
        let reserve_code = match options.channel_reserve {
            true => Some(reserve::reserve_code(&cache).await?),
            false => None,
        };
        // With a front, the requested port is the front's; anvil hides behind
        // on a port of its own choosing (0: it binds one and tells us which,
        // so no other process can take it between a probe and the bind).
        let anvil_port = match (options.port, options.channel_reserve) {
            (Some(port), false) => port,
            _ => 0,
        };
        let mut devnet = Self::spawn_anvil(&binary, anvil_port).await?;
        devnet.wait_ready(Duration::from_secs(30)).await?;
        if let Some(code) = reserve_code {
            reserve::install(&devnet.rpc, &code.runtime).await?;
            let front = front::Front::start(options.port, &devnet.anvil_url())?;
            devnet.rpc = RpcClient::new(&format!("http://127.0.0.1:{}", front.port()));
            devnet.front = Some(front);
        }
        // A fresh chain reports block timestamp 1 until a block is mined, and
        // Tempo transactions carry a `validAfter` relative to wall-clock time.
        devnet
            .rpc
            .call::<serde_json::Value>("evm_mine", serde_json::json!([]))
            .await?;
        if let Some(code) = bytecode {
            devnet.escrow = Some(escrow::deploy_escrow(&devnet.rpc, &code).await?);
        }
        Ok(devnet)
    }

    /// Starts anvil on `port` (0: one it picks) and waits until it says
    /// where it listens.
    async fn spawn_anvil(binary: &std::path::Path, port: u16) -> Result<Self, DevnetError> {
        let mut child = Command::new(binary)
            .args(["--network", "tempo", "--chain-id"])
            .arg(DEVNET_CHAIN_ID.to_string())
            .args(["--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DevnetError::Start(format!("{}: {e}", binary.display())))?;
        let announced = match child.stdout.take() {
            Some(stdout) => announced_port(stdout)?,
            None => return Err(DevnetError::Start("anvil's output is not piped".into())),
        };
        let watchdog = child.id().and_then(|pid| match spawn_watchdog(pid) {
            Ok(watchdog) => Some(watchdog),
            Err(e) => {
                tracing::warn!(error = %e, "no watchdog: the chain may outlive a killed parent");
                None
            }
        });
        let port = match tokio::time::timeout(Duration::from_secs(30), announced).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => {
                let status = child.wait().await.map(|s| s.to_string());
                return Err(DevnetError::Start(format!(
                    "anvil exited before listening ({})",
                    status.unwrap_or_else(|e| e.to_string())
                )));
            }
            Err(_) => return Err(DevnetError::Start("anvil did not listen in 30 s".into())),
        };
        let anvil_url = format!("http://127.0.0.1:{port}");
        Ok(Self {
            watchdog,
            child,
            anvil_port: port,
            front: None,
            rpc: RpcClient::new(&anvil_url),
            escrow: None,
        })
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), DevnetError> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(DevnetError::Start(format!("anvil exited with {status}")));
            }
            if let Ok(id) = self.rpc.chain_id().await {
                if id == DEVNET_CHAIN_ID {
                    return Ok(());
                }
                return Err(DevnetError::Start(format!(
                    "port {} answers with chain id {id}, not {DEVNET_CHAIN_ID}",
                    self.anvil_port
                )));
            }
            if started.elapsed() > limit {
                return Err(DevnetError::Start("anvil did not answer in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The port of [`Self::rpc_url`].
    pub fn port(&self) -> u16 {
        self.front
            .as_ref()
            .map_or(self.anvil_port, front::Front::port)
    }

    /// The chain's RPC URL for every client: the front when the channel
    /// reserve is installed, else anvil itself.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// anvil itself, bypassing the front: a channel `open` sent here fails
    /// with `ExpiringNonceHashNotSet`, since nobody tells the stand-in its
    /// transaction's hash.
    pub fn anvil_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.anvil_port)
    }

    /// A client for [`Self::rpc_url`].
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// The channel reserve (always at [`CHANNEL_RESERVE`]), when installed.
    pub fn channel_reserve(&self) -> Option<&'static str> {
        self.front.as_ref().map(|_| CHANNEL_RESERVE)
    }

    /// The deployed v1 session escrow, when requested.
    pub fn escrow(&self) -> Option<&str> {
        self.escrow.as_deref()
    }

    pub fn chain_id(&self) -> u64 {
        DEVNET_CHAIN_ID
    }

    /// Stops the chain now (also done on drop).
    pub async fn stop(mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill().await;
        }
        let _ = self.child.kill().await;
    }

    /// Waits until the chain process exits (for `tollgate devnet`).
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }
}

/// Stops `pid` when this process dies without stopping it (SIGKILL, a
/// crash), where no destructor or signal handler runs: a shell blocked on
/// reading its stdin, a pipe only we hold (close-on-exec, so no other child
/// inherits it). The kernel closes the pipe when we die; the read returns
/// and the shell terminates the chain. A normal stop kills the watchdog
/// first.
fn spawn_watchdog(pid: u32) -> std::io::Result<Child> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg("read _; kill -TERM \"$1\" 2>/dev/null; sleep 2; kill -KILL \"$1\" 2>/dev/null")
        .arg("tollgate-devnet-watchdog")
        .arg(pid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

/// Reads anvil's output on a thread of its own: the port from its
/// `Listening on 127.0.0.1:PORT` line, then everything else, unread, until
/// anvil exits (it logs every call, and a full pipe would stall it). The
/// receiver fails when anvil exits without listening.
fn announced_port(
    stdout: tokio::process::ChildStdout,
) -> Result<tokio::sync::oneshot::Receiver<u16>, DevnetError> {
    use std::io::BufRead;
    let fail = |e: std::io::Error| DevnetError::Start(format!("reading anvil's output: {e}"));
    let stdout = std::fs::File::from(stdout.into_owned_fd().map_err(fail)?);
    let (tell, told) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("devnet-anvil-output".into())
        .spawn(move || {
            let mut output = std::io::BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match output.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if let Some(port) = listening_port(&String::from_utf8_lossy(&line)) {
                    let _ = tell.send(port);
                    break;
                }
            }
            let _ = std::io::copy(&mut output, &mut std::io::sink());
        })
        .map_err(fail)?;
    Ok(told)
}

/// The port of anvil's `Listening on HOST:PORT` line.
fn listening_port(line: &str) -> Option<u16> {
    let address = line.trim().strip_prefix("Listening on ")?;
    address.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn the_port_is_read_from_anvils_listening_line_only() {
        assert_eq!(listening_port("Listening on 127.0.0.1:46209"), Some(46209));
        assert_eq!(
            listening_port("  Listening on 127.0.0.1:8545\r"),
            Some(8545)
        );
        assert_eq!(listening_port("Listening on [::1]:9000"), Some(9000));
        assert_eq!(listening_port("eth_chainId"), None);
        assert_eq!(listening_port("Listening on 127.0.0.1:notaport"), None);
        assert_eq!(listening_port("Listening on 127.0.0.1:70000"), None);
    }
}
