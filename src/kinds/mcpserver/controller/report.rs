//! What the MCPServer controller tells users: the status it writes (only when it
//! changed), Events, and the `toolhive_mcpservers` gauge (counted from the cache at
//! each scrape, so it never holds a server the cache no longer has).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Resource, ResourceExt,
    runtime::{
        events::{Event, EventType},
        reflector::Store,
    },
};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tracing::{info, warn};

use super::{Context, WrittenStatus};
use crate::kinds::mcpserver::api::{MCPServer, MCPServerStatus, Phase};
use crate::kinds::mcpserver::status::{CONDITION_POLICY_COMPLIANT, Observed, desired_status, ours};
use crate::shared::error::Result;

/// Patches status (server-side apply on the status subresource) only when it changed,
/// and records phase changes as Events.
pub async fn write_status(server: &MCPServer, ctx: &Context, observed: &Observed) -> Result<()> {
    write_status_noting(server, ctx, observed, None).await
}

/// As [`write_status`]; `created` (children just created) joins the phase-change
/// Event when there is one, so a new MCPServer costs one Event, not two.
pub async fn write_status_noting(server: &MCPServer, ctx: &Context, observed: &Observed, created: Option<&str>) -> Result<()> {
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let key = (ns.clone(), name.clone());
    let uid = server.uid().unwrap_or_default();
    let stored = server.status.as_ref().map(ours);
    let lagging = ctx.shared.status_written.lock().get(&key).and_then(|w| {
        let cache_behind = stored.as_ref() != Some(&w.status);
        (w.uid == uid && w.generation == server.metadata.generation && cache_behind).then(|| w.status.clone())
    });
    let previous = lagging.or(stored).unwrap_or_default();
    let basis = MCPServer { status: Some(previous.clone()), ..server.clone() };
    let desired = desired_status(&basis, observed, Time(jiff::Timestamp::now()));
    let phase = desired.phase.unwrap_or(Phase::Pending);
    let phase_changed = previous.phase != desired.phase;
    if previous != desired {
        crate::runtime::status::apply_status::<MCPServer>(&ctx.shared.client, &ns, &name, &desired).await?;
        ctx.shared.metrics.status_writes.inc();
        let written = WrittenStatus { uid, generation: server.metadata.generation, status: desired.clone() };
        ctx.shared.status_written.lock().insert(key, written);
    }
    policy_event(ctx, server, &previous, &desired).await;
    if phase_changed {
        let kind = if phase == Phase::Failed { EventType::Warning } else { EventType::Normal };
        info!(namespace = %ns, name = %name, phase = phase.as_str(), message = %desired.message, "phase changed");
        let note = match created {
            Some(c) => format!("{}; {c}", desired.message),
            None => desired.message.clone(),
        };
        publish(ctx, server, kind, phase.as_str(), &note).await;
    } else if let Some(c) = created {
        publish(ctx, server, EventType::Normal, "ChildrenCreated", c).await;
    }
    Ok(())
}

/// An Event when the server stops (or starts again) meeting the tenancy policy, or
/// what it breaks changes.
async fn policy_event(ctx: &Context, server: &MCPServer, previous: &MCPServerStatus, desired: &MCPServerStatus) {
    let find = |s: &MCPServerStatus| {
        s.conditions.iter().find(|c| c.type_ == CONDITION_POLICY_COMPLIANT).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (before, now) = (find(previous), find(desired));
    if before == now {
        return;
    }
    match now {
        Some((status, reason, message)) if status == "False" => publish(ctx, server, EventType::Warning, &reason, &message).await,
        Some(_) if before.is_some_and(|(status, _, _)| status == "False") => {
            publish(ctx, server, EventType::Normal, "PolicyCompliant", "meets the tenancy policy again").await
        }
        _ => {}
    }
}

pub async fn publish(ctx: &Context, server: &MCPServer, type_: EventType, reason: &str, note: &str) {
    publish_to(&ctx.shared, &server.object_ref(&()), type_, reason, note).await
}

/// A status another kind's controller computed: its phase, whether that phase is a
/// failure, and its message.
pub struct PhaseReport<'a> {
    pub previous: Option<&'static str>,
    pub phase: &'static str,
    pub failed: bool,
    pub message: &'a str,
}

/// Server-side applies `desired` as the status of `object` (the caller has found it
/// changed); on a new phase, logs it and publishes an Event (a Warning for a failure).
pub async fn write_phase_status<K: crate::runtime::cache::Cached>(
    shared: &super::Shared,
    object: &K,
    desired: &impl serde::Serialize,
    report: PhaseReport<'_>,
) -> Result<()> {
    let (ns, name) = (object.namespace().unwrap_or_default(), object.name_any());
    crate::runtime::status::apply_status::<K>(&shared.client, &ns, &name, desired).await?;
    shared.metrics.status_writes.inc();
    if report.previous != Some(report.phase) {
        let kind = if report.failed { EventType::Warning } else { EventType::Normal };
        info!(namespace = %ns, name = %name, phase = report.phase, message = %report.message, "phase changed");
        publish_to(shared, &object.object_ref(&()), kind, report.phase, report.message).await;
    }
    Ok(())
}

/// An Event about the object `about` refers to.
pub async fn publish_to(
    shared: &super::Shared,
    about: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    // The API server caps an Event note at 1 kB; cut on a character boundary.
    let mut end = note.len().min(1000);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    let note = note[..end].to_string();
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
    let published = match type_ {
        EventType::Warning => shared.recorder.publish(&event, about).await,
        EventType::Normal => {
            kube::runtime::events::Recorder::new(shared.client.clone(), shared.reporter.clone()).publish(&event, about).await
        }
    };
    if let Err(e) = published {
        warn!(namespace = ?about.namespace, name = ?about.name, error = %e, "could not publish event");
    }
}

/// `toolhive_mcpservers{namespace, phase}`: the MCPServers in the cache by their
/// stored phase (no status yet: Pending), every phase listed for a namespace that
/// holds any.
pub struct ServerPhases {
    servers: Store<MCPServer>,
    desc: Desc,
}

impl ServerPhases {
    pub const NAME: &'static str = "toolhive_mcpservers";

    pub fn new(servers: Store<MCPServer>) -> Self {
        let desc = Desc::new(
            Self::NAME.into(),
            "MCPServers known to the operator, by namespace and phase".into(),
            vec!["namespace".into(), "phase".into()],
            Default::default(),
        )
        .expect("a valid metric description");
        Self { servers, desc }
    }

    /// Servers per (namespace, phase).
    pub fn counts(&self) -> BTreeMap<(String, &'static str), i64> {
        let mut counts = BTreeMap::new();
        let mut namespaces = BTreeSet::new();
        for server in self.servers.state() {
            let ns = server.namespace().unwrap_or_default();
            let phase = server.status.as_ref().and_then(|s| s.phase).unwrap_or(Phase::Pending);
            *counts.entry((ns.clone(), phase.as_str())).or_insert(0) += 1;
            namespaces.insert(ns);
        }
        for ns in namespaces {
            for phase in Phase::ALL {
                counts.entry((ns.clone(), phase.as_str())).or_insert(0);
            }
        }
        counts
    }
}

/// `toolhive_mcpservers_policy_findings{namespace,rule,mode}`: stored MCPServers that
/// break a tenancy rule, checked against the policy in force at each scrape (so it
/// follows both the servers and the policy, and keeps nothing of its own).
pub struct PolicyFindings {
    servers: Store<MCPServer>,
    check: crate::kinds::mcpserver::status::PolicyCheck,
    desc: Desc,
}

impl PolicyFindings {
    pub const NAME: &'static str = "toolhive_mcpservers_policy_findings";

    pub fn new(servers: Store<MCPServer>, check: crate::kinds::mcpserver::status::PolicyCheck) -> Self {
        let desc = Desc::new(
            Self::NAME.into(),
            "Stored MCPServers that break a tenancy policy rule, by namespace, rule and the rule's mode".into(),
            vec!["namespace".into(), "rule".into(), "mode".into()],
            Default::default(),
        )
        .expect("a valid metric description");
        Self { servers, check, desc }
    }

    /// Servers per (namespace, rule, mode).
    pub fn counts(&self) -> BTreeMap<(String, &'static str, &'static str), i64> {
        let mut counts = BTreeMap::new();
        for server in self.servers.state() {
            let ns = server.namespace().unwrap_or_default();
            let Ok(spec) = serde_json::to_value(&server.spec) else { continue };
            let rules: BTreeSet<_> = (self.check)(&ns, &spec).into_iter().flatten().map(|f| (f.rule, f.mode)).collect();
            for (rule, mode) in rules {
                *counts.entry((ns.clone(), rule, mode)).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Collector for PolicyFindings {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let gauge = prometheus::IntGaugeVec::new(prometheus::Opts::new(Self::NAME, self.desc.help.clone()), &["namespace", "rule", "mode"])
            .expect("a valid metric");
        for ((ns, rule, mode), n) in self.counts() {
            gauge.with_label_values(&[ns.as_str(), rule, mode]).set(n);
        }
        gauge.collect()
    }
}

impl Collector for ServerPhases {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let gauge = prometheus::IntGaugeVec::new(prometheus::Opts::new(Self::NAME, self.desc.help.clone()), &["namespace", "phase"])
            .expect("a valid metric");
        for ((ns, phase), n) in self.counts() {
            gauge.with_label_values(&[ns.as_str(), phase]).set(n);
        }
        gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};
    use prometheus::core::Collector;
    use serde_json::json;

    #[test]
    fn the_gauge_counts_what_the_cache_holds_and_forgets_what_it_no_longer_has() {
        let (store, mut writer) = reflector::store::<MCPServer>();
        let server = |name: &str, phase: Option<&str>| -> MCPServer {
            let mut o = json!({"metadata": {"name": name, "namespace": "team"}, "spec": {"image": "i"}});
            if let Some(p) = phase {
                o["status"] = json!({"phase": p});
            }
            serde_json::from_value(o).unwrap()
        };
        writer.apply_watcher_event(&watcher::Event::Apply(server("a", Some("Ready"))));
        writer.apply_watcher_event(&watcher::Event::Apply(server("b", None)));
        let phases = ServerPhases::new(store);
        let counts = phases.counts();
        assert_eq!(counts[&("team".into(), "Ready")], 1);
        assert_eq!(counts[&("team".into(), "Pending")], 1);
        assert_eq!(counts[&("team".into(), "Failed")], 0);
        // A finalizer removed by hand: the object leaves the cache, and the gauge.
        writer.apply_watcher_event(&watcher::Event::Delete(server("a", Some("Ready"))));
        writer.apply_watcher_event(&watcher::Event::Delete(server("b", None)));
        assert!(phases.counts().is_empty());
        let registry = prometheus::Registry::new();
        registry.register(Box::new(phases)).unwrap();
        assert!(registry.gather().iter().all(|f| f.get_metric().is_empty()));
    }

    /// The shipped Grafana dashboard reads only metrics the operator exports.
    #[test]
    fn the_dashboard_queries_only_exported_metrics() {
        let m = crate::runtime::metrics::Metrics::default();
        // Vectors appear in the output once they have a series.
        for vec in [&m.reconcile_total, &m.children_applied, &m.watch_restarts, &m.webhook_requests, &m.cert_reloads, &m.policy_reloads] {
            vec.with_label_values(&["a", "b"][..vec.desc()[0].variable_labels.len()]).inc();
        }
        m.reconcile_errors.with_label_values(&["a"]).inc();
        m.reconcile_error_category.with_label_values(&["a"]).inc();
        m.reconcile_time.with_label_values(&["a"]).observe(1.0);
        m.active_workers.with_label_values(&["a"]).set(1);
        m.leader.with_label_values(&["a"]).set(1);
        let (store, mut writer) = reflector::store::<MCPServer>();
        let server = json!({"metadata": {"name": "s", "namespace": "team"}, "spec": {"image": "i"}});
        writer.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(server).unwrap()));
        m.registry.register(Box::new(ServerPhases::new(store))).unwrap();
        m.webhook_latency.with_label_values(&["a"]).observe(1.0);
        m.admission_decisions.with_label_values(&["a", "b", "c", "d"]).inc();
        m.apply_latency.observe(1.0);
        let exported: std::collections::BTreeSet<String> =
            m.render().lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_string)).collect();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/toolhive-operator.json");
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let exprs: Vec<String> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["expr"].as_str().map(str::to_string))
            .collect();
        assert!(exprs.len() >= 15, "the dashboard has its panels");
        let mut used = 0;
        for expr in &exprs {
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if ["controller_runtime_", "toolhive_", "leader_election_"].iter().any(|p| word.starts_with(p)) {
                    let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(word);
                    assert!(exported.contains(family), "{family} (in {expr}) is not exported; exported: {exported:?}");
                    used += 1;
                }
            }
        }
        assert!(used >= exprs.len(), "every query reads an operator metric");
    }
}
