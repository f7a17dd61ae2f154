//! Session v2 on the local chain: our stand-in for the TIP-1034 channel
//! reserve precompile (`contracts/TIP20ChannelReserve.sol`), placed at the
//! precompile's address with `anvil_setCode`.
//!
//! What the other crates use from here:
//! - [`CHANNEL_RESERVE`] / [`CHANNEL_RESERVE_ADDRESS`]: where it lives (the
//!   real precompile's address, so nothing is devnet-specific);
//! - [`ITIP20ChannelReserve`]: the ABI (`sol!` interface from
//!   `tempo-contracts`, the one the real precompile implements);
//! - [`read_channel`] / [`read_channel_state`]: a channel's on-chain state;
//! - [`channel_id`] / [`voucher_digest`]: the TIP's derivations, computed
//!   locally.
//!
//! Differences from the real precompile are listed in `docs/sessions.md`.

pub(crate) mod layout;

use std::path::Path;

use alloy::primitives::{Address, B256, U256, aliases::U96, keccak256};
use alloy::sol_types::{SolCall, SolValue};

use crate::rpc::{RpcClient, RpcError};
use crate::solc::{Compiled, Job, compile};
use crate::{DEV_ACCOUNTS, DevnetError};

pub use tempo_alloy::contracts::precompiles::ITIP20ChannelReserve;
pub use tempo_alloy::contracts::precompiles::ITIP20ChannelReserve::{
    Channel, ChannelDescriptor, ChannelState,
};
/// The precompile's address (TIP-1034), where the devnet installs the stand-in.
pub use tempo_alloy::contracts::precompiles::TIP20_CHANNEL_RESERVE_ADDRESS as CHANNEL_RESERVE_ADDRESS;

/// [`CHANNEL_RESERVE_ADDRESS`] as lowercase hex, for JSON-RPC and configs.
pub const CHANNEL_RESERVE: &str = "0x4d50500000000000000000000000000000000000";
/// Delay between the payer's `requestClose` and `withdraw`.
pub const CLOSE_GRACE_PERIOD_SECS: u64 = 15 * 60;
/// Largest amount a channel holds or a voucher authorizes (`uint96`).
pub const MAX_AMOUNT: u128 = (1u128 << 96) - 1;
/// EIP-712 domain of v2 vouchers.
pub const DOMAIN_NAME: &str = "TIP20 Channel Reserve";
pub const DOMAIN_VERSION: &str = "1";
/// The context hash a Tempo node gives `open` inside an RPC simulation
/// (`eth_call`, `eth_estimateGas`); the devnet front supplies it the same way.
pub const SIMULATION_CONTEXT: B256 = B256::new(*b"TEMPO_RPC_SIMULATION_MPP_CONTEXT");

/// Our stand-in's source.
pub const RESERVE_SOURCE: &str = include_str!("../../../../contracts/TIP20ChannelReserve.sol");

/// TIP-20 tokens minted to every dev account at genesis (pathUSD, AlphaUSD,
/// BetaUSD, ThetaUSD): the devnet grants the reserve an allowance on each.
pub const GENESIS_TOKENS: [&str; 4] = [
    "0x20c0000000000000000000000000000000000000",
    "0x20c0000000000000000000000000000000000001",
    "0x20c0000000000000000000000000000000000002",
    "0x20c0000000000000000000000000000000000003",
];

/// Compiles the stand-in on first use (cached like the v1 escrow).
pub async fn reserve_code(cache: &Path) -> Result<Compiled, DevnetError> {
    let job = Job {
        artefact: "channel-reserve",
        file_name: "TIP20ChannelReserve.sol",
        source: RESERVE_SOURCE,
        contract: "TIP20ChannelReserve",
        // Transient storage (the same-transaction reopen guard) needs Cancun.
        evm_version: Some("cancun"),
    };
    compile(cache, &job).await
}

/// Places the stand-in at the precompile address and grants it an
/// allowance from every dev account on every genesis token.
pub(crate) async fn install(rpc: &RpcClient, runtime_hex: &str) -> Result<(), DevnetError> {
    rpc.set_code(CHANNEL_RESERVE, runtime_hex).await?;
    let grants = GENESIS_TOKENS.iter().flat_map(|token| {
        DEV_ACCOUNTS
            .iter()
            .map(move |account| (*token, account.address))
    });
    for (token, owner) in grants {
        let owner: Address = owner
            .parse()
            .map_err(|e| DevnetError::Start(format!("dev account address: {e}")))?;
        layout::grant_allowance(rpc, token, owner).await?;
    }
    layout::check_allowance_layout(rpc, GENESIS_TOKENS[0], DEV_ACCOUNTS[0].address).await
}

/// The channel id TIP-1034 derives for `descriptor` on `chain_id`.
pub fn channel_id(descriptor: &ChannelDescriptor, chain_id: u64) -> B256 {
    keccak256(
        (
            descriptor.payer,
            descriptor.payee,
            descriptor.operator,
            descriptor.token,
            descriptor.salt,
            descriptor.authorizedSigner,
            descriptor.expiringNonceHash,
            CHANNEL_RESERVE_ADDRESS,
            U256::from(chain_id),
        )
            .abi_encode(),
    )
}

/// The EIP-712 digest a voucher signer signs:
/// `Voucher(bytes32 channelId,uint96 cumulativeAmount)` in the
/// "TIP20 Channel Reserve" v1 domain. `None` above `uint96`.
pub fn voucher_digest(channel_id: B256, cumulative: u128, chain_id: u64) -> Option<B256> {
    let amount = U96::try_from(cumulative).ok()?;
    let domain_separator = keccak256(
        (
            keccak256(
                "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
            ),
            keccak256(DOMAIN_NAME),
            keccak256(DOMAIN_VERSION),
            U256::from(chain_id),
            CHANNEL_RESERVE_ADDRESS,
        )
            .abi_encode(),
    );
    let struct_hash = keccak256(
        (
            keccak256("Voucher(bytes32 channelId,uint96 cumulativeAmount)"),
            channel_id,
            amount,
        )
            .abi_encode(),
    );
    let mut preimage = Vec::with_capacity(66);
    preimage.extend_from_slice(b"\x19\x01");
    preimage.extend_from_slice(domain_separator.as_slice());
    preimage.extend_from_slice(struct_hash.as_slice());
    Some(keccak256(preimage))
}

/// `getChannel(descriptor)`: the descriptor with its state (all zero when
/// no such channel is open).
pub async fn read_channel(
    rpc: &RpcClient,
    descriptor: &ChannelDescriptor,
) -> Result<Channel, RpcError> {
    let call = ITIP20ChannelReserve::getChannelCall {
        descriptor: descriptor.clone(),
    };
    let out = rpc.eth_call(CHANNEL_RESERVE, &call.abi_encode()).await?;
    ITIP20ChannelReserve::getChannelCall::abi_decode_returns(&out)
        .map_err(|e| RpcError::Decode(format!("getChannel: {e}")))
}

/// `getChannelState(channelId)`: all zero when no such channel is open.
pub async fn read_channel_state(
    rpc: &RpcClient,
    channel_id: B256,
) -> Result<ChannelState, RpcError> {
    let call = ITIP20ChannelReserve::getChannelStateCall {
        channelId: channel_id,
    };
    let out = rpc.eth_call(CHANNEL_RESERVE, &call.abi_encode()).await?;
    ITIP20ChannelReserve::getChannelStateCall::abi_decode_returns(&out)
        .map_err(|e| RpcError::Decode(format!("getChannelState: {e}")))
}
