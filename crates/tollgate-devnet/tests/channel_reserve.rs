//! Our TIP-1034 channel reserve stand-in on a real local chain, driven as
//! clients drive the precompile: 0x76 transactions through the devnet's RPC
//! front, vouchers signed here over EIP-712. Every refusal is checked by its
//! custom error (simulated) and, where it matters, by a failing transaction
//! that moves nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod support;

#[path = "channel_reserve/opening.rs"]
mod opening;
#[path = "channel_reserve/settlement.rs"]
mod settlement;
#[path = "channel_reserve/withdrawal.rs"]
mod withdrawal;

use alloy::primitives::{Address, B256, U256};
use alloy::sol_types::SolCall;
use support::*;
use tollgate_devnet::ITIP20ChannelReserve::{self as Reserve};

const PAYER: usize = 3;
const PAYEE: usize = 4;
const OPERATOR: usize = 6;
const STRANGER: usize = 7;

alloy::sol! {
    interface UnknownSelector {
        error UnknownFunctionSelector(bytes4 selector);
    }
}

fn word(out: &[u8]) -> B256 {
    B256::from_slice(out)
}

pub async fn credits(chain: &Chain, payer: Address) -> u64 {
    let out = chain
        .view(payer, &Reserve::storageCreditsCall { payer }.abi_encode())
        .await;
    Reserve::storageCreditsCall::abi_decode_returns(&out).unwrap()
}

pub async fn block_timestamp(chain: &Chain, sent: &Sent) -> u64 {
    let number = sent.receipt["blockNumber"].clone();
    let block = chain
        .rpc(
            &chain.front,
            "eth_getBlockByNumber",
            serde_json::json!([number, false]),
        )
        .await
        .unwrap();
    u64::from_str_radix(
        block["timestamp"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

pub async fn next_block_at(chain: &Chain, timestamp: u64) {
    chain
        .rpc(
            &chain.front,
            "evm_setNextBlockTimestamp",
            serde_json::json!([timestamp]),
        )
        .await
        .unwrap();
}

/// pathUSD for deposits and AlphaUSD for fees, from dev account #0.
pub async fn fund(chain: &Chain, to: Address) {
    let transfer = |amount: u64| {
        IToken::transferCall {
            to,
            amount: U256::from(amount),
        }
        .abi_encode()
    };
    let sent = chain
        .send(
            &dev(0),
            vec![
                (path_usd(), transfer(10_000_000)),
                (
                    tollgate_devnet::ALPHA_USD.parse().unwrap(),
                    transfer(10_000_000),
                ),
            ],
        )
        .await;
    assert!(sent.succeeded(), "{}", sent.receipt);
}
