//! [`Instances`] on PostgreSQL — leases on the database clock, releasing
//! holds, the settlement leader's advisory lock — and the
//! `Idempotency-Key` holds of [`ChannelBook`](crate::ChannelBook).

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_postgres::NoTls;

use super::ledger::live;
use super::{PgLedger, SETTLEMENT_LOCK};
use crate::channels::{IdempotencyBegin, StoredResponse};
use crate::instance::{ChannelEvent, Hold, HoldsReleased, Instance};
use crate::sqlite::now_unix;
use crate::{Instances, LedgerError};

/// Dead instance rows are forgotten after a day (their holds long gone).
const FORGET_INSTANCES_AFTER_MS: i64 = 86_400_000;

/// How long the leader's liveness probe may take.
const LEADER_PROBE: Duration = Duration::from_secs(5);

/// A statement releasing the reservations `filter` selects (alias `h`),
/// giving their amounts back to the channels; it returns how many. Holds
/// another statement has locked (a commit, another sweeper) are skipped:
/// exactly one party releases each.
pub(crate) fn release_sql(filter: &str) -> String {
    format!(
        "WITH gone AS (
           DELETE FROM session_reservations WHERE id IN (
             SELECT h.id FROM session_reservations h WHERE {filter} FOR UPDATE SKIP LOCKED)
           RETURNING channel_id, amount),
         sums AS (
           SELECT channel_id, SUM(amount) AS amount, COUNT(*) AS n FROM gone GROUP BY channel_id),
         up AS (
           UPDATE session_channels c SET reserved = c.reserved - sums.amount
           FROM sums WHERE c.channel_id = sums.channel_id RETURNING 1)
         SELECT COALESCE((SELECT SUM(n) FROM sums), 0)::BIGINT"
    )
}

/// Whose holds a release covers.
enum Whose<'a> {
    Owner(&'a str),
    Expired,
}

impl PgLedger {
    /// Registers (or renews) this instance's lease on the database clock.
    pub(crate) async fn register(&self) -> Result<(), LedgerError> {
        let started = std::time::Instant::now();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "WITH previous AS (
                   SELECT lease_until >= tollgate_now_ms() AS live FROM instances WHERE id = $1),
                 up AS (
                   INSERT INTO instances (id, lease_until, started_at)
                   VALUES ($1, tollgate_now_ms() + $2, tollgate_now_ms())
                   ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until)
                 SELECT COALESCE((SELECT live FROM previous), false)",
            )
            .await?;
        let instance = self.shared().instance();
        let was_live: bool = client
            .query_one(&statement, &[&instance.id, &instance.lease_ms()])
            .await?
            .try_get(0)?;
        self.shared().lease.renewed(started);
        if was_live {
            self.shared().id_was_live.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn release(&self, whose: Whose<'_>) -> Result<HoldsReleased, LedgerError> {
        let (filter, owner) = match whose {
            Whose::Owner(id) => ("h.owner = $1".to_owned(), Some(id)),
            Whose::Expired => (format!("NOT {}", live("h.owner")), None),
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match &owner {
            Some(id) => vec![id],
            None => vec![],
        };
        let reservations = tx
            .query_one(&release_sql(&filter), &params)
            .await?
            .try_get::<_, i64>(0)? as u64;
        let claims = tx
            .execute(
                &format!("DELETE FROM payment_claims AS h WHERE h.state = 'pending' AND {filter}"),
                &params,
            )
            .await?;
        let idempotency_keys = tx
            .execute(
                &format!(
                    "DELETE FROM idempotent_responses AS h WHERE h.state = 'pending' AND {filter}"
                ),
                &params,
            )
            .await?;
        tx.commit().await?;
        Ok(HoldsReleased {
            reservations,
            claims,
            idempotency_keys,
        })
    }

    /// Holds the settlement advisory lock on a connection of its own: it
    /// stays ours while that connection lives, and PostgreSQL frees it the
    /// moment the connection dies with its process.
    async fn hold_leader_lock(&self) -> Result<bool, LedgerError> {
        let mut leader = self.inner.leader.lock().await;
        if let Some(client) = leader.as_ref() {
            let probe = tokio::time::timeout(LEADER_PROBE, client.simple_query("SELECT 1")).await;
            if matches!(probe, Ok(Ok(_))) {
                return Ok(true);
            }
            *leader = None;
            tracing::warn!("lost the settlement leader's connection");
        }
        let (client, connection) = self.inner.config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&SETTLEMENT_LOCK])
            .await?
            .try_get(0)?;
        if locked {
            tracing::info!("this instance is the settlement leader");
            *leader = Some(client);
        }
        Ok(locked)
    }

    pub(crate) async fn idempotency_begin_in(
        &self,
        key_hash: &str,
        fingerprint: &str,
    ) -> Result<IdempotencyBegin, LedgerError> {
        self.shared().lease.check()?;
        let client = self.client().await?;
        // A pending key of a dead instance is taken over: its request died
        // and left nothing to replay.
        let begin = client
            .prepare_cached(&format!(
                "INSERT INTO idempotent_responses (key_hash, fingerprint, state, owner, created_at)
                 VALUES ($1, $2, 'pending', $3, $4)
                 ON CONFLICT (key_hash) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                   owner = EXCLUDED.owner, created_at = EXCLUDED.created_at
                 WHERE idempotent_responses.state = 'pending'
                   AND NOT {}",
                live("idempotent_responses.owner")
            ))
            .await?;
        let existing = client
            .prepare_cached(
                "SELECT fingerprint, state, status, headers, body
                 FROM idempotent_responses WHERE key_hash = $1",
            )
            .await?;
        for _ in 0..3 {
            if client
                .execute(
                    &begin,
                    &[&key_hash, &fingerprint, &self.owner(), &now_unix()],
                )
                .await?
                == 1
            {
                return Ok(IdempotencyBegin::Started);
            }
            let Some(row) = client.query_opt(&existing, &[&key_hash]).await? else {
                continue; // abandoned in between: try again
            };
            let stored: String = row.try_get(0)?;
            let state: String = row.try_get(1)?;
            if stored != fingerprint {
                return Ok(IdempotencyBegin::Mismatch);
            }
            if state != "done" {
                return Ok(IdempotencyBegin::InProgress);
            }
            let headers: Vec<(String, String)> = row
                .try_get::<_, Option<String>>(3)?
                .and_then(|h| serde_json::from_str(&h).ok())
                .unwrap_or_default();
            return Ok(IdempotencyBegin::Done(StoredResponse {
                status: row.try_get::<_, Option<i32>>(2)?.unwrap_or(200) as u16,
                headers,
                body: row.try_get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default(),
            }));
        }
        Err(LedgerError::Worker(
            "idempotency key kept changing hands".into(),
        ))
    }

    pub(crate) async fn idempotency_finish_in(
        &self,
        key_hash: &str,
        response: &StoredResponse,
    ) -> Result<(), LedgerError> {
        let headers = serde_json::to_string(&response.headers).unwrap_or_else(|_| "[]".into());
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE idempotent_responses SET state = 'done', status = $2, headers = $3,
                 body = $4 WHERE key_hash = $1 AND owner = $5",
            )
            .await?;
        client
            .execute(
                &statement,
                &[
                    &key_hash,
                    &i32::from(response.status),
                    &headers,
                    &response.body,
                    &self.owner(),
                ],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn idempotency_abandon_now(&self, key_hash: &str) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "DELETE FROM idempotent_responses WHERE key_hash = $1 AND state = 'pending'
                 AND owner = $2",
            )
            .await?;
        client
            .execute(&statement, &[&key_hash, &self.owner()])
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Instances for PgLedger {
    fn instance(&self) -> &Instance {
        self.shared().instance()
    }

    async fn start_instance(&self) -> Result<HoldsReleased, LedgerError> {
        self.register().await?;
        let released = self.release(Whose::Owner(self.owner())).await?;
        self.shared().warn_if_id_was_live();
        Ok(released)
    }

    async fn renew_lease(&self) -> Result<(), LedgerError> {
        self.register().await
    }

    async fn release_expired_holds(&self) -> Result<HoldsReleased, LedgerError> {
        let released = self.release(Whose::Expired).await?;
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM instances WHERE lease_until < tollgate_now_ms() - $1",
                &[&FORGET_INSTANCES_AFTER_MS],
            )
            .await?;
        Ok(released)
    }

    fn release_soon(&self, hold: Hold) {
        self.shared().defer(hold);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let ledger = self.clone();
            runtime.spawn(async move { ledger.flush_releases().await });
        }
    }

    async fn flush_releases(&self) -> usize {
        crate::keeper::flush(self.shared(), |hold| async move {
            match hold {
                Hold::Reservation(id) => self.release_reservation_now(id).await,
                Hold::Claim(key) => self.release_claim_now(&key).await,
                Hold::IdempotencyKey(key) => self.idempotency_abandon_now(&key).await,
            }
        })
        .await
    }

    async fn lead_settlement(&self) -> Result<bool, LedgerError> {
        self.hold_leader_lock().await
    }

    fn channel_events(&self) -> broadcast::Receiver<ChannelEvent> {
        self.shared().events.subscribe()
    }
}
