//! PostgreSQL backend: several gateway instances share one database.
//!
//! A `deadpool-postgres` pool of `tokio-postgres` connections. Hot-path
//! operations are single statements (data-modifying CTEs with conditional
//! `UPDATE … WHERE <the money rule>`), so they cost one round trip and are
//! linearizable per channel: PostgreSQL re-checks the condition on the
//! newest row version after waiting for its row lock. Two dedicated
//! connections sit beside the pool: one `LISTEN`s for channel events, one
//! holds the settlement leader's advisory lock.

mod channels;
mod holds;
mod ledger;
mod listen;
mod refunds;
mod report;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row};

use crate::LedgerError;
use crate::instance::{Instance, Shared};

/// Ordered, embedded migrations; `tollgate_migrations` records the applied
/// versions. They run under an advisory lock, so instances starting
/// together apply each exactly once.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    include_str!("../../migrations/postgres/0001_initial.sql"),
)];

/// Advisory lock keys ("tollgate" in ASCII, plus one per role).
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;
const SETTLEMENT_LOCK: i64 = MIGRATION_LOCK + 1;

/// The `NOTIFY` channel carrying accepted vouchers' channel ids.
const VOUCHER_EVENTS: &str = "tollgate_vouchers";

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    /// A libpq-style URL or key-value string (a secret: never logged).
    pub url: String,
    /// Connections in the pool (each instance adds two dedicated ones).
    pub pool_size: usize,
    pub instance: Instance,
    /// Deadline for opening one connection and for waiting for a free one.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("pool_size", &self.pool_size)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL ledger. Cheap to clone (one shared pool).
#[derive(Clone)]
pub struct PgLedger {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: tokio_postgres::Config,
    shared: Arc<Shared>,
    leader: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    listener: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgLedger {
    /// Checks that `url` is a connection string (without connecting).
    pub fn check_url(url: &str) -> Result<(), String> {
        parse(url).map(|_| ())
    }

    /// Connects, applies migrations and registers the instance with a fresh
    /// lease. Errors name the server (host, port, database), never the URL.
    pub async fn connect(settings: PgSettings) -> Result<Self, LedgerError> {
        let mut config = parse(&settings.url).map_err(|message| LedgerError::Connect {
            target: "PostgreSQL".into(),
            message,
        })?;
        config
            .connect_timeout(settings.connect_timeout)
            .keepalives_idle(Duration::from_secs(30));
        let target = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| LedgerError::Connect {
                target: target.clone(),
                message: e.to_string(),
            })?;
        let mut client = pool.get().await.map_err(|e| LedgerError::Connect {
            target: target.clone(),
            message: e.to_string(),
        })?;
        migrate(&mut client)
            .await
            .map_err(|e| LedgerError::Connect {
                target: target.clone(),
                message: format!("migrations failed: {e}"),
            })?;
        drop(client);
        let shared = Arc::new(Shared::new(settings.instance));
        let listener = tokio::spawn(listen::run(config.clone(), Arc::downgrade(&shared)));
        let ledger = Self {
            inner: Arc::new(Inner {
                pool,
                config,
                shared,
                leader: tokio::sync::Mutex::new(None),
                listener: listener.abort_handle(),
            }),
        };
        ledger.register().await?;
        Ok(ledger)
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub(crate) fn owner(&self) -> &str {
        &self.inner.shared.instance().id
    }
}

fn parse(url: &str) -> Result<tokio_postgres::Config, String> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| format!("not a PostgreSQL connection string: {e}"))
}

/// host:port/database, for messages (no user, no password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("PostgreSQL at {host}:{port}/{db}")
}

async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tollgate_migrations (
             version INTEGER PRIMARY KEY,
             applied_at BIGINT NOT NULL)",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM tollgate_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO tollgate_migrations (version, applied_at)
             VALUES ($1, extract(epoch FROM now())::BIGINT)",
            &[version],
        )
        .await?;
        tracing::info!(migration = version, "applied PostgreSQL migration");
    }
    tx.commit().await
}

/// Reads an exact amount selected as `…::text`.
pub(crate) fn amount(row: &Row, index: usize) -> Result<u128, LedgerError> {
    let text: String = row.try_get(index)?;
    text.parse()
        .map_err(|_| LedgerError::Worker(format!("stored amount {text:?} is not an integer")))
}

pub(crate) fn optional_amount(row: &Row, index: usize) -> Result<Option<u128>, LedgerError> {
    match row.try_get::<_, Option<String>>(index)? {
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| LedgerError::Worker(format!("stored amount {text:?} is not an integer"))),
        None => Ok(None),
    }
}

/// An amount as a statement parameter (cast in SQL: `$n::text::numeric`).
pub(crate) fn num(amount: u128) -> String {
    amount.to_string()
}

/// The PostgreSQL server the tests use (`TOLLGATE_TEST_PG_URL`, started by
/// `scripts/test` with `scripts/pg-test-server`). `Ok(None)` when it is not
/// set outside CI; under CI (`CI` set) a missing server is an error, so
/// PostgreSQL is never skipped silently.
pub fn test_server_url() -> Result<Option<String>, String> {
    match std::env::var("TOLLGATE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Ok(Some(url)),
        _ if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") => Err(
            "TOLLGATE_TEST_PG_URL is not set under CI; scripts/test starts a PostgreSQL for the tests"
                .into(),
        ),
        _ => Ok(None),
    }
}

/// Creates an empty database on the server at `url` (a URL ending in
/// `/<database>`) and returns the URL of the new one: each test gets its
/// own, so advisory locks and tables never cross tests.
pub async fn test_database(url: &str) -> Result<String, LedgerError> {
    let config = parse(url).map_err(|message| LedgerError::Connect {
        target: "PostgreSQL".into(),
        message,
    })?;
    let (client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    let name = format!("tollgate_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    drop(client);
    let _ = driver.await;
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(head, _)| head);
    Ok(match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    })
}
