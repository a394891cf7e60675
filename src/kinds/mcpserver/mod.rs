//! MCPServer: one MCP server behind ToolHive's proxy runner. Its API types, what its
//! references resolve to, the children it gets (RunConfig, proxy Deployment,
//! Service, RBAC), its status and its controller.
pub mod api;
pub mod authserver;
pub mod configmaps;
pub mod controller;
pub mod group_ref;
pub mod ratelimit;
pub mod references;
pub mod remote;
pub mod resources;
pub mod schema;
pub mod status;
