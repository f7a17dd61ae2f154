//! A minimal JSON-RPC client for devnet chores (readiness, mining, balances).

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("transport: {0}")]
    Transport(String),
    #[error("rpc error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("unexpected response: {0}")]
    Decode(String),
}

#[derive(Debug, Clone)]
pub struct RpcClient {
    url: String,
    http: reqwest::Client,
}

/// An HTTP client whose calls end: a node that accepts and never answers
/// fails the call instead of hanging its caller.
pub(crate) fn bounded_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}

impl RpcClient {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            http: bounded_client(),
        }
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, RpcError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response: Value = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| RpcError::Transport(e.to_string()))?
            .json()
            .await
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        if let Some(error) = response.get("error") {
            return Err(RpcError::Rpc {
                code: error
                    .get("code")
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        serde_json::from_value(response.get("result").cloned().unwrap_or(Value::Null))
            .map_err(|e| RpcError::Decode(e.to_string()))
    }

    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        let hex: String = self.call("eth_chainId", json!([])).await?;
        parse_quantity(&hex).map(|v| v as u64)
    }

    /// TIP-20 `balanceOf(holder)` in base units.
    pub async fn token_balance(&self, token: &str, holder: &str) -> Result<u128, RpcError> {
        let holder = holder.trim_start_matches("0x").to_ascii_lowercase();
        let data = format!("0x70a08231{holder:0>64}");
        let hex: String = self
            .call("eth_call", json!([{"to": token, "data": data}, "latest"]))
            .await?;
        parse_quantity(&hex)
    }

    /// Polls for a transaction's receipt (anvil mines right away, but may
    /// answer the send before the receipt is queryable).
    pub async fn wait_receipt(&self, hash: &str) -> Result<Value, RpcError> {
        for _ in 0..100 {
            let receipt: Value = self
                .call("eth_getTransactionReceipt", json!([hash]))
                .await?;
            if !receipt.is_null() {
                return Ok(receipt);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(RpcError::Decode(format!("no receipt for {hash}")))
    }

    /// `eth_call` against the latest block; the raw return data.
    pub async fn eth_call(&self, to: &str, data: &[u8]) -> Result<Vec<u8>, RpcError> {
        let hex_out: String = self
            .call(
                "eth_call",
                json!([{"to": to, "data": format!("0x{}", hex::encode(data))}, "latest"]),
            )
            .await?;
        hex::decode(hex_out.trim_start_matches("0x"))
            .map_err(|e| RpcError::Decode(format!("eth_call result: {e}")))
    }

    /// `anvil_setStorageAt`: writes one 32-byte word of `address`'s storage.
    pub async fn set_storage_at(
        &self,
        address: &str,
        slot: [u8; 32],
        value: [u8; 32],
    ) -> Result<(), RpcError> {
        let ok: bool = self
            .call(
                "anvil_setStorageAt",
                json!([
                    address,
                    format!("0x{}", hex::encode(slot)),
                    format!("0x{}", hex::encode(value))
                ]),
            )
            .await?;
        match ok {
            true => Ok(()),
            false => Err(RpcError::Decode("anvil_setStorageAt refused".into())),
        }
    }

    /// `anvil_setCode`: replaces `address`'s runtime code (hex, no `0x`).
    pub async fn set_code(&self, address: &str, runtime_hex: &str) -> Result<(), RpcError> {
        self.call::<Value>(
            "anvil_setCode",
            json!([address, format!("0x{runtime_hex}")]),
        )
        .await?;
        Ok(())
    }

    /// Moves the chain clock forward (and mines a block).
    pub async fn increase_time(&self, seconds: u64) -> Result<(), RpcError> {
        self.call::<Value>("evm_increaseTime", json!([seconds]))
            .await?;
        self.call::<Value>("evm_mine", json!([])).await?;
        Ok(())
    }
}

/// Parses a hex quantity or a 32-byte word; fails above `u128`.
fn parse_quantity(hex: &str) -> Result<u128, RpcError> {
    let digits = hex.trim_start_matches("0x").trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    u128::from_str_radix(digits, 16).map_err(|e| RpcError::Decode(format!("{hex}: {e}")))
}
