//! Object metadata and digests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A short, stable digest of a serializable value (its JSON text).
pub fn hash_of(value: &impl Serialize) -> String {
    let text = serde_json::to_vec(value).unwrap_or_default();
    Sha256::digest(&text).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Drops what the operator's caches never read, so a thousand servers cost little
/// memory: managedFields (often larger than the rest of the metadata) and every
/// annotation not in `keep`.
pub fn slim_metadata(meta: &mut ObjectMeta, keep: &[&str]) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| keep.contains(&k.as_str()));
    }
}
