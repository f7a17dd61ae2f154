//! The config file as written, and its validation into [`Config`].

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use tollgate_payments::{Address, ChallengeKeys, PrivateKeySigner, SubmissionModes};
use tollgate_providers::{Protocol, UpstreamKind};

use super::secrets::{Environment, SecretRef};
use super::{
    ChainConfig, Config, ConfigError, FeePayerConfig, PricingConfig, RouteConfig, RoutePrice,
    UpstreamConfig,
};
use tollgate_pricing::{Endpoint, PriceTable};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    server: RawServer,
    payments: RawPayments,
    chain: RawChain,
    #[serde(default)]
    store: super::store::RawStore,
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    pricing: RawPricing,
    session: Option<super::session::RawSession>,
    plans: Option<super::plans::RawPlans>,
    #[serde(default)]
    claude: super::claude::RawClaude,
    admin: Option<super::admin::RawAdmin>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    table: Option<String>,
    markup_bps: Option<u32>,
    minimum_charge: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    realm: Option<String>,
    max_body_bytes: u64,
    max_credential_bytes: u64,
    header_read_timeout_secs: u64,
    body_read_timeout_secs: u64,
    idle_timeout_secs: u64,
    max_connections: u64,
    serving_threads: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        let limits = crate::ConnectionLimits::default();
        Self {
            listen: "127.0.0.1:8402".into(),
            realm: None,
            max_body_bytes: 1024 * 1024,
            max_credential_bytes: tollgate_payments::DEFAULT_MAX_CREDENTIAL_BYTES as u64,
            header_read_timeout_secs: limits.header_read_timeout.as_secs(),
            body_read_timeout_secs: limits.body_read_timeout.as_secs(),
            idle_timeout_secs: limits.idle_timeout.as_secs(),
            max_connections: limits.max_connections as u64,
            serving_threads: limits.serving_threads as u64,
        }
    }
}

impl RawServer {
    /// The connection deadlines and limit; a request head may carry the
    /// largest credential plus ordinary headers.
    fn connection_limits(
        &self,
        max_credential_bytes: usize,
    ) -> Result<crate::ConnectionLimits, ConfigError> {
        let secs = |key: &str, value: u64| positive(key, value).map(Duration::from_secs);
        Ok(crate::ConnectionLimits {
            header_read_timeout: secs(
                "server.header_read_timeout_secs",
                self.header_read_timeout_secs,
            )?,
            body_read_timeout: secs("server.body_read_timeout_secs", self.body_read_timeout_secs)?,
            idle_timeout: secs("server.idle_timeout_secs", self.idle_timeout_secs)?,
            max_connections: usize::try_from(positive(
                "server.max_connections",
                self.max_connections,
            )?)
            .unwrap_or(usize::MAX),
            max_header_bytes: (max_credential_bytes + 16 * 1024)
                .max(crate::ConnectionLimits::default().max_header_bytes),
            serving_threads: match self.serving_threads {
                n @ 0..=MAX_SERVING_THREADS => n as usize,
                _ => {
                    return Err(ConfigError::invalid(
                        "server.serving_threads",
                        format!("at most {MAX_SERVING_THREADS} (0 serves on the shared runtime)"),
                    ));
                }
            },
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayments {
    challenge_secrets: Vec<SecretRef>,
    #[serde(default = "default_challenge_ttl")]
    challenge_ttl_secs: u64,
    #[serde(default = "default_settle")]
    settle: String,
    refund_key: Option<SecretRef>,
    refund_fee_token: Option<String>,
}

fn default_settle() -> String {
    "before_upstream".into()
}

fn default_challenge_ttl() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    rpc_url: String,
    chain_id: u64,
    currency: String,
    recipient: String,
    #[serde(default = "default_rpc_timeout")]
    rpc_timeout_secs: u64,
    /// Defaults to `rpc_timeout_secs`.
    confirm_timeout_secs: Option<u64>,
    #[serde(default = "default_modes")]
    submission_modes: Vec<String>,
    fee_payer: Option<RawFeePayer>,
}

fn default_rpc_timeout() -> u64 {
    30
}

fn default_modes() -> Vec<String> {
    vec!["pull".into(), "push".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeePayer {
    private_key: SecretRef,
    fee_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    kind: String,
    base_url: Option<String>,
    api_key: Option<SecretRef>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_secs: u64,
    #[serde(default = "default_idle_timeout")]
    idle_timeout_secs: u64,
    #[serde(default)]
    latency_ms: u64,
    #[serde(default)]
    chunk_interval_ms: u64,
    /// `openai` or `anthropic`: the API format the upstream speaks.
    protocol: Option<String>,
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_idle_timeout() -> u64 {
    120
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: String,
    path: String,
    upstream: String,
    charge: Option<toml::Value>,
    #[serde(default)]
    free: bool,
    quote: Option<String>,
    description: Option<String>,
    /// Model-id prefix → upstream, for requests whose model another
    /// upstream serves (e.g. `"claude-" = "anthropic"`).
    #[serde(default)]
    model_upstreams: BTreeMap<String, String>,
}

impl RawConfig {
    pub(super) fn validate(
        self,
        base_dir: &Path,
        env: &Environment,
    ) -> Result<Config, ConfigError> {
        let listen = self.server.listen.parse().map_err(|_| {
            ConfigError::invalid("server.listen", "expected host:port, e.g. 127.0.0.1:8402")
        })?;
        let connections = self
            .server
            .connection_limits(self.server.max_credential_bytes as usize)?;
        let realm = match self.server.realm {
            Some(realm) if realm.trim().is_empty() || realm.contains('"') => {
                return Err(ConfigError::invalid(
                    "server.realm",
                    "must be non-empty and contain no quotes",
                ));
            }
            Some(realm) => realm,
            None => self.server.listen.clone(),
        };
        let max_body_bytes =
            positive("server.max_body_bytes", self.server.max_body_bytes)? as usize;
        let max_credential_bytes = self.server.max_credential_bytes as usize;
        if max_credential_bytes < 4096 {
            return Err(ConfigError::invalid(
                "server.max_credential_bytes",
                "must be at least 4096 (the protocol requires accepting 4 KiB credentials)",
            ));
        }

        let secrets = self
            .payments
            .challenge_secrets
            .iter()
            .enumerate()
            .map(|(i, s)| s.resolve(&format!("payments.challenge_secrets[{i}]"), base_dir, env))
            .collect::<Result<Vec<_>, _>>()?;
        let signing_secret = secrets.first().cloned().unwrap_or_default();
        let challenge_keys = ChallengeKeys::new(secrets).map_err(|e| {
            let key = match e {
                tollgate_payments::KeyError::TooShort { index, .. } => {
                    format!("payments.challenge_secrets[{index}]")
                }
                tollgate_payments::KeyError::Empty => "payments.challenge_secrets".into(),
            };
            ConfigError::invalid(key, e.to_string())
        })?;
        let ttl = positive(
            "payments.challenge_ttl_secs",
            self.payments.challenge_ttl_secs,
        )?;
        let settle_after_upstream = match self.payments.settle.as_str() {
            "before_upstream" => false,
            "after_upstream" => true,
            other => {
                return Err(ConfigError::invalid(
                    "payments.settle",
                    format!(
                        "unknown value {other:?}; expected \"before_upstream\" or \"after_upstream\""
                    ),
                ));
            }
        };

        let chain = validate_chain(self.chain, base_dir, env)?;
        let session = self
            .session
            .map(|raw| raw.validate(chain.recipient, base_dir, env))
            .transpose()?;
        let refunds = super::refunds::validate(
            self.payments.refund_key,
            self.payments.refund_fee_token.as_deref(),
            chain.recipient,
            session.as_ref(),
            base_dir,
            env,
        )?;
        let store = self.store.validate(base_dir, env)?;
        let upstreams = self
            .upstreams
            .into_iter()
            .map(|(name, raw)| Ok((name.clone(), validate_upstream(&name, raw, base_dir, env)?)))
            .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
        let routes = validate_routes(self.routes, &upstreams)?;
        let pricing = validate_pricing(self.pricing, base_dir)?;
        let plans = self
            .plans
            .map(|raw| raw.validate(&upstreams, &pricing.table, session.is_some()))
            .transpose()?;
        let claude = self.claude.validate(&signing_secret, base_dir, env)?;

        let admin = self
            .admin
            .map(|raw| raw.validate(listen, base_dir, env))
            .transpose()?;

        Ok(Config {
            listen,
            realm,
            max_body_bytes,
            max_credential_bytes,
            connections,
            challenge_ttl: Duration::from_secs(ttl),
            challenge_keys,
            settle_after_upstream,
            refunds,
            chain,
            store,
            upstreams,
            routes,
            pricing,
            session,
            plans,
            claude,
            admin,
        })
    }
}

fn validate_pricing(raw: RawPricing, base_dir: &Path) -> Result<PricingConfig, ConfigError> {
    let mut table = match &raw.table {
        None => PriceTable::builtin(),
        Some(file) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::invalid(
                    "pricing.table",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            PriceTable::from_toml(&text)
                .map_err(|e| ConfigError::invalid("pricing.table", e.to_string()))?
        }
    };
    if let Some(bps) = raw.markup_bps {
        if bps > 100_000 {
            return Err(ConfigError::invalid(
                "pricing.markup_bps",
                "at most 100000 (1000%)",
            ));
        }
        table.policy.markup_bps = bps;
    }
    if let Some(minimum) = raw.minimum_charge {
        table.policy.minimum_charge = u128::from(minimum);
    }
    Ok(PricingConfig { table })
}

/// More serving threads than this is a typo, not a machine.
const MAX_SERVING_THREADS: u64 = 1024;

fn positive(key: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "must be greater than zero"))
    } else {
        Ok(value)
    }
}

fn address(key: &str, text: &str) -> Result<Address, ConfigError> {
    let hex = text.strip_prefix("0x").unwrap_or("");
    if hex.len() != 40 {
        return Err(ConfigError::invalid(
            key,
            "expected a 0x-prefixed 20-byte hex address",
        ));
    }
    Address::from_str(text)
        .map_err(|_| ConfigError::invalid(key, "expected a 0x-prefixed 20-byte hex address"))
}

fn http_url(key: &str, text: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| ConfigError::invalid(key, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::invalid(key, "expected an http(s) URL"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

fn validate_chain(
    raw: RawChain,
    base_dir: &Path,
    env: &Environment,
) -> Result<ChainConfig, ConfigError> {
    let rpc_url = http_url("chain.rpc_url", &raw.rpc_url)?;
    let chain_id = positive("chain.chain_id", raw.chain_id)?;
    let currency = address("chain.currency", &raw.currency)?;
    let recipient = address("chain.recipient", &raw.recipient)?;
    if recipient == Address::ZERO {
        return Err(ConfigError::invalid(
            "chain.recipient",
            "the zero address cannot receive payments",
        ));
    }
    let rpc_timeout = positive("chain.rpc_timeout_secs", raw.rpc_timeout_secs)?;
    let confirm_timeout = positive(
        "chain.confirm_timeout_secs",
        raw.confirm_timeout_secs.unwrap_or(rpc_timeout),
    )?;
    let mut modes = SubmissionModes {
        pull: false,
        push: false,
    };
    for mode in &raw.submission_modes {
        match mode.as_str() {
            "pull" => modes.pull = true,
            "push" => modes.push = true,
            other => {
                return Err(ConfigError::invalid(
                    "chain.submission_modes",
                    format!("unknown mode {other:?}; expected \"pull\" and/or \"push\""),
                ));
            }
        }
    }
    if !modes.pull && !modes.push {
        return Err(ConfigError::invalid(
            "chain.submission_modes",
            "at least one mode is required",
        ));
    }
    let fee_payer = raw
        .fee_payer
        .map(|fp| {
            let key = fp
                .private_key
                .resolve("chain.fee_payer.private_key", base_dir, env)?;
            let signer = PrivateKeySigner::from_str(key.trim()).map_err(|_| {
                ConfigError::invalid(
                    "chain.fee_payer.private_key",
                    "not a 32-byte hex private key",
                )
            })?;
            let fee_token = fp
                .fee_token
                .as_deref()
                .map(|t| address("chain.fee_payer.fee_token", t))
                .transpose()?;
            Ok::<_, ConfigError>(FeePayerConfig { signer, fee_token })
        })
        .transpose()?;
    Ok(ChainConfig {
        rpc_url,
        chain_id,
        currency,
        recipient,
        rpc_timeout: Duration::from_secs(rpc_timeout),
        confirm_timeout: Duration::from_secs(confirm_timeout),
        modes,
        fee_payer,
    })
}

fn validate_upstream(
    name: &str,
    raw: RawUpstream,
    base_dir: &Path,
    env: &Environment,
) -> Result<UpstreamConfig, ConfigError> {
    let key = |field: &str| format!("upstreams.{name}.{field}");
    let protocol = match raw.protocol.as_deref() {
        None => None,
        Some("openai") => Some(Protocol::OpenAi),
        Some("anthropic") => Some(Protocol::Anthropic),
        Some(other) => {
            return Err(ConfigError::invalid(
                key("protocol"),
                format!("unknown protocol {other:?}; expected \"openai\" or \"anthropic\""),
            ));
        }
    };
    let kind = match raw.kind.as_str() {
        "mock" => {
            return Ok(UpstreamConfig::Mock {
                latency: Duration::from_millis(raw.latency_ms),
                chunk_interval: Duration::from_millis(raw.chunk_interval_ms),
                protocol: protocol.unwrap_or(Protocol::OpenAi),
            });
        }
        "openai" => UpstreamKind::OpenAi,
        "anthropic" => UpstreamKind::Anthropic,
        "openai_compatible" => UpstreamKind::OpenAiCompatible,
        other => {
            return Err(ConfigError::invalid(
                key("kind"),
                format!(
                    "unknown kind {other:?}; expected openai, anthropic, openai_compatible or mock"
                ),
            ));
        }
    };
    let base_url = raw
        .base_url
        .as_deref()
        .map(|u| http_url(&key("base_url"), u))
        .transpose()?;
    let base_url = match (base_url, kind) {
        (Some(url), _) => url,
        (None, UpstreamKind::OpenAi) => "https://api.openai.com".into(),
        (None, UpstreamKind::Anthropic) => "https://api.anthropic.com".into(),
        (None, _) => {
            return Err(ConfigError::invalid(
                key("base_url"),
                "required for this kind",
            ));
        }
    };
    let api_key = raw
        .api_key
        .map(|s| {
            s.resolve(&key("api_key"), base_dir, env)
                .map(super::Secret::new)
        })
        .transpose()?;
    if api_key.is_none() && matches!(kind, UpstreamKind::OpenAi | UpstreamKind::Anthropic) {
        return Err(ConfigError::invalid(
            key("api_key"),
            "required for this kind",
        ));
    }
    let default_protocol = match kind {
        UpstreamKind::Anthropic => Protocol::Anthropic,
        _ => Protocol::OpenAi,
    };
    Ok(UpstreamConfig::Http {
        kind,
        protocol: protocol.unwrap_or(default_protocol),
        base_url,
        api_key,
        connect_timeout: Duration::from_secs(positive(
            &key("connect_timeout_secs"),
            raw.connect_timeout_secs,
        )?),
        idle_timeout: Duration::from_secs(positive(
            &key("idle_timeout_secs"),
            raw.idle_timeout_secs,
        )?),
    })
}

fn validate_routes(
    raw: Vec<RawRoute>,
    upstreams: &BTreeMap<String, UpstreamConfig>,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut seen = std::collections::HashSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let key = |field: &str| format!("routes[{i}].{field}");
            let method = http::Method::from_str(&r.method.to_ascii_uppercase())
                .map_err(|_| ConfigError::invalid(key("method"), "not an HTTP method"))?;
            if !r.path.starts_with('/') || r.path.contains(['{', '}', '*', ' ']) {
                return Err(ConfigError::invalid(
                    key("path"),
                    "expected a literal path starting with /",
                ));
            }
            if !upstreams.contains_key(&r.upstream) {
                return Err(ConfigError::invalid(
                    key("upstream"),
                    format!(
                        "unknown upstream {:?}; declare it under [upstreams.{}]",
                        r.upstream, r.upstream
                    ),
                ));
            }
            let price = match (r.charge, r.free, r.quote) {
                (None, true, None) => RoutePrice::Free,
                (Some(value), false, None) => RoutePrice::Fixed(base_units(&key("charge"), &value)?),
                (None, false, Some(name)) => RoutePrice::Quoted(Endpoint::parse(&name).ok_or_else(|| {
                    ConfigError::invalid(
                        key("quote"),
                        format!("unknown quote {name:?}; expected chat, embeddings, images or speech"),
                    )
                })?),
                (None, false, None) => {
                    return Err(ConfigError::invalid(
                        key("charge"),
                        "missing: set a charge in base units, quote = \"chat\" (…), or free = true",
                    ));
                }
                _ => {
                    return Err(ConfigError::invalid(
                        key("free"),
                        "a route is either free, has a fixed charge, or is quoted from the price table",
                    ));
                }
            };
            if !seen.insert((method.clone(), r.path.clone())) {
                return Err(ConfigError::invalid(key("path"), "route declared twice"));
            }
            for (prefix, upstream) in &r.model_upstreams {
                if prefix.is_empty() || !upstreams.contains_key(upstream) {
                    return Err(ConfigError::invalid(
                        key("model_upstreams"),
                        format!("{prefix:?} must be a non-empty model prefix naming a declared upstream"),
                    ));
                }
            }
            Ok(RouteConfig {
                method,
                path: r.path,
                upstream: r.upstream,
                price,
                description: r.description,
                model_upstreams: r.model_upstreams.into_iter().collect(),
            })
        })
        .collect()
}

/// An amount in integer base units, as a TOML integer or a decimal string.
fn base_units(key: &str, value: &toml::Value) -> Result<u128, ConfigError> {
    let parsed = match value {
        toml::Value::Integer(i) if *i >= 0 => Some(*i as u128),
        toml::Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        ConfigError::invalid(
            key,
            "expected a non-negative integer amount in base units (no decimals)",
        )
    })
}
