//! The `toolhive-operator` binary: controller (leader only), admission webhook and
//! probes/metrics (every replica).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kube::{Api, Client, api::ListParams};
use tracing::{error, info, warn};

use toolhive_operator::{
    api::MCPServer,
    config::{Args, LEADER_LEASE_NAME, Scope, parse_bind},
    controller, http, leader, logging,
    metrics::Metrics,
    webhook,
};

fn fail(message: impl std::fmt::Display) -> ! {
    error!("{message}");
    eprintln!("toolhive-operator: {message}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    logging::init(args.unstructured_logs, std::io::stdout);
    // Exactly one crypto provider for every TLS user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let scope = Scope::parse(args.watch_namespace.as_deref()).unwrap_or_else(|e| fail(e));
    let metrics_addr = parse_bind(&args.metrics_bind_address).unwrap_or_else(|e| fail(e));
    let health_addr = parse_bind(&args.health_probe_bind_address).unwrap_or_else(|e| fail(e));
    let policy = webhook::policy::load(args.tenancy_policy.as_deref()).unwrap_or_else(|e| fail(e));
    let client = Client::try_default().await.unwrap_or_else(|e| fail(format!("cannot build a Kubernetes client: {e}")));
    match &scope {
        Scope::Cluster => info!(mode = "cluster", "watching MCPServers in every namespace"),
        Scope::Namespaces(list) => info!(mode = "namespace", namespaces = %list.join(","), "watching MCPServers in the allowed namespaces only"),
    }

    let metrics = Metrics::default();
    let readiness = Arc::new(http::Readiness::default());
    spawn_server("health", health_addr, http::health_router(readiness.clone()));
    spawn_server("metrics", metrics_addr, http::metrics_router(metrics.clone()));

    // Webhook: every replica, independent of leadership.
    if args.webhook_bind_address.is_empty() {
        readiness.webhook_ready.store(true, Ordering::Relaxed);
    } else {
        let addr = parse_bind(&args.webhook_bind_address).unwrap_or_else(|e| fail(e));
        let certs = webhook::tls::CertStore::new();
        match args.webhook_cert_secret.clone() {
            Some(secret) => {
                if args.webhook_cert_hosts.is_empty() || args.webhook_configuration.is_empty() {
                    fail("--webhook-cert-secret needs --webhook-cert-hosts and --webhook-configuration");
                }
                let issuer = webhook::issuer::IssuerConfig {
                    namespace: args.pod_namespace.clone(),
                    secret,
                    hosts: args.webhook_cert_hosts.clone(),
                    configuration: args.webhook_configuration.clone(),
                };
                tokio::spawn(webhook::issuer::keep(client.clone(), issuer, certs.clone(), Duration::from_secs(args.webhook_cert_check_seconds.max(1)), metrics.clone()));
            }
            None => {
                if let Err(e) = certs.reload(&args.webhook_cert_dir) {
                    warn!(error = %e, "webhook certificate not available yet; will keep trying");
                }
                tokio::spawn(certs.clone().watch(args.webhook_cert_dir.clone(), Duration::from_secs(10), metrics.clone()));
            }
        }
        let cache = webhook::ServerCache::start(&client, &scope, &metrics);
        let counts_cache = cache.clone();
        let state = webhook::WebhookState::new(policy, scope.clone(), Arc::new(move |ns: &str| counts_cache.count(ns)), metrics.clone());
        if let Some(path) = args.tenancy_policy.clone() {
            tokio::spawn(webhook::policy::watch(path, state.policy.clone(), Duration::from_secs(5), metrics.clone()));
        }
        let router = webhook::router(state);
        let tls = webhook::tls::server_config(certs.clone());
        tokio::spawn(async move {
            if let Err(e) = webhook::serve_tls(addr, tls, router).await {
                fail(format!("webhook server on {addr}: {e}"));
            }
        });
        let r = readiness.clone();
        tokio::spawn(async move {
            cache.wait_synced().await;
            while !certs.loaded() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r.webhook_ready.store(true, Ordering::Relaxed);
            info!(%addr, "admission webhook ready");
        });
    }

    wait_for_crd(&client, &scope).await;
    readiness.crd_present.store(true, Ordering::Relaxed);

    let identity = format!("{}-{}", hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "toolhive-operator".into()), std::process::id());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let leader_gauge = metrics.leader.with_label_values(&[LEADER_LEASE_NAME]);
    let mut leadership = if args.leader_elect {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let settings = leader::LeaseSettings::new(LEADER_LEASE_NAME, &args.pod_namespace, identity.clone(), args.leader_lease_seconds);
        tokio::spawn(leader::run(client.clone(), settings, tx, leader_gauge));
        info!(lease = LEADER_LEASE_NAME, namespace = %args.pod_namespace, "waiting for leadership");
        let mut rx2 = rx.clone();
        let _ = rx2.wait_for(|l| *l).await;
        Some(rx)
    } else {
        leader_gauge.set(1);
        None
    };

    let shared = Arc::new(controller::Shared::new(client.clone(), metrics.clone(), args.runner_image.clone(), identity, args.max_concurrent_reconciles));
    let run = controller::run(shared, &scope, stop_rx);
    tokio::pin!(run);
    let lost = async {
        match leadership.as_mut() {
            Some(rx) => {
                let _ = rx.wait_for(|l| !*l).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = &mut run => {}
        _ = shutdown_signal() => {
            info!("shutting down");
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut run).await;
        }
        _ = lost => {
            error!("leadership lost; exiting so a fresh process rejoins the election");
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut run).await;
            std::process::exit(1);
        }
    }
}

fn spawn_server(what: &'static str, addr: std::net::SocketAddr, router: axum::Router) {
    tokio::spawn(async move {
        if let Err(e) = http::serve(addr, router).await {
            fail(format!("{what} server on {addr}: {e}"));
        }
    });
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Waits until MCPServers are served, probing with a request the operator is allowed to
/// make in its own scope. Logs one clear line, not a crash loop.
async fn wait_for_crd(client: &Client, scope: &Scope) {
    let api: Api<MCPServer> = match scope {
        Scope::Cluster => Api::all(client.clone()),
        Scope::Namespaces(list) => Api::namespaced(client.clone(), &list[0]),
    };
    let mut reported = false;
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => {
                if reported {
                    info!("CRD mcpservers.toolhive.stacklok.dev is now installed; starting");
                }
                return;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                if !reported {
                    error!("CRD mcpservers.toolhive.stacklok.dev is not installed: install the toolhive-operator-crds Helm chart first; waiting for it");
                    reported = true;
                }
            }
            Err(e) => warn!(error = %e, "cannot list MCPServers yet; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}
