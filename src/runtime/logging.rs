//! The operator's log output: JSON lines (or plain text) on stdout, `info` unless
//! RUST_LOG says otherwise.

use tracing_subscriber::fmt::MakeWriter;

/// Installs the process-wide subscriber writing to `writer`.
pub fn init<W>(unstructured: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(writer);
    if unstructured {
        builder.init();
    } else {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init();
    }
}
