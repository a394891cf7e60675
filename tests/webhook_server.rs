//! The webhook's TLS server on a loopback port (no control plane): prompt requests
//! are answered on a kept-alive connection, and a client that stalls — in the
//! handshake, in its headers, in its body, or idle between requests — is cut off
//! rather than holding a connection forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolhive_operator::runtime::metrics::Metrics;
use toolhive_operator::shared::config::Scope;
use toolhive_operator::webhook::{self, Limits, VALIDATE_PATH, policy::TenancyPolicy};

/// Short limits, so stalls are noticed quickly.
const LIMITS: Limits = Limits {
    handshake: Duration::from_millis(400),
    headers: Duration::from_millis(400),
    request: Duration::from_millis(400),
    connections: 12,
    connections_per_peer: 8,
};

/// Long enough that a missing limit fails the test instead of hanging it.
const GIVE_UP: Duration = Duration::from_secs(10);

struct Server {
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
    ca: controlplane::Authority,
}

async fn start() -> Server {
    start_with(None, LIMITS).await
}

/// The server; with `client_ca`, only to clients holding a certificate it signed.
async fn start_with(client_ca: Option<&controlplane::Authority>, limits: Limits) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = controlplane::Authority::new("webhook-server-test").unwrap();
    let pair = ca.serving(&[], &[]).unwrap();
    // Served from memory: this file tests the server, not the certificate directory.
    let certs = webhook::tls::CertStore::new();
    certs.install(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes()).unwrap();
    let tls = match client_ca {
        None => webhook::tls::server_config(certs),
        Some(clients) => webhook::tls::server_config_for_clients_of(certs, clients.cert_pem().as_bytes()).unwrap(),
    };
    let state = webhook::WebhookState::new(TenancyPolicy::default(), Scope::Cluster, Arc::new(|_: &str| 0), Metrics::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(webhook::serve_tls_on(listener, tls, webhook::router(state), limits));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(controlplane::tls_client_config(&ca.cert_pem()).unwrap()));
    Server { addr, connector, ca }
}

impl Server {
    async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        self.connect_with(&self.connector).await.unwrap()
    }

    async fn connect_with(
        &self,
        connector: &tokio_rustls::TlsConnector,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        self.connect_from(std::net::Ipv4Addr::LOCALHOST, connector).await
    }

    /// A connection from another loopback address (another peer).
    async fn connect_from(
        &self,
        source: std::net::Ipv4Addr,
        connector: &tokio_rustls::TlsConnector,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((source, 0).into())?;
        let tcp = socket.connect(self.addr).await?;
        let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        connector.connect(name, tcp).await
    }

    /// A connector presenting `identity` as its client certificate.
    fn connector_as(&self, identity: &controlplane::PemPair) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::new(controlplane::tls_client_config_as(&self.ca.cert_pem(), identity).unwrap()))
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

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_before_their_handshake() {
    // Idle connections are kept for the whole test (not cut off by the header timeout).
    let server = start_with(None, Limits { headers: GIVE_UP, ..LIMITS }).await;
    let mut held = Vec::new();
    for _ in 0..LIMITS.connections_per_peer {
        held.push(server.connect().await);
    }
    assert!(server.connect_with(&server.connector).await.is_err(), "no handshake for a connection over the limit per peer");
    // Another peer gets the slots left, and no more.
    let other = std::net::Ipv4Addr::new(127, 0, 0, 2);
    for _ in LIMITS.connections_per_peer..LIMITS.connections {
        held.push(server.connect_from(other, &server.connector).await.unwrap());
    }
    assert!(server.connect_from(other, &server.connector).await.is_err(), "no handshake for a connection over the limit");
    // A slot freed is a slot served.
    drop(held.remove(0));
    let answered = tokio::time::timeout(GIVE_UP, async {
        loop {
            if let Ok(mut tls) = server.connect_with(&server.connector).await
                && tls.write_all(&review_request("freed")).await.is_ok()
            {
                return read_response(&mut tls).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("served again once a connection closed");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

#[tokio::test]
async fn with_a_client_ca_only_its_clients_get_past_the_handshake() {
    let clients = controlplane::Authority::new("apiserver-webhook-clients").unwrap();
    let server = start_with(Some(&clients), LIMITS).await;
    // The API server's client certificate: served.
    let apiserver = clients.client("kube-apiserver", &[]).unwrap();
    let mut tls = server.connect_with(&server.connector_as(&apiserver)).await.unwrap();
    tls.write_all(&review_request("from-apiserver")).await.unwrap();
    assert!(read_response(&mut tls).await.starts_with("HTTP/1.1 200"));
    // No certificate, or one from another CA: refused before a request is read.
    let stranger = controlplane::Authority::new("someone-else").unwrap().client("kube-apiserver", &[]).unwrap();
    for connector in [server.connector.clone(), server.connector_as(&stranger)] {
        let refused = match server.connect_with(&connector).await {
            Err(_) => true,
            // TLS 1.3: the client finishes first and learns of the refusal on its next read.
            Ok(mut tls) => {
                let _ = tls.write_all(&review_request("stranger")).await;
                let mut buf = [0u8; 64];
                !matches!(tokio::time::timeout(GIVE_UP, tls.read(&mut buf)).await, Ok(Ok(n)) if n > 0)
            }
        };
        assert!(refused, "a client without the CA's certificate was served");
    }
}
