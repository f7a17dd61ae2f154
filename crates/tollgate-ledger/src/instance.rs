//! Several gateway instances on one store: who owns a hold, and for how long.
//!
//! Every ledger handle belongs to one *instance* (a gateway process). The
//! holds it takes — session reservations, pending charge claims, in-flight
//! `Idempotency-Key`s — record that instance as their owner. The instance
//! keeps one lease row alive (`instances.lease_until`), renewed by
//! [`spawn_keeper`](crate::spawn_keeper) every quarter lease; nothing is
//! written per request for it. A hold is live while its owner's lease is:
//! when an instance dies, its holds count as free once the lease runs out
//! (reserve and claim checks skip them, and any live instance's keeper
//! deletes them). A restart under the same configured id releases that id's
//! old holds at once; nobody else's are touched.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::LedgerError;

/// The default lease: how long a dead instance's holds stay held.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Who this ledger handle's holds belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Unique among the instances sharing a store.
    pub id: String,
    /// How long the instance's holds outlive its last lease renewal.
    pub lease: Duration,
}

impl Instance {
    /// A configured, stable id: a restart under it releases its own old holds.
    pub fn named(id: impl Into<String>, lease: Duration) -> Self {
        Self {
            id: id.into(),
            lease,
        }
    }

    /// A fresh random id: an earlier process's holds expire with its lease.
    pub fn generated(lease: Duration) -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self::named(format!("i-{}", &random[..16]), lease)
    }

    /// How often the keeper renews the lease.
    pub fn renew_every(&self) -> Duration {
        self.lease / 4
    }

    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

/// What a release of holds freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldsReleased {
    pub reservations: u64,
    pub claims: u64,
    pub idempotency_keys: u64,
}

impl HoldsReleased {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A hold whose release failed (the store was away) and is retried by the
/// keeper, or that a dropped value hands over to be released soon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Reservation(i64),
    /// A pending single-use claim key.
    Claim(String),
    /// A pending `Idempotency-Key` (its hash).
    IdempotencyKey(String),
}

/// Something that happened on a channel, seen by every instance sharing the
/// store (PostgreSQL: `LISTEN/NOTIFY`; SQLite: this process only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// A new highest voucher was accepted on this channel.
    VoucherAccepted(String),
    /// Events may have been missed (the listener reconnected): whoever
    /// waits for one should look again.
    Resync,
}

/// This process's view of its own lease: holds are only taken while the
/// last renewal is recent enough that the lease in the store certainly
/// still runs (two thirds of it, leaving a third for requests in flight).
pub(crate) struct LocalLease {
    pub(crate) instance: Instance,
    epoch: Instant,
    /// Milliseconds after `epoch` until which new holds may be taken.
    valid_until: AtomicU64,
}

impl LocalLease {
    pub(crate) fn new(instance: Instance) -> Self {
        Self {
            instance,
            epoch: Instant::now(),
            valid_until: AtomicU64::new(0),
        }
    }

    /// Records a renewal that started at `started`.
    pub(crate) fn renewed(&self, started: Instant) {
        let until = started.saturating_duration_since(self.epoch) + self.instance.lease * 2 / 3;
        self.valid_until.fetch_max(
            u64::try_from(until.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Fails when the lease may have run out: a hold taken now could be
    /// released by another instance while it is still in use.
    pub(crate) fn check(&self) -> Result<(), LedgerError> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now < self.valid_until.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(LedgerError::LeaseLost)
        }
    }
}

/// Holds waiting to be released, and the event feed, shared by both backends.
pub(crate) struct Shared {
    pub(crate) lease: LocalLease,
    /// This id had a live lease when this handle registered: another live
    /// process may use the same id (ids must be unique).
    pub(crate) id_was_live: AtomicBool,
    deferred: Mutex<Vec<Hold>>,
    pub(crate) events: broadcast::Sender<ChannelEvent>,
}

impl Shared {
    pub(crate) fn new(instance: Instance) -> Self {
        Self {
            lease: LocalLease::new(instance),
            id_was_live: AtomicBool::new(false),
            deferred: Mutex::new(Vec::new()),
            events: broadcast::channel(1024).0,
        }
    }

    pub(crate) fn instance(&self) -> &Instance {
        &self.lease.instance
    }

    /// Warns when the restarting id's previous lease was still running.
    pub(crate) fn warn_if_id_was_live(&self) {
        if self.id_was_live.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                instance = %self.instance().id,
                "this instance id still had a live lease: if another running process uses \
                 the same id, its holds were just released (instance ids must be unique)"
            );
        }
    }

    pub(crate) fn defer(&self, hold: Hold) {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hold);
    }

    pub(crate) fn take_deferred(&self) -> Vec<Hold> {
        std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn announce(&self, event: ChannelEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }
}

/// Unix milliseconds on this machine's clock (SQLite's lease clock; the
/// PostgreSQL backend uses the database server's clock instead).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
