//! v1 voucher signatures: EIP-712 over (channelId, uint128 cumulativeAmount)
//! in the "Tempo Stream Channel" v1 domain of one escrow on one chain.
//! Pure and cheap: no RPC, so it can run on every request.

use std::sync::LazyLock;

use alloy::primitives::{Address, B256, Signature, keccak256};
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
    let recovered = recover(&parsed, &digest).ok_or(SignatureFault::Invalid)?;
    if recovered == expected_signer {
        Ok(())
    } else {
        Err(SignatureFault::WrongSigner)
    }
}

/// libsecp256k1's context; verification needs no precomputation of its own.
static SECP: LazyLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
    LazyLock::new(secp256k1::Secp256k1::verification_only);

/// The address that signed `digest`, through libsecp256k1 (about 4× faster
/// than k256 here). `signature` comes from [`parse_signature`], so `s` is
/// already low; `r` or `s` of zero or not below the curve order, and
/// signatures recovering no point, give `None`, as k256 does.
pub(crate) fn recover(signature: &Signature, digest: &B256) -> Option<Address> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&signature.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&signature.s().to_be_bytes::<32>());
    let id = RecoveryId::try_from(i32::from(signature.v())).ok()?;
    let signature = RecoverableSignature::from_compact(&compact, id).ok()?;
    let message = secp256k1::Message::from_digest(digest.0);
    let key = SECP.recover_ecdsa(&message, &signature).ok()?;
    let hash = keccak256(&key.serialize_uncompressed()[1..]);
    Some(Address::from_slice(&hash[12..]))
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

    /// The k256 recovery `verify` used before: the reference `recover` must
    /// match bit for bit.
    fn k256_recover(signature: &Signature, digest: &B256) -> Option<Address> {
        signature.recover_address_from_prehash(digest).ok()
    }

    /// splitmix64: deterministic bytes for the comparison below.
    struct Bytes(u64);

    impl Bytes {
        fn fill<const N: usize>(&mut self) -> [u8; N] {
            let mut out = [0u8; N];
            for chunk in out.chunks_mut(8) {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
            }
            out
        }
    }

    #[test]
    fn libsecp256k1_recovers_what_k256_recovers_from_real_signatures() {
        let mut random = Bytes(1);
        for i in 0..300u32 {
            let key = PrivateKeySigner::from_bytes(&B256::from(random.fill::<32>())).unwrap();
            let id = B256::from(random.fill::<32>());
            let amount = u128::from_le_bytes(random.fill::<16>());
            let digest = signing_hash(ESCROW, CHAIN, id, amount);
            let raw = key.sign_hash_sync(&digest).unwrap().as_bytes();
            let compact = Signature::from_raw(&raw).unwrap().as_erc2098();
            for bytes in [&raw[..], &compact[..]] {
                let parsed = parse_signature(bytes).unwrap();
                assert_eq!(recover(&parsed, &digest), Some(key.address()), "#{i}");
                assert_eq!(k256_recover(&parsed, &digest), Some(key.address()), "#{i}");
                assert_eq!(
                    verify(ESCROW, CHAIN, id, amount, bytes, key.address()),
                    Ok(())
                );
            }
        }
    }

    #[test]
    fn libsecp256k1_and_k256_agree_on_random_and_degenerate_signatures() {
        let mut random = Bytes(2);
        let n: [u8; 32] =
            alloy::hex::decode("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141")
                .unwrap()
                .try_into()
                .unwrap();
        let half_n: [u8; 32] =
            alloy::hex::decode("7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0")
                .unwrap()
                .try_into()
                .unwrap();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for _ in 0..2_000 {
            let mut sig = random.fill::<65>().to_vec();
            sig[64] = 27 + (sig[64] & 1);
            cases.push(sig.clone());
            cases.push(sig[..64].to_vec());
        }
        let one = {
            let mut b = [0u8; 32];
            b[31] = 1;
            b
        };
        for (r, s) in [
            ([0u8; 32], one),
            (one, [0u8; 32]),
            (n, one),
            (one, n),
            ([0xff; 32], one),
            (one, half_n),
            (half_n, one),
            (one, one),
        ] {
            for v in [27u8, 28] {
                cases.push([&r[..], &s[..], &[v]].concat());
            }
        }
        let mut recovered = 0;
        for (i, case) in cases.iter().enumerate() {
            let digest = B256::from(random.fill::<32>());
            let Some(parsed) = parse_signature(case) else {
                continue;
            };
            let ours = recover(&parsed, &digest);
            assert_eq!(
                ours,
                k256_recover(&parsed, &digest),
                "case #{i}: {case:02x?}"
            );
            recovered += usize::from(ours.is_some());
        }
        // Random (r, s) with low s recover some key about half the time.
        assert!(recovered > 500, "{recovered}");
    }
}
