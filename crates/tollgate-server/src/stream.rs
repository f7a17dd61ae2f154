//! Delivering an event stream, metered event by event, for every policy.
//!
//! The response is not sent until the upstream's first event arrives: a
//! stream that fails before delivering anything is an error answer and
//! costs nothing. Then each event is read for usage (in the upstream's own
//! format, so Anthropic's cache writes are seen), translated when the
//! client speaks OpenAI, priced before it is delivered (the hold must cover
//! it: a session stream may pause for a voucher) and sent. At the end the
//! hold is charged for what was delivered — the upstream's usage when the
//! stream ran to its end, else the prompt plus the tokens counted here —
//! and a session's receipt event follows; `[DONE]` only ends a stream that
//! is whole.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::oneshot;
use tollgate_ledger::Ledger;
use tollgate_providers::anthropic::StreamTranslator;

use crate::metering::{Meter, Metered};
use crate::policy::{EventSink, Hold};
use crate::problem::{ApiError, Problem, upstream as fault};
use crate::sse::{SseEvent, SseFramer};
use crate::upstream::Answer;
use crate::usage::StreamUsage;

/// A response body fed from a task (at most 32 chunks buffered, so a slow
/// client slows the upstream read down).
pub fn channel_body() -> (EventSink, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (tx, body)
}

/// A free answer: passed on, translated when needed, never metered.
pub fn pass_through(answer: Answer) -> Response {
    let Answer {
        head,
        body,
        translation,
    } = answer;
    let Some(info) = translation else {
        return Response::from_parts(head, body);
    };
    if !crate::sse::is_event_stream(&head.headers) {
        // A whole translated answer is read and translated without metering.
        let (tx, out) = channel_body();
        tokio::spawn(async move {
            let Ok(bytes) =
                crate::upstream::read_whole(body, crate::upstream::MAX_ANSWER_BYTES).await
            else {
                return;
            };
            let created = time::OffsetDateTime::now_utc().unix_timestamp();
            let translated = tollgate_providers::anthropic::from_anthropic::response_body(
                &bytes,
                &info.response_options(created),
            )
            .map(|(json, _)| json)
            .unwrap_or_default();
            let _ = tx.send(Ok(Bytes::from(translated))).await;
        });
        // The upstream's headers (already allow-listed: request ids, retry
        // hints) stay; the body is now OpenAI's JSON.
        let mut head = head;
        head.headers.remove(header::CONTENT_LENGTH);
        head.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Response::from_parts(head, out);
    }
    let request_ids = request_ids(&head.headers);
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut events = Events::new(body, Some(info.stream_translator(created)));
    let (tx, out) = channel_body();
    tokio::spawn(async move {
        while let Ok(Some(upstream_event)) = events.next().await {
            let out = events.translate(&upstream_event);
            for event in out.events {
                if tx.send(Ok(event.wire)).await.is_err() {
                    return;
                }
            }
            if out.stop {
                return;
            }
        }
        if events.whole() {
            let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        }
    });
    let mut response = stream_response(out);
    response.headers_mut().extend(request_ids);
    response
}

/// The upstream's request ids, for a response built anew.
fn request_ids(headers: &axum::http::HeaderMap) -> axum::http::HeaderMap {
    let mut ids = axum::http::HeaderMap::new();
    for name in ["request-id", "x-request-id"] {
        if let Some(value) = headers.get(name) {
            ids.insert(name, value.clone());
        }
    }
    ids
}

fn stream_response(out: Body) -> Response {
    let mut response = Response::new(out);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Delivers a paid stream under `hold`.
pub async fn deliver(
    answer: Answer,
    hold: Box<dyn Hold>,
    meter: Option<Meter>,
    ledger: Arc<dyn Ledger>,
) -> Result<Response, ApiError> {
    let Answer {
        head,
        body,
        translation,
    } = answer;
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let translated = translation.is_some();
    let events = Events::new(
        body,
        translation.map(|info| info.stream_translator(created)),
    );
    let (tx, out) = channel_body();
    let (ready_tx, ready) = oneshot::channel();
    tokio::spawn(run(Run {
        events,
        hold,
        meter,
        ledger,
        tx,
        ready: Some(ready_tx),
    }));
    let receipt = match ready.await {
        Ok(Ok(receipt)) => receipt,
        Ok(Err(error)) => return Err(error),
        Err(_) => return Err(fault::cut().into()),
    };
    let mut response = if translated {
        let mut response = stream_response(out);
        response.headers_mut().extend(request_ids(&head.headers));
        response
    } else {
        let mut head = head;
        head.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(head, out)
    };
    if let Some(paid) = receipt {
        let headers = response.headers_mut();
        crate::receipts::attach(headers, &paid);
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
    }
    Ok(response)
}

/// The upstream's events, framed (and translated when the client speaks
/// OpenAI and the upstream Anthropic).
struct Events {
    upstream: futures::stream::BoxStream<'static, Result<Bytes, axum::Error>>,
    framer: SseFramer,
    queued: std::collections::VecDeque<SseEvent>,
    translator: Option<StreamTranslator>,
    ended: bool,
    /// The upstream body failed (cut or stalled).
    failure: Option<Problem>,
}

/// What one upstream event becomes for the client.
struct Translated {
    events: Vec<SseEvent>,
    /// The translation ended with an error: stop, without `[DONE]`.
    stop: bool,
}

impl Events {
    fn new(body: Body, translator: Option<StreamTranslator>) -> Self {
        Self {
            upstream: body.into_data_stream().boxed(),
            framer: SseFramer::new(),
            queued: Default::default(),
            translator,
            ended: false,
            failure: None,
        }
    }

    /// The next upstream event; `Ok(None)` at the end (or after a failure,
    /// which [`failure`](Self::failure) then tells).
    async fn next(&mut self) -> Result<Option<SseEvent>, ()> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            match self.upstream.next().await {
                Some(Ok(bytes)) => match self.framer.push(&bytes) {
                    Ok(events) => self.queued.extend(events),
                    Err(_) => {
                        self.failure = Some(fault::malformed("an upstream event was too large"));
                        self.ended = true;
                    }
                },
                Some(Err(e)) => {
                    self.failure = Some(crate::upstream::body_failure(&e, None));
                    self.ended = true;
                }
                None => {
                    self.queued.extend(self.framer.finish());
                    self.ended = true;
                }
            }
        }
    }

    /// The upstream ended cleanly (and a translated stream finished).
    fn whole(&self) -> bool {
        self.failure.is_none()
            && self
                .translator
                .as_ref()
                .is_none_or(|t| t.finished() && !t.errored())
    }

    fn translate(&mut self, event: &SseEvent) -> Translated {
        let Some(translator) = &mut self.translator else {
            return Translated {
                events: vec![event.clone()],
                stop: false,
            };
        };
        let Some(data) = event.data.as_deref() else {
            return Translated {
                events: Vec::new(),
                stop: false,
            };
        };
        match translator.on_event(event.kind(), data) {
            Ok(chunks) => Translated {
                events: chunks.iter().map(|c| SseEvent::new(None, c)).collect(),
                stop: translator.errored(),
            },
            Err(e) => {
                tracing::warn!(code = e.code, "untranslatable upstream event; stream ended");
                Translated {
                    events: vec![SseEvent::new(None, &e.to_openai_body().to_string())],
                    stop: true,
                }
            }
        }
    }
}

struct Run {
    events: Events,
    hold: Box<dyn Hold>,
    meter: Option<Meter>,
    ledger: Arc<dyn Ledger>,
    tx: EventSink,
    /// Resolved once the first event is in: the receipt header, or why
    /// the stream could not start (nothing delivered, nothing charged).
    ready: Option<oneshot::Sender<Result<Option<crate::receipts::PaidHeaders>, ApiError>>>,
}

async fn run(mut run: Run) {
    let hide_usage_chunk = run.meter.as_ref().is_some_and(Meter::hides_usage_chunk);
    let delivered_tokens = run.meter.as_ref().map(Meter::delivered);
    let mut usage = StreamUsage::default();
    let mut output_delivered = 0u64;
    let mut held_back_done: Option<SseEvent> = None;
    let mut cut_short = false;

    'events: loop {
        let next = tokio::select! {
            next = run.events.next() => next,
            _ = run.tx.closed() => {
                cut_short = true; // the client went away
                break 'events;
            }
        };
        let Ok(Some(event)) = next else {
            break;
        };
        if let Some(ready) = run.ready.take() {
            match run.hold.start_stream().await {
                Ok(receipt) => {
                    if ready.send(Ok(receipt)).is_err() {
                        cut_short = true;
                        break;
                    }
                }
                Err(refusal) => {
                    let _ = ready.send(Err(refusal));
                    return; // nothing delivered; the hold is released
                }
            }
        }
        let reading = usage.observe(&event);
        let translated = run.events.translate(&event);
        let tokens = delivered_tokens
            .as_ref()
            .map_or(0, |counter| counter.in_event(&event));
        let mut delivered_cost = None;
        if tokens > 0
            && let Some(meter) = &run.meter
        {
            let needed = meter.cost(meter.counted(output_delivered + tokens));
            if !run.hold.cover(needed, &run.tx).await {
                cut_short = true;
                break;
            }
            delivered_cost = Some(needed);
        }
        output_delivered += tokens;
        let translating = run.events.translator.is_some();
        for out in translated.events {
            let usage_only = if translating {
                crate::usage::is_usage_only_chunk(&out)
            } else {
                reading.usage_only
            };
            if hide_usage_chunk && usage_only {
                continue;
            }
            if !translating && out.is_done() {
                held_back_done = Some(out);
                continue;
            }
            if run.tx.send(Ok(out.wire)).await.is_err() {
                cut_short = true;
                break 'events;
            }
        }
        if let Some(cost) = delivered_cost {
            run.hold.delivered(output_delivered, cost).await;
        }
        if translated.stop {
            cut_short = true;
            break;
        }
    }
    if let Some(ready) = run.ready.take() {
        // The upstream ended or failed before its first event.
        let failure = run.events.failure.take().unwrap_or_else(fault::cut);
        let _ = ready.send(Err(failure.into()));
        return;
    }
    let whole = !cut_short && run.events.whole();
    if !whole && let Some(failure) = &run.events.failure {
        tracing::warn!(
            code = failure.code(),
            "upstream stream broke off; charging what was delivered"
        );
    }
    let metered = match &run.meter {
        Some(meter) => meter.settle(usage.reported(), whole, output_delivered),
        None => Metered {
            usage: Default::default(),
            reported: false,
            whole,
            cost: 0,
        },
    };
    let challenge_id = run.hold.challenge_id().to_owned();
    let receipt = run.hold.end_stream(&metered).await;
    if let Some(meter) = &run.meter {
        meter.record(&challenge_id, metered, Arc::clone(&run.ledger));
    }
    if let Some(receipt) = receipt {
        let _ = run.tx.send(Ok(receipt.wire)).await;
    }
    if whole {
        let done = match (&run.events.translator, held_back_done) {
            (Some(_), _) => Some(Bytes::from_static(b"data: [DONE]\n\n")),
            (None, Some(done)) => Some(done.wire),
            (None, None) => None,
        };
        if let Some(done) = done {
            let _ = run.tx.send(Ok(done)).await;
        }
    }
}
