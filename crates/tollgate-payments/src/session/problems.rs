//! The problems session actions answer with, one builder each.

use tollgate_ledger::{ChannelRecord, LedgerError, VoucherRefusal};

use super::chain::ChainError;
use crate::problem::{PaymentProblem, ProblemKind};
use crate::session_v2::V2Error;

pub(super) fn insufficient(channel: &ChannelRecord, needed: u128) -> PaymentProblem {
    let available = channel.available();
    PaymentProblem::new(
        ProblemKind::SessionInsufficientBalance,
        "the authorized balance does not cover this request",
    )
    .with("channelId", channel.channel_id.clone())
    .with(
        "requiredTopUp",
        needed.saturating_sub(available).to_string(),
    )
    .with("acceptedCumulative", channel.accepted.to_string())
    .with("spent", channel.spent.to_string())
}

pub(super) fn refusal_problem(refusal: VoucherRefusal) -> PaymentProblem {
    match refusal {
        VoucherRefusal::NotFound => not_found(),
        VoucherRefusal::Finalized => PaymentProblem::new(
            ProblemKind::SessionChannelFinalized,
            "the channel is closed",
        ),
        VoucherRefusal::Closing => PaymentProblem::new(
            ProblemKind::SessionChannelFinalized,
            "the channel is closing",
        ),
        VoucherRefusal::Decreasing { accepted } => PaymentProblem::new(
            ProblemKind::SessionDeltaTooSmall,
            "the voucher is below the highest accepted voucher",
        )
        .with("acceptedCumulative", accepted.to_string()),
        VoucherRefusal::DeltaTooSmall { accepted } => PaymentProblem::new(
            ProblemKind::SessionDeltaTooSmall,
            "the voucher increases by less than minVoucherDelta",
        )
        .with("acceptedCumulative", accepted.to_string()),
        VoucherRefusal::ExceedsDeposit { deposit } => PaymentProblem::new(
            ProblemKind::SessionAmountExceedsDeposit,
            "the voucher exceeds the channel deposit",
        )
        .with("deposit", deposit.to_string()),
    }
}

pub(super) fn not_found() -> PaymentProblem {
    PaymentProblem::new(
        ProblemKind::SessionChannelNotFound,
        "no open channel with this id",
    )
}

pub(super) fn invalid_payload(detail: &str) -> PaymentProblem {
    PaymentProblem::new(ProblemKind::InvalidPayload, detail)
}

pub(super) fn corrupt(what: &str) -> PaymentProblem {
    tracing::error!(what, "stored session state is corrupt");
    PaymentProblem::new(ProblemKind::Internal, "stored channel state is corrupt")
}

pub(super) fn not_offered(protocol: super::Protocol) -> PaymentProblem {
    PaymentProblem::new(
        ProblemKind::MethodUnsupported,
        format!("session protocol {protocol} is not offered here"),
    )
}

pub(super) fn chain_problem(error: ChainError) -> PaymentProblem {
    match error {
        ChainError::Unavailable(reason) => {
            tracing::warn!(reason = %reason, "chain unavailable on the session path");
            PaymentProblem::new(
                ProblemKind::ChainUnavailable,
                "the chain could not be reached",
            )
        }
        ChainError::Refused(reason) => {
            tracing::info!(reason = %reason, "chain refused a session transaction");
            PaymentProblem::new(
                ProblemKind::VerificationFailed,
                "the transaction was refused",
            )
        }
        ChainError::Invalid(reason) => PaymentProblem::new(ProblemKind::InvalidPayload, reason),
    }
}

/// A v2 check's refusal as the draft's problem type.
pub(super) fn v2_problem(error: V2Error) -> PaymentProblem {
    let detail = error.to_string();
    let kind = match error {
        V2Error::InvalidPayload(_) | V2Error::AmountOutOfRange => ProblemKind::InvalidPayload,
        V2Error::DescriptorMismatch(_) => ProblemKind::VerificationFailed,
        V2Error::InvalidSignature(_) => ProblemKind::SessionInvalidSignature,
        V2Error::SignerMismatch { .. } => ProblemKind::SessionSignerMismatch,
        V2Error::AmountExceedsDeposit { .. } => ProblemKind::SessionAmountExceedsDeposit,
        V2Error::ChannelNotFound => ProblemKind::SessionChannelNotFound,
        V2Error::ChannelFinalized => ProblemKind::SessionChannelFinalized,
        V2Error::Rpc(_) => ProblemKind::ChainUnavailable,
    };
    PaymentProblem::new(kind, detail)
}

pub(super) fn store_failure(error: LedgerError) -> PaymentProblem {
    crate::store_problem(&error)
}
