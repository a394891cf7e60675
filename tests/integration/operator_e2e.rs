//! The install guide's flow on the real control plane: both charts installed with
//! helm (namespace mode), the operator binary run on the host as the chart's
//! ServiceAccount (impersonation, so only the chart's RBAC applies), the chart's
//! webhook configurations pointed at it over TLS.

use std::time::Duration;

use super::common::{
    Operator, admission_on_new_connection, certificate_der, eventually, eventually_within, impersonating_kubeconfig, run,
    served_certificate, tempdir, webhook_registration_lock, write_secret_volume,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use toolhive_operator::api::{FINALIZER, MCPServer, Phase};

#[tokio::test]
async fn guide_flow_namespace_mode_with_webhook() {
    let _webhooks = webhook_registration_lock().await;
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.clone();
    let team = cp.namespace(&admin, "team").await.unwrap();
    let outside = cp.namespace(&admin, "outside").await.unwrap();
    let release_ns = cp.namespace(&admin, "toolhive-system").await.unwrap();
    let work = tempdir(&release_ns);
    let root = controlplane::repo_root();

    // CRDs chart, as the guide does.
    let crds_chart = root.join("deploy/charts/toolhive-operator-crds");
    let (ok, _, err) = run("helm", &kc, &["upgrade", "-i", "toolhive-operator-crds", crds_chart.to_str().unwrap(), "--wait"], None);
    assert!(ok, "crds chart: {err}");
    let (_, crds, _) = run("kubectl", &kc, &["get", "crd"], None);
    assert!(crds.contains("mcpservers.toolhive.stacklok.dev"), "{crds}");

    // An MCPServer outside the allowed namespaces, created before the webhook exists:
    // the operator must leave it alone.
    let outside_api: Api<MCPServer> = Api::namespaced(admin.clone(), &outside);
    let stray: MCPServer = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": "stray"}, "spec": {"image": "ghcr.io/acme/stray"}
    }))
    .unwrap();
    create_when_served(&outside_api, &stray).await;

    // Webhook serving certificate on the host, trusted through the chart's caBundle.
    let ca = controlplane::Authority::new("webhook-test-ca").unwrap();
    let pair = ca.serving(&[], &[]).unwrap();
    let cert_dir = work.join("certs");
    write_secret_volume(&cert_dir, "v1", &pair);
    let webhook_port = controlplane::free_port().unwrap();
    let fullname = format!("thv-{}", &release_ns);
    let values = work.join("values.yaml");
    std::fs::write(
        &values,
        serde_json::to_string(&json!({
            "fullnameOverride": fullname,
            "operator": {"rbac": {"scope": "namespace", "allowedNamespaces": [team]}},
            "webhook": {"url": format!("https://127.0.0.1:{webhook_port}"), "caBundle": ca.cert_pem()},
            "tenancy": {"policy": {
                "contact": "#platform",
                "defaults": {"allowedRegistries": ["ghcr.io/stackloklabs", "ghcr.io/acme"], "maxMCPServers": 5,
                             "proxyResources": {"defaults": {"requests": {"cpu": "50m"}}, "max": {"cpu": "1"}}}
            }}
        }))
        .unwrap(),
    )
    .unwrap();
    let chart = root.join("deploy/charts/toolhive-operator");
    let (ok, _, err) = run(
        "helm",
        &kc,
        &["upgrade", "-i", "toolhive-operator", chart.to_str().unwrap(), "-n", &release_ns, "-f", values.to_str().unwrap()],
        None,
    );
    assert!(ok, "operator chart: {err}");

    // What the guide's check commands show.
    let (_, rbs, _) = run("kubectl", &kc, &["get", "rolebinding", "--all-namespaces"], None);
    let manager_rb = format!("{fullname}-manager-rolebinding");
    assert!(
        rbs.lines().any(|l| l.starts_with(&team) && l.contains(&manager_rb) && l.contains(&format!("ClusterRole/{fullname}-manager-role"))),
        "{rbs}"
    );
    assert!(!rbs.lines().any(|l| l.starts_with(&outside) && l.contains(&manager_rb)), "{rbs}");
    assert!(rbs.contains(&format!("Role/{fullname}-leader-election-role")), "{rbs}");
    let (_, crbs, _) = run("kubectl", &kc, &["get", "clusterrolebinding"], None);
    assert!(!crbs.contains(&fullname), "namespace mode renders no ClusterRoleBinding: {crbs}");

    // The policy file as the chart renders it.
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &release_ns);
    let policy_cm = cms.get(&format!("{fullname}-tenancy-policy")).await.unwrap();
    let policy_path = work.join("tenancy-policy.yaml");
    std::fs::write(&policy_path, &policy_cm.data.unwrap()["tenancy-policy.yaml"]).unwrap();

    // The operator binary, authenticated as the chart's ServiceAccount.
    let sa_kc = impersonating_kubeconfig(&kc, &work, &release_ns, &fullname);
    let op = Operator::spawn(
        &sa_kc,
        &work,
        "operator",
        &[
            "--leader-elect".into(),
            "--leader-lease-seconds=4".into(),
            format!("--webhook-bind-address=127.0.0.1:{webhook_port}"),
            format!("--webhook-cert-dir={}", cert_dir.display()),
            format!("--tenancy-policy={}", policy_path.display()),
        ],
        &[("POD_NAMESPACE", &release_ns), ("WATCH_NAMESPACE", &team)],
    );

    // 1. The docs' OSV server produces exactly the COMPAT children.
    let servers: Api<MCPServer> = Api::namespaced(admin.clone(), &team);
    let osv: MCPServer = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": "osv"},
        "spec": {"image": "ghcr.io/stackloklabs/osv-mcp/server", "transport": "streamable-http", "mcpPort": 8080, "proxyPort": 8080}
    }))
    .unwrap();
    // The webhook (failurePolicy Fail) answers once the operator is up.
    let created =
        eventually("webhook to admit the OSV server", &op, || async { servers.create(&PostParams::default(), &osv).await.ok() }).await;
    let uid = created.uid().unwrap();
    assert_eq!(created.labels().get("toolhive.stacklok.dev/team").map(String::as_str), Some(team.as_str()), "team label defaulted");

    let url = format!("http://mcp-osv-proxy.{team}.svc.cluster.local:8080/mcp");
    let status = eventually("status.url", &op, || async {
        let s = servers.get("osv").await.ok()?;
        s.status.filter(|st| st.url == url && st.phase == Some(Phase::Pending))
    })
    .await;
    assert_eq!(status.observed_generation, Some(1));
    assert!(servers.get("osv").await.unwrap().finalizers().contains(&FINALIZER.to_string()));

    let owned = |meta: &kube::core::ObjectMeta| {
        let owner = meta.owner_references.as_ref().and_then(|o| o.first()).cloned();
        assert_eq!(owner.as_ref().map(|o| o.uid.as_str()), Some(uid.as_str()), "owner of {:?}", meta.name);
        assert_eq!(owner.and_then(|o| o.controller), Some(true));
        let l = meta.labels.clone().unwrap_or_default();
        for (k, v) in [
            ("app", "mcpserver"),
            ("app.kubernetes.io/name", "mcpserver"),
            ("app.kubernetes.io/instance", "osv"),
            ("toolhive", "true"),
            ("toolhive-name", "osv"),
        ] {
            assert_eq!(l.get(k).map(String::as_str), Some(v), "label {k} on {:?}", meta.name);
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &team);
    let dep = eventually("proxy deployment", &op, || async { deployments.get_opt("osv").await.ok().flatten() }).await;
    owned(&dep.metadata);
    let container = &dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.name, "toolhive");
    assert_eq!(container.image.as_deref(), Some("ghcr.io/stacklok/toolhive/proxyrunner:test"));
    assert_eq!(container.args.as_ref().unwrap(), &vec!["run".to_string(), "ghcr.io/stackloklabs/osv-mcp/server".to_string()]);
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), &team).get("osv-runconfig").await.unwrap();
    owned(&cm.metadata);
    let rc: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["runconfig.json"]).unwrap();
    assert_eq!(rc["schema_version"], "v0.1.0");
    assert_eq!(rc["transport"], "streamable-http");
    for sa in ["osv-proxy-runner", "osv-sa"] {
        owned(&Api::<ServiceAccount>::namespaced(admin.clone(), &team).get(sa).await.unwrap().metadata);
    }
    owned(&Api::<Role>::namespaced(admin.clone(), &team).get("osv-proxy-runner").await.unwrap().metadata);
    owned(&Api::<RoleBinding>::namespaced(admin.clone(), &team).get("osv-proxy-runner").await.unwrap().metadata);
    let svc = Api::<Service>::namespaced(admin.clone(), &team).get("mcp-osv-proxy").await.unwrap();
    owned(&svc.metadata);
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].name.as_deref(), Some("http"));

    // 2. Drift: a deleted child comes back; an edited one is put back.
    deployments.delete("osv", &DeleteParams::default()).await.unwrap();
    eventually("deployment restored", &op, || async { deployments.get_opt("osv").await.ok().flatten().filter(|d| d.uid() != dep.uid()) })
        .await;
    let svcs: Api<Service> = Api::namespaced(admin.clone(), &team);
    svcs.patch("mcp-osv-proxy", &PatchParams::default(), &Patch::Merge(json!({"spec": {"sessionAffinity": "None"}}))).await.unwrap();
    eventually("service edit reverted", &op, || async {
        let s = svcs.get("mcp-osv-proxy").await.ok()?;
        (s.spec?.session_affinity.as_deref() == Some("ClientIP")).then_some(())
    })
    .await;

    // 3. The stray server outside the allowed namespaces is untouched.
    let stray = outside_api.get("stray").await.unwrap();
    assert!(stray.status.is_none(), "no status written outside scope");
    assert!(stray.finalizers().is_empty(), "no finalizer outside scope");
    assert!(Api::<Deployment>::namespaced(admin.clone(), &outside).get_opt("stray").await.unwrap().is_none());

    // 4. The chart's RBAC forbids the operator's identity outside its namespaces.
    let as_operator = cp.client_as_service_account(&release_ns, &fullname).await.unwrap();
    let err = Api::<ConfigMap>::namespaced(as_operator.clone(), &outside).list(&Default::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 403), "{err}");
    assert!(Api::<ConfigMap>::namespaced(as_operator, &team).list(&Default::default()).await.is_ok());

    // 5. kubectl apply of forbidden MCPServers fails with the exact message; dry-run too.
    let bad = format!(
        "apiVersion: toolhive.stacklok.dev/v1beta1\nkind: MCPServer\nmetadata: {{name: bad, namespace: {team}}}\nspec: {{image: docker.io/library/redis, resources: {{requests: {{cpu: '2'}}}}}}\n"
    );
    let expected_registry = format!(
        "spec.image: Forbidden: registry \"docker.io\" is not allowed in namespace \"{team}\" (allowed: ghcr.io/stackloklabs, ghcr.io/acme)"
    );
    let (ok, _, err) = run("kubectl", &kc, &["apply", "-f", "-"], Some(&bad));
    assert!(!ok);
    assert!(err.contains(&expected_registry), "{err}");
    assert!(err.contains("spec.resources.requests.cpu: Forbidden: 2 exceeds the namespace maximum of 1"), "all violations at once: {err}");
    let (ok, _, dry_err) = run("kubectl", &kc, &["apply", "--dry-run=server", "-f", "-"], Some(&bad));
    assert!(!ok);
    assert!(dry_err.contains(&expected_registry), "{dry_err}");
    let elsewhere = format!(
        "apiVersion: toolhive.stacklok.dev/v1beta1\nkind: MCPServer\nmetadata: {{name: x, namespace: {outside}}}\nspec: {{image: ghcr.io/acme/x}}\n"
    );
    let (ok, _, err) = run("kubectl", &kc, &["apply", "-f", "-"], Some(&elsewhere));
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "metadata.namespace: Forbidden: namespace \"{outside}\" may not hold MCPServers (allowed: {team}); ask #platform"
        )),
        "{err}"
    );
    let removed = format!(
        "apiVersion: toolhive.stacklok.dev/v1beta1\nkind: MCPServer\nmetadata: {{name: old, namespace: {team}}}\nspec: {{image: ghcr.io/acme/x, port: 8080}}\n"
    );
    let (ok, _, err) = run("kubectl", &kc, &["apply", "-f", "-"], Some(&removed));
    assert!(!ok);
    assert!(err.contains("spec.port was removed; use spec.proxyPort"), "{err}");

    // 6. A minimal allowed server is stored with the defaults filled in.
    let minimal = format!(
        "apiVersion: toolhive.stacklok.dev/v1beta1\nkind: MCPServer\nmetadata: {{name: mini, namespace: {team}}}\nspec: {{image: ghcr.io/acme/tool}}\n"
    );
    let (ok, out, err) = run("kubectl", &kc, &["apply", "-f", "-"], Some(&minimal));
    assert!(ok, "{out}{err}");
    let mini = servers.get("mini").await.unwrap();
    assert_eq!(mini.spec.proxy_port, 8080);
    assert_eq!(mini.spec.resources.requests.cpu, "50m", "policy default applied");
    assert_eq!(mini.labels().get("toolhive.stacklok.dev/team").map(String::as_str), Some(team.as_str()));

    // 7. v1alpha1 is served with its deprecation warning.
    let alpha = format!(
        "apiVersion: toolhive.stacklok.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: alpha, namespace: {team}}}\nspec: {{image: ghcr.io/acme/tool}}\n"
    );
    let (ok, out, err) = run("kubectl", &kc, &["apply", "-f", "-"], Some(&alpha));
    assert!(ok, "{out}{err}");
    assert!(err.contains("toolhive.stacklok.dev/v1alpha1 is deprecated; use v1beta1"), "{err}");

    // 8. Rotating the serving certificate mid-traffic fails no request: admissions
    //    through the API server (kept-alive connections) and direct admissions, each
    //    on a new TLS connection, run while the Secret-volume symlink is swapped.
    assert_eq!(served_certificate(webhook_port, &ca.cert_pem()).await, Some(certificate_der(&pair.cert_pem)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let through_api = {
        let (servers, stop) = (servers.clone(), stop.clone());
        let probe: MCPServer = serde_json::from_value(json!({
            "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
            "metadata": {"name": "rotation-probe"}, "spec": {"image": "ghcr.io/acme/tool"}
        }))
        .unwrap();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match servers.create(&PostParams { dry_run: true, ..Default::default() }, &probe).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    let direct = {
        let (stop, ca_pem, team) = (stop.clone(), ca.cert_pem(), team.clone());
        tokio::spawn(async move {
            let review = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "rotation", "operation": "CREATE", "namespace": team, "userInfo": {},
                    "kind": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "kind": "MCPServer"},
                    "resource": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "resource": "mcpservers"},
                    "object": {"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
                               "metadata": {"name": "direct", "namespace": team}, "spec": {"image": "ghcr.io/acme/tool"}}
                }
            })
            .to_string();
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match admission_on_new_connection(webhook_port, &ca_pem, "/validate-toolhive-stacklok-dev-v1beta1-mcpserver", &review).await
                {
                    Ok(200) => ok += 1,
                    Ok(code) => failed.push(format!("HTTP {code}")),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rotated = ca.serving(&[], &[]).unwrap();
    write_secret_volume(&cert_dir, "v2", &rotated);
    let rotated_der = certificate_der(&rotated.cert_pem);
    eventually("the rotated certificate to be served", &op, || async {
        (served_certificate(webhook_port, &ca.cert_pem()).await? == rotated_der).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (api_ok, api_failed) = through_api.await.unwrap();
    let (direct_ok, direct_failed) = direct.await.unwrap();
    assert!(
        api_failed.is_empty(),
        "{} admissions through the API server failed during rotation, e.g. {:?}",
        api_failed.len(),
        api_failed.first()
    );
    assert!(direct_failed.is_empty(), "{} direct admissions failed during rotation, e.g. {:?}", direct_failed.len(), direct_failed.first());
    assert!(api_ok > 5 && direct_ok > 5, "traffic ran during the rotation ({api_ok} via API, {direct_ok} direct)");
    assert!(op.metric("toolhive_webhook_certificate_reloads_total", &[("result", "success")]).unwrap() >= 1.0, "the rotation was a reload");

    // 9. maxMCPServers (5) comes from the webhook's watch cache: with osv, mini and
    //    alpha stored, two more fit and a sixth is refused (dry-run: nothing stored).
    for name in ["q4", "q5"] {
        let m = format!(
            "apiVersion: toolhive.stacklok.dev/v1beta1\nkind: MCPServer\nmetadata: {{name: {name}, namespace: {team}}}\nspec: {{image: ghcr.io/acme/tool}}\n"
        );
        let (ok, out, err) = run("kubectl", &kc, &["apply", "-f", "-"], Some(&m));
        assert!(ok, "{out}{err}");
    }
    let sixth = format!(
        "apiVersion: toolhive.stacklok.dev/v1beta1\nkind: MCPServer\nmetadata: {{name: q6, namespace: {team}}}\nspec: {{image: ghcr.io/acme/tool}}\n"
    );
    let refusal = eventually("the sixth MCPServer to be refused", &op, || async {
        let (ok, _, err) = run("kubectl", &kc, &["apply", "--dry-run=server", "-f", "-"], Some(&sixth));
        (!ok).then_some(err)
    })
    .await;
    assert!(
        refusal
            .contains(&format!("metadata.namespace: Forbidden: namespace \"{team}\" already has 5 MCPServers, the most it may hold is 5")),
        "{refusal}"
    );

    // 10. Deleting the MCPServer removes it (finalizer released) and its children (GC).
    servers.delete("osv", &DeleteParams::default()).await.unwrap();
    eventually("MCPServer gone", &op, || async { servers.get_opt("osv").await.ok().flatten().is_none().then_some(()) }).await;
    // The garbage collector notices a new CRD's kind at its next discovery resync (~30 s).
    eventually_within("children collected", &op, Duration::from_secs(120), || async {
        let cm = Api::<ConfigMap>::namespaced(admin.clone(), &team).get_opt("osv-runconfig").await.ok()?;
        let dep = deployments.get_opt("osv").await.ok()?;
        (cm.is_none() && dep.is_none()).then_some(())
    })
    .await;

    // Uninstalling both charts keeps the CRD and the MCPServers (crds.keep).
    let (ok, _, err) = run("helm", &kc, &["uninstall", "toolhive-operator", "-n", &release_ns], None);
    assert!(ok, "{err}");
    drop(op);
    let (ok, _, err) = run("helm", &kc, &["uninstall", "toolhive-operator-crds"], None);
    assert!(ok, "{err}");
    assert!(servers.get_opt("mini").await.unwrap().is_some(), "MCPServers kept");
}

async fn create_when_served(api: &Api<MCPServer>, obj: &MCPServer) {
    for _ in 0..100 {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("create {}: {e}", obj.name_any()),
        }
    }
    panic!("MCPServers never served");
}
