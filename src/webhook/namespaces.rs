//! The labels of the namespaces in scope: the Pod Security Admission level each
//! enforces (its `pod-security.kubernetes.io/enforce` label), so a pod template is held
//! to the stricter of that and the tenancy policy's level, and the tenants (picked by
//! label) each belongs to. Kept from the API server in the background; an admission
//! never waits for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use parking_lot::RwLock;
use tracing::warn;

use super::pod_security::Level;
use crate::shared::config::Scope;

pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// How often each allowed namespace is read in namespace mode (no watch is possible
/// there: watching namespaces is a cluster-wide permission).
const POLL: Duration = Duration::from_secs(10);

/// The level a namespace's labels enforce, if they name one.
pub fn enforced(labels: Option<&std::collections::BTreeMap<String, String>>) -> Option<Level> {
    match labels?.get(ENFORCE_LABEL)?.as_str() {
        "privileged" => Some(Level::Privileged),
        "baseline" => Some(Level::Baseline),
        "restricted" => Some(Level::Restricted),
        _ => None,
    }
}

pub type Labels = std::collections::BTreeMap<String, String>;

#[derive(Debug, Default)]
pub struct NamespaceLevels {
    labels: RwLock<HashMap<String, Arc<Labels>>>,
}

impl NamespaceLevels {
    /// The Pod Security level `namespace`'s label enforces.
    pub fn get(&self, namespace: &str) -> Option<Level> {
        enforced(self.labels(namespace).as_deref())
    }

    pub fn labels(&self, namespace: &str) -> Option<Arc<Labels>> {
        self.labels.read().get(namespace).cloned()
    }

    /// The namespaces in scope whose labels `matches` accepts.
    pub fn matching(&self, matches: impl Fn(&Labels) -> bool) -> Vec<String> {
        self.labels.read().iter().filter(|(_, labels)| matches(labels)).map(|(ns, _)| ns.clone()).collect()
    }

    pub fn set(&self, namespace: &str, labels: Option<&Labels>) {
        let mut all = self.labels.write();
        match labels {
            Some(labels) if all.get(namespace).is_some_and(|held| **held == *labels) => {}
            labels => {
                all.insert(namespace.to_string(), Arc::new(labels.cloned().unwrap_or_default()));
            }
        }
    }

    /// Keeps the levels current for the life of the process: a metadata watch of every
    /// namespace in cluster mode, a read of each allowed one every few seconds otherwise.
    pub fn start(client: &Client, scope: &Scope) -> Arc<Self> {
        let levels = Arc::new(Self::default());
        match scope {
            Scope::Cluster => {
                let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
                let writer = levels.clone();
                tokio::spawn(async move {
                    watcher(api, watcher::Config::default())
                        .default_backoff()
                        .applied_objects()
                        .for_each(|ns| {
                            match ns {
                                Ok(ns) => writer.set(ns.metadata.name.as_deref().unwrap_or_default(), ns.metadata.labels.as_ref()),
                                Err(e) => warn!(error = %e, "namespace watch failed; retrying"),
                            }
                            futures::future::ready(())
                        })
                        .await
                });
            }
            Scope::Namespaces(list) => {
                let api: Api<Namespace> = Api::all(client.clone());
                let (writer, list) = (levels.clone(), list.clone());
                tokio::spawn(async move {
                    loop {
                        for ns in &list {
                            match api.get_metadata(ns).await {
                                Ok(meta) => writer.set(ns, meta.metadata.labels.as_ref()),
                                Err(e) => warn!(namespace = %ns, error = %e, "cannot read the namespace's pod security label; retrying"),
                            }
                        }
                        tokio::time::sleep(POLL).await;
                    }
                });
            }
        }
        levels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enforce_label_names_a_level() {
        let labels = |v: &str| std::collections::BTreeMap::from([(ENFORCE_LABEL.to_string(), v.to_string())]);
        assert_eq!(enforced(Some(&labels("restricted"))), Some(Level::Restricted));
        assert_eq!(enforced(Some(&labels("baseline"))), Some(Level::Baseline));
        assert_eq!(enforced(Some(&labels("bogus"))), None);
        assert_eq!(enforced(None), None);
        let levels = NamespaceLevels::default();
        levels.set("a", Some(&labels("restricted")));
        assert_eq!(levels.get("a"), Some(Level::Restricted));
        assert_eq!(levels.matching(|l| l.contains_key(ENFORCE_LABEL)), vec!["a".to_string()]);
        levels.set("a", None);
        assert_eq!(levels.get("a"), None);
        assert!(levels.matching(|l| l.contains_key(ENFORCE_LABEL)).is_empty());
    }
}
