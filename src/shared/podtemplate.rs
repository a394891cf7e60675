//! A user's `podTemplateSpec` laid over the pod template the operator makes, the way
//! `kubectl` merges a strategic patch into a pod: maps field by field, the lists
//! Kubernetes merges by key (containers, volumes, environment, mounts, ports) item by
//! item, any other list replaced whole. What the operator must decide (the pod's
//! ServiceAccount and token, the selector's labels) is set again afterwards by the
//! caller.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The key items of a list at `field` are merged by, where Kubernetes merges them.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// Lays `overlay` over `base`: an object merges field by field, a keyed list item by
/// item (a new item appended), anything else replaced; an explicit null removes.
fn merge(base: &mut Value, overlay: &Value, field: &str) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(key);
                } else {
                    merge(base.entry(key.clone()).or_insert(Value::Null), value, key);
                }
            }
        }
        (Value::Array(base), Value::Array(overlay)) if merge_key(field).is_some() => {
            let key = merge_key(field).unwrap_or_default();
            for item in overlay {
                match base.iter_mut().find(|b| b.get(key).is_some() && b.get(key) == item.get(key)) {
                    Some(existing) => merge(existing, item, field),
                    None => base.push(item.clone()),
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// `base` with `overlay` (a podTemplateSpec as the user wrote it) laid over it; None
/// when the result is not a pod template (the admission checks refuse that first).
pub fn overlaid(base: &PodTemplateSpec, overlay: &Value) -> Option<PodTemplateSpec> {
    let mut merged = serde_json::to_value(base).ok()?;
    merge(&mut merged, overlay, "");
    serde_json::from_value(merged).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_env_and_volumes_merge_by_key_and_other_fields_are_replaced_or_added() {
        let base: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "vmcp"}},
            "spec": {"containers": [{"name": "vmcp", "image": "vmcp:1", "args": ["serve"],
                "env": [{"name": "HOME", "value": "/tmp"}, {"name": "LOG", "value": "json"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/vmcp"}]}],
                "volumes": [{"name": "config", "configMap": {"name": "c"}}],
                "tolerations": [{"key": "a", "operator": "Exists"}]}
        }))
        .unwrap();
        let overlay = json!({
            "metadata": {"annotations": {"team": "a"}},
            "spec": {"containers": [
                    {"name": "vmcp", "env": [{"name": "LOG", "value": "text"}, {"name": "EXTRA", "value": "1"}],
                     "resources": {"limits": {"memory": "1Gi"}}},
                    {"name": "sidecar", "image": "side:1"}],
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "tolerations": [{"key": "b", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}}
        });
        let merged = serde_json::to_value(overlaid(&base, &overlay).unwrap()).unwrap();
        let vmcp = &merged["spec"]["containers"][0];
        assert_eq!(
            (vmcp["image"].as_str(), vmcp["args"][0].as_str()),
            (Some("vmcp:1"), Some("serve")),
            "what the overlay leaves alone stays"
        );
        assert_eq!(
            vmcp["env"],
            json!([{"name": "HOME", "value": "/tmp"}, {"name": "LOG", "value": "text"}, {"name": "EXTRA", "value": "1"}])
        );
        assert_eq!(vmcp["resources"]["limits"], json!({"cpu": "500m", "memory": "1Gi"}));
        assert_eq!(vmcp["resources"]["requests"]["memory"], "128Mi");
        assert_eq!(merged["spec"]["containers"][1]["name"], "sidecar");
        let volumes: Vec<&str> = merged["spec"]["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(volumes, ["config", "cache"]);
        assert_eq!(merged["spec"]["tolerations"], json!([{"key": "b", "operator": "Exists"}]), "an unkeyed list is replaced");
        assert!(merged["spec"]["affinity"]["nodeAffinity"].is_object());
        assert_eq!((&merged["metadata"]["labels"]["app"], &merged["metadata"]["annotations"]["team"]), (&json!("vmcp"), &json!("a")));
    }
}
