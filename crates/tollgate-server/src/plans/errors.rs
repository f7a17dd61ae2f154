//! The plan endpoint's stable error codes (docs/plans.md lists each with
//! its recovery).

use axum::http::StatusCode;

/// Every refusal the plan endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// No `Authorization: Payment`: pay the challenge.
    PaymentRequired,
    /// The channel's deposit does not cover the voucher authorization.
    DepositBelowRequestCost,
    MalformedCredential,
    /// Not a `tempo` `session` credential.
    MethodUnsupported,
    /// Not our challenge, altered, expired, or for another route.
    InvalidChallenge,
    /// The credential answers a challenge issued for another body.
    BodyDigestMismatch,
    /// The challenge's plan resolution, pricing snapshot or caps are no
    /// longer what this request gets.
    RequestQuoteInvalid,
    /// The request's worst case is larger than one voucher bucket.
    RequestExceedsVoucherBucket,
    /// Bad voucher signature, signer, open transaction, unknown channel.
    PaymentVerificationFailed,
    PayerNotAllowed,
    /// The accepted voucher does not cover this turn's worst case: sign a
    /// higher cumulative voucher (one more bucket) and retry the same body.
    VoucherBucketRefreshRequired,
    /// The channel cannot take a reservation (closing, finalized) or the
    /// store failed.
    ReservationFailed,
    /// The turn's actual cost could not be committed (no usable usage).
    CommitFailed,
    /// A close was asked but this gateway cannot sign settlements.
    SessionCloseUnavailable,
    /// The close transaction failed on chain.
    SessionCloseFailed,
    /// `stream: true` while streaming is off.
    StreamingUnavailable,
}

impl PlanError {
    pub fn code(self) -> &'static str {
        match self {
            Self::PaymentRequired => "payment_required",
            Self::DepositBelowRequestCost => "mpp_session_deposit_below_request_cost",
            Self::MalformedCredential => "mpp_malformed_credential",
            Self::MethodUnsupported => "mpp_method_unsupported",
            Self::InvalidChallenge => "mpp_invalid_challenge",
            Self::BodyDigestMismatch => "mpp_body_digest_mismatch",
            Self::RequestQuoteInvalid => "mpp_request_quote_invalid",
            Self::RequestExceedsVoucherBucket => "mpp_request_exceeds_voucher_bucket",
            Self::PaymentVerificationFailed => "mpp_payment_verification_failed",
            Self::PayerNotAllowed => "mpp_payer_not_allowed",
            Self::VoucherBucketRefreshRequired => "mpp_voucher_bucket_refresh_required",
            Self::ReservationFailed => "mpp_reservation_failed",
            Self::CommitFailed => "mpp_commit_failed",
            Self::SessionCloseUnavailable => "mpp_session_close_unavailable",
            Self::SessionCloseFailed => "mpp_session_close_failed",
            Self::StreamingUnavailable => "mpp_streaming_unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::RequestExceedsVoucherBucket | Self::StreamingUnavailable => {
                StatusCode::BAD_REQUEST
            }
            Self::PayerNotAllowed => StatusCode::FORBIDDEN,
            Self::ReservationFailed => StatusCode::CONFLICT,
            Self::CommitFailed | Self::SessionCloseFailed => StatusCode::BAD_GATEWAY,
            Self::SessionCloseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::PAYMENT_REQUIRED,
        }
    }

    /// 402s carry a fresh challenge: the client pays or re-signs.
    pub fn carries_challenge(self) -> bool {
        self.status() == StatusCode::PAYMENT_REQUIRED
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::PaymentRequired => "Payment Required",
            Self::DepositBelowRequestCost => "Session Deposit Below Request Cost",
            Self::MalformedCredential => "Malformed Credential",
            Self::MethodUnsupported => "Payment Method Unsupported",
            Self::InvalidChallenge => "Invalid Challenge",
            Self::BodyDigestMismatch => "Body Digest Mismatch",
            Self::RequestQuoteInvalid => "Request Quote Invalid",
            Self::RequestExceedsVoucherBucket => "Request Exceeds Voucher Bucket",
            Self::PaymentVerificationFailed => "Payment Verification Failed",
            Self::PayerNotAllowed => "Payer Not Allowed",
            Self::VoucherBucketRefreshRequired => "Voucher Bucket Refresh Required",
            Self::ReservationFailed => "Reservation Failed",
            Self::CommitFailed => "Commit Failed",
            Self::SessionCloseUnavailable => "Session Close Unavailable",
            Self::SessionCloseFailed => "Session Close Failed",
            Self::StreamingUnavailable => "Streaming Unavailable",
        }
    }

    pub const ALL: [PlanError; 16] = [
        Self::PaymentRequired,
        Self::DepositBelowRequestCost,
        Self::MalformedCredential,
        Self::MethodUnsupported,
        Self::InvalidChallenge,
        Self::BodyDigestMismatch,
        Self::RequestQuoteInvalid,
        Self::RequestExceedsVoucherBucket,
        Self::PaymentVerificationFailed,
        Self::PayerNotAllowed,
        Self::VoucherBucketRefreshRequired,
        Self::ReservationFailed,
        Self::CommitFailed,
        Self::SessionCloseUnavailable,
        Self::SessionCloseFailed,
        Self::StreamingUnavailable,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_distinct_codes() {
        let codes: std::collections::BTreeSet<_> =
            PlanError::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), 16);
    }
}
