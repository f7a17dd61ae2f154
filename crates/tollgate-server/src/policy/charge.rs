//! The `charge` policy: a one-off payment of the request's worst case.
//!
//! By default (`payments.settle = "before_upstream"`) the transfer is
//! broadcast at admission; with `after_upstream` a client-signed transfer
//! is only authorized (simulated, its challenge claimed) and broadcast
//! once the answer is in hand — a whole answer read, or a stream's first
//! event — so a failed upstream costs the payer nothing. A claim that is
//! dropped unbroadcast is given back.

use async_trait::async_trait;
use tollgate_payments::{Paid, Pending};

use super::{Challenger, Committed, EventSink, Hold};
use crate::metering::Metered;
use crate::problem::ApiError;
use crate::sse::SseEvent;

enum Payment {
    Settled(Paid),
    /// Authorized; broadcast when the answer is in hand.
    Deferred(Box<Pending>),
}

pub struct ChargeHold {
    payment: Option<Payment>,
    challenge_id: String,
    challenger: Challenger,
}

/// Holds an authorized charge: settles it now, or defers the broadcast.
pub async fn hold(pending: Pending, challenger: Challenger) -> Result<ChargeHold, ApiError> {
    let challenge_id = pending.challenge_id().to_owned();
    let gateway = &challenger.gateway;
    let payment = if gateway.settle_after_upstream && pending.is_unbroadcast() {
        Payment::Deferred(Box::new(pending))
    } else {
        match gateway.gate.settle(pending).await {
            Ok(paid) => Payment::Settled(paid),
            Err(problem) => return Err(challenger.refuse(&problem)),
        }
    };
    Ok(ChargeHold {
        payment: Some(payment),
        challenge_id,
        challenger,
    })
}

impl ChargeHold {
    /// Broadcasts a deferred charge; the receipt of a settled one.
    async fn make_final(&mut self) -> Result<Paid, ApiError> {
        match self.payment.take() {
            Some(Payment::Settled(paid)) => {
                self.payment = Some(Payment::Settled(paid.clone()));
                Ok(paid)
            }
            Some(Payment::Deferred(pending)) => {
                match self.challenger.gateway.gate.settle(*pending).await {
                    Ok(paid) => {
                        self.payment = Some(Payment::Settled(paid.clone()));
                        Ok(paid)
                    }
                    Err(problem) => {
                        tracing::warn!(route = %self.challenger.scope, problem = problem.kind.slug(), "payment failed after the upstream answered");
                        Err(self.challenger.refuse(&problem))
                    }
                }
            }
            None => Err(super::store_failure()),
        }
    }
}

#[async_trait]
impl Hold for ChargeHold {
    fn challenge_id(&self) -> &str {
        &self.challenge_id
    }

    async fn commit(mut self: Box<Self>, _metered: &Metered) -> Result<Committed, ApiError> {
        let paid = self.make_final().await?;
        Ok(Committed {
            receipt: paid.receipt_header,
            replay: None,
        })
    }

    async fn start_stream(&mut self) -> Result<Option<String>, ApiError> {
        Ok(Some(self.make_final().await?.receipt_header))
    }

    async fn cover(&mut self, _total: u128, _sink: &EventSink) -> bool {
        // The charge paid the whole quote, and usage is priced at most at it.
        true
    }

    async fn end_stream(self: Box<Self>, _metered: &Metered) -> Option<SseEvent> {
        None
    }
}
