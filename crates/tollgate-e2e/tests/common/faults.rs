//! A fault-injecting upstream on loopback, written on raw TCP so it can do
//! what a real server does wrong: frame SSE with CRLF or CR, split or
//! coalesce events across writes, cut a body short, stall, hang after its
//! headers, answer malformed JSON, or leave usage out. It speaks OpenAI's
//! chat format (and Anthropic's Messages format on `/v1/messages`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How SSE lines end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    Lf,
    CrLf,
    Cr,
}

impl LineEnd {
    fn apply(self, text: &str) -> String {
        match self {
            Self::Lf => text.to_owned(),
            Self::CrLf => text.replace('\n', "\r\n"),
            Self::Cr => text.replace('\n', "\r"),
        }
    }
}

/// How a stream's bytes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// One write per event.
    PerEvent,
    /// One byte per write.
    ByteByByte,
    /// Everything in one write.
    Coalesced,
    /// Each event split in two writes, mid-way.
    Split,
}

/// What the upstream does with the next requests.
#[derive(Debug, Clone)]
pub enum Mode {
    /// A normal JSON answer with usage.
    Json,
    /// JSON without `usage`.
    JsonWithoutUsage,
    /// `200` whose body is not JSON.
    MalformedJson,
    /// An error status with an OpenAI error body (and `retry-after` on 429).
    Status(u16),
    /// Headers promise more bytes than are sent; the connection closes.
    BodyCut,
    /// Part of the body, then silence.
    BodyStall,
    /// Headers, then silence.
    HangAfterHeaders,
    /// Reads the request and never answers (no headers).
    Timeout,
    /// Waits this long before answering normally (JSON).
    Slow(Duration),
    /// A chat stream (Anthropic's on `/v1/messages`).
    Stream(StreamSpec),
}

/// A stream of `words` content events (and a usage chunk).
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub words: usize,
    pub line_end: LineEnd,
    pub writes: Writes,
    /// End without the blank line after the last event.
    pub no_final_blank: bool,
    pub usage: bool,
    /// Pause between events.
    pub interval: Duration,
    /// Break off after this many content events (no usage, no `[DONE]`).
    pub cut_after: Option<usize>,
    /// Go silent after this many content events.
    pub stall_after: Option<usize>,
}

impl StreamSpec {
    pub fn words(words: usize) -> Self {
        Self {
            words,
            line_end: LineEnd::Lf,
            writes: Writes::PerEvent,
            no_final_blank: false,
            usage: true,
            interval: Duration::ZERO,
            cut_after: None,
            stall_after: None,
        }
    }
}

impl Mode {
    pub fn stream(words: usize) -> Self {
        Self::Stream(StreamSpec::words(words))
    }
}

/// The usage every answer reports: the test's expected counts.
pub const PROMPT_TOKENS: u64 = 20;

/// A running fault upstream.
#[derive(Clone)]
pub struct FaultUpstream {
    pub url: String,
    mode: Arc<Mutex<Mode>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FaultUpstream {
    pub async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = Self {
            url,
            mode: Arc::new(Mutex::new(mode)),
            requests: Arc::default(),
        };
        let serving = upstream.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let upstream = serving.clone();
                tokio::spawn(async move { upstream.serve(socket).await });
            }
        });
        upstream
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Request bodies received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    async fn serve(&self, mut socket: TcpStream) {
        loop {
            let Some((path, body)) = read_request(&mut socket).await else {
                return;
            };
            self.requests.lock().unwrap().push(body.clone());
            let mode = self.mode.lock().unwrap().clone();
            let anthropic = path.starts_with("/v1/messages");
            if !answer(&mut socket, &mode, anthropic).await {
                return;
            }
        }
    }
}

/// Reads one request; `None` when the client closed.
async fn read_request(socket: &mut TcpStream) -> Option<(String, String)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).to_string();
    Some((path, body))
}

/// The usage a chat answer of `words` words reports.
pub fn completion_tokens(words: usize) -> u64 {
    words as u64
}

fn chat_json(usage: bool) -> String {
    let usage = if usage {
        format!(
            r#","usage":{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":5,"total_tokens":{}}}"#,
            PROMPT_TOKENS + 5
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"id":"chatcmpl-f","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"one two three four five"}},"finish_reason":"stop"}}]{usage}}}"#
    )
}

fn anthropic_json() -> String {
    format!(
        r#"{{"id":"msg_f","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{{"type":"text","text":"one two three four five"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":{PROMPT_TOKENS},"output_tokens":5}}}}"#
    )
}

fn chat_events(words: usize, usage: bool) -> Vec<String> {
    let mut events = vec![
        r#"data: {"id":"chatcmpl-f","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#.to_owned() + "\n\n",
    ];
    for i in 0..words {
        events.push(format!(
            "data: {{\"id\":\"chatcmpl-f\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}word{i}\"}},\"finish_reason\":null}}]}}\n\n",
            if i == 0 { "" } else { " " }
        ));
    }
    events.push(r#"data: {"id":"chatcmpl-f","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_owned() + "\n\n");
    if usage {
        events.push(format!(
            "data: {{\"id\":\"chatcmpl-f\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{PROMPT_TOKENS},\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
            completion_tokens(words),
            PROMPT_TOKENS + completion_tokens(words)
        ));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn anthropic_events(words: usize, usage: bool) -> Vec<String> {
    let mut events = vec![format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_f\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"output_tokens\":1}}}}}}\n\n",
        if usage { PROMPT_TOKENS } else { 0 }
    )];
    events.push("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_owned());
    for i in 0..words {
        events.push(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}word{i}\"}}}}\n\n",
            if i == 0 { "" } else { " " }
        ));
    }
    events.push(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
            .to_owned(),
    );
    events.push(format!(
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
        completion_tokens(words)
    ));
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned());
    events
}

/// Writes one answer; `false` when the connection must close.
async fn answer(socket: &mut TcpStream, mode: &Mode, anthropic: bool) -> bool {
    let json_head = |length: usize| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nserver: fault-upstream/1.0\r\n\r\n"
        )
    };
    match mode {
        Mode::Json | Mode::Slow(_) => {
            if let Mode::Slow(delay) = mode {
                tokio::time::sleep(*delay).await;
            }
            let body = if anthropic {
                anthropic_json()
            } else {
                chat_json(true)
            };
            let out = json_head(body.len()) + &body;
            socket.write_all(out.as_bytes()).await.is_ok()
        }
        Mode::JsonWithoutUsage => {
            let body = chat_json(false);
            let out = json_head(body.len()) + &body;
            socket.write_all(out.as_bytes()).await.is_ok()
        }
        Mode::MalformedJson => {
            let body = "{\"id\":\"chatcmpl-f\",\"choices\":[{\"message\":";
            let out = json_head(body.len()) + body;
            socket.write_all(out.as_bytes()).await.is_ok()
        }
        Mode::Status(status) => {
            let body = r#"{"error":{"message":"upstream says no","type":"server_error","param":null,"code":null}}"#;
            let retry = if *status == 429 {
                "retry-after: 7\r\n"
            } else {
                ""
            };
            let out = format!(
                "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}\r\n{body}",
                body.len()
            );
            socket.write_all(out.as_bytes()).await.is_ok()
        }
        Mode::BodyCut => {
            let body = chat_json(true);
            let out = json_head(body.len()) + &body[..body.len() / 2];
            let _ = socket.write_all(out.as_bytes()).await;
            false
        }
        Mode::BodyStall => {
            let body = chat_json(true);
            let out = json_head(body.len()) + &body[..body.len() / 2];
            let _ = socket.write_all(out.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            false
        }
        Mode::HangAfterHeaders => {
            let _ = socket.write_all(json_head(100).as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            false
        }
        Mode::Timeout => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            false
        }
        Mode::Stream(StreamSpec {
            words,
            line_end,
            writes,
            no_final_blank,
            usage,
            interval,
            cut_after,
            stall_after,
        }) => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nserver: fault-upstream/1.0\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            let mut events = if anthropic {
                anthropic_events(*words, *usage)
            } else {
                chat_events(*words, *usage)
            };
            // Events before the first content event do not count as content.
            let lead = if anthropic { 2 } else { 1 };
            if let Some(n) = cut_after {
                events.truncate(lead + n);
            }
            let stall_at = stall_after.map(|n| lead + n);
            let cut = cut_after.is_some();
            if *no_final_blank && let Some(last) = events.last_mut() {
                last.truncate(last.len() - 1);
            }
            let events: Vec<String> = events.iter().map(|e| line_end.apply(e)).collect();
            if *writes == Writes::Coalesced {
                let ok = write_chunk(socket, events.concat().as_bytes()).await;
                return ok && !cut && socket.write_all(b"0\r\n\r\n").await.is_ok();
            }
            for (i, event) in events.iter().enumerate() {
                if stall_at == Some(i) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let bytes = event.as_bytes();
                let written = match writes {
                    Writes::ByteByByte => {
                        let mut ok = true;
                        for b in bytes {
                            ok &= write_chunk(socket, &[*b]).await;
                        }
                        ok
                    }
                    Writes::Split => {
                        let mid = bytes.len() / 2;
                        let a = write_chunk(socket, &bytes[..mid]).await;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        a && write_chunk(socket, &bytes[mid..]).await
                    }
                    _ => write_chunk(socket, bytes).await,
                };
                if !written {
                    return false;
                }
                if !interval.is_zero() {
                    tokio::time::sleep(*interval).await;
                }
            }
            // A cut stream closes without the last chunk: a broken body.
            !cut && socket.write_all(b"0\r\n\r\n").await.is_ok()
        }
    }
}

async fn write_chunk(socket: &mut TcpStream, bytes: &[u8]) -> bool {
    let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
    frame.extend_from_slice(bytes);
    frame.extend_from_slice(b"\r\n");
    socket.write_all(&frame).await.is_ok() && socket.flush().await.is_ok()
}
