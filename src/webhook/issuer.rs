//! The operator as the webhook's own certificate authority (chart
//! `webhook.certificates.mode: operator`): a CA and a serving certificate kept in a
//! Secret of the operator's namespace, renewed before they expire, and the CA
//! published as the caBundle of the webhook configurations.
//!
//! A renewal is written in this order: the Secret, then the caBundle, then the pair
//! the server presents, so the API server trusts a certificate before it is shown.
//! Every replica runs this; a write that loses a race to another replica is a
//! conflict, after which the winner's pair is read and served.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::tls::CertStore;
use crate::runtime::metrics::Metrics;

const CA_NAME: &str = "toolhive-operator-webhook-ca";
const CA_DAYS: i64 = 3650;
const SERVING_DAYS: i64 = 365;
const DAY: i64 = 86_400;
/// Unix seconds after which the CA / serving certificate is no longer valid, and the
/// names the serving certificate was issued for: the operator's own bookkeeping, so it
/// never has to parse a certificate to know when to renew it.
const CA_NOT_AFTER: &str = "toolhive.stacklok.dev/ca-not-after";
const SERVING_NOT_AFTER: &str = "toolhive.stacklok.dev/serving-not-after";
const SERVING_HOSTS: &str = "toolhive.stacklok.dev/serving-hosts";

/// Where the certificates live and who they are for.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub namespace: String,
    pub secret: String,
    /// DNS names and IP addresses the serving certificate covers.
    pub hosts: Vec<String>,
    /// Name of the Mutating- and ValidatingWebhookConfiguration to publish the CA in.
    pub configuration: String,
}

/// What the Secret holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stored {
    /// The CA certificates to trust (PEM; the current one first, then a previous one
    /// still valid after a CA renewal).
    pub ca_bundle: String,
    pub ca_key: String,
    pub tls_crt: String,
    pub tls_key: String,
    pub ca_not_after: Option<i64>,
    pub serving_not_after: Option<i64>,
    pub hosts: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Keep,
    NewServing,
    NewAuthority,
}

/// Whether to renew: anything missing or that does not load (a CA key that does not
/// parse, a serving pair that does not load), a third or less of a lifetime left, or a
/// serving certificate issued for other names.
pub fn plan(stored: &Stored, hosts: &str, now: i64) -> Plan {
    let left = |not_after: Option<i64>, days: i64| not_after.map_or(0, |t| t - now) > days * DAY / 3;
    if stored.ca_bundle.is_empty() || KeyPair::from_pem(&stored.ca_key).is_err() || !left(stored.ca_not_after, CA_DAYS) {
        return Plan::NewAuthority;
    }
    if stored.hosts != hosts
        || !left(stored.serving_not_after, SERVING_DAYS)
        || super::tls::certified_key(stored.tls_crt.as_bytes(), stored.tls_key.as_bytes()).is_err()
    {
        return Plan::NewServing;
    }
    Plan::Keep
}

/// The CA's parameters: the same every time, so a stored CA key signs certificates
/// whose issuer is the stored CA certificate.
fn ca_params(not_after: i64) -> Result<CertificateParams, IssuerError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_after = timestamp(not_after)?;
    Ok(params)
}

fn timestamp(unix: i64) -> Result<time::OffsetDateTime, IssuerError> {
    Ok(time::OffsetDateTime::from_unix_timestamp(unix)?)
}

/// Issues what `plan` asks for, keeping the rest of `stored`.
pub fn issue(plan: Plan, stored: &Stored, hosts: &[String], now: i64) -> Result<Stored, IssuerError> {
    let mut next = stored.clone();
    if plan == Plan::NewAuthority {
        let not_after = now + CA_DAYS * DAY;
        let key = KeyPair::generate()?;
        let cert = ca_params(not_after)?.self_signed(&key)?;
        // The previous CA stays trusted while certificates it signed may still be served.
        let previous = match stored.ca_bundle.split_inclusive("-----END CERTIFICATE-----").next() {
            Some(pem) if stored.ca_not_after.is_some_and(|t| t > now) => pem.trim().to_string(),
            _ => String::new(),
        };
        next.ca_bundle = [cert.pem().trim().to_string(), previous].join("\n").trim().to_string() + "\n";
        next.ca_key = key.serialize_pem();
        next.ca_not_after = Some(not_after);
    }
    if plan != Plan::Keep {
        let ca_key = KeyPair::from_pem(&next.ca_key)?;
        let issuer = Issuer::new(ca_params(next.ca_not_after.unwrap_or(now))?, ca_key);
        let not_after = now + SERVING_DAYS * DAY;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, hosts.first().map_or("toolhive-operator-webhook", String::as_str));
        for host in hosts {
            params.subject_alt_names.push(match host.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.clone().try_into()?),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.not_before = timestamp(now - 300)?;
        params.not_after = timestamp(not_after)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        next.tls_crt = cert.pem();
        next.tls_key = key.serialize_pem();
        next.serving_not_after = Some(not_after);
        next.hosts = hosts.join(",");
    }
    Ok(next)
}

impl Stored {
    pub fn from_secret(secret: &Secret) -> Self {
        let data = secret.data.clone().unwrap_or_default();
        let text = |k: &str| data.get(k).map(|b| String::from_utf8_lossy(&b.0).into_owned()).unwrap_or_default();
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let number = |k: &str| annotations.get(k).and_then(|v| v.parse().ok());
        Self {
            ca_bundle: text("ca.crt"),
            ca_key: text("ca.key"),
            tls_crt: text("tls.crt"),
            tls_key: text("tls.key"),
            ca_not_after: number(CA_NOT_AFTER),
            serving_not_after: number(SERVING_NOT_AFTER),
            hosts: annotations.get(SERVING_HOSTS).cloned().unwrap_or_default(),
        }
    }

    /// `secret` with this content (its other fields, resourceVersion included, kept).
    fn into_secret(self, mut secret: Secret) -> Secret {
        let bytes = |s: String| ByteString(s.into_bytes());
        secret.data = Some(
            [("ca.crt", self.ca_bundle), ("ca.key", self.ca_key), ("tls.crt", self.tls_crt), ("tls.key", self.tls_key)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), bytes(v)))
                .collect(),
        );
        let annotations = secret.metadata.annotations.get_or_insert_with(Default::default);
        for (k, v) in [(CA_NOT_AFTER, self.ca_not_after), (SERVING_NOT_AFTER, self.serving_not_after)] {
            annotations.insert(k.to_string(), v.unwrap_or_default().to_string());
        }
        annotations.insert(SERVING_HOSTS.to_string(), self.hosts);
        secret
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("reading or writing {0}: {1}")]
    Api(&'static str, kube::Error),
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("issuing a certificate: a validity date out of range: {0}")]
    Date(#[from] time::error::ComponentRange),
    #[error("writing the caBundle patch: {0}")]
    Patch(serde_json::Error),
    #[error("the stored certificate does not load: {0}")]
    Load(#[from] super::tls::CertError),
}

impl IssuerError {
    pub fn category(&self) -> &'static str {
        match self {
            IssuerError::Api(..) => "api",
            IssuerError::Issue(_) | IssuerError::Date(_) | IssuerError::Patch(_) => "issue",
            IssuerError::Load(_) => "load",
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, IssuerError::Api(_, kube::Error::Api(s)) if s.code == 409)
    }
}

/// Keeps the Secret, the caBundle and the served pair current, checking every
/// `every` (and soon again after an error or a lost race).
pub async fn keep(client: Client, cfg: IssuerConfig, store: Arc<CertStore>, every: Duration, metrics: Metrics) {
    loop {
        let wait = match keep_once(&client, &cfg, &store).await {
            Ok(served_new) => {
                if served_new {
                    metrics.cert_reloads.with_label_values(&["success"]).inc();
                    info!(secret = %cfg.secret, "webhook certificate from the operator's CA is being served");
                }
                every
            }
            Err(e) if e.is_conflict() => Duration::from_millis(200),
            Err(e) => {
                metrics.cert_reloads.with_label_values(&["error"]).inc();
                warn!(secret = %cfg.secret, category = e.category(), error = %e, "webhook certificate not renewed; retrying");
                Duration::from_secs(5)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One pass; Ok(true) when a new pair went into service.
pub async fn keep_once(client: &Client, cfg: &IssuerConfig, store: &CertStore) -> Result<bool, IssuerError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let secret = secrets.get(&cfg.secret).await.map_err(|e| IssuerError::Api("the certificate Secret", e))?;
    let stored = Stored::from_secret(&secret);
    let now = jiff::Timestamp::now().as_second();
    let current = match plan(&stored, &cfg.hosts.join(","), now) {
        Plan::Keep => stored,
        p => {
            let issued = issue(p, &stored, &cfg.hosts, now)?;
            let written = issued.clone().into_secret(secret);
            secrets
                .replace(&cfg.secret, &PostParams::default(), &written)
                .await
                .map_err(|e| IssuerError::Api("the certificate Secret", e))?;
            info!(secret = %cfg.secret, plan = ?p, "webhook certificates issued");
            issued
        }
    };
    publish::<MutatingWebhookConfiguration>(client, &cfg.configuration, &current.ca_bundle, |c| {
        c.webhooks.iter().flatten().map(|w| w.client_config.ca_bundle.as_ref()).collect()
    })
    .await?;
    publish::<ValidatingWebhookConfiguration>(client, &cfg.configuration, &current.ca_bundle, |c| {
        c.webhooks.iter().flatten().map(|w| w.client_config.ca_bundle.as_ref()).collect()
    })
    .await?;
    Ok(store.install(current.tls_crt.as_bytes(), current.tls_key.as_bytes())?)
}

/// Sets every webhook's caBundle in the configuration `name` to `bundle`, writing only
/// when one differs; the patch fails if the configuration changed since it was read.
async fn publish<K>(client: &Client, name: &str, bundle: &str, bundles: impl Fn(&K) -> Vec<Option<&ByteString>>) -> Result<(), IssuerError>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope> + Clone + std::fmt::Debug + DeserializeOwned + serde::Serialize,
{
    let api: Api<K> = Api::all(client.clone());
    let config = api.get(name).await.map_err(|e| IssuerError::Api("a webhook configuration", e))?;
    let want = bundle.as_bytes();
    let stale: Vec<usize> = bundles(&config).iter().enumerate().filter(|(_, b)| b.is_none_or(|b| b.0 != want)).map(|(i, _)| i).collect();
    if stale.is_empty() {
        return Ok(());
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(want);
    let mut ops = vec![serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": config.meta().resource_version})];
    ops.extend(
        stale.iter().map(|i| serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded})),
    );
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops)).map_err(IssuerError::Patch)?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|e| IssuerError::Api("a webhook configuration", e))?;
    info!(configuration = name, kind = K::kind(&()).as_ref(), "caBundle updated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec!["svc.ns.svc".to_string(), "127.0.0.1".to_string()]
    }

    #[test]
    fn plans_renewals_from_what_is_stored() {
        let now = 1_800_000_000;
        assert_eq!(plan(&Stored::default(), "a", now), Plan::NewAuthority);
        let fresh = issue(Plan::NewAuthority, &Stored::default(), &hosts(), now).unwrap();
        let names = hosts().join(",");
        assert_eq!(plan(&fresh, &names, now), Plan::Keep);
        assert_eq!(plan(&fresh, "other.svc", now), Plan::NewServing, "new names need a new certificate");
        // Two thirds into the serving certificate's life it is renewed, not the CA.
        let later = now + SERVING_DAYS * DAY * 2 / 3 + DAY;
        assert_eq!(plan(&fresh, &names, later), Plan::NewServing);
        let ca_late = now + CA_DAYS * DAY * 2 / 3 + DAY;
        assert_eq!(plan(&fresh, &names, ca_late), Plan::NewAuthority);
        let mut no_key = fresh.clone();
        no_key.tls_key.clear();
        assert_eq!(plan(&no_key, &names, now), Plan::NewServing);
        // Whatever does not load is replaced, whatever the annotations say.
        let mut bad_pair = fresh.clone();
        bad_pair.tls_crt = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into();
        assert_eq!(plan(&bad_pair, &names, now), Plan::NewServing);
        let mut bad_ca_key = fresh.clone();
        bad_ca_key.ca_key = "garbage".into();
        assert_eq!(plan(&bad_ca_key, &names, now), Plan::NewAuthority);
    }

    #[test]
    fn a_renewed_serving_certificate_chains_to_the_same_ca_and_a_new_ca_keeps_the_old_one_trusted() {
        let now = jiff::Timestamp::now().as_second();
        let first = issue(Plan::NewAuthority, &Stored::default(), &hosts(), now).unwrap();
        let renewed = issue(Plan::NewServing, &first, &hosts(), now).unwrap();
        assert_eq!(renewed.ca_bundle, first.ca_bundle);
        assert_ne!(renewed.tls_crt, first.tls_crt);
        for pair in [&first, &renewed] {
            assert!(verifies(&first.ca_bundle, &pair.tls_crt, "svc.ns.svc"), "chains to the stored CA");
        }
        assert!(!verifies(&first.ca_bundle, &renewed.tls_crt, "other.svc"), "only for its own names");
        let new_ca = issue(Plan::NewAuthority, &renewed, &hosts(), now).unwrap();
        assert_eq!(new_ca.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2, "{}", new_ca.ca_bundle);
        assert!(verifies(&new_ca.ca_bundle, &renewed.tls_crt, "svc.ns.svc"), "the old CA's certificate is still trusted");
        assert!(verifies(&new_ca.ca_bundle, &new_ca.tls_crt, "svc.ns.svc"));
        assert!(!verifies(&first.ca_bundle, &new_ca.tls_crt, "svc.ns.svc"), "signed by the new CA");
        // The Secret round trip keeps everything.
        let secret = new_ca.clone().into_secret(Secret::default());
        assert_eq!(Stored::from_secret(&secret), new_ca);
    }

    fn verifies(bundle: &str, cert_pem: &str, name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for ca in <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(bundle.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let cert = <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        use rustls::client::danger::ServerCertVerifier;
        verifier.verify_server_cert(&cert, &[], &name, &[], rustls::pki_types::UnixTime::now()).is_ok()
    }
}
