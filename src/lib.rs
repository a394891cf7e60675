//! toolhive-operator: reconciles `MCPServer` objects into the ToolHive proxy runner
//! and guards them with a tenancy admission webhook.
pub mod api;
