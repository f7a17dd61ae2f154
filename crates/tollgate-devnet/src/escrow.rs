//! The v1 session escrow (`contracts/TempoStreamChannel.sol`): compiled with
//! the npm `solc` package (cached by source hash) and deployed on the devnet.

use std::path::Path;

use serde_json::json;

use crate::rpc::RpcClient;
use crate::solc::{Job, compile};
use crate::{DEV_ACCOUNTS, DevnetError};

pub use crate::solc::SOLC_VERSION;

/// Our escrow contract's source, same ABI and EIP-712 domain as the
/// reference TempoStreamChannel.
pub const ESCROW_SOURCE: &str = include_str!("../../../contracts/TempoStreamChannel.sol");
/// Dev account #9 deploys, so the escrow lands at the same address on
/// every fresh devnet.
pub const DEPLOYER_INDEX: usize = 9;

/// Creation bytecode (hex, no 0x), compiling on first use.
pub async fn escrow_bytecode(cache: &Path) -> Result<String, DevnetError> {
    let job = Job {
        artefact: "escrow",
        file_name: "TempoStreamChannel.sol",
        source: ESCROW_SOURCE,
        contract: "TempoStreamChannel",
        evm_version: None,
    };
    Ok(compile(cache, &job).await?.creation)
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
