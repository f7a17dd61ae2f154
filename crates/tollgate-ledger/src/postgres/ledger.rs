//! [`Ledger`] on PostgreSQL: claims, charges, usage and the SDK's store.

use async_trait::async_trait;

use super::{PgLedger, amount, num};
use crate::instance::Hold;
use crate::sqlite::now_unix;
use crate::{
    ChargeRecord, ClaimOutcome, Ledger, LedgerError, RevenueQuery, RevenueRow, UsageRecord,
};

/// True when the owner column `owner` is an instance whose lease still runs.
pub(crate) fn live(owner: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM instances i WHERE i.id = {owner} AND i.lease_until >= tollgate_now_ms())"
    )
}

const SETTLE_CLAIMS: &str =
    "INSERT INTO payment_claims (claim_key, state, owner, created_at, updated_at)
     SELECT k, 'settled', $2, $3, $3 FROM unnest($1::text[]) AS k
     ON CONFLICT (claim_key) DO UPDATE SET state = 'settled', updated_at = EXCLUDED.updated_at";

#[async_trait]
impl Ledger for PgLedger {
    async fn claim(&self, key: &str) -> Result<ClaimOutcome, LedgerError> {
        self.shared().lease.check()?;
        let client = self.client().await?;
        // A pending claim of a dead instance is taken over (see SQLite).
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO payment_claims (claim_key, state, owner, created_at, updated_at)
                 VALUES ($1, 'pending', $2, $3, $3)
                 ON CONFLICT (claim_key) DO UPDATE SET owner = EXCLUDED.owner,
                   created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at
                 WHERE payment_claims.state = 'pending' AND NOT {}",
                live("payment_claims.owner")
            ))
            .await?;
        let claimed = client
            .execute(&statement, &[&key, &self.owner(), &now_unix()])
            .await?;
        Ok(if claimed == 1 {
            ClaimOutcome::Claimed
        } else {
            ClaimOutcome::AlreadyClaimed
        })
    }

    async fn settle_claims(&self, keys: &[&str]) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(SETTLE_CLAIMS).await?;
        client
            .execute(&statement, &[&keys, &self.owner(), &now_unix()])
            .await?;
        Ok(())
    }

    async fn release_claim(&self, key: &str) -> Result<(), LedgerError> {
        let result = self.release_claim_now(key).await;
        if let Err(e) = &result
            && e.is_unavailable()
        {
            self.shared().defer(Hold::Claim(key.to_owned()));
        }
        result
    }

    async fn record_charge(
        &self,
        record: &ChargeRecord,
        claim_keys: &[&str],
    ) -> Result<(), LedgerError> {
        let client = self.client().await?;
        // One statement: the charge and its claims commit together or not at
        // all (a duplicate charge fails the whole statement).
        let statement = client
            .prepare_cached(
                "WITH charge AS (
                   INSERT INTO charge_payments
                   (challenge_id, route, amount, currency, reference, settled_at)
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING 1)
                 INSERT INTO payment_claims (claim_key, state, owner, created_at, updated_at)
                 SELECT k, 'settled', $8, $6, $6 FROM unnest($7::text[]) AS k, charge
                 ON CONFLICT (claim_key) DO UPDATE SET state = 'settled',
                   updated_at = EXCLUDED.updated_at",
            )
            .await?;
        client
            .execute(
                &statement,
                &[
                    &record.challenge_id,
                    &record.route,
                    &record.amount,
                    &record.currency,
                    &record.reference,
                    &record.settled_at,
                    &claim_keys,
                    &self.owner(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn recent_charges(&self, limit: u32) -> Result<Vec<ChargeRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT challenge_id, route, amount, currency, reference, settled_at
                 FROM charge_payments ORDER BY settled_at DESC, seq DESC LIMIT $1",
            )
            .await?;
        let rows = client.query(&statement, &[&i64::from(limit)]).await?;
        rows.iter()
            .map(|r| {
                Ok(ChargeRecord {
                    challenge_id: r.try_get(0)?,
                    route: r.try_get(1)?,
                    amount: r.try_get(2)?,
                    currency: r.try_get(3)?,
                    reference: r.try_get(4)?,
                    settled_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn record_usage(&self, record: &UsageRecord) -> Result<(), LedgerError> {
        let r = record;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO usage_records (challenge_id, route, model, quoted, input_tokens,
                 cached_tokens, output_tokens, actual_cost, usage_reported, recorded_at)
                 VALUES ($1, $2, $3, $4::text::numeric, $5, $6, $7, $8::text::numeric, $9, $10)",
            )
            .await?;
        client
            .execute(
                &statement,
                &[
                    &r.challenge_id,
                    &r.route,
                    &r.model,
                    &num(r.quoted),
                    &i64::try_from(r.input_tokens).unwrap_or(i64::MAX),
                    &i64::try_from(r.cached_tokens).unwrap_or(i64::MAX),
                    &i64::try_from(r.output_tokens).unwrap_or(i64::MAX),
                    &num(r.actual_cost),
                    &r.usage_reported,
                    &r.recorded_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn usage_for(&self, challenge_id: &str) -> Result<Vec<UsageRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT challenge_id, route, model, quoted::text, input_tokens, cached_tokens,
                 output_tokens, actual_cost::text, usage_reported, recorded_at
                 FROM usage_records WHERE challenge_id = $1 ORDER BY id",
            )
            .await?;
        let rows = client.query(&statement, &[&challenge_id]).await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRecord {
                    challenge_id: r.try_get(0)?,
                    route: r.try_get(1)?,
                    model: r.try_get(2)?,
                    quoted: amount(r, 3)?,
                    input_tokens: r.try_get::<_, i64>(4)? as u64,
                    cached_tokens: r.try_get::<_, i64>(5)? as u64,
                    output_tokens: r.try_get::<_, i64>(6)? as u64,
                    actual_cost: amount(r, 7)?,
                    usage_reported: r.try_get(8)?,
                    recorded_at: r.try_get(9)?,
                })
            })
            .collect()
    }

    async fn revenue(&self, query: RevenueQuery) -> Result<Vec<RevenueRow>, LedgerError> {
        super::report::revenue(self, query).await
    }

    async fn kv_get(&self, key: &str) -> Result<Option<String>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT v FROM protocol_kv WHERE k = $1")
            .await?;
        Ok(client
            .query_opt(&statement, &[&key])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    async fn kv_put(&self, key: &str, value: &str) -> Result<(), LedgerError> {
        self.kv_execute(
            "INSERT INTO protocol_kv (k, v) VALUES ($1, $2)
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            key,
            Some(value),
        )
        .await
        .map(|_| ())
    }

    async fn kv_delete(&self, key: &str) -> Result<(), LedgerError> {
        self.kv_execute("DELETE FROM protocol_kv WHERE k = $1", key, None)
            .await
            .map(|_| ())
    }

    async fn kv_put_if_absent(&self, key: &str, value: &str) -> Result<bool, LedgerError> {
        Ok(self
            .kv_execute(
                "INSERT INTO protocol_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING",
                key,
                Some(value),
            )
            .await?
            == 1)
    }

    async fn kv_compare_exchange(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, LedgerError> {
        // Each case is one conditional statement.
        let client = self.client().await?;
        let changed = match (expected, new) {
            (None, None) => {
                let statement = client
                    .prepare_cached("SELECT 1 FROM protocol_kv WHERE k = $1")
                    .await?;
                return Ok(client.query_opt(&statement, &[&key]).await?.is_none());
            }
            (None, Some(new)) => {
                let statement = client
                    .prepare_cached(
                        "INSERT INTO protocol_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING",
                    )
                    .await?;
                client.execute(&statement, &[&key, &new]).await?
            }
            (Some(expected), Some(new)) => {
                let statement = client
                    .prepare_cached("UPDATE protocol_kv SET v = $3 WHERE k = $1 AND v = $2")
                    .await?;
                client.execute(&statement, &[&key, &expected, &new]).await?
            }
            (Some(expected), None) => {
                let statement = client
                    .prepare_cached("DELETE FROM protocol_kv WHERE k = $1 AND v = $2")
                    .await?;
                client.execute(&statement, &[&key, &expected]).await?
            }
        };
        Ok(changed == 1)
    }
}

impl PgLedger {
    async fn kv_execute(
        &self,
        sql: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<u64, LedgerError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(match value {
            Some(value) => client.execute(&statement, &[&key, &value]).await?,
            None => client.execute(&statement, &[&key]).await?,
        })
    }

    pub(crate) async fn release_claim_now(&self, key: &str) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "DELETE FROM payment_claims WHERE claim_key = $1 AND state = 'pending'
                 AND owner = $2",
            )
            .await?;
        client.execute(&statement, &[&key, &self.owner()]).await?;
        Ok(())
    }
}
