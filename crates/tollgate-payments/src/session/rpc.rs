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

    /// Broadcasts a signed transaction and waits for its receipt.
    pub async fn broadcast(&self, tx_bytes: &[u8]) -> Result<Confirmed, ChainError> {
        let hex = format!("0x{}", alloy::hex::encode(tx_bytes));
        let receipt: Value = self
            .deadline(async {
                self.provider
                    .raw_request("eth_sendRawTransactionSync".into(), (hex,))
                    .await
                    .map_err(|e| match e.as_error_resp() {
                        Some(resp) => ChainError::Refused(redact_hex(&resp.message)),
                        None => ChainError::Unavailable(redact_hex(&e.to_string())),
                    })
            })
            .await?;
        let ok = receipt.get("status").and_then(Value::as_str) == Some("0x1");
        let tx_hash = receipt
            .get("transactionHash")
            .and_then(Value::as_str)
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| keccak256(tx_bytes));
        if !ok {
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
            gas_limit: 1_000_000,
            max_fee_per_gas: gas_price,
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

    pub async fn receipt_status(&self, tx_hash: B256) -> Result<Option<bool>, ChainError> {
        let receipt: Option<Value> = self
            .deadline(async {
                self.provider
                    .raw_request("eth_getTransactionReceipt".into(), (tx_hash,))
                    .await
                    .map_err(|e| ChainError::Unavailable(redact_hex(&e.to_string())))
            })
            .await?;
        Ok(receipt.map(|r| r.get("status").and_then(Value::as_str) == Some("0x1")))
    }
}
