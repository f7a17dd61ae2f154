//! Session holds on SQLite, kept in memory beside the write connection.
//!
//! A paid request reserves its worst case, then commits its cost. In SQL
//! that is four statements in every group (the channel's counters twice,
//! a reservation row inserted and deleted) and the pages they dirty. Here
//! the write connection's owner keeps, for each busy channel, its row as
//! the open transaction sees it and what this process holds on it; a
//! reservation, its growth, a checkpoint, a commit and a release change
//! that copy, and the changes reach SQL once per channel per group, just
//! before the group commits (or before any other job's SQL runs, so every
//! statement sees them).
//!
//! Why this is as safe as the SQL it replaces:
//! - The copy is only used inside the writer's open `IMMEDIATE`
//!   transaction, which holds the file's write lock: no other process can
//!   change the row meanwhile. When a transaction begins, `PRAGMA
//!   data_version` says whether another connection committed since the
//!   last one; if so every copy is read again.
//! - What this process holds on a channel is one row of
//!   `session_reservations` (owner = this instance), kept equal to the sum
//!   of its holds in the same transaction as `reserved`. A restart or a
//!   lapsed lease releases that row as it released single reservations.
//!   When a copy is read again and that row no longer says what this
//!   process flushed (another instance released it, or a transaction
//!   rolled back), the holds on the channel are lost: their commits find
//!   nothing (`HoldLost`), as with a reservation row that was released.
//! - A charge is part of the group whose commit (and WAL sync) its caller
//!   waits for: durable before the receipt, as before.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::LedgerError;
use crate::channels::{ChannelRecord, ReserveOutcome, VoucherRefusal};
use crate::instance::now_ms;
use crate::sqlite_rows::{
    Whose, insert_reservation, load, now_unix, release_holds, to_db, unavailable,
};

/// Idle channels kept beyond this many are forgotten at the next flush.
const KEEP_IDLE: usize = 4_096;

/// A hold of one request.
struct MemHold {
    channel_id: String,
    /// What it still holds.
    amount: u128,
    /// What of it checkpoints charged already (in `spent`).
    charged: u128,
}

/// One channel as the open transaction sees it, and what this process
/// holds on it.
#[derive(Default)]
struct HotChannel {
    /// The row with this process's unflushed changes; `None` when it must
    /// be read again.
    record: Option<ChannelRecord>,
    /// Sum of this process's holds on the channel.
    held: u128,
    /// What this process's hold row says in the open transaction.
    stored: u128,
    /// That row's id, when it exists.
    row: Option<i64>,
    /// Charged (or, by a commit below its checkpoints, given back) and
    /// delivered since the last flush.
    spent: i128,
    units: u64,
    dirty: bool,
    /// A transaction rolled back: what the store holds for this process on
    /// the channel is not known.
    in_doubt: bool,
}

/// The in-memory holds of one process's write connection.
pub(crate) struct HotChannels {
    owner: String,
    channels: HashMap<String, HotChannel>,
    holds: HashMap<i64, MemHold>,
}

/// A statement failed: the open transaction is in doubt and must roll back.
pub(crate) type Broken = rusqlite::Error;

impl HotChannels {
    pub(crate) fn new(owner: String) -> Self {
        Self {
            owner,
            channels: HashMap::new(),
            holds: HashMap::new(),
        }
    }

    /// Another connection (or a job's SQL) may have changed rows: copies
    /// are read again. Only after [`Self::flush`]: a copy read again must
    /// not lose changes not yet written.
    pub(crate) fn forget(&mut self) {
        for channel in self.channels.values_mut() {
            channel.record = None;
        }
    }

    /// The open transaction rolled back: every unflushed and flushed change
    /// of it is gone, so what this process holds is re-established from
    /// the store, channel by channel.
    pub(crate) fn rolled_back(&mut self) {
        for channel in self.channels.values_mut() {
            channel.record = None;
            channel.in_doubt = true;
            channel.dirty = false;
            channel.spent = 0;
            channel.units = 0;
        }
    }

    /// The channel's row, read again when needed. Holds the store no longer
    /// backs are dropped here.
    fn view(
        &mut self,
        conn: &Connection,
        channel_id: &str,
    ) -> Result<Option<&mut HotChannel>, Broken> {
        let fresh = self
            .channels
            .get(channel_id)
            .is_some_and(|c| c.record.is_some());
        if !fresh {
            // A copy is read again only with its changes written.
            self.flush_channel(conn, channel_id)?;
            let Some(record) = load(conn, channel_id).map_err(broken)? else {
                return Ok(None);
            };
            let channel = self.channels.entry(channel_id.to_owned()).or_default();
            let in_store = match channel.row {
                Some(row) => conn
                    .prepare_cached("SELECT amount FROM session_reservations WHERE id = ?1")?
                    .query_row(params![row], |r| r.get::<_, i64>(0))
                    .optional()?,
                None => None,
            };
            let backed = !channel.in_doubt
                && match in_store {
                    Some(amount) => amount == to_db(channel.stored),
                    None => channel.stored == 0,
                };
            channel.record = Some(record);
            if !backed {
                self.lose(conn, channel_id)?;
            }
        }
        Ok(self.channels.get_mut(channel_id))
    }

    /// The store does not back this process's holds on the channel: they
    /// are dropped, and whatever rows of this instance the store still has
    /// on it are released (after a rollback their ids may be unknown: a
    /// row deleted in the rolled-back transaction is back).
    fn lose(&mut self, conn: &Connection, channel_id: &str) -> Result<(), Broken> {
        self.holds.retain(|_, hold| hold.channel_id != channel_id);
        conn.prepare_cached(
            "UPDATE session_channels SET reserved = MAX(reserved - (
                 SELECT COALESCE(SUM(amount), 0) FROM session_reservations
                 WHERE channel_id = ?1 AND owner = ?2), 0)
         WHERE channel_id = ?1",
        )?
        .execute(params![channel_id, self.owner])?;
        conn.prepare_cached(
            "DELETE FROM session_reservations WHERE channel_id = ?1 AND owner = ?2",
        )?
        .execute(params![channel_id, self.owner])?;
        let record = load(conn, channel_id).map_err(broken)?;
        self.channels.insert(
            channel_id.to_owned(),
            HotChannel {
                record,
                ..HotChannel::default()
            },
        );
        Ok(())
    }

    /// Holds `amount` on the channel for a new request.
    pub(crate) fn reserve(
        &mut self,
        conn: &Connection,
        channel_id: &str,
        amount: u128,
    ) -> Result<ReserveOutcome, Broken> {
        self.hold(conn, channel_id, amount, None)
    }

    /// Adds `extra` to a request's hold.
    pub(crate) fn grow(
        &mut self,
        conn: &Connection,
        reservation: i64,
        extra: u128,
    ) -> Result<ReserveOutcome, Broken> {
        let Some(channel_id) = self.holds.get(&reservation).map(|h| h.channel_id.clone()) else {
            return Ok(ReserveOutcome::Unavailable(VoucherRefusal::NotFound));
        };
        self.hold(conn, &channel_id, extra, Some(reservation))
    }

    fn hold(
        &mut self,
        conn: &Connection,
        channel_id: &str,
        amount: u128,
        reservation: Option<i64>,
    ) -> Result<ReserveOutcome, Broken> {
        let Some(channel) = self.view(conn, channel_id)? else {
            return Ok(ReserveOutcome::Unavailable(VoucherRefusal::NotFound));
        };
        let record = channel.record.as_ref().ok_or_else(vanished)?;
        if let Some(refusal) = unavailable(record) {
            return Ok(ReserveOutcome::Unavailable(refusal));
        }
        if record.available() < amount {
            // Holds of instances whose lease ran out may be in the way.
            self.flush_channel(conn, channel_id)?;
            let expired = Whose::ExpiredOn {
                channel: channel_id,
                now: now_ms(),
            };
            if release_holds(conn, &expired).map_err(broken)?.reservations > 0
                && let Some(channel) = self.channels.get_mut(channel_id)
            {
                channel.record = None;
            }
        }
        if reservation.is_some_and(|id| !self.holds.contains_key(&id)) {
            // Reading the row again found the hold gone.
            return Ok(ReserveOutcome::Unavailable(VoucherRefusal::NotFound));
        }
        let Some(channel) = self.view(conn, channel_id)? else {
            return Ok(ReserveOutcome::Unavailable(VoucherRefusal::NotFound));
        };
        let record = channel.record.as_mut().ok_or_else(vanished)?;
        if record.available() < amount {
            return Ok(ReserveOutcome::Insufficient {
                channel: record.clone(),
            });
        }
        record.reserved += amount;
        record.updated_at = now_unix();
        channel.held += amount;
        channel.dirty = true;
        let snapshot = record.clone();
        let id = match reservation {
            Some(id) => {
                if let Some(hold) = self.holds.get_mut(&id) {
                    hold.amount += amount;
                }
                id
            }
            None => {
                let id = crate::reservation_ids::next();
                self.holds.insert(
                    id,
                    MemHold {
                        channel_id: channel_id.to_owned(),
                        amount,
                        charged: 0,
                    },
                );
                id
            }
        };
        Ok(ReserveOutcome::Reserved {
            reservation: id,
            channel: snapshot,
        })
    }

    /// The hold's channel, read again first when needed (which may find the
    /// hold gone).
    fn hold_channel(
        &mut self,
        conn: &Connection,
        reservation: i64,
    ) -> Result<Option<String>, Broken> {
        let Some(channel_id) = self.holds.get(&reservation).map(|h| h.channel_id.clone()) else {
            return Ok(None);
        };
        self.view(conn, &channel_id)?;
        Ok(self.holds.contains_key(&reservation).then_some(channel_id))
    }

    /// Charges `cost` (capped at what the hold holds, checkpoints included)
    /// and releases the rest.
    pub(crate) fn commit(
        &mut self,
        conn: &Connection,
        reservation: i64,
        cost: u128,
        units: u64,
    ) -> Result<Result<ChannelRecord, LedgerError>, Broken> {
        let Some(channel_id) = self.hold_channel(conn, reservation)? else {
            return Ok(Err(LedgerError::HoldLost));
        };
        let (Some(hold), Some(channel)) = (
            self.holds.remove(&reservation),
            self.channels.get_mut(&channel_id),
        ) else {
            return Ok(Err(LedgerError::HoldLost));
        };
        let charged = cost.min(hold.amount + hold.charged);
        // The checkpoints are in `spent` already: add the difference (less
        // than nothing when the upstream reported less than was counted).
        let added = signed(charged) - signed(hold.charged);
        let record = channel.record.as_mut().ok_or_else(vanished)?;
        record.reserved = record.reserved.saturating_sub(hold.amount);
        record.spent = u128::try_from(signed(record.spent) + added).unwrap_or(0);
        record.units = record.units.saturating_add(units);
        record.updated_at = now_unix();
        channel.held = channel.held.saturating_sub(hold.amount);
        channel.spent += added;
        channel.units = channel.units.saturating_add(units);
        channel.dirty = true;
        Ok(Ok(record.clone()))
    }

    /// Charges what a running stream delivered so far: the hold's charged
    /// total becomes `charged` (capped at what it holds; never lowered).
    pub(crate) fn checkpoint(
        &mut self,
        conn: &Connection,
        reservation: i64,
        charged: u128,
    ) -> Result<Option<u128>, Broken> {
        let Some(channel_id) = self.hold_channel(conn, reservation)? else {
            return Ok(None);
        };
        let (Some(hold), Some(channel)) = (
            self.holds.get_mut(&reservation),
            self.channels.get_mut(&channel_id),
        ) else {
            return Ok(None);
        };
        let target = charged.min(hold.amount + hold.charged);
        if target <= hold.charged {
            return Ok(Some(hold.charged));
        }
        let delta = target - hold.charged;
        hold.amount -= delta;
        hold.charged = target;
        let record = channel.record.as_mut().ok_or_else(vanished)?;
        record.reserved = record.reserved.saturating_sub(delta);
        record.spent += delta;
        record.updated_at = now_unix();
        channel.held = channel.held.saturating_sub(delta);
        channel.spent += signed(delta);
        channel.dirty = true;
        Ok(Some(target))
    }

    /// Releases what a hold still holds; what it checkpointed stays charged.
    pub(crate) fn release(&mut self, conn: &Connection, reservation: i64) -> Result<(), Broken> {
        let Some(channel_id) = self.hold_channel(conn, reservation)? else {
            return Ok(());
        };
        let (Some(hold), Some(channel)) = (
            self.holds.remove(&reservation),
            self.channels.get_mut(&channel_id),
        ) else {
            return Ok(());
        };
        if let Some(record) = channel.record.as_mut() {
            record.reserved = record.reserved.saturating_sub(hold.amount);
        }
        channel.held = channel.held.saturating_sub(hold.amount);
        channel.dirty = true;
        Ok(())
    }

    /// Writes every channel's changes: one statement for its counters and
    /// one for this process's hold row.
    pub(crate) fn flush(&mut self, conn: &Connection) -> Result<(), Broken> {
        let owner = &self.owner;
        for (channel_id, channel) in self.channels.iter_mut().filter(|(_, c)| c.dirty) {
            write_changes(conn, owner, channel_id, channel)?;
        }
        if self.channels.len() > KEEP_IDLE {
            self.channels
                .retain(|_, c| c.held > 0 || c.row.is_some() || c.dirty || c.in_doubt);
        }
        Ok(())
    }

    fn flush_channel(&mut self, conn: &Connection, channel_id: &str) -> Result<(), Broken> {
        match self.channels.get_mut(channel_id) {
            Some(channel) if channel.dirty => write_changes(conn, &self.owner, channel_id, channel),
            _ => Ok(()),
        }
    }
}

/// Writes one channel's changes: its counters, and `owner`'s hold row.
fn write_changes(
    conn: &Connection,
    owner: &str,
    channel_id: &str,
    channel: &mut HotChannel,
) -> Result<(), Broken> {
    let change = signed(channel.held) - signed(channel.stored);
    conn.prepare_cached(
        "UPDATE session_channels SET reserved = MAX(reserved + ?2, 0),
           spent = MAX(spent + ?3, 0), units = units + ?4, updated_at = ?5
         WHERE channel_id = ?1",
    )?
    .execute(params![
        channel_id,
        clamp(change),
        clamp(channel.spent),
        i64::try_from(channel.units).unwrap_or(i64::MAX),
        now_unix()
    ])?;
    match (channel.row, channel.held) {
        (Some(row), 0) => {
            conn.prepare_cached("DELETE FROM session_reservations WHERE id = ?1")?
                .execute(params![row])?;
            channel.row = None;
        }
        (Some(row), held) => {
            conn.prepare_cached("UPDATE session_reservations SET amount = ?2 WHERE id = ?1")?
                .execute(params![row, to_db(held)])?;
        }
        (None, 0) => {}
        (None, held) => {
            channel.row = Some(
                insert_reservation(conn, channel_id, held, owner, now_unix()).map_err(broken)?,
            );
        }
    }
    channel.stored = channel.held;
    channel.spent = 0;
    channel.units = 0;
    channel.dirty = false;
    Ok(())
}

/// Amounts are below 2^127 (SQL keeps them below 2^63).
fn signed(amount: u128) -> i128 {
    i128::try_from(amount).unwrap_or(i128::MAX)
}

/// A change in SQL's range (where amounts are capped at `i64::MAX`).
fn clamp(change: i128) -> i64 {
    i64::try_from(change).unwrap_or(if change < 0 { i64::MIN } else { i64::MAX })
}

fn vanished() -> Broken {
    rusqlite::Error::QueryReturnedNoRows
}

/// A store error inside the hot path breaks the open transaction.
fn broken(e: LedgerError) -> Broken {
    match e {
        LedgerError::Database(e) => e,
        other => rusqlite::Error::ToSqlConversionFailure(other.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::{ChannelBook, ChannelStatus, StoredVoucher};
    use crate::{Durability, SqliteLedger};

    const CHANNEL: &str = "0x00000000000000000000000000000000000000000000000000000000000000bb";

    /// A file with one open channel whose accepted voucher is 1 000.
    async fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hot.db");
        let ledger = SqliteLedger::open(&path, Durability::Normal).unwrap();
        let channel = ChannelRecord {
            channel_id: CHANNEL.into(),
            protocol: "v1".into(),
            escrow: "0xe5c0".into(),
            chain_id: 42431,
            payer: "0xpayer".into(),
            payee: "0xpayee".into(),
            token: "0x20c0".into(),
            authorized_signer: "0xsigner".into(),
            descriptor: None,
            deposit: 10_000,
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
        };
        let voucher = StoredVoucher {
            cumulative: 1_000,
            signature: "0xsig".into(),
        };
        ledger.open_channel(&channel, Some(&voucher)).await.unwrap();
        drop(ledger);
        let conn = Connection::open(&path).unwrap();
        // The holds' owner, with a lease that runs (holds of dead instances
        // are released by a reservation that comes up short).
        conn.execute(
            "INSERT INTO instances (id, lease_until, started_at) VALUES ('me', ?1, 0)",
            [i64::MAX],
        )
        .unwrap();
        (dir, conn)
    }

    fn stored(conn: &Connection) -> (i64, i64, i64) {
        conn.query_row(
            "SELECT reserved, spent, (SELECT COUNT(*) FROM session_reservations)
             FROM session_channels WHERE channel_id = ?1",
            [CHANNEL],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    }

    fn reserved(outcome: ReserveOutcome) -> i64 {
        match outcome {
            ReserveOutcome::Reserved { reservation, .. } => reservation,
            other => panic!("not reserved: {other:?}"),
        }
    }

    #[tokio::test]
    async fn changes_reach_sql_once_per_flush_and_match_the_copy() {
        let (_dir, conn) = store().await;
        let mut hot = HotChannels::new("me".into());
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let a = reserved(hot.reserve(&conn, CHANNEL, 300).unwrap());
        let b = reserved(hot.reserve(&conn, CHANNEL, 200).unwrap());
        assert_eq!(stored(&conn), (0, 0, 0), "nothing written before the flush");
        assert!(matches!(
            hot.reserve(&conn, CHANNEL, 501).unwrap(),
            ReserveOutcome::Insufficient { ref channel } if channel.reserved == 500
        ));
        let c = hot.commit(&conn, a, 120, 3).unwrap().unwrap();
        assert_eq!((c.spent, c.reserved, c.units), (120, 200, 3));
        hot.flush(&conn).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(
            stored(&conn),
            (200, 120, 1),
            "one hold row for the instance"
        );
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        hot.release(&conn, b).unwrap();
        hot.flush(&conn).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(
            stored(&conn),
            (0, 120, 0),
            "the row goes with the last hold"
        );
        assert!(matches!(
            hot.commit(&conn, a, 1, 1).unwrap(),
            Err(LedgerError::HoldLost)
        ));
    }

    #[tokio::test]
    async fn after_a_rollback_holds_are_dropped_and_what_the_store_kept_released() {
        let (_dir, conn) = store().await;
        let mut hot = HotChannels::new("me".into());
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let a = reserved(hot.reserve(&conn, CHANNEL, 100).unwrap());
        hot.flush(&conn).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(stored(&conn), (100, 0, 1));

        // The commit deletes the hold row, then the transaction rolls back:
        // the row is back, under an id the copy no longer has.
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        hot.commit(&conn, a, 60, 1).unwrap().unwrap();
        hot.flush(&conn).unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
        hot.rolled_back();
        assert_eq!(stored(&conn), (100, 0, 1));

        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let b = reserved(hot.reserve(&conn, CHANNEL, 50).unwrap());
        hot.flush(&conn).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(
            stored(&conn),
            (50, 0, 1),
            "the rolled-back charge is not counted and the old row is released"
        );
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(matches!(
            hot.commit(&conn, a, 60, 1).unwrap(),
            Err(LedgerError::HoldLost)
        ));
        let c = hot.commit(&conn, b, 50, 1).unwrap().unwrap();
        assert_eq!((c.spent, c.reserved), (50, 0));
        hot.flush(&conn).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(stored(&conn), (0, 50, 0));
    }
}
