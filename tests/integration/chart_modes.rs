//! The operator chart across modes on the real API server: cluster mode, migration to
//! namespace mode and back with `--reuse-values`, and uninstall.

use super::common::run_ok;

#[tokio::test]
async fn cluster_to_namespace_to_cluster_migration() {
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let release_ns = cp.namespace(&admin, "modes-system").await.unwrap();
    let a = cp.namespace(&admin, "modes-a").await.unwrap();
    let b = cp.namespace(&admin, "modes-b").await.unwrap();
    let chart = controlplane::repo_root().join("deploy/charts/toolhive-operator");
    let chart = chart.to_str().unwrap();
    let full = format!("thv-{release_ns}");
    let crb = format!("{full}-manager-rolebinding");
    let role = format!("{full}-manager-role");

    // Cluster mode (the default), webhook off so this release admits nothing.
    run_ok(
        "helm",
        kc,
        &["upgrade", "-i", "thv", chart, "-n", &release_ns, "--set", &format!("fullnameOverride={full}"), "--set", "webhook.enabled=false"],
    );
    assert!(run_ok("kubectl", kc, &["get", "clusterrolebinding"]).contains(&crb));
    assert!(run_ok("kubectl", kc, &["get", "clusterrole"]).contains(&role));
    let dep = run_ok("kubectl", kc, &["get", "deployment", "-n", &release_ns, &full, "-o", "json"]);
    let dep: serde_json::Value = serde_json::from_str(&dep).unwrap();
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "manager");
    assert!(c["args"].as_array().unwrap().iter().any(|a| a == "--leader-elect"));
    assert!(!c["env"].as_array().unwrap().iter().any(|e| e["name"] == "WATCH_NAMESPACE"), "cluster mode watches everything");

    // Migrate to namespace mode, keeping the other values.
    run_ok(
        "helm",
        kc,
        &[
            "upgrade",
            "thv",
            chart,
            "-n",
            &release_ns,
            "--reuse-values",
            "--set",
            "operator.rbac.scope=namespace",
            "--set",
            &format!("operator.rbac.allowedNamespaces={{{a},{b}}}"),
        ],
    );
    assert!(!run_ok("kubectl", kc, &["get", "clusterrolebinding"]).contains(&crb), "no ClusterRoleBinding in namespace mode");
    let rbs = run_ok("kubectl", kc, &["get", "rolebinding", "--all-namespaces"]);
    for ns in [&a, &b] {
        assert!(rbs.lines().any(|l| l.starts_with(ns.as_str()) && l.contains(&crb) && l.contains(&format!("ClusterRole/{role}"))), "{rbs}");
    }
    assert!(rbs.lines().any(|l| l.starts_with(release_ns.as_str()) && l.contains(&format!("Role/{full}-leader-election-role"))), "{rbs}");
    let env =
        run_ok("kubectl", kc, &["get", "deployment", "-n", &release_ns, &full, "-o", "jsonpath={.spec.template.spec.containers[0].env}"]);
    assert!(env.contains(&format!("{a},{b}")), "WATCH_NAMESPACE set: {env}");

    // Clusters that forbid new ClusterRoles: a Role per allowed namespace instead.
    run_ok("helm", kc, &["upgrade", "thv", chart, "-n", &release_ns, "--reuse-values", "--set", "operator.rbac.namespacedRoles=true"]);
    assert!(!run_ok("kubectl", kc, &["get", "clusterrole"]).contains(&role), "no ClusterRole with namespacedRoles");
    for ns in [&a, &b] {
        assert!(run_ok("kubectl", kc, &["get", "role", "-n", ns]).contains(&role), "Role in {ns}");
        let local = format!("{crb}-local");
        let rb = run_ok("kubectl", kc, &["get", "rolebinding", "-n", ns, &local, "-o", "jsonpath={.roleRef.kind}/{.roleRef.name}"]);
        assert_eq!(rb, format!("Role/{role}"));
    }
    let as_operator = cp.client_as_service_account(&release_ns, &full).await.unwrap();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(as_operator.clone(), &a);
    assert!(cms.list(&Default::default()).await.is_ok(), "the Role grants what the operator needs in {a}");
    let elsewhere: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(as_operator, &release_ns);
    assert!(elsewhere.list(&Default::default()).await.is_err(), "and nothing outside the allowed namespaces");
    run_ok("helm", kc, &["upgrade", "thv", chart, "-n", &release_ns, "--reuse-values", "--set", "operator.rbac.namespacedRoles=false"]);

    // Back to cluster mode.
    run_ok("helm", kc, &["upgrade", "thv", chart, "-n", &release_ns, "--reuse-values", "--set", "operator.rbac.scope=cluster"]);
    assert!(run_ok("kubectl", kc, &["get", "clusterrolebinding"]).contains(&crb));
    let rbs = run_ok("kubectl", kc, &["get", "rolebinding", "--all-namespaces"]);
    assert!(!rbs.lines().any(|l| l.starts_with(a.as_str()) && l.contains(&crb)), "per-namespace bindings removed: {rbs}");

    run_ok("helm", kc, &["uninstall", "thv", "-n", &release_ns]);
    assert!(!run_ok("kubectl", kc, &["get", "clusterrole"]).contains(&role), "uninstall removes cluster-scoped objects");
}

/// `helm template` output for the operator chart with `values` and `--set` pairs.
fn template(values: &std::path::Path, set: &[&str]) -> (bool, String, String) {
    let chart = controlplane::repo_root().join("deploy/charts/toolhive-operator");
    let mut args = vec!["template", "thv", chart.to_str().unwrap(), "-n", "toolhive-system", "-f", values.to_str().unwrap()];
    for s in set {
        args.extend(["--set", s]);
    }
    // `helm template` talks to no cluster; the kubeconfig the helper passes is never read.
    let kc = controlplane::repo_root().join("tests/fixtures/no-kubeconfig");
    super::common::run("helm", &kc, &args, None)
}

#[test]
fn a_values_file_for_the_go_chart_renders_in_both_modes() {
    let values = controlplane::repo_root().join("tests/fixtures/go-chart-values.yaml");
    for set in [vec![], vec!["operator.rbac.scope=namespace", "operator.rbac.allowedNamespaces={team-a,team-b}"]] {
        let (ok, out, err) = template(&values, &set);
        assert!(ok, "{set:?}: {err}");
        // What means something here is honoured.
        assert!(out.contains("--metrics-bind-address=:9090") && out.contains("--health-probe-bind-address=:9091"), "ports by name");
        assert!(out.contains(r#"{"containerPort":9999,"name":"debug","protocol":"TCP"}"#), "other ports as given");
        assert!(out.contains("name: TOOLHIVE_PROXY_HOST\n              value: \"127.0.0.1\""), "proxyHost");
        assert!(
            out.contains("name: corporate-ca\n          name: extra-ca") && out.contains("mountPath: /etc/ssl/corporate"),
            "volumes and mounts"
        );
        assert!(out.contains("resources:\n    - configmaps"), "leader-election rules as given");
        assert!(out.contains("seccompProfile:\n              type: RuntimeDefault"), "container seccompProfile");
        assert!(out.contains("name: TOOLHIVE_DEFAULT_REDIS_ADDR\n              value: \"redis.cache.svc:6379\""), "defaultRedis");
        assert!(
            out.contains("name: TOOLHIVE_DEFAULT_REDIS_SECRET_NAME\n              value: \"redis-auth\"")
                && out.contains("name: TOOLHIVE_DEFAULT_REDIS_SECRET_KEY\n              value: \"password\""),
            "defaultRedis password"
        );
        assert!(out.contains("name: TOOLHIVE_DEFAULT_IMAGE_PULL_SECRETS\n              value: \"runner-pull-secret\""), "pull secrets");
        assert_eq!(out.contains("kind: ClusterRoleBinding"), set.is_empty(), "{set:?}");
    }
    // The umbrella chart's Redis when defaultRedis names none; none at all: no default.
    let (ok, out, err) = template(&values, &["operator.defaultRedis.addr=", "global.redis.host=valkey.shared"]);
    assert!(ok && out.contains("name: TOOLHIVE_DEFAULT_REDIS_ADDR\n              value: \"valkey.shared:6379\""), "{err}");
    let (ok, out, err) = template(&values, &["operator.defaultRedis.addr="]);
    assert!(ok && !out.contains("TOOLHIVE_DEFAULT_REDIS_ADDR"), "{err}");
    // Pull secrets as names or {name} objects, as the Go chart takes them.
    let (ok, out, err) =
        template(&values, &["operator.defaultImagePullSecrets[0]=plain", "operator.defaultImagePullSecrets[1].name=object"]);
    assert!(ok && out.contains("name: TOOLHIVE_DEFAULT_IMAGE_PULL_SECRETS\n              value: \"plain,object\""), "{err}");
    // TLS to the default Redis is refused with the reason, never rendered and ignored.
    let (ok, _, err) = template(&values, &["operator.defaultRedis.tls.enabled=true"]);
    assert!(!ok && err.contains("operator.defaultRedis.tls.enabled: this release's proxy runner (v0.44.0) cannot speak TLS"), "{err}");
    // Typos of this chart's own keys are still refused.
    for typo in ["operator.replicas=2", "webhook.failurPolicy=Ignore", "operator.port.metrics=1"] {
        let (ok, _, err) = template(&values, &[typo]);
        assert!(!ok && err.contains("additional properties"), "{typo}: {err}");
    }
}

#[test]
fn webhook_access_options_render_and_a_network_policy_needs_its_peers() {
    let values = super::common::tempdir("chart-access").join("values.yaml");
    std::fs::write(&values, "{}\n").unwrap();
    // The client CA: a ConfigMap, mounted, and the flag that makes the operator use it.
    let (ok, out, err) = template(&values, &["webhook.clientAuth.caBundle=PEM"]);
    assert!(ok, "{err}");
    assert!(out.contains("name: toolhive-operator-webhook-client-ca") && out.contains("ca.crt: \"PEM\""), "{out}");
    assert!(out.contains("- --webhook-client-ca=/etc/toolhive/webhook-client-ca/ca.crt"), "{out}");
    let (_, plain, _) = template(&values, &[]);
    assert!(!plain.contains("webhook-client-ca") && !plain.contains("kind: NetworkPolicy"), "nothing of either by default");
    // The NetworkPolicy: only the given peers reach the webhook port.
    let (ok, out, err) =
        template(&values, &["webhook.networkPolicy.enabled=true", "webhook.networkPolicy.from[0].ipBlock.cidr=10.0.0.10/32"]);
    assert!(ok, "{err}");
    let policy = out.split("---").find(|doc| doc.contains("kind: NetworkPolicy")).expect("a NetworkPolicy");
    assert!(
        policy.contains("- {port: webhook, protocol: TCP}\n      from:\n        - ipBlock:\n            cidr: 10.0.0.10/32"),
        "{policy}"
    );
    let (ok, _, err) = template(&values, &["webhook.networkPolicy.enabled=true"]);
    assert!(!ok && err.contains("webhook.networkPolicy.enabled needs webhook.networkPolicy.from"), "{err}");
    // Cluster-scoped names carry a release name the fullname does not start with.
    let (ok, out, err) = template(&values, &["fullnameOverride=toolhive-operator"]);
    assert!(ok, "{err}");
    assert!(out.contains("name: thv-toolhive-operator-manager-role") && out.contains("name: thv-toolhive-operator-webhook\n"), "{out}");
    assert!(out.contains("name: toolhive-operator\n  namespace: toolhive-system"), "namespaced names keep the fullname");
}
