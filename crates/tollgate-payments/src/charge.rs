//! Tempo `charge` settlement through the SDK's verifier, with our own
//! pre-broadcast simulation, RPC deadline and error mapping.

use std::sync::Arc;
use std::time::Duration;

use alloy::consensus::transaction::SignerRecoverable;
use alloy::eips::Decodable2718;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use mpp::protocol::traits::{ChargeMethod, ErrorCode, VerificationError};
use mpp::server::{TempoChargeMethod, TempoProvider, tempo_provider};
use mpp::{ChargeRequest, PaymentCredential};
use tempo_alloy::rpc::TempoTransactionRequest;
use tollgate_ledger::Ledger;

use crate::offer::ChargeOffer;
use crate::problem::{PaymentProblem, ProblemKind};
use crate::redact::redact_hex;
use crate::store::LedgerStore;

/// What a settled charge leaves behind.
#[derive(Debug, Clone)]
pub struct SettledCharge {
    /// Transaction hash (or the challenge id for a zero-amount proof).
    pub reference: String,
    /// `Payment-Receipt` header value.
    pub receipt_header: String,
}

#[derive(Debug, Clone)]
pub struct ChainSettings {
    pub rpc_url: String,
    /// Deadline for a chain read (the pre-broadcast simulation).
    pub rpc_timeout: Duration,
    /// How long settling a charge waits for its transaction to be mined
    /// (broadcast and confirmation included).
    pub confirm_timeout: Duration,
    /// Co-signs sponsored transactions when set.
    pub fee_payer: Option<PrivateKeySigner>,
    /// Token the sponsor pays fees in (defaults to the SDK's choice).
    pub fee_token: Option<Address>,
}

/// Verifies and settles Tempo charge credentials on one chain.
#[derive(Clone)]
pub struct TempoChargeVerifier {
    method: TempoChargeMethod<TempoProvider>,
    provider: TempoProvider,
    ledger: Arc<dyn Ledger>,
    rpc_timeout: Duration,
    confirm_timeout: Duration,
}

impl TempoChargeVerifier {
    pub fn new(settings: ChainSettings, ledger: Arc<dyn Ledger>) -> Result<Self, String> {
        let provider = tempo_provider(&settings.rpc_url).map_err(|e| e.to_string())?;
        let mut method = TempoChargeMethod::new(provider.clone())
            .with_store(Arc::new(LedgerStore::new(Arc::clone(&ledger))));
        if let Some(signer) = settings.fee_payer {
            method = method.with_fee_payer(signer);
            if let Some(token) = settings.fee_token {
                method = method
                    .with_fee_payer_allowed_fee_tokens(vec![token])
                    .with_fee_payer_fee_token(token);
            }
        }
        Ok(Self {
            method,
            provider,
            ledger,
            rpc_timeout: settings.rpc_timeout,
            confirm_timeout: settings.confirm_timeout,
        })
    }

    /// Checks an unsponsored pull transaction before anything is broadcast:
    /// validity window and a simulation of its calls. Other credentials need
    /// no precheck.
    pub async fn precheck(
        &self,
        credential: &PaymentCredential,
        offer: &ChargeOffer,
    ) -> Result<(), PaymentProblem> {
        if offer.fee_payer {
            return Ok(()); // the SDK simulates sponsored transactions itself
        }
        self.within_deadline(self.simulate_pull(credential)).await
    }

    /// Broadcasts (pull) or looks up (push) the transfer and confirms it from
    /// the receipt logs, or verifies a proof. The caller has already checked
    /// the challenge binding and holds the challenge's single-use claim.
    pub async fn settle(
        &self,
        credential: &PaymentCredential,
    ) -> Result<SettledCharge, PaymentProblem> {
        let request: ChargeRequest = credential
            .challenge
            .request
            .decode()
            .map_err(|_| PaymentProblem::new(ProblemKind::InvalidChallenge, "bad request"))?;
        let submitted = pull_transaction_hash(credential);
        let work = async {
            let receipt = self
                .method
                .verify(credential, &request)
                .await
                .map_err(map_verification_error)?;
            let receipt_header = receipt
                .to_header()
                .map_err(|e| PaymentProblem::new(ProblemKind::Internal, format!("receipt: {e}")))?;
            Ok(SettledCharge {
                reference: receipt.reference,
                receipt_header,
            })
        };
        match (
            tokio::time::timeout(self.confirm_timeout, work).await,
            submitted,
        ) {
            (Ok(Ok(settled)), _) => Ok(settled),
            (Ok(Err(problem)), Some(hash)) => match self.transaction_state(hash).await {
                // The node refused a resubmission of a transaction it holds.
                Some(Submitted::Pending) => Err(self.not_mined()),
                _ => Err(problem),
            },
            (Ok(Err(problem)), None) => Err(problem),
            (Err(_), Some(hash)) => {
                // The SDK marks a transaction as submitted before broadcasting and
                // clears the mark when settling fails; a wait cut short leaves it,
                // which would refuse the same credential as a replay. Clear it: the
                // transaction can still pay only once (its hash is claimed when
                // confirmed).
                let mark = format!("mpp:charge:submission:{hash:#x}");
                if let Err(e) = self.ledger.kv_delete(&mark).await {
                    tracing::error!(error = %e, "could not clear a submission mark");
                }
                match self.transaction_state(hash).await {
                    Some(_) => Err(self.not_mined()),
                    None => Err(timed_out()),
                }
            }
            (Err(_), None) => Err(timed_out()),
        }
    }

    /// The transaction reached the node but was not confirmed in time.
    fn not_mined(&self) -> PaymentProblem {
        PaymentProblem::new(
            ProblemKind::ChainUnavailable,
            format!(
                "the transaction was submitted but not mined within {} s; nothing was served and \
                 the credential is still unused. Send the same credential again before the \
                 challenge expires: once the transaction is mined it pays for this request. \
                 Do not pay a new challenge meanwhile, or both transfers may be mined.",
                self.confirm_timeout.as_secs()
            ),
        )
    }

    /// Whether the node knows the transaction, and whether it is mined.
    async fn transaction_state(&self, hash: B256) -> Option<Submitted> {
        let lookup: Result<Option<serde_json::Value>, _> = tokio::time::timeout(
            self.rpc_timeout,
            self.provider
                .raw_request("eth_getTransactionByHash".into(), [hash]),
        )
        .await
        .ok()?;
        let found = lookup.ok()??;
        Some(if found.get("blockNumber").is_some_and(|b| !b.is_null()) {
            Submitted::Mined
        } else {
            Submitted::Pending
        })
    }

    async fn within_deadline<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, PaymentProblem>>,
    ) -> Result<T, PaymentProblem> {
        tokio::time::timeout(self.rpc_timeout, work)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// Runs the calls of an unsponsored signed transaction as `eth_call` from
    /// its sender, so a payer without funds is refused before anything is
    /// mined (and before the payer spends gas on a reverting transfer).
    async fn simulate_pull(&self, credential: &PaymentCredential) -> Result<(), PaymentProblem> {
        let Some(signed_hex) = credential
            .payload
            .get("signature")
            .and_then(|v| v.as_str())
            .filter(|_| {
                credential.payload.get("type").and_then(|t| t.as_str()) == Some("transaction")
            })
        else {
            return Ok(());
        };
        let bytes = alloy::hex::decode(signed_hex).map_err(|_| {
            PaymentProblem::new(
                ProblemKind::InvalidPayload,
                "transaction is not hex-encoded",
            )
        })?;
        if bytes.first() != Some(&0x76) {
            // Fee-payer envelopes and other types are checked by the SDK.
            return Ok(());
        }
        let signed = tempo_alloy::primitives::AASigned::decode_2718(&mut bytes.as_slice())
            .map_err(|_| {
                PaymentProblem::new(ProblemKind::InvalidPayload, "transaction cannot be decoded")
            })?;
        let sender = signed.recover_signer().map_err(|_| {
            PaymentProblem::new(
                ProblemKind::VerificationFailed,
                "transaction signature is invalid",
            )
        })?;
        let expires = credential
            .challenge
            .expires
            .as_deref()
            .and_then(|e| {
                time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| t.unix_timestamp().max(0) as u64);
        check_validity_window(
            signed.tx().valid_before.map(|v| v.get()),
            signed.tx().valid_after.map(|v| v.get()),
            unix_now(),
            expires,
        )?;
        // Each call on its own, as plain `eth_call`s: every node understands
        // them (anvil ignores the `calls` list of a Tempo call request).
        for call in &signed.tx().calls {
            let Some(to) = call.to.to().copied() else {
                continue;
            };
            let request = TempoTransactionRequest {
                inner: TransactionRequest::default()
                    .from(sender)
                    .to(to)
                    .value(call.value)
                    .input(call.input.clone().into()),
                ..Default::default()
            };
            let result: Result<alloy::primitives::Bytes, _> = self
                .provider
                .raw_request("eth_call".into(), (request, "latest"))
                .await;
            match result {
                Ok(_) => {}
                Err(e) if e.as_error_resp().is_some() => {
                    return Err(PaymentProblem::new(
                        ProblemKind::VerificationFailed,
                        format!(
                            "transaction would fail on chain: {}",
                            redact_hex(&e.to_string())
                        ),
                    ));
                }
                Err(_) => {
                    return Err(PaymentProblem::new(
                        ProblemKind::ChainUnavailable,
                        "the payment network is unreachable; nothing was charged or served",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where a submitted transaction stands on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Submitted {
    Pending,
    Mined,
}

fn timed_out() -> PaymentProblem {
    PaymentProblem::new(
        ProblemKind::ChainUnavailable,
        "the payment network did not answer in time; nothing was served and the credential \
         is still unused: send the same credential again later",
    )
}

/// The hash of an unsponsored pull transaction (the bytes the server
/// broadcasts as they are). Sponsored ones are co-signed first, so their
/// hash is only known once broadcast.
fn pull_transaction_hash(credential: &PaymentCredential) -> Option<B256> {
    if credential.payload.get("type").and_then(|t| t.as_str()) != Some("transaction") {
        return None;
    }
    let signed = credential.payload.get("signature")?.as_str()?;
    let bytes = alloy::hex::decode(signed).ok()?;
    (bytes.first() == Some(&0x76)).then(|| alloy::primitives::keccak256(&bytes))
}

/// Clock skew tolerated between us, the client and the chain.
const CLOCK_SKEW_SECS: u64 = 5;
/// How far past the challenge's expiry a transaction may stay valid (the
/// reference client signs `validBefore = expires + 1`).
const VALID_BEFORE_SLACK_SECS: u64 = 60;

/// A transaction must be valid now, and must not stay valid long after the
/// challenge it answers (the spec asks `validBefore` ≤ `expires`).
fn check_validity_window(
    valid_before: Option<u64>,
    valid_after: Option<u64>,
    now: u64,
    challenge_expires: Option<u64>,
) -> Result<(), PaymentProblem> {
    let refuse = |detail: &str| PaymentProblem::new(ProblemKind::VerificationFailed, detail);
    if let Some(before) = valid_before {
        if before <= now {
            return Err(refuse("transaction validity window has passed"));
        }
        if challenge_expires.is_some_and(|exp| before > exp + VALID_BEFORE_SLACK_SECS) {
            return Err(refuse(
                "transaction stays valid long after the challenge expires",
            ));
        }
    }
    if valid_after.is_some_and(|after| after > now + CLOCK_SKEW_SECS) {
        return Err(refuse("transaction is not valid yet"));
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Maps the SDK's verdict onto our problem kinds. Details are redacted of
/// hex (addresses, hashes) so they are safe to log.
fn map_verification_error(error: VerificationError) -> PaymentProblem {
    let detail = redact_hex(&error.message);
    let kind = match error.code {
        Some(ErrorCode::Expired) => ProblemKind::PaymentExpired,
        Some(ErrorCode::InvalidChallenge) => ProblemKind::InvalidChallenge,
        Some(ErrorCode::InvalidCredential) => ProblemKind::MalformedCredential,
        Some(ErrorCode::InvalidPayload) => ProblemKind::InvalidPayload,
        Some(ErrorCode::CredentialReplayed) => ProblemKind::CredentialReplayed,
        Some(ErrorCode::Internal) => ProblemKind::Internal,
        // The node answered and knows no receipt for the pushed hash: never
        // broadcast (or not mined yet). The payer's to fix, not an outage,
        // though the SDK marks it retryable.
        Some(ErrorCode::NotFound) => ProblemKind::VerificationFailed,
        // The node answered but refused the transaction (nonce, funds …).
        Some(ErrorCode::NetworkError) if error.message.contains("error response") => {
            ProblemKind::VerificationFailed
        }
        Some(ErrorCode::NetworkError) => ProblemKind::ChainUnavailable,
        _ if error.retryable => ProblemKind::ChainUnavailable,
        _ => ProblemKind::VerificationFailed,
    };
    PaymentProblem::new(kind, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_window_rules() {
        let now = 1_000;
        assert!(check_validity_window(None, None, now, Some(1_300)).is_ok());
        assert!(check_validity_window(Some(1_025), Some(900), now, Some(1_300)).is_ok());
        assert!(check_validity_window(Some(1_301), None, now, Some(1_300)).is_ok());
        for (before, after) in [
            (Some(1_000), None),
            (Some(999), None),
            (Some(1_361), None),
            (None, Some(1_006)),
        ] {
            let problem = check_validity_window(before, after, now, Some(1_300)).unwrap_err();
            assert_eq!(
                problem.kind,
                ProblemKind::VerificationFailed,
                "{before:?} {after:?}"
            );
        }
    }

    #[test]
    fn sdk_errors_map_to_stable_problem_kinds() {
        let kind = |code, message: &str| {
            let mut error = VerificationError::new(message);
            error.code = code;
            map_verification_error(error).kind
        };
        assert_eq!(
            kind(Some(ErrorCode::Expired), "x"),
            ProblemKind::PaymentExpired
        );
        assert_eq!(
            kind(Some(ErrorCode::CredentialReplayed), "x"),
            ProblemKind::CredentialReplayed
        );
        assert_eq!(
            kind(Some(ErrorCode::NetworkError), "error sending request"),
            ProblemKind::ChainUnavailable
        );
        assert_eq!(
            kind(
                Some(ErrorCode::NetworkError),
                "server returned an error response: nonce too low"
            ),
            ProblemKind::VerificationFailed
        );
        assert_eq!(
            kind(
                Some(ErrorCode::NotFound),
                "Transaction 0xab not found or not yet mined"
            ),
            ProblemKind::VerificationFailed
        );
        assert_eq!(
            map_verification_error(VerificationError::pending("not yet mined")).kind,
            ProblemKind::VerificationFailed
        );
        assert_eq!(
            map_verification_error(VerificationError::network_error("Failed to fetch receipt"))
                .kind,
            ProblemKind::ChainUnavailable
        );
        assert_eq!(
            kind(None, "memo is not bound"),
            ProblemKind::VerificationFailed
        );
        let detail = map_verification_error(VerificationError::new(
            "sender 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 mismatch",
        ))
        .detail;
        assert!(!detail.contains("f39Fd6"), "{detail}");
    }
}
