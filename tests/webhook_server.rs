//! The webhook's TLS server on a loopback port (no control plane): prompt requests
//! are answered on a kept-alive connection, and a client that stalls — in the
//! handshake, in its headers, in its body, or idle between requests — is cut off
//! rather than holding a connection forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolhive_operator::runtime::metrics::Metrics;
use toolhive_operator::shared::config::Scope;
use toolhive_operator::webhook::{self, Timeouts, VALIDATE_PATH, policy::TenancyPolicy};

/// Short limits, so stalls are noticed quickly.
const LIMITS: Timeouts =
    Timeouts { handshake: Duration::from_millis(400), headers: Duration::from_millis(400), request: Duration::from_millis(400) };

/// Long enough that a missing limit fails the test instead of hanging it.
const GIVE_UP: Duration = Duration::from_secs(10);

struct Server {
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

async fn start() -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = controlplane::Authority::new("webhook-server-test").unwrap();
    let pair = ca.serving(&[], &[]).unwrap();
    // Served from memory: this file tests the server, not the certificate directory.
    let certs = webhook::tls::CertStore::new();
    certs.install(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes()).unwrap();
    let state = webhook::WebhookState::new(TenancyPolicy::default(), Scope::Cluster, Arc::new(|_: &str| 0), Metrics::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(webhook::serve_tls_on(listener, webhook::tls::server_config(certs), webhook::router(state), LIMITS));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(controlplane::tls_client_config(&ca.cert_pem()).unwrap()));
    Server { addr, connector }
}

impl Server {
    async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        self.connector.connect(name, tcp).await.unwrap()
    }
}

fn review_request(uid: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "operation": "CREATE", "namespace": "team-a", "userInfo": {"username": "alice"},
            "kind": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "kind": "MCPServer"},
            "resource": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "resource": "mcpservers"},
            "object": {"metadata": {"name": "s"}, "spec": {"image": "ghcr.io/acme/x"}}}
    })
    .to_string();
    format!(
        "POST {VALIDATE_PATH} HTTP/1.1\r\nhost: webhook\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP response (headers + content-length body) from `stream`.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(GIVE_UP, stream.read(&mut chunk)).await.expect("an answer in time").unwrap();
        assert!(n > 0, "connection closed before a whole response; got {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits until the peer closes `stream` (EOF or reset); fails if it stays open.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(GIVE_UP, stream.read(&mut chunk)).await {
            Err(_) => panic!("the server kept a stalled connection open; read so far: {:?}", String::from_utf8_lossy(&seen)),
            Ok(Ok(0)) | Ok(Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn prompt_requests_share_a_connection_and_an_idle_one_is_closed() {
    let server = start().await;
    let mut tls = server.connect().await;
    for uid in ["first", "second"] {
        tls.write_all(&review_request(uid)).await.unwrap();
        let answer = read_response(&mut tls).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(&format!("\"uid\":\"{uid}\"")), "{answer}");
        assert!(answer.contains("\"allowed\":true"), "{answer}");
    }
    // Nothing more is sent: the wait for the next request's headers runs out.
    closed_by_server(&mut tls).await;
}

#[tokio::test]
async fn headers_that_never_finish_close_the_connection() {
    let server = start().await;
    let mut tls = server.connect().await;
    tls.write_all(format!("POST {VALIDATE_PATH} HTTP/1.1\r\nhost: webhook\r\n").as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let seen = closed_by_server(&mut tls).await;
    assert!(!String::from_utf8_lossy(&seen).contains("200 OK"), "a half-sent request was not answered as if whole");
    // The server still serves others.
    let mut other = server.connect().await;
    other.write_all(&review_request("after")).await.unwrap();
    assert!(read_response(&mut other).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408() {
    let server = start().await;
    let mut tls = server.connect().await;
    let whole = review_request("stalls");
    let headers_end = whole.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    tls.write_all(&whole[..headers_end + 10]).await.unwrap();
    tls.flush().await.unwrap();
    let answer = read_response(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_handshake_that_never_starts_is_dropped() {
    let server = start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut tcp).await;
}
