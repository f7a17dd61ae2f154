//! Showing a streamed answer as it arrives: server-sent events split into
//! frames, the text printed token by token, and notes (a paused stream, a
//! voucher) on their own lines in between.

use std::io::Write;

use serde_json::Value;

/// One server-sent event.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// `event:` (`None` for plain data events).
    pub event: Option<String>,
    pub data: String,
}

/// Splits a `text/event-stream` body into frames, whatever the chunking.
#[derive(Default)]
pub struct Frames {
    buffer: Vec<u8>,
}

impl Frames {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Frame> {
        self.buffer.extend_from_slice(chunk);
        let mut frames = Vec::new();
        while let Some((end, gap)) = boundary(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end + gap).collect();
            let text = String::from_utf8_lossy(&raw[..end]);
            let mut frame = Frame {
                event: None,
                data: String::new(),
            };
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    frame.event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !frame.data.is_empty() {
                        frame.data.push('\n');
                    }
                    frame.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            frames.push(frame);
        }
        frames
    }
}

fn boundary(buffer: &[u8]) -> Option<(usize, usize)> {
    (0..buffer.len()).find_map(|i| {
        if buffer[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if buffer[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

/// The text a chat completion chunk adds (`choices[0].delta.content`).
pub fn delta_text(data: &str) -> Option<String> {
    let chunk: Value = serde_json::from_str(data).ok()?;
    chunk
        .pointer("/choices/0/delta/content")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

const MARGIN: &str = "    │ ";
const WIDTH: usize = 72;

/// Prints streamed text as it arrives, wrapped, with notes in between.
#[derive(Default)]
pub struct Printer {
    column: usize,
    pub text: String,
}

impl Printer {
    pub fn text(&mut self, piece: &str) {
        self.text.push_str(piece);
        let mut out = std::io::stdout().lock();
        let mut piece = piece;
        if self.column > 0 && self.column + piece.len() > WIDTH {
            let _ = writeln!(out);
            self.column = 0;
            piece = piece.trim_start();
        }
        if self.column == 0 {
            let _ = write!(out, "{MARGIN}");
            piece = piece.trim_start();
        }
        let _ = write!(out, "{piece}");
        let _ = out.flush();
        self.column += piece.len();
    }

    pub fn note(&mut self, note: &str) {
        self.end_line();
        println!("    {note}");
    }

    pub fn end_line(&mut self) {
        if self.column > 0 {
            println!();
            self.column = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks() {
        let mut frames = Frames::default();
        assert!(
            frames
                .feed(b"data: {\"choices\":[{\"delta\":{\"content\":\" hi\"}}]}\n")
                .is_empty()
        );
        let got = frames.feed(b"\nevent: payment-need-voucher\ndata: {}\n\ndata: [DONE]\n\n");
        assert_eq!(got.len(), 3);
        assert_eq!(delta_text(&got[0].data).as_deref(), Some(" hi"));
        assert_eq!(got[1].event.as_deref(), Some("payment-need-voucher"));
        assert_eq!(got[2].data, "[DONE]");
        assert_eq!(delta_text(&got[2].data), None);
    }
}
