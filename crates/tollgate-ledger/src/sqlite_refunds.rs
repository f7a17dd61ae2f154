//! [`RefundBook`] on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use crate::LedgerError;
use crate::refunds::{RefundBook, RefundRecord, RefundState};
use crate::sqlite::{SqliteLedger, now_unix};

const COLUMNS: &str = "challenge_id, route, charge_reference, payer, amount, currency, reason,
    state, tx_hash, signed_tx, created_at, updated_at";

fn read(row: &Row<'_>) -> rusqlite::Result<RefundRecord> {
    let amount: String = row.get(4)?;
    Ok(RefundRecord {
        challenge_id: row.get(0)?,
        route: row.get(1)?,
        charge_reference: row.get(2)?,
        payer: row.get(3)?,
        amount: amount.parse().map_err(|_| {
            rusqlite::Error::InvalidColumnType(4, "amount".into(), rusqlite::types::Type::Text)
        })?,
        currency: row.get(5)?,
        reason: row.get(6)?,
        state: RefundState::parse(&row.get::<_, String>(7)?),
        tx_hash: row.get(8)?,
        signed_tx: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

#[async_trait]
impl RefundBook for SqliteLedger {
    async fn record_refund(&self, refund: &RefundRecord) -> Result<bool, LedgerError> {
        let r = refund.clone();
        self.with_conn(move |conn| {
            let now = now_unix();
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO refunds (challenge_id, route, charge_reference, payer, amount,
                     currency, reason, state, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'owed', ?8, ?8)
                     ON CONFLICT(challenge_id) DO NOTHING",
                )?
                .execute(params![
                    r.challenge_id,
                    r.route,
                    r.charge_reference,
                    r.payer,
                    r.amount.to_string(),
                    r.currency,
                    r.reason,
                    now
                ])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn set_refund_payer(&self, challenge_id: &str, payer: &str) -> Result<(), LedgerError> {
        let (id, payer) = (challenge_id.to_owned(), payer.to_owned());
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "UPDATE refunds SET payer = ?2, updated_at = ?3
                 WHERE challenge_id = ?1 AND payer IS NULL",
            )?
            .execute(params![id, payer, now_unix()])?;
            Ok(())
        })
        .await
    }

    async fn refund_signed(
        &self,
        challenge_id: &str,
        tx_hash: &str,
        signed_tx: &str,
    ) -> Result<bool, LedgerError> {
        let (id, hash, signed) = (
            challenge_id.to_owned(),
            tx_hash.to_owned(),
            signed_tx.to_owned(),
        );
        self.with_conn(move |conn| {
            let moved = conn
                .prepare_cached(
                    "UPDATE refunds SET state = 'sent', tx_hash = ?2, signed_tx = ?3,
                     updated_at = ?4 WHERE challenge_id = ?1 AND state = 'owed'",
                )?
                .execute(params![id, hash, signed, now_unix()])?;
            Ok(moved == 1)
        })
        .await
    }

    async fn refund_confirmed(&self, challenge_id: &str) -> Result<(), LedgerError> {
        let id = challenge_id.to_owned();
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "UPDATE refunds SET state = 'refunded', signed_tx = NULL, updated_at = ?2
                 WHERE challenge_id = ?1 AND state = 'sent'",
            )?
            .execute(params![id, now_unix()])?;
            Ok(())
        })
        .await
    }

    async fn refund_reverted(&self, challenge_id: &str) -> Result<(), LedgerError> {
        let id = challenge_id.to_owned();
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "UPDATE refunds SET state = 'owed', tx_hash = NULL, signed_tx = NULL,
                 updated_at = ?2 WHERE challenge_id = ?1 AND state = 'sent'",
            )?
            .execute(params![id, now_unix()])?;
            Ok(())
        })
        .await
    }

    async fn refund(&self, challenge_id: &str) -> Result<Option<RefundRecord>, LedgerError> {
        let id = challenge_id.to_owned();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM refunds WHERE challenge_id = ?1"
                ))?
                .query_row(params![id], read)
                .optional()?)
        })
        .await
    }

    async fn open_refunds(&self) -> Result<Vec<RefundRecord>, LedgerError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM refunds WHERE state != 'refunded'
                 ORDER BY created_at, rowid"
            ))?;
            let rows = stmt.query_map([], read)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn recent_refunds(&self, limit: u32) -> Result<Vec<RefundRecord>, LedgerError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM refunds ORDER BY created_at DESC, rowid DESC LIMIT ?1"
            ))?;
            let rows = stmt.query_map(params![limit], read)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}
