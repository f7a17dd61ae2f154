//! Storage slots the devnet writes directly: the stand-in's seeded
//! opening-transaction hashes, and TIP-20 allowances that stand in for the
//! precompile's approve-less funding (TIP-1035).

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol_types::SolValue;

use super::{CHANNEL_RESERVE, CHANNEL_RESERVE_ADDRESS};
use crate::DevnetError;
use crate::rpc::RpcClient;

/// `openContext` in `TIP20ChannelReserve.sol` (slot 2).
const OPEN_CONTEXT_MAPPING: u64 = 2;
/// `simulationContext` in `TIP20ChannelReserve.sol` (slot 3).
pub(crate) const SIMULATION_CONTEXT_SLOT: B256 = B256::with_last_byte(3);
/// `allowances` in the TIP-20 precompile's storage (owner => spender =>
/// amount), as laid out by the anvil release the devnet pins; checked at
/// start by [`check_allowance_layout`].
const TIP20_ALLOWANCES: u64 = 10;

/// Where the stand-in looks for the hash of the transaction opening this
/// channel: keyed by every descriptor field but the hash itself.
pub(crate) fn open_context_slot(
    payer: Address,
    payee: Address,
    operator: Address,
    token: Address,
    salt: B256,
    authorized_signer: Address,
) -> B256 {
    let key = keccak256((payer, payee, operator, token, salt, authorized_signer).abi_encode());
    keccak256((key, U256::from(OPEN_CONTEXT_MAPPING)).abi_encode())
}

fn allowance_slot(owner: Address, spender: Address) -> B256 {
    let inner = keccak256((owner, U256::from(TIP20_ALLOWANCES)).abi_encode());
    keccak256((spender, inner).abi_encode())
}

/// Sets `owner`'s allowance for the reserve on `token` to the maximum.
pub(crate) async fn grant_allowance(
    rpc: &RpcClient,
    token: &str,
    owner: Address,
) -> Result<(), DevnetError> {
    let slot = allowance_slot(owner, CHANNEL_RESERVE_ADDRESS);
    rpc.set_storage_at(token, slot.0, U256::MAX.to_be_bytes())
        .await?;
    Ok(())
}

/// Reads back one granted allowance through the token itself, so a chain
/// whose TIP-20 layout differs fails at start rather than at the first open.
pub(crate) async fn check_allowance_layout(
    rpc: &RpcClient,
    token: &str,
    owner: &str,
) -> Result<(), DevnetError> {
    alloy::sol! {
        function allowance(address owner, address spender) external view returns (uint256);
    }
    use alloy::sol_types::SolCall;
    let owner: Address = owner
        .parse()
        .map_err(|e| DevnetError::Start(format!("dev account address: {e}")))?;
    let call = allowanceCall {
        owner,
        spender: CHANNEL_RESERVE_ADDRESS,
    };
    let out = rpc.eth_call(token, &call.abi_encode()).await?;
    match allowanceCall::abi_decode_returns(&out) {
        Ok(amount) if amount == U256::MAX => Ok(()),
        other => Err(DevnetError::Start(format!(
            "granting the channel reserve ({CHANNEL_RESERVE}) an allowance on {token} did not \
             take (the TIP-20 storage layout is not the one this devnet knows): {other:?}"
        ))),
    }
}
