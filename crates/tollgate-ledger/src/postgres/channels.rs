//! [`ChannelBook`] on PostgreSQL. Every money movement is one statement
//! whose `WHERE` is the rule it must keep (`accepted - spent - reserved >=
//! amount`): under READ COMMITTED a concurrent update of the same row
//! makes PostgreSQL wait for its lock and re-check the condition on the new
//! version, so no interleaving breaks `spent + reserved ≤ accepted ≤ deposit`
//! (the table's CHECKs say so too). When a statement changes nothing, the
//! row is read to say why.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgLedger, VOUCHER_EVENTS, amount, num, optional_amount};
use crate::channels::{
    ChannelBook, ChannelRecord, ChannelStatus, IdempotencyBegin, InFlight, OnChainFacts,
    ReserveOutcome, StoredResponse, StoredVoucher, VoucherOutcome, VoucherRefusal,
};
use crate::instance::Hold;
use crate::sqlite::now_unix;
use crate::{Instances, LedgerError};

/// The channel columns, amounts as exact text.
const COLUMNS: &str = "channel_id, protocol, escrow, chain_id, payer, payee, token,
    authorized_signer, descriptor, deposit::text, accepted::text, spent::text, reserved::text,
    settled::text, units, close_requested_at, status, opened_at, updated_at, last_settled_at,
    inflight_kind, inflight_tx, inflight_amount::text, inflight_since";

/// A channel that can serve: open and no close requested on chain.
const SERVING: &str = "status = 'open' AND close_requested_at = 0";

/// How often a statement whose outcome the re-read could not explain (the
/// row moved in between, e.g. a top-up) is retried.
const RETRIES: usize = 3;

fn read_channel(row: &Row) -> Result<ChannelRecord, LedgerError> {
    read_channel_at(row, 0)
}

/// Reads [`COLUMNS`] starting at column `at`.
fn read_channel_at(row: &Row, at: usize) -> Result<ChannelRecord, LedgerError> {
    let inflight = match row.try_get::<_, Option<String>>(at + 20)? {
        Some(kind) => Some(InFlight {
            kind,
            tx_hash: row
                .try_get::<_, Option<String>>(at + 21)?
                .unwrap_or_default(),
            amount: optional_amount(row, at + 22)?.unwrap_or(0),
            since: row.try_get::<_, Option<i64>>(at + 23)?.unwrap_or(0),
        }),
        None => None,
    };
    Ok(ChannelRecord {
        channel_id: row.try_get(at)?,
        protocol: row.try_get(at + 1)?,
        escrow: row.try_get(at + 2)?,
        chain_id: row.try_get::<_, i64>(at + 3)? as u64,
        payer: row.try_get(at + 4)?,
        payee: row.try_get(at + 5)?,
        token: row.try_get(at + 6)?,
        authorized_signer: row.try_get(at + 7)?,
        descriptor: row.try_get(at + 8)?,
        deposit: amount(row, at + 9)?,
        accepted: amount(row, at + 10)?,
        spent: amount(row, at + 11)?,
        reserved: amount(row, at + 12)?,
        settled: amount(row, at + 13)?,
        units: row.try_get::<_, i64>(at + 14)? as u64,
        close_requested_at: row.try_get::<_, i64>(at + 15)? as u64,
        status: ChannelStatus::parse(&row.try_get::<_, String>(at + 16)?),
        opened_at: row.try_get(at + 17)?,
        updated_at: row.try_get(at + 18)?,
        last_settled_at: row.try_get(at + 19)?,
        inflight,
    })
}

fn unavailable(channel: &ChannelRecord) -> Option<VoucherRefusal> {
    match channel.status {
        ChannelStatus::Finalized => Some(VoucherRefusal::Finalized),
        ChannelStatus::Closing => Some(VoucherRefusal::Closing),
        ChannelStatus::Open if channel.close_requested_at != 0 => Some(VoucherRefusal::Closing),
        ChannelStatus::Open => None,
    }
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PgLedger {
    async fn load(&self, channel_id: &str) -> Result<Option<ChannelRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM session_channels WHERE channel_id = $1"
            ))
            .await?;
        client
            .query_opt(&statement, &[&channel_id])
            .await?
            .as_ref()
            .map(read_channel)
            .transpose()
    }

    /// Raises `accepted` to `voucher` when it is a new highest within the
    /// deposit (and at least `min_delta` above), storing it and notifying
    /// every instance. `None` when the conditions did not hold.
    async fn raise_accepted(
        &self,
        channel_id: &str,
        voucher: &StoredVoucher,
        min_delta: u128,
        serving_only: bool,
    ) -> Result<Option<ChannelRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH up AS (
                   UPDATE session_channels SET accepted = $2::text::numeric, updated_at = $5
                   WHERE channel_id = $1 AND ({SERVING} OR NOT $6)
                     AND accepted < $2::text::numeric
                     AND $2::text::numeric - accepted >= $3::text::numeric
                     AND $2::text::numeric <= deposit
                   RETURNING *),
                 stored AS (
                   INSERT INTO session_vouchers (channel_id, cumulative, signature, accepted_at)
                   SELECT channel_id, accepted, $4, $5 FROM up ON CONFLICT DO NOTHING)
                 SELECT {COLUMNS}, pg_notify('{VOUCHER_EVENTS}', channel_id)::text FROM up"
            ))
            .await?;
        client
            .query_opt(
                &statement,
                &[
                    &channel_id,
                    &num(voucher.cumulative),
                    &num(min_delta),
                    &voucher.signature,
                    &now_unix(),
                    &serving_only,
                ],
            )
            .await?
            .as_ref()
            .map(read_channel)
            .transpose()
    }

    /// Releases expired holds on one channel; how many there were.
    async fn release_expired_on(&self, channel_id: &str) -> Result<u64, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&super::holds::release_sql(&format!(
                "h.channel_id = $1 AND NOT {}",
                super::ledger::live("h.owner")
            )))
            .await?;
        Ok(client
            .query_one(&statement, &[&channel_id])
            .await?
            .try_get::<_, i64>(0)? as u64)
    }

    async fn try_reserve(
        &self,
        channel_id: &str,
        amount: u128,
    ) -> Result<Option<(i64, ChannelRecord)>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH up AS (
                   UPDATE session_channels SET reserved = reserved + $2::text::numeric,
                     updated_at = $3
                   WHERE channel_id = $1 AND {SERVING}
                     AND accepted - spent - reserved >= $2::text::numeric
                   RETURNING *),
                 hold AS (
                   INSERT INTO session_reservations (channel_id, amount, owner, created_at)
                   SELECT channel_id, $2::text::numeric, $4, $3 FROM up RETURNING id)
                 SELECT hold.id, {COLUMNS} FROM up, hold"
            ))
            .await?;
        let row = client
            .query_opt(
                &statement,
                &[&channel_id, &num(amount), &now_unix(), &self.owner()],
            )
            .await?;
        row.map(|r| Ok((r.try_get(0)?, read_channel_at(&r, 1)?)))
            .transpose()
    }

    async fn try_grow(
        &self,
        reservation: i64,
        extra: u128,
    ) -> Result<Option<(i64, ChannelRecord)>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH hold AS (
                   SELECT id, channel_id FROM session_reservations WHERE id = $1 FOR UPDATE),
                 up AS (
                   UPDATE session_channels c SET reserved = c.reserved + $2::text::numeric,
                     updated_at = $3
                   FROM hold WHERE c.channel_id = hold.channel_id
                     AND c.status = 'open' AND c.close_requested_at = 0
                     AND c.accepted - c.spent - c.reserved >= $2::text::numeric
                   RETURNING c.*),
                 grown AS (
                   UPDATE session_reservations SET amount = amount + $2::text::numeric
                   WHERE id = $1 AND EXISTS (SELECT 1 FROM up))
                 SELECT $1::bigint, {COLUMNS} FROM up"
            ))
            .await?;
        let row = client
            .query_opt(&statement, &[&reservation, &num(extra), &now_unix()])
            .await?;
        row.map(|r| Ok((r.try_get(0)?, read_channel_at(&r, 1)?)))
            .transpose()
    }

    async fn reservation_channel(&self, reservation: i64) -> Result<Option<String>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT channel_id FROM session_reservations WHERE id = $1")
            .await?;
        Ok(client
            .query_opt(&statement, &[&reservation])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    /// Why a reserve of `amount` did nothing; `None` when the channel can
    /// take it now (it changed in between: try again).
    async fn reserve_refusal(
        &self,
        channel_id: &str,
        amount: u128,
        swept: &mut bool,
    ) -> Result<Option<ReserveOutcome>, LedgerError> {
        let Some(channel) = self.load(channel_id).await? else {
            return Ok(Some(ReserveOutcome::Unavailable(VoucherRefusal::NotFound)));
        };
        if let Some(refusal) = unavailable(&channel) {
            return Ok(Some(ReserveOutcome::Unavailable(refusal)));
        }
        if channel.available() >= amount {
            return Ok(None);
        }
        // Holds of dead instances do not count: free them and look again.
        if !*swept {
            *swept = true;
            if self.release_expired_on(channel_id).await? > 0 {
                return Ok(None);
            }
        }
        Ok(Some(ReserveOutcome::Insufficient { channel }))
    }

    /// Commits a reservation: charges `cost` (capped at what it holds,
    /// checkpoints included, which the charge replaces) and releases the
    /// rest. Deleting the hold locks it: exactly one of a commit, a release
    /// and a sweeper gets it, and only that one moves the channel's counters.
    async fn commit_now(
        &self,
        reservation: i64,
        cost: u128,
        units: u64,
    ) -> Result<Option<ChannelRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH hold AS (
                   DELETE FROM session_reservations WHERE id = $1
                   RETURNING channel_id, amount, charged),
                 up AS (
                   UPDATE session_channels c SET reserved = c.reserved - hold.amount,
                     spent = c.spent + LEAST($2::text::numeric, hold.amount + hold.charged)
                             - hold.charged,
                     units = c.units + $3, updated_at = $4
                   FROM hold WHERE c.channel_id = hold.channel_id
                   RETURNING c.*)
                 SELECT {COLUMNS} FROM up"
            ))
            .await?;
        client
            .query_opt(
                &statement,
                &[&reservation, &num(cost), &i64_of(units), &now_unix()],
            )
            .await?
            .as_ref()
            .map(read_channel)
            .transpose()
    }

    /// Releases what a reservation still holds; what it checkpointed stays
    /// charged.
    pub(crate) async fn release_reservation_now(
        &self,
        reservation: i64,
    ) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "WITH hold AS (
                   DELETE FROM session_reservations WHERE id = $1 RETURNING channel_id, amount)
                 UPDATE session_channels c SET reserved = c.reserved - hold.amount
                 FROM hold WHERE c.channel_id = hold.channel_id",
            )
            .await?;
        client.execute(&statement, &[&reservation]).await?;
        Ok(())
    }

    async fn checkpoint_now(
        &self,
        reservation: i64,
        charged: u128,
    ) -> Result<Option<u128>, LedgerError> {
        let client = self.client().await?;
        // Moves what makes the reservation's charged total `charged` (capped
        // at what it holds, never lowered) from `reserved` to `spent`.
        let statement = client
            .prepare_cached(
                "WITH hold AS (
                   SELECT id, channel_id, amount, charged FROM session_reservations
                   WHERE id = $1 FOR UPDATE),
                 step AS (
                   SELECT id, channel_id, charged, GREATEST(
                     LEAST($2::text::numeric, amount + charged) - charged, 0) AS delta
                   FROM hold),
                 moved AS (
                   UPDATE session_reservations r SET amount = r.amount - step.delta,
                     charged = r.charged + step.delta
                   FROM step WHERE r.id = step.id AND step.delta > 0),
                 up AS (
                   UPDATE session_channels c SET reserved = c.reserved - step.delta,
                     spent = c.spent + step.delta, updated_at = $3
                   FROM step WHERE c.channel_id = step.channel_id AND step.delta > 0)
                 SELECT (charged + delta)::text FROM step",
            )
            .await?;
        client
            .query_opt(&statement, &[&reservation, &num(charged), &now_unix()])
            .await?
            .map(|row| amount(&row, 0))
            .transpose()
    }

    async fn one_voucher(
        &self,
        sql: &str,
        channel_id: &str,
        amount: u128,
    ) -> Result<Option<StoredVoucher>, LedgerError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        client
            .query_opt(&statement, &[&channel_id, &num(amount)])
            .await?
            .map(|r| {
                Ok(StoredVoucher {
                    cumulative: amount_of(&r)?,
                    signature: r.try_get(1)?,
                })
            })
            .transpose()
    }
}

fn amount_of(row: &Row) -> Result<u128, LedgerError> {
    amount(row, 0)
}

#[async_trait]
impl ChannelBook for PgLedger {
    async fn open_channel(
        &self,
        channel: &ChannelRecord,
        initial: Option<&StoredVoucher>,
    ) -> Result<ChannelRecord, LedgerError> {
        let c = channel;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO session_channels (channel_id, protocol, escrow, chain_id, payer,
                 payee, token, authorized_signer, descriptor, deposit, settled,
                 close_requested_at, status, opened_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::numeric,
                         $11::text::numeric, $12, 'open', $13, $13)
                 ON CONFLICT (channel_id) DO UPDATE SET
                   deposit = GREATEST(session_channels.deposit, EXCLUDED.deposit),
                   settled = GREATEST(session_channels.settled, EXCLUDED.settled),
                   updated_at = EXCLUDED.updated_at",
            )
            .await?;
        client
            .execute(
                &statement,
                &[
                    &c.channel_id,
                    &c.protocol,
                    &c.escrow,
                    &i64_of(c.chain_id),
                    &c.payer,
                    &c.payee,
                    &c.token,
                    &c.authorized_signer,
                    &c.descriptor,
                    &num(c.deposit),
                    &num(c.settled),
                    &i64_of(c.close_requested_at),
                    &now_unix(),
                ],
            )
            .await?;
        drop(client);
        if let Some(voucher) = initial
            && let Some(stored) = self
                .raise_accepted(&c.channel_id, voucher, 0, false)
                .await?
        {
            return Ok(stored);
        }
        self.load(&c.channel_id)
            .await?
            .ok_or(LedgerError::Worker("channel vanished".into()))
    }

    async fn channel(&self, channel_id: &str) -> Result<Option<ChannelRecord>, LedgerError> {
        self.load(channel_id).await
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM session_channels ORDER BY opened_at DESC, seq DESC"
            ))
            .await?;
        client
            .query(&statement, &[])
            .await?
            .iter()
            .map(read_channel)
            .collect()
    }

    async fn accept_voucher(
        &self,
        channel_id: &str,
        voucher: &StoredVoucher,
        min_delta: u128,
    ) -> Result<VoucherOutcome, LedgerError> {
        for _ in 0..RETRIES {
            if let Some(channel) = self
                .raise_accepted(channel_id, voucher, min_delta, true)
                .await?
            {
                return Ok(VoucherOutcome::Accepted(channel));
            }
            let Some(channel) = self.load(channel_id).await? else {
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
            // The deposit grew in between: the voucher fits now.
        }
        Err(LedgerError::Worker(
            "voucher acceptance kept racing other updates".into(),
        ))
    }

    async fn store_voucher(
        &self,
        channel_id: &str,
        voucher: &StoredVoucher,
    ) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO session_vouchers (channel_id, cumulative, signature, accepted_at)
                 SELECT channel_id, $2::text::numeric, $3, $4 FROM session_channels
                 WHERE channel_id = $1 AND $2::text::numeric <= deposit
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        client
            .execute(
                &statement,
                &[
                    &channel_id,
                    &num(voucher.cumulative),
                    &voucher.signature,
                    &now_unix(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn voucher_covering(
        &self,
        channel_id: &str,
        at_least: u128,
    ) -> Result<Option<StoredVoucher>, LedgerError> {
        self.one_voucher(
            "SELECT cumulative::text, signature FROM session_vouchers
             WHERE channel_id = $1 AND cumulative >= $2::text::numeric
             ORDER BY cumulative LIMIT 1",
            channel_id,
            at_least,
        )
        .await
    }

    async fn voucher_within(
        &self,
        channel_id: &str,
        at_most: u128,
    ) -> Result<Option<StoredVoucher>, LedgerError> {
        self.one_voucher(
            "SELECT cumulative::text, signature FROM session_vouchers
             WHERE channel_id = $1 AND cumulative <= $2::text::numeric
             ORDER BY cumulative DESC LIMIT 1",
            channel_id,
            at_most,
        )
        .await
    }

    async fn refresh_channel(
        &self,
        channel_id: &str,
        facts: OnChainFacts,
    ) -> Result<Option<ChannelRecord>, LedgerError> {
        let client = self.client().await?;
        // The deposit only grows on chain; `accepted <= deposit` holds.
        let statement = client
            .prepare_cached(&format!(
                "UPDATE session_channels SET
                   deposit = GREATEST(deposit, $2::text::numeric),
                   settled = GREATEST(settled, $3::text::numeric),
                   close_requested_at = $4,
                   status = CASE WHEN $5 THEN 'finalized' ELSE status END,
                   updated_at = $6
                 WHERE channel_id = $1 RETURNING {COLUMNS}"
            ))
            .await?;
        client
            .query_opt(
                &statement,
                &[
                    &channel_id,
                    &num(facts.deposit),
                    &num(facts.settled),
                    &i64_of(facts.close_requested_at),
                    &facts.finalized,
                    &now_unix(),
                ],
            )
            .await?
            .as_ref()
            .map(read_channel)
            .transpose()
    }

    async fn reserve(&self, channel_id: &str, amount: u128) -> Result<ReserveOutcome, LedgerError> {
        self.shared().lease.check()?;
        let mut swept = false;
        for _ in 0..RETRIES {
            if let Some((reservation, channel)) = self.try_reserve(channel_id, amount).await? {
                return Ok(ReserveOutcome::Reserved {
                    reservation,
                    channel,
                });
            }
            if let Some(refusal) = self.reserve_refusal(channel_id, amount, &mut swept).await? {
                return Ok(refusal);
            }
        }
        Err(LedgerError::Worker(
            "reservation kept racing other updates".into(),
        ))
    }

    async fn grow_reservation(
        &self,
        reservation: i64,
        extra: u128,
    ) -> Result<ReserveOutcome, LedgerError> {
        self.shared().lease.check()?;
        let mut swept = false;
        for _ in 0..RETRIES {
            if let Some((reservation, channel)) = self.try_grow(reservation, extra).await? {
                return Ok(ReserveOutcome::Reserved {
                    reservation,
                    channel,
                });
            }
            let Some(channel_id) = self.reservation_channel(reservation).await? else {
                return Ok(ReserveOutcome::Unavailable(VoucherRefusal::NotFound));
            };
            if let Some(refusal) = self.reserve_refusal(&channel_id, extra, &mut swept).await? {
                return Ok(refusal);
            }
        }
        Err(LedgerError::Worker(
            "reservation kept racing other updates".into(),
        ))
    }

    async fn commit(
        &self,
        reservation: i64,
        cost: u128,
        units: u64,
    ) -> Result<ChannelRecord, LedgerError> {
        match self.commit_now(reservation, cost, units).await {
            Ok(Some(channel)) => Ok(channel),
            Ok(None) => Err(LedgerError::HoldLost),
            Err(e) => {
                if e.is_unavailable() {
                    // Not charged, and the response is withheld: give the
                    // hold back once the store is reachable.
                    self.release_soon(Hold::Reservation(reservation));
                }
                Err(e)
            }
        }
    }

    async fn checkpoint_reservation(
        &self,
        reservation: i64,
        charged: u128,
    ) -> Result<Option<u128>, LedgerError> {
        self.checkpoint_now(reservation, charged).await
    }

    async fn release_reservation(&self, reservation: i64) -> Result<(), LedgerError> {
        let result = self.release_reservation_now(reservation).await;
        if let Err(e) = &result
            && e.is_unavailable()
        {
            self.shared().defer(Hold::Reservation(reservation));
        }
        result
    }

    async fn mark_closing(&self, channel_id: &str) -> Result<Option<ChannelRecord>, LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE session_channels SET status = 'closing', updated_at = $2
                 WHERE channel_id = $1 AND status = 'open'",
            )
            .await?;
        client
            .execute(&statement, &[&channel_id, &now_unix()])
            .await?;
        drop(client);
        self.load(channel_id).await
    }

    async fn begin_settlement(
        &self,
        channel_id: &str,
        in_flight: &InFlight,
    ) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE session_channels SET inflight_kind = $2, inflight_tx = $3,
                 inflight_amount = $4::text::numeric, inflight_since = $5 WHERE channel_id = $1",
            )
            .await?;
        client
            .execute(
                &statement,
                &[
                    &channel_id,
                    &in_flight.kind,
                    &in_flight.tx_hash,
                    &num(in_flight.amount),
                    &in_flight.since,
                ],
            )
            .await?;
        Ok(())
    }

    async fn finish_settlement(
        &self,
        channel_id: &str,
        settled: u128,
        finalized: bool,
    ) -> Result<Option<ChannelRecord>, LedgerError> {
        let client = self.client().await?;
        // Vouchers below what is settled can never be used again.
        let statement = client
            .prepare_cached(&format!(
                "WITH up AS (
                   UPDATE session_channels SET settled = GREATEST(settled, $2::text::numeric),
                     status = CASE WHEN $3 THEN 'finalized' ELSE status END,
                     inflight_kind = NULL, inflight_tx = NULL, inflight_amount = NULL,
                     inflight_since = NULL, last_settled_at = $4, updated_at = $4
                   WHERE channel_id = $1 RETURNING *),
                 spent_vouchers AS (
                   DELETE FROM session_vouchers v USING up
                   WHERE v.channel_id = up.channel_id AND v.cumulative < $2::text::numeric
                     AND v.cumulative < up.accepted)
                 SELECT {COLUMNS} FROM up"
            ))
            .await?;
        client
            .query_opt(
                &statement,
                &[&channel_id, &num(settled), &finalized, &now_unix()],
            )
            .await?
            .as_ref()
            .map(read_channel)
            .transpose()
    }

    async fn abandon_settlement(&self, channel_id: &str) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE session_channels SET inflight_kind = NULL, inflight_tx = NULL,
                 inflight_amount = NULL, inflight_since = NULL WHERE channel_id = $1",
            )
            .await?;
        client.execute(&statement, &[&channel_id]).await?;
        Ok(())
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
            self.shared()
                .defer(Hold::IdempotencyKey(key_hash.to_owned()));
        }
        result
    }
}
