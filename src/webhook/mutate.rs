//! The mutating webhook's defaults. A field the user set is never changed; the CRD's
//! own defaults (transport, proxyMode, proxyPort) are applied by the API server before
//! this runs, so only what depends on them or on the tenancy policy is filled here.

use serde_json::{Map, Value};

use super::policy::{ResourcePolicy, Rules};
use super::rules::MCP_CONTAINER;

/// Label the mutating webhook adds: the team a server belongs to.
pub const TEAM_LABEL: &str = "toolhive.stacklok.dev/team";

/// `object` with every default filled in.
pub fn with_defaults(object: &Value, namespace: &str, rules: &Rules) -> Value {
    let mut object = object.clone();
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return object;
    };
    if spec.get("transport").and_then(Value::as_str).is_some_and(|t| t != "stdio") {
        let port = spec.get("proxyPort").cloned().unwrap_or(Value::from(crate::kinds::mcpserver::api::DEFAULT_PROXY_PORT));
        set_if_absent(spec, "mcpPort", port);
    }
    if let Some(policy) = &rules.proxy_resources {
        default_resources(object_at(spec, "resources"), policy);
        if spec.get("resources").and_then(Value::as_object).is_some_and(Map::is_empty) {
            spec.remove("resources");
        }
    }
    if let Some(policy) = &rules.mcp_resources
        && !(policy.defaults.requests.is_empty() && policy.defaults.limits.is_empty())
    {
        let pod = object_at(object_at(spec, "podTemplateSpec"), "spec");
        if !pod.get("containers").is_some_and(Value::is_array) {
            pod.insert("containers".into(), Value::Array(Vec::new()));
        }
        if let Some(containers) = pod.get_mut("containers").and_then(Value::as_array_mut) {
            if !containers.iter().any(is_mcp_container) {
                containers.push(Value::Object(Map::from_iter([("name".to_string(), Value::from(MCP_CONTAINER))])));
            }
            for container in containers.iter_mut().filter(|c| is_mcp_container(c)).filter_map(Value::as_object_mut) {
                default_resources(object_at(container, "resources"), policy);
            }
        }
    }
    let team = rules.team.clone().unwrap_or_else(|| namespace.to_string());
    if let Some(root) = object.as_object_mut() {
        set_if_absent(object_at(object_at(root, "metadata"), "labels"), TEAM_LABEL, Value::from(team));
    }
    object
}

fn is_mcp_container(container: &Value) -> bool {
    container.get("name").and_then(Value::as_str) == Some(MCP_CONTAINER)
}

fn default_resources(resources: &mut Map<String, Value>, policy: &ResourcePolicy) {
    for (section, amounts) in [("requests", &policy.defaults.requests), ("limits", &policy.defaults.limits)] {
        if amounts.is_empty() {
            continue;
        }
        let section = object_at(resources, section);
        for (resource, amount) in [("cpu", &amounts.cpu), ("memory", &amounts.memory)] {
            if let Some(amount) = amount {
                set_if_absent(section, resource, Value::from(amount.as_str()));
            }
        }
    }
}

/// The object under `key`, made one if it is absent or not an object.
fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(inner) => inner,
        // Made an object just above.
        _ => unreachable!("slot was just made an object"),
    }
}

/// Sets `key` unless it holds a value (null and "" count as unset).
fn set_if_absent(map: &mut Map<String, Value>, key: &str, value: Value) {
    let absent = map.get(key).is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    if absent {
        map.insert(key.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::policy::TenancyPolicy;
    use serde_json::json;

    #[test]
    fn defaults_fill_gaps_and_keep_user_values() {
        let policy = TenancyPolicy::from_text(
            "defaults:\n  team: core\n  proxyResources: {defaults: {requests: {cpu: 50m, memory: 64Mi}}}\n  mcpResources: {defaults: {limits: {memory: 256Mi}}}\n",
        )
        .unwrap();
        let rules = policy.rules_for("team-a");
        let object = json!({"metadata": {"name": "s"}, "spec": {"image": "x", "transport": "sse", "proxyPort": 9000,
            "resources": {"requests": {"cpu": "10m"}}, "podTemplateSpec": "not an object"}});
        let out = with_defaults(&object, "team-a", &rules);
        assert_eq!(out["spec"]["mcpPort"], 9000);
        assert_eq!(out["spec"]["resources"]["requests"], json!({"cpu": "10m", "memory": "64Mi"}));
        assert_eq!(
            out["spec"]["podTemplateSpec"]["spec"]["containers"],
            json!([{"name": "mcp", "resources": {"limits": {"memory": "256Mi"}}}])
        );
        assert_eq!(out["metadata"]["labels"][TEAM_LABEL], "core");
        assert_eq!(with_defaults(&out, "team-a", &rules), out, "idempotent");
        let stdio = with_defaults(&json!({"spec": {"transport": "stdio"}}), "team-a", &TenancyPolicy::default().rules_for("x"));
        assert!(stdio["spec"].get("mcpPort").is_none(), "stdio servers listen on no port");
        assert_eq!(stdio["metadata"]["labels"][TEAM_LABEL], "team-a", "the namespace is the team by default");
    }
}
