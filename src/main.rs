//! The `toolhive-operator` binary: controller (leader only), admission webhook and
//! probes/metrics (every replica).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use kube::{Api, Client, api::ListParams};
use tracing::{error, info, warn};

use toolhive_operator::runtime::{cache::Scopes, watch_client::WatchConnections};
use toolhive_operator::{
    kinds::mcpserver::{api::MCPServer, controller, resources::ProxySettings},
    runtime::{http, leader, logging, metrics::Metrics},
    shared::config::{Args, ConfigError, LEADER_LEASE_NAME, Scope, name_list, parse_bind},
    shared::refs::SecretKeyRef,
    webhook,
};

fn fail(message: impl std::fmt::Display) -> ! {
    error!("{message}");
    eprintln!("toolhive-operator: {message}");
    std::process::exit(2);
}

/// What every proxy gets from the operator's flags (the chart's values).
fn proxy_settings(args: &Args) -> Result<ProxySettings, ConfigError> {
    if args.default_redis_tls_enabled {
        return Err(ConfigError::DefaultRedisTls);
    }
    let default_redis = args.default_redis_addr.clone().filter(|a| !a.is_empty());
    let default_redis_password = args
        .default_redis_secret_name
        .clone()
        .filter(|name| !name.is_empty())
        .map(|name| SecretKeyRef { name, key: args.default_redis_secret_key.clone() });
    Ok(ProxySettings {
        runner_image: args.runner_image.clone(),
        host: args.proxy_host.clone(),
        default_redis,
        default_redis_password,
        default_image_pull_secrets: name_list(&args.default_image_pull_secrets),
    })
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
    let proxy_settings = proxy_settings(&args).unwrap_or_else(|e| fail(e));
    let config = kube::Config::infer().await.unwrap_or_else(|e| fail(format!("cannot read the Kubernetes client configuration: {e}")));
    let client = Client::try_from(config.clone()).unwrap_or_else(|e| fail(format!("cannot build a Kubernetes client: {e}")));
    let watch_connections = if args.watch_http2 {
        WatchConnections::http2(&config, args.watch_streams_per_connection)
            .unwrap_or_else(|e| fail(format!("cannot build the watch clients: {e}")))
    } else {
        WatchConnections::single(client.clone())
    };
    match &scope {
        Scope::Cluster => info!(mode = "cluster", "watching MCPServers in every namespace"),
        Scope::Namespaces(list) => {
            info!(mode = "namespace", namespaces = %list.join(","), "watching MCPServers in the allowed namespaces only")
        }
    }

    let metrics = Metrics::default();
    // One store per kind, fed by one watch per kind per scope, for the life of the
    // process, on every replica: the webhook reads them, and a replica that comes to
    // lead starts on warm caches.
    let namespaces: Vec<Option<String>> = match &scope {
        Scope::Cluster => vec![None],
        Scope::Namespaces(list) => list.iter().cloned().map(Some).collect(),
    };
    let scopes = Scopes::new(namespaces, watch_connections);
    let caches = controller::Caches::start(scopes, &metrics);
    let all = kube::runtime::watcher::Config::default;
    let rare = toolhive_operator::runtime::cache::RARE;
    let virtual_servers = controller::slimmed(&caches.scopes, all(), &[], &metrics, rare).started();
    let embedding_servers = controller::slimmed(&caches.scopes, all(), &[], &metrics, rare).started();
    metrics
        .registry
        .register(Box::new(controller::ServerPhases::new(caches.servers.store().clone())))
        .unwrap_or_else(|e| fail(format!("cannot register the MCPServer gauge: {e}")));
    let readiness = Arc::new(http::Readiness::default());
    spawn_server("health", health_addr, http::health_router(readiness.clone()));
    spawn_server("metrics", metrics_addr, http::metrics_router(metrics.clone()));

    // Webhook: every replica, independent of leadership. With it comes the tenancy
    // policy, which the controller also checks stored servers against.
    let mut policy_watch = None;
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
                tokio::spawn(webhook::issuer::keep(
                    client.clone(),
                    issuer,
                    certs.clone(),
                    Duration::from_secs(args.webhook_cert_check_seconds.max(1)),
                    metrics.clone(),
                ));
            }
            None => {
                if let Err(e) = certs.reload(&args.webhook_cert_dir) {
                    warn!(error = %e, "webhook certificate not available yet; will keep trying");
                }
                tokio::spawn(certs.clone().watch(args.webhook_cert_dir.clone(), Duration::from_secs(10), metrics.clone()));
            }
        }
        let cache = webhook::ServerCache::over(caches.servers.clone());
        let state = webhook::WebhookState::new(policy, scope.clone(), cache.clone(), metrics.clone())
            .with_namespace_levels(webhook::namespaces::NamespaceLevels::start(&client, &scope));
        let (policy_changed, policy_changes) = tokio::sync::watch::channel(0u64);
        if let Some(path) = args.tenancy_policy.clone() {
            tokio::spawn(webhook::policy::watch(path, state.policy.clone(), Duration::from_secs(5), metrics.clone(), policy_changed));
        }
        let check = webhook::stored_server_check(&state);
        metrics
            .registry
            .register(Box::new(controller::PolicyFindings::new(caches.servers.store().clone(), check.clone())))
            .unwrap_or_else(|e| fail(format!("cannot register the policy gauge: {e}")));
        policy_watch = Some(controller::PolicyWatch { check, changes: policy_changes });
        let router = webhook::router(state);
        let tls = match &args.webhook_client_ca {
            None => webhook::tls::server_config(certs.clone()),
            Some(path) => std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| webhook::tls::server_config_for_clients_of(certs.clone(), &pem).map_err(|e| e.to_string()))
                .unwrap_or_else(|e| fail(format!("--webhook-client-ca {}: {e}", path.display()))),
        };
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

    let identity = format!(
        "{}-{}",
        hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "toolhive-operator".into()),
        std::process::id()
    );
    let leader_gauge = metrics.leader.with_label_values(&[LEADER_LEASE_NAME]);
    let settings = leader::LeaseSettings::new(LEADER_LEASE_NAME, &args.pod_namespace, identity.clone(), args.leader_lease_seconds);
    let shared = controller::Shared::new(client.clone(), metrics.clone(), proxy_settings, identity, args.max_concurrent_reconciles);
    let shared = Arc::new(match policy_watch {
        Some(policy) => shared.with_policy(policy),
        None => shared,
    });
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    // Each term: wait to lead, reconcile until leadership is lost, stop writing at
    // once, and stand for election again. The webhook and probes serve throughout,
    // so an API server that goes away for a while never ends the process.
    loop {
        let (lead_tx, mut leading) = tokio::sync::watch::channel(false);
        // Without election this replica always leads; the sender is kept for the term.
        let mut always_leading = None;
        let election = if args.leader_elect {
            info!(lease = LEADER_LEASE_NAME, namespace = %args.pod_namespace, "waiting for leadership");
            Some(tokio::spawn(leader::run(client.clone(), settings.clone(), lead_tx, leader_gauge.clone())))
        } else {
            leader_gauge.set(1);
            let _ = lead_tx.send(true);
            always_leading = Some(lead_tx);
            None
        };
        tokio::select! {
            won = leading.wait_for(|l| *l) => if won.is_err() {
                warn!("the election ended before this replica led; standing again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            },
            _ = &mut shutdown => {
                info!("shutting down");
                return;
            }
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let run = futures::future::join3(
            controller::run(shared.clone(), caches.clone(), stop_rx.clone()),
            toolhive_operator::kinds::virtualmcp::controller::run(
                shared.clone(),
                caches.clone(),
                virtual_servers.clone(),
                embedding_servers.clone(),
                args.vmcp_image.clone(),
                stop_rx.clone(),
            ),
            toolhive_operator::kinds::embedding::controller::run(shared.clone(), caches.clone(), embedding_servers.clone(), stop_rx),
        );
        tokio::pin!(run);
        tokio::select! {
            _ = &mut run => warn!("the controller stopped on its own; standing for election again"),
            _ = &mut shutdown => {
                info!("shutting down");
                let _ = stop_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(10), &mut run).await;
                // Writing has stopped: hand the lease over now rather than make the next
                // leader wait it out (a rolling update then takes seconds, not a lease).
                if let Some(election) = election {
                    election.abort();
                    match leader::release(client.clone(), &settings).await {
                        Ok(true) => info!(lease = LEADER_LEASE_NAME, "lease released"),
                        Ok(false) => {}
                        Err(e) => warn!(lease = LEADER_LEASE_NAME, error = %e, "could not release the lease; the next leader waits for it to expire"),
                    }
                }
                return;
            }
            _ = leading.wait_for(|l| !*l) => {
                warn!("leadership lost; the controller stops writing and this replica stands for election again");
                let _ = stop_tx.send(true);
                // In-flight reconciles get a moment to finish; then they are dropped.
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut run).await;
            }
        }
        if let Some(election) = election {
            election.abort();
        }
        drop(always_leading);
        tokio::time::sleep(Duration::from_secs(1)).await;
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
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .unwrap_or_else(|e| fail(format!("cannot handle SIGTERM: {e}")));
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
                    error!(
                        "CRD mcpservers.toolhive.stacklok.dev is not installed: install the toolhive-operator-crds Helm chart first; waiting for it"
                    );
                    reported = true;
                }
            }
            Err(e) => warn!(error = %e, "cannot list MCPServers yet; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}
