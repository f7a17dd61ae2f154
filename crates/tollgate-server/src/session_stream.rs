//! A session-paid SSE stream, metered as it goes: each content event is
//! priced before it is delivered; when the channel's authorized balance
//! would be exceeded the stream asks for a voucher (`payment-need-voucher`),
//! pauses, and resumes once one is accepted on any request — or ends
//! cleanly after a timeout, charging only what was delivered. The final
//! `payment-receipt` event carries the committed state.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_ledger::{ChannelRecord, Ledger};
use tollgate_payments::session::{Reservation, SessionGate};
use tollgate_pricing::UsageDetail;
use tollgate_pricing::tokens::Encoding;

use crate::metering::{Metering, channel_body, find_event_end, inspect_event};

pub struct Stream {
    pub response: Response,
    pub metering: Metering,
    pub reservation: Reservation,
    pub sessions: Arc<SessionGate>,
    pub ledger: Arc<dyn Ledger>,
    pub challenge_id: String,
    /// The channel as it stood when the request was authorized.
    pub channel: ChannelRecord,
    pub voucher_timeout: Duration,
}

/// Starts metering; the returned response streams to the client. Its
/// headers carry a receipt for the channel as the stream starts.
pub fn meter(mut stream: Stream) -> Response {
    let response = std::mem::replace(&mut stream.response, Response::new(Body::empty()));
    let (mut head, body) = response.into_parts();
    let opening = stream
        .sessions
        .receipt(&stream.challenge_id, &stream.channel, None, None);
    if let Ok(value) = HeaderValue::from_str(&opening) {
        head.headers.insert("payment-receipt", value);
        head.headers.insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
    }
    let (tx, out) = channel_body();
    tokio::spawn(run(stream, body, tx));
    Response::from_parts(head, out)
}

struct Meter {
    encoding: Option<Encoding>,
    input_units: u64,
    /// Output tokens delivered so far (estimated from the text).
    delivered: u64,
}

impl Meter {
    fn usage(&self, extra: u64) -> UsageDetail {
        UsageDetail {
            input_tokens: self.input_units,
            output_tokens: self.delivered + extra,
            ..UsageDetail::default()
        }
    }

    /// Output tokens an event delivers (content and tool-call text).
    fn tokens_in(&self, event: &[u8]) -> u64 {
        let Some(encoding) = self.encoding else {
            return 0;
        };
        let Ok(text) = std::str::from_utf8(event) else {
            return 0;
        };
        let Some(data) = text.lines().find_map(|l| l.strip_prefix("data:")) else {
            return 0;
        };
        let Ok(chunk) = serde_json::from_str::<Value>(data.trim()) else {
            return 0;
        };
        let mut delivered = String::new();
        if let Some(choices) = chunk["choices"].as_array() {
            for choice in choices {
                let delta = &choice["delta"];
                if let Some(content) = delta["content"].as_str() {
                    delivered.push_str(content);
                }
                if let Some(calls) = delta["tool_calls"].as_array() {
                    for call in calls {
                        delivered.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                    }
                }
            }
        }
        // Responses API text deltas.
        if let Some(delta) = chunk["delta"].as_str() {
            delivered.push_str(delta);
        }
        // Anthropic Messages deltas: text, tool input, thinking.
        for field in ["text", "partial_json", "thinking"] {
            if let Some(part) = chunk["delta"][field].as_str() {
                delivered.push_str(part);
            }
        }
        if delivered.is_empty() {
            0
        } else {
            encoding.count(&delivered).max(1)
        }
    }
}

use crate::metering::ChunkSender as Sender;

async fn run(stream: Stream, body: Body, tx: Sender) {
    let Stream {
        metering,
        mut reservation,
        sessions,
        ledger,
        challenge_id,
        voucher_timeout,
        ..
    } = stream;
    let call = metering.call();
    let mut meter = Meter {
        encoding: call
            .table
            .chat_model(&call.quote.model)
            .map(|(_, p)| p.encoding),
        input_units: call.quote.input_units,
        delivered: 0,
    };
    let hide = metering.hides_usage_chunk();
    let mut upstream = body.into_data_stream();
    let mut pending = BytesMut::new();
    let mut usage = None;
    let mut held_back: Option<BytesMut> = None; // the final `[DONE]`
    let mut cut_short = false;

    'read: while let Some(chunk) = upstream.next().await {
        let Ok(bytes) = chunk else {
            break;
        };
        pending.extend_from_slice(&bytes);
        while let Some(end) = find_event_end(&pending) {
            let event = pending.split_to(end);
            if !inspect_event(&event, hide, &mut usage) {
                continue;
            }
            if event.starts_with(b"data: [DONE]") {
                held_back = Some(event);
                continue;
            }
            let tokens = meter.tokens_in(&event);
            if tokens > 0 {
                let needed = metering.cost(Some(meter.usage(tokens)));
                if !cover(
                    &sessions,
                    &mut reservation,
                    needed,
                    call.quote.amount,
                    &tx,
                    voucher_timeout,
                )
                .await
                {
                    cut_short = true;
                    break 'read;
                }
                meter.delivered += tokens;
            }
            if tx.send(Ok(event.freeze())).await.is_err() {
                cut_short = true; // the client went away
                break 'read;
            }
        }
    }
    drop(upstream); // cancels the upstream call if we stopped early

    // What was delivered, priced; the upstream's own usage when the stream
    // ran to its end. Never above what the channel authorized.
    let delivered = metering.cost(Some(meter.usage(0)));
    let cost = match (cut_short, usage) {
        (false, Some(reported)) => metering.cost(Some(reported)),
        _ => delivered,
    }
    .min(reservation.held);
    let units = match (cut_short, usage) {
        (false, Some(u)) => u.input_tokens + u.output_tokens,
        _ => meter.input_units + meter.delivered,
    };
    let reported = if cut_short { None } else { usage };
    match sessions.commit(reservation, cost, units).await {
        Ok(committed) => {
            metering.record_cost(reported, cost, ledger);
            let receipt = sessions.receipt_json(&challenge_id, &committed, Some(units), None);
            let event = format!("event: payment-receipt\ndata: {receipt}\n\n");
            let _ = tx.send(Ok(Bytes::from(event))).await;
        }
        Err(e) => tracing::error!(error = %e, "could not commit a streamed session charge"),
    }
    if let Some(done) = held_back {
        let _ = tx.send(Ok(done.freeze())).await;
    }
}

/// Makes the reservation cover `needed`, growing it (to the whole worst
/// case when the balance allows, to save round trips) or pausing for a
/// voucher. `false` when no voucher came in time.
async fn cover(
    sessions: &SessionGate,
    reservation: &mut Reservation,
    needed: u128,
    quote: u128,
    tx: &Sender,
    timeout: Duration,
) -> bool {
    while needed > reservation.held {
        // Listen before checking, so a voucher landing in between is not missed.
        let bell = sessions.voucher_bell(&reservation.channel_id);
        let rung = bell.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();

        let rest = quote.max(needed) - reservation.held;
        let channel = match sessions.grow(reservation, rest).await {
            Ok(None) => return true,
            Ok(Some(channel)) => channel,
            Err(problem) => {
                tracing::info!(
                    problem = problem.kind.slug(),
                    "stream stopped: channel unavailable"
                );
                return false;
            }
        };
        let shortfall = needed - reservation.held;
        if shortfall <= channel.available() {
            if matches!(sessions.grow(reservation, shortfall).await, Ok(None)) {
                return true;
            }
            continue;
        }
        let floor = channel.accepted + shortfall - channel.available();
        let hoped = channel.accepted + rest - channel.available();
        let required = hoped.min(channel.deposit).max(floor);
        let event = json!({
            "channelId": channel.channel_id,
            "requiredCumulative": required.to_string(),
            "acceptedCumulative": channel.accepted.to_string(),
            "deposit": channel.deposit.to_string(),
        });
        let frame = format!("event: payment-need-voucher\ndata: {event}\n\n");
        if tx.send(Ok(Bytes::from(frame))).await.is_err() {
            return false;
        }
        tracing::info!("stream paused for a voucher");
        if tokio::time::timeout(timeout, rung).await.is_err() {
            tracing::info!("no voucher in time; ending the stream");
            return false;
        }
    }
    true
}
