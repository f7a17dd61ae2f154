//! Per-request holds on a channel's authorized balance: reserve the worst
//! case, grow it while a stream runs, commit the actual cost.

use std::sync::Arc;

use tollgate_ledger::{ChannelRecord, LedgerError, ReserveOutcome};

use super::SessionGate;
use super::problems::{insufficient, refusal_problem, store_failure};
use crate::problem::PaymentProblem;

/// A held part of a channel's balance, for one request. It is a value that
/// releases itself: committed at most once ([`SessionGate::commit`]), or
/// released when dropped (client gone, timeout, panic, early return).
#[derive(Debug)]
pub struct Reservation {
    pub id: i64,
    pub channel_id: String,
    /// What is held so far.
    pub held: u128,
    release: crate::hold::ReleaseOnDrop,
}

impl Reservation {
    /// Nothing is left to release (committed or released by hand).
    fn settled(mut self) {
        self.release.disarm();
    }
}

impl SessionGate {
    /// Holds `amount` of the channel's available balance.
    pub async fn reserve(
        &self,
        channel_id: &str,
        amount: u128,
    ) -> Result<Reservation, PaymentProblem> {
        match self
            .ledger
            .reserve(channel_id, amount)
            .await
            .map_err(store_failure)?
        {
            ReserveOutcome::Reserved {
                reservation,
                channel,
            } => {
                self.seen.update(&channel);
                Ok(Reservation {
                    id: reservation,
                    channel_id: channel_id.to_owned(),
                    held: amount,
                    release: crate::hold::ReleaseOnDrop::reservation(
                        Arc::clone(&self.ledger),
                        reservation,
                    ),
                })
            }
            ReserveOutcome::Insufficient { channel } => Err(insufficient(&channel, amount)),
            ReserveOutcome::Unavailable(refusal) => Err(refusal_problem(refusal)),
        }
    }

    /// Adds `extra` to a reservation if the balance allows; `Ok(None)` when
    /// it does not (the channel is returned for a `payment-need-voucher`).
    pub async fn grow(
        &self,
        reservation: &mut Reservation,
        extra: u128,
    ) -> Result<Option<ChannelRecord>, PaymentProblem> {
        match self
            .ledger
            .grow_reservation(reservation.id, extra)
            .await
            .map_err(store_failure)?
        {
            ReserveOutcome::Reserved { .. } => {
                reservation.held += extra;
                Ok(None)
            }
            ReserveOutcome::Insufficient { channel } => Ok(Some(channel)),
            ReserveOutcome::Unavailable(refusal) => Err(refusal_problem(refusal)),
        }
    }

    /// Charges `cost` (at most what is held) and releases the rest. On a
    /// store failure nothing is charged and the reservation is released
    /// when dropped.
    pub async fn commit(
        &self,
        reservation: Reservation,
        cost: u128,
        units: u64,
    ) -> Result<ChannelRecord, LedgerError> {
        let committed = self.ledger.commit(reservation.id, cost, units).await?;
        reservation.settled();
        self.seen.update(&committed);
        Ok(committed)
    }

    /// Charges what a running stream delivered so far (`charged`, the
    /// reservation's total, within what it holds), so a crash keeps it.
    pub async fn checkpoint(
        &self,
        reservation: &Reservation,
        charged: u128,
    ) -> Result<(), LedgerError> {
        self.ledger
            .checkpoint_reservation(reservation.id, charged)
            .await
            .map(|_| ())
    }

    /// Releases now, awaiting the store (dropping releases in the background).
    pub async fn release(&self, reservation: Reservation) {
        match self.ledger.release_reservation(reservation.id).await {
            Ok(()) => reservation.settled(),
            Err(e) => tracing::error!(error = %e, "could not release a session reservation"),
        }
    }
}
