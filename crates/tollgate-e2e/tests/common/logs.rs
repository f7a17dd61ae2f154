//! Captures every log line the gateway writes during the tests (at debug
//! level, all crates) so tests can prove no secret reaches the logs.

use std::io::Write;
use std::sync::{Mutex, Once, OnceLock};

static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
static INIT: Once = Once::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(lock) = BUFFER.get()
            && let Ok(mut b) = lock.lock()
        {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn install() {
    INIT.call_once(|| {
        BUFFER.get_or_init(|| Mutex::new(Vec::new()));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

pub fn captured() -> String {
    BUFFER
        .get()
        .and_then(|b| {
            b.lock()
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .unwrap_or_default()
}

/// Fails if any `secret` (case-insensitive) appears in the captured logs.
pub fn assert_absent(secrets: &[&str]) {
    let logs = captured().to_ascii_lowercase();
    assert!(!logs.is_empty(), "no logs were captured at all");
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        let needle = secret.to_ascii_lowercase();
        let needle = needle.trim_start_matches("0x");
        assert!(
            !logs.contains(needle),
            "a secret ({}…) appeared in the logs",
            &secret[..secret.len().min(10)]
        );
    }
}
