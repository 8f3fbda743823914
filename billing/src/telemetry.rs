//! Logging and metrics setup shared by every binary.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

/// Human-readable lines in dev, one JSON object per line (with the span's fields, e.g.
/// `request_id`) when `log.format = "json"`. `RUST_LOG` overrides `log.level`.
pub fn init_tracing(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(LogEventCounter);
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init(),
    };
}

/// Counts the warnings and errors that pass the filter into `log_events_total{level}`, so
/// the alert rules can watch the log rate of every process without a log pipeline.
struct LogEventCounter;

impl<S: tracing::Subscriber> Layer<S> for LogEventCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warn",
            _ => return,
        };
        metrics::counter!("log_events_total", "level" => level).increment(1);
    }
}

/// The `/metrics` body: the process's own figures (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, …, read from `/proc` at scrape time) and every metric
/// the code recorded.
pub fn render_metrics(handle: &PrometheusHandle) -> String {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let c = metrics_process::Collector::default();
            c.describe();
            c
        })
        .collect();
    handle.render()
}

/// The process-wide Prometheus recorder (the `metrics` facade is global by design).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

tokio::task_local! {
    static REQUEST_ID: Option<String>;
}

/// Runs `fut` with `id` as the current request id: jobs it enqueues record it, so the id
/// of the API request follows every job it causes (and the jobs those cause).
pub async fn with_request_id<F: std::future::Future>(id: Option<String>, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The request id of the API request or job being served, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_and_errors_are_counted_by_level_and_the_rest_is_not() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(LogEventCounter);
        metrics::with_local_recorder(&recorder, || {
            tracing::subscriber::with_default(subscriber, || {
                tracing::error!("one");
                tracing::warn!("two");
                tracing::warn!("three");
                tracing::info!("not counted");
                tracing::debug!("filtered out");
            });
        });
        let page = handle.render();
        assert!(
            page.contains(r#"log_events_total{level="error"} 1"#),
            "{page}"
        );
        assert!(
            page.contains(r#"log_events_total{level="warn"} 2"#),
            "{page}"
        );
        assert!(!page.contains(r#"level="info""#), "{page}");
    }

    #[test]
    fn the_metrics_page_carries_the_process_figures() {
        let page = render_metrics(&metrics_handle());
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
            assert!(page.contains(name), "{name} missing:\n{page}");
        }
    }
}
