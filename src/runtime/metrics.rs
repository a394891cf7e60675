//! Prometheus metrics. Names follow controller-runtime so existing dashboards and
//! alerts keep working; `toolhive_*` are this operator's own.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub const CONTROLLER: &str = "mcpserver";
/// The `controller` label of the MCPRemoteProxy, VirtualMCPServer and EmbeddingServer controllers.
pub const REMOTE_PROXY_CONTROLLER: &str = "mcpremoteproxy";
pub const VIRTUAL_SERVER_CONTROLLER: &str = "virtualmcpserver";
pub const EMBEDDING_SERVER_CONTROLLER: &str = "embeddingserver";

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconcile_total: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_time: HistogramVec,
    pub active_workers: IntGaugeVec,
    pub leader: IntGaugeVec,
    pub children_applied: IntCounterVec,
    pub watch_restarts: IntCounterVec,
    pub reconcile_error_category: IntCounterVec,
    pub webhook_requests: IntCounterVec,
    pub webhook_latency: HistogramVec,
    pub webhook_in_flight: IntGauge,
    pub admission_decisions: IntCounterVec,
    pub cert_reloads: IntCounterVec,
    pub policy_reloads: IntCounterVec,
    pub status_writes: IntCounter,
    pub apply_latency: Histogram,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone())).expect("metric registers once");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        let buckets = vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        Self {
            reconcile_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("controller_runtime_reconcile_total", "Total number of reconciliations per controller"),
                    &["controller", "result"],
                )
                .unwrap(),
            ),
            reconcile_errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("controller_runtime_reconcile_errors_total", "Total number of reconciliation errors per controller"),
                    &["controller"],
                )
                .unwrap(),
            ),
            reconcile_time: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("controller_runtime_reconcile_time_seconds", "Length of time per reconciliation per controller")
                        .buckets(buckets.clone()),
                    &["controller"],
                )
                .unwrap(),
            ),
            active_workers: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("controller_runtime_active_workers", "Number of currently used workers per controller"),
                    &["controller"],
                )
                .unwrap(),
            ),
            leader: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "leader_election_master_status",
                        "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master",
                    ),
                    &["name"],
                )
                .unwrap(),
            ),
            children_applied: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("toolhive_children_applied_total", "Child objects written by server-side apply, by kind"),
                    &["kind"],
                )
                .unwrap(),
            ),
            watch_restarts: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("toolhive_watch_restarts_total", "Watch streams that failed and were restarted, by resource"),
                    &["resource"],
                )
                .unwrap(),
            ),
            reconcile_error_category: reg(
                &r,
                IntCounterVec::new(Opts::new("toolhive_reconcile_errors_by_category_total", "Reconcile errors by category"), &["category"])
                    .unwrap(),
            ),
            webhook_requests: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("controller_runtime_webhook_requests_total", "Total number of admission requests by HTTP status code"),
                    &["webhook", "code"],
                )
                .unwrap(),
            ),
            webhook_latency: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "controller_runtime_webhook_latency_seconds",
                        "Histogram of the latency of processing admission requests",
                    )
                    .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
                    &["webhook"],
                )
                .unwrap(),
            ),
            webhook_in_flight: reg(
                &r,
                IntGauge::new("controller_runtime_webhook_requests_in_flight", "Current number of admission requests being served")
                    .unwrap(),
            ),
            admission_decisions: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("toolhive_admission_decisions_total", "Admission decisions by namespace, operation, decision and reason"),
                    &["namespace", "operation", "decision", "reason"],
                )
                .unwrap(),
            ),
            cert_reloads: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("toolhive_webhook_certificate_reloads_total", "Webhook certificate reload attempts by result"),
                    &["result"],
                )
                .unwrap(),
            ),
            policy_reloads: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("toolhive_tenancy_policy_reloads_total", "Tenancy policy reload attempts by result"),
                    &["result"],
                )
                .unwrap(),
            ),
            status_writes: reg(&r, IntCounter::new("toolhive_status_writes_total", "MCPServer status patches written").unwrap()),
            apply_latency: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("toolhive_apply_latency_seconds", "Latency of one server-side apply of a child").buckets(buckets),
                )
                .unwrap(),
            ),
            registry: r,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        // Only a metric family without a name or type fails to encode; ours are static.
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}
