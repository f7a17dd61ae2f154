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
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had (pool exhausted, server away).
    #[error("PostgreSQL unavailable: {0}")]
    Unavailable(String),
    /// The store could not be reached or set up at start-up.
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    /// This instance's lease may have run out (the store was unreachable
    /// for too long): no new holds until it is renewed.
    #[error("this instance's lease is not renewed; refusing new holds")]
    LeaseLost,
    /// The hold is gone (released after this instance's lease ran out).
    #[error("the hold is no longer held")]
    HoldLost,
}

impl LedgerError {
    /// Whether the store is away (worth a 503 and a retry) rather than
    /// refusing the operation itself.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Connect { .. } | Self::LeaseLost => true,
            Self::Postgres(e) => {
                e.is_closed()
                    || e.code().is_none_or(|code| {
                        let code = code.code();
                        // 08: connection exception; 57P: operator intervention
                        // (shutdown); 53: insufficient resources; 40: rollback
                        // (serialization failure, deadlock) — all retryable.
                        code.starts_with("08")
                            || code.starts_with("57P")
                            || code.starts_with("53")
                            || code.starts_with("40")
                    })
            }
            Self::Database(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}
