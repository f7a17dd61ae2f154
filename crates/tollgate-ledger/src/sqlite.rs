//! SQLite backend: one connection in WAL mode, driven from Tokio's blocking
//! pool so no async worker ever waits on the disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::instance::{Instance, Shared, now_ms};
use crate::sqlite_hot::HotChannels;
use crate::sqlite_rows::live;
pub(crate) use crate::sqlite_rows::now_unix;
use crate::sqlite_writer::{HotOutcome, Writer};
use crate::{
    ChargeRecord, ClaimOutcome, DEFAULT_LEASE, Hold, Ledger, LedgerError, RevenueQuery, RevenueRow,
    UsageRecord,
};

/// Ordered, embedded schema migrations. `PRAGMA user_version` records how
/// many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_usage.sql"),
    include_str!("../migrations/0003_sessions.sql"),
    include_str!("../migrations/0004_refunds_checkpoints.sql"),
    include_str!("../migrations/0005_instances.sql"),
    include_str!("../migrations/0006_lean_reservations.sql"),
    include_str!("../migrations/0007_no_autoincrement.sql"),
];

/// How hard SQLite pushes each commit to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: survives power loss.
    #[default]
    Full,
    /// WAL without per-commit fsync: survives a process crash (the commit is
    /// in the OS page cache), may lose the last commits on power loss.
    Normal,
}

impl Durability {
    /// The `synchronous` setting that gives it.
    pub(crate) fn synchronous(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// SQLite backend. Several processes may share one file (each its own
/// instance); channel events then reach this process only.
#[derive(Clone)]
pub struct SqliteLedger {
    /// The write connection, on its own thread, committing in groups.
    writer: Arc<Writer>,
    /// A second, read-only connection for reporting (WAL lets it read
    /// beside the writer), so a scrape never holds up the payment path.
    /// `None` in memory, where it falls back to `conn`.
    reader: Option<Arc<Mutex<Connection>>>,
    pub(crate) shared: Arc<Shared>,
    /// Usage records noted on the payment path, written together by one
    /// job in the writer's next group.
    usage: Arc<Mutex<UsageBatch>>,
}

#[derive(Default)]
struct UsageBatch {
    records: Vec<UsageRecord>,
    /// A job to write them is queued.
    queued: bool,
}

fn insert_usage(conn: &Connection, r: &UsageRecord) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "INSERT INTO usage_records (challenge_id, route, model, quoted, input_tokens,
         cached_tokens, output_tokens, actual_cost, usage_reported, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        r.challenge_id,
        r.route,
        r.model,
        r.quoted.to_string(),
        r.input_tokens as i64,
        r.cached_tokens as i64,
        r.output_tokens as i64,
        r.actual_cost.to_string(),
        r.usage_reported,
        r.recorded_at
    ])?;
    Ok(())
}

impl Drop for SqliteLedger {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            crate::sqlite_close::close_shared_in_turn(reader);
        }
    }
}

impl SqliteLedger {
    /// Opens (creating if needed) the database file and applies migrations,
    /// as a new instance with a generated id.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, LedgerError> {
        Self::open_as(path, durability, Instance::generated(DEFAULT_LEASE))
    }

    /// Like [`open`](Self::open), as `instance`.
    pub fn open_as(
        path: &Path,
        durability: Durability,
        instance: Instance,
    ) -> Result<Self, LedgerError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::InvalidPath(format!("{}: {e}", dir.display()).into()),
            })?;
        }
        let conn =
            crate::sqlite_close::open_in_turn(|| Connection::open(path)).map_err(|source| {
                LedgerError::Open {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        let mut ledger = Self::init(conn, durability, instance, Some(path))?;
        let read_only = || -> Result<Arc<Mutex<Connection>>, LedgerError> {
            let reader = crate::sqlite_close::open_in_turn(|| {
                Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
            })?;
            reader.busy_timeout(crate::sqlite_writer::BUSY_TIMEOUT)?;
            Ok(Arc::new(Mutex::new(reader)))
        };
        ledger.reader = Some(read_only()?);
        Ok(ledger)
    }

    /// A private in-memory database, for tests and benchmarks.
    pub fn in_memory() -> Result<Self, LedgerError> {
        Self::init(
            Connection::open_in_memory()?,
            Durability::Full,
            Instance::generated(DEFAULT_LEASE),
            None,
        )
    }

    fn init(
        mut conn: Connection,
        durability: Durability,
        instance: Instance,
        db: Option<&Path>,
    ) -> Result<Self, LedgerError> {
        conn.busy_timeout(crate::sqlite_writer::BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", durability.synchronous())?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Each grouped job runs in a savepoint: keep its sub-journal in
        // memory rather than in a temporary file.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        migrate(&mut conn)?;
        let shared = Arc::new(Shared::new(instance));
        let started = std::time::Instant::now();
        let now = now_ms();
        let previous = crate::sqlite_holds::register(&conn, shared.instance(), now)?;
        if previous.is_some_and(|until| until >= now) {
            shared
                .id_was_live
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        shared.lease.renewed(started);
        Ok(Self {
            writer: Arc::new(Writer::start(
                conn,
                durability,
                db,
                shared.instance().id.clone(),
            )?),
            reader: None,
            shared,
            usage: Arc::default(),
        })
    }

    /// Runs a read-only `f` on the reporting connection in the blocking pool.
    pub(crate) async fn with_reader<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        match &self.reader {
            Some(reader) => on_connection(reader, f).await,
            None => self.with_conn(f).await,
        }
    }

    /// Runs a read-only `f` for the payment path on the write connection
    /// (on the caller's thread when it is free, else queued to the writer):
    /// it sees every write answered before it (holds included), and it
    /// waits for no commit.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        self.writer.grouped(false, f).await
    }

    pub(crate) fn owner(&self) -> String {
        self.shared.instance().id.clone()
    }

    /// Runs `f` alone on the write connection (it manages its own
    /// transaction), between groups.
    pub(crate) async fn with_conn<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        self.writer.alone(f).await
    }

    /// Runs `f` on the session holds kept in memory beside the write
    /// connection ([`HotChannels`]), in the writer's open transaction.
    /// `durable` as for [`Self::grouped`].
    pub(crate) async fn hot<T, F>(&self, durable: bool, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut HotChannels, &Connection) -> HotOutcome<T> + Send + 'static,
    {
        self.writer.hot(durable, f).await
    }

    /// Runs `f` in the writer's open transaction (its own savepoint). A
    /// `durable` job returns once it is committed and on disk; any other
    /// (a hold, a read) as soon as it ran.
    pub(crate) async fn grouped<T, F>(&self, durable: bool, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        self.writer.grouped(durable, f).await
    }
}

/// Runs `f` on a read-only connection in the blocking pool.
async fn on_connection<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T, LedgerError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, LedgerError> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        let mut guard = conn
            .lock()
            .map_err(|_| LedgerError::Worker("connection mutex poisoned".into()))?;
        f(&mut guard)
    })
    .await
    .map_err(|e| LedgerError::Worker(e.to_string()))?
}

impl SqliteLedger {
    pub(crate) async fn release_claim_now(&self, key: &str) -> Result<(), LedgerError> {
        let key = key.to_owned();
        let owner = self.owner();
        self.grouped(true, move |conn| {
            conn.prepare_cached(
                "DELETE FROM payment_claims WHERE claim_key = ?1 AND state = 'pending'
                 AND owner = ?2",
            )?
            .execute(params![key, owner])?;
            Ok(())
        })
        .await
    }
}

/// Applies the missing migrations, one `IMMEDIATE` transaction each. The
/// version is read inside the transaction, under the write lock, so
/// processes opening the file together apply each migration once.
fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        let Some(sql) = MIGRATIONS.get(applied) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (applied + 1) as i64)?;
        tx.commit()?;
        tracing::info!(migration = applied + 1, "applied database migration");
    }
}

fn settle_claims_in(conn: &Connection, keys: &[String], now: i64) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO payment_claims (claim_key, state, created_at, updated_at)
         VALUES (?1, 'settled', ?2, ?2)
         ON CONFLICT(claim_key) DO UPDATE SET state = 'settled', updated_at = ?2",
    )?;
    for key in keys {
        stmt.execute(params![key, now])?;
    }
    Ok(())
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn claim(&self, key: &str) -> Result<ClaimOutcome, LedgerError> {
        self.shared.lease.check()?;
        let key = key.to_owned();
        let owner = self.owner();
        self.grouped(true, move |conn| {
            let now = now_unix();
            // A pending claim of a dead instance is taken over: its request
            // died before moving money (a transfer that did land is still
            // stopped by its own `tx:` claim and the SDK's replay marker).
            let inserted = conn
                .prepare_cached(&format!(
                    "INSERT INTO payment_claims (claim_key, state, owner, created_at, updated_at)
                     VALUES (?1, 'pending', ?2, ?3, ?3)
                     ON CONFLICT(claim_key) DO UPDATE SET owner = excluded.owner,
                       created_at = excluded.created_at, updated_at = excluded.updated_at
                     WHERE payment_claims.state = 'pending' AND NOT {}",
                    live("payment_claims.owner", "?4")
                ))?
                .execute(params![key, owner, now, now_ms()])?;
            Ok(if inserted == 1 {
                ClaimOutcome::Claimed
            } else {
                ClaimOutcome::AlreadyClaimed
            })
        })
        .await
    }

    async fn settle_claims(&self, keys: &[&str]) -> Result<(), LedgerError> {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        self.grouped(true, move |tx| {
            settle_claims_in(tx, &keys, now_unix())?;
            Ok(())
        })
        .await
    }

    async fn release_claim(&self, key: &str) -> Result<(), LedgerError> {
        let result = self.release_claim_now(key).await;
        if let Err(e) = &result
            && e.is_unavailable()
        {
            self.shared.defer(Hold::Claim(key.to_owned()));
        }
        result
    }

    async fn record_charge(
        &self,
        record: &ChargeRecord,
        claim_keys: &[&str],
    ) -> Result<(), LedgerError> {
        let record = record.clone();
        let keys: Vec<String> = claim_keys.iter().map(|k| (*k).to_owned()).collect();
        self.grouped(true, move |tx| {
            tx.prepare_cached(
                "INSERT INTO charge_payments
                 (challenge_id, route, amount, currency, reference, settled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                record.challenge_id,
                record.route,
                record.amount,
                record.currency,
                record.reference,
                record.settled_at
            ])?;
            settle_claims_in(tx, &keys, record.settled_at)?;
            Ok(())
        })
        .await
    }

    async fn recent_charges(&self, limit: u32) -> Result<Vec<ChargeRecord>, LedgerError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT challenge_id, route, amount, currency, reference, settled_at
                 FROM charge_payments ORDER BY settled_at DESC, rowid DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit], |r| {
                Ok(ChargeRecord {
                    challenge_id: r.get(0)?,
                    route: r.get(1)?,
                    amount: r.get(2)?,
                    currency: r.get(3)?,
                    reference: r.get(4)?,
                    settled_at: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn record_usage(&self, record: &UsageRecord) -> Result<(), LedgerError> {
        let r = record.clone();
        self.grouped(true, move |conn| insert_usage(conn, &r)).await
    }

    fn note_usage(self: Arc<Self>, record: UsageRecord) {
        let first = {
            let mut batch = self
                .usage
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            batch.records.push(record);
            !std::mem::replace(&mut batch.queued, true)
        };
        if first {
            // One job writes every record noted until it runs.
            let usage = Arc::clone(&self.usage);
            self.writer.detached("usage records", move |conn| {
                let records = {
                    let mut batch = usage.lock().unwrap_or_else(|p| p.into_inner());
                    batch.queued = false;
                    std::mem::take(&mut batch.records)
                };
                for record in &records {
                    insert_usage(conn, record)?;
                }
                Ok(())
            });
        }
    }

    async fn usage_for(&self, challenge_id: &str) -> Result<Vec<UsageRecord>, LedgerError> {
        let id = challenge_id.to_owned();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT challenge_id, route, model, quoted, input_tokens, cached_tokens,
                 output_tokens, actual_cost, usage_reported, recorded_at
                 FROM usage_records WHERE challenge_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![id], |r| {
                let amount = |i: usize| -> rusqlite::Result<u128> {
                    let text: String = r.get(i)?;
                    text.parse().map_err(|_| {
                        rusqlite::Error::InvalidColumnType(
                            i,
                            "amount".into(),
                            rusqlite::types::Type::Text,
                        )
                    })
                };
                Ok(UsageRecord {
                    challenge_id: r.get(0)?,
                    route: r.get(1)?,
                    model: r.get(2)?,
                    quoted: amount(3)?,
                    input_tokens: r.get::<_, i64>(4)? as u64,
                    cached_tokens: r.get::<_, i64>(5)? as u64,
                    output_tokens: r.get::<_, i64>(6)? as u64,
                    actual_cost: amount(7)?,
                    usage_reported: r.get(8)?,
                    recorded_at: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn revenue(&self, query: RevenueQuery) -> Result<Vec<RevenueRow>, LedgerError> {
        crate::sqlite_report::revenue(self, query).await
    }

    async fn kv_get(&self, key: &str) -> Result<Option<String>, LedgerError> {
        let key = key.to_owned();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached("SELECT v FROM protocol_kv WHERE k = ?1")?
                .query_row(params![key], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn kv_put(&self, key: &str, value: &str) -> Result<(), LedgerError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "INSERT INTO protocol_kv (k, v) VALUES (?1, ?2)
                 ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            )?
            .execute(params![key, value])?;
            Ok(())
        })
        .await
    }

    async fn kv_delete(&self, key: &str) -> Result<(), LedgerError> {
        let key = key.to_owned();
        self.with_conn(move |conn| {
            conn.prepare_cached("DELETE FROM protocol_kv WHERE k = ?1")?
                .execute(params![key])?;
            Ok(())
        })
        .await
    }

    async fn kv_put_if_absent(&self, key: &str, value: &str) -> Result<bool, LedgerError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.with_conn(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO protocol_kv (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO NOTHING",
                )?
                .execute(params![key, value])?;
            Ok(n == 1)
        })
        .await
    }

    async fn kv_compare_exchange(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, LedgerError> {
        let key = key.to_owned();
        let expected = expected.map(str::to_owned);
        let new = new.map(str::to_owned);
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<String> = tx
                .prepare_cached("SELECT v FROM protocol_kv WHERE k = ?1")?
                .query_row(params![key], |r| r.get(0))
                .optional()?;
            if current != expected {
                return Ok(false);
            }
            match new {
                Some(v) => tx
                    .prepare_cached(
                        "INSERT INTO protocol_kv (k, v) VALUES (?1, ?2)
                         ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                    )?
                    .execute(params![key, v])?,
                None => tx
                    .prepare_cached("DELETE FROM protocol_kv WHERE k = ?1")?
                    .execute(params![key])?,
            };
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A file written before migration 7 (AUTOINCREMENT ids) keeps its usage
    /// records and reservations, ids included, and its usage ids go on
    /// growing from the old ones.
    #[test]
    fn the_rebuilt_tables_keep_their_rows_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            conn.execute_batch(
                "INSERT INTO session_channels (channel_id, protocol, escrow, chain_id, payer,
                   payee, token, authorized_signer, deposit, accepted, reserved, opened_at,
                   updated_at)
                 VALUES ('0xc', 'v1', '0xe', 1, '0xp', '0xq', '0xt', '0xs', 100, 100, 30, 0, 0);
                 INSERT INTO session_reservations (id, channel_id, amount, created_at, charged, owner)
                 VALUES (41, '0xc', 30, 0, 5, 'gw-old');
                 INSERT INTO usage_records (id, challenge_id, route, model, quoted, input_tokens,
                   cached_tokens, output_tokens, actual_cost, usage_reported, recorded_at)
                 VALUES (7, 'ch', 'r', 'm', '10', 1, 0, 2, '9', 1, 0);",
            )
            .unwrap();
            assert!(count(&conn, "SELECT COUNT(*) FROM sqlite_sequence") > 0);
        }
        drop(SqliteLedger::open(&path, Durability::Full).unwrap());

        let conn = Connection::open(&path).unwrap();
        assert_eq!(count(&conn, "PRAGMA user_version"), MIGRATIONS.len() as i64);
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM sqlite_schema WHERE sql LIKE '%AUTOINCREMENT%'"
            ),
            0
        );
        let held: (i64, String, i64, i64, String) = conn
            .query_row(
                "SELECT id, channel_id, amount, charged, owner FROM session_reservations",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(held, (41, "0xc".into(), 30, 5, "gw-old".into()));
        assert_eq!(
            count(
                &conn,
                "SELECT id FROM usage_records WHERE challenge_id = 'ch'"
            ),
            7
        );
        conn.execute(
            "INSERT INTO usage_records (challenge_id, route, model, quoted, input_tokens,
               cached_tokens, output_tokens, actual_cost, usage_reported, recorded_at)
             VALUES ('ch', 'r', 'm', '10', 1, 0, 2, '9', 1, 1)",
            [],
        )
        .unwrap();
        assert_eq!(count(&conn, "SELECT MAX(id) FROM usage_records"), 8);
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'usage_records_challenge'"
            ),
            1
        );
    }
}
