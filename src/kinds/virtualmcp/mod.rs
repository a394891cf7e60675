//! VirtualMCPServer: one MCP endpoint over the servers, remote proxies and entries of
//! an MCPGroup. The operator finds the group's members itself and lists them in the
//! vMCP's configuration file, so the vMCP pod reads nothing in the namespace but its
//! own object (`children::role_rules`).
//!
//! `api` (types, CRD, what is refused), `config` (the vMCP's file), `resolve` (pure:
//! caches to backends, auth and problems), `children` and `status` (pure builders),
//! `controller` (on the MCPServer controller's caches).

pub mod api;
pub mod audit;
pub mod children;
pub mod composite;
pub mod config;
pub mod controller;
pub mod definition;
pub mod headers;
pub mod resolve;
pub mod status;

pub use api::{CRD_CHART_FILE, VirtualMCPServer, crd};
