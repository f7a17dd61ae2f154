//! Gateway configuration: TOML on disk, `TOLLGATE__…` environment overrides,
//! secrets from files or the environment, and validation that names the key
//! at fault.

mod admin;
mod claude;
mod overrides;
mod plans;
mod raw;
mod refunds;
mod secrets;
mod session;
mod store;

pub use plans::{CustomPrice, OptimizationRule, PlanConfig, PlanModel, PlansConfig};

pub use admin::AdminConfig;
pub use claude::ClaudeConfig;
pub use refunds::RefundConfig;
pub use session::{SessionConfig, SettlementPolicy};
pub use store::{StoreBackend, StoreConfig};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tollgate_payments::{Address, ChallengeKeys, PrivateKeySigner, SubmissionModes};

pub use raw::RawConfig;
pub use secrets::SecretRef;

/// A resolved secret: usable, but never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A configuration problem, always naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: String, message: String },
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The validated configuration the gateway runs with.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub realm: String,
    pub max_body_bytes: usize,
    pub max_credential_bytes: usize,
    /// Connection deadlines and the connection limit.
    pub connections: crate::ConnectionLimits,
    pub challenge_ttl: Duration,
    pub challenge_keys: ChallengeKeys,
    /// Broadcast a client-signed transfer only once the upstream answered
    /// successfully (failed calls cost the payer nothing; the operator
    /// carries the risk of a transfer failing after the upstream call).
    pub settle_after_upstream: bool,
    /// Refunds of charges whose answer was not delivered.
    pub refunds: RefundConfig,
    pub chain: ChainConfig,
    pub store: StoreConfig,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub pricing: PricingConfig,
    /// Escrow channel sessions, offered beside `charge` on quoted routes.
    pub session: Option<SessionConfig>,
    /// The accountless plan endpoint `POST /v1/mpp/chat/completions`.
    pub plans: Option<PlansConfig>,
    /// `[claude]`: the user-id hashing key and the count_tokens price.
    pub claude: ClaudeConfig,
    /// The operator's listener (metrics, dashboard); off when `None`.
    pub admin: Option<AdminConfig>,
}

#[derive(Debug)]
pub struct ChainConfig {
    pub rpc_url: String,
    pub chain_id: u64,
    pub currency: Address,
    pub recipient: Address,
    pub rpc_timeout: Duration,
    /// How long a charge waits for its transaction to be mined.
    pub confirm_timeout: Duration,
    pub modes: SubmissionModes,
    pub fee_payer: Option<FeePayerConfig>,
}

pub struct FeePayerConfig {
    pub signer: PrivateKeySigner,
    pub fee_token: Option<Address>,
}

impl std::fmt::Debug for FeePayerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeePayerConfig")
            .field("fee_token", &self.fee_token)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum UpstreamConfig {
    Mock {
        latency: Duration,
        chunk_interval: Duration,
        protocol: tollgate_providers::Protocol,
    },
    Http {
        kind: tollgate_providers::UpstreamKind,
        protocol: tollgate_providers::Protocol,
        base_url: String,
        api_key: Option<Secret>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub method: http::Method,
    pub path: String,
    pub upstream: String,
    pub price: RoutePrice,
    pub description: Option<String>,
    /// Model-id prefix → upstream name; longest prefix wins, else `upstream`.
    pub model_upstreams: Vec<(String, String)>,
}

/// How a route is paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutePrice {
    Free,
    /// A fixed amount in base units of the chain currency.
    Fixed(u128),
    /// Quoted per request from the body and the price table.
    Quoted(tollgate_pricing::Endpoint),
}

#[derive(Debug, Clone)]
pub struct PricingConfig {
    pub table: tollgate_pricing::PriceTable,
}

impl RouteConfig {
    /// The route's identity inside challenges (`opaque`): method and path.
    pub fn scope(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

impl Config {
    /// Reads `path`, applies `TOLLGATE__…` overrides from the process
    /// environment, resolves secrets and validates everything.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base_dir, std::env::vars())
    }

    /// Parses `text`; relative paths resolve against `base_dir`.
    pub fn from_toml(
        text: &str,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut document: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        overrides::apply(&mut document, &env)?;
        let raw: RawConfig = toml::Value::Table(document)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        raw.validate(base_dir, &secrets::Environment::new(env))
    }
}
