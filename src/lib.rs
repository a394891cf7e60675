//! toolhive-operator: reconciles `MCPServer` objects into the ToolHive proxy runner
//! and guards them with a tenancy admission webhook.
//!
//! Layers, each using only those below it (checked by `layering` below):
//! - `webhook`: the admission webhook, apart from the controllers;
//! - `kinds`: one folder per kind of the API (types, resolution, children, status,
//!   controller); a kind uses the kinds it references, never the reverse;
//! - `runtime`: caches (one store per kind, fed by one watch per kind per scope), leader election, status
//!   writing, metrics, probes, logging; it knows no kind;
//! - `shared`: CRD conventions, references, conditions, settings, errors.
//!
//! The binary (`main.rs`) wires them together.
pub mod kinds;
pub mod runtime;
pub mod shared;
pub mod webhook;

#[cfg(test)]
mod layering;
