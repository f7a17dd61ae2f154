//! Building the gateway from its configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodFilter, get, on};
use tollgate_ledger::{Ledger, PgLedger, PgSettings, SqliteLedger};
use tollgate_payments::session::{SessionGate, SessionSettings};
use tollgate_payments::{
    ChainSettings, ChallengeIssuer, ChargeOffer, Offer, PaymentGate, RefundSettings, Refunds,
    TempoChargeVerifier,
};
use tollgate_pricing::PriceTable;
use tollgate_providers::{Upstream, UpstreamTimeouts};

use crate::admin::{AdminState, AdminToken, Observer, SettlementCounters};
use crate::config::{Config, RouteConfig, RoutePrice, StoreBackend, UpstreamConfig};
use crate::pricing::Pricing;
use crate::problem;
use crate::routes;
use crate::state::{ClientApi, Gateway, Route};

/// How long opening one PostgreSQL connection (or waiting for a pooled one)
/// may take.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("store: {0}")]
    Store(#[from] tollgate_ledger::LedgerError),
    /// The PostgreSQL in `store.url` cannot be reached or set up.
    #[error("invalid value for `store.url`: {0}")]
    StoreUrl(String),
    #[error("chain: {0}")]
    Chain(String),
    #[error("upstream `{name}`: {message}")]
    Upstream { name: String, message: String },
    #[error("route {scope}: {message}")]
    Route { scope: String, message: String },
}

/// What a `kind = "mock"` upstream is configured with.
#[derive(Debug, Clone, Copy)]
pub struct MockSettings {
    pub latency: Duration,
    pub chunk_interval: Duration,
}

/// Builds the router of an in-process mock upstream. The server does not
/// carry a mock itself; the CLI passes `tollgate-mock`'s.
pub type MockFactory = fn(&MockSettings) -> Router;

/// What the embedding program adds to a configuration.
#[derive(Default, Clone)]
pub struct BuildOptions {
    /// A ledger to use instead of opening `[store]` (one gateway instance:
    /// its holds belong to the ledger's instance).
    pub ledger: Option<Arc<dyn Ledger>>,
    /// Serves `kind = "mock"` upstreams; without it they are refused.
    pub mock: Option<MockFactory>,
}

/// The public router and, with `[admin]`, the operator's (metrics and
/// dashboard), to be served on `config.admin.listen`.
pub struct App {
    pub public: Router,
    pub admin: Option<Router>,
}

/// Opens the store, releases the holds this instance id left before a
/// restart, connects the chain and wires every route.
pub async fn build(config: &Config) -> Result<Router, BuildError> {
    build_with(config, BuildOptions::default()).await
}

/// Like [`build`], with what the embedding program provides.
pub async fn build_with(config: &Config, options: BuildOptions) -> Result<Router, BuildError> {
    Ok(build_app(config, options).await?.public)
}

/// Like [`build_with`], with the admin router when `[admin]` is configured.
pub async fn build_app(config: &Config, options: BuildOptions) -> Result<App, BuildError> {
    let ledger: Arc<dyn Ledger> = match options.ledger {
        Some(ledger) => ledger,
        None => open_store(config).await?,
    };
    build_on(config, ledger, options.mock).await
}

/// Opens the configured store as this start's instance (the configured
/// `store.instance_id`, or a generated one). A PostgreSQL that cannot be
/// reached or set up is an error naming `store.url`.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Ledger>, BuildError> {
    let instance = config.store.instance();
    Ok(match &config.store.backend {
        StoreBackend::Sqlite { path, durability } => {
            Arc::new(SqliteLedger::open_as(path, *durability, instance)?)
        }
        StoreBackend::Postgres { url, pool_size } => Arc::new(
            PgLedger::connect(PgSettings {
                url: url.expose().to_owned(),
                pool_size: *pool_size,
                instance,
                connect_timeout: PG_CONNECT_TIMEOUT,
            })
            .await
            .map_err(|e| BuildError::StoreUrl(e.to_string()))?,
        ),
    })
}

/// Like [`build`], on a given ledger (one instance: the holds its id left
/// before a restart are released here, nobody else's).
pub async fn build_with_ledger(
    config: &Config,
    ledger: Arc<dyn Ledger>,
) -> Result<Router, BuildError> {
    Ok(build_on(config, ledger, None).await?.public)
}

async fn build_on(
    config: &Config,
    ledger: Arc<dyn Ledger>,
    mock: Option<MockFactory>,
) -> Result<App, BuildError> {
    let released = ledger.start_instance().await?;
    if !released.is_empty() {
        tracing::warn!(
            reservations = released.reservations,
            claims = released.claims,
            idempotency_keys = released.idempotency_keys,
            "released the holds this instance id left before its restart"
        );
    }
    tracing::info!(instance = %ledger.instance().id, "gateway instance started");
    tollgate_ledger::spawn_keeper(&ledger);
    let chain = &config.chain;
    let verifier = TempoChargeVerifier::new(
        ChainSettings {
            rpc_url: chain.rpc_url.clone(),
            rpc_timeout: chain.rpc_timeout,
            confirm_timeout: chain.confirm_timeout,
            fee_payer: chain.fee_payer.as_ref().map(|f| f.signer.clone()),
            fee_token: chain.fee_payer.as_ref().and_then(|f| f.fee_token),
        },
        Arc::clone(&ledger),
    )
    .map_err(BuildError::Chain)?;
    let issuer = ChallengeIssuer::new(
        config.realm.clone(),
        config.challenge_keys.clone(),
        config.challenge_ttl,
    );
    let mut gate = PaymentGate::new(
        issuer,
        verifier,
        Arc::clone(&ledger),
        config.max_credential_bytes,
    );
    let refunds = Arc::new(
        Refunds::new(
            RefundSettings {
                rpc_url: chain.rpc_url.clone(),
                rpc_timeout: chain.rpc_timeout,
                chain_id: chain.chain_id,
                currency: chain.currency,
                recipient: chain.recipient,
                signer: config.refunds.signer.clone(),
                fee_token: config.refunds.fee_token,
            },
            Arc::clone(&ledger),
        )
        .map_err(BuildError::Chain)?,
    );
    if !refunds.can_sign() {
        tracing::warn!(
            "no refund key (payments.refund_key or session.operator_key): charges whose answer is not delivered are recorded as owed, not refunded"
        );
    }
    crate::refund_worker::spawn(&refunds);
    gate = gate.with_refunds(refunds);
    let sessions = session_gate(config, Arc::clone(&ledger))?;
    let settlement_counters = Arc::new(SettlementCounters::default());
    if let (Some(sessions), Some(session)) = (&sessions, &config.session) {
        sessions.ring_on_channel_events();
        crate::settlement::spawn(
            sessions,
            session.settlement,
            Arc::clone(&settlement_counters),
            Arc::clone(&ledger),
        );
        gate = gate.with_sessions(Arc::clone(sessions));
    }
    let gateway = Arc::new(Gateway {
        gate,
        ledger,
        max_body_bytes: config.max_body_bytes,
        settle_after_upstream: config.settle_after_upstream,
        stream_voucher_timeout: config
            .session
            .as_ref()
            .map_or(Duration::from_secs(30), |s| s.stream_voucher_timeout),
        stream_checkpoint_tokens: config
            .session
            .as_ref()
            .map_or(64, |s| s.stream_checkpoint_tokens),
        stream_challenge_tokens: config
            .session
            .as_ref()
            .map_or(256, |s| s.stream_challenge_tokens),
        session_floor: config.pricing.table.finalize(1).max(1),
    });
    let upstreams = build_upstreams(config, mock)?;
    let table = Arc::new(config.pricing.table.clone());
    let translation = Arc::new(crate::translation::Translation::new(
        Arc::clone(&table),
        config.claude.user_id_key.clone(),
    ));
    // Tokenizer dictionaries (o200k ≈ 68 MB resident, cl100k ≈ 30 MB) load
    // on the first request that counts with them, not here: an idle
    // gateway, or one whose routes never count with cl100k, stays small.

    // Group routes by path: one axum route per path, one method filter each.
    let mut by_path: BTreeMap<&str, Vec<&RouteConfig>> = BTreeMap::new();
    for route in &config.routes {
        by_path.entry(route.path.as_str()).or_default().push(route);
    }
    let mut router = Router::new().route("/healthz", get(|| async { "ok" }));
    for (path, routes) in by_path {
        let mut method_router = axum::routing::MethodRouter::new();
        let mut head_free = !routes
            .iter()
            .any(|r| r.method == http::Method::HEAD || r.method == http::Method::GET);
        for route_config in routes {
            let filter = MethodFilter::try_from(route_config.method.clone()).map_err(|e| {
                BuildError::Route {
                    scope: route_config.scope(),
                    message: e.to_string(),
                }
            })?;
            let route = Arc::new(Route {
                scope: route_config.scope(),
                upstream: upstreams[&route_config.upstream].clone(),
                model_upstreams: route_config
                    .model_upstreams
                    .iter()
                    .map(|(prefix, name)| (prefix.clone(), upstreams[name].clone()))
                    .collect(),
                client_api: ClientApi::of_path(&route_config.path),
                pricing: route_pricing(config, route_config, &table, sessions.as_ref()),
                translation: Arc::clone(&translation),
            });
            // Session clients send voucher top-ups as `HEAD` on the resource.
            let session_head = route.pricing.session_terms().is_some()
                && head_free
                && route_config.method != http::Method::HEAD;
            if session_head {
                head_free = false;
                let gateway = Arc::clone(&gateway);
                let route = Arc::clone(&route);
                method_router = method_router.merge(on(MethodFilter::HEAD, move |request| {
                    routes::handle(Arc::clone(&gateway), Arc::clone(&route), request)
                }));
            }
            let gateway = Arc::clone(&gateway);
            method_router = method_router.merge(on(filter, move |request| {
                routes::handle(Arc::clone(&gateway), Arc::clone(&route), request)
            }));
        }
        if ClientApi::of_path(path) == ClientApi::AnthropicMessages {
            // Anthropic SDKs read errors in Anthropic's shape only.
            method_router =
                method_router.layer(axum::middleware::from_fn(crate::error_shape::anthropic));
        }
        router = router.route(path, method_router);
    }
    router = crate::model_routes::register(router, config, &gateway, &translation, &table);
    if let Some(plans) = &config.plans {
        let sessions = sessions.clone().ok_or_else(|| BuildError::Route {
            scope: crate::plans::PATH.into(),
            message: "the plan endpoint needs [session]".into(),
        })?;
        let endpoint = Arc::new(crate::plans::PlanEndpoint {
            pricing_snapshot: crate::plans::pricing_snapshot(&table, plans),
            config: plans.clone(),
            gateway: Arc::clone(&gateway),
            sessions,
            upstreams: upstreams.clone(),
            table: Arc::clone(&table),
            translation: Arc::clone(&translation),
        });
        router = router.route(
            crate::plans::PATH,
            axum::routing::post({
                let endpoint = Arc::clone(&endpoint);
                move |request| crate::plans::handle(Arc::clone(&endpoint), request)
            })
            .head(move |request| crate::plans::handle(Arc::clone(&endpoint), request)),
        );
    }
    router = crate::discovery::add_routes(router, config);
    let mut router = router
        .fallback(problem::not_found)
        .layer(axum::middleware::map_response(method_not_allowed_problem));
    let mut admin = None;
    if let Some(admin_config) = &config.admin {
        let observer = Observer::new();
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::clone(&observer),
            crate::admin::recorder::record,
        ));
        admin = Some(crate::admin::router(
            AdminState {
                observer,
                ledger: Arc::clone(&gateway.ledger),
                settlement: settlement_counters,
                refreshed: Arc::default(),
            },
            AdminToken::new(admin_config.token.expose()),
        ));
    }
    Ok(App {
        public: router.layer(axum::middleware::from_fn(crate::access_log::log_request)),
        admin,
    })
}

/// axum answers a method a path does not serve with an empty 405; give it
/// a problem body, keeping its `Allow` header.
async fn method_not_allowed_problem(
    response: axum::response::Response,
) -> axum::response::Response {
    if response.status() != http::StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(http::header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response.headers().get(http::header::ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let mut problem = problem::Problem::new(
        http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("this path accepts {allowed}"),
    );
    if let Some(allow) = allow {
        problem = problem.header(http::header::ALLOW, allow);
    }
    axum::response::IntoResponse::into_response(problem)
}

/// The session side of a config, on `ledger` (`None` without `[session]`).
/// Used by the gateway and by the operator's `tollgate channels`.
pub fn session_gate(
    config: &Config,
    ledger: Arc<dyn Ledger>,
) -> Result<Option<Arc<SessionGate>>, BuildError> {
    let Some(session) = &config.session else {
        return Ok(None);
    };
    let chain = &config.chain;
    let gate = SessionGate::new(
        SessionSettings {
            rpc_url: chain.rpc_url.clone(),
            rpc_timeout: chain.rpc_timeout,
            protocols: session.protocols,
            escrow: session.escrow,
            reserve: session.reserve,
            chain_id: chain.chain_id,
            currency: chain.currency,
            recipient: chain.recipient,
            suggested_deposit: session.suggested_deposit,
            min_voucher_delta: session.min_voucher_delta,
            operator: session.operator.clone(),
            fee_token: session.fee_token,
        },
        ledger,
    )
    .map_err(BuildError::Chain)?;
    Ok(Some(Arc::new(gate)))
}

fn route_pricing(
    config: &Config,
    route: &RouteConfig,
    table: &Arc<PriceTable>,
    sessions: Option<&Arc<SessionGate>>,
) -> Pricing {
    match route.price {
        RoutePrice::Free => Pricing::Free,
        RoutePrice::Fixed(amount) => Pricing::Fixed(vec![Offer::TempoCharge(charge_offer(
            config, route, amount,
        ))]),
        RoutePrice::Quoted(endpoint) => Pricing::Quoted {
            endpoint,
            table: Arc::clone(table),
            template: charge_offer(config, route, 0),
            sessions: sessions.map(|s| s.offers(0, None)).unwrap_or_default(),
        },
    }
}

/// A fixed charge on the configured chain, for a route the gateway adds.
pub(crate) fn fixed_charge(config: &Config, amount: u128) -> ChargeOffer {
    let chain = &config.chain;
    ChargeOffer {
        amount,
        currency: chain.currency,
        recipient: chain.recipient,
        chain_id: chain.chain_id,
        fee_payer: chain.fee_payer.is_some(),
        modes: chain.modes,
        description: None,
    }
}

fn charge_offer(config: &Config, route: &RouteConfig, amount: u128) -> ChargeOffer {
    ChargeOffer {
        description: route.description.clone(),
        ..fixed_charge(config, amount)
    }
}

fn build_upstreams(
    config: &Config,
    mock: Option<MockFactory>,
) -> Result<BTreeMap<String, Upstream>, BuildError> {
    config
        .upstreams
        .iter()
        .map(|(name, upstream)| {
            let built = match upstream {
                UpstreamConfig::Mock {
                    latency,
                    chunk_interval,
                    protocol,
                } => {
                    let factory = mock.ok_or_else(|| BuildError::Upstream {
                        name: name.clone(),
                        message: "`kind = \"mock\"` needs a binary that includes the mock (the `tollgate` CLI)".into(),
                    })?;
                    let settings = MockSettings {
                        latency: *latency,
                        chunk_interval: *chunk_interval,
                    };
                    Upstream::in_process(factory(&settings)).with_protocol(*protocol)
                }
                UpstreamConfig::Http {
                    kind,
                    protocol,
                    base_url,
                    api_key,
                    connect_timeout,
                    idle_timeout,
                } => Upstream::http_with_pools(
                    *kind,
                    base_url,
                    api_key.as_ref().map(|k| k.expose()),
                    UpstreamTimeouts {
                        connect: *connect_timeout,
                        idle: *idle_timeout,
                    },
                    // A pool per serving thread, however many are configured.
                    config.connections.serving_threads.max(1),
                )
                .map_err(|e| BuildError::Upstream {
                    name: name.clone(),
                    message: e.to_string(),
                })?
                .with_protocol(*protocol),
            };
            Ok((name.clone(), built))
        })
        .collect()
}
