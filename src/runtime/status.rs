//! Writing status and running status controllers, for any kind.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, watcher},
};
use tracing::warn;

use crate::config::FIELD_MANAGER;
use crate::error::{Error, Result};

use super::cache::Cached;

/// Server-side applies `status` to the status of `name` in `ns` as the operator's
/// field manager. Only the fields in `status` are the operator's: conditions other
/// managers set (listed by type) stay theirs and are never written back.
pub async fn apply_status<K: Cached>(client: &Client, ns: &str, name: &str, status: &impl serde::Serialize) -> Result<()> {
    let body = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    Api::<K>::namespaced(client.clone(), ns).patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Runs a status controller to its end, logging the watch failures it retries.
pub async fn drive<T, E>(
    kind: &str,
    results: impl Stream<Item = std::result::Result<T, kube::runtime::controller::Error<E, watcher::Error>>>,
) where
    E: std::error::Error + 'static,
{
    results
        .for_each(|res| {
            if let Err(kube::runtime::controller::Error::QueueError(e)) = &res {
                warn!(kind, error = %e, "watch failed; retrying");
            }
            futures::future::ready(())
        })
        .await;
}

/// A status write failed: logged with its category, tried again soon.
pub fn retry_status_write<K: Resource<DynamicType = ()>, C>(object: Arc<K>, error: &Error, _: Arc<C>) -> Action {
    warn!(kind = %K::kind(&()), namespace = ?object.namespace(), name = %object.name_any(),
        category = error.category(), error = %error, "status not written; retrying");
    Action::requeue(Duration::from_secs(5))
}
