//! `Payment-Receipt` (base64url JSON) and the `payment-receipt` stream event.

use base64::Engine;
use serde_json::Value;

/// A decoded receipt. Charge receipts carry `reference` (the transaction
/// hash); session receipts `channelId`, `acceptedCumulative`, `spent`,
/// `units` and, on a close, `txHash`.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt(pub Value);

impl Receipt {
    /// Decodes a `Payment-Receipt` header value.
    pub fn from_header(value: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value.trim().trim_end_matches('='))
            .ok()?;
        let json: Value = serde_json::from_slice(&bytes).ok()?;
        json.is_object().then_some(Self(json))
    }

    pub fn json(&self) -> &Value {
        &self.0
    }

    fn text(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(Value::as_str)
    }

    fn amount(&self, field: &str) -> Option<u128> {
        match self.0.get(field)? {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64().map(u128::from),
            _ => None,
        }
    }

    pub fn reference(&self) -> Option<&str> {
        self.text("reference")
    }
    pub fn tx_hash(&self) -> Option<&str> {
        self.text("txHash")
    }
    pub fn channel_id(&self) -> Option<&str> {
        self.text("channelId")
    }
    pub fn accepted_cumulative(&self) -> Option<u128> {
        self.amount("acceptedCumulative")
    }
    pub fn spent(&self) -> Option<u128> {
        self.amount("spent")
    }
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An incremental `text/event-stream` parser: feed bytes, get events.
#[derive(Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
}

/// One server-sent event: its name (`message` when unnamed) and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub name: String,
    pub data: String,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some((end, sep)) = find_boundary(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end + sep).collect();
            let text = String::from_utf8_lossy(&raw[..end]);
            let mut name = "message".to_owned();
            let mut data = Vec::new();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                }
            }
            if !data.is_empty() || name != "message" {
                events.push(SseEvent {
                    name,
                    data: data.join("\n"),
                });
            }
        }
        events
    }
}

/// The first blank line: (index where it starts, separator length).
fn find_boundary(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buffer.len() {
        if buffer[i] == b'\n' && buffer[i + 1] == b'\n' {
            return Some((i, 2));
        }
        if buffer[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_decode() {
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"channelId":"0x01","acceptedCumulative":"100","spent":"40"}"#);
        let r = Receipt::from_header(&header).unwrap();
        assert_eq!((r.accepted_cumulative(), r.spent()), (Some(100), Some(40)));
        assert!(Receipt::from_header("not base64!").is_none());
    }

    #[test]
    fn events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.feed(b"data: {\"a\":1}\n").is_empty());
        let e = p.feed(b"\nevent: payment-need-voucher\ndata: {\"x\"");
        assert_eq!(
            e,
            vec![SseEvent {
                name: "message".into(),
                data: "{\"a\":1}".into()
            }]
        );
        let e = p.feed(b":2}\n\ndata: [DONE]\n\n");
        assert_eq!(e[0].name, "payment-need-voucher");
        assert_eq!(e[0].data, "{\"x\":2}");
        assert_eq!(e[1].data, "[DONE]");
    }
}
