//! WAL checkpoints off the writer's thread.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that crosses
//! its threshold: the writer then copies pages into the database and
//! syncs it while every queued job waits (the ledger bench saw 6 ms tails
//! from it). The writer's connection has automatic checkpoints off, and
//! this thread checkpoints on a connection of its own every
//! [`INTERVAL`] after a commit. `PASSIVE` never takes the write lock, so
//! the writer keeps committing while pages are copied; once a checkpoint
//! has caught up, the next transaction starts the WAL over, which keeps
//! it about one interval's writes long.
//!
//! Under steady load that start-over never comes by itself: SQLite starts
//! the WAL over only in a transaction that began with every frame copied,
//! and the writer opens its next transaction right after each commit, so
//! there is always a commit the thread has not copied yet. The WAL then
//! grows for as long as the load lasts (30 MB/s in the gateway bench), and
//! every append lands past the end of the file: new blocks, zeroed pages
//! and file-size updates for each sync to journal. So once the WAL is
//! longer than [`RESTART_FRAMES`], the thread asks the writer
//! ([`Checkpoints::restart_due`]) to checkpoint once itself, right after a
//! commit while no transaction is open ([`checkpoint`]): only the frames
//! since the thread's last pass are left to copy, and the writer's next
//! transaction starts the WAL over.
//!
//! Safety is SQLite's: a checkpoint copies only committed frames, syncs
//! the WAL before it copies and the database after (the connection's
//! `synchronous` is `NORMAL` or `FULL`, never `OFF`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use crate::LedgerError;
use crate::sqlite::Durability;
use crate::sqlite_writer::BUSY_TIMEOUT;

/// How often the WAL is checkpointed while commits come in.
const INTERVAL: Duration = Duration::from_millis(50);

/// A WAL longer than this (frames of one page, 4 KiB each) is started over
/// by the writer's own checkpoint: about SQLite's own automatic threshold.
const RESTART_FRAMES: i64 = 1_000;

/// The writer's side: count a commit; the thread stops when this is
/// dropped (with the writer).
pub(crate) struct Checkpoints {
    commits: Arc<AtomicU64>,
    /// Set by the thread when the WAL it checkpointed was long.
    restart: Arc<AtomicBool>,
    _stop: mpsc::Sender<()>,
}

impl Checkpoints {
    /// Turns `writer`'s automatic checkpoints off and starts the thread on
    /// a connection of its own to `db`. `None`: the thread could not start,
    /// and the writer keeps SQLite's automatic checkpoints.
    pub(crate) fn start(writer: &Connection, db: &Path, durability: Durability) -> Option<Self> {
        let conn = match open(db, durability) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the checkpoint connection; the writer checkpoints");
                return None;
            }
        };
        let commits = Arc::new(AtomicU64::new(0));
        let restart = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let seen = Arc::clone(&commits);
        let long = Arc::clone(&restart);
        let started = std::thread::Builder::new()
            .name("tollgate-ledger-checkpoint".into())
            .spawn(move || {
                run(&conn, &seen, &long, &stopped);
                crate::sqlite_close::close_in_turn(conn);
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the checkpoint thread; the writer checkpoints");
            return None;
        }
        if let Err(e) = writer.pragma_update(None, "wal_autocheckpoint", 0) {
            tracing::warn!(error = %e, "cannot turn the writer's checkpoints off");
        }
        Some(Self {
            commits,
            restart,
            _stop: stop,
        })
    }

    pub(crate) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the writer should checkpoint once itself now, between two
    /// transactions, so that the WAL starts over (asked once per long WAL
    /// the thread saw).
    pub(crate) fn restart_due(&self) -> bool {
        self.restart.swap(false, Ordering::Relaxed)
    }
}

fn open(db: &Path, durability: Durability) -> Result<Connection, LedgerError> {
    let conn = crate::sqlite_close::open_in_turn(|| Connection::open(db))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", durability.synchronous())?;
    Ok(conn)
}

fn run(conn: &Connection, commits: &AtomicU64, restart: &AtomicBool, stop: &mpsc::Receiver<()>) {
    let mut done = 0;
    loop {
        match stop.recv_timeout(INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The writer is gone (or sent a stop): a last checkpoint.
            _ => {
                checkpoint(conn);
                return;
            }
        }
        let now = commits.load(Ordering::Relaxed);
        if now != done {
            done = now;
            if checkpoint(conn).is_some_and(|frames| frames > RESTART_FRAMES) {
                restart.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// One `PASSIVE` checkpoint: copies what no reader still needs, never waits
/// for the writer. A busy or partial one is simply tried again next time.
/// Returns how many frames the WAL holds.
pub(crate) fn checkpoint(conn: &Connection) -> Option<i64> {
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
        Ok(frames) => Some(frames),
        Err(e) => {
            tracing::warn!(error = %e, "a WAL checkpoint failed; it is tried again");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_frames(conn: &Connection) -> (i64, i64) {
        conn.query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .unwrap_or((-1, -1))
    }

    #[test]
    fn the_wal_is_checkpointed_by_the_thread_and_stays_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer
            .execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, pad BLOB)")
            .unwrap();
        let checkpoints = Checkpoints::start(&writer, &path, Durability::Normal).unwrap();
        let auto: i64 = writer
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "the writer no longer checkpoints on commit");
        let wal = dir.path().join("c.db-wal");
        let mut longest = 0;
        for round in 0..40 {
            // 64 KiB per round: 16 pages, far past SQLite's own threshold
            // (1 000 pages) in all, were nobody checkpointing.
            writer
                .execute(
                    "INSERT INTO t (n, pad) VALUES (?1, zeroblob(65536))",
                    [round],
                )
                .unwrap();
            checkpoints.committed();
            std::thread::sleep(INTERVAL / 2);
            longest = longest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        std::thread::sleep(INTERVAL * 4);
        // Everything committed is in the database file: the WAL's frames
        // are all checkpointed.
        let (frames, copied) = wal_frames(&writer);
        assert_eq!(
            frames, copied,
            "the WAL was left behind: {frames} frames, {copied} copied"
        );
        assert!(
            longest < 40 * 65_536,
            "the WAL kept growing ({longest} bytes): it never started over"
        );
        let reader = Connection::open(&path).unwrap();
        let rows: i64 = reader
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 40);
    }
}
