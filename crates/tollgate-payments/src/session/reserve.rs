//! v2: the TIP-20 channel reserve (TIP-1034 precompile). Channels are
//! addressed by descriptor; amounts are `uint96`. Pure decoding of the
//! client's topUp, and [`ReserveChain`], the [`SessionChain`] that reads
//! channel state and sends our settle/close.

use std::time::Duration;

use alloy::primitives::aliases::U96;
use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use mpp::server::TempoProvider;
use tempo_alloy::contracts::precompiles::ITIP20ChannelReserve;

use super::chain::{ChainError, ChannelState, Confirmed, Protocol, SessionChain, SettlementCall};
use super::escrow::decode_escrow_call;
use super::rpc::Rpc;
use crate::session_v2::{Descriptor, MAX_V2_AMOUNT, RpcChannelReader, V2ChannelReader, V2Error};

/// The address TIP-1034 puts the reserve at.
pub const RESERVE_ADDRESS: Address =
    tempo_alloy::contracts::precompiles::TIP20_CHANNEL_RESERVE_ADDRESS;

pub fn to_abi(d: &Descriptor) -> ITIP20ChannelReserve::ChannelDescriptor {
    ITIP20ChannelReserve::ChannelDescriptor {
        payer: d.payer,
        payee: d.payee,
        operator: d.operator,
        token: d.token,
        salt: d.salt,
        authorizedSigner: d.authorized_signer,
        expiringNonceHash: d.expiring_nonce_hash,
    }
}

pub fn from_abi(d: &ITIP20ChannelReserve::ChannelDescriptor) -> Descriptor {
    Descriptor {
        payer: d.payer,
        payee: d.payee,
        operator: d.operator,
        token: d.token,
        salt: d.salt,
        authorized_signer: d.authorizedSigner,
        expiring_nonce_hash: d.expiringNonceHash,
    }
}

fn uint96(amount: u128) -> Result<U96, ChainError> {
    if amount > MAX_V2_AMOUNT {
        return Err(ChainError::Invalid(
            "amount exceeds the uint96 range".into(),
        ));
    }
    Ok(U96::from(amount))
}

/// Decodes a v2 `topUp` transaction: (sender, descriptor, amount).
pub fn decode_top_up(
    tx_bytes: &[u8],
    reserve: Address,
    chain_id: u64,
) -> Result<(Address, Descriptor, u128), ChainError> {
    let (sender, input) = decode_escrow_call(
        tx_bytes,
        reserve,
        chain_id,
        ITIP20ChannelReserve::topUpCall::SELECTOR,
    )?;
    let call = ITIP20ChannelReserve::topUpCall::abi_decode(&input)
        .map_err(|_| ChainError::Invalid("topUp calldata is not decodable".into()))?;
    Ok((
        sender,
        from_abi(&call.descriptor),
        call.additionalDeposit.to::<u128>(),
    ))
}

/// The channel reserve on one chain.
#[derive(Clone)]
pub struct ReserveChain {
    rpc: Rpc,
    reserve: Address,
}

impl ReserveChain {
    pub fn new(
        rpc_url: &str,
        reserve: Address,
        chain_id: u64,
        timeout: Duration,
        operator: Option<PrivateKeySigner>,
        fee_token: Option<Address>,
    ) -> Result<Self, String> {
        Ok(Self {
            rpc: Rpc::new(rpc_url, chain_id, timeout, operator, fee_token)?,
            reserve,
        })
    }

    fn reader(&self) -> RpcChannelReader<TempoProvider> {
        RpcChannelReader::new(
            self.rpc.provider().clone(),
            self.reserve,
            self.rpc.chain_id,
            self.rpc.timeout(),
        )
    }
}

#[async_trait::async_trait]
impl SessionChain for ReserveChain {
    fn protocol(&self) -> Protocol {
        Protocol::V2
    }

    fn escrow(&self) -> Address {
        self.reserve
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
        descriptor: Option<&Descriptor>,
    ) -> Result<ChannelState, ChainError> {
        let descriptor = descriptor
            .ok_or_else(|| ChainError::Invalid("a v2 channel is read by descriptor".into()))?;
        match self.reader().read_channel(channel_id, descriptor).await {
            Ok(state) => Ok(ChannelState {
                exists: true,
                finalized: state.finalized,
                close_requested_at: state.close_requested_at,
                deposit: state.deposit,
                settled: state.settled,
                parties: None,
            }),
            Err(V2Error::ChannelNotFound) => Ok(ChannelState::ABSENT),
            Err(V2Error::Rpc(reason)) => Err(ChainError::Unavailable(reason)),
            Err(other) => Err(ChainError::Invalid(other.to_string())),
        }
    }

    async fn broadcast(&self, tx: &[u8]) -> Result<Confirmed, ChainError> {
        self.rpc.broadcast(tx).await
    }

    async fn sign_settlement(&self, call: &SettlementCall) -> Result<(B256, Vec<u8>), ChainError> {
        let descriptor =
            call.descriptor.as_ref().map(to_abi).ok_or_else(|| {
                ChainError::Invalid("a v2 settlement needs the descriptor".into())
            })?;
        let data = if call.close {
            ITIP20ChannelReserve::closeCall {
                descriptor,
                cumulativeAmount: uint96(call.cumulative)?,
                captureAmount: uint96(call.capture)?,
                signature: call.signature.clone(),
            }
            .abi_encode()
        } else {
            ITIP20ChannelReserve::settleCall {
                descriptor,
                cumulativeAmount: uint96(call.cumulative)?,
                signature: call.signature.clone(),
            }
            .abi_encode()
        };
        self.rpc.sign_call(self.reserve, data).await
    }

    async fn receipt_status(&self, tx_hash: B256) -> Result<Option<bool>, ChainError> {
        self.rpc.receipt_status(tx_hash).await
    }
}
