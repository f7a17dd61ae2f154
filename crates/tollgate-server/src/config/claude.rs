//! The `[claude]` section: what the Claude routes add to the gateway —
//! the secret `user` is hashed with before it reaches Anthropic, and the
//! price of `POST /v1/messages/count_tokens`.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use super::secrets::{Environment, SecretRef};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClaude {
    user_id_secret: Option<SecretRef>,
    #[serde(default)]
    count_tokens_charge: u64,
}

/// Validated `[claude]` settings.
#[derive(Clone)]
pub struct ClaudeConfig {
    /// The HMAC key a translated request's `user` is hashed with into
    /// `metadata.user_id`.
    pub user_id_key: Vec<u8>,
    /// `POST /v1/messages/count_tokens`: 0 is free, else a fixed charge in
    /// base units.
    pub count_tokens_charge: u128,
}

impl std::fmt::Debug for ClaudeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaudeConfig")
            .field("count_tokens_charge", &self.count_tokens_charge)
            .finish_non_exhaustive()
    }
}

/// The label the default key is derived under (never the secret itself).
const USER_ID_KEY_LABEL: &str = "tollgate/claude/user_id";

impl RawClaude {
    /// `signing_secret`: the first challenge secret, from which the user-id
    /// key is derived when `user_id_secret` is not set.
    pub(super) fn validate(
        self,
        signing_secret: &str,
        base_dir: &Path,
        env: &Environment,
    ) -> Result<ClaudeConfig, ConfigError> {
        let base = match &self.user_id_secret {
            Some(secret) => {
                let value = secret.resolve("claude.user_id_secret", base_dir, env)?;
                if value.len() < 32 {
                    return Err(ConfigError::invalid(
                        "claude.user_id_secret",
                        "must be at least 32 characters",
                    ));
                }
                value
            }
            None => signing_secret.to_owned(),
        };
        // Domain-separated, so the key is not the challenge secret itself.
        let user_id_key = tollgate_providers::anthropic::to_anthropic::hashed_user_id(
            base.as_bytes(),
            USER_ID_KEY_LABEL,
        )
        .into_bytes();
        Ok(ClaudeConfig {
            user_id_key,
            count_tokens_charge: u128::from(self.count_tokens_charge),
        })
    }
}
