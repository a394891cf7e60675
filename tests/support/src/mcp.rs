//! A real MCP client (the official Rust SDK, streamable HTTP) for calling tools
//! through the ToolHive proxy at an MCPServer's `status.url`.
//!
//! `status.url` names the proxy Service by its cluster DNS name, which the host
//! cannot resolve; the caller passes the Service's ClusterIP, which kube-proxy
//! routes from the host too, and the name is pinned to it (the Host header and
//! everything else stay as a pod would send them).

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};
use rmcp::{
    ServiceExt,
    model::{CallToolRequestParams, CallToolResult, Tool},
    service::{RoleClient, RunningService},
    transport::{StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig},
};

pub struct Session {
    client: RunningService<RoleClient, ()>,
}

impl Session {
    /// Opens a session (initialize + initialized) with the server at `url`, its
    /// host name resolved to `address`.
    pub async fn connect(url: &str, address: IpAddr) -> Result<Self> {
        Self::connect_as(url, address, None).await
    }

    /// As [`Session::connect`], sending `token` (if any) as a bearer token.
    pub async fn connect_as(url: &str, address: IpAddr, token: Option<&str>) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parsed = reqwest::Url::parse(url).with_context(|| format!("status.url {url:?}"))?;
        let host = parsed.host_str().context("status.url has no host")?.to_string();
        let port = parsed.port_or_known_default().context("status.url has no port")?;
        let http = reqwest::Client::builder().resolve(&host, SocketAddr::new(address, port)).build()?;
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
        if let Some(token) = token {
            config = config.auth_header(token);
        }
        let transport = StreamableHttpClientTransport::with_client(http, config);
        let client = ().serve(transport).await.with_context(|| format!("MCP initialize at {url}"))?;
        Ok(Session { client })
    }

    /// The server's name as it introduced itself.
    pub fn server_name(&self) -> Option<String> {
        self.client.peer_info().and_then(|info| Some(info.server_info.as_ref()?.name.clone()))
    }

    pub async fn tools(&self) -> Result<Vec<Tool>> {
        Ok(self.client.list_all_tools().await?)
    }

    pub async fn call(&self, tool: &str, arguments: serde_json::Value) -> Result<CallToolResult> {
        let arguments = match arguments {
            serde_json::Value::Object(map) => map,
            other => anyhow::bail!("tool arguments must be an object, not {other}"),
        };
        Ok(self.client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments)).await?)
    }

    pub async fn close(self) -> Result<()> {
        self.client.cancel().await?;
        Ok(())
    }
}

/// A tool result as text: its text content, then its structured content (JSON).
pub fn text(result: &CallToolResult) -> String {
    let texts = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone()));
    texts.chain(result.structured_content.iter().map(|v| v.to_string())).collect::<Vec<_>>().join("\n")
}

/// A plain HTTP request (redirects not followed) to `url`, its host resolved to
/// `address`: status, Location header, body.
pub async fn http(method: &str, url: &str, address: IpAddr, body: Option<&str>) -> Result<(u16, Option<String>, String)> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url:?}"))?;
    let host = parsed.host_str().context("no host")?.to_string();
    let port = parsed.port_or_known_default().context("no port")?;
    let http = reqwest::Client::builder()
        .resolve(&host, SocketAddr::new(address, port))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()?;
    let mut request = http.request(method.parse()?, parsed);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await?;
    let location = response.headers().get("location").and_then(|l| l.to_str().ok()).map(String::from);
    Ok((response.status().as_u16(), location, response.text().await?))
}

/// `status.url` of an MCPServer and its proxy Service's ClusterIP (the Service is
/// the URL's first host label, in the server's namespace).
pub async fn proxy_endpoint(client: &kube::Client, namespace: &str, name: &str) -> Result<(String, IpAddr)> {
    endpoint_of(client, namespace, ("MCPServer", "mcpservers"), name).await
}

/// As [`proxy_endpoint`] for an MCPRemoteProxy, whose `status.url` is its Service's
/// address alone: the MCP endpoint is `/mcp` below it.
pub async fn remote_proxy_endpoint(client: &kube::Client, namespace: &str, name: &str) -> Result<(String, IpAddr)> {
    let (url, ip) = endpoint_of(client, namespace, ("MCPRemoteProxy", "mcpremoteproxies"), name).await?;
    Ok((format!("{}/mcp", url.trim_end_matches('/')), ip))
}

/// As [`proxy_endpoint`] for a VirtualMCPServer, whose `status.url` is its Service's
/// address alone: the MCP endpoint is `/mcp` below it.
pub async fn virtual_server_endpoint(client: &kube::Client, namespace: &str, name: &str) -> Result<(String, IpAddr)> {
    let (url, ip) = endpoint_of(client, namespace, ("VirtualMCPServer", "virtualmcpservers"), name).await?;
    Ok((format!("{}/mcp", url.trim_end_matches('/')), ip))
}

/// What the EmbeddingServer `name` answers at its `status.url` for `texts` (POST
/// /embed, the text-embeddings inference API): one vector per text.
pub async fn embed(client: &kube::Client, namespace: &str, name: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
    let (url, address) = endpoint_of(client, namespace, ("EmbeddingServer", "embeddingservers"), name).await?;
    let body = serde_json::json!({"inputs": texts}).to_string();
    let (status, _, text) = http("POST", &format!("{}/embed", url.trim_end_matches('/')), address, Some(&body)).await?;
    anyhow::ensure!(status == 200, "POST /embed at {url}: {status}: {text}");
    serde_json::from_str(&text).with_context(|| format!("POST /embed at {url} answered {text}"))
}

async fn endpoint_of(client: &kube::Client, namespace: &str, (kind, plural): (&str, &str), name: &str) -> Result<(String, IpAddr)> {
    use k8s_openapi::api::core::v1::Service;
    use kube::{Api, api::DynamicObject, discovery::ApiResource};
    let resource = ApiResource {
        group: "toolhive.stacklok.dev".into(),
        version: "v1beta1".into(),
        api_version: "toolhive.stacklok.dev/v1beta1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let object = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource).get(name).await?;
    let url = object.data["status"]["url"]
        .as_str()
        .filter(|u| !u.is_empty())
        .with_context(|| format!("the {kind} has no status.url yet"))?
        .to_string();
    let host = reqwest::Url::parse(&url)?.host_str().context("status.url has no host")?.to_string();
    let service_name = host.split('.').next().unwrap_or_default();
    let service = Api::<Service>::namespaced(client.clone(), namespace).get(service_name).await?;
    let ip = service.spec.and_then(|s| s.cluster_ip).context("the proxy Service has no ClusterIP")?;
    Ok((url, ip.parse()?))
}
