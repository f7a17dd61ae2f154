//! The `[admin]` section: the operator's listener (metrics, dashboard).

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use super::secrets::{Environment, SecretRef};
use super::{ConfigError, Secret};

/// Shortest admin token accepted (bytes).
const MIN_TOKEN_BYTES: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: String,
    token: Option<SecretRef>,
}

/// Validated admin settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `Authorization: Bearer <token>` (or HTTP Basic with it as password).
    pub token: Secret,
}

impl RawAdmin {
    pub(super) fn validate(
        self,
        public: SocketAddr,
        base_dir: &Path,
        env: &Environment,
    ) -> Result<AdminConfig, ConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            ConfigError::invalid("admin.listen", "expected host:port, e.g. 127.0.0.1:9402")
        })?;
        if listen == public && listen.port() != 0 {
            return Err(ConfigError::invalid(
                "admin.listen",
                "must differ from server.listen",
            ));
        }
        let token = self
            .token
            .ok_or_else(|| {
                ConfigError::invalid(
                    "admin.token",
                    "required: the admin listener refuses to run without a token, e.g. token = { env = \"TOLLGATE_ADMIN_TOKEN\" }",
                )
            })?
            .resolve("admin.token", base_dir, env)?;
        if token.trim().len() < MIN_TOKEN_BYTES || token.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "admin.token",
                format!("must be at least {MIN_TOKEN_BYTES} characters, without spaces"),
            ));
        }
        Ok(AdminConfig {
            listen,
            token: Secret::new(token),
        })
    }
}
