//! toolhive-operator: reconciles `MCPServer` objects into the ToolHive proxy runner
//! and guards them with a tenancy admission webhook.
pub mod api;
pub mod authserver;
pub mod authz;
pub mod config;
pub mod configmaps;
pub mod controller;
pub mod error;
pub mod externalauth;
pub mod group;
pub mod oidc;
pub mod ratelimit;
pub mod resources;
pub mod runtime;
pub mod sharedconfig;
pub mod status;
pub mod telemetry;
pub mod toolconfig;
pub mod webhook;
pub mod webhookconfig;
