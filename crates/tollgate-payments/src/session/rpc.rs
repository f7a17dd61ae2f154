//! JSON-RPC plumbing both session chains share: deadlines, `eth_call`,
//! broadcasting a signed transaction, signing our own, reading receipts.

use std::time::Duration;

use alloy::eips::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use mpp::server::{TempoProvider, tempo_provider};
use serde_json::Value;
use tempo_alloy::primitives::TempoTransaction;
use tempo_alloy::primitives::transaction::Call;
use tempo_alloy::rpc::TempoTransactionRequest;

use super::chain::{ChainError, Confirmed};
use crate::redact::redact_hex;

/// One node, one chain, optionally one operator key.
#[derive(Clone)]
pub struct Rpc {
    provider: TempoProvider,
    pub chain_id: u64,
    timeout: Duration,
    operator: Option<PrivateKeySigner>,
    fee_token: Option<Address>,
}

impl Rpc {
    pub fn new(
        rpc_url: &str,
        chain_id: u64,
        timeout: Duration,
        operator: Option<PrivateKeySigner>,
        fee_token: Option<Address>,
    ) -> Result<Self, String> {
        Ok(Self {
            provider: tempo_provider(rpc_url).map_err(|e| e.to_string())?,
            chain_id,
            timeout,
            operator,
            fee_token,
        })
    }

    pub fn provider(&self) -> &TempoProvider {
        &self.provider
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn operator(&self) -> Option<Address> {
        self.operator.as_ref().map(PrivateKeySigner::address)
    }

    async fn deadline<T>(
        &self,
        work: impl Future<Output = Result<T, ChainError>>,
    ) -> Result<T, ChainError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(ChainError::Unavailable("rpc deadline passed".into())))
    }

    /// `eth_call` of `data` on `to` at the latest block.
    pub async fn call(&self, to: Address, data: Vec<u8>) -> Result<Bytes, ChainError> {
        let request = TempoTransactionRequest::from(
            TransactionRequest::default()
                .to(to)
                .input(Bytes::from(data).into()),
        );
        self.deadline(async {
            self.provider
                .call(request)
                .await
                .map_err(|e| ChainError::Unavailable(redact_hex(&e.to_string())))
        })
        .await
    }

    /// Sends a signed transaction and waits for its receipt (JSON).
    pub async fn send_raw(&self, tx_bytes: &[u8]) -> Result<Value, ChainError> {
        let hex = format!("0x{}", alloy::hex::encode(tx_bytes));
        self.deadline(async {
            self.provider
                .raw_request("eth_sendRawTransactionSync".into(), (hex,))
                .await
                .map_err(|e| match e.as_error_resp() {
                    Some(resp) => ChainError::Refused(redact_hex(&resp.message)),
                    None => ChainError::Unavailable(redact_hex(&e.to_string())),
                })
        })
        .await
    }

    /// Broadcasts a signed transaction and waits for its receipt; a revert
    /// is refused.
    pub async fn broadcast(&self, tx_bytes: &[u8]) -> Result<Confirmed, ChainError> {
        let receipt = self.send_raw(tx_bytes).await?;
        let tx_hash = receipt
            .get("transactionHash")
            .and_then(Value::as_str)
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| keccak256(tx_bytes));
        if !succeeded(&receipt) {
            return Err(ChainError::Refused("transaction reverted".into()));
        }
        Ok(Confirmed { tx_hash })
    }

    /// Signs (but does not send) one call from the operator.
    pub async fn sign_call(
        &self,
        to: Address,
        data: Vec<u8>,
    ) -> Result<(B256, Vec<u8>), ChainError> {
        self.sign_call_with(to, data, 1_000_000, 1).await
    }

    /// [`sign_call`](Self::sign_call) with a gas limit, and a maximum fee
    /// of `fee_headroom` times the current gas price.
    pub async fn sign_call_with(
        &self,
        to: Address,
        data: Vec<u8>,
        gas_limit: u64,
        fee_headroom: u128,
    ) -> Result<(B256, Vec<u8>), ChainError> {
        let operator = self
            .operator
            .as_ref()
            .ok_or_else(|| ChainError::Invalid("no operator key configured".into()))?;
        let gas_price = self
            .deadline(async {
                self.provider
                    .get_gas_price()
                    .await
                    .map_err(|e| ChainError::Unavailable(redact_hex(&e.to_string())))
            })
            .await?;
        // A fresh 2D nonce lane per transaction: no sequential nonce to
        // track, and concurrent settlements never collide.
        let lane = U256::from_be_slice(&B256::random()[..16]) + U256::from(1);
        let tx = TempoTransaction {
            chain_id: self.chain_id,
            fee_token: self.fee_token,
            nonce_key: lane,
            nonce: 0,
            gas_limit,
            max_fee_per_gas: gas_price.saturating_mul(fee_headroom),
            max_priority_fee_per_gas: gas_price,
            calls: vec![Call {
                to: TxKind::Call(to),
                value: U256::ZERO,
                input: Bytes::from(data),
            }],
            ..Default::default()
        };
        let signed_hash = operator
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| ChainError::Invalid(format!("could not sign: {e}")))?;
        let signed = tx.into_signed(signed_hash.into());
        let bytes = signed.encoded_2718();
        Ok((keccak256(&bytes), bytes))
    }

    /// A transaction's receipt (JSON), `None` while it is not mined.
    pub async fn receipt(&self, tx_hash: B256) -> Result<Option<Value>, ChainError> {
        self.deadline(async {
            self.provider
                .raw_request("eth_getTransactionReceipt".into(), (tx_hash,))
                .await
                .map_err(|e| ChainError::Unavailable(redact_hex(&e.to_string())))
        })
        .await
    }

    /// Whether a mined transaction succeeded (`None`: not mined).
    pub async fn receipt_status(&self, tx_hash: B256) -> Result<Option<bool>, ChainError> {
        Ok(self.receipt(tx_hash).await?.as_ref().map(succeeded))
    }
}

/// A receipt's `status` is success.
pub fn succeeded(receipt: &Value) -> bool {
    receipt.get("status").and_then(Value::as_str) == Some("0x1")
}
