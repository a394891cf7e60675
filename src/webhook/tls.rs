//! Serving certificate with hot reload. The pair comes either from a directory (a
//! mounted Secret) or from the operator's own issuer (`install`). Secret volumes update
//! by swapping a symlink, so a directory is watched (inotify) and also polled; a pair
//! that fails to load keeps the previous one in service and is reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use crate::runtime::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("tls.crt: {0}")]
    CertificatePem(rustls::pki_types::pem::Error),
    #[error("tls.crt holds no certificate")]
    NoCertificate,
    #[error("tls.key: {0}")]
    KeyPem(rustls::pki_types::pem::Error),
    #[error("tls.key: {0}")]
    Key(rustls::Error),
    #[error("tls.crt and tls.key do not belong together: {0}")]
    Mismatch(rustls::Error),
    #[error("client CA bundle: {0}")]
    ClientCa(rustls::Error),
}

/// The pair served from the next handshake on; empty until one is installed.
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<(Arc<CertifiedKey>, Vec<u8>)>>,
    /// The last pair that failed to load: seen again, it is not re-read or re-reported.
    rejected: RwLock<Option<Vec<u8>>>,
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn loaded(&self) -> bool {
        self.current.read().is_some()
    }

    /// Loads `dir`/tls.crt and tls.key if they changed. Ok(true) when a new pair went live.
    pub fn reload(&self, dir: &Path) -> Result<bool, CertError> {
        let (cert_pem, key_pem) = read_pair(dir)?;
        self.install(&cert_pem, &key_pem)
    }

    /// Serves this pair from the next handshake on, if it differs from the current one
    /// and loads. Ok(true) when a new pair went live.
    pub fn install(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, CertError> {
        let mut fingerprint = cert_pem.to_vec();
        fingerprint.extend_from_slice(key_pem);
        if self.current.read().as_ref().is_some_and(|(_, f)| *f == fingerprint) {
            return Ok(false);
        }
        match certified_key(cert_pem, key_pem) {
            Ok(key) => {
                *self.current.write() = Some((Arc::new(key), fingerprint));
                *self.rejected.write() = None;
                Ok(true)
            }
            Err(e) => {
                let seen = self.rejected.write().replace(fingerprint.clone()) == Some(fingerprint);
                if seen { Ok(false) } else { Err(e) }
            }
        }
    }

    /// Watches `dir` and polls it every `poll`, reloading on change.
    pub async fn watch(self: Arc<Self>, dir: PathBuf, poll: Duration, metrics: Metrics) {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        // Only changes count: reading the pair itself raises access events, which
        // would otherwise trigger the next reload.
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.try_send(());
            }
        });
        let _watcher = match watcher {
            Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot watch certificate directory; polling only");
                    None
                }
            },
            Err(e) => {
                warn!(error = %e, "no file watcher; polling only");
                None
            }
        };
        loop {
            tokio::select! {
                _ = rx.recv() => {
                    // Let a symlink swap finish before reading.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ = tokio::time::sleep(poll) => {}
            }
            match self.reload(&dir) {
                Ok(true) => {
                    metrics.cert_reloads.with_label_values(&["success"]).inc();
                    info!(dir = %dir.display(), "webhook certificate reloaded");
                }
                Ok(false) => {}
                Err(e) => {
                    metrics.cert_reloads.with_label_values(&["error"]).inc();
                    warn!(dir = %dir.display(), error = %e, "new webhook certificate rejected; keeping the previous one");
                }
            }
        }
    }
}

fn read_pair(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let read = |f: &str| std::fs::read(dir.join(f)).map_err(|source| CertError::Read { path: dir.join(f), source });
    Ok((read("tls.crt")?, read("tls.key")?))
}

pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<_> = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().map_err(CertError::CertificatePem)?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(CertError::KeyPem)?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(CertError::Key)?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(CertError::Mismatch)?;
    Ok(ck)
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().as_ref().map(|(k, _)| k.clone())
    }
}

/// TLS 1.2+ server config serving HTTP/1.1 with the hot-reloading certificate, to any
/// client.
pub fn server_config(store: Arc<CertStore>) -> rustls::ServerConfig {
    http1(builder().with_no_client_auth().with_cert_resolver(store))
}

/// As [`server_config`], but only to clients with a certificate signed by a CA in
/// `client_ca_pem`: the API server's, configured in its AdmissionConfiguration. Anyone
/// else is refused in the handshake, before a byte of a request is read.
pub fn server_config_for_clients_of(store: Arc<CertStore>, client_ca_pem: &[u8]) -> Result<rustls::ServerConfig, CertError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem) {
        roots.add(cert.map_err(CertError::CertificatePem)?).map_err(CertError::ClientCa)?;
    }
    if roots.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| CertError::ClientCa(rustls::Error::General(e.to_string())))?;
    Ok(http1(builder().with_client_cert_verifier(verifier).with_cert_resolver(store)))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("TLS 1.2 and 1.3 are supported")
}

fn http1(mut cfg: rustls::ServerConfig) -> rustls::ServerConfig {
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reloads(metrics: &Metrics, result: &str) -> u64 {
        metrics.cert_reloads.with_label_values(&[result]).get()
    }

    /// Reading the pair raises file events of its own; they must not trigger the next
    /// reload, or a bad pair is re-read and re-reported in a tight loop.
    #[tokio::test]
    async fn a_bad_pair_is_reported_once_not_in_a_loop() {
        let dir = std::env::temp_dir().join(format!("toolhive-certwatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
        std::fs::write(dir.join("tls.key"), "not a key").unwrap();
        let metrics = Metrics::default();
        let store = CertStore::new();
        // Only file events can trigger a reload within the test: the poll is an hour.
        let watch = tokio::spawn(store.clone().watch(dir.clone(), Duration::from_secs(3600), metrics.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A change: the bad pair is rewritten (same content), then left alone.
        std::fs::write(dir.join("tls.key"), "still not a key").unwrap();
        // The change is reported (however loaded the machine) ...
        for _ in 0..100 {
            if reloads(&metrics, "error") > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // ... and then not again and again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let errors = reloads(&metrics, "error");
        assert!((1..=2).contains(&errors), "a bad pair is reported once per change, not in a loop: {errors} reports");
        assert!(!store.loaded());
        watch.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
