//! `[store]`: SQLite (embedded, the default) or PostgreSQL (several
//! instances), and this instance's identity and lease.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tollgate_ledger::{DEFAULT_LEASE, Durability, Instance};

use super::secrets::{Environment, SecretRef};
use super::{ConfigError, Secret};

const DEFAULT_POOL_SIZE: u64 = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    #[serde(default = "default_kind")]
    kind: String,
    path: Option<String>,
    durability: Option<String>,
    url: Option<SecretRef>,
    pool_size: Option<u64>,
    instance_id: Option<String>,
    lease_secs: Option<u64>,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            path: None,
            durability: None,
            url: None,
            pool_size: None,
            instance_id: None,
            lease_secs: None,
        }
    }
}

fn default_kind() -> String {
    "sqlite".into()
}

/// Where the ledger lives and who this instance is.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// The configured instance id; `None`: a fresh one per start.
    pub instance_id: Option<String>,
    /// How long this instance's holds outlive it.
    pub lease: Duration,
}

#[derive(Debug, Clone)]
pub enum StoreBackend {
    Sqlite {
        path: PathBuf,
        durability: Durability,
    },
    Postgres {
        url: Secret,
        pool_size: usize,
    },
}

impl StoreConfig {
    /// This start's instance: the configured id, or a generated one.
    pub fn instance(&self) -> Instance {
        match &self.instance_id {
            Some(id) => Instance::named(id.clone(), self.lease),
            None => Instance::generated(self.lease),
        }
    }

    /// The SQLite file, when the store is SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            StoreBackend::Sqlite { path, .. } => Some(path),
            StoreBackend::Postgres { .. } => None,
        }
    }

    /// For start-up messages (never the URL: it may carry a password).
    pub fn describe(&self) -> String {
        match &self.backend {
            StoreBackend::Sqlite { path, .. } => format!("SQLite {}", path.display()),
            StoreBackend::Postgres { .. } => "PostgreSQL (store.url)".into(),
        }
    }
}

impl RawStore {
    pub(crate) fn validate(
        self,
        base_dir: &Path,
        env: &Environment,
    ) -> Result<StoreConfig, ConfigError> {
        let backend = match self.kind.as_str() {
            "sqlite" => self.sqlite(base_dir)?,
            "postgres" => self.postgres(base_dir, env)?,
            other => {
                return Err(ConfigError::invalid(
                    "store.kind",
                    format!("unknown store {other:?}; expected \"sqlite\" or \"postgres\""),
                ));
            }
        };
        let lease = match self.lease_secs {
            None => DEFAULT_LEASE,
            Some(secs @ 2..=3600) => Duration::from_secs(secs),
            Some(_) => {
                return Err(ConfigError::invalid(
                    "store.lease_secs",
                    "must be between 2 and 3600 seconds",
                ));
            }
        };
        if let Some(id) = &self.instance_id {
            let valid = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(ConfigError::invalid(
                    "store.instance_id",
                    "1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
                ));
            }
        }
        Ok(StoreConfig {
            backend,
            instance_id: self.instance_id,
            lease,
        })
    }

    fn sqlite(&self, base_dir: &Path) -> Result<StoreBackend, ConfigError> {
        only_for("postgres", "store.url", self.url.is_some())?;
        only_for("postgres", "store.pool_size", self.pool_size.is_some())?;
        let path = self.path.as_deref().unwrap_or("tollgate.db");
        if path.trim().is_empty() {
            return Err(ConfigError::invalid("store.path", "must not be empty"));
        }
        let durability = match self.durability.as_deref().unwrap_or("full") {
            "full" => Durability::Full,
            "normal" => Durability::Normal,
            other => {
                return Err(ConfigError::invalid(
                    "store.durability",
                    format!("unknown durability {other:?}; expected \"full\" or \"normal\""),
                ));
            }
        };
        Ok(StoreBackend::Sqlite {
            path: base_dir.join(path),
            durability,
        })
    }

    fn postgres(&self, base_dir: &Path, env: &Environment) -> Result<StoreBackend, ConfigError> {
        only_for("sqlite", "store.path", self.path.is_some())?;
        only_for("sqlite", "store.durability", self.durability.is_some())?;
        let Some(url) = &self.url else {
            return Err(ConfigError::invalid(
                "store.url",
                "required for kind = \"postgres\": a secret reference, e.g. { env = \"TOLLGATE_DATABASE_URL\" }",
            ));
        };
        let url = url.resolve("store.url", base_dir, env)?;
        tollgate_ledger::PgLedger::check_url(&url)
            .map_err(|message| ConfigError::invalid("store.url", message))?;
        let pool_size = match self.pool_size.unwrap_or(DEFAULT_POOL_SIZE) {
            size @ 1..=1024 => size as usize,
            _ => {
                return Err(ConfigError::invalid(
                    "store.pool_size",
                    "must be between 1 and 1024",
                ));
            }
        };
        Ok(StoreBackend::Postgres {
            url: Secret::new(url),
            pool_size,
        })
    }
}

fn only_for(kind: &str, key: &str, given: bool) -> Result<(), ConfigError> {
    if given {
        return Err(ConfigError::invalid(
            key,
            format!("only applies to kind = \"{kind}\""),
        ));
    }
    Ok(())
}
