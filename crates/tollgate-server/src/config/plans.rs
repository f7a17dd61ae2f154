//! The `[plans]` section: the accountless plan endpoint
//! `POST /v1/mpp/chat/completions` (docs/plans.md).

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_payments::Address;

use super::{ConfigError, UpstreamConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlans {
    #[serde(default = "default_bucket")]
    voucher_bucket: u64,
    #[serde(default = "default_deposit")]
    suggested_deposit: u64,
    #[serde(default)]
    streaming: bool,
    #[serde(default = "default_head")]
    head: String,
    #[serde(default)]
    payer_allow: Vec<String>,
    #[serde(default)]
    payer_deny: Vec<String>,
    #[serde(default = "default_rule")]
    optimization: String,
    plans: BTreeMap<String, RawPlan>,
    models: BTreeMap<String, RawModel>,
}

fn default_bucket() -> u64 {
    1_000_000
}
fn default_deposit() -> u64 {
    5_000_000
}
fn default_head() -> String {
    "disabled".into()
}
fn default_rule() -> String {
    "cheapest_fit".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    models: Vec<String>,
    max_input_tokens: u64,
    max_output_tokens: u64,
    #[serde(default = "default_multiplier")]
    price_multiplier_bps: u32,
}

fn default_multiplier() -> u32 {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    upstream: String,
    /// Prices for models the price table does not hold (open models on a
    /// runtime), base units per million tokens.
    input_per_mtok: Option<u64>,
    output_per_mtok: Option<u64>,
    context_window: Option<u64>,
}

/// How `model_optimization` picks a model (docs/plans.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizationRule {
    /// The plan's model with the lowest worst-case cost whose context fits
    /// the prompt and the output cap; ties go to the first listed.
    CheapestFit,
    /// The first listed model whose context fits.
    FirstFit,
}

#[derive(Debug, Clone)]
pub struct PlanConfig {
    pub name: String,
    pub models: Vec<String>,
    pub max_input_tokens: u64,
    pub max_output_tokens: u64,
    pub price_multiplier_bps: u32,
}

/// A model a plan may use, and where it runs.
#[derive(Debug, Clone)]
pub struct PlanModel {
    pub upstream: String,
    /// `None`: priced by the price table.
    pub custom_price: Option<CustomPrice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomPrice {
    pub input_per_mtok: u128,
    pub output_per_mtok: u128,
    pub context_window: u64,
}

#[derive(Debug, Clone)]
pub struct PlansConfig {
    pub voucher_bucket: u128,
    pub suggested_deposit: u128,
    pub streaming: bool,
    /// `HEAD` answers challenge metadata (else 405).
    pub head_metadata: bool,
    pub payer_allow: Vec<Address>,
    pub payer_deny: Vec<Address>,
    pub optimization: OptimizationRule,
    pub plans: Vec<PlanConfig>,
    pub models: BTreeMap<String, PlanModel>,
}

impl RawPlans {
    pub(super) fn validate(
        self,
        upstreams: &BTreeMap<String, UpstreamConfig>,
        table: &tollgate_pricing::PriceTable,
        sessions: bool,
    ) -> Result<PlansConfig, ConfigError> {
        if !sessions {
            return Err(ConfigError::invalid(
                "plans",
                "the plan endpoint is paid by sessions: configure [session] too",
            ));
        }
        if self.voucher_bucket == 0 {
            return Err(ConfigError::invalid(
                "plans.voucher_bucket",
                "must be positive",
            ));
        }
        if self.suggested_deposit < self.voucher_bucket {
            return Err(ConfigError::invalid(
                "plans.suggested_deposit",
                "must cover at least one voucher bucket",
            ));
        }
        let head_metadata = match self.head.as_str() {
            "disabled" => false,
            "metadata" => true,
            other => {
                return Err(ConfigError::invalid(
                    "plans.head",
                    format!("unknown value {other:?}; expected \"disabled\" or \"metadata\""),
                ));
            }
        };
        let optimization = match self.optimization.as_str() {
            "cheapest_fit" => OptimizationRule::CheapestFit,
            "first_fit" => OptimizationRule::FirstFit,
            other => {
                return Err(ConfigError::invalid(
                    "plans.optimization",
                    format!("unknown rule {other:?}; expected \"cheapest_fit\" or \"first_fit\""),
                ));
            }
        };
        let addresses = |key: &str, list: &[String]| {
            list.iter()
                .map(|a| {
                    a.parse::<Address>()
                        .map_err(|_| ConfigError::invalid(key, format!("{a:?} is not an address")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut models = BTreeMap::new();
        for (id, raw) in self.models {
            let key = |f: &str| format!("plans.models.\"{id}\".{f}");
            if !upstreams.contains_key(&raw.upstream) {
                return Err(ConfigError::invalid(key("upstream"), "unknown upstream"));
            }
            let custom_price = match (raw.input_per_mtok, raw.output_per_mtok, raw.context_window) {
                (None, None, None) => {
                    if table.chat_model(&id).is_none() {
                        return Err(ConfigError::invalid(
                            key("input_per_mtok"),
                            "the price table has no such model: give input_per_mtok, output_per_mtok and context_window",
                        ));
                    }
                    None
                }
                (Some(input), Some(output), Some(window)) if window > 0 => Some(CustomPrice {
                    input_per_mtok: u128::from(input),
                    output_per_mtok: u128::from(output),
                    context_window: window,
                }),
                _ => {
                    return Err(ConfigError::invalid(
                        key("input_per_mtok"),
                        "give all of input_per_mtok, output_per_mtok and context_window, or none",
                    ));
                }
            };
            models.insert(
                id,
                PlanModel {
                    upstream: raw.upstream,
                    custom_price,
                },
            );
        }
        let mut plans = Vec::new();
        for (name, raw) in self.plans {
            let key = |f: &str| format!("plans.plans.{name}.{f}");
            if raw.models.is_empty() {
                return Err(ConfigError::invalid(key("models"), "a plan needs a model"));
            }
            if let Some(unknown) = raw.models.iter().find(|m| !models.contains_key(*m)) {
                return Err(ConfigError::invalid(
                    key("models"),
                    format!("{unknown:?} is not declared under [plans.models]"),
                ));
            }
            if raw.max_input_tokens == 0
                || raw.max_output_tokens == 0
                || raw.price_multiplier_bps == 0
            {
                return Err(ConfigError::invalid(
                    key("max_input_tokens"),
                    "caps and multiplier must be positive",
                ));
            }
            plans.push(PlanConfig {
                name,
                models: raw.models,
                max_input_tokens: raw.max_input_tokens,
                max_output_tokens: raw.max_output_tokens,
                price_multiplier_bps: raw.price_multiplier_bps,
            });
        }
        if plans.is_empty() {
            return Err(ConfigError::invalid(
                "plans.plans",
                "declare at least one plan",
            ));
        }
        Ok(PlansConfig {
            voucher_bucket: u128::from(self.voucher_bucket),
            suggested_deposit: u128::from(self.suggested_deposit),
            streaming: self.streaming,
            head_metadata,
            payer_allow: addresses("plans.payer_allow", &self.payer_allow)?,
            payer_deny: addresses("plans.payer_deny", &self.payer_deny)?,
            optimization,
            plans,
            models,
        })
    }
}
