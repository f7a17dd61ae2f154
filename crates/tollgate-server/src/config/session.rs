//! The `[session]` section: escrow channels offered beside `charge`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use tollgate_payments::session::{Protocols, RESERVE_ADDRESS};
use tollgate_payments::{Address, PrivateKeySigner};

use super::ConfigError;
use super::secrets::{Environment, SecretRef};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    /// `v1`, `v2` or `both`.
    protocol: Option<String>,
    /// The v1 escrow contract (v1 and both).
    escrow: Option<String>,
    /// The v2 channel reserve (default: the TIP-1034 precompile address).
    reserve: Option<String>,
    #[serde(default = "default_deposit")]
    suggested_deposit: u64,
    #[serde(default)]
    min_voucher_delta: u64,
    operator_key: Option<SecretRef>,
    fee_token: Option<String>,
    #[serde(default = "default_voucher_wait")]
    stream_voucher_timeout_secs: u64,
    #[serde(default = "default_checkpoint_tokens")]
    stream_checkpoint_tokens: u64,
    #[serde(default = "default_stream_challenge_tokens")]
    stream_challenge_tokens: u64,
    #[serde(default = "default_interval")]
    settle_interval_secs: u64,
    #[serde(default = "default_min_unsettled")]
    settle_min_unsettled: u64,
    #[serde(default = "default_max_age")]
    settle_max_age_secs: u64,
}

fn default_deposit() -> u64 {
    5_000_000
}
fn default_voucher_wait() -> u64 {
    30
}
fn default_checkpoint_tokens() -> u64 {
    64
}
fn default_stream_challenge_tokens() -> u64 {
    256
}
fn default_interval() -> u64 {
    30
}
fn default_min_unsettled() -> u64 {
    1_000_000
}
fn default_max_age() -> u64 {
    3_600
}

/// Validated session settings.
#[derive(Debug)]
pub struct SessionConfig {
    /// Which session protocols are offered.
    pub protocols: Protocols,
    /// The v1 escrow (zero when only v2 is offered).
    pub escrow: Address,
    /// The v2 channel reserve.
    pub reserve: Address,
    pub suggested_deposit: u128,
    pub min_voucher_delta: u128,
    /// The payee's key, for settle and close.
    pub operator: Option<PrivateKeySigner>,
    /// Token our settle/close transactions pay fees in (the node's default
    /// for the operator account when unset).
    pub fee_token: Option<Address>,
    /// How long a stream waits for a voucher after `payment-need-voucher`.
    pub stream_voucher_timeout: Duration,
    /// A stream charges what it delivered every this many output tokens,
    /// so a crash loses at most that much.
    pub stream_checkpoint_tokens: u64,
    /// The session challenge of a streamed request asks for its prompt
    /// plus this many output tokens (never above its worst case): a stream
    /// pauses for a voucher past that, where a whole answer cannot.
    pub stream_challenge_tokens: u64,
    pub settlement: SettlementPolicy,
}

/// When the settlement worker settles a channel.
#[derive(Debug, Clone, Copy)]
pub struct SettlementPolicy {
    /// How often the worker looks (and refreshes channels from the chain).
    pub interval: Duration,
    /// Settle once this much is spent but unsettled…
    pub min_unsettled: u128,
    /// …or once anything unsettled is this old.
    pub max_age: Duration,
}

impl RawSession {
    pub(super) fn validate(
        self,
        recipient: Address,
        base_dir: &Path,
        env: &Environment,
    ) -> Result<SessionConfig, ConfigError> {
        // Without `protocol`: v2, unless the section names only a v1
        // escrow (a config written for an escrow chain keeps working).
        let protocols = match (&self.protocol, &self.escrow, &self.reserve) {
            (Some(name), _, _) => Protocols::parse(name).ok_or_else(|| {
                ConfigError::invalid("session.protocol", "must be \"v1\", \"v2\" or \"both\"")
            })?,
            (None, Some(_), None) => Protocols::V1,
            (None, _, _) => Protocols::V2,
        };
        let address = |key: &str, value: &str| {
            let parsed: Address = value
                .parse()
                .map_err(|_| ConfigError::invalid(key, "not a 0x-hex address"))?;
            if parsed == Address::ZERO {
                return Err(ConfigError::invalid(key, "must not be the zero address"));
            }
            Ok(parsed)
        };
        let escrow = match self.escrow.as_deref() {
            Some(escrow) => address("session.escrow", escrow)?,
            None if protocols == Protocols::V2 => Address::ZERO,
            None => {
                return Err(ConfigError::invalid(
                    "session.escrow",
                    "is required for session protocol v1 (and both)",
                ));
            }
        };
        let reserve = match self.reserve.as_deref() {
            Some(reserve) => address("session.reserve", reserve)?,
            None => RESERVE_ADDRESS,
        };
        if self.suggested_deposit == 0 {
            return Err(ConfigError::invalid(
                "session.suggested_deposit",
                "must be positive",
            ));
        }
        let operator = self
            .operator_key
            .map(|secret| {
                let key = secret.resolve("session.operator_key", base_dir, env)?;
                let signer = PrivateKeySigner::from_str(key.trim()).map_err(|_| {
                    ConfigError::invalid("session.operator_key", "not a 32-byte hex private key")
                })?;
                if signer.address() != recipient {
                    return Err(ConfigError::invalid(
                        "session.operator_key",
                        "must be the key of chain.recipient (the channel payee signs settlements)",
                    ));
                }
                Ok(signer)
            })
            .transpose()?;
        let fee_token = self
            .fee_token
            .as_deref()
            .map(|t| {
                t.parse::<Address>()
                    .map_err(|_| ConfigError::invalid("session.fee_token", "not a 0x-hex address"))
            })
            .transpose()?;
        let positive = |key: &str, value: u64| {
            if value == 0 {
                Err(ConfigError::invalid(key, "must be positive"))
            } else {
                Ok(Duration::from_secs(value))
            }
        };
        Ok(SessionConfig {
            protocols,
            escrow,
            reserve,
            suggested_deposit: u128::from(self.suggested_deposit),
            min_voucher_delta: u128::from(self.min_voucher_delta),
            operator,
            fee_token,
            stream_voucher_timeout: positive(
                "session.stream_voucher_timeout_secs",
                self.stream_voucher_timeout_secs,
            )?,
            stream_checkpoint_tokens: match self.stream_checkpoint_tokens {
                0 => {
                    return Err(ConfigError::invalid(
                        "session.stream_checkpoint_tokens",
                        "must be positive",
                    ));
                }
                n => n,
            },
            stream_challenge_tokens: self.stream_challenge_tokens,
            settlement: SettlementPolicy {
                interval: positive("session.settle_interval_secs", self.settle_interval_secs)?,
                min_unsettled: u128::from(self.settle_min_unsettled),
                max_age: positive("session.settle_max_age_secs", self.settle_max_age_secs)?,
            },
        })
    }
}
