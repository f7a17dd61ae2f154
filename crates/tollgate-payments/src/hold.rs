//! Holds that release themselves: a value that gives its hold back to the
//! ledger when dropped unless it was settled first. Dropping happens on every
//! path that does not finish a payment — an early return, a client that went
//! away (its request future is dropped), a timeout or a panic — so no path
//! can leak a hold.

use std::sync::Arc;

use tollgate_ledger::Ledger;

/// What a dropped hold gives back.
enum Held {
    Reservation(i64),
    Claim(String),
}

/// Releases its hold in the background when dropped, unless disarmed.
pub(crate) struct ReleaseOnDrop {
    armed: Option<(Arc<dyn Ledger>, Held)>,
}

impl std::fmt::Debug for ReleaseOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Claim keys name challenges; they stay out of debug output.
        f.debug_struct("ReleaseOnDrop")
            .field("armed", &self.armed.is_some())
            .finish()
    }
}

impl ReleaseOnDrop {
    pub(crate) fn reservation(ledger: Arc<dyn Ledger>, id: i64) -> Self {
        Self {
            armed: Some((ledger, Held::Reservation(id))),
        }
    }

    pub(crate) fn claim(ledger: Arc<dyn Ledger>, key: String) -> Self {
        Self {
            armed: Some((ledger, Held::Claim(key))),
        }
    }

    /// The hold was committed or released by its owner.
    pub(crate) fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let Some((ledger, held)) = self.armed.take() else {
            return;
        };
        let release = async move {
            let result = match &held {
                Held::Reservation(id) => ledger.release_reservation(*id).await,
                Held::Claim(key) => ledger.release_claim(key).await,
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "could not release a dropped hold");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(release);
            }
            // No runtime (the process is shutting down): the hold is left to
            // the ledger's recovery of holds whose owner is gone.
            Err(_) => tracing::warn!("a hold was dropped outside the runtime; left to recovery"),
        }
    }
}
