//! v1 voucher signatures: EIP-712 over (channelId, uint128 cumulativeAmount)
//! in the "Tempo Stream Channel" v1 domain of one escrow on one chain.
//! Pure and cheap: no RPC, so it can run on every request.

use alloy::primitives::{Address, B256, Signature};
use alloy::sol_types::{SolStruct, eip712_domain};
use mpp::protocol::methods::tempo::voucher::{DOMAIN_NAME, DOMAIN_VERSION, Voucher};

/// Why a voucher signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFault {
    /// Wrong length, bad `v`, high `s`, or not recoverable.
    Invalid,
    /// Recovers to an address that may not sign for this channel.
    WrongSigner,
}

/// The EIP-712 digest a v1 voucher signs.
pub fn signing_hash(escrow: Address, chain_id: u64, channel_id: B256, cumulative: u128) -> B256 {
    let domain = eip712_domain! {
        name: DOMAIN_NAME,
        version: DOMAIN_VERSION,
        chain_id: chain_id,
        verifying_contract: escrow,
    };
    Voucher {
        channelId: channel_id,
        cumulativeAmount: cumulative,
    }
    .eip712_signing_hash(&domain)
}

/// Parses a canonical secp256k1 signature the escrow's `ecrecover` accepts:
/// 65-byte `r‖s‖v` with `v` 27/28, or 64-byte EIP-2098, low `s` only.
pub fn parse_signature(bytes: &[u8]) -> Option<Signature> {
    let signature = match bytes.len() {
        65 if matches!(bytes[64], 27 | 28) => Signature::from_raw(bytes).ok()?,
        64 => Signature::from_erc2098(bytes),
        _ => return None,
    };
    // `normalize_s` returns the low-s twin only when `s` was high.
    signature.normalize_s().is_none().then_some(signature)
}

/// Checks that `signature` is `expected_signer`'s voucher for `cumulative`.
pub fn verify(
    escrow: Address,
    chain_id: u64,
    channel_id: B256,
    cumulative: u128,
    signature: &[u8],
    expected_signer: Address,
) -> Result<(), SignatureFault> {
    let parsed = parse_signature(signature).ok_or(SignatureFault::Invalid)?;
    let digest = signing_hash(escrow, chain_id, channel_id, cumulative);
    let recovered = parsed
        .recover_address_from_prehash(&digest)
        .map_err(|_| SignatureFault::Invalid)?;
    if recovered == expected_signer {
        Ok(())
    } else {
        Err(SignatureFault::WrongSigner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::U256;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    const ESCROW: Address = Address::repeat_byte(0xe5);
    const CHAIN: u64 = 42431;

    fn signer(byte: u8) -> PrivateKeySigner {
        PrivateKeySigner::from_bytes(&B256::repeat_byte(byte)).unwrap()
    }

    fn sign(key: &PrivateKeySigner, escrow: Address, chain: u64, amount: u128) -> Vec<u8> {
        let digest = signing_hash(escrow, chain, B256::repeat_byte(7), amount);
        key.sign_hash_sync(&digest).unwrap().as_bytes().to_vec()
    }

    #[test]
    fn accepts_the_signer_in_both_encodings() {
        let key = signer(1);
        let sig = sign(&key, ESCROW, CHAIN, 500);
        assert_eq!(sig[64], 27 + (sig[64] - 27));
        assert_eq!(
            verify(
                ESCROW,
                CHAIN,
                B256::repeat_byte(7),
                500,
                &sig,
                key.address()
            ),
            Ok(())
        );
        let compact = Signature::from_raw(&sig).unwrap().as_erc2098();
        assert_eq!(
            verify(
                ESCROW,
                CHAIN,
                B256::repeat_byte(7),
                500,
                &compact,
                key.address()
            ),
            Ok(())
        );
        // Agrees with the SDK's own check.
        assert!(mpp::protocol::methods::tempo::voucher::verify_voucher(
            ESCROW,
            CHAIN,
            B256::repeat_byte(7),
            500,
            &sig,
            key.address()
        ));
    }

    #[test]
    fn refuses_other_signers_amounts_domains_and_high_s() {
        let key = signer(1);
        let id = B256::repeat_byte(7);
        let sig = sign(&key, ESCROW, CHAIN, 500);
        let other = signer(2).address();
        assert_eq!(
            verify(ESCROW, CHAIN, id, 500, &sig, other),
            Err(SignatureFault::WrongSigner)
        );
        // A different amount, chain or escrow recovers someone else.
        assert_eq!(
            verify(ESCROW, CHAIN, id, 501, &sig, key.address()),
            Err(SignatureFault::WrongSigner)
        );
        let wrong_chain = sign(&key, ESCROW, 1, 500);
        assert!(verify(ESCROW, CHAIN, id, 500, &wrong_chain, key.address()).is_err());
        let wrong_escrow = sign(&key, Address::repeat_byte(1), CHAIN, 500);
        assert!(verify(ESCROW, CHAIN, id, 500, &wrong_escrow, key.address()).is_err());

        // The high-s twin of a valid signature recovers the same key but is refused.
        let parsed = Signature::from_raw(&sig).unwrap();
        let n = U256::from_str_radix(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
            16,
        )
        .unwrap();
        let high = Signature::new(parsed.r(), n - parsed.s(), !parsed.v());
        assert_eq!(
            verify(ESCROW, CHAIN, id, 500, &high.as_bytes(), key.address()),
            Err(SignatureFault::Invalid)
        );

        let mut bad_v = sig.clone();
        bad_v[64] = 1;
        assert_eq!(
            verify(ESCROW, CHAIN, id, 500, &bad_v, key.address()),
            Err(SignatureFault::Invalid)
        );
        assert_eq!(
            verify(ESCROW, CHAIN, id, 500, &sig[..63], key.address()),
            Err(SignatureFault::Invalid)
        );
        assert_eq!(
            verify(ESCROW, CHAIN, id, 500, &[0u8; 65], key.address()),
            Err(SignatureFault::Invalid)
        );
    }
}
