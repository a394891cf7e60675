//! `mcp-call --kubeconfig K -n NS NAME [--tool T --arguments JSON]`: an MCP client
//! (the official Rust SDK) that opens a session with an MCPServer through the
//! ToolHive proxy at its `status.url`, prints its tools, and calls one.
use std::path::PathBuf;

use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(short, long)]
    namespace: String,
    /// The MCPServer.
    name: String,
    /// A tool to call after listing them.
    #[arg(long)]
    tool: Option<String>,
    /// The tool's arguments, a JSON object.
    #[arg(long, default_value = "{}")]
    arguments: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(&args.kubeconfig)?, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let (url, address) = controlplane::mcp::proxy_endpoint(&client, &args.namespace, &args.name).await?;
    println!("MCP endpoint: {url} (proxy Service {address})");
    let session = controlplane::mcp::Session::connect(&url, address).await?;
    println!("server: {}", session.server_name().unwrap_or_default());
    for tool in session.tools().await? {
        println!("  tool {}: {}", tool.name, tool.description.as_deref().unwrap_or(""));
    }
    if let Some(tool) = &args.tool {
        let result = session.call(tool, serde_json::from_str(&args.arguments)?).await?;
        println!("{tool} -> {}{}", controlplane::mcp::text(&result), if result.is_error == Some(true) { " (tool error)" } else { "" });
    }
    session.close().await
}
