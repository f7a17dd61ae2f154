//! [`Instances`] on SQLite — leases, releasing holds, the settlement leader
//! — and the `Idempotency-Key` holds of [`ChannelBook`](crate::ChannelBook).
//! Several processes may share the file; each transaction takes SQLite's
//! write lock (`IMMEDIATE`), which serializes them.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::broadcast;

use crate::channels::{IdempotencyBegin, StoredResponse};
use crate::instance::{ChannelEvent, Hold, HoldsReleased, Instance, now_ms};
use crate::sqlite::{SqliteLedger, now_unix};
use crate::sqlite_rows::{Whose, live, release_holds};
use crate::{Instances, LedgerError};

/// Dead instance rows are forgotten after a day (their holds long gone).
const FORGET_INSTANCES_AFTER_MS: i64 = 86_400_000;

/// Registers `instance` (or renews its lease); returns the lease it had.
pub(crate) fn register(
    conn: &Connection,
    instance: &Instance,
    now: i64,
) -> Result<Option<i64>, LedgerError> {
    let previous = conn
        .prepare_cached("SELECT lease_until FROM instances WHERE id = ?1")?
        .query_row(params![instance.id], |r| r.get::<_, i64>(0))
        .optional()?;
    conn.prepare_cached(
        "INSERT INTO instances (id, lease_until, started_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET lease_until = excluded.lease_until",
    )?
    .execute(params![
        instance.id,
        now.saturating_add(instance.lease_ms()),
        now
    ])?;
    Ok(previous)
}

#[async_trait]
impl Instances for SqliteLedger {
    fn instance(&self) -> &Instance {
        self.shared.instance()
    }

    async fn start_instance(&self) -> Result<HoldsReleased, LedgerError> {
        let instance = self.shared.instance().clone();
        let started = std::time::Instant::now();
        let released = self
            .with_conn(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                register(&tx, &instance, now_ms())?;
                let released = release_holds(&tx, &Whose::Owner(&instance.id))?;
                tx.commit()?;
                Ok(released)
            })
            .await?;
        self.shared.lease.renewed(started);
        self.shared.warn_if_id_was_live();
        Ok(released)
    }

    async fn renew_lease(&self) -> Result<(), LedgerError> {
        let instance = self.shared.instance().clone();
        let started = std::time::Instant::now();
        self.with_conn(move |conn| register(conn, &instance, now_ms()).map(|_| ()))
            .await?;
        self.shared.lease.renewed(started);
        Ok(())
    }

    async fn release_expired_holds(&self) -> Result<HoldsReleased, LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            let released = release_holds(&tx, &Whose::Expired { now })?;
            tx.prepare_cached("DELETE FROM instances WHERE lease_until < ?1")?
                .execute(params![now - FORGET_INSTANCES_AFTER_MS])?;
            tx.commit()?;
            Ok(released)
        })
        .await
    }

    fn release_soon(&self, hold: Hold) {
        self.shared.defer(hold);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let ledger = self.clone();
            runtime.spawn(async move { ledger.flush_releases().await });
        }
    }

    async fn flush_releases(&self) -> usize {
        crate::keeper::flush(&self.shared, |hold| async move {
            match hold {
                Hold::Reservation(id) => self.release_reservation_now(id).await,
                Hold::Claim(key) => self.release_claim_now(&key).await,
                Hold::IdempotencyKey(key) => self.idempotency_abandon_now(&key).await,
            }
        })
        .await
    }

    async fn lead_settlement(&self) -> Result<bool, LedgerError> {
        let owner = self.owner();
        self.with_conn(move |conn| {
            // Taken when free or when the holder's lease ran out; kept while
            // the holder's keeper renews its lease.
            let changed = conn
                .prepare_cached(&format!(
                    "INSERT INTO leader_leases (name, holder) VALUES ('settlement', ?1)
                     ON CONFLICT(name) DO UPDATE SET holder = excluded.holder
                     WHERE leader_leases.holder = excluded.holder
                        OR NOT {}",
                    live("leader_leases.holder", "?2")
                ))?
                .execute(params![owner, now_ms()])?;
            Ok(changed == 1)
        })
        .await
    }

    fn channel_events(&self) -> broadcast::Receiver<ChannelEvent> {
        self.shared.events.subscribe()
    }
}

impl SqliteLedger {
    pub(crate) async fn idempotency_begin_in(
        &self,
        key_hash: &str,
        fingerprint: &str,
    ) -> Result<IdempotencyBegin, LedgerError> {
        self.shared.lease.check()?;
        let (key, print, owner) = (key_hash.to_owned(), fingerprint.to_owned(), self.owner());
        self.grouped(false, move |tx| {
            let existing = tx
                .prepare_cached(&format!(
                    "SELECT fingerprint, state, status, headers, body, {} AS live
                     FROM idempotent_responses WHERE key_hash = ?1",
                    live("idempotent_responses.owner", "?2")
                ))?
                .query_row(params![key, now_ms()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<Vec<u8>>>(4)?,
                        r.get::<_, bool>(5)?,
                    ))
                })
                .optional()?;
            let outcome = match existing {
                // Its request died with its instance: nothing to replay.
                Some((_, state, _, _, _, false)) if state != "done" => {
                    tx.prepare_cached(
                        "UPDATE idempotent_responses SET fingerprint = ?2, owner = ?3,
                         created_at = ?4 WHERE key_hash = ?1",
                    )?
                    .execute(params![key, print, owner, now_unix()])?;
                    IdempotencyBegin::Started
                }
                Some((stored, ..)) if stored != print => IdempotencyBegin::Mismatch,
                Some((_, state, ..)) if state != "done" => IdempotencyBegin::InProgress,
                Some((_, _, status, headers, body, _)) => {
                    let headers: Vec<(String, String)> = headers
                        .and_then(|h| serde_json::from_str(&h).ok())
                        .unwrap_or_default();
                    IdempotencyBegin::Done(StoredResponse {
                        status: status.unwrap_or(200) as u16,
                        headers,
                        body: body.unwrap_or_default(),
                    })
                }
                None => {
                    tx.prepare_cached(
                        "INSERT INTO idempotent_responses
                         (key_hash, fingerprint, state, owner, created_at)
                         VALUES (?1, ?2, 'pending', ?3, ?4)",
                    )?
                    .execute(params![key, print, owner, now_unix()])?;
                    IdempotencyBegin::Started
                }
            };
            Ok(outcome)
        })
        .await
    }

    pub(crate) async fn idempotency_finish_in(
        &self,
        key_hash: &str,
        response: &StoredResponse,
    ) -> Result<(), LedgerError> {
        let (key, owner) = (key_hash.to_owned(), self.owner());
        let r = response.clone();
        let headers = serde_json::to_string(&r.headers).unwrap_or_else(|_| "[]".into());
        self.grouped(true, move |conn| {
            conn.prepare_cached(
                "UPDATE idempotent_responses SET state = 'done', status = ?2, headers = ?3,
                 body = ?4 WHERE key_hash = ?1 AND owner = ?5",
            )?
            .execute(params![key, r.status as i64, headers, r.body, owner])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn idempotency_abandon_now(&self, key_hash: &str) -> Result<(), LedgerError> {
        let (key, owner) = (key_hash.to_owned(), self.owner());
        self.grouped(true, move |conn| {
            conn.prepare_cached(
                "DELETE FROM idempotent_responses WHERE key_hash = ?1 AND state = 'pending'
                 AND owner = ?2",
            )?
            .execute(params![key, owner])?;
            Ok(())
        })
        .await
    }
}
