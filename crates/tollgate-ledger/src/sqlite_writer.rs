//! The SQLite write connection, on a thread of its own, committing in
//! groups.
//!
//! Callers queue jobs. The thread runs each in a savepoint of its own (a job
//! that fails rolls back alone) inside one open `IMMEDIATE` transaction,
//! takes every job queued (up to [`MAX_GROUP`]) and then commits once: one
//! commit, one WAL append and one fsync for many requests' writes. The
//! jobs queued while a group syncs form the next one, so groups grow with
//! the load without a fixed window delaying a lone request.
//!
//! Jobs say whether they are durable. A durable job (a voucher, a charge, a
//! checkpoint, a claim, a usage record, a release) is answered only once
//! its transaction committed and, with full durability, the WAL was synced.
//! The writer syncs the WAL itself after the commit, with the connection
//! free (holds and reads go on inline meanwhile), and the jobs queued
//! during the sync form the next group: one sync covers a whole group, and
//! no other thread is woken for it. The WAL holds the transactions in
//! order, so what survives a power loss is always a prefix. (SQLite syncs
//! the WAL before it checkpoints it into the database, so frames a
//! checkpoint moved were synced too.)
//!
//! The other jobs (taking a hold, reading) are answered as soon as they ran:
//! every later job on the connection sees their effect, and they commit with
//! the transaction a moment later. Other processes sharing the file cannot
//! write in between (the open transaction holds the write lock), so holds
//! stay linearizable across them. If that commit failed, a hold answered
//! would be gone, and the request's own commit then fails on it: nothing
//! is charged, nothing is answered as paid. Holds are released at restart
//! anyway, so they never need a sync.
//!
//! Such a job runs on the caller's own thread when the connection is free
//! at that moment (the connection and its open transaction sit behind a
//! mutex the writer holds while it works): a reservation then costs no
//! thread hand-off. When the writer is busy, or another process holds the
//! file's write lock, it is queued like any other job; a caller never
//! waits for the lock.
//!
//! Session holds and charges on SQLite are kept in memory beside the
//! connection (`sqlite_hot`), under the same mutex: their changes are
//! written once per channel just before the group commits, and before any
//! other job's SQL runs, so every statement sees them.
//!
//! Detached jobs (the payment path's batched usage records) have nobody
//! waiting: they commit with their group, and a failure is logged.
//!
//! Jobs that manage their own transactions (migrations, rare operations)
//! run alone, between transactions.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, mpsc};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::LedgerError;
use crate::sqlite::Durability;
use crate::sqlite_checkpoint::Checkpoints;
use crate::sqlite_hot::HotChannels;

/// The most jobs one transaction takes.
const MAX_GROUP: usize = 512;

enum Job {
    Grouped {
        durable: bool,
        task: Box<dyn GroupTask>,
    },
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
    /// A caller opened the group's transaction inline: the writer commits
    /// it.
    Opened,
}

/// A job run inside the writer's open transaction; answered as soon as it
/// ran, or (durable) once its transaction committed and synced.
trait GroupTask: Send {
    /// Runs the job (SQL in its own savepoint, after the in-memory holds'
    /// changes are written). `Err` means the transaction itself broke: it
    /// is rolled back.
    fn run(&mut self, conn: &Connection, hot: &mut HotChannels) -> Result<(), rusqlite::Error>;
    fn answer(self: Box<Self>, committed: Result<(), &str>);
}

struct Grouped<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, LedgerError>>,
    reply: oneshot::Sender<Result<T, LedgerError>>,
}

impl<T, F> GroupTask for Grouped<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, LedgerError> + Send,
{
    fn run(&mut self, conn: &Connection, hot: &mut HotChannels) -> Result<(), rusqlite::Error> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        self.outcome = Some(sql_job(conn, hot, work)?);
        Ok(())
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        reply(self.reply, self.outcome, committed);
    }
}

/// Sends a job's caller what it ran to, once its group `committed`.
fn reply<T>(
    to: oneshot::Sender<Result<T, LedgerError>>,
    outcome: Option<Result<T, LedgerError>>,
    committed: Result<(), &str>,
) {
    let outcome = match committed {
        Ok(()) => outcome.unwrap_or_else(|| Err(LedgerError::Worker("job did not run".into()))),
        Err(message) => Err(LedgerError::Worker(format!(
            "the group's transaction failed: {message}"
        ))),
    };
    let _ = to.send(outcome);
}

/// Runs a job's SQL: the in-memory holds' changes are written first, so it
/// sees them, and their copies are read again after it, since it may have
/// changed their rows.
fn sql_job<T>(
    conn: &Connection,
    hot: &mut HotChannels,
    work: impl FnOnce(&Connection) -> Result<T, LedgerError>,
) -> Result<Result<T, LedgerError>, rusqlite::Error> {
    hot.flush(conn)?;
    let outcome = in_savepoint(conn, work);
    hot.forget();
    outcome
}

/// A job on the in-memory holds ([`HotChannels`]); no savepoint (it writes
/// SQL only when it finds the store changed, and a failed statement
/// breaks the transaction).
struct HotJob<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, LedgerError>>,
    reply: oneshot::Sender<Result<T, LedgerError>>,
}

/// What a job on the in-memory holds does: the outer `Err` breaks the
/// transaction.
pub(crate) type HotOutcome<T> = Result<Result<T, LedgerError>, rusqlite::Error>;

impl<T, F> GroupTask for HotJob<T, F>
where
    T: Send,
    F: FnOnce(&mut HotChannels, &Connection) -> HotOutcome<T> + Send,
{
    fn run(&mut self, conn: &Connection, hot: &mut HotChannels) -> Result<(), rusqlite::Error> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| work(hot, conn)))
            .unwrap_or_else(|_| Ok(Err(LedgerError::Worker("a ledger job panicked".into()))))?;
        self.outcome = Some(outcome);
        Ok(())
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        reply(self.reply, self.outcome, committed);
    }
}

/// Runs `work` in a savepoint of its own, rolled back if it fails. The
/// outer `Err`: the savepoint itself broke.
fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, LedgerError>,
) -> Result<Result<T, LedgerError>, rusqlite::Error> {
    conn.prepare_cached("SAVEPOINT grouped_job")?.execute([])?;
    let outcome = catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(LedgerError::Worker("a ledger job panicked".into())));
    if outcome.is_err() {
        conn.prepare_cached("ROLLBACK TO grouped_job")?
            .execute([])?;
    }
    conn.prepare_cached("RELEASE grouped_job")?.execute([])?;
    Ok(outcome)
}

/// A job nobody waits for: its failure is logged.
struct Detached<F> {
    what: &'static str,
    work: Option<F>,
}

impl<F> GroupTask for Detached<F>
where
    F: FnOnce(&Connection) -> Result<(), LedgerError> + Send,
{
    fn run(&mut self, conn: &Connection, _hot: &mut HotChannels) -> Result<(), rusqlite::Error> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        // Usage records touch no channel: the holds' changes may wait.
        if let Err(e) = in_savepoint(conn, work)? {
            tracing::error!(error = %e, what = self.what, "a ledger write failed");
        }
        Ok(())
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        if let Err(e) = committed {
            tracing::error!(error = %e, what = self.what, "a ledger write failed");
        }
    }
}

/// The handle callers queue jobs on; the thread stops when the last handle
/// is dropped (after the jobs already queued).
pub(crate) struct Writer {
    // Dropped before `jobs`: the thread, woken by the queue's end, then
    // holds the connection's last handle and closes it in turn.
    inner: Arc<Mutex<Inner>>,
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> LedgerError {
    LedgerError::Worker("the ledger's writer thread stopped".into())
}

impl Writer {
    /// Starts the thread on `conn`. `db` is the database's file, when it
    /// has one: its WAL is then checkpointed by a thread of its own
    /// (`sqlite_checkpoint`) and, with full durability, synced by the
    /// writer after each commit.
    pub(crate) fn start(
        conn: Connection,
        durability: Durability,
        db: Option<&Path>,
        owner: String,
    ) -> Result<Self, LedgerError> {
        let wal = db.map(|db| {
            let mut wal = db.as_os_str().to_owned();
            wal.push("-wal");
            std::path::PathBuf::from(wal)
        });
        let wal_sync = match (durability, &wal) {
            (Durability::Full, Some(wal)) => WalSync::open(wal),
            _ => None,
        };
        let checkpoints = db.and_then(|db| Checkpoints::start(&conn, db, durability));
        let after = AfterCommit {
            wal_sync,
            checkpoints,
        };
        let inner = Arc::new(Mutex::new(Inner {
            conn,
            open: None,
            sync: SyncMode {
                durability,
                full_now: durability == Durability::Full,
            },
            commits_sync: after.wal_sync.is_none(),
            hot: HotChannels::new(owner),
            data_version: None,
        }));
        let (jobs, queue) = mpsc::channel();
        let thread_inner = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("tollgate-ledger-writer".into())
            .spawn(move || {
                run(&thread_inner, &queue, after);
                crate::sqlite_close::close_shared_in_turn(thread_inner);
            })
            .map_err(|e| LedgerError::Worker(format!("cannot start the ledger writer: {e}")))?;
        Ok(Self { jobs, inner })
    }

    /// Runs `work` in the writer's open transaction, in a savepoint of its
    /// own. Answers as soon as it ran, or, when `durable`, once the
    /// transaction committed (and, with full durability, the WAL synced).
    pub(crate) async fn grouped<T, F>(&self, durable: bool, work: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        let work = if durable {
            work
        } else {
            match self.inline(work, |work, conn, hot| sql_job(conn, hot, work)) {
                Ok(outcome) => return outcome,
                Err(work) => work,
            }
        };
        let (reply, answer) = oneshot::channel();
        let task = Grouped {
            work: Some(work),
            outcome: None,
            reply,
        };
        self.jobs
            .send(Job::Grouped {
                durable,
                task: Box::new(task),
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs a job that needs no commit (a hold, a read) on the caller's
    /// thread, in the writer's open transaction, when the connection is
    /// free right now: the hand-off to the writer thread and back is saved.
    /// Gives `work` back when the writer is busy or another process holds
    /// the database's write lock: the queue then waits for it, not a tokio
    /// worker. (Durable SQL jobs stay queued: run inline they measured more
    /// context switches, not fewer. A durable job on the in-memory holds is
    /// a few field updates, and runs inline, its answer parked for the
    /// group's commit.)
    fn inline<T, W>(
        &self,
        work: W,
        run: impl FnOnce(W, &Connection, &mut HotChannels) -> HotOutcome<T>,
    ) -> Result<Result<T, LedgerError>, W> {
        self.inline_then(work, run, |outcome| (outcome, None))
            .map(|ran| ran.and_then(|outcome| outcome))
    }

    /// [`Self::inline`], with `settle` deciding under the lock what the
    /// caller gets (a durable job parks its outcome for the commit).
    fn inline_then<T, W, R>(
        &self,
        work: W,
        run: impl FnOnce(W, &Connection, &mut HotChannels) -> HotOutcome<T>,
        settle: impl FnOnce(Result<T, LedgerError>) -> (R, Option<Box<dyn GroupTask>>),
    ) -> Result<Result<R, LedgerError>, W> {
        let mut guard = match self.inner.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(work),
        };
        let inner = &mut *guard;
        let began = match inner.begin(false) {
            Ok(began) => began,
            Err(_) => return Err(work),
        };
        let ran = catch_unwind(AssertUnwindSafe(|| run(work, &inner.conn, &mut inner.hot)))
            .unwrap_or_else(|_| Ok(Err(LedgerError::Worker("a ledger job panicked".into()))));
        let outcome = match ran {
            Ok(outcome) => outcome,
            Err(e) => {
                let message = e.to_string();
                inner.abandon(&message);
                return Ok(Err(LedgerError::Worker(format!(
                    "the group's transaction failed: {message}"
                ))));
            }
        };
        let (settled, parked) = settle(outcome);
        if let Some(txn) = inner.open.as_mut() {
            txn.jobs += 1;
            if let Some(task) = parked {
                txn.after_commit.push(task);
            }
        }
        drop(guard);
        if matches!(began, Began::Opened) && self.jobs.send(Job::Opened).is_err() {
            return Ok(Err(stopped()));
        }
        Ok(Ok(settled))
    }

    /// Runs `work` on the in-memory holds in the writer's open transaction:
    /// on the caller's thread when the connection is free, else queued.
    /// Answers as soon as it ran, or, when `durable`, once the transaction
    /// committed (and, with full durability, the WAL synced).
    pub(crate) async fn hot<T, F>(&self, durable: bool, work: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut HotChannels, &Connection) -> HotOutcome<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let mut reply = Some(reply);
        let inline = self.inline_then(
            work,
            |work, conn, hot| work(hot, conn),
            |outcome| match reply.take() {
                // Answered once the group is committed and synced.
                Some(reply) if durable => {
                    let task: Box<dyn GroupTask> = Box::new(HotJob::<T, F> {
                        work: None,
                        outcome: Some(outcome),
                        reply,
                    });
                    (None, Some(task))
                }
                _ => (Some(outcome), None),
            },
        );
        let work = match inline {
            Ok(Ok(Some(outcome))) => return outcome,
            Ok(Ok(None)) => return answer.await.map_err(|_| stopped())?,
            Ok(Err(e)) => return Err(e),
            Err(work) => work,
        };
        let reply = reply.ok_or_else(stopped)?;
        let task = HotJob {
            work: Some(work),
            outcome: None,
            reply,
        };
        self.jobs
            .send(Job::Grouped {
                durable,
                task: Box::new(task),
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Queues `work` for the open transaction without waiting for it: it
    /// commits with the group, and a failure is logged as `what`.
    pub(crate) fn detached<F>(&self, what: &'static str, work: F)
    where
        F: FnOnce(&Connection) -> Result<(), LedgerError> + Send + 'static,
    {
        let task = Detached {
            what,
            work: Some(work),
        };
        let job = Job::Grouped {
            durable: false,
            task: Box::new(task),
        };
        if self.jobs.send(job).is_err() {
            tracing::error!(
                what,
                "the ledger's writer thread stopped; a write was dropped"
            );
        }
    }

    /// Runs `work` alone on the connection, outside any transaction.
    pub(crate) async fn alone<T, F>(&self, work: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = move |conn: &mut Connection| {
            let outcome = catch_unwind(AssertUnwindSafe(|| work(conn)))
                .unwrap_or_else(|_| Err(LedgerError::Worker("a ledger job panicked".into())));
            let _ = reply.send(outcome);
        };
        self.jobs
            .send(Job::Alone(Box::new(job)))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The `synchronous` setting the connection has now, changed only between
/// transactions and only when it must.
struct SyncMode {
    durability: Durability,
    full_now: bool,
}

impl SyncMode {
    fn set(&mut self, conn: &Connection, durable: bool) {
        let full = durable && self.durability == Durability::Full;
        if full == self.full_now {
            return;
        }
        let value = if full { "FULL" } else { "NORMAL" };
        match conn.pragma_update(None, "synchronous", value) {
            Ok(()) => self.full_now = full,
            Err(e) => tracing::error!(error = %e, "could not set the ledger's synchronous mode"),
        }
    }
}

/// The WAL file, synced by the writer itself after a commit, with the
/// connection's mutex released (holds and reads go on meanwhile, and the
/// jobs queued during the sync form the next group).
struct WalSync {
    file: File,
}

impl WalSync {
    /// `None` (SQLite then syncs each durable commit itself) when the WAL
    /// cannot be opened.
    fn open(wal: &Path) -> Option<Self> {
        match File::options().read(true).write(true).open(wal) {
            Ok(file) => Some(Self { file }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the WAL to sync it; commits sync inline");
                None
            }
        }
    }

    /// Syncs the WAL, then answers `tasks` (committed before the sync).
    fn sync_and_answer(&self, tasks: Vec<Box<dyn GroupTask>>) {
        let synced = self
            .file
            .sync_data()
            .map_err(|e| format!("WAL sync failed: {e}"));
        if let Err(e) = &synced {
            tracing::error!(error = %e, "the ledger could not sync its WAL");
        }
        for task in tasks {
            task.answer(synced.as_ref().map(|_| ()).map_err(String::as_str));
        }
    }
}

/// The transaction the writer has open, and the durable jobs in it.
struct Open {
    jobs: usize,
    after_commit: Vec<Box<dyn GroupTask>>,
}

/// What follows a commit: the WAL's sync (full durability) and, later,
/// its checkpoint.
struct AfterCommit {
    wal_sync: Option<WalSync>,
    checkpoints: Option<Checkpoints>,
}

/// The write connection and the transaction it has open: the writer
/// thread's, lent to a caller for a moment to run a hold or a read inline.
struct Inner {
    conn: Connection,
    open: Option<Open>,
    sync: SyncMode,
    /// Whether SQLite syncs group commits itself (the WAL could not be
    /// opened for the writer to sync it).
    commits_sync: bool,
    /// Session holds in memory, written with each group.
    hot: HotChannels,
    /// `PRAGMA data_version` when the last transaction began: it changes
    /// when another connection commits.
    data_version: Option<i64>,
}

/// What a grouped job found when it started.
enum Began {
    /// It joins the transaction already open.
    Joined,
    /// It opened the transaction (the writer must be told to commit it).
    Opened,
}

impl Inner {
    /// Opens the group's transaction unless one is open. With `wait` false
    /// a database locked by another process is `SQLITE_BUSY` at once.
    fn begin(&mut self, wait: bool) -> Result<Began, rusqlite::Error> {
        if self.open.is_some() {
            return Ok(Began::Joined);
        }
        // With the WAL open, SQLite commits without syncing and the writer
        // syncs; without one, durable commits sync.
        self.sync.set(&self.conn, self.commits_sync);
        if !wait {
            self.conn.busy_timeout(Duration::ZERO)?;
        }
        let begun = self
            .conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]));
        if !wait {
            self.conn.busy_timeout(BUSY_TIMEOUT)?;
        }
        begun?;
        let version = self
            .conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .ok();
        if version.is_none() || std::mem::replace(&mut self.data_version, version) != version {
            // Another process committed: the holds' copies are stale.
            self.hot.forget();
        }
        self.open = Some(Open {
            jobs: 0,
            after_commit: Vec::new(),
        });
        Ok(Began::Opened)
    }

    /// The savepoint machinery itself broke: the transaction is in doubt,
    /// so it is rolled back and every durable job in it fails.
    fn abandon(&mut self, message: &str) {
        tracing::error!(error = %message, "a ledger transaction failed");
        let _ = self.conn.execute_batch("ROLLBACK");
        self.hot.rolled_back();
        if let Some(txn) = self.open.take() {
            for task in txn.after_commit {
                task.answer(Err(message));
            }
        }
    }

    /// Runs a queued grouped job in the open transaction.
    fn run_queued(&mut self, durable: bool, mut task: Box<dyn GroupTask>) {
        if let Err(e) = self.begin(true) {
            task.answer(Err(&e.to_string()));
            return;
        }
        match task.run(&self.conn, &mut self.hot) {
            Ok(()) => {
                let Some(txn) = self.open.as_mut() else {
                    return;
                };
                txn.jobs += 1;
                if durable {
                    txn.after_commit.push(task);
                } else {
                    // A hold or a read: its effect is seen by every later
                    // job; it commits with the transaction.
                    task.answer(Ok(()));
                }
            }
            Err(e) => {
                let message = e.to_string();
                self.abandon(&message);
                task.answer(Err(&message));
            }
        }
    }
}

/// How long a statement waits for another process's write lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(inner: &Mutex<Inner>, queue: &mpsc::Receiver<Job>, after: AfterCommit) {
    loop {
        let open = lock(inner).open.as_ref().map(|txn| txn.jobs);
        let next = match open {
            None => match queue.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
            // Take what queued, then commit: no window is waited out. Under
            // load the jobs queued during the last group's sync form this
            // one, so groups grow with the load and a lone request is not
            // delayed.
            Some(jobs) if jobs < MAX_GROUP => queue.try_recv().ok(),
            Some(_) => None,
        };
        let mut guard = lock(inner);
        let inner = &mut *guard;
        let to_sync = match next {
            None => match inner.open.take() {
                Some(txn) => finish(&inner.conn, &mut inner.hot, txn, &after),
                None => Vec::new(),
            },
            // A caller opened the transaction: it commits once the queue is
            // drained.
            Some(Job::Opened) => Vec::new(),
            Some(Job::Alone(work)) => {
                if let Some(txn) = inner.open.take() {
                    let committed = finish(&inner.conn, &mut inner.hot, txn, &after);
                    sync_and_answer(&after, committed);
                }
                // Alone jobs commit their own transactions and expect them
                // to be as durable as the store is configured.
                inner.sync.set(&inner.conn, true);
                work(&mut inner.conn);
                // It may have changed channel rows.
                inner.hot.forget();
                if let Some(checkpoints) = &after.checkpoints {
                    checkpoints.committed();
                }
                Vec::new()
            }
            Some(Job::Grouped { durable, task }) => {
                inner.run_queued(durable, task);
                Vec::new()
            }
        };
        // The sync runs with the connection free: holds and reads go on
        // inline, and what is queued meanwhile forms the next group.
        drop(guard);
        sync_and_answer(&after, to_sync);
    }
}

/// Syncs the WAL for `tasks` (committed, waiting for the sync) and
/// answers them.
fn sync_and_answer(after: &AfterCommit, tasks: Vec<Box<dyn GroupTask>>) {
    if tasks.is_empty() {
        return;
    }
    if let Some(wal) = &after.wal_sync {
        wal.sync_and_answer(tasks);
    }
}

/// Commits the open transaction and answers its durable jobs: at once when
/// the commit synced (or durability is normal); else they are returned, for
/// [`sync_and_answer`] once the connection is released.
#[must_use]
fn finish(
    conn: &Connection,
    hot: &mut HotChannels,
    txn: Open,
    after: &AfterCommit,
) -> Vec<Box<dyn GroupTask>> {
    let committed = hot
        .flush(conn)
        .and_then(|()| conn.prepare_cached("COMMIT"))
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(|e| e.to_string());
    if let (Ok(()), Some(checkpoints)) = (&committed, &after.checkpoints) {
        checkpoints.committed();
        if checkpoints.restart_due() {
            // No transaction is open: once this checkpoint has copied the
            // last frames, the next transaction starts the WAL over. (It
            // syncs the WAL first, so the group's own sync then finds
            // nothing left to write.)
            crate::sqlite_checkpoint::checkpoint(conn);
        }
    }
    if let Err(e) = &committed {
        tracing::error!(error = %e, jobs = txn.jobs, "a ledger transaction failed to commit");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        hot.rolled_back();
    }
    if after.wal_sync.is_some() && committed.is_ok() {
        return txn.after_commit;
    }
    for task in txn.after_commit {
        task.answer(committed.as_ref().map(|_| ()).map_err(String::as_str));
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn writer() -> Writer {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        Writer::start(conn, Durability::Full, None, "test".into()).unwrap()
    }

    /// A database file in WAL mode with `schema`, in a directory removed
    /// with the returned guard.
    fn wal_db(schema: &str) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(schema).unwrap();
        (dir, path, conn)
    }

    fn insert(conn: &Connection, n: i64) -> Result<(), LedgerError> {
        conn.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_job_rolls_back_alone_and_its_group_commits() {
        let writer = std::sync::Arc::new(writer());
        // Hold the thread so the next jobs queue up and run as one group.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let writer = std::sync::Arc::clone(&writer);
            tokio::spawn(async move {
                writer
                    .alone(move |_| {
                        wait.recv().ok();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let jobs: Vec<_> = (1..=3)
            .map(|n| {
                let writer = std::sync::Arc::clone(&writer);
                tokio::spawn(async move {
                    writer
                        .grouped(true, move |conn| {
                            insert(conn, n)?;
                            if n == 2 {
                                return Err(LedgerError::HoldLost);
                            }
                            Ok(n)
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        go.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut outcomes = Vec::new();
        for job in jobs {
            outcomes.push(job.await.unwrap().map_err(|e| e.to_string()));
        }
        assert_eq!(outcomes[0], Ok(1));
        assert!(outcomes[1].is_err());
        assert_eq!(outcomes[2], Ok(3));
        let rows = writer
            .grouped(false, |conn| {
                let mut stmt = conn.prepare("SELECT n FROM t ORDER BY n")?;
                let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(rows, vec![1, 3], "the failed job's insert is rolled back");
    }

    #[tokio::test]
    async fn a_hold_runs_inline_in_the_open_transaction_and_commits_with_its_group() {
        let (_dir, path, conn) = wal_db("CREATE TABLE t (n INTEGER PRIMARY KEY)");
        let writer = Writer::start(conn, Durability::Full, Some(&path), "test".into()).unwrap();
        let caller = std::thread::current().id();
        let ran_on = writer
            .grouped(false, move |c| {
                insert(c, 1)?;
                Ok(std::thread::current().id())
            })
            .await
            .unwrap();
        assert_eq!(
            ran_on, caller,
            "a free connection runs a hold on the caller's thread"
        );
        let queued_on = writer
            .grouped(true, |c| {
                insert(c, 2)?;
                Ok(std::thread::current().id())
            })
            .await
            .unwrap();
        assert_ne!(queued_on, caller, "a durable job is the writer thread's");
        // Both committed (the hold with the group the writer committed).
        let reader = Connection::open(&path).unwrap();
        let rows: i64 = reader
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
        // A hold alone, with nothing queued after it, is committed too:
        // the writer is told to commit it.
        writer.grouped(false, |c| insert(c, 3)).await.unwrap();
        let mut seen = 0;
        for _ in 0..200 {
            seen = reader
                .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                .unwrap();
            if seen == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(seen, 3, "an inline hold's transaction was never committed");
    }

    #[tokio::test]
    async fn a_hold_is_queued_while_another_process_holds_the_write_lock() {
        let (_dir, path, conn) = wal_db("CREATE TABLE t (n INTEGER PRIMARY KEY)");
        let writer = Writer::start(conn, Durability::Full, Some(&path), "test".into()).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let caller = std::thread::current().id();
        let job = writer.grouped(false, |c| {
            insert(c, 1)?;
            Ok(std::thread::current().id())
        });
        let release = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            other.execute_batch("COMMIT").unwrap();
        };
        let started = Instant::now();
        let (ran_on, ()) = tokio::join!(job, release);
        assert_ne!(
            ran_on.unwrap(),
            caller,
            "the caller did not wait for the lock: the writer did"
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    /// Under steady load a transaction is open nearly all the time (holds
    /// open the next one while a group syncs), and SQLite alone would never
    /// start the WAL over: it grew by the whole load.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_steady_load_the_wal_starts_over_instead_of_growing() {
        let (dir, path, conn) = wal_db("CREATE TABLE t (n INTEGER PRIMARY KEY, pad BLOB)");
        let writer = std::sync::Arc::new(
            Writer::start(conn, Durability::Full, Some(&path), "test".into()).unwrap(),
        );
        let written = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let until = Instant::now() + Duration::from_millis(2_500);
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let writer = std::sync::Arc::clone(&writer);
                let written = std::sync::Arc::clone(&written);
                tokio::spawn(async move {
                    let mut n = task;
                    while Instant::now() < until {
                        // Every other job is a hold-like one, run inline
                        // whenever the connection is free.
                        writer
                            .grouped(n % 2 == 0, move |c| {
                                c.execute(
                                    "INSERT INTO t (n, pad) VALUES (?1, zeroblob(8192))",
                                    [n],
                                )?;
                                Ok(())
                            })
                            .await
                            .unwrap();
                        written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        n += 8;
                    }
                })
            })
            .collect();
        let wal = dir.path().join("w.db-wal");
        let mut longest = 0;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            longest = longest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // Each row is three pages of WAL. Growing with the load, the WAL
        // held most of it (388 of 472 MB when this was measured); started
        // over, it holds about one checkpoint interval's writes (41 of 581).
        let loaded = written.load(std::sync::atomic::Ordering::Relaxed) as u64 * 3 * 4096;
        assert!(
            loaded > 16 * 1024 * 1024,
            "the load was too light to tell ({loaded} bytes)"
        );
        assert!(
            longest < loaded / 4,
            "the WAL grew to {longest} bytes under {loaded} bytes of writes"
        );
    }

    #[tokio::test]
    async fn jobs_answer_after_their_writes_are_visible_to_other_connections() {
        durable_jobs_answer_after_their_commit(false).await;
    }

    #[tokio::test]
    async fn with_the_writer_syncing_the_wal_jobs_answer_after_their_commit() {
        durable_jobs_answer_after_their_commit(true).await;
    }

    /// `wal_sync`: the writer syncs the WAL itself (the database's path is
    /// given), else SQLite syncs each commit.
    async fn durable_jobs_answer_after_their_commit(wal_sync: bool) {
        let (_dir, path, conn) = wal_db("CREATE TABLE t (n INTEGER PRIMARY KEY)");
        let db = wal_sync.then_some(path.as_path());
        let writer = Writer::start(conn, Durability::Full, db, "test".into()).unwrap();
        assert_eq!(
            writer.inner.lock().unwrap().commits_sync,
            !wal_sync,
            "who syncs the commits"
        );
        let writer = std::sync::Arc::new(writer);
        let reader = Connection::open(&path).unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let writer = std::sync::Arc::clone(&writer);
                tokio::spawn(async move { writer.grouped(n % 2 == 0, move |c| insert(c, n)).await })
            })
            .collect();
        for (n, task) in tasks.into_iter().enumerate() {
            task.await.unwrap().unwrap();
            if n % 2 == 1 {
                // Not durable: answered before its commit.
                continue;
            }
            let seen: i64 = reader
                .query_row("SELECT COUNT(*) FROM t WHERE n = ?1", [n as i64], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(seen, 1, "durable job {n} answered before its commit");
        }
    }
}
