//! The v1 escrow contract on chain: reading channels, broadcasting the
//! client's open/top-up transactions, and sending our own settle/close.
//! Everything here is off the per-request hot path.

use std::time::Duration;

use alloy::consensus::transaction::SignerRecoverable;
use alloy::eips::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use mpp::server::{TempoProvider, tempo_provider};
use serde_json::Value;
use tempo_alloy::primitives::transaction::Call;
use tempo_alloy::primitives::{AASigned, TempoTransaction};
use tempo_alloy::rpc::TempoTransactionRequest;

use crate::redact::redact_hex;

alloy::sol! {
    interface IStreamChannel {
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
        function settle(bytes32 channelId, uint128 cumulativeAmount, bytes signature) external;
        function close(bytes32 channelId, uint128 cumulativeAmount, bytes signature) external;
        function getChannel(bytes32 channelId) external view returns (Channel memory);
    }
}

/// A channel as the escrow stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnChainChannel {
    pub finalized: bool,
    pub close_requested_at: u64,
    pub payer: Address,
    pub payee: Address,
    pub token: Address,
    pub authorized_signer: Address,
    pub deposit: u128,
    pub settled: u128,
}

impl OnChainChannel {
    pub fn exists(&self) -> bool {
        self.payer != Address::ZERO
    }

    /// Who must sign vouchers: the authorized signer, else the payer.
    pub fn voucher_signer(&self) -> Address {
        if self.authorized_signer == Address::ZERO {
            self.payer
        } else {
            self.authorized_signer
        }
    }
}

/// What went wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached or did not answer in time: outcome unknown.
    #[error("chain unreachable: {0}")]
    Unavailable(String),
    /// The node refused the transaction, or it reverted.
    #[error("transaction refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
}

/// A client transaction that calls the escrow, decoded.
#[derive(Debug, Clone)]
pub struct DecodedOpen {
    pub payer: Address,
    pub payee: Address,
    pub token: Address,
    pub deposit: u128,
    pub salt: B256,
    pub authorized_signer: Address,
}

/// A confirmed transaction.
#[derive(Debug, Clone)]
pub struct Confirmed {
    pub tx_hash: B256,
}

#[derive(Clone)]
pub struct EscrowChain {
    provider: TempoProvider,
    pub escrow: Address,
    pub chain_id: u64,
    timeout: Duration,
    operator: Option<PrivateKeySigner>,
    fee_token: Option<Address>,
}

impl EscrowChain {
    pub fn new(
        rpc_url: &str,
        escrow: Address,
        chain_id: u64,
        timeout: Duration,
        operator: Option<PrivateKeySigner>,
    ) -> Result<Self, String> {
        Ok(Self {
            provider: tempo_provider(rpc_url).map_err(|e| e.to_string())?,
            escrow,
            chain_id,
            timeout,
            operator,
            fee_token: None,
        })
    }

    /// Pays our transactions' fees in `token`.
    pub fn with_fee_token(mut self, token: Option<Address>) -> Self {
        self.fee_token = token;
        self
    }

    /// The payee's address we settle as, if we can sign.
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

    pub async fn channel(&self, channel_id: B256) -> Result<OnChainChannel, ChainError> {
        let data = IStreamChannel::getChannelCall {
            channelId: channel_id,
        }
        .abi_encode();
        let request = TempoTransactionRequest::from(
            TransactionRequest::default()
                .to(self.escrow)
                .input(Bytes::from(data).into()),
        );
        let out = self
            .deadline(async {
                self.provider
                    .call(request)
                    .await
                    .map_err(|e| ChainError::Unavailable(redact_hex(&e.to_string())))
            })
            .await?;
        let c = IStreamChannel::getChannelCall::abi_decode_returns(&out)
            .map_err(|e| ChainError::Invalid(format!("getChannel returned garbage: {e}")))?;
        Ok(OnChainChannel {
            finalized: c.finalized,
            close_requested_at: c.closeRequestedAt,
            payer: c.payer,
            payee: c.payee,
            token: c.token,
            authorized_signer: c.authorizedSigner,
            deposit: c.deposit,
            settled: c.settled,
        })
    }

    /// Decodes a client-signed 0x76 transaction and finds its one call to
    /// `selector` on the escrow. Returns the sender and the call's input.
    pub fn decode_escrow_call(
        &self,
        tx_bytes: &[u8],
        selector: [u8; 4],
    ) -> Result<(Address, Bytes), ChainError> {
        let body = match tx_bytes.first() {
            Some(&tempo_alloy::primitives::transaction::TEMPO_TX_TYPE_ID) => &tx_bytes[1..],
            _ => return Err(ChainError::Invalid("not a Tempo (0x76) transaction".into())),
        };
        let signed = AASigned::rlp_decode(&mut &body[..])
            .map_err(|_| ChainError::Invalid("transaction is not decodable".into()))?;
        if signed.tx().chain_id != self.chain_id {
            return Err(ChainError::Invalid(
                "transaction is for another chain".into(),
            ));
        }
        let sender = signed
            .recover_signer()
            .map_err(|_| ChainError::Invalid("transaction signature does not recover".into()))?;
        let mut matching = signed.tx().calls.iter().filter(|call| {
            call.to == TxKind::Call(self.escrow) && call.input.get(..4) == Some(&selector[..])
        });
        let call = matching
            .next()
            .ok_or_else(|| ChainError::Invalid("transaction does not call the escrow".into()))?;
        if matching.next().is_some() {
            return Err(ChainError::Invalid(
                "transaction calls the escrow twice".into(),
            ));
        }
        Ok((sender, call.input.clone()))
    }

    /// Decodes an `open` transaction.
    pub fn decode_open(&self, tx_bytes: &[u8]) -> Result<DecodedOpen, ChainError> {
        let (payer, input) =
            self.decode_escrow_call(tx_bytes, IStreamChannel::openCall::SELECTOR)?;
        let call = IStreamChannel::openCall::abi_decode(&input)
            .map_err(|_| ChainError::Invalid("open calldata is not decodable".into()))?;
        Ok(DecodedOpen {
            payer,
            payee: call.payee,
            token: call.token,
            deposit: call.deposit,
            salt: call.salt,
            authorized_signer: call.authorizedSigner,
        })
    }

    /// Decodes a `topUp` transaction: (sender, channel, amount).
    pub fn decode_top_up(&self, tx_bytes: &[u8]) -> Result<(Address, B256, U256), ChainError> {
        let (sender, input) =
            self.decode_escrow_call(tx_bytes, IStreamChannel::topUpCall::SELECTOR)?;
        let call = IStreamChannel::topUpCall::abi_decode(&input)
            .map_err(|_| ChainError::Invalid("topUp calldata is not decodable".into()))?;
        Ok((sender, call.channelId, call.additionalDeposit))
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

    /// Signs (but does not send) a settle or close transaction from the
    /// operator, so its hash can be recorded before it is broadcast.
    pub async fn sign_settlement(
        &self,
        close: bool,
        channel_id: B256,
        cumulative: u128,
        signature: Bytes,
    ) -> Result<(B256, Vec<u8>), ChainError> {
        let operator = self
            .operator
            .as_ref()
            .ok_or_else(|| ChainError::Invalid("no operator key configured".into()))?;
        let data = if close {
            IStreamChannel::closeCall {
                channelId: channel_id,
                cumulativeAmount: cumulative,
                signature,
            }
            .abi_encode()
        } else {
            IStreamChannel::settleCall {
                channelId: channel_id,
                cumulativeAmount: cumulative,
                signature,
            }
            .abi_encode()
        };
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
                to: TxKind::Call(self.escrow),
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

    /// Whether a transaction landed: `Some(true)` succeeded, `Some(false)`
    /// reverted, `None` unknown to the node.
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
