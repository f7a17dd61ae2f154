//! The v1 session escrow (`contracts/TempoStreamChannel.sol`): compiled with
//! the npm `solc` package (cached by source hash) and deployed on the devnet.

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::install::npm_install;
use crate::rpc::RpcClient;
use crate::{DEV_ACCOUNTS, DevnetError};

/// Our escrow contract's source, same ABI and EIP-712 domain as the
/// reference TempoStreamChannel.
pub const ESCROW_SOURCE: &str = include_str!("../../../contracts/TempoStreamChannel.sol");
pub const SOLC_VERSION: &str = "0.8.37";
/// Dev account #9 deploys, so the escrow lands at the same address on
/// every fresh devnet.
pub const DEPLOYER_INDEX: usize = 9;

/// Creation bytecode (hex, no 0x), compiling on first use.
pub async fn escrow_bytecode(cache: &Path) -> Result<String, DevnetError> {
    let hash: String = Sha256::digest(ESCROW_SOURCE.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let artefact = cache.join(format!("escrow-{SOLC_VERSION}-{hash}.bin"));
    if let Ok(code) = std::fs::read_to_string(&artefact) {
        return Ok(code.trim().to_owned());
    }
    let solc_prefix = cache.join(format!("solc-{SOLC_VERSION}"));
    let solcjs = solc_prefix.join("node_modules/.bin/solcjs");
    npm_install(&solc_prefix, &[&format!("solc@{SOLC_VERSION}")], &solcjs).await?;

    let work = cache.join(format!(".escrow-build-{}-{hash}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(io)?;
    let source = work.join("TempoStreamChannel.sol");
    std::fs::write(&source, ESCROW_SOURCE).map_err(io)?;
    let output = Command::new(&solcjs)
        .args(["--bin", "--optimize", "--base-path"])
        .arg(&work)
        .arg("-o")
        .arg(work.join("out"))
        .arg(&source)
        .output()
        .await
        .map_err(|e| DevnetError::Install(format!("running solcjs: {e}")))?;
    if !output.status.success() {
        return Err(DevnetError::Install(format!(
            "solc failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let bin = find_artefact(&work.join("out"))?;
    let code = std::fs::read_to_string(&bin).map_err(io)?.trim().to_owned();
    if code.is_empty() {
        return Err(DevnetError::Install("solc produced no bytecode".into()));
    }
    std::fs::write(&artefact, &code).map_err(io)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(code)
}

fn find_artefact(dir: &Path) -> Result<PathBuf, DevnetError> {
    std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_TempoStreamChannel.bin"))
        })
        .ok_or_else(|| DevnetError::Install("solc output lacks TempoStreamChannel.bin".into()))
}

fn io(e: std::io::Error) -> DevnetError {
    DevnetError::Install(e.to_string())
}

/// Deploys the escrow from the deployer dev account; returns its address.
pub async fn deploy_escrow(rpc: &RpcClient, bytecode: &str) -> Result<String, DevnetError> {
    let from = DEV_ACCOUNTS[DEPLOYER_INDEX].address;
    let hash: String = rpc
        .call(
            "eth_sendTransaction",
            json!([{"from": from, "data": format!("0x{bytecode}"), "gas": "0x500000"}]),
        )
        .await?;
    let receipt = rpc.wait_receipt(&hash).await?;
    match (
        receipt["status"].as_str(),
        receipt["contractAddress"].as_str(),
    ) {
        (Some("0x1"), Some(address)) => Ok(address.to_owned()),
        _ => Err(DevnetError::Start(format!(
            "escrow deployment failed: {receipt}"
        ))),
    }
}
