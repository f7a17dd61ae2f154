//! Structured logs on stderr; `RUST_LOG` sets the filter (default `info`).

use std::io::IsTerminal;

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person watching; a file or a collector
        // gets plain `key=value` lines (and the gateway skips formatting them).
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
