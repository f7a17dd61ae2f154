//! v1: the `TempoStreamChannel` escrow contract. Pure decoders for the
//! client's open/topUp transactions, and [`EscrowChain`], the
//! [`SessionChain`] that reads channels and sends our settle/close.

use alloy::consensus::transaction::SignerRecoverable;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use std::time::Duration;
use tempo_alloy::primitives::AASigned;

use super::chain::{
    ChainError, ChannelState, Confirmed, Parties, Protocol, SessionChain, SettlementCall,
};
use super::rpc::Rpc;
use crate::session_v2::Descriptor;

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

/// A client `open` on the escrow, decoded.
#[derive(Debug, Clone)]
pub struct DecodedOpen {
    pub payer: Address,
    pub payee: Address,
    pub token: Address,
    pub deposit: u128,
    pub salt: B256,
    pub authorized_signer: Address,
}

/// Decodes a client-signed 0x76 transaction and finds its one call to
/// `selector` on `escrow`. Returns the sender and the call's input.
pub fn decode_escrow_call(
    tx_bytes: &[u8],
    escrow: Address,
    chain_id: u64,
    selector: [u8; 4],
) -> Result<(Address, Bytes), ChainError> {
    let body = match tx_bytes.first() {
        Some(&tempo_alloy::primitives::transaction::TEMPO_TX_TYPE_ID) => &tx_bytes[1..],
        _ => return Err(ChainError::Invalid("not a Tempo (0x76) transaction".into())),
    };
    let signed = AASigned::rlp_decode(&mut &body[..])
        .map_err(|_| ChainError::Invalid("transaction is not decodable".into()))?;
    if signed.tx().chain_id != chain_id {
        return Err(ChainError::Invalid(
            "transaction is for another chain".into(),
        ));
    }
    let sender = signed
        .recover_signer()
        .map_err(|_| ChainError::Invalid("transaction signature does not recover".into()))?;
    let mut matching = signed.tx().calls.iter().filter(|call| {
        call.to == TxKind::Call(escrow) && call.input.get(..4) == Some(&selector[..])
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

/// Decodes a v1 `open` transaction.
pub fn decode_open(
    tx_bytes: &[u8],
    escrow: Address,
    chain_id: u64,
) -> Result<DecodedOpen, ChainError> {
    let (payer, input) = decode_escrow_call(
        tx_bytes,
        escrow,
        chain_id,
        IStreamChannel::openCall::SELECTOR,
    )?;
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

/// Decodes a v1 `topUp` transaction: (sender, channel, amount).
pub fn decode_top_up(
    tx_bytes: &[u8],
    escrow: Address,
    chain_id: u64,
) -> Result<(Address, B256, U256), ChainError> {
    let (sender, input) = decode_escrow_call(
        tx_bytes,
        escrow,
        chain_id,
        IStreamChannel::topUpCall::SELECTOR,
    )?;
    let call = IStreamChannel::topUpCall::abi_decode(&input)
        .map_err(|_| ChainError::Invalid("topUp calldata is not decodable".into()))?;
    Ok((sender, call.channelId, call.additionalDeposit))
}

/// The v1 escrow on one chain.
#[derive(Clone)]
pub struct EscrowChain {
    rpc: Rpc,
    pub escrow: Address,
}

impl EscrowChain {
    pub fn new(
        rpc_url: &str,
        escrow: Address,
        chain_id: u64,
        timeout: Duration,
        operator: Option<PrivateKeySigner>,
        fee_token: Option<Address>,
    ) -> Result<Self, String> {
        Ok(Self {
            rpc: Rpc::new(rpc_url, chain_id, timeout, operator, fee_token)?,
            escrow,
        })
    }
}

#[async_trait::async_trait]
impl SessionChain for EscrowChain {
    fn protocol(&self) -> Protocol {
        Protocol::V1
    }

    fn escrow(&self) -> Address {
        self.escrow
    }

    fn chain_id(&self) -> u64 {
        self.rpc.chain_id
    }

    fn operator(&self) -> Option<Address> {
        self.rpc.operator()
    }

    async fn channel(
        &self,
        channel_id: B256,
        _descriptor: Option<&Descriptor>,
    ) -> Result<ChannelState, ChainError> {
        let data = IStreamChannel::getChannelCall {
            channelId: channel_id,
        }
        .abi_encode();
        let out = self.rpc.call(self.escrow, data).await?;
        let c = IStreamChannel::getChannelCall::abi_decode_returns(&out)
            .map_err(|e| ChainError::Invalid(format!("getChannel returned garbage: {e}")))?;
        Ok(ChannelState {
            exists: c.payer != Address::ZERO,
            finalized: c.finalized,
            close_requested_at: c.closeRequestedAt,
            deposit: c.deposit,
            settled: c.settled,
            parties: Some(Parties {
                payer: c.payer,
                payee: c.payee,
                token: c.token,
                authorized_signer: c.authorizedSigner,
            }),
        })
    }

    async fn broadcast(&self, tx: &[u8]) -> Result<Confirmed, ChainError> {
        self.rpc.broadcast(tx).await
    }

    async fn sign_settlement(&self, call: &SettlementCall) -> Result<(B256, Vec<u8>), ChainError> {
        let data = if call.close {
            IStreamChannel::closeCall {
                channelId: call.channel_id,
                cumulativeAmount: call.cumulative,
                signature: call.signature.clone(),
            }
            .abi_encode()
        } else {
            IStreamChannel::settleCall {
                channelId: call.channel_id,
                cumulativeAmount: call.cumulative,
                signature: call.signature.clone(),
            }
            .abi_encode()
        };
        self.rpc.sign_call(self.escrow, data).await
    }

    async fn receipt_status(&self, tx_hash: B256) -> Result<Option<bool>, ChainError> {
        self.rpc.receipt_status(tx_hash).await
    }
}
