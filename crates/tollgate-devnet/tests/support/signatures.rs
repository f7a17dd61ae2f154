//! Voucher signatures: good ones, and the malformed ones a reserve must refuse.

use alloy::primitives::{B256, Bytes, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use tollgate_devnet::CHANNEL_RESERVE_ADDRESS;
use tollgate_devnet::reserve;

use super::CHAIN_ID;

/// A voucher signature, 65 bytes r || s || v with v 27/28.
pub fn voucher(signer: &PrivateKeySigner, channel_id: B256, cumulative: u128) -> Bytes {
    let digest = reserve::voucher_digest(channel_id, cumulative, CHAIN_ID).unwrap();
    Bytes::from(signer.sign_hash_sync(&digest).unwrap().as_bytes().to_vec())
}

pub fn sign_digest(signer: &PrivateKeySigner, digest: B256) -> Bytes {
    Bytes::from(signer.sign_hash_sync(&digest).unwrap().as_bytes().to_vec())
}

/// The same voucher in the v1 escrow's domain ("Tempo Stream Channel").
pub fn v1_domain_digest(channel_id: B256, amount: u128) -> B256 {
    let domain = keccak256(
        (
            keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            keccak256("Tempo Stream Channel"),
            keccak256("1"),
            U256::from(CHAIN_ID),
            CHANNEL_RESERVE_ADDRESS,
        )
            .abi_encode(),
    );
    let voucher = keccak256(
        (
            keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)"),
            channel_id,
            amount,
        )
            .abi_encode(),
    );
    keccak256([&b"\x19\x01"[..], domain.as_slice(), voucher.as_slice()].concat())
}

/// (r, s, v) → (r, n − s, v ^ 1): the same signer, the malleable form.
pub fn flip_s(signature: &mut [u8]) {
    const N: U256 = U256::from_be_bytes([
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ]);
    let s = U256::from_be_slice(&signature[32..64]);
    signature[32..64].copy_from_slice(&(N - s).to_be_bytes::<32>());
    signature[64] ^= 1;
}

/// EIP-2098: r || (yParity << 255 | s).
pub fn compact(signature: &[u8]) -> Vec<u8> {
    let mut out = signature[..64].to_vec();
    if signature[64] == 28 {
        out[32] |= 0x80;
    }
    out
}
