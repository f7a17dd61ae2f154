//! SQLite connections to a file close one at a time in the process.
//!
//! Two connections to one database closing at once on two threads can
//! deadlock inside SQLite 3.51's unix VFS: one close held the file's lock
//! mutex and waited for the VFS's global mutex, which the other close held
//! while it waited for the file's (a hung end-to-end test, caught with
//! gdb: the checkpoint thread's connection against a writer's). Closing is
//! rare (shutdown, a dropped ledger), so every file connection the ledger
//! owns is opened and dropped in turn, under one lock.

use std::sync::{Arc, Mutex, PoisonError};

static CLOSING: Mutex<()> = Mutex::new(());

/// Opens a connection in turn: an open takes the same two mutexes.
pub(crate) fn open_in_turn<T>(open: impl FnOnce() -> T) -> T {
    let _turn = CLOSING.lock().unwrap_or_else(PoisonError::into_inner);
    open()
}

/// Drops `owner` (a connection, or what holds one) in its turn.
pub(crate) fn close_in_turn<T>(owner: T) {
    let _turn = CLOSING.lock().unwrap_or_else(PoisonError::into_inner);
    drop(owner);
}

/// Drops a shared `owner` in its turn if this is its last handle (others
/// may still be in use by a read that outlives the ledger; the last of
/// those drops it as usual).
pub(crate) fn close_shared_in_turn<T>(owner: Arc<T>) {
    if let Some(owner) = Arc::into_inner(owner) {
        close_in_turn(owner);
    }
}
