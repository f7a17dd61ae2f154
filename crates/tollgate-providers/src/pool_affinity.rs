//! Which of an upstream's connection pools the calling thread uses.
//!
//! A server that runs one single-threaded runtime per core marks each of
//! its threads with its own index, so a request goes out on a connection
//! its own thread drives. Unmarked threads (a multi-threaded runtime, tests)
//! all use pool 0.

use std::cell::Cell;

thread_local! {
    static POOL: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread use pool `index` (taken modulo the pool count).
pub fn use_pool(index: usize) {
    POOL.with(|pool| pool.set(index));
}

pub(crate) fn current() -> usize {
    POOL.with(Cell::get)
}
