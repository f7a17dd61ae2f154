//! Structured logs on stderr; `RUST_LOG` sets the filter (default `info`).
//! Built with the `otlp` feature and given `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! the spans (one `request` span per request) are also exported as
//! OpenTelemetry traces over OTLP/HTTP.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes exported traces when dropped (at exit).
pub struct Guard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

pub fn init() -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            // Colour codes only for a person watching; a file or a
            // collector gets plain `key=value` lines.
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr),
    );
    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = match otlp::layer() {
            Some((layer, provider)) => (Some(layer), Some(provider)),
            None => (None, None),
        };
        registry.with(layer).init();
        Guard { provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        Guard {}
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
