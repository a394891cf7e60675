//! EmbeddingServer: a text-embeddings inference server for a model, run as a
//! StatefulSet behind a Service, for a VirtualMCPServer's tool optimizer.
//!
//! `api` (types, CRD, what is refused), `children` and `status` (pure builders),
//! `controller` (on the MCPServer controller's child watches).

pub mod api;
pub mod children;
pub mod controller;
pub mod status;

pub use api::{CRD_CHART_FILE, EmbeddingServer, crd};
