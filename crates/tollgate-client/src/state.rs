//! The payer's session channels, kept in a local SQLite file so a channel
//! opened by one invocation is reused by the next.
//!
//! Amounts are stored as decimal text (u128 does not fit SQLite integers).
//! Every update is monotonic (`signed`, `accepted`, `spent` only grow), so
//! concurrent invocations sharing the file never lower what was signed.
//!
//! Requests in flight on a channel hold their worst case here (`holds`),
//! so concurrent invocations each authorize headroom for the others: the
//! server's `spent + reserved` never exceeds our `spent + held`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, B256};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelStatus {
    /// The open transaction was sent; not yet confirmed.
    Opening,
    Open,
    Closed,
    /// The open never landed.
    Failed,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "opening" => Self::Opening,
            "open" => Self::Open,
            "closed" => Self::Closed,
            _ => Self::Failed,
        }
    }
}

/// One channel as the payer knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub channel_id: B256,
    pub payer: Address,
    pub payee: Address,
    pub token: Address,
    pub escrow: Address,
    pub chain_id: u64,
    /// The server (scheme://host:port) it was opened with.
    pub origin: String,
    pub deposit: u128,
    /// Highest cumulative amount signed.
    pub signed: u128,
    /// Highest cumulative amount the server accepted (from receipts).
    pub accepted: u128,
    /// Spent as the last receipt said.
    pub spent: u128,
    pub status: ChannelStatus,
    /// The close transaction, once closed.
    pub close_tx: Option<String>,
    /// A v2 (channel reserve) channel's descriptor, as sent in every
    /// credential; `None` for a v1 (escrow) channel.
    pub descriptor: Option<String>,
}

impl ChannelRecord {
    /// Deposit not yet spent.
    pub fn remaining(&self) -> u128 {
        self.deposit.saturating_sub(self.spent)
    }
}

/// What identifies "the same channel terms".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKey {
    pub payer: Address,
    pub payee: Address,
    pub token: Address,
    pub escrow: Address,
    pub chain_id: u64,
}

pub struct State {
    conn: Mutex<Connection>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
    channel_id TEXT PRIMARY KEY,
    payer TEXT NOT NULL,
    payee TEXT NOT NULL,
    token TEXT NOT NULL,
    escrow TEXT NOT NULL,
    chain_id INTEGER NOT NULL,
    origin TEXT NOT NULL,
    deposit TEXT NOT NULL,
    signed TEXT NOT NULL,
    accepted TEXT NOT NULL,
    spent TEXT NOT NULL,
    status TEXT NOT NULL,
    close_tx TEXT,
    descriptor TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS channels_terms ON channels (payer, payee, token, escrow, chain_id, status);
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
";

/// A hold older than this was left by an invocation that died.
const HOLD_TTL_SECS: i64 = 600;

/// `$XDG_DATA_HOME/tollgate/pay.db`, else `~/.local/share/tollgate/pay.db`,
/// else `./.tollgate/pay.db`.
pub fn default_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("tollgate/pay.db");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/tollgate/pay.db");
    }
    PathBuf::from(".tollgate/pay.db")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn addr(a: &Address) -> String {
    format!("{a:#x}")
}

impl State {
    /// Opens (creating) the state file.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::State(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| Error::State(format!("opening {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(Error::state)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(Error::state)?;
        conn.execute_batch(SCHEMA).map_err(Error::state)?;
        // Files written before v2 channels lack the descriptor column.
        let has_descriptor = conn
            .prepare("SELECT descriptor FROM channels LIMIT 0")
            .is_ok();
        if !has_descriptor {
            conn.execute_batch("ALTER TABLE channels ADD COLUMN descriptor TEXT")
                .map_err(Error::state)?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(Error::state)
    }

    /// The newest open channel with these terms.
    pub fn find_open(&self, key: &ChannelKey) -> Result<Option<ChannelRecord>> {
        self.with(|c| {
            c.query_row(
                "SELECT * FROM channels WHERE payer = ?1 AND payee = ?2 AND token = ?3
                 AND escrow = ?4 AND chain_id = ?5 AND status = 'open'
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                params![
                    addr(&key.payer),
                    addr(&key.payee),
                    addr(&key.token),
                    addr(&key.escrow),
                    key.chain_id as i64
                ],
                row,
            )
            .optional()
        })
    }

    pub fn get(&self, id: B256) -> Result<Option<ChannelRecord>> {
        self.with(|c| {
            c.query_row(
                "SELECT * FROM channels WHERE channel_id = ?1",
                params![format!("{id:#x}")],
                row,
            )
            .optional()
        })
    }

    /// Every channel, newest first.
    pub fn list(&self) -> Result<Vec<ChannelRecord>> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT * FROM channels ORDER BY created_at DESC, rowid DESC")?;
            stmt.query_map([], row)?.collect()
        })
    }

    /// Records a channel whose open is about to be sent.
    pub fn insert(&self, record: &ChannelRecord) -> Result<()> {
        let t = now();
        self.with(|c| {
            c.execute(
                "INSERT INTO channels (channel_id, payer, payee, token, escrow, chain_id, origin,
                 deposit, signed, accepted, spent, status, close_tx, created_at, updated_at, descriptor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15)",
                params![
                    format!("{:#x}", record.channel_id),
                    addr(&record.payer),
                    addr(&record.payee),
                    addr(&record.token),
                    addr(&record.escrow),
                    record.chain_id as i64,
                    record.origin,
                    record.deposit.to_string(),
                    record.signed.to_string(),
                    record.accepted.to_string(),
                    record.spent.to_string(),
                    record.status.as_str(),
                    record.close_tx,
                    t,
                    record.descriptor
                ],
            )
            .map(|_| ())
        })
    }

    pub fn set_status(&self, id: B256, status: ChannelStatus) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE channels SET status = ?2, updated_at = ?3 WHERE channel_id = ?1",
                params![format!("{id:#x}"), status.as_str(), now()],
            )
            .map(|_| ())
        })
    }

    pub fn set_deposit(&self, id: B256, deposit: u128) -> Result<()> {
        self.update(id, |r| r.deposit = r.deposit.max(deposit))
    }

    /// Raises the highest signed cumulative amount (never lowers it).
    pub fn raise_signed(&self, id: B256, cumulative: u128) -> Result<()> {
        self.update(id, |r| r.signed = r.signed.max(cumulative))
    }

    /// What a receipt says: accepted and spent (never lowered).
    pub fn record_receipt(
        &self,
        id: B256,
        accepted: Option<u128>,
        spent: Option<u128>,
    ) -> Result<()> {
        self.update(id, |r| {
            if let Some(a) = accepted {
                r.accepted = r.accepted.max(a);
                r.signed = r.signed.max(a);
            }
            if let Some(s) = spent {
                r.spent = r.spent.max(s);
            }
        })
    }

    pub fn mark_closed(&self, id: B256, spent: Option<u128>, tx: Option<&str>) -> Result<()> {
        self.update(id, |r| {
            if let Some(s) = spent {
                r.spent = r.spent.max(s);
            }
            r.status = ChannelStatus::Closed;
            if let Some(tx) = tx {
                r.close_tx = Some(tx.to_owned());
            }
        })
    }

    /// Authorizes one request on channel `id` among the others in flight:
    /// in one transaction, reads the channel and what the other requests
    /// hold, lets `cumulative` pick the voucher to sign from them, and
    /// holds `amount` (this request's worst case) until the returned value
    /// is dropped — after the request's receipt is recorded.
    pub fn authorize(
        self: &Arc<Self>,
        id: B256,
        amount: u128,
        cumulative: impl FnOnce(&ChannelRecord, u128) -> u128,
    ) -> Result<(ChannelRecord, u128, LocalHold)> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(Error::state)?;
        let key = format!("{id:#x}");
        let t = now();
        tx.execute(
            "DELETE FROM holds WHERE created_at < ?1",
            params![t - HOLD_TTL_SECS],
        )
        .map_err(Error::state)?;
        let record = tx
            .query_row(
                "SELECT * FROM channels WHERE channel_id = ?1",
                params![key],
                row,
            )
            .optional()
            .map_err(Error::state)?
            .ok_or_else(|| Error::State(format!("unknown channel {key}")))?;
        let held: u128 = {
            let mut stmt = tx
                .prepare("SELECT amount FROM holds WHERE channel_id = ?1")
                .map_err(Error::state)?;
            let amounts = stmt
                .query_map(params![key], |r| r.get::<_, String>(0))
                .map_err(Error::state)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(Error::state)?;
            amounts
                .iter()
                .map(|a| a.parse::<u128>().unwrap_or(0))
                .fold(0, u128::saturating_add)
        };
        let target = cumulative(&record, held);
        tx.execute(
            "INSERT INTO holds (channel_id, amount, created_at) VALUES (?1, ?2, ?3)",
            params![key, amount.to_string(), t],
        )
        .map_err(Error::state)?;
        let hold = tx.last_insert_rowid();
        tx.commit().map_err(Error::state)?;
        Ok((
            record,
            target,
            LocalHold {
                state: Arc::clone(self),
                id: hold,
            },
        ))
    }

    fn release_hold(&self, hold: i64) {
        let released = self.with(|c| {
            c.execute("DELETE FROM holds WHERE id = ?1", params![hold])
                .map(|_| ())
        });
        if let Err(e) = released {
            // Expires on its own (HOLD_TTL_SECS); meanwhile others
            // authorize a little more headroom.
            tracing::warn!(error = %e, "could not release a local hold");
        }
    }

    /// Read-modify-write of one channel in one IMMEDIATE transaction.
    fn update(&self, id: B256, edit: impl FnOnce(&mut ChannelRecord)) -> Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(Error::state)?;
        let key = format!("{id:#x}");
        let Some(mut record) = tx
            .query_row(
                "SELECT * FROM channels WHERE channel_id = ?1",
                params![key],
                row,
            )
            .optional()
            .map_err(Error::state)?
        else {
            return Err(Error::State(format!("unknown channel {key}")));
        };
        edit(&mut record);
        tx.execute(
            "UPDATE channels SET deposit = ?2, signed = ?3, accepted = ?4, spent = ?5,
             status = ?6, close_tx = ?7, updated_at = ?8 WHERE channel_id = ?1",
            params![
                key,
                record.deposit.to_string(),
                record.signed.to_string(),
                record.accepted.to_string(),
                record.spent.to_string(),
                record.status.as_str(),
                record.close_tx,
                now()
            ],
        )
        .map_err(Error::state)?;
        tx.commit().map_err(Error::state)
    }
}

/// A request's worst case held on its channel; released when dropped.
pub struct LocalHold {
    state: Arc<State>,
    id: i64,
}

impl std::fmt::Debug for LocalHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHold").field("id", &self.id).finish()
    }
}

impl Drop for LocalHold {
    fn drop(&mut self) {
        self.state.release_hold(self.id);
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChannelRecord> {
    fn parse<T: std::str::FromStr>(r: &rusqlite::Row<'_>, name: &str) -> rusqlite::Result<T> {
        let text: String = r.get(name)?;
        text.parse().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("bad {name}: {text}").into(),
            )
        })
    }
    Ok(ChannelRecord {
        channel_id: parse(r, "channel_id")?,
        payer: parse(r, "payer")?,
        payee: parse(r, "payee")?,
        token: parse(r, "token")?,
        escrow: parse(r, "escrow")?,
        chain_id: r.get::<_, i64>("chain_id")? as u64,
        origin: r.get("origin")?,
        deposit: parse(r, "deposit")?,
        signed: parse(r, "signed")?,
        accepted: parse(r, "accepted")?,
        spent: parse(r, "spent")?,
        status: ChannelStatus::parse(&r.get::<_, String>("status")?),
        close_tx: r.get("close_tx")?,
        descriptor: r.get("descriptor")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u8) -> ChannelRecord {
        ChannelRecord {
            channel_id: B256::repeat_byte(id),
            payer: Address::repeat_byte(1),
            payee: Address::repeat_byte(2),
            token: Address::repeat_byte(3),
            escrow: Address::repeat_byte(4),
            chain_id: 42431,
            origin: "http://127.0.0.1:1".into(),
            deposit: 1_000,
            signed: 100,
            accepted: 0,
            spent: 0,
            status: ChannelStatus::Opening,
            close_tx: None,
            descriptor: None,
        }
    }

    #[test]
    fn channels_round_trip_and_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("a/b/pay.db")).unwrap();
        let r = record(9);
        state.insert(&r).unwrap();
        let key = ChannelKey {
            payer: r.payer,
            payee: r.payee,
            token: r.token,
            escrow: r.escrow,
            chain_id: r.chain_id,
        };
        assert!(state.find_open(&key).unwrap().is_none(), "still opening");
        state.set_status(r.channel_id, ChannelStatus::Open).unwrap();
        state
            .record_receipt(r.channel_id, Some(100), Some(40))
            .unwrap();
        state.raise_signed(r.channel_id, 50).unwrap();
        state
            .record_receipt(r.channel_id, Some(90), Some(30))
            .unwrap();
        let got = state.find_open(&key).unwrap().unwrap();
        assert_eq!((got.signed, got.accepted, got.spent), (100, 100, 40));
        assert_eq!(got.remaining(), 960);

        // A second handle on the same file (another process) sees it.
        let again = State::open(&dir.path().join("a/b/pay.db")).unwrap();
        assert_eq!(again.get(r.channel_id).unwrap().unwrap(), got);
        again
            .mark_closed(r.channel_id, Some(45), Some("0xabc"))
            .unwrap();
        assert!(state.find_open(&key).unwrap().is_none());
        assert_eq!(state.list().unwrap()[0].close_tx.as_deref(), Some("0xabc"));
    }

    #[test]
    fn requests_in_flight_hold_their_worst_case_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pay.db");
        let state = Arc::new(State::open(&path).unwrap());
        let r = record(7);
        state.insert(&r).unwrap();
        let (_, held_first, first) = state.authorize(r.channel_id, 300, |_, held| held).unwrap();
        assert_eq!(held_first, 0);
        // Another invocation on the same file sees the first one's hold.
        let other = Arc::new(State::open(&path).unwrap());
        let (seen, target, second) = other
            .authorize(r.channel_id, 200, |c, held| c.spent + held + 200)
            .unwrap();
        assert_eq!((seen.signed, target), (100, 500));
        drop(first);
        let (_, held, third) = state.authorize(r.channel_id, 50, |_, held| held).unwrap();
        assert_eq!(held, 200, "the first hold was released");
        drop((second, third));
        let (_, held, _) = state.authorize(r.channel_id, 1, |_, held| held).unwrap();
        assert_eq!(held, 0);
        assert!(state.authorize(B256::repeat_byte(1), 1, |_, h| h).is_err());
    }
}
