//! Secrets are referenced, never written into the config: `{ env = "NAME" }`
//! or `{ file = "path" }`.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<String>,
}

/// The process environment as seen by the config loader (injectable in tests).
pub(crate) struct Environment {
    vars: HashMap<String, String>,
}

impl Environment {
    pub fn new(vars: Vec<(String, String)>) -> Self {
        Self {
            vars: vars.into_iter().collect(),
        }
    }
}

impl SecretRef {
    /// Reads the secret. Files lose one trailing newline.
    pub(crate) fn resolve(
        &self,
        key: &str,
        base_dir: &Path,
        env: &Environment,
    ) -> Result<String, ConfigError> {
        match (&self.env, &self.file) {
            (Some(name), None) => env.vars.get(name).cloned().ok_or_else(|| {
                ConfigError::invalid(key, format!("environment variable {name} is not set"))
            }),
            (None, Some(file)) => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::invalid(key, format!("cannot read {}: {e}", path.display()))
                })?;
                Ok(text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text)
                    .to_owned())
            }
            _ => Err(ConfigError::invalid(
                key,
                "a secret is { env = \"NAME\" } or { file = \"path\" }",
            )),
        }
    }
}
