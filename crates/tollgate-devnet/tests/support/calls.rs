//! Reserve calldata and the payer's terms.

use alloy::primitives::{Address, B256, Bytes, U256, aliases::U96};
use alloy::sol_types::SolCall;
use tollgate_devnet::ITIP20ChannelReserve;
use tollgate_devnet::reserve::ChannelDescriptor;

use super::path_usd;

#[derive(Debug, Clone)]
pub struct Terms {
    pub payee: Address,
    pub operator: Address,
    pub token: Address,
    pub deposit: u128,
    pub salt: B256,
    pub authorized_signer: Address,
}

impl Terms {
    pub fn new(payee: Address, deposit: u128) -> Self {
        Self {
            payee,
            operator: Address::ZERO,
            token: path_usd(),
            deposit,
            salt: B256::random(),
            authorized_signer: Address::ZERO,
        }
    }

    pub fn open_call(&self) -> Vec<u8> {
        open_call_raw(self, U256::from(self.deposit))
    }

    pub fn descriptor(&self, payer: Address, expiring_nonce_hash: B256) -> ChannelDescriptor {
        ChannelDescriptor {
            payer,
            payee: self.payee,
            operator: self.operator,
            token: self.token,
            salt: self.salt,
            authorizedSigner: self.authorized_signer,
            expiringNonceHash: expiring_nonce_hash,
        }
    }
}

/// `open` with any 256-bit deposit word (to show what happens past uint96).
pub fn open_call_raw(terms: &Terms, deposit_word: U256) -> Vec<u8> {
    let mut data = ITIP20ChannelReserve::openCall {
        payee: terms.payee,
        operator: terms.operator,
        token: terms.token,
        deposit: U96::ZERO,
        salt: terms.salt,
        authorizedSigner: terms.authorized_signer,
    }
    .abi_encode();
    data[4 + 3 * 32..4 + 4 * 32].copy_from_slice(&deposit_word.to_be_bytes::<32>());
    data
}

pub fn settle_call(descriptor: &ChannelDescriptor, cumulative: u128, signature: Bytes) -> Vec<u8> {
    ITIP20ChannelReserve::settleCall {
        descriptor: descriptor.clone(),
        cumulativeAmount: U96::from(cumulative),
        signature,
    }
    .abi_encode()
}

pub fn close_call(
    descriptor: &ChannelDescriptor,
    cumulative: u128,
    capture: u128,
    signature: Bytes,
) -> Vec<u8> {
    ITIP20ChannelReserve::closeCall {
        descriptor: descriptor.clone(),
        cumulativeAmount: U96::from(cumulative),
        captureAmount: U96::from(capture),
        signature,
    }
    .abi_encode()
}

pub fn top_up_call(descriptor: &ChannelDescriptor, additional: u128) -> Vec<u8> {
    ITIP20ChannelReserve::topUpCall {
        descriptor: descriptor.clone(),
        additionalDeposit: U96::from(additional),
    }
    .abi_encode()
}

pub fn request_close_call(descriptor: &ChannelDescriptor) -> Vec<u8> {
    ITIP20ChannelReserve::requestCloseCall {
        descriptor: descriptor.clone(),
    }
    .abi_encode()
}

pub fn withdraw_call(descriptor: &ChannelDescriptor) -> Vec<u8> {
    ITIP20ChannelReserve::withdrawCall {
        descriptor: descriptor.clone(),
    }
    .abi_encode()
}

/// The 4-byte revert data of a custom error without arguments.
pub fn error<E: alloy::sol_types::SolError>() -> Vec<u8> {
    E::SELECTOR.to_vec()
}
