//! [`ChannelBook`] on SQLite. Each method is one `IMMEDIATE` transaction
//! (or a job in the writer's open one), which takes the database's write
//! lock: every channel update is serialized, across processes sharing the
//! file too. Session holds live in memory beside the write connection
//! (`sqlite_hot`) and reach SQL with each group.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::channels::{
    ChannelBook, ChannelRecord, IdempotencyBegin, InFlight, OnChainFacts, ReserveOutcome,
    StoredResponse, StoredVoucher, VoucherOutcome, VoucherRefusal,
};
use crate::instance::{ChannelEvent, Hold};
use crate::sqlite::{SqliteLedger, now_unix};
use crate::sqlite_rows::{
    channel_columns, from_db, insert_voucher, load, read_channel, to_db, unavailable,
};
use crate::{Instances, LedgerError};

/// The one voucher `sql` selects for (channel, amount).
fn one_voucher(
    conn: &Connection,
    sql: &str,
    channel_id: &str,
    amount: u128,
) -> Result<Option<StoredVoucher>, LedgerError> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![channel_id, to_db(amount)], |r| {
            Ok(StoredVoucher {
                cumulative: from_db(r.get(0)?),
                signature: r.get(1)?,
            })
        })
        .optional()?)
}

#[async_trait]
impl ChannelBook for SqliteLedger {
    async fn open_channel(
        &self,
        channel: &ChannelRecord,
        initial: Option<&StoredVoucher>,
    ) -> Result<ChannelRecord, LedgerError> {
        let c = channel.clone();
        let initial = initial.cloned();
        let accepted_before = self.channel(&c.channel_id).await?.map_or(0, |c| c.accepted);
        let stored = self
            .with_conn(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = now_unix();
                tx.prepare_cached(
                    "INSERT INTO session_channels (channel_id, protocol, escrow, chain_id, payer,
                 payee, token, authorized_signer, descriptor, deposit, settled,
                 close_requested_at, status, opened_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'open', ?13, ?13)
                 ON CONFLICT(channel_id) DO UPDATE SET
                   deposit = MAX(deposit, excluded.deposit),
                   settled = MAX(settled, excluded.settled),
                   updated_at = excluded.updated_at",
                )?
                .execute(params![
                    c.channel_id,
                    c.protocol,
                    c.escrow,
                    c.chain_id as i64,
                    c.payer,
                    c.payee,
                    c.token,
                    c.authorized_signer,
                    c.descriptor,
                    to_db(c.deposit),
                    to_db(c.settled),
                    c.close_requested_at as i64,
                    now
                ])?;
                if let Some(voucher) = initial {
                    let current = load(&tx, &c.channel_id)?
                        .ok_or(LedgerError::Worker("channel vanished".into()))?;
                    if voucher.cumulative > current.accepted
                        && voucher.cumulative <= current.deposit
                    {
                        insert_voucher(&tx, &c.channel_id, &voucher, now)?;
                        tx.prepare_cached(
                            "UPDATE session_channels SET accepted = ?2 WHERE channel_id = ?1",
                        )?
                        .execute(params![c.channel_id, to_db(voucher.cumulative)])?;
                    }
                }
                let stored = load(&tx, &c.channel_id)?
                    .ok_or(LedgerError::Worker("channel vanished".into()))?;
                tx.commit()?;
                Ok(stored)
            })
            .await?;
        if stored.accepted > accepted_before {
            self.shared
                .announce(ChannelEvent::VoucherAccepted(stored.channel_id.clone()));
        }
        Ok(stored)
    }

    async fn channel(&self, channel_id: &str) -> Result<Option<ChannelRecord>, LedgerError> {
        let id = channel_id.to_owned();
        self.read(move |conn| load(conn, &id)).await
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, LedgerError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                channel_columns!(),
                " FROM session_channels ORDER BY opened_at DESC, rowid DESC"
            ))?;
            let rows = stmt.query_map([], read_channel)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn accept_voucher(
        &self,
        channel_id: &str,
        voucher: &StoredVoucher,
        min_delta: u128,
    ) -> Result<VoucherOutcome, LedgerError> {
        let id = channel_id.to_owned();
        let voucher = voucher.clone();
        let outcome = self
            .grouped(true, move |tx| {
                let Some(channel) = load(tx, &id)? else {
                    return Ok(VoucherOutcome::Refused(VoucherRefusal::NotFound));
                };
                if let Some(refusal) = unavailable(&channel) {
                    return Ok(VoucherOutcome::Refused(refusal));
                }
                let accepted = channel.accepted;
                if voucher.cumulative == accepted {
                    return Ok(VoucherOutcome::Unchanged(channel));
                }
                if voucher.cumulative < accepted {
                    return Ok(VoucherOutcome::Refused(VoucherRefusal::Decreasing {
                        accepted,
                    }));
                }
                if voucher.cumulative - accepted < min_delta {
                    return Ok(VoucherOutcome::Refused(VoucherRefusal::DeltaTooSmall {
                        accepted,
                    }));
                }
                if voucher.cumulative > channel.deposit {
                    return Ok(VoucherOutcome::Refused(VoucherRefusal::ExceedsDeposit {
                        deposit: channel.deposit,
                    }));
                }
                let now = now_unix();
                insert_voucher(tx, &id, &voucher, now)?;
                let updated = tx
                    .prepare_cached(concat!(
                        "UPDATE session_channels SET accepted = ?2, updated_at = ?3
                         WHERE channel_id = ?1 RETURNING ",
                        channel_columns!()
                    ))?
                    .query_row(params![id, to_db(voucher.cumulative), now], read_channel)?;
                Ok(VoucherOutcome::Accepted(updated))
            })
            .await;
        if let Ok(VoucherOutcome::Accepted(channel)) = &outcome {
            self.shared
                .announce(ChannelEvent::VoucherAccepted(channel.channel_id.clone()));
        }
        outcome
    }

    async fn store_voucher(
        &self,
        channel_id: &str,
        voucher: &StoredVoucher,
    ) -> Result<(), LedgerError> {
        let id = channel_id.to_owned();
        let voucher = voucher.clone();
        self.grouped(true, move |tx| {
            if load(tx, &id)?.is_some_and(|c| voucher.cumulative <= c.deposit) {
                insert_voucher(tx, &id, &voucher, now_unix())?;
            }
            Ok(())
        })
        .await
    }

    async fn voucher_covering(
        &self,
        channel_id: &str,
        at_least: u128,
    ) -> Result<Option<StoredVoucher>, LedgerError> {
        let id = channel_id.to_owned();
        self.with_conn(move |conn| {
            one_voucher(
                conn,
                "SELECT cumulative, signature FROM session_vouchers
                 WHERE channel_id = ?1 AND cumulative >= ?2 ORDER BY cumulative LIMIT 1",
                &id,
                at_least,
            )
        })
        .await
    }

    async fn voucher_within(
        &self,
        channel_id: &str,
        at_most: u128,
    ) -> Result<Option<StoredVoucher>, LedgerError> {
        let id = channel_id.to_owned();
        self.with_conn(move |conn| {
            one_voucher(
                conn,
                "SELECT cumulative, signature FROM session_vouchers
                 WHERE channel_id = ?1 AND cumulative <= ?2 ORDER BY cumulative DESC LIMIT 1",
                &id,
                at_most,
            )
        })
        .await
    }

    async fn refresh_channel(
        &self,
        channel_id: &str,
        facts: OnChainFacts,
    ) -> Result<Option<ChannelRecord>, LedgerError> {
        let id = channel_id.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The deposit only grows on chain; `accepted <= deposit` holds.
            tx.prepare_cached(
                "UPDATE session_channels SET
                   deposit = MAX(deposit, ?2),
                   settled = MAX(settled, ?3),
                   close_requested_at = ?4,
                   status = CASE WHEN ?5 THEN 'finalized' ELSE status END,
                   updated_at = ?6
                 WHERE channel_id = ?1",
            )?
            .execute(params![
                id,
                to_db(facts.deposit),
                to_db(facts.settled),
                facts.close_requested_at as i64,
                facts.finalized,
                now_unix()
            ])?;
            let channel = load(&tx, &id)?;
            tx.commit()?;
            Ok(channel)
        })
        .await
    }

    async fn reserve(&self, channel_id: &str, amount: u128) -> Result<ReserveOutcome, LedgerError> {
        self.shared.lease.check()?;
        let id = channel_id.to_owned();
        self.hot(false, move |hot, conn| {
            hot.reserve(conn, &id, amount).map(Ok)
        })
        .await
    }

    async fn grow_reservation(
        &self,
        reservation_id: i64,
        extra: u128,
    ) -> Result<ReserveOutcome, LedgerError> {
        self.shared.lease.check()?;
        self.hot(false, move |hot, conn| {
            hot.grow(conn, reservation_id, extra).map(Ok)
        })
        .await
    }

    async fn commit(
        &self,
        reservation_id: i64,
        cost: u128,
        units: u64,
    ) -> Result<ChannelRecord, LedgerError> {
        let committed = self
            .hot(true, move |hot, conn| {
                hot.commit(conn, reservation_id, cost, units)
            })
            .await;
        if let Err(e) = &committed
            && e.is_unavailable()
        {
            // Not charged, and the response is withheld: give the hold back.
            self.release_soon(Hold::Reservation(reservation_id));
        }
        committed
    }

    async fn checkpoint_reservation(
        &self,
        reservation_id: i64,
        charged: u128,
    ) -> Result<Option<u128>, LedgerError> {
        self.hot(true, move |hot, conn| {
            hot.checkpoint(conn, reservation_id, charged).map(Ok)
        })
        .await
    }

    async fn release_reservation(&self, reservation_id: i64) -> Result<(), LedgerError> {
        let result = self.release_reservation_now(reservation_id).await;
        if let Err(e) = &result
            && e.is_unavailable()
        {
            self.shared.defer(Hold::Reservation(reservation_id));
        }
        result
    }

    async fn mark_closing(&self, channel_id: &str) -> Result<Option<ChannelRecord>, LedgerError> {
        let id = channel_id.to_owned();
        self.grouped(true, move |tx| {
            tx.prepare_cached(
                "UPDATE session_channels SET status = 'closing', updated_at = ?2
                 WHERE channel_id = ?1 AND status = 'open'",
            )?
            .execute(params![id, now_unix()])?;
            let channel = load(tx, &id)?;
            Ok(channel)
        })
        .await
    }

    async fn begin_settlement(
        &self,
        channel_id: &str,
        in_flight: &InFlight,
    ) -> Result<(), LedgerError> {
        let id = channel_id.to_owned();
        let f = in_flight.clone();
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "UPDATE session_channels SET inflight_kind = ?2, inflight_tx = ?3,
                 inflight_amount = ?4, inflight_since = ?5 WHERE channel_id = ?1",
            )?
            .execute(params![id, f.kind, f.tx_hash, to_db(f.amount), f.since])?;
            Ok(())
        })
        .await
    }

    async fn finish_settlement(
        &self,
        channel_id: &str,
        settled: u128,
        finalized: bool,
    ) -> Result<Option<ChannelRecord>, LedgerError> {
        let id = channel_id.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_unix();
            tx.prepare_cached(
                "UPDATE session_channels SET settled = MAX(settled, ?2),
                   status = CASE WHEN ?3 THEN 'finalized' ELSE status END,
                   inflight_kind = NULL, inflight_tx = NULL, inflight_amount = NULL,
                   inflight_since = NULL, last_settled_at = ?4, updated_at = ?4
                 WHERE channel_id = ?1",
            )?
            .execute(params![id, to_db(settled), finalized, now])?;
            // Vouchers below what is settled can never be used again.
            tx.prepare_cached(
                "DELETE FROM session_vouchers WHERE channel_id = ?1 AND cumulative < ?2
                 AND cumulative < (SELECT accepted FROM session_channels WHERE channel_id = ?1)",
            )?
            .execute(params![id, to_db(settled)])?;
            let channel = load(&tx, &id)?;
            tx.commit()?;
            Ok(channel)
        })
        .await
    }

    async fn abandon_settlement(&self, channel_id: &str) -> Result<(), LedgerError> {
        let id = channel_id.to_owned();
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "UPDATE session_channels SET inflight_kind = NULL, inflight_tx = NULL,
                 inflight_amount = NULL, inflight_since = NULL WHERE channel_id = ?1",
            )?
            .execute(params![id])?;
            Ok(())
        })
        .await
    }

    async fn idempotency_begin(
        &self,
        key_hash: &str,
        fingerprint: &str,
    ) -> Result<IdempotencyBegin, LedgerError> {
        self.idempotency_begin_in(key_hash, fingerprint).await
    }

    async fn idempotency_finish(
        &self,
        key_hash: &str,
        response: &StoredResponse,
    ) -> Result<(), LedgerError> {
        self.idempotency_finish_in(key_hash, response).await
    }

    async fn idempotency_abandon(&self, key_hash: &str) -> Result<(), LedgerError> {
        let result = self.idempotency_abandon_now(key_hash).await;
        if let Err(e) = &result
            && e.is_unavailable()
        {
            self.shared.defer(Hold::IdempotencyKey(key_hash.to_owned()));
        }
        result
    }
}

impl SqliteLedger {
    /// Releases what a reservation still holds; what it checkpointed stays
    /// charged.
    pub(crate) async fn release_reservation_now(
        &self,
        reservation_id: i64,
    ) -> Result<(), LedgerError> {
        // A hold needs no sync: holds are released at restart anyway.
        self.hot(false, move |hot, conn| {
            hot.release(conn, reservation_id).map(Ok)
        })
        .await
    }
}
