//! [`RefundBook`] on PostgreSQL: every transition is one conditional
//! statement (`WHERE state = …`), so two instances never move one refund
//! twice.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgLedger, amount, num};
use crate::LedgerError;
use crate::refunds::{RefundBook, RefundRecord, RefundState};
use crate::sqlite::now_unix;

const COLUMNS: &str = "challenge_id, route, charge_reference, payer, amount::text, currency,
    reason, state, tx_hash, signed_tx, created_at, updated_at";

fn read(row: &Row) -> Result<RefundRecord, LedgerError> {
    Ok(RefundRecord {
        challenge_id: row.try_get(0)?,
        route: row.try_get(1)?,
        charge_reference: row.try_get(2)?,
        payer: row.try_get(3)?,
        amount: amount(row, 4)?,
        currency: row.try_get(5)?,
        reason: row.try_get(6)?,
        state: RefundState::parse(&row.try_get::<_, String>(7)?),
        tx_hash: row.try_get(8)?,
        signed_tx: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
    })
}

impl PgLedger {
    async fn refund_execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, LedgerError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.execute(&statement, params).await?)
    }

    async fn refunds_where(
        &self,
        tail: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<RefundRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {COLUMNS} FROM refunds {tail}"))
            .await?;
        client
            .query(&statement, params)
            .await?
            .iter()
            .map(read)
            .collect()
    }
}

#[async_trait]
impl RefundBook for PgLedger {
    async fn record_refund(&self, refund: &RefundRecord) -> Result<bool, LedgerError> {
        let r = refund;
        let inserted = self
            .refund_execute(
                "INSERT INTO refunds (challenge_id, route, charge_reference, payer, amount,
                 currency, reason, state, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5::text::numeric, $6, $7, 'owed', $8, $8)
                 ON CONFLICT (challenge_id) DO NOTHING",
                &[
                    &r.challenge_id,
                    &r.route,
                    &r.charge_reference,
                    &r.payer,
                    &num(r.amount),
                    &r.currency,
                    &r.reason,
                    &now_unix(),
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn set_refund_payer(&self, challenge_id: &str, payer: &str) -> Result<(), LedgerError> {
        self.refund_execute(
            "UPDATE refunds SET payer = $2, updated_at = $3
             WHERE challenge_id = $1 AND payer IS NULL",
            &[&challenge_id, &payer, &now_unix()],
        )
        .await
        .map(|_| ())
    }

    async fn refund_signed(
        &self,
        challenge_id: &str,
        tx_hash: &str,
        signed_tx: &str,
    ) -> Result<bool, LedgerError> {
        let moved = self
            .refund_execute(
                "UPDATE refunds SET state = 'sent', tx_hash = $2, signed_tx = $3,
                 updated_at = $4 WHERE challenge_id = $1 AND state = 'owed'",
                &[&challenge_id, &tx_hash, &signed_tx, &now_unix()],
            )
            .await?;
        Ok(moved == 1)
    }

    async fn refund_confirmed(&self, challenge_id: &str) -> Result<(), LedgerError> {
        self.refund_execute(
            "UPDATE refunds SET state = 'refunded', signed_tx = NULL, updated_at = $2
             WHERE challenge_id = $1 AND state = 'sent'",
            &[&challenge_id, &now_unix()],
        )
        .await
        .map(|_| ())
    }

    async fn refund_reverted(&self, challenge_id: &str) -> Result<(), LedgerError> {
        self.refund_execute(
            "UPDATE refunds SET state = 'owed', tx_hash = NULL, signed_tx = NULL,
             updated_at = $2 WHERE challenge_id = $1 AND state = 'sent'",
            &[&challenge_id, &now_unix()],
        )
        .await
        .map(|_| ())
    }

    async fn refund(&self, challenge_id: &str) -> Result<Option<RefundRecord>, LedgerError> {
        Ok(self
            .refunds_where("WHERE challenge_id = $1", &[&challenge_id])
            .await?
            .into_iter()
            .next())
    }

    async fn open_refunds(&self) -> Result<Vec<RefundRecord>, LedgerError> {
        self.refunds_where("WHERE state <> 'refunded' ORDER BY created_at, seq", &[])
            .await
    }

    async fn recent_refunds(&self, limit: u32) -> Result<Vec<RefundRecord>, LedgerError> {
        self.refunds_where(
            "ORDER BY created_at DESC, seq DESC LIMIT $1",
            &[&i64::from(limit)],
        )
        .await
    }
}
