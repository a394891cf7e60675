//! The checks of an EmbeddingServer at admission: the namespace may hold one, its
//! spec reads as the API's types, it sets nothing this release does not carry out,
//! and what it runs is held to the namespace's rules as an MCP server's container is
//! (image registry, resource ceiling). Its model cache cannot change once made: a
//! StatefulSet's volume claims are fixed, so the edit is refused here rather than
//! left failing in the status.

use serde_json::Value;

use super::rules::{Facts, FieldError, Rule, Violation, admitted_spec, check_ceiling, check_image};
use crate::kinds::embedding::api::{EmbeddingServerSpec, invalid};
use crate::kinds::embedding::children::CONTAINER as EMBEDDING_CONTAINER;

/// Every violation of an EmbeddingServer with `spec` (replacing `old`, on an update)
/// in `namespace`, all at once.
pub fn validate(spec: Option<&Value>, old: Option<&Value>, namespace: &str, facts: &Facts) -> Vec<Violation> {
    let spec = match admitted_spec(spec, namespace, facts) {
        Ok(spec) => spec,
        Err(refused) => return vec![refused],
    };
    let parsed: EmbeddingServerSpec = match crate::shared::problem::typed(spec, "spec") {
        Ok(parsed) => parsed,
        Err(problem) => return vec![Violation::invalid_spec(problem)],
    };
    let mut out = Vec::new();
    let (rules, _) = facts.rules_in(namespace);
    // Laid over the StatefulSet's pod template: held to what an MCPServer's is, its
    // embedding container to the namespace's MCP server ceiling (as spec.resources).
    if let Some(template) = &parsed.pod_template_spec {
        super::rules::check_pod_template_spec(
            template,
            namespace,
            facts,
            &rules,
            (EMBEDDING_CONTAINER, rules.mcp_resources.as_ref()),
            &mut out,
        );
    }
    // A template that is not one is reported by the check above, with its path.
    let bad_quantities: Vec<_> = invalid(&parsed).into_iter().filter(|(field, _)| field != "spec.podTemplateSpec").collect();
    out.extend(bad_quantities.iter().map(|(field, why)| Violation::new(field.clone(), FieldError::Invalid, Rule::Resources, why.clone())));
    check_image(&parsed.image, "spec.image", namespace, &rules, &mut out);
    if let (Some(policy), Some(resources), true) = (&rules.mcp_resources, parsed.resources.requirements(), bad_quantities.is_empty()) {
        check_ceiling(&resources, policy, "spec.resources", &mut out);
    }
    let cache = |spec: &EmbeddingServerSpec| spec.model_cache.clone().filter(|c| c.enabled);
    if let Some(old) = old.and_then(|o| serde_json::from_value::<EmbeddingServerSpec>(o.clone()).ok())
        && cache(&old) != cache(&parsed)
    {
        out.push(Violation::new(
            "spec.modelCache",
            FieldError::Forbidden,
            Rule::Spec,
            "the model cache cannot change once the server exists (a StatefulSet's volume claims are fixed); delete and re-create the EmbeddingServer",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::config::Scope;
    use crate::webhook::policy::TenancyPolicy;
    use serde_json::json;

    fn violations(policy: &str, spec: Value, old: Option<Value>) -> Vec<String> {
        let policy = TenancyPolicy::from_text(policy).unwrap();
        let scope = Scope::Namespaces(vec!["team".into()]);
        let no_quota = |_: &str| 0usize;
        let levels = crate::webhook::namespaces::NamespaceLevels::default();
        let facts = Facts { policy: &policy, scope: &scope, quota: &no_quota, namespaces: &levels };
        validate(Some(&spec), old.as_ref(), "team", &facts).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_plain_server_passes_and_its_image_and_resources_are_held_to_the_namespace_s_rules() {
        let policy = "defaults:\n  allowedRegistries: [ghcr.io]\n  mcpResources:\n    max: {memory: 1Gi}\n";
        assert!(violations(policy, json!({"model": "m"}), None).is_empty(), "the default image is on ghcr.io");
        let found = violations(policy, json!({"image": "docker.io/acme/tei:1", "resources": {"limits": {"memory": "4Gi"}}}), None);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("spec.image: Forbidden: registry \"docker.io\" is not allowed"), "{found:?}");
        assert_eq!(found[1], "spec.resources.limits.memory: Forbidden: 4Gi exceeds the namespace maximum of 1Gi");
    }

    #[test]
    fn what_cannot_run_is_refused_with_its_path_and_a_pod_template_is_held_to_the_pod_policy() {
        let policy = "defaults:\n  mcpResources:\n    max: {memory: 8Gi}\n";
        let found = violations(
            policy,
            json!({"podTemplateSpec": {"spec": {"hostNetwork": true, "containers": [{"name": "embedding", "resources": {"limits": {"memory": "16Gi"}}}]}},
                "modelCache": {"size": "big"}}),
            None,
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().any(|v| v.starts_with("spec.podTemplateSpec.spec.hostNetwork")), "{found:?}");
        assert!(
            found.iter().any(|v| v.starts_with("spec.podTemplateSpec.spec.containers[0].resources.limits.memory: Forbidden: 16Gi exceeds")),
            "{found:?}"
        );
        assert!(found.iter().any(|v| v.starts_with("spec.modelCache.size: Invalid value: \"big\" is not a valid quantity")), "{found:?}");
        let fits = json!({"podTemplateSpec": {"spec": {"containers": [{"name": "embedding", "env": [{"name": "RUST_LOG", "value": "info"}]}],
            "tolerations": [{"key": "gpu", "operator": "Exists"}]}}});
        assert!(violations(policy, fits, None).is_empty());
        let wrong = violations("{}", json!({"port": "http"}), None);
        assert!(wrong[0].starts_with("spec.port: Invalid value"), "{wrong:?}");
    }

    #[test]
    fn the_model_cache_cannot_change_once_made_but_the_rest_can() {
        let before = json!({"model": "m", "modelCache": {"size": "10Gi"}});
        let found = violations("{}", json!({"model": "m", "modelCache": {"size": "20Gi"}}), Some(before.clone()));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("spec.modelCache: Forbidden: the model cache cannot change"), "{found:?}");
        assert!(violations("{}", json!({"model": "other", "modelCache": {"size": "10Gi"}, "replicas": 2}), Some(before)).is_empty());
    }
}
