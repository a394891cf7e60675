//! Writing an MCPServer's children: server-side apply of what it should have, never
//! taking over an object someone else made, and deleting what it no longer uses.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions},
};

use crate::kinds::mcpserver::resources::{self, Child};
use crate::shared::config::FIELD_MANAGER;
use crate::shared::error::{Error, Result};

/// The version that changes when someone else edits a child: generation where the
/// kind has one (status updates do not bump it), otherwise resourceVersion.
pub fn edit_version(meta: &ObjectMeta) -> String {
    match meta.generation {
        Some(g) => format!("g{g}"),
        None => meta.resource_version.clone().unwrap_or_default(),
    }
}

/// Server-side applies one child, refusing to take over an object of that name the
/// operator did not create for this MCPServer (`cached`: what the child watch shows).
pub async fn apply_child(client: &Client, ns: &str, child: &Child, owner_uid: &str, cached: Option<&ObjectMeta>) -> Result<ObjectMeta> {
    resources::each_kind!(child, o => apply_owned(client, ns, o, owner_uid, cached).await)
}

async fn apply_owned<K>(client: &Client, ns: &str, object: &K, owner_uid: &str, cached: Option<&ObjectMeta>) -> Result<ObjectMeta>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    // Most child watches see only objects labelled as ours; an unlabelled one of the
    // same name is looked up (list, which the operator's role grants) before the first apply.
    let existing = match cached {
        Some(meta) => Some(meta.clone()),
        None => {
            let found = api.list_metadata(&ListParams::default().fields(&format!("metadata.name={name}"))).await?;
            found.items.into_iter().next().map(|o| o.metadata)
        }
    };
    if let Some(meta) = existing
        && !controlled_by(&meta, owner_uid)
    {
        return Err(Error::NotOwned { kind, name });
    }
    let applied = api
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
        .await
        .map_err(|source| Error::Apply { kind, name: name.clone(), source })?;
    Ok(applied.meta().clone())
}

/// Whether the MCPServer with `uid` is the controller owner of an object.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
}

/// Deletes a child the server no longer uses (`cached`: what the child watch shows),
/// only if this MCPServer controls it, and only that very object (its uid as a
/// precondition). Missing is fine.
pub async fn delete_unused<K>(client: &Client, ns: &str, cached: &ObjectMeta, owner_uid: &str) -> Result<bool>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if !controlled_by(cached, owner_uid) {
        return Ok(false);
    }
    let name = cached.name.clone().unwrap_or_default();
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: cached.uid.clone(), resource_version: None }),
        ..DeleteParams::background()
    };
    match Api::<K>::namespaced(client.clone(), ns).delete(&name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `name` only if it carries the runner's label for this server (never a
/// same-named object someone else owns). Missing is fine.
pub async fn delete_labelled<K>(api: &Api<K>, name: &str, label: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let (key, value) = label.split_once('=').unwrap_or((label, ""));
    let list = api.list_metadata(&ListParams::default().labels(label).fields(&format!("metadata.name={name}"))).await;
    let items = match list {
        Ok(l) => l.items,
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for item in items {
        if item.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str) == Some(value) {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Applies `child` of the object with `uid` unless the cache shows it as last applied
/// (same hash, nobody's edit since): true when it was created. Shared with the other
/// kinds whose children live in the same child caches.
pub async fn apply_child_if_changed(
    shared: &super::Shared,
    children: &super::ChildCaches,
    ns: &str,
    child: &Child,
    uid: &str,
) -> Result<bool> {
    let key: super::ChildKey = (ns.to_string(), child.kind(), child.name().to_string());
    let desired_hash = child.hash().to_string();
    let current = children.child_meta(child, ns);
    if let Some(meta) = &current
        && resources::applied_hash(meta) == Some(desired_hash.as_str())
        && shared.applied.lock().get(&key) == Some(&(desired_hash.clone(), edit_version(meta)))
    {
        return Ok(false);
    }
    let t = std::time::Instant::now();
    let result = apply_child(&shared.client, ns, child, uid, current.as_ref()).await;
    shared.metrics.apply_latency.observe(t.elapsed().as_secs_f64());
    let meta = result?;
    shared.metrics.children_applied.with_label_values(&[child.kind()]).inc();
    shared.applied.lock().insert(key, (desired_hash, edit_version(&meta)));
    Ok(current.is_none())
}

/// Applies `children` of the object `name` with `uid`, in order, each only when it
/// changed (`apply_child_if_changed`), and logs those it created.
pub async fn apply_children(
    shared: &super::Shared,
    caches: &super::ChildCaches,
    ns: &str,
    name: &str,
    children: &[Child],
    uid: &str,
) -> Result<()> {
    let mut created = Vec::new();
    for child in children {
        if apply_child_if_changed(shared, caches, ns, child, uid).await? {
            created.push(format!("{} {}", child.kind(), child.name()));
        }
    }
    if !created.is_empty() {
        tracing::info!(namespace = %ns, name = %name, created = ?created, "created child objects");
    }
    Ok(())
}
