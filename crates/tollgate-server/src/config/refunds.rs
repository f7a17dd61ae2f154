//! `[payments] refund_key` and `refund_fee_token`: how charges whose answer
//! was not delivered are refunded on chain.

use std::path::Path;
use std::str::FromStr;

use tollgate_payments::{Address, PrivateKeySigner};

use super::ConfigError;
use super::secrets::{Environment, SecretRef};
use super::session::SessionConfig;

/// How refunds are signed and paid for.
#[derive(Debug, Clone, Default)]
pub struct RefundConfig {
    /// The recipient's key (`payments.refund_key`, else
    /// `session.operator_key`). Without it refunds are recorded as owed.
    pub signer: Option<PrivateKeySigner>,
    /// Token the refund transactions pay fees in (`payments.refund_fee_token`,
    /// else `session.fee_token`, else the node's default).
    pub fee_token: Option<Address>,
}

pub(super) fn validate(
    key: Option<SecretRef>,
    fee_token: Option<&str>,
    recipient: Address,
    session: Option<&SessionConfig>,
    base_dir: &Path,
    env: &Environment,
) -> Result<RefundConfig, ConfigError> {
    let signer = match key {
        Some(secret) => {
            let key = secret.resolve("payments.refund_key", base_dir, env)?;
            let signer = PrivateKeySigner::from_str(key.trim()).map_err(|_| {
                ConfigError::invalid("payments.refund_key", "not a 32-byte hex private key")
            })?;
            if signer.address() != recipient {
                return Err(ConfigError::invalid(
                    "payments.refund_key",
                    "must be the key of chain.recipient (refunds are paid from it)",
                ));
            }
            Some(signer)
        }
        None => session.and_then(|s| s.operator.clone()),
    };
    let fee_token = match fee_token {
        Some(text) => Some(text.parse::<Address>().map_err(|_| {
            ConfigError::invalid("payments.refund_fee_token", "not a 0x-hex address")
        })?),
        None => session.and_then(|s| s.fee_token),
    };
    Ok(RefundConfig { signer, fee_token })
}
