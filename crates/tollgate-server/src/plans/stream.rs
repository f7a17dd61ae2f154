//! A streamed plan turn (`plans.streaming = true`). The whole worst case is
//! reserved up front (it is at most one bucket), so the stream never needs a
//! voucher mid-way; the usage chunk the gateway asked for is read and
//! hidden, the actual cost committed when the runtime finishes, and only
//! then the receipt is sent, as the last event before `[DONE]`.

use std::sync::Arc;

use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tollgate_payments::session::Reservation;

use super::PlanEndpoint;
use super::request::Resolution;
use crate::metering::{channel_body, find_event_end, inspect_event};

pub struct Turn {
    pub response: Response,
    pub endpoint: Arc<PlanEndpoint>,
    pub reservation: Reservation,
    pub resolution: Resolution,
    pub challenge_id: String,
}

pub fn serve(turn: Turn) -> Response {
    let (head, body) = turn.response.into_parts();
    let (tx, out) = channel_body();
    let Turn {
        endpoint,
        reservation,
        resolution,
        challenge_id,
        ..
    } = turn;
    tokio::spawn(async move {
        let mut upstream = body.into_data_stream();
        let mut pending = BytesMut::new();
        let mut usage = None;
        let mut done = None;
        let mut client_gone = false;
        while let Some(Ok(bytes)) = upstream.next().await {
            pending.extend_from_slice(&bytes);
            while let Some(end) = find_event_end(&pending) {
                let event = pending.split_to(end);
                if !inspect_event(&event, true, &mut usage) {
                    continue;
                }
                if event.starts_with(b"data: [DONE]") {
                    done = Some(event);
                    continue;
                }
                if tx.send(Ok(event.freeze())).await.is_err() {
                    client_gone = true;
                }
            }
            if client_gone {
                break;
            }
        }
        drop(upstream);
        let Some(usage) = usage.filter(|_| !client_gone) else {
            // Nothing reliable to charge (no usage, or the client left):
            // the turn is not charged.
            endpoint.sessions.release(reservation).await;
            tracing::warn!("streamed plan turn ended without usage; not charged");
            return;
        };
        let cost = resolution.actual_cost(&endpoint.table, usage);
        let units = usage.input_tokens + usage.output_tokens;
        match endpoint.sessions.commit(reservation, cost, units).await {
            Ok(committed) => {
                let receipt =
                    endpoint
                        .sessions
                        .receipt_json(&challenge_id, &committed, Some(units), None);
                let frame = format!("event: payment-receipt\ndata: {receipt}\n\n");
                let _ = tx.send(Ok(Bytes::from(frame))).await;
            }
            Err(e) => tracing::error!(error = %e, "streamed plan turn could not be committed"),
        }
        if let Some(done) = done {
            let _ = tx.send(Ok(done.freeze())).await;
        }
    });
    Response::from_parts(head, out)
}
