//! The API's kinds, one folder each: its types, the CRD generated from them, its
//! resolution, children and status. A kind uses the layers below (`shared`,
//! `runtime`) and the kinds it references, never one that references it: MCPServer
//! references the configuration kinds and MCPGroup; they know nothing of it.
pub mod authz;
pub mod embedding;
pub mod externalauth;
pub mod group;
pub mod mcpserver;
pub mod oidc;
pub mod registry;
pub mod serverentry;
pub mod telemetry;
pub mod toolconfig;
pub mod virtualmcp;
pub mod webhookconfig;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CRD the CRDs chart installs, with the chart file it is committed to: the
/// one registration a new kind adds.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        (mcpserver::api::CRD_CHART_FILE, mcpserver::api::crd()),
        (externalauth::CRD_CHART_FILE, externalauth::crd()),
        (webhookconfig::CRD_CHART_FILE, webhookconfig::crd()),
        (authz::CRD_CHART_FILE, authz::crd()),
        (oidc::CRD_CHART_FILE, oidc::crd()),
        (group::CRD_CHART_FILE, group::crd()),
        (toolconfig::CRD_CHART_FILE, toolconfig::crd()),
        (telemetry::CRD_CHART_FILE, telemetry::crd()),
        (serverentry::CRD_CHART_FILE, serverentry::crd()),
        (mcpserver::remote::CRD_CHART_FILE, mcpserver::remote::crd()),
        (virtualmcp::CRD_CHART_FILE, virtualmcp::crd()),
        (virtualmcp::definition::CRD_CHART_FILE, virtualmcp::definition::crd()),
        (embedding::CRD_CHART_FILE, embedding::crd()),
        (registry::CRD_CHART_FILE, registry::crd()),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_crds_match_the_types() {
        for (file, crd) in super::crds() {
            let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(committed == crate::shared::crd::chart_template(crd), "{path} is stale: run `make crds` and commit the result");
        }
    }
}
