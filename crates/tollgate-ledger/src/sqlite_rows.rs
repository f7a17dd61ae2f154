//! Row-level SQL the SQLite ledger's modules share: a channel's row, the
//! balance rule's refusals, hold rows and their release.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::LedgerError;
use crate::channels::{ChannelRecord, ChannelStatus, InFlight, StoredVoucher, VoucherRefusal};
use crate::instance::HoldsReleased;

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
pub(crate) use channel_columns;

/// Amounts are stored as SQLite integers. Deposits beyond `i64::MAX` base
/// units are counted as `i64::MAX`: we authorize less, never more.
pub(crate) fn to_db(amount: u128) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

pub(crate) fn from_db(value: i64) -> u128 {
    u128::try_from(value).unwrap_or(0)
}

pub(crate) fn read_channel(row: &Row<'_>) -> rusqlite::Result<ChannelRecord> {
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

pub(crate) fn load(
    conn: &Connection,
    channel_id: &str,
) -> Result<Option<ChannelRecord>, LedgerError> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT ",
            channel_columns!(),
            " FROM session_channels WHERE channel_id = ?1"
        ))?
        .query_row(params![channel_id], read_channel)
        .optional()?)
}

pub(crate) fn unavailable(channel: &ChannelRecord) -> Option<VoucherRefusal> {
    match channel.status {
        ChannelStatus::Finalized => Some(VoucherRefusal::Finalized),
        ChannelStatus::Closing => Some(VoucherRefusal::Closing),
        ChannelStatus::Open if channel.close_requested_at != 0 => Some(VoucherRefusal::Closing),
        ChannelStatus::Open => None,
    }
}

pub(crate) fn insert_voucher(
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

/// Records a new reservation under the process's next id. An id another
/// process drew already (odds ~2^-63 per live row) is skipped for the next.
pub(crate) fn insert_reservation(
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

/// SQL that is true when `owner` (a column) is an instance whose lease runs
/// at `now` (a parameter, unix milliseconds).
pub(crate) fn live(owner: &str, now: &str) -> String {
    format!("EXISTS (SELECT 1 FROM instances i WHERE i.id = {owner} AND i.lease_until >= {now})")
}

/// Whose holds a release covers.
pub(crate) enum Whose<'a> {
    /// Everything this instance id holds (its previous life's).
    Owner(&'a str),
    /// Every hold whose owner's lease has run out by `now`.
    Expired { now: i64 },
    /// Expired reservations on one channel (a reserve that came up short).
    ExpiredOn { channel: &'a str, now: i64 },
}

/// Deletes the holds `whose` selects, giving reserved balances back. Runs
/// inside the caller's transaction.
pub(crate) fn release_holds(
    conn: &Connection,
    whose: &Whose<'_>,
) -> Result<HoldsReleased, LedgerError> {
    let (filter, values): (String, Vec<rusqlite::types::Value>) = match whose {
        Whose::Owner(id) => ("h.owner = ?1".into(), vec![(*id).to_owned().into()]),
        Whose::Expired { now } => (
            format!("NOT {}", live("h.owner", "?1")),
            vec![(*now).into()],
        ),
        Whose::ExpiredOn { channel, now } => (
            format!("h.channel_id = ?2 AND NOT {}", live("h.owner", "?1")),
            vec![(*now).into(), (*channel).to_owned().into()],
        ),
    };
    conn.prepare_cached(&format!(
        "UPDATE session_channels SET reserved = MAX(reserved - (
             SELECT COALESCE(SUM(h.amount), 0) FROM session_reservations h
             WHERE h.channel_id = session_channels.channel_id AND {filter}), 0)
         WHERE channel_id IN (SELECT h.channel_id FROM session_reservations h WHERE {filter})"
    ))?
    .execute(params_from_iter(values.iter()))?;
    let reservations = conn
        .prepare_cached(&format!(
            "DELETE FROM session_reservations AS h WHERE {filter}"
        ))?
        .execute(params_from_iter(values.iter()))? as u64;
    if matches!(whose, Whose::ExpiredOn { .. }) {
        return Ok(HoldsReleased {
            reservations,
            ..HoldsReleased::default()
        });
    }
    let claims = conn
        .prepare_cached(&format!(
            "DELETE FROM payment_claims AS h WHERE h.state = 'pending' AND {filter}"
        ))?
        .execute(params_from_iter(values.iter()))? as u64;
    let idempotency_keys = conn
        .prepare_cached(&format!(
            "DELETE FROM idempotent_responses AS h WHERE h.state = 'pending' AND {filter}"
        ))?
        .execute(params_from_iter(values.iter()))? as u64;
    Ok(HoldsReleased {
        reservations,
        claims,
        idempotency_keys,
    })
}

/// Unix seconds now.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
