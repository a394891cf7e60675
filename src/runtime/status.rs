//! Writing status and running status controllers, for any kind.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action},
};
use tracing::{info, warn};

use crate::shared::config::FIELD_MANAGER;
use crate::shared::configkind::{ConfigKind, desired_status};
use crate::shared::error::{Error, Result};

use super::cache::{Cache, Cached};

/// Server-side applies `status` to the status of `name` in `ns` as the operator's
/// field manager. Only the fields in `status` are the operator's: conditions other
/// managers set (listed by type) stay theirs and are never written back.
pub async fn apply_status<K: Cached>(client: &Client, ns: &str, name: &str, status: &impl serde::Serialize) -> Result<()> {
    let body = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    Api::<K>::namespaced(client.clone(), ns).patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Runs a status controller to its end. Its watch failures are its caches' (retried
/// and counted there); its errors are logged by `retry_status_write`.
pub async fn drive<T>(results: impl Stream<Item = T>) {
    results.for_each(|_| futures::future::ready(())).await;
}

/// A status write failed: logged with its category, tried again soon.
pub fn retry_status_write<K: Resource<DynamicType = ()>, C>(object: Arc<K>, error: &Error, _: Arc<C>) -> Action {
    warn!(kind = %K::kind(&()), namespace = ?object.namespace(), name = %object.name_any(),
        category = error.category(), error = %error, "status not written; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Keeps the status of every configuration kind K in `configs` (its cache)
/// current until `shutdown` resolves: computed from the spec alone.
pub async fn run_config_status<K: ConfigKind>(
    client: Client,
    configs: Cache<K>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let results = Controller::for_shared_stream(configs.everything_then_changes(), configs.store().clone())
        .graceful_shutdown_on(shutdown)
        .run(reconcile_config_status::<K>, retry_status_write, Arc::new(client));
    drive(results).await;
}

async fn reconcile_config_status<K: ConfigKind>(config: Arc<K>, client: Arc<Client>) -> Result<Action> {
    let desired = desired_status(config.as_ref(), Time(jiff::Timestamp::now()));
    if config.status() != Some(&desired) {
        let (ns, name) = (config.namespace().unwrap_or_default(), config.name_any());
        apply_status::<K>(&client, &ns, &name, &desired).await?;
        info!(kind = %K::kind(&()), namespace = %ns, name = %name, hash = %desired.config_hash, "status written");
    }
    Ok(Action::await_change())
}
