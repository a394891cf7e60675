//! Integration tests against a real control plane (etcd + kube-apiserver +
//! kube-controller-manager on loopback), shared by every test in this binary;
//! each test works in its own namespaces; webhook configurations in namespace mode
//! apply only to the namespaces their install serves, and tests that disturb the
//! guide's install take `common::webhook_registration_lock` alone;
//! guide tests that only write servers of their own share `common::guide_webhook_shared`.
//! Cluster-mode tests start their own control plane.
mod apiserver_outage;
mod chart_modes;
mod cluster_mode;
mod common;
mod controlplane_basics;
mod embedding_servers;
mod guide;
mod guide_flow;
mod operator_certs;
mod policy_rollout;
mod proxy_defaults;
mod real_pods;
mod reference_parity;
mod release;
mod remote_proxies;
mod server_entries;
mod two_installs;
mod upstream_examples;
mod virtual_servers;
mod webhook_access;
