//! Integration tests against a real control plane (etcd + kube-apiserver +
//! kube-controller-manager on loopback), shared by every test in this binary;
//! each test works in its own namespace. Cluster-mode tests start their own.
mod common;
mod controlplane_basics;
mod operator_e2e;
mod chart_modes;
mod cluster_mode;
mod operator_certs;
