//! The checks of a VirtualMCPServer at admission: the namespace may hold one, its
//! spec reads as the API's types, and it sets nothing this release does not carry
//! out (in the spec or in `spec.config`), each refusal with its field path. The
//! controller reports the same problems in the status of objects stored before.

use serde_json::Value;

use super::rules::{Facts, FieldError, Rule, Violation, admitted_spec};
use crate::kinds::virtualmcp::api::{VirtualMCPServerSpec, unsupported};
use crate::kinds::virtualmcp::children::CONTAINER as VMCP_CONTAINER;

/// Every violation of a VirtualMCPServer with `spec` in `namespace`, all at once.
pub fn validate(spec: Option<&Value>, namespace: &str, facts: &Facts) -> Vec<Violation> {
    let spec = match admitted_spec(spec, namespace, facts) {
        Ok(spec) => spec,
        Err(refused) => return vec![refused],
    };
    let parsed: VirtualMCPServerSpec = match crate::shared::problem::typed(spec, "spec") {
        Ok(parsed) => parsed,
        Err(problem) => return vec![Violation::invalid_spec(problem)],
    };
    let mut out: Vec<Violation> =
        unsupported(&parsed).into_iter().map(|(field, why)| Violation::new(field, FieldError::Forbidden, Rule::Unsupported, why)).collect();
    // The vMCP pod is a proxy: the namespace's proxy ceiling holds its resources (the
    // operator's, with what spec.podTemplateSpec sets for its container laid over).
    let (rules, _) = facts.rules_in(namespace);
    if let Some(template) = &parsed.pod_template_spec {
        super::rules::check_pod_template_spec(template, namespace, facts, &rules, (VMCP_CONTAINER, None), &mut out);
    }
    if let Some(policy) = &rules.proxy_resources {
        let resources = effective_resources(parsed.pod_template_spec.as_ref());
        let mut over = Vec::new();
        super::rules::check_ceiling(&resources, policy, "resources", &mut over);
        out.extend(over.into_iter().map(|v| {
            let detail = format!(
                "the vMCP container's {}: {} (the operator's default unless spec.podTemplateSpec sets the vmcp container's resources; the platform team sets the ceiling)",
                v.field, v.detail
            );
            Violation { field: "spec".into(), detail, ..v }
        }));
    }
    if let Err(problems) = crate::kinds::virtualmcp::config::parse(parsed.config.as_ref(), &parsed.group_ref.name) {
        out.extend(problems.into_iter().map(Violation::invalid_spec));
    }
    let headers = crate::kinds::virtualmcp::headers::passthrough_problems(&parsed.passthrough_headers, "spec.passthroughHeaders");
    out.extend(headers.into_iter().map(Violation::invalid_spec));
    out
}

/// The vMCP container's resources: the operator's, with those `template` sets for
/// the container laid over (as the Deployment gets them).
fn effective_resources(template: Option<&Value>) -> k8s_openapi::api::core::v1::ResourceRequirements {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    let fixed = crate::kinds::virtualmcp::children::container_resources();
    let base = PodTemplateSpec {
        spec: Some(PodSpec {
            containers: vec![Container { name: VMCP_CONTAINER.into(), resources: Some(fixed.clone()), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let merged = template.and_then(|t| crate::shared::podtemplate::overlaid(&base, t));
    let container = merged.and_then(|m| m.spec?.containers.into_iter().find(|c| c.name == VMCP_CONTAINER));
    container.and_then(|c| c.resources).unwrap_or(fixed)
}

/// Every violation of a VirtualMCPCompositeToolDefinition with `spec` in `namespace`:
/// the composite tool it defines must be one the vMCP can run.
pub fn validate_definition(spec: Option<&Value>, namespace: &str, facts: &Facts) -> Vec<Violation> {
    let spec = match admitted_spec(spec, namespace, facts) {
        Ok(spec) => spec,
        Err(refused) => return vec![refused],
    };
    match crate::kinds::virtualmcp::composite::parse(spec, "spec") {
        Ok(_) => Vec::new(),
        Err(problems) => problems.into_iter().map(Violation::invalid_spec).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::config::Scope;
    use crate::webhook::policy::TenancyPolicy;
    use serde_json::json;

    /// `check` run with the facts of an install serving namespace `team` under `policy`.
    fn serving_team<R>(policy: &TenancyPolicy, check: impl FnOnce(&Facts) -> R) -> R {
        let scope = Scope::Namespaces(vec!["team".into()]);
        let no_quota = |_: &str| 0usize;
        let levels = crate::webhook::namespaces::NamespaceLevels::default();
        check(&Facts { policy, scope: &scope, quota: &no_quota, namespaces: &levels })
    }

    fn violations_under(policy: &TenancyPolicy, namespace: &str, spec: Value) -> Vec<String> {
        serving_team(policy, |facts| validate(Some(&spec), namespace, facts).iter().map(ToString::to_string).collect())
    }

    fn violations(namespace: &str, spec: Value) -> Vec<String> {
        violations_under(&TenancyPolicy::default(), namespace, spec)
    }

    #[test]
    fn a_plain_server_passes_and_what_is_not_carried_out_is_refused_with_its_path() {
        let plain = json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"},
            "config": {"aggregation": {"conflictResolution": "prefix"}}});
        assert!(violations("team", plain).is_empty());
        let found = violations(
            "team",
            json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}, "passthroughHeaders": ["X-Team", "authorization"],
                "config": {"codeMode": {"enabled": true}, "operational": {"timeouts": {"default": "soon"}}}}),
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("spec.config.codeMode: Invalid value: code mode is not carried out"), "{found:?}");
        assert!(found[1].starts_with("spec.config.operational.timeouts.default: Invalid value: \"soon\" is not a duration"), "{found:?}");
        assert!(found[2].starts_with("spec.passthroughHeaders[1]: Invalid value: Authorization may not be forwarded"), "{found:?}");
    }

    #[test]
    fn the_vmcp_pod_is_held_to_the_namespace_s_proxy_ceiling() {
        let policy = TenancyPolicy::from_text("defaults:\n  proxyResources:\n    max: {memory: 256Mi}\n").unwrap();
        let found = violations_under(&policy, "team", json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}}));
        assert_eq!(
            found,
            [
                "spec: Forbidden: the vMCP container's resources.limits.memory: 512Mi exceeds the namespace maximum of 256Mi (the operator's default unless spec.podTemplateSpec sets the vmcp container's resources; the platform team sets the ceiling)"
            ]
        );
    }

    #[test]
    fn a_pod_template_is_held_to_the_namespace_s_pod_policy_and_the_proxy_ceiling() {
        let policy = TenancyPolicy::from_text("defaults:\n  proxyResources:\n    max: {memory: 768Mi}\n").unwrap();
        let with = |template: Value| json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}, "podTemplateSpec": template});
        let found = |spec: Value| violations_under(&policy, "team", spec);
        let fits = with(json!({"spec": {"containers": [{"name": "vmcp", "resources": {"limits": {"memory": "640Mi"}}}]}}));
        assert!(found(fits).is_empty());
        let over = found(with(json!({"spec": {"containers": [{"name": "vmcp", "resources": {"limits": {"memory": "1Gi"}}}]}})));
        assert_eq!(over.len(), 1, "{over:?}");
        assert!(over[0].contains("the vMCP container's resources.limits.memory: 1Gi exceeds the namespace maximum of 768Mi"), "{over:?}");
        let privileged = found(with(json!({"spec": {"hostNetwork": true, "containers": [{"name": "vmcp"}]}})));
        assert!(privileged.iter().any(|v| v.starts_with("spec.podTemplateSpec.spec.hostNetwork")), "{privileged:?}");
        let misspelt = found(with(json!({"spec": {"containers": [{"name": "vmcp", "resource": {}}]}})));
        assert!(misspelt.iter().any(|v| v.contains("spec.podTemplateSpec")), "{misspelt:?}");
    }

    #[test]
    fn a_definition_is_held_to_what_the_vmcp_can_run() {
        serving_team(&TenancyPolicy::default(), |facts| {
            let good = json!({"name": "t", "description": "d", "steps": [{"id": "a", "tool": "fetch.fetch"}]});
            assert!(validate_definition(Some(&good), "team", facts).is_empty());
            let looped = json!({"name": "t", "description": "d", "steps": [{"id": "a", "tool": "fetch.fetch", "dependsOn": ["a"]}]});
            let found: Vec<String> = validate_definition(Some(&looped), "team", facts).iter().map(ToString::to_string).collect();
            assert_eq!(found, ["spec.steps: Invalid value: the steps depend on each other in a cycle: a -> a"]);
        });
    }

    #[test]
    fn a_spec_that_does_not_read_and_a_namespace_not_served_are_refused() {
        let found = violations("team", json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "kerberos"}}));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("spec.incomingAuth.type: Invalid value: unknown variant `kerberos`"), "{found:?}");
        let other = violations("elsewhere", json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}}));
        assert!(other[0].starts_with("metadata.namespace"), "{other:?}");
    }
}
