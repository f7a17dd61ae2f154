//! Structured logs on stderr; `RUST_LOG` sets the filter (default `info`).
//! Built with the `otlp` feature and given `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! the spans (one `request` span per request) are also exported as
//! OpenTelemetry traces over OTLP/HTTP.
//!
//! The server's lines (one per request) are written in batches by a thread
//! of their own ([`Batched`]): a request's line costs a copy into a buffer,
//! not a `write(2)` on the worker serving it.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Writes what is buffered and flushes exported traces when dropped (at
/// exit).
pub struct Guard {
    batched: Option<Batched>,
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(batched) = self.batched.take() {
            batched.close();
        }
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// How long a line may wait in the buffer.
const BATCH_INTERVAL: Duration = Duration::from_millis(10);
/// A buffer this full wakes the writer thread at once.
const BATCH_EAGER: usize = 64 * 1024;
/// A buffer this full makes loggers wait for the writer thread (stderr
/// is slower than the lines come): nothing is dropped, nothing grows
/// without bound.
const BATCH_MAX: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Batch {
    lines: Mutex<(Vec<u8>, bool)>,
    /// The buffer filled up, or the logs are closing.
    wake: Condvar,
    /// The writer thread took the buffer.
    drained: Condvar,
}

/// stderr through a buffer that a thread of its own writes out every
/// [`BATCH_INTERVAL`], in the order the lines came.
pub struct Batched {
    batch: Arc<Batch>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Batched {
    fn start() -> Self {
        let batch = Arc::new(Batch::default());
        let writer = Arc::clone(&batch);
        let thread = std::thread::Builder::new()
            .name("tollgate-logs".into())
            .spawn(move || write_batches(&writer));
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                // Without the thread every line is written where it is logged.
                eprintln!("log writer thread: {e}");
                batch.lines.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
                None
            }
        };
        Self { batch, thread }
    }

    fn writer(&self) -> BatchedStderr {
        BatchedStderr(Arc::clone(&self.batch))
    }

    /// Has the thread write what is left; later lines go straight to
    /// stderr.
    fn close(mut self) {
        self.batch.lines.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.batch.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_batches(batch: &Batch) {
    // Two buffers trade places, so loggers append into one that already
    // has its capacity instead of growing a new one every batch.
    let mut taken = Vec::new();
    loop {
        let closed = {
            let mut lines = batch.lines.lock().unwrap_or_else(|p| p.into_inner());
            if lines.0.len() < BATCH_EAGER && !lines.1 {
                lines = batch
                    .wake
                    .wait_timeout(lines, BATCH_INTERVAL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            taken.clear();
            std::mem::swap(&mut taken, &mut lines.0);
            lines.1
        };
        batch.drained.notify_all();
        if !taken.is_empty() {
            let _ = std::io::stderr().lock().write_all(&taken);
        }
        if taken.capacity() > BATCH_MAX {
            // A burst's buffer is not kept.
            taken = Vec::new();
        }
        if closed {
            return;
        }
    }
}

/// What the log layer writes to.
#[derive(Clone)]
pub struct BatchedStderr(Arc<Batch>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedStderr {
    type Writer = BatchWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        BatchWriter(&self.0)
    }
}

pub struct BatchWriter<'a>(&'a Batch);

impl Write for BatchWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let batch = self.0;
        let mut lines = batch.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.1 {
            drop(lines);
            return std::io::stderr().write(buf);
        }
        while lines.0.len() >= BATCH_MAX && !lines.1 {
            batch.wake.notify_one();
            lines = batch
                .drained
                .wait_timeout(lines, BATCH_INTERVAL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        lines.0.extend_from_slice(buf);
        if lines.0.len() >= BATCH_EAGER {
            batch.wake.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs for a command; `batched` for the server (many lines, a hot path).
pub fn init(batched: bool) -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let batched = batched.then(Batched::start);
    let writer = match &batched {
        Some(batched) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(batched.writer()),
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let registry = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            // Colour codes only for a person watching; a file or a
            // collector gets plain `key=value` lines.
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(writer),
    );
    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = match otlp::layer() {
            Some((layer, provider)) => {
                tollgate_server::trace_requests();
                (Some(layer), Some(provider))
            }
            None => (None, None),
        };
        registry.with(layer).init();
        Guard { batched, provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        Guard { batched }
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// The OTLP layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub fn layer<S>() -> Option<(
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        SdkTracerProvider,
    )>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
        {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("OTLP traces disabled: {e}");
                return None;
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("tollgate")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("tollgate");
        Some((tracing_opentelemetry::layer().with_tracer(tracer), provider))
    }
}
