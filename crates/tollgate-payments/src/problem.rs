//! Payment problems as RFC 9457 problem details.

use serde_json::{Value, json};

/// Base URI of the protocol's problem types.
pub const PROBLEM_BASE: &str = "https://paymentauth.org/problems/";

/// Every way a payment attempt can fail, with its wire identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// No credential: pay first.
    PaymentRequired,
    /// The credential is not decodable.
    MalformedCredential,
    /// Unknown, tampered, already used, or for another route/body.
    InvalidChallenge,
    /// The challenge's `expires` has passed.
    PaymentExpired,
    /// The proof does not pay what was asked.
    VerificationFailed,
    /// The payload is not what the method expects.
    InvalidPayload,
    /// The method or intent is not accepted here.
    MethodUnsupported,
    /// The payment was valid but replays an already used transaction.
    CredentialReplayed,
    /// The chain could not be reached; nothing was charged or served.
    ChainUnavailable,
    /// Our own failure (store, signer).
    Internal,
    /// The payment state store is unreachable right now; nothing was
    /// charged or served, retry later.
    StoreUnavailable,
    /// Session: the voucher signature is malformed, high-s or does not verify.
    SessionInvalidSignature,
    /// Session: the voucher is signed by someone other than the channel's signer.
    SessionSignerMismatch,
    /// Session: the voucher authorizes more than the channel's deposit.
    SessionAmountExceedsDeposit,
    /// Session: the voucher increases by less than `minVoucherDelta`, or decreases.
    SessionDeltaTooSmall,
    /// Session: no such channel (here or on chain).
    SessionChannelNotFound,
    /// Session: the channel is closed or closing.
    SessionChannelFinalized,
    /// Session: the challenge is unknown or expired.
    SessionChallengeNotFound,
    /// Session: the authorized balance does not cover the request.
    SessionInsufficientBalance,
    /// The payer is refused by the operator's allow/deny policy.
    PayerNotAllowed,
}

impl ProblemKind {
    pub fn slug(self) -> &'static str {
        match self {
            Self::PaymentRequired => "payment-required",
            Self::MalformedCredential => "malformed-credential",
            Self::InvalidChallenge => "invalid-challenge",
            Self::PaymentExpired => "payment-expired",
            Self::VerificationFailed | Self::CredentialReplayed => "verification-failed",
            Self::InvalidPayload => "invalid-payload",
            Self::MethodUnsupported => "method-unsupported",
            Self::ChainUnavailable => "chain-unavailable",
            Self::Internal => "internal-payment-error",
            Self::StoreUnavailable => "store-unavailable",
            Self::SessionInvalidSignature => "session/invalid-signature",
            Self::SessionSignerMismatch => "session/signer-mismatch",
            Self::SessionAmountExceedsDeposit => "session/amount-exceeds-deposit",
            Self::SessionDeltaTooSmall => "session/delta-too-small",
            Self::SessionChannelNotFound => "session/channel-not-found",
            Self::SessionChannelFinalized => "session/channel-finalized",
            Self::SessionChallengeNotFound => "session/challenge-not-found",
            Self::SessionInsufficientBalance => "session/insufficient-balance",
            Self::PayerNotAllowed => "payer-not-allowed",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::PaymentRequired => "Payment Required",
            Self::MalformedCredential => "Malformed Credential",
            Self::InvalidChallenge => "Invalid Challenge",
            Self::PaymentExpired => "Payment Expired",
            Self::VerificationFailed => "Verification Failed",
            Self::CredentialReplayed => "Credential Already Used",
            Self::InvalidPayload => "Invalid Payload",
            Self::MethodUnsupported => "Method Unsupported",
            Self::ChainUnavailable => "Payment Network Unavailable",
            Self::Internal => "Internal Payment Error",
            Self::StoreUnavailable => "Payment State Unavailable",
            Self::SessionInvalidSignature => "Invalid Signature",
            Self::SessionSignerMismatch => "Signer Mismatch",
            Self::SessionAmountExceedsDeposit => "Amount Exceeds Deposit",
            Self::SessionDeltaTooSmall => "Voucher Delta Too Small",
            Self::SessionChannelNotFound => "Channel Not Found",
            Self::SessionChannelFinalized => "Channel Finalized",
            Self::SessionChallengeNotFound => "Challenge Not Found",
            Self::SessionInsufficientBalance => "Insufficient Balance",
            Self::PayerNotAllowed => "Payer Not Allowed",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::MethodUnsupported => 400,
            Self::SessionChannelNotFound | Self::SessionChannelFinalized => 410,
            Self::PayerNotAllowed => 403,
            Self::ChainUnavailable | Self::StoreUnavailable => 503,
            Self::Internal => 500,
            _ => 402,
        }
    }

    /// Whether the response carries a fresh challenge the client can pay
    /// (a gone channel gets one too: the client can open a new channel).
    pub fn carries_challenge(self) -> bool {
        matches!(self.status(), 402 | 410)
    }

    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }
}

/// A failed payment attempt. `detail` is safe to show the client and to log:
/// it never contains credentials, signatures, addresses or amounts paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentProblem {
    pub kind: ProblemKind,
    pub detail: String,
    /// Extension members (e.g. `channelId`, `requiredTopUp`).
    pub extensions: Vec<(&'static str, Value)>,
}

impl PaymentProblem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            extensions: Vec::new(),
        }
    }

    /// Adds an extension member to the problem body.
    pub fn with(mut self, name: &'static str, value: impl Into<Value>) -> Self {
        self.extensions.push((name, value.into()));
        self
    }

    /// The RFC 9457 body; `challenge_id` names the fresh challenge, if any.
    pub fn to_json(&self, challenge_id: Option<&str>) -> Value {
        let mut body = json!({
            "type": self.kind.type_uri(),
            "title": self.kind.title(),
            "status": self.kind.status(),
            "detail": self.detail,
        });
        if let Some(id) = challenge_id {
            body["challengeId"] = Value::String(id.to_owned());
        }
        for (name, value) in &self.extensions {
            body[*name] = value.clone();
        }
        body
    }
}

impl std::fmt::Display for PaymentProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.slug(), self.detail)
    }
}

impl std::error::Error for PaymentProblem {}
