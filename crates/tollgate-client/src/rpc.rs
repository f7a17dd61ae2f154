//! The few JSON-RPC calls the payer makes itself: chain id, gas price,
//! broadcasting its own transactions, reading a channel.

use alloy::primitives::{Address, B256, Bytes};
use alloy::sol_types::SolCall;
use serde_json::{Value, json};

use crate::error::{Error, Result};

pub use tempo_alloy::contracts::precompiles::ITIP20ChannelReserve;

alloy::sol! {
    interface IToken {
        function approve(address spender, uint256 amount) external returns (bool);
    }
    interface IEscrow {
        struct Channel {
            bool finalized;
            uint64 closeRequestedAt;
            address payer;
            address payee;
            address token;
            address authorizedSigner;
            uint128 deposit;
            uint128 settled;
        }
        function open(address payee, address token, uint128 deposit, bytes32 salt, address authorizedSigner) external returns (bytes32);
        function topUp(bytes32 channelId, uint256 additionalDeposit) external;
        function getChannel(bytes32 channelId) external view returns (Channel memory);
    }
}

#[derive(Debug, Clone)]
pub struct Rpc {
    url: String,
    http: reqwest::Client,
}

/// A channel as the escrow stores it.
#[derive(Debug, Clone, Copy)]
pub struct ChainChannel {
    pub exists: bool,
    pub finalized: bool,
    pub close_requested: bool,
    pub deposit: u128,
    pub settled: u128,
}

impl Rpc {
    pub fn new(url: &str, http: reqwest::Client) -> Self {
        Self {
            url: url.to_owned(),
            http,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response: Value = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Chain(format!("{method}: {}", without_url(&e))))?
            .json()
            .await
            .map_err(|e| Error::Chain(format!("{method}: {}", without_url(&e))))?;
        if let Some(error) = response.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error");
            return Err(Error::Chain(format!("{method}: {message}")));
        }
        Ok(response.get("result").cloned().unwrap_or(Value::Null))
    }

    pub async fn chain_id(&self) -> Result<u64> {
        let value = self.call("eth_chainId", json!([])).await?;
        quantity(&value).map(|v| v as u64)
    }

    pub async fn gas_price(&self) -> Result<u128> {
        let value = self.call("eth_gasPrice", json!([])).await?;
        quantity(&value)
    }

    /// Broadcasts a signed transaction and waits for its receipt; fails
    /// when it reverted.
    pub async fn send_raw_sync(&self, tx: &[u8]) -> Result<Value> {
        let raw = format!("0x{}", alloy::hex::encode(tx));
        let receipt = self
            .call("eth_sendRawTransactionSync", json!([raw]))
            .await?;
        if receipt.get("status").and_then(Value::as_str) != Some("0x1") {
            return Err(Error::Chain("the transaction reverted".to_owned()));
        }
        Ok(receipt)
    }

    pub async fn channel(&self, escrow: Address, id: B256) -> Result<ChainChannel> {
        let data = Bytes::from(IEscrow::getChannelCall { channelId: id }.abi_encode());
        let value = self
            .call(
                "eth_call",
                json!([{"to": escrow.to_string(), "data": data.to_string()}, "latest"]),
            )
            .await?;
        let bytes: Bytes = value
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Chain("getChannel: not hex".to_owned()))?;
        let channel = IEscrow::getChannelCall::abi_decode_returns(&bytes)
            .map_err(|e| Error::Chain(format!("getChannel: {e}")))?;
        Ok(ChainChannel {
            exists: channel.payer != Address::ZERO,
            finalized: channel.finalized,
            close_requested: channel.closeRequestedAt != 0,
            deposit: channel.deposit,
            settled: channel.settled,
        })
    }
}

impl Rpc {
    /// The latest block's timestamp (Unix seconds).
    pub async fn block_timestamp(&self) -> Result<u64> {
        let block = self
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        let ts = quantity(&block["timestamp"])?;
        u64::try_from(ts).map_err(|_| Error::Chain("block timestamp out of range".to_owned()))
    }

    /// A v2 channel's state on the channel reserve (`getChannelState`); a
    /// closed channel is deleted and reads as absent.
    pub async fn channel_v2(&self, reserve: Address, id: B256) -> Result<ChainChannel> {
        let data =
            Bytes::from(ITIP20ChannelReserve::getChannelStateCall { channelId: id }.abi_encode());
        let value = self
            .call(
                "eth_call",
                json!([{"to": reserve.to_string(), "data": data.to_string()}, "latest"]),
            )
            .await?;
        let bytes: Bytes = value
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Chain("getChannelState: not hex".to_owned()))?;
        let state = ITIP20ChannelReserve::getChannelStateCall::abi_decode_returns(&bytes)
            .map_err(|e| Error::Chain(format!("getChannelState: {e}")))?;
        Ok(ChainChannel {
            exists: !state.deposit.is_zero(),
            finalized: false,
            close_requested: state.closeRequestedAt != 0,
            deposit: state.deposit.to(),
            settled: state.settled.to(),
        })
    }
}

fn quantity(value: &Value) -> Result<u128> {
    value
        .as_str()
        .and_then(|s| u128::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| Error::Chain(format!("not a quantity: {value}")))
}

/// reqwest errors name the URL; an RPC URL may carry an API key.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<rpc>");
    }
    text
}
