//! One ledger test suite, run on every backend: each scenario is written
//! once as `async fn name(store: Store)` and [`on_every_backend!`] makes a
//! `name::sqlite` and a `name::postgres` test of it.
//!
//! PostgreSQL tests use the server in `TOLLGATE_TEST_PG_URL` (started by
//! `scripts/test`), one fresh database each. Without it they are skipped
//! locally and fail under CI.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tollgate_ledger::{
    ChannelRecord, ChannelStatus, DEFAULT_LEASE, Durability, Instance, Ledger, PgLedger,
    PgSettings, SqliteLedger, StoredVoucher,
};

pub const CHANNEL: &str = "0x00000000000000000000000000000000000000000000000000000000000000aa";

/// Where a scenario's data lives; opened as any number of instances.
pub enum Store {
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
    },
}

impl Store {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::Sqlite {
            path: dir.path().join("ledger.db"),
            _dir: dir,
        }
    }

    /// `None` (skipped) when no server is configured outside CI.
    pub async fn postgres() -> Option<Self> {
        let Some(server) = tollgate_ledger::test_server_url().unwrap() else {
            eprintln!("TOLLGATE_TEST_PG_URL is not set: PostgreSQL case skipped");
            return None;
        };
        let url = tollgate_ledger::test_database(&server).await.unwrap();
        Some(Self::Postgres { url })
    }

    /// A new instance with a generated id.
    pub async fn open(&self) -> Arc<dyn Ledger> {
        self.open_as(Instance::generated(DEFAULT_LEASE)).await
    }

    pub async fn open_named(&self, id: &str, lease: Duration) -> Arc<dyn Ledger> {
        self.open_as(Instance::named(id, lease)).await
    }

    pub async fn open_as(&self, instance: Instance) -> Arc<dyn Ledger> {
        match self {
            Self::Sqlite { path, .. } => {
                Arc::new(SqliteLedger::open_as(path, Durability::Normal, instance).unwrap())
            }
            Self::Postgres { url } => Arc::new(
                PgLedger::connect(PgSettings {
                    url: url.clone(),
                    pool_size: 8,
                    instance,
                    connect_timeout: Duration::from_secs(5),
                })
                .await
                .unwrap(),
            ),
        }
    }

    /// Whether channel events reach other instances (PostgreSQL) or only
    /// the handle that accepted the voucher (SQLite).
    pub fn events_cross_instances(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }
}

/// `name::sqlite` and `name::postgres` tests for each `async fn name(Store)`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Store::sqlite().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(store) = $crate::common::Store::postgres().await {
                    super::$name(store).await
                }
            }
        }
    )*};
}

pub fn channel(deposit: u128) -> ChannelRecord {
    ChannelRecord {
        channel_id: CHANNEL.into(),
        protocol: "v1".into(),
        escrow: "0xe5c0".into(),
        chain_id: 42431,
        payer: "0xpayer".into(),
        payee: "0xpayee".into(),
        token: "0x20c0".into(),
        authorized_signer: "0xsigner".into(),
        descriptor: None,
        deposit,
        accepted: 0,
        spent: 0,
        reserved: 0,
        settled: 0,
        units: 0,
        close_requested_at: 0,
        status: ChannelStatus::Open,
        opened_at: 0,
        updated_at: 0,
        last_settled_at: None,
        inflight: None,
    }
}

pub fn voucher(cumulative: u128) -> StoredVoucher {
    StoredVoucher {
        cumulative,
        signature: format!("0xsig{cumulative}"),
    }
}

pub async fn opened(ledger: &dyn Ledger, deposit: u128, initial: u128) -> ChannelRecord {
    ledger
        .open_channel(&channel(deposit), Some(&voucher(initial)))
        .await
        .unwrap()
}
