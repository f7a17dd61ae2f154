//! [`ChannelBook`] on SQLite. Each method is one `IMMEDIATE` transaction,
//! which takes the database's write lock: every channel update is
//! serialized, across processes sharing the file too.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::channels::{
    ChannelBook, ChannelRecord, ChannelStatus, IdempotencyBegin, InFlight, OnChainFacts,
    ReserveOutcome, StoredResponse, StoredVoucher, VoucherOutcome, VoucherRefusal,
};
use crate::instance::{ChannelEvent, Hold, now_ms};
use crate::sqlite::{SqliteLedger, now_unix};
use crate::sqlite_holds::{Whose, release_holds};
use crate::{Instances, LedgerError};

/// The columns [`read_channel`] reads, as a macro so that statements are
/// built at compile time (a hot-path `format!` per call showed in profiles).
macro_rules! channel_columns {
    () => {
        "channel_id, protocol, escrow, chain_id, payer, payee, token,
    authorized_signer, descriptor, deposit, accepted, spent, reserved, settled, units,
    close_requested_at, status, opened_at, updated_at, last_settled_at,
    inflight_kind, inflight_tx, inflight_amount, inflight_since"
    };
}

/// Amounts are stored as SQLite integers. Deposits beyond `i64::MAX` base
/// units are counted as `i64::MAX`: we authorize less, never more.
fn to_db(amount: u128) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

fn from_db(value: i64) -> u128 {
    u128::try_from(value).unwrap_or(0)
}

fn read_channel(row: &Row<'_>) -> rusqlite::Result<ChannelRecord> {
    let inflight = match row.get::<_, Option<String>>(20)? {
        Some(kind) => Some(InFlight {
            kind,
            tx_hash: row.get::<_, Option<String>>(21)?.unwrap_or_default(),
            amount: from_db(row.get::<_, Option<i64>>(22)?.unwrap_or(0)),
            since: row.get::<_, Option<i64>>(23)?.unwrap_or(0),
        }),
        None => None,
    };
    Ok(ChannelRecord {
        channel_id: row.get(0)?,
        protocol: row.get(1)?,
        escrow: row.get(2)?,
        chain_id: row.get::<_, i64>(3)? as u64,
        payer: row.get(4)?,
        payee: row.get(5)?,
        token: row.get(6)?,
        authorized_signer: row.get(7)?,
        descriptor: row.get(8)?,
        deposit: from_db(row.get(9)?),
        accepted: from_db(row.get(10)?),
        spent: from_db(row.get(11)?),
        reserved: from_db(row.get(12)?),
        settled: from_db(row.get(13)?),
        units: row.get::<_, i64>(14)? as u64,
        close_requested_at: row.get::<_, i64>(15)? as u64,
        status: ChannelStatus::parse(&row.get::<_, String>(16)?),
        opened_at: row.get(17)?,
        updated_at: row.get(18)?,
        last_settled_at: row.get(19)?,
        inflight,
    })
}

fn load(conn: &Connection, channel_id: &str) -> Result<Option<ChannelRecord>, LedgerError> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT ",
            channel_columns!(),
            " FROM session_channels WHERE channel_id = ?1"
        ))?
        .query_row(params![channel_id], read_channel)
        .optional()?)
}

fn unavailable(channel: &ChannelRecord) -> Option<VoucherRefusal> {
    match channel.status {
        ChannelStatus::Finalized => Some(VoucherRefusal::Finalized),
        ChannelStatus::Closing => Some(VoucherRefusal::Closing),
        ChannelStatus::Open if channel.close_requested_at != 0 => Some(VoucherRefusal::Closing),
        ChannelStatus::Open => None,
    }
}

fn insert_voucher(
    conn: &Connection,
    channel_id: &str,
    voucher: &StoredVoucher,
    now: i64,
) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "INSERT INTO session_vouchers (channel_id, cumulative, signature, accepted_at)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        channel_id,
        to_db(voucher.cumulative),
        voucher.signature,
        now
    ])?;
    Ok(())
}

/// Reserves inside an open transaction, for `owner`. When the balance is
/// short, holds of instances whose lease ran out are released first.
fn reserve_in(
    conn: &Connection,
    channel_id: &str,
    amount: u128,
    reservation: Option<i64>,
    owner: &str,
) -> Result<ReserveOutcome, LedgerError> {
    let now = now_unix();
    // The common case in one statement: an open channel with the balance.
    let fast = match i64::try_from(amount) {
        Ok(asked) => conn
            .prepare_cached(concat!(
                "UPDATE session_channels SET reserved = reserved + ?2, updated_at = ?3
                 WHERE channel_id = ?1 AND status = 'open' AND close_requested_at = 0
                   AND MAX(accepted - spent - reserved, 0) >= ?2
                 RETURNING ",
                channel_columns!()
            ))?
            .query_row(params![channel_id, asked, now], read_channel)
            .optional()?,
        Err(_) => None,
    };
    if let Some(channel) = fast {
        let id = hold_reservation(conn, channel_id, amount, reservation, owner, now)?;
        return Ok(ReserveOutcome::Reserved {
            reservation: id,
            channel,
        });
    }
    let Some(mut channel) = load(conn, channel_id)? else {
        return Ok(ReserveOutcome::Unavailable(VoucherRefusal::NotFound));
    };
    if let Some(refusal) = unavailable(&channel) {
        return Ok(ReserveOutcome::Unavailable(refusal));
    }
    if channel.available() < amount {
        let expired = Whose::ExpiredOn {
            channel: channel_id,
            now: now_ms(),
        };
        if release_holds(conn, &expired)?.reservations > 0 {
            channel = load(conn, channel_id)?.ok_or(LedgerError::HoldLost)?;
        }
        if channel.available() < amount {
            return Ok(ReserveOutcome::Insufficient { channel });
        }
    }
    conn.prepare_cached(
        "UPDATE session_channels SET reserved = reserved + ?2, updated_at = ?3
         WHERE channel_id = ?1",
    )?
    .execute(params![channel_id, to_db(amount), now])?;
    let id = hold_reservation(conn, channel_id, amount, reservation, owner, now)?;
    let channel = load(conn, channel_id)?.ok_or(LedgerError::Worker("channel vanished".into()))?;
    Ok(ReserveOutcome::Reserved {
        reservation: id,
        channel,
    })
}

/// Adds `amount` to `reservation`, or records a new one for `owner`.
fn hold_reservation(
    conn: &Connection,
    channel_id: &str,
    amount: u128,
    reservation: Option<i64>,
    owner: &str,
    now: i64,
) -> Result<i64, LedgerError> {
    Ok(match reservation {
        Some(id) => {
            conn.prepare_cached(
                "UPDATE session_reservations SET amount = amount + ?2 WHERE id = ?1",
            )?
            .execute(params![id, to_db(amount)])?;
            id
        }
        None => insert_reservation(conn, channel_id, amount, owner, now)?,
    })
}

/// Records a new reservation under the process's next id. An id another
/// process drew already (odds ~2^-63 per live row) is skipped for the next.
fn insert_reservation(
    conn: &Connection,
    channel_id: &str,
    amount: u128,
    owner: &str,
    now: i64,
) -> Result<i64, LedgerError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO session_reservations (id, channel_id, amount, owner, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
    )?;
    for _ in 0..8 {
        let id = crate::reservation_ids::next();
        if insert.execute(params![id, channel_id, to_db(amount), owner, now])? == 1 {
            return Ok(id);
        }
    }
    Err(LedgerError::Worker("no free reservation id".into()))
}

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

/// A reservation: its channel, what it still holds, and what of it was
/// already charged (checkpoints).
struct Held {
    channel_id: String,
    amount: u128,
    charged: u128,
}

fn reservation(conn: &Connection, id: i64) -> Result<Option<Held>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT channel_id, amount, charged FROM session_reservations WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok(Held {
                channel_id: r.get(0)?,
                amount: from_db(r.get(1)?),
                charged: from_db(r.get(2)?),
            })
        })
        .optional()?)
}

/// Deletes a reservation and returns what it held (one statement); the
/// caller moves the channel's counters. `None` when it is not held.
fn take_reservation(conn: &Connection, id: i64) -> Result<Option<Held>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM session_reservations WHERE id = ?1
             RETURNING channel_id, amount, charged",
        )?
        .query_row(params![id], |r| {
            Ok(Held {
                channel_id: r.get(0)?,
                amount: from_db(r.get(1)?),
                charged: from_db(r.get(2)?),
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
        let owner = self.owner();
        self.grouped(false, move |tx| {
            let outcome = reserve_in(tx, &id, amount, None, &owner)?;
            Ok(outcome)
        })
        .await
    }

    async fn grow_reservation(
        &self,
        reservation_id: i64,
        extra: u128,
    ) -> Result<ReserveOutcome, LedgerError> {
        self.shared.lease.check()?;
        let owner = self.owner();
        self.grouped(false, move |tx| {
            let Some(held) = reservation(tx, reservation_id)? else {
                return Ok(ReserveOutcome::Unavailable(VoucherRefusal::NotFound));
            };
            let outcome = reserve_in(tx, &held.channel_id, extra, Some(reservation_id), &owner)?;
            Ok(outcome)
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
            .grouped(true, move |tx| {
                let Some(Held {
                    channel_id,
                    amount,
                    charged: checkpointed,
                }) = take_reservation(tx, reservation_id)?
                else {
                    return Err(LedgerError::HoldLost);
                };
                let charged = cost.min(amount + checkpointed);
                // The checkpoints are in `spent` already: add the difference.
                tx.prepare_cached(concat!(
                    "UPDATE session_channels SET reserved = MAX(reserved - ?2, 0),
                       spent = spent + ?3 - ?4, units = units + ?5, updated_at = ?6
                     WHERE channel_id = ?1 RETURNING ",
                    channel_columns!()
                ))?
                .query_row(
                    params![
                        channel_id,
                        to_db(amount),
                        to_db(charged),
                        to_db(checkpointed),
                        i64::try_from(units).unwrap_or(i64::MAX),
                        now_unix()
                    ],
                    read_channel,
                )
                .optional()?
                .ok_or(LedgerError::Worker("channel vanished".into()))
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
        self.grouped(true, move |tx| {
            let Some(held) = reservation(tx, reservation_id)? else {
                return Ok(None);
            };
            let target = charged.min(held.amount + held.charged);
            if target <= held.charged {
                return Ok(Some(held.charged));
            }
            let delta = to_db(target - held.charged);
            tx.prepare_cached(
                "UPDATE session_reservations SET amount = amount - ?2, charged = charged + ?2
                 WHERE id = ?1",
            )?
            .execute(params![reservation_id, delta])?;
            tx.prepare_cached(
                "UPDATE session_channels SET reserved = reserved - ?2, spent = spent + ?2,
                 updated_at = ?3 WHERE channel_id = ?1",
            )?
            .execute(params![held.channel_id, delta, now_unix()])?;
            Ok(Some(target))
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
        self.grouped(true, move |tx| {
            if let Some(held) = take_reservation(tx, reservation_id)? {
                tx.prepare_cached(
                    "UPDATE session_channels SET reserved = MAX(reserved - ?2, 0)
                     WHERE channel_id = ?1",
                )?
                .execute(params![held.channel_id, to_db(held.amount)])?;
            }
            Ok(())
        })
        .await
    }
}
