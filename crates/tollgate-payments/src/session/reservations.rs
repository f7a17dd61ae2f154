//! Per-request holds on a channel's authorized balance: reserve the worst
//! case, grow it while a stream runs, commit the actual cost. A whole
//! answer's hold is a share of the channel's block
//! ([`crate::shared_holds`]); a stream holds a reservation of its own (it
//! grows and checkpoints).

use std::sync::Arc;

use tollgate_ledger::{ChannelRecord, ChannelStatus, LedgerError, ReserveOutcome, VoucherRefusal};

use super::SessionGate;
use super::problems::{insufficient, refusal_problem, store_failure};
use crate::hold::ReleaseOnDrop;
use crate::problem::PaymentProblem;
use crate::shared_holds::{Commit, Take};

/// A held part of a channel's balance, for one request. It is a value that
/// releases itself: committed at most once ([`SessionGate::commit`]), or
/// released when dropped (client gone, timeout, panic, early return).
#[derive(Debug)]
pub struct Reservation {
    /// The store's reservation (the block, for a share).
    pub id: i64,
    pub channel_id: String,
    /// What is held so far.
    pub held: u128,
    /// A share of a block, not a reservation of its own.
    shared: bool,
    release: ReleaseOnDrop,
}

impl Reservation {
    /// Nothing is left to release (committed or released by hand).
    fn settled(mut self) {
        self.release.disarm();
    }
}

fn serving(channel: &ChannelRecord) -> bool {
    channel.status == ChannelStatus::Open && channel.close_requested_at == 0
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
                    shared: false,
                    release: ReleaseOnDrop::reservation(Arc::clone(&self.ledger), reservation),
                })
            }
            ReserveOutcome::Insufficient { channel } => Err(insufficient(&channel, amount)),
            ReserveOutcome::Unavailable(refusal) => Err(refusal_problem(refusal)),
        }
    }

    /// Holds `amount` as a share of the channel's block: from its free part
    /// without a write, else by growing it (or reserving one) in the store.
    /// For a request that is committed once and never grown.
    pub async fn reserve_shared(
        &self,
        channel_id: &str,
        amount: u128,
    ) -> Result<Reservation, PaymentProblem> {
        // A share taken from memory asks the lease what the store would.
        self.ledger.may_hold().map_err(store_failure)?;
        let share = |block| Reservation {
            id: block,
            channel_id: channel_id.to_owned(),
            held: amount,
            shared: true,
            release: ReleaseOnDrop::share(
                Arc::clone(&self.ledger),
                Arc::clone(&self.shared),
                block,
                amount,
            ),
        };
        match self.shared.take(channel_id, amount) {
            Take::Shared { block } => Ok(share(block)),
            Take::Grow { block, shortfall } => {
                // Counted already: dropping it gives it back.
                let reservation = share(block);
                match self
                    .ledger
                    .grow_reservation(block, shortfall)
                    .await
                    .map_err(store_failure)?
                {
                    ReserveOutcome::Reserved { channel, .. } => {
                        self.shared.grown(block, shortfall);
                        self.seen.update(&channel);
                        Ok(reservation)
                    }
                    ReserveOutcome::Insufficient { channel } => Err(insufficient(&channel, amount)),
                    // The store no longer holds the block (released as an
                    // expired instance's): a new one for this request.
                    ReserveOutcome::Unavailable(VoucherRefusal::NotFound) => {
                        self.shared.retire(block);
                        drop(reservation);
                        self.create_shared(channel_id, amount).await
                    }
                    ReserveOutcome::Unavailable(refusal) => {
                        self.shared.retire(block);
                        Err(refusal_problem(refusal))
                    }
                }
            }
            Take::Create => self.create_shared(channel_id, amount).await,
        }
    }

    /// Reserves a new block for a first share.
    async fn create_shared(
        &self,
        channel_id: &str,
        amount: u128,
    ) -> Result<Reservation, PaymentProblem> {
        let mut own = self.reserve(channel_id, amount).await?;
        own.release.disarm();
        self.shared.created(channel_id, own.id, amount);
        Ok(Reservation {
            shared: true,
            release: ReleaseOnDrop::share(
                Arc::clone(&self.ledger),
                Arc::clone(&self.shared),
                own.id,
                amount,
            ),
            ..own
        })
    }

    /// Adds `extra` to a reservation if the balance allows; `Ok(None)` when
    /// it does not (the channel is returned for a `payment-need-voucher`).
    pub async fn grow(
        &self,
        reservation: &mut Reservation,
        extra: u128,
    ) -> Result<Option<ChannelRecord>, PaymentProblem> {
        if reservation.shared {
            // A block's size belongs to all its shares; only a request's
            // own reservation grows.
            return Err(store_failure(LedgerError::Worker(
                "a shared hold cannot grow".into(),
            )));
        }
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
        if reservation.shared {
            return self.commit_share(reservation, cost, units).await;
        }
        let committed = self.ledger.commit(reservation.id, cost, units).await?;
        reservation.settled();
        self.seen.update(&committed);
        Ok(committed)
    }

    /// A share's commit: the last share commits and releases its block;
    /// others charge the block and keep it. On a failure nothing is charged
    /// and the share is given back when dropped.
    async fn commit_share(
        &self,
        mut reservation: Reservation,
        cost: u128,
        units: u64,
    ) -> Result<ChannelRecord, LedgerError> {
        let block = reservation.id;
        match self.shared.begin_commit(block) {
            Commit::Last => {
                // Out of the pool now: the block is this request's alone.
                reservation.release.disarm();
                reservation.release = ReleaseOnDrop::reservation(Arc::clone(&self.ledger), block);
                reservation.shared = false;
                let committed = self.ledger.commit(block, cost, units).await?;
                reservation.settled();
                self.seen.update(&committed);
                Ok(committed)
            }
            Commit::Keep => {
                // The commit runs to its end even if this request goes away
                // meanwhile, so the block's size follows what it charged.
                let share = reservation.held;
                reservation.settled();
                let (ledger, shared) = (Arc::clone(&self.ledger), Arc::clone(&self.shared));
                let task = tokio::spawn(async move {
                    let outcome = ledger.commit_keeping(block, cost, units).await;
                    let last = match &outcome {
                        Ok(kept) => shared.end_commit(
                            block,
                            share,
                            kept.charged,
                            kept.refilled,
                            serving(&kept.channel),
                        ),
                        Err(e) => {
                            if matches!(e, LedgerError::HoldLost) {
                                shared.retire(block);
                            }
                            shared.give_back(block, share)
                        }
                    };
                    // The other shares ended first: release the block before
                    // answering, so `reserved` is 0 once nothing is in flight.
                    if let Some(last) = last
                        && let Err(e) = ledger.release_reservation(last).await
                    {
                        tracing::error!(error = %e, "could not release a shared hold");
                    }
                    outcome.map(|kept| kept.channel)
                });
                let channel = task
                    .await
                    .map_err(|e| LedgerError::Worker(format!("a commit task failed: {e}")))??;
                self.seen.update(&channel);
                Ok(channel)
            }
        }
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
        if reservation.shared {
            // Given back in memory (the block goes with its last share).
            drop(reservation);
            return;
        }
        match self.ledger.release_reservation(reservation.id).await {
            Ok(()) => reservation.settled(),
            Err(e) => tracing::error!(error = %e, "could not release a session reservation"),
        }
    }
}
