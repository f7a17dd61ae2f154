//! The one event-stream framer (WHATWG `text/event-stream` rules): lines end
//! in LF, CRLF or CR; an event ends at a blank line; `data` lines join with
//! LF; lines starting with `:` are comments; a field without a colon has an
//! empty value and one space after the colon is dropped. A last event that
//! the upstream did not end with a blank line is flushed by [`finish`].
//!
//! It does not care how bytes arrive: one at a time, an event split over
//! reads, or many events in one read all frame the same.
//!
//! [`finish`]: SseFramer::finish

use bytes::{Bytes, BytesMut};

/// One framed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (`None` for the default `message`).
    pub name: Option<String>,
    /// The `data:` lines, joined with LF (`None` when there were none).
    pub data: Option<String>,
    /// The event re-encoded with LF line ends and a terminating blank line,
    /// comments and other fields kept: what goes on to a client.
    pub wire: Bytes,
}

impl SseEvent {
    /// An event built by the gateway itself.
    pub fn new(name: Option<&str>, data: &str) -> Self {
        let mut wire = String::new();
        if let Some(name) = name {
            wire.push_str("event: ");
            wire.push_str(name);
            wire.push('\n');
        }
        for line in data.split('\n') {
            wire.push_str("data: ");
            wire.push_str(line);
            wire.push('\n');
        }
        wire.push('\n');
        Self {
            name: name.map(str::to_owned),
            data: Some(data.to_owned()),
            wire: Bytes::from(wire),
        }
    }

    /// The event's name as a dispatcher sees it.
    pub fn kind(&self) -> &str {
        self.name.as_deref().unwrap_or("message")
    }

    /// OpenAI's end-of-stream sentinel.
    pub fn is_done(&self) -> bool {
        self.data.as_deref().map(str::trim) == Some("[DONE]")
    }

    /// The data parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.data.as_deref()?).ok()
    }
}

/// Frames a byte stream into events.
#[derive(Debug, Default)]
pub struct SseFramer {
    /// Bytes of the line being read (no terminator yet).
    line: BytesMut,
    /// The previous chunk ended in CR: a LF starting the next one belongs to it.
    after_cr: bool,
    current: Pending,
    /// Bytes held: bounds what a hostile upstream can make us buffer.
    held: usize,
}

#[derive(Debug, Default)]
struct Pending {
    name: Option<String>,
    data: Option<String>,
    wire: String,
    lines: usize,
}

/// An event larger than this is refused (the stream is broken off).
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The upstream sent an event larger than [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream event exceeds {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLarge;

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = self.line.split();
            if let Some(event) = self.on_line(&line) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        self.held = self.current.wire.len() + self.line.len();
        if self.held > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(events)
    }

    /// The stream ended: the last event, if the upstream did not end it
    /// with a blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let line = self.line.split();
            if let Some(event) = self.on_line(&line) {
                return Some(event);
            }
        }
        self.dispatch()
    }

    fn on_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        let text = String::from_utf8_lossy(line);
        self.current.wire.push_str(&text);
        self.current.wire.push('\n');
        self.current.lines += 1;
        if text.starts_with(':') {
            return None;
        }
        let (field, value) = match text.find(':') {
            Some(i) => {
                let value = &text[i + 1..];
                (&text[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&text[..], ""),
        };
        match field {
            "event" => self.current.name = Some(value.to_owned()),
            "data" => match &mut self.current.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.current.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        if self.current.lines == 0 {
            return None;
        }
        let mut pending = std::mem::take(&mut self.current);
        pending.wire.push('\n');
        Some(SseEvent {
            name: pending.name,
            data: pending.data,
            wire: Bytes::from(pending.wire),
        })
    }
}

/// Whether a response's content type is an event stream.
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..17)
                .is_some_and(|p| p.eq_ignore_ascii_case("text/event-stream"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut framer = SseFramer::new();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(framer.push(piece).unwrap());
        }
        out.extend(framer.finish());
        out
    }

    fn summary(events: &[SseEvent]) -> Vec<(String, Option<String>)> {
        events
            .iter()
            .map(|e| (e.kind().to_owned(), e.data.clone()))
            .collect()
    }

    const STREAM: &str = ": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: line one\ndata: line two\n\ndata:no-space\nid: 7\n\ndata: [DONE]\n\n";

    fn expected() -> Vec<(String, Option<String>)> {
        vec![
            ("message".into(), None),
            ("message_start".into(), Some("{\"a\":1}".into())),
            ("message".into(), Some("line one\nline two".into())),
            ("message".into(), Some("no-space".into())),
            ("message".into(), Some("[DONE]".into())),
        ]
    }

    #[test]
    fn lf_crlf_and_cr_line_ends_frame_the_same() {
        for ending in ["\n", "\r\n", "\r"] {
            let stream = STREAM.replace('\n', ending);
            let events = frame_all(&[stream.as_bytes()]);
            assert_eq!(summary(&events), expected(), "line end {ending:?}");
            assert!(events[4].is_done());
            // What goes on is normalised to LF.
            assert_eq!(
                &events[1].wire[..],
                b"event: message_start\ndata: {\"a\":1}\n\n"
            );
        }
    }

    #[test]
    fn every_split_point_frames_the_same() {
        for ending in ["\n", "\r\n", "\r"] {
            let stream = STREAM.replace('\n', ending);
            let bytes = stream.as_bytes();
            // Byte by byte.
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(summary(&frame_all(&singles)), expected());
            // Every two-piece split.
            for cut in 0..=bytes.len() {
                let events = frame_all(&[&bytes[..cut], &bytes[cut..]]);
                assert_eq!(summary(&events), expected(), "cut at {cut} ({ending:?})");
            }
        }
    }

    #[test]
    fn a_last_event_without_a_blank_line_is_flushed_at_the_end() {
        for tail in [
            "data: last",
            "data: last\n",
            "data: last\r\n",
            "data: last\r",
        ] {
            let events = frame_all(&[b"data: first\n\n", tail.as_bytes()]);
            assert_eq!(
                summary(&events),
                vec![
                    ("message".into(), Some("first".into())),
                    ("message".into(), Some("last".into()))
                ],
                "{tail:?}"
            );
            assert_eq!(&events[1].wire[..], b"data: last\n\n");
        }
    }

    #[test]
    fn a_huge_event_is_refused_not_buffered() {
        let mut framer = SseFramer::new();
        let big = vec![b'x'; MAX_EVENT_BYTES / 4];
        framer.push(b"data: ").unwrap();
        let mut refused = false;
        for _ in 0..5 {
            if framer.push(&big).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    #[test]
    fn gateway_events_encode_multi_line_data() {
        let event = SseEvent::new(Some("payment-receipt"), "a\nb");
        assert_eq!(
            &event.wire[..],
            b"event: payment-receipt\ndata: a\ndata: b\n\n"
        );
        let reframed = frame_all(&[&event.wire]);
        assert_eq!(reframed, vec![event]);
    }
}
