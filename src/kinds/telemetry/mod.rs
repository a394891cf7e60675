//! MCPTelemetryConfig: where an MCP server's proxy sends OpenTelemetry traces and
//! metrics (OTLP), and whether it serves Prometheus metrics. An MCPServer names one
//! with `spec.telemetryConfigRef` (same namespace, optionally with its own service
//! name). The resolved configuration goes into the server's RunConfig (an edit rolls
//! the proxy); header values kept in Secrets reach the proxy as `secretKeyRef`
//! environment variables and a CA bundle as a mounted ConfigMap, never copied. A
//! missing or invalid one stops the proxy and fails the server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::shared::{
    configkind::ConfigStatus,
    refs::{CaBundleMount, CaBundleRef, SecretKeyRef},
};

/// OTLP export and Prometheus metrics for the MCPServers that reference it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPTelemetryConfig",
    plural = "mcptelemetryconfigs",
    singular = "mcptelemetryconfig",
    shortname = "mcpotel",
    category = "toolhive",
    namespaced,
    status = "MCPTelemetryConfigStatus",
    doc = "MCPTelemetryConfig configures the telemetry of the MCPServers that reference it (spec.telemetryConfigRef, same namespace).",
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.openTelemetry.endpoint"),
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type=='Valid')].status"),
    printcolumn(name = "Tracing", type_ = "boolean", json_path = ".spec.openTelemetry.tracing.enabled"),
    printcolumn(name = "Metrics", type_ = "boolean", json_path = ".spec.openTelemetry.metrics.enabled"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPTelemetryConfigSpec {
    /// OTLP export of traces and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OpenTelemetry>,
    /// A Prometheus `/metrics` endpoint on the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Prometheus>,
}

pub type MCPTelemetryConfigStatus = ConfigStatus;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.headers) || !has(self.sensitiveHeaders) || self.sensitiveHeaders.all(h, !(h.name in self.headers))",
    "message": "a header is either in headers or in sensitiveHeaders, not both",
}]))]
pub struct OpenTelemetry {
    /// Nothing is exported unless this is true.
    #[serde(default)]
    #[schemars(default)]
    pub enabled: bool,
    /// The collector, `host:port` (an `http://` or `https://` prefix is dropped).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Plain HTTP to the collector instead of HTTPS.
    #[serde(default)]
    #[schemars(default)]
    pub insecure: bool,
    /// Headers sent to the collector. Credentials belong in `sensitiveHeaders`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are read from Secrets in this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub sensitive_headers: Vec<SensitiveHeader>,
    /// OpenTelemetry resource attributes on every signal (`service.name` comes from
    /// the MCPServer's reference).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Switch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
    /// Also emit the attribute names used before the MCP semantic conventions.
    #[serde(default = "legacy_attributes_default")]
    pub use_legacy_attributes: bool,
    /// A ConfigMap with the CA bundle the collector's certificate is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<CaBundleRef>,
}

fn legacy_attributes_default() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prometheus {
    #[serde(default)]
    #[schemars(default)]
    pub enabled: bool,
    /// Serve `/metrics` on the proxy's own port too, beside a separate diagnostics
    /// port. The proxy runner this release drives has no diagnostics port and serves
    /// `/metrics` on its own port only, so only `true` (or unset) is carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_on_transport_port: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Switch {
    #[serde(default)]
    #[schemars(default)]
    pub enabled: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tracing {
    #[serde(default)]
    #[schemars(default)]
    pub enabled: bool,
    /// The share of traces sampled, 0 to 1.
    #[serde(default = "sampling_rate_default")]
    #[schemars(regex(pattern = r"^(0(\.\d+)?|1(\.0+)?)$"))]
    pub sampling_rate: String,
}

fn sampling_rate_default() -> String {
    "0.05".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensitiveHeader {
    #[schemars(length(min = 1))]
    pub name: String,
    pub secret_key_ref: SecretKeyRef,
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcptelemetryconfigs.yaml";
/// Where the CA bundle is mounted in the proxy: `<dir>/<configmap>/<key>`.
const CA_BUNDLE: CaBundleMount = CaBundleMount { dir: "/config/certs/otel", volume_prefix: "otel-ca-bundle-" };

pub fn crd() -> CustomResourceDefinition {
    crate::shared::crd::with_deprecated_version(serde_json::to_value(MCPTelemetryConfig::crd()).expect("crd serializes"))
}

impl MCPTelemetryConfigSpec {
    /// What is wrong with it, if anything (what the API server's schema cannot say).
    pub fn problem(&self) -> Option<String> {
        if self.prometheus.as_ref().and_then(|p| p.metrics_on_transport_port) == Some(false) {
            return Some(
                "spec.prometheus.metricsOnTransportPort: false moves /metrics to a diagnostics port, which the proxy runner this release drives does not have (it serves /metrics on the proxy's port only); remove it or set true".into(),
            );
        }
        let otel = self.open_telemetry.as_ref()?;
        let on = |s: Option<bool>| s.unwrap_or(false);
        if !otel.endpoint.is_empty() && !on(otel.tracing.as_ref().map(|t| t.enabled)) && !on(otel.metrics.as_ref().map(|m| m.enabled)) {
            return Some("spec.openTelemetry.endpoint: enable tracing or metrics, or remove the endpoint".into());
        }
        for (i, header) in otel.sensitive_headers.iter().enumerate() {
            let path = format!("spec.openTelemetry.sensitiveHeaders[{i}]");
            if header.name.is_empty() || header.secret_key_ref.name.is_empty() || header.secret_key_ref.key.is_empty() {
                return Some(format!("{path}: name, secretKeyRef.name and secretKeyRef.key must all be set"));
            }
            if otel.headers.contains_key(&header.name) {
                return Some(format!("{path}: header {:?} is also in spec.openTelemetry.headers", header.name));
            }
        }
        let bundle = otel.ca_bundle_ref.as_ref()?;
        if otel.insecure {
            return Some("spec.openTelemetry.caBundleRef: a CA bundle means TLS; remove it or set insecure to false".into());
        }
        CA_BUNDLE.problem(bundle, "spec.openTelemetry.caBundleRef")
    }

    fn ca_bundle(&self) -> Option<&CaBundleRef> {
        self.open_telemetry.as_ref()?.ca_bundle_ref.as_ref()
    }
}

crate::shared::configkind::config_kind!(MCPTelemetryConfig { spec: MCPTelemetryConfigSpec });

/// The telemetry settings the proxy runner reads from its RunConfig.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerTelemetry {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    pub tracing_enabled: bool,
    pub metrics_enabled: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sampling_rate: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enable_prometheus_metrics_path: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_attributes: BTreeMap<String, String>,
    pub use_legacy_attributes: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca_cert_path: String,
}

/// The RunConfig's telemetry of a proxy reporting as `service_name`, with the
/// resolved `spec`. OTLP settings only when OpenTelemetry is enabled.
pub fn runner_telemetry(service_name: &str, spec: &MCPTelemetryConfigSpec) -> RunnerTelemetry {
    let mut out = RunnerTelemetry {
        endpoint: String::new(),
        service_name: service_name.to_string(),
        tracing_enabled: false,
        metrics_enabled: false,
        sampling_rate: String::new(),
        headers: BTreeMap::new(),
        insecure: false,
        enable_prometheus_metrics_path: spec.prometheus.as_ref().is_some_and(|p| p.enabled),
        custom_attributes: BTreeMap::new(),
        use_legacy_attributes: false,
        ca_cert_path: String::new(),
    };
    if let Some(otel) = spec.open_telemetry.as_ref().filter(|o| o.enabled) {
        out.endpoint = otel.endpoint.trim_start_matches("https://").trim_start_matches("http://").to_string();
        out.insecure = otel.insecure;
        out.headers = otel.headers.clone();
        out.custom_attributes = otel.resource_attributes.clone();
        out.use_legacy_attributes = otel.use_legacy_attributes;
        out.metrics_enabled = otel.metrics.as_ref().is_some_and(|m| m.enabled);
        if let Some(tracing) = &otel.tracing {
            out.tracing_enabled = tracing.enabled;
            // The schema's pattern keeps it within 0..=1; the runner wants the number
            // written the shortest way.
            if let Ok(rate) = tracing.sampling_rate.parse::<f64>() {
                out.sampling_rate = rate.clamp(0.0, 1.0).to_string();
            }
        }
    }
    out.ca_cert_path = spec.ca_bundle().and_then(|b| CA_BUNDLE.file(b)).unwrap_or_default();
    out
}

/// The proxy container's environment for telemetry: its OpenTelemetry resource (the
/// service and the namespace it reports), and
/// each sensitive header by reference to its Secret.
pub fn proxy_env(service_name: &str, namespace: &str, spec: &MCPTelemetryConfigSpec) -> Vec<EnvVar> {
    let mut env = vec![EnvVar {
        name: "OTEL_RESOURCE_ATTRIBUTES".into(),
        value: Some(format!("service.name={service_name},service.namespace={namespace}")),
        ..Default::default()
    }];
    let headers = spec.open_telemetry.iter().flat_map(|o| o.sensitive_headers.iter());
    env.extend(headers.map(|h| {
        crate::shared::refs::secret_env(format!("TOOLHIVE_OTEL_HEADER_{}", h.name.replace('-', "_").to_uppercase()), &h.secret_key_ref)
    }));
    env
}

/// The CA bundle's volume and mount in the proxy, when there is one.
pub fn ca_bundle_volume(spec: &MCPTelemetryConfigSpec) -> Option<(Volume, VolumeMount)> {
    CA_BUNDLE.volume(spec.ca_bundle()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(spec: serde_json::Value) -> MCPTelemetryConfigSpec {
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn an_endpoint_without_a_signal_and_a_header_in_both_places_are_refused() {
        let no_signal = config(json!({"openTelemetry": {"enabled": true, "endpoint": "otel:4317"}}));
        assert!(no_signal.problem().unwrap().contains("enable tracing or metrics"));
        let both = config(json!({"openTelemetry": {"headers": {"x-key": "a"},
            "sensitiveHeaders": [{"name": "x-key", "secretKeyRef": {"name": "s", "key": "k"}}]}}));
        assert!(both.problem().unwrap().contains("sensitiveHeaders[0]"));
        let insecure_with_ca =
            config(json!({"openTelemetry": {"insecure": true, "caBundleRef": {"configMapRef": {"name": "ca", "key": ""}}}}));
        assert!(insecure_with_ca.problem().unwrap().contains("caBundleRef"));
        let long = "c".repeat(49);
        let too_long = config(json!({"openTelemetry": {"caBundleRef": {"configMapRef": {"name": long, "key": ""}}}}));
        assert!(too_long.problem().unwrap().contains("at most 48"));
        assert_eq!(config(json!({"openTelemetry": {"endpoint": "otel:4317", "tracing": {"enabled": true}}})).problem(), None);
        let moved = config(json!({"prometheus": {"enabled": true, "metricsOnTransportPort": false}}));
        assert!(moved.problem().unwrap().starts_with("spec.prometheus.metricsOnTransportPort: false"), "{:?}", moved.problem());
        assert_eq!(config(json!({"prometheus": {"enabled": true, "metricsOnTransportPort": true}})).problem(), None);
    }

    #[test]
    fn the_runner_gets_otlp_settings_only_when_enabled_and_the_ca_by_its_mount_path() {
        let spec = config(json!({
            "openTelemetry": {"enabled": true, "endpoint": "https://otel.obs:4317", "tracing": {"enabled": true, "samplingRate": "0.50"},
                "headers": {"x-team": "a"}, "resourceAttributes": {"deployment.environment": "prod"},
                "caBundleRef": {"configMapRef": {"name": "otel-ca", "key": ""}}},
            "prometheus": {"enabled": true},
        }));
        let rc = serde_json::to_value(runner_telemetry("svc", &spec)).unwrap();
        assert_eq!(
            rc,
            json!({"endpoint": "otel.obs:4317", "serviceName": "svc", "tracingEnabled": true, "metricsEnabled": false,
                "samplingRate": "0.5", "headers": {"x-team": "a"}, "enablePrometheusMetricsPath": true,
                "customAttributes": {"deployment.environment": "prod"}, "useLegacyAttributes": true,
                "caCertPath": "/config/certs/otel/otel-ca/ca.crt"})
        );
        let off = config(json!({"openTelemetry": {"enabled": false, "endpoint": "otel:4317", "tracing": {"enabled": true}}}));
        let rc = runner_telemetry("fetch", &off);
        assert_eq!((rc.endpoint.as_str(), rc.tracing_enabled, rc.service_name.as_str()), ("", false, "fetch"));
        let (volume, mount) = ca_bundle_volume(&spec).unwrap();
        assert_eq!((volume.name.as_str(), mount.mount_path.as_str()), ("otel-ca-bundle-otel-ca", "/config/certs/otel/otel-ca"));
    }

    #[test]
    fn sensitive_headers_reach_the_proxy_by_secret_reference_only() {
        let spec = config(json!({"openTelemetry": {"enabled": true,
            "sensitiveHeaders": [{"name": "x-api-key", "secretKeyRef": {"name": "otel-creds", "key": "token"}}]}}));
        let env = proxy_env("fetch", "team-a", &spec);
        assert_eq!(env[0].value.as_deref(), Some("service.name=fetch,service.namespace=team-a"));
        assert_eq!(env[1].name, "TOOLHIVE_OTEL_HEADER_X_API_KEY");
        assert_eq!(env[1].value, None);
        let secret = env[1].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((secret.name.as_str(), secret.key.as_str()), ("otel-creds", "token"));
    }

    #[test]
    fn crd_is_the_references_shape() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["mcpotel"]));
        let v = &crd["spec"]["versions"][0];
        let columns: Vec<&str> = v["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["Endpoint", "Valid", "Tracing", "Metrics", "Age"]);
        let otel = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["openTelemetry"];
        assert_eq!(otel["properties"]["useLegacyAttributes"]["default"], true);
        assert_eq!(otel["properties"]["tracing"]["properties"]["samplingRate"]["default"], "0.05");
        assert_eq!(otel["properties"]["sensitiveHeaders"]["x-kubernetes-list-type"], "map");
        assert_eq!(crd["spec"]["versions"][1]["name"], "v1alpha1");
    }
}
