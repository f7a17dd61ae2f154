//! Ids of SQLite reservations, drawn by each process without shared state.
//!
//! An id must never name two holds: a holder whose reservation was released
//! under it (its instance's lease ran out) may still commit or release by id
//! later, and must then find nothing, not somebody else's newer hold.
//! `AUTOINCREMENT` gave that through `sqlite_sequence`: one more lookup and
//! update per insert, and one more page in every group's WAL frames (with
//! the usage records' sequence, ~9 % of the ledger's CPU per paid request in
//! `benches/paid_path.rs`). Instead each process walks the positive 63-bit
//! integers in a full-period sequence — a random start and a random odd
//! step — so it never draws an id twice, and meets an id another process
//! holds with odds of about one in 2^63 per live row (the insert then skips
//! to the next id).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Sequence {
    start: u64,
    step: u64,
    drawn: AtomicU64,
}

/// The process's next reservation id (≥ 1).
pub(crate) fn next() -> i64 {
    static SEQUENCE: OnceLock<Sequence> = OnceLock::new();
    let sequence = SEQUENCE.get_or_init(|| {
        let random = uuid::Uuid::new_v4().as_u128();
        Sequence {
            start: random as u64,
            step: (random >> 64) as u64 | 1,
            drawn: AtomicU64::new(0),
        }
    });
    loop {
        let k = sequence.drawn.fetch_add(1, Ordering::Relaxed);
        let id = sequence.start.wrapping_add(k.wrapping_mul(sequence.step)) & i64::MAX as u64;
        if id != 0 {
            return id as i64;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn ids_are_positive_and_never_repeat() {
        let drawn: Vec<i64> = (0..100_000).map(|_| super::next()).collect();
        assert!(drawn.iter().all(|&id| id > 0));
        let distinct: HashSet<i64> = drawn.iter().copied().collect();
        assert_eq!(distinct.len(), drawn.len());
    }
}
