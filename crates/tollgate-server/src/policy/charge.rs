//! The `charge` policy: a one-off payment of the request's worst case.
//!
//! By default (`payments.settle = "before_upstream"`) the transfer is
//! broadcast at admission; with `after_upstream` a client-signed transfer
//! is only authorized (simulated, its challenge claimed) and broadcast
//! once the answer is in hand — a whole answer read, or a stream's first
//! event — so a failed upstream costs the payer nothing. A claim that is
//! dropped unbroadcast is given back.
//!
//! A charge that was broadcast is refunded on chain when its answer is not
//! delivered: the hold dropped without a commit (an upstream failure, a
//! client that went away) refunds it in full, and a quoted stream that
//! broke off refunds what it did not deliver (the quote minus what was
//! delivered, priced like a session).

use async_trait::async_trait;
use tollgate_payments::{Paid, Pending, Refundable};

use super::{Challenger, Committed, EventSink, Hold};
use crate::metering::Metered;
use crate::observe::Intent;
use crate::problem::ApiError;
use crate::receipts::PaidHeaders;
use crate::sse::SseEvent;

enum Payment {
    /// Broadcast; refunded when dropped unless the answer was delivered.
    Settled {
        paid: Box<Paid>,
        refund: Option<Refundable>,
    },
    /// Authorized; broadcast when the answer is in hand.
    Deferred(Box<Pending>),
}

pub struct ChargeHold {
    payment: Option<Payment>,
    challenge_id: String,
    challenger: Challenger,
    /// Priced from a quote (so a partial stream can be priced); a fixed
    /// price buys the call, whatever part of a stream it delivered.
    quoted: bool,
}

/// Holds an authorized charge: settles it now, or defers the broadcast.
pub async fn hold(
    pending: Pending,
    challenger: Challenger,
    quoted: bool,
) -> Result<ChargeHold, ApiError> {
    let challenge_id = pending.challenge_id().to_owned();
    let gateway = &challenger.gateway;
    let payment = if gateway.settle_after_upstream && pending.is_unbroadcast() {
        Payment::Deferred(Box::new(pending))
    } else {
        match gateway.gate.settle(pending).await {
            Ok(paid) => settled(&challenger, paid),
            Err(problem) => return Err(challenger.refuse(&problem)),
        }
    };
    Ok(ChargeHold {
        payment: Some(payment),
        challenge_id,
        challenger,
        quoted,
    })
}

fn settled(challenger: &Challenger, paid: Paid) -> Payment {
    let refund = challenger.gateway.gate.refundable(&paid, &challenger.scope);
    Payment::Settled {
        paid: Box::new(paid),
        refund,
    }
}

impl ChargeHold {
    /// Broadcasts a deferred charge; the receipt of a settled one.
    async fn make_final(&mut self) -> Result<String, ApiError> {
        match self.payment.take() {
            Some(Payment::Settled { paid, refund }) => {
                let receipt = paid.receipt_header.clone();
                self.payment = Some(Payment::Settled { paid, refund });
                Ok(receipt)
            }
            Some(Payment::Deferred(pending)) => {
                match self.challenger.gateway.gate.settle(*pending).await {
                    Ok(paid) => {
                        let receipt = paid.receipt_header.clone();
                        self.payment = Some(settled(&self.challenger, paid));
                        Ok(receipt)
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

    /// The settled charge's refund guard (disarmed by its caller).
    fn refundable(&mut self) -> Option<Refundable> {
        match &mut self.payment {
            Some(Payment::Settled { refund, .. }) => refund.take(),
            _ => None,
        }
    }
}

#[async_trait]
impl Hold for ChargeHold {
    fn challenge_id(&self) -> &str {
        &self.challenge_id
    }

    fn intent(&self) -> Intent {
        Intent::Charge
    }

    async fn commit(mut self: Box<Self>, _metered: &Metered) -> Result<Committed, ApiError> {
        let receipt = self.make_final().await?;
        // The whole answer is in hand and goes out now: the charge stands.
        if let Some(refund) = self.refundable() {
            refund.keep();
        }
        Ok(Committed {
            paid: PaidHeaders::receipt(receipt),
            replay: None,
        })
    }

    async fn start_stream(&mut self) -> Result<Option<PaidHeaders>, ApiError> {
        Ok(Some(PaidHeaders::receipt(self.make_final().await?)))
    }

    async fn cover(&mut self, _total: u128, _sink: &EventSink) -> bool {
        // The charge paid the whole quote, and usage is priced at most at it.
        true
    }

    async fn end_stream(mut self: Box<Self>, metered: &Metered) -> Option<SseEvent> {
        let quoted = self.quoted;
        if let Some(refund) = self.refundable() {
            if metered.whole || !quoted {
                refund.keep();
            } else {
                let charged = refund.charged();
                refund.refund_part(charged - metered.cost.min(charged));
            }
        }
        None
    }
}
