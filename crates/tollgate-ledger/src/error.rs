/// A storage failure. Callers treat it as "outcome unknown": never serve,
/// never claim success.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("cannot open database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database worker stopped: {0}")]
    Worker(String),
    /// This backend does not implement a (read-only, reporting) query.
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
}
