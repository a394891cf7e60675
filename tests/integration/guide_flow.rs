//! The install guide's flow, one behaviour per test, on the shared set-up of
//! `guide.rs`. Every test holds the webhook lock (the set-up's webhook answers every
//! MCPServer write on the shared control plane) and works on MCPServers of its own.

use std::time::Duration;

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
use toolhive_operator::kinds::mcpserver::api::{FINALIZER, MCPServer, Phase};

use super::common::{
    admission_on_new_connection, certificate_der, create_review, eventually, eventually_within, guide_webhook_shared, run, run_ok,
    served_certificate, webhook_registration_lock, write_secret_volume,
};
use super::guide::{Guide, RUNNER_IMAGE, guide, server};

/// Creates `obj` in `ns` once the webhook admits it.
async fn create(g: &Guide, api: &Api<MCPServer>, obj: &MCPServer) -> MCPServer {
    eventually(&format!("the webhook to admit {}", obj.name_any()), &g.operator, || async {
        api.create(&PostParams::default(), obj).await.ok()
    })
    .await
}

#[tokio::test]
async fn the_docs_osv_server_gets_exactly_the_compat_children() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let team = &g.team;
    let servers = g.servers(&admin, team);
    let osv = server(
        "osv",
        json!({"image": "ghcr.io/stackloklabs/osv-mcp/server", "transport": "streamable-http", "mcpPort": 8080, "proxyPort": 8080}),
    );
    let created = create(g, &servers, &osv).await;
    let uid = created.uid().unwrap();
    assert_eq!(created.labels().get("toolhive.stacklok.dev/team").map(String::as_str), Some(team.as_str()), "team label defaulted");

    let url = format!("http://mcp-osv-proxy.{team}.svc.cluster.local:8080/mcp");
    let status = eventually("status.url", &g.operator, || async {
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
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), team);
    let dep = eventually("proxy deployment", &g.operator, || async { deployments.get_opt("osv").await.ok().flatten() }).await;
    owned(&dep.metadata);
    let container = &dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.name, "toolhive");
    assert_eq!(container.image.as_deref(), Some(RUNNER_IMAGE));
    let args = container.args.as_ref().unwrap();
    assert_eq!((args.len(), args[0].as_str(), args[2].as_str()), (3, "run", "ghcr.io/stackloklabs/osv-mcp/server"));
    let patch: serde_json::Value = serde_json::from_str(args[1].strip_prefix("--k8s-pod-patch=").unwrap()).unwrap();
    assert_eq!(patch, serde_json::json!({"metadata": {}, "spec": {"containers": [], "serviceAccountName": "osv-sa"}}));
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), team).get("osv-runconfig").await.unwrap();
    owned(&cm.metadata);
    let rc: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["runconfig.json"]).unwrap();
    assert_eq!(rc["schema_version"], "v0.1.0");
    assert_eq!(rc["transport"], "streamable-http");
    for sa in ["osv-proxy-runner", "osv-sa"] {
        owned(&Api::<ServiceAccount>::namespaced(admin.clone(), team).get(sa).await.unwrap().metadata);
    }
    owned(&Api::<Role>::namespaced(admin.clone(), team).get("osv-proxy-runner").await.unwrap().metadata);
    owned(&Api::<RoleBinding>::namespaced(admin.clone(), team).get("osv-proxy-runner").await.unwrap().metadata);
    let svc = Api::<Service>::namespaced(admin.clone(), team).get("mcp-osv-proxy").await.unwrap();
    owned(&svc.metadata);
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].name.as_deref(), Some("http"));
}

#[tokio::test]
async fn a_deleted_child_comes_back_and_an_edited_one_is_put_back() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    create(g, &g.servers(&admin, &g.team), &server("drift", json!({"image": "ghcr.io/acme/tool"}))).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let dep = eventually("proxy deployment", &g.operator, || async { deployments.get_opt("drift").await.ok().flatten() }).await;
    deployments.delete("drift", &DeleteParams::default()).await.unwrap();
    eventually("deployment restored", &g.operator, || async {
        deployments.get_opt("drift").await.ok().flatten().filter(|d| d.uid() != dep.uid())
    })
    .await;
    let svcs: Api<Service> = Api::namespaced(admin.clone(), &g.team);
    eventually("proxy service", &g.operator, || async { svcs.get_opt("mcp-drift-proxy").await.ok().flatten() }).await;
    svcs.patch("mcp-drift-proxy", &PatchParams::default(), &Patch::Merge(json!({"spec": {"sessionAffinity": "None"}}))).await.unwrap();
    eventually("service edit reverted", &g.operator, || async {
        let s = svcs.get("mcp-drift-proxy").await.ok()?;
        (s.spec?.session_affinity.as_deref() == Some("ClientIP")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn drift_made_while_the_operator_was_down_is_repaired_after_its_restart() {
    let g = guide();
    let _webhooks = webhook_registration_lock().await;
    let admin = g.admin().await;
    create(g, &g.servers(&admin, &g.team), &server("downtime", json!({"image": "ghcr.io/acme/tool"}))).await;
    let svcs: Api<Service> = Api::namespaced(admin.clone(), &g.team);
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &g.team);
    eventually("children", &g.operator, || async {
        (svcs.get_opt("mcp-downtime-proxy").await.ok()?.is_some() && cms.get_opt("downtime-runconfig").await.ok()?.is_some()).then_some(())
    })
    .await;
    let runconfig = cms.get("downtime-runconfig").await.unwrap().data.unwrap()["runconfig.json"].clone();

    g.stop_operator().await;
    // Edits that keep the operator's stamped hash annotation: only a comparison with
    // what the children should be finds them.
    svcs.patch("mcp-downtime-proxy", &PatchParams::default(), &Patch::Merge(json!({"spec": {"sessionAffinity": "None"}}))).await.unwrap();
    cms.patch("downtime-runconfig", &PatchParams::default(), &Patch::Merge(json!({"data": {"runconfig.json": "{}"}}))).await.unwrap();
    g.start_operator().await;

    eventually("service repaired", &g.operator, || async {
        (svcs.get("mcp-downtime-proxy").await.ok()?.spec?.session_affinity.as_deref() == Some("ClientIP")).then_some(())
    })
    .await;
    eventually("runconfig repaired", &g.operator, || async {
        (cms.get("downtime-runconfig").await.ok()?.data?.get("runconfig.json") == Some(&runconfig)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn servers_outside_the_watched_namespaces_are_left_alone() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    // A server in a watched namespace reaches its status: the operator is at work.
    let witnesses = g.servers(&admin, &g.team);
    create(g, &witnesses, &server("witness", json!({"image": "ghcr.io/acme/tool"}))).await;
    eventually("the witness's status", &g.operator, || async { witnesses.get("witness").await.ok()?.status }).await;
    let stray = g.servers(&admin, &g.outside).get("stray").await.unwrap();
    assert!(stray.status.is_none(), "no status written outside scope");
    assert!(stray.finalizers().is_empty(), "no finalizer outside scope");
    assert!(Api::<Deployment>::namespaced(admin.clone(), &g.outside).get_opt("stray").await.unwrap().is_none());
}

#[tokio::test]
async fn the_chart_rbac_confines_the_operator_to_its_namespaces() {
    let g = guide();
    let kc = &g.kubeconfig;
    // What the guide's check commands show.
    let (_, rbs, _) = run("kubectl", kc, &["get", "rolebinding", "--all-namespaces"], None);
    let manager_rb = format!("{}-manager-rolebinding", g.cluster_name);
    let role = format!("ClusterRole/{}-manager-role", g.cluster_name);
    for ns in [&g.team, &g.quota_team] {
        assert!(rbs.lines().any(|l| l.starts_with(ns.as_str()) && l.contains(&manager_rb) && l.contains(&role)), "{rbs}");
    }
    assert!(!rbs.lines().any(|l| l.starts_with(&g.outside) && l.contains(&manager_rb)), "{rbs}");
    assert!(rbs.contains(&format!("Role/{}-leader-election-role", g.fullname)), "{rbs}");
    let (_, crbs, _) = run("kubectl", kc, &["get", "clusterrolebinding"], None);
    assert!(!crbs.contains(&g.fullname), "namespace mode renders no ClusterRoleBinding: {crbs}");

    let as_operator = controlplane::shared().client_as_service_account(&g.release_ns, &g.fullname).await.unwrap();
    let err = Api::<ConfigMap>::namespaced(as_operator.clone(), &g.outside).list(&Default::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 403), "{err}");
    assert!(Api::<ConfigMap>::namespaced(as_operator, &g.team).list(&Default::default()).await.is_ok());
}

#[tokio::test]
async fn kubectl_shows_every_violation_at_once_with_its_field_path() {
    let g = guide();
    let _webhooks = webhook_registration_lock().await;
    let team = &g.team;
    let bad = Guide::manifest("bad", team, "{image: docker.io/library/redis, resources: {requests: {cpu: '2'}}}");
    let expected_registry = format!(
        "spec.image: Forbidden: registry \"docker.io\" is not allowed in namespace \"{team}\" (allowed: ghcr.io/stackloklabs, ghcr.io/acme)"
    );
    let err = eventually("the webhook to answer", &g.operator, || async {
        let (ok, _, err) = g.kubectl_apply(&bad, &[]);
        (!ok && err.contains("admission webhook")).then_some(err)
    })
    .await;
    assert!(err.contains(&expected_registry), "{err}");
    assert!(err.contains("spec.resources.requests.cpu: Forbidden: 2 exceeds the namespace maximum of 1"), "all violations at once: {err}");
    let (ok, _, dry_err) = g.kubectl_apply(&bad, &["--dry-run=server"]);
    assert!(!ok);
    assert!(dry_err.contains(&expected_registry), "{dry_err}");
    let elsewhere = Guide::manifest("x", &g.outside, "{image: ghcr.io/acme/x}");
    // Outside the namespaces this install serves its webhook is never called (an
    // install that is down blocks only its own); the API server itself warns.
    // (The API server takes up a new admission policy within a second or so.)
    let served = format!("{team}, {}, {}", g.quota_team, g.race_team);
    let warning = format!(
        "metadata.namespace: namespace \"{}\" is not served by the ToolHive operator toolhive-operator in {} (it serves {served}): this MCPServer will not run; ask #platform",
        g.outside, g.release_ns
    );
    eventually("the API server to warn", &g.operator, || async {
        let (ok, _, err) = g.kubectl_apply(&elsewhere, &["--dry-run=server"]);
        assert!(ok, "{err}");
        err.contains(&warning).then_some(())
    })
    .await;
    let (ok, _, err) = g.kubectl_apply(&elsewhere, &[]);
    assert!(ok && err.contains(&warning), "{err}");
    let removed = Guide::manifest("old", team, "{image: ghcr.io/acme/x, port: 8080}");
    let (ok, _, err) = g.kubectl_apply(&removed, &[]);
    assert!(!ok);
    assert!(err.contains("spec.port was removed; use spec.proxyPort"), "{err}");
}

#[tokio::test]
async fn a_minimal_server_is_stored_with_the_defaults_filled_in() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let minimal = Guide::manifest("mini", &g.team, "{image: ghcr.io/acme/tool}");
    eventually("kubectl apply", &g.operator, || async { g.kubectl_apply(&minimal, &[]).0.then_some(()) }).await;
    let mini = g.servers(&admin, &g.team).get("mini").await.unwrap();
    assert_eq!(mini.spec.proxy_port, 8080);
    assert_eq!(mini.spec.resources.requests.cpu, "50m", "policy default applied");
    assert_eq!(mini.labels().get("toolhive.stacklok.dev/team").map(String::as_str), Some(g.team.as_str()));
}

#[tokio::test]
async fn v1alpha1_is_served_with_its_deprecation_warning() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let alpha = Guide::manifest("alpha", &g.team, "{image: ghcr.io/acme/tool}").replace("v1beta1", "v1alpha1");
    let err = eventually("kubectl apply", &g.operator, || async {
        let (ok, _, err) = g.kubectl_apply(&alpha, &[]);
        ok.then_some(err)
    })
    .await;
    assert!(err.contains("toolhive.stacklok.dev/v1alpha1 is deprecated; use v1beta1"), "{err}");
}

#[tokio::test]
async fn rotating_the_serving_certificate_mid_traffic_fails_no_request() {
    let g = guide();
    let _webhooks = webhook_registration_lock().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let ca_pem = g.ca.cert_pem();
    let port = g.webhook_port;
    let before = served_certificate(port, &ca_pem).await.expect("a certificate is served");
    assert_eq!(before, certificate_der(&g.first_pair.cert_pem), "the set-up's pair");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Admissions through the API server (kept-alive connections) ...
    let through_api = {
        let (servers, stop) = (servers.clone(), stop.clone());
        let probe = server("rotation-probe", json!({"image": "ghcr.io/acme/tool"}));
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
    // ... and direct admissions, each on a new TLS connection.
    let direct = {
        let (stop, ca_pem, team) = (stop.clone(), ca_pem.clone(), g.team.clone());
        tokio::spawn(async move {
            let review = create_review("rotation", &team, "direct", json!({"image": "ghcr.io/acme/tool"}));
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match admission_on_new_connection(port, &ca_pem, "/validate-toolhive-stacklok-dev-v1beta1-mcpserver", &review).await {
                    Ok(200) => ok += 1,
                    Ok(code) => failed.push(format!("HTTP {code}")),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rotated = g.ca.serving(&[], &[]).unwrap();
    write_secret_volume(&g.cert_dir, "v2", &rotated);
    let rotated_der = certificate_der(&rotated.cert_pem);
    eventually("the rotated certificate to be served", &g.operator, || async {
        (served_certificate(port, &ca_pem).await? == rotated_der).then_some(())
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
    assert!(
        g.operator.metric("toolhive_webhook_certificate_reloads_total", &[("result", "success")]).unwrap() >= 1.0,
        "the rotation was a reload"
    );
}

#[tokio::test]
async fn the_quota_comes_from_the_webhooks_watch_cache() {
    let g = guide();
    let _webhooks = webhook_registration_lock().await;
    let ns = &g.quota_team;
    for name in ["q1", "q2"] {
        let m = Guide::manifest(name, ns, "{image: ghcr.io/acme/tool}");
        eventually("kubectl apply", &g.operator, || async { g.kubectl_apply(&m, &[]).0.then_some(()) }).await;
    }
    let third = Guide::manifest("q3", ns, "{image: ghcr.io/acme/tool}");
    let refusal = eventually("the third MCPServer to be refused", &g.operator, || async {
        let (ok, _, err) = g.kubectl_apply(&third, &["--dry-run=server"]);
        (!ok).then_some(err)
    })
    .await;
    assert!(
        refusal.contains(&format!("metadata.namespace: Forbidden: namespace \"{ns}\" already has 2 MCPServers, the most it may hold is 2")),
        "{refusal}"
    );
}

#[tokio::test]
async fn deleting_a_server_releases_its_finalizer_and_its_children_are_collected() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    create(g, &servers, &server("gone", json!({"image": "ghcr.io/acme/tool"}))).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    eventually("proxy deployment", &g.operator, || async { deployments.get_opt("gone").await.ok().flatten() }).await;
    servers.delete("gone", &DeleteParams::default()).await.unwrap();
    eventually("MCPServer gone", &g.operator, || async { servers.get_opt("gone").await.ok().flatten().is_none().then_some(()) }).await;
    // The garbage collector notices a new CRD's kind at its next discovery resync (~30 s).
    eventually_within("children collected", &g.operator, Duration::from_secs(120), || async {
        let cm = Api::<ConfigMap>::namespaced(admin.clone(), &g.team).get_opt("gone-runconfig").await.ok()?;
        let dep = deployments.get_opt("gone").await.ok()?;
        (cm.is_none() && dep.is_none()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_platform_role_named_like_a_child_is_never_taken_over() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let roles: Api<Role> = Api::namespaced(admin.clone(), &g.team);
    let platform: Role = serde_json::from_value(json!({
        "metadata": {"name": "victim-proxy-runner", "labels": {"owner": "platform"}},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    }))
    .unwrap();
    let before = roles.create(&PostParams::default(), &platform).await.unwrap();
    let servers = g.servers(&admin, &g.team);
    create(g, &servers, &server("victim", json!({"image": "ghcr.io/acme/tool"}))).await;
    let status = eventually("the MCPServer to fail naming the Role", &g.operator, || async {
        servers.get("victim").await.ok()?.status.filter(|s| s.phase == Some(Phase::Failed))
    })
    .await;
    assert!(status.message.contains("Role victim-proxy-runner already exists and was not created by the operator"), "{}", status.message);
    let after = roles.get("victim-proxy-runner").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "the platform's Role was not written");
    assert!(after.metadata.owner_references.is_none());
    // Deleting the MCPServer leaves the platform's Role in place.
    servers.delete("victim", &DeleteParams::default()).await.unwrap();
    eventually("MCPServer gone", &g.operator, || async { servers.get_opt("victim").await.ok().flatten().is_none().then_some(()) }).await;
    assert!(roles.get_opt("victim-proxy-runner").await.unwrap().is_some());
}

#[tokio::test]
async fn the_runner_always_gets_the_service_account_the_operator_decided() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    // A tenant names the runner's own, more privileged account for the MCP pod.
    let sneaky = server(
        "sneaky",
        json!({"image": "ghcr.io/acme/tool", "podTemplateSpec": {"spec": {"serviceAccountName": "sneaky-proxy-runner", "containers": [{"name": "mcp"}]}}}),
    );
    create(g, &servers, &sneaky).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let dep = eventually("proxy deployment", &g.operator, || async { deployments.get_opt("sneaky").await.ok().flatten() }).await;
    let args = dep.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    let patch = args.iter().find_map(|a| a.strip_prefix("--k8s-pod-patch=")).expect("the pod patch flag");
    let patch: serde_json::Value = serde_json::from_str(patch).unwrap();
    assert_eq!(patch["spec"]["serviceAccountName"], "sneaky-sa", "{patch}");
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), &g.team).get("sneaky-runconfig").await.unwrap();
    let rc: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["runconfig.json"]).unwrap();
    assert!(rc.get("k8s_pod_template_patch").is_none(), "the flag is the one place the runner reads the patch from: {rc}");
}

#[tokio::test]
async fn the_mcp_service_account_goes_when_the_server_names_its_own_and_others_conditions_stay() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    create(g, &servers, &server("own-sa", json!({"image": "ghcr.io/acme/tool"}))).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &g.team);
    eventually("own-sa-sa", &g.operator, || async { accounts.get_opt("own-sa-sa").await.ok().flatten() }).await;
    // Another controller (say, the platform's auditor) sets a condition of its own.
    let theirs = json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer", "status": {"conditions": [
        {"type": "Audited", "status": "True", "reason": "AuditPassed", "message": "by the auditor", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    servers.patch_status("own-sa", &PatchParams::apply("auditor"), &Patch::Apply(&theirs)).await.unwrap();
    // The server names an account of its own: the one made for it goes.
    let named = json!({"spec": {"serviceAccount": "tool-runner"}});
    servers.patch("own-sa", &PatchParams::default(), &Patch::Merge(&named)).await.unwrap();
    eventually("own-sa-sa deleted", &g.operator, || async { accounts.get_opt("own-sa-sa").await.ok().flatten().is_none().then_some(()) })
        .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    eventually("the pod patch names tool-runner", &g.operator, || async {
        let dep = deployments.get_opt("own-sa").await.ok().flatten()?;
        let args = dep.spec?.template.spec?.containers[0].args.clone()?;
        args.iter().any(|a| a.starts_with("--k8s-pod-patch=") && a.contains("tool-runner")).then_some(())
    })
    .await;
    let s = servers.get("own-sa").await.unwrap();
    let status = s.status.unwrap();
    let audited = status.conditions.iter().find(|c| c.type_ == "Audited").expect("the auditor's condition stays");
    assert_eq!(audited.reason, "AuditPassed");
    let managers = s.metadata.managed_fields.unwrap_or_default();
    let ours =
        managers.iter().find(|m| m.manager.as_deref() == Some("toolhive-operator") && m.subresource.as_deref() == Some("status")).unwrap();
    let owned = serde_json::to_string(&ours.fields_v1).unwrap();
    assert!(!owned.contains("Audited"), "the operator never takes over another manager's condition: {owned}");
    // A same-named account the operator did not make is never deleted.
    let foreign: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "own-sa-sa"}})).unwrap();
    accounts.create(&PostParams::default(), &foreign).await.unwrap();
    servers.patch("own-sa", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"labels": {"touched": "1"}}}))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(accounts.get_opt("own-sa-sa").await.unwrap().is_some(), "a foreign account of that name stays");
    servers.delete("own-sa", &DeleteParams::default()).await.unwrap();
    accounts.delete("own-sa-sa", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn names_that_become_references_paths_or_runner_strings_must_be_kubernetes_names() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    for (spec, field) in [
        ("{image: ghcr.io/acme/tool, secrets: [{name: kube-system/x, key: token}]}", "spec.secrets[0].name"),
        ("{image: ghcr.io/acme/tool, secrets: [{name: 'a,target=PATH', key: token}]}", "spec.secrets[0].name"),
        ("{image: ghcr.io/acme/tool, secrets: [{name: s, key: 'k,target=PATH'}]}", "spec.secrets[0].key"),
        ("{image: ghcr.io/acme/tool, secrets: [{name: s, key: k, targetEnvName: 'A=B'}]}", "spec.secrets[0].targetEnvName"),
        ("{image: ghcr.io/acme/tool, permissionProfile: {type: configmap, name: ../x}}", "spec.permissionProfile.name"),
        ("{image: ghcr.io/acme/tool, permissionProfile: {type: configmap, name: kube-system/x}}", "spec.permissionProfile.name"),
        ("{image: ghcr.io/acme/tool, serviceAccount: ../default}", "spec.serviceAccount"),
        ("{image: ghcr.io/acme/tool, toolConfigRef: {name: kube-system/tools}}", "spec.toolConfigRef.name"),
        ("{image: ghcr.io/acme/tool, volumes: [{name: v, hostPath: '/a:/b', mountPath: /m}]}", "spec.volumes[0].hostPath"),
    ] {
        let (ok, _, err) = g.kubectl_apply(&Guide::manifest("named", &g.team, spec), &["--dry-run=server"]);
        assert!(!ok, "{spec} must be refused");
        assert!(err.contains(field), "{spec}: expected {field} in {err}");
    }
}

#[tokio::test]
async fn the_quota_holds_under_forty_parallel_creates() {
    let g = guide();
    let _webhooks = webhook_registration_lock().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.race_team);
    // The webhook is up before the race starts.
    eventually("the webhook to answer", &g.operator, || async {
        servers
            .create(&PostParams { dry_run: true, ..Default::default() }, &server("probe", json!({"image": "ghcr.io/acme/tool"})))
            .await
            .ok()
    })
    .await;
    let creates = (0..40).map(|i| {
        let servers = servers.clone();
        tokio::spawn(async move {
            servers.create(&PostParams::default(), &server(&format!("r{i}"), json!({"image": "ghcr.io/acme/tool"}))).await
        })
    });
    let results = futures::future::join_all(creates).await;
    let admitted = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let refusals: Vec<String> = results.into_iter().filter_map(|r| r.unwrap().err()).map(|e| e.to_string()).collect();
    assert_eq!(admitted, 5, "exactly the quota is admitted; refusals: {:?}", refusals.first());
    assert!(refusals.iter().all(|e| e.contains("the most it may hold is 5")), "{:?}", refusals.first());
    let stored = servers.list_metadata(&Default::default()).await.unwrap().items.len();
    assert_eq!(stored, 5);

    // Places come back as servers go — also the place of a server created and deleted
    // before the next admission (its reservation must not outlive it).
    let gone = |what: &'static str| {
        let servers = servers.clone();
        eventually(what, &g.operator, move || {
            let servers = servers.clone();
            async move { servers.list_metadata(&Default::default()).await.ok()?.items.is_empty().then_some(()) }
        })
    };
    servers.delete_collection(&DeleteParams::default(), &Default::default()).await.unwrap();
    gone("the race team's servers gone").await;
    for i in 0..3 {
        servers.create(&PostParams::default(), &server(&format!("brief{i}"), json!({"image": "ghcr.io/acme/tool"}))).await.unwrap();
        servers.delete(&format!("brief{i}"), &DeleteParams::default()).await.unwrap();
        gone("a brief server gone").await;
    }
    for i in 0..5 {
        let created = servers.create(&PostParams::default(), &server(&format!("again{i}"), json!({"image": "ghcr.io/acme/tool"}))).await;
        assert!(created.is_ok(), "five places free again: {created:?}");
    }
}

#[tokio::test]
async fn pod_template_bypasses_are_refused_through_the_api_server_with_their_paths() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let pod = "spec.podTemplateSpec.spec";
    for (spec, expected) in [
        (
            "{image: ghcr.io/acme/tool, podTemplateSpec: {spec: {HostNetwork: true}}}",
            format!("{pod}.HostNetwork: Invalid value: unknown field"),
        ),
        (
            "{image: ghcr.io/acme/tool, podTemplateSpec: {spec: {containers: [{name: mcp}, {name: side, image: docker.io/library/alpine}]}}}",
            format!("{pod}.containers[1].image: Forbidden: registry \"docker.io\""),
        ),
        (
            "{image: ghcr.io/acme/tool, podTemplateSpec: {spec: {initContainers: [{name: i, image: quay.io/x/y}]}}}",
            format!("{pod}.initContainers[0].image: Forbidden"),
        ),
        (
            "{image: ghcr.io/acme/tool, podTemplateSpec: {spec: {containers: [{name: mcp, ports: [{containerPort: 80, hostPort: 80}]}]}}}",
            format!("{pod}.containers[0].ports[0].hostPort: Forbidden: a host port is not allowed by the baseline Pod Security Standard"),
        ),
        (
            "{image: ghcr.io/acme/tool, podTemplateSpec: {spec: {securityContext: {seccompProfile: {type: Unconfined}}}}}",
            format!("{pod}.securityContext.seccompProfile.type: Forbidden"),
        ),
        (
            "{image: ghcr.io/acme/tool, podTemplateSpec: {spec: {securityContext: {runAsUser: '0'}}}}",
            format!("{pod}.securityContext.runAsUser: Invalid value"),
        ),
        ("{image: 'ghcr.io/acme/x:-latest'}", "spec.image: Invalid value".to_string()),
        ("{image: ghcr.io/acme/tool, serviceAccount: other-proxy-runner}", "spec.serviceAccount: Forbidden".to_string()),
        (
            "{image: ghcr.io/acme/tool, sessionStorage: {provider: redis, address: 'r:6379'}, rateLimiting: {shared: {maxTokens: 1, refillPeriod: 'every day'}}}",
            "spec.rateLimiting.shared.refillPeriod: Invalid value".to_string(),
        ),
    ] {
        let manifest = Guide::manifest("bypass", &g.team, spec);
        let err = eventually("the webhook to refuse", &g.operator, || async {
            let (ok, _, err) = g.kubectl_apply(&manifest, &["--dry-run=server"]);
            (!ok && err.contains("admission webhook")).then_some(err)
        })
        .await;
        assert!(err.contains(&expected), "{spec}: expected {expected:?} in {err}");
    }
}

#[tokio::test]
async fn an_embedded_authorization_server_reaches_the_proxy_and_one_it_cannot_run_stops_it() {
    use toolhive_operator::kinds::{externalauth::MCPExternalAuthConfig, oidc::MCPOIDCConfig};
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &g.team);
    let logins: Api<MCPExternalAuthConfig> = Api::namespaced(admin.clone(), &g.team);
    let oidc: MCPOIDCConfig = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPOIDCConfig", "metadata": {"name": "own-tokens"},
        "spec": {"type": "inline", "inline": {"issuer": "https://tools.example.com", "jwksUrl": "https://tools.example.com/.well-known/jwks.json"}}
    }))
    .unwrap();
    Api::<MCPOIDCConfig>::namespaced(admin.clone(), &g.team).create(&PostParams::default(), &oidc).await.unwrap();
    let login: MCPExternalAuthConfig = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPExternalAuthConfig", "metadata": {"name": "login"},
        "spec": {"type": "embeddedAuthServer", "embeddedAuthServer": {"issuer": "https://tools.example.com",
            "signingKeySecretRefs": [{"name": "login-keys", "key": "signing.pem"}],
            "upstreamProviders": [{"name": "corp", "type": "oauth2", "oauth2Config": {
                "authorizationEndpoint": "https://login.example.com/authorize", "tokenEndpoint": "https://login.example.com/token",
                "clientId": "tools", "clientSecretRef": {"name": "login-keys", "key": "client-secret"}}}]}}
    }))
    .unwrap();
    logins.create(&PostParams::default(), &login).await.unwrap();
    let resource = "https://tools.example.com/mcp";
    let spec = |audience: &str, login: &str| {
        json!({"image": "ghcr.io/acme/tool", "transport": "streamable-http",
            "oidcConfigRef": {"name": "own-tokens", "audience": audience, "resourceUrl": resource},
            "authServerRef": {"kind": "MCPExternalAuthConfig", "name": login}})
    };
    create(g, &servers, &server("logged-in", spec(resource, "login"))).await;
    let rc = eventually("the embedded authorization server in the RunConfig", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "logged-in").await?;
        rc.get("embedded_auth_server_config").is_some().then_some(rc)
    })
    .await;
    let embedded = &rc["embedded_auth_server_config"];
    assert_eq!((&embedded["issuer"], &embedded["allowed_audiences"]), (&json!("https://tools.example.com"), &json!([resource])));
    assert_eq!(embedded["upstreams"][0]["oauth2_config"]["redirect_uri"], "https://tools.example.com/mcp/oauth/callback");
    let steps: Vec<&str> = rc["middleware_configs"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(&steps[..3], ["bodylimit", "auth", "upstreamswap"], "the upstream's token replaces the caller's after auth");
    let pod = eventually("the signing key mounted and the client secret referenced", &g.operator, || async {
        let pod = deployments.get_opt("logged-in").await.ok()??.spec?.template.spec?;
        let container = pod.containers.first()?;
        let secret_env = container.env.iter().flatten().any(|e| e.name == "TOOLHIVE_UPSTREAM_CLIENT_SECRET_CORP");
        let mounted = container.volume_mounts.iter().flatten().any(|m| m.mount_path == "/etc/toolhive/authserver/keys/key-0.pem");
        (secret_env && mounted).then_some(pod)
    })
    .await;
    assert!(pod.volumes.iter().flatten().any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("login-keys")));
    assert_eq!(pod.security_context.and_then(|c| c.fs_group), Some(1000), "the owner-only keys readable by the runner's group");
    eventually("logged-in's AuthServerRefValidated condition True", &g.operator, || async {
        let status = servers.get("logged-in").await.ok()?.status?;
        status.conditions.iter().any(|c| c.type_ == "AuthServerRefValidated" && c.status == "True").then_some(())
    })
    .await;

    // What this release does not carry out: invalid, named, and the proxy stops.
    let delegated = json!({"spec": {"embeddedAuthServer": {"delegateClients": [{"clientId": "ci"}]}}});
    logins.patch("login", &PatchParams::default(), &Patch::Merge(delegated)).await.unwrap();
    eventually("logged-in Failed with its proxy stopped: delegateClients", &g.operator, || async {
        let status = failed_and_stopped(&servers, &deployments, "logged-in").await?;
        let condition = status.conditions.iter().find(|c| c.type_ == "AuthServerRefValidated")?;
        (status.message.contains("delegateClients") && condition.reason == "AuthServerRefInvalidConfig").then_some(())
    })
    .await;
    let fixed = json!({"spec": {"embeddedAuthServer": {"delegateClients": null}}});
    logins.patch("login", &PatchParams::default(), &Patch::Merge(fixed)).await.unwrap();
    eventually("logged-in serving again once the configuration is fixed", &g.operator, || async {
        let (_, replicas) = proxy_template(&deployments, "logged-in").await?;
        (replicas != Some(0)).then_some(())
    })
    .await;
    // A missing one, and tokens for another audience than the resource: never served.
    for (name, audience, login, says) in [
        ("login-missing", resource, "nobody", "MCPExternalAuthConfig nobody not found"),
        ("login-audience", "tools", "login", "spec.oidcConfigRef.audience: must equal the resource URL"),
    ] {
        create(g, &servers, &server(name, spec(audience, login))).await;
        eventually(&format!("{name} Failed, its proxy at 0 replicas"), &g.operator, || async {
            let status = failed_and_stopped(&servers, &deployments, name).await?;
            status.message.contains(says).then_some(())
        })
        .await;
    }
    for name in ["logged-in", "login-missing", "login-audience"] {
        servers.delete(name, &DeleteParams::default()).await.unwrap();
    }
    // Per-caller rate limits without authenticated callers would count nobody.
    let manifest = Guide::manifest(
        "per-user",
        &g.team,
        "{image: ghcr.io/acme/tool, sessionStorage: {provider: redis, address: 'r:6379'}, rateLimiting: {perUser: {maxTokens: 1, refillPeriod: 1m}}}",
    );
    let (ok, _, err) = g.kubectl_apply(&manifest, &[]);
    assert!(!ok && err.contains("rateLimiting.perUser requires authentication"), "{err}");
}

#[tokio::test]
async fn a_namespace_enforcing_restricted_holds_pod_templates_to_restricted() {
    let g = guide();
    let _webhooks = webhook_registration_lock().await;
    let admin = g.admin().await;
    // The policy's level is baseline: an nfs volume passes there ...
    let nfs = "{image: ghcr.io/acme/tool, podTemplateSpec: {spec: {volumes: [{name: shared, nfs: {server: nfs.example.com, path: /}}]}}}";
    let allowed = Guide::manifest("nfs", &g.team, nfs);
    eventually("baseline allows an nfs volume", &g.operator, || async { g.kubectl_apply(&allowed, &["--dry-run=server"]).0.then_some(()) })
        .await;
    // ... and the namespace labelled restricted refuses it.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    let label = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    namespaces.patch(&g.race_team, &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    let refused = Guide::manifest("nfs", &g.race_team, nfs);
    let err = eventually_within("the namespace's label to be read", &g.operator, Duration::from_secs(60), || async {
        let (ok, _, err) = g.kubectl_apply(&refused, &["--dry-run=server"]);
        (!ok).then_some(err)
    })
    .await;
    assert!(
        err.contains(
            "spec.podTemplateSpec.spec.volumes[0].nfs: Forbidden: a nfs volume is not allowed by the restricted Pod Security Standard"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_group_lists_its_servers_and_each_server_says_whether_its_group_is_there() {
    use toolhive_operator::kinds::group::{GroupPhase, MCPGroup};
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let groups: Api<MCPGroup> = Api::namespaced(admin.clone(), &g.team);
    let group: MCPGroup = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPGroup", "metadata": {"name": "tools"}, "spec": {"description": "shared tools"}
    }))
    .unwrap();
    groups.create(&PostParams::default(), &group).await.unwrap();
    for (name, group) in [("grouped-b", "tools"), ("grouped-a", "tools"), ("orphan", "absent")] {
        create(g, &servers, &server(name, json!({"image": "ghcr.io/acme/tool", "groupRef": {"name": group}}))).await;
    }
    eventually("the group to list its two servers", &g.operator, || async {
        let status = groups.get("tools").await.ok()?.status?;
        (status.servers == ["grouped-a", "grouped-b"] && status.server_count == 2 && status.phase == Some(GroupPhase::Ready)).then_some(())
    })
    .await;
    let group_condition = |name: &'static str| {
        let servers = servers.clone();
        async move {
            let condition = servers.get(name).await.ok()?.status?.conditions.into_iter().find(|c| c.type_ == "GroupRefValidated")?;
            Some((condition.status, condition.reason))
        }
    };
    eventually("grouped-a's group is valid", &g.operator, || async {
        (group_condition("grouped-a").await? == ("True".to_string(), "GroupRefIsValid".to_string())).then_some(())
    })
    .await;
    eventually("orphan's group is missing", &g.operator, || async {
        (group_condition("orphan").await? == ("False".to_string(), "GroupRefNotFound".to_string())).then_some(())
    })
    .await;
    let listed = run_ok("kubectl", &g.kubeconfig, &["-n", &g.team, "get", "mcpg", "tools"]);
    assert!(listed.contains("SERVERS") && listed.contains("CHECKED") && listed.contains(" 2 ") && listed.contains("Ready"), "{listed}");

    // A server that leaves is dropped from the list; the group's deletion reaches
    // the servers that named it.
    servers.delete("grouped-b", &DeleteParams::default()).await.unwrap();
    eventually("the group to list the one server left", &g.operator, || async {
        let status = groups.get("tools").await.ok()?.status?;
        (status.servers == ["grouped-a"] && status.server_count == 1).then_some(())
    })
    .await;
    groups.delete("tools", &DeleteParams::default()).await.unwrap();
    eventually("grouped-a to say its group is gone", &g.operator, || async {
        (group_condition("grouped-a").await? == ("False".to_string(), "GroupRefNotFound".to_string())).then_some(())
    })
    .await;
    for name in ["grouped-a", "orphan"] {
        servers.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn a_tool_config_filters_the_servers_tools_and_the_proxy_stops_without_it() {
    use toolhive_operator::kinds::toolconfig::MCPToolConfig;
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let configs: Api<MCPToolConfig> = Api::namespaced(admin.clone(), &g.team);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &g.team);
    let config: MCPToolConfig = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPToolConfig", "metadata": {"name": "filters"},
        "spec": {"toolsFilter": ["read"], "toolsOverride": {"read": {"name": "fetch", "description": "Reads a page"}}}
    }))
    .unwrap();
    configs.create(&PostParams::default(), &config).await.unwrap();
    // Its status is written once something in the namespace names one of its kind.
    create(g, &servers, &server("filtered", json!({"image": "ghcr.io/acme/tool", "toolConfigRef": {"name": "filters"}}))).await;
    eventually("the tool config to be Valid", &g.operator, || async {
        let status = configs.get("filters").await.ok()?.status?;
        (status.conditions.first()?.status == "True" && status.config_hash.len() == 16).then_some(())
    })
    .await;
    let runconfig = |name: &'static str| runconfig_of(&configmaps, name);
    let template_hash = |name: &'static str| proxy_template(&deployments, name);
    let rc = eventually("the filter in the RunConfig", &g.operator, || async {
        let rc = runconfig("filtered").await?;
        (rc["tools_filter"] == json!(["read"])).then_some(rc)
    })
    .await;
    assert_eq!(rc["tools_override"], json!({"read": {"name": "fetch", "description": "Reads a page"}}));
    let steps: Vec<&str> = rc["middleware_configs"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert!(steps.contains(&"tool-filter") && steps.contains(&"tool-call-filter"), "{steps:?}");
    let (first_hash, replicas) = eventually("the proxy", &g.operator, || template_hash("filtered")).await;
    assert_ne!(replicas, Some(0), "a resolved filter lets the proxy run");

    // An edit of the tool config rolls the proxy.
    configs.patch("filters", &PatchParams::default(), &Patch::Merge(json!({"spec": {"toolsFilter": ["read", "write"]}}))).await.unwrap();
    eventually("the edit in the RunConfig and a new proxy template", &g.operator, || async {
        let rc = runconfig("filtered").await?;
        let (hash, _) = template_hash("filtered").await?;
        (rc["tools_filter"] == json!(["read", "write"]) && hash != first_hash).then_some(())
    })
    .await;

    // Without its tool config the server is Failed, says which, and its proxy stops:
    // it never serves tools it asked to filter.
    configs.delete("filters", &DeleteParams::default()).await.unwrap();
    create(g, &servers, &server("unfiltered", json!({"image": "ghcr.io/acme/tool", "toolConfigRef": {"name": "absent"}}))).await;
    for (name, missing) in [("filtered", "filters"), ("unfiltered", "absent")] {
        eventually(&format!("{name} Failed with its proxy stopped"), &g.operator, || async {
            let status = failed_and_stopped(&servers, &deployments, name).await?;
            status.message.contains(&format!("MCPToolConfig {missing} not found")).then_some(())
        })
        .await;
    }
    for name in ["filtered", "unfiltered"] {
        servers.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn an_oidc_config_makes_the_proxy_check_tokens_and_a_server_without_it_never_serves() {
    use toolhive_operator::kinds::oidc::MCPOIDCConfig;
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let configs: Api<MCPOIDCConfig> = Api::namespaced(admin.clone(), &g.team);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &g.team);
    let oidc = |name: &str, spec: serde_json::Value| -> MCPOIDCConfig {
        serde_json::from_value(
            json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPOIDCConfig", "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap()
    };

    // A server naming an MCPOIDCConfig that does not exist: its proxy Deployment is
    // created with 0 replicas (generation 1: never scaled down from serving).
    create(
        g,
        &servers,
        &server("guarded", json!({"image": "ghcr.io/acme/tool", "oidcConfigRef": {"name": "corp", "audience": "guarded"}})),
    )
    .await;
    eventually("guarded Failed, its proxy never serving", &g.operator, || async {
        let status = servers.get("guarded").await.ok()?.status?;
        let proxy = deployments.get_opt("guarded").await.ok()??;
        let never_served = proxy.metadata.generation == Some(1) && proxy.spec?.replicas == Some(0);
        let condition = status.conditions.iter().find(|c| c.type_ == "OIDCConfigRefValidated")?;
        let says = condition.reason == "OIDCConfigRefNotFound" && status.message.contains("MCPOIDCConfig corp not found");
        (status.phase == Some(Phase::Failed) && says && never_served).then_some(())
    })
    .await;

    // The config appears: the proxy checks tokens of the cluster's service accounts for
    // the server's audience, and runs.
    configs
        .create(&PostParams::default(), &oidc("corp", json!({"type": "kubernetesServiceAccount", "kubernetesServiceAccount": {}})))
        .await
        .unwrap();
    let rc = eventually("the token check in the RunConfig", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "guarded").await?;
        let (_, replicas) = proxy_template(&deployments, "guarded").await?;
        (rc["oidc_config"]["Audience"] == "guarded" && replicas != Some(0)).then_some(rc)
    })
    .await;
    assert_eq!(rc["oidc_config"]["Issuer"], "https://kubernetes.default.svc");
    let auth = rc["middleware_configs"].as_array().unwrap().iter().find(|m| m["type"] == "auth").unwrap();
    assert_eq!(auth["parameters"]["oidc_config"], rc["oidc_config"], "the auth step checks what the RunConfig says");
    assert_eq!(rc["jwks_auth_token_file"], "/var/run/secrets/kubernetes.io/serviceaccount/token");
    let valid = configs.get("corp").await.unwrap().status.unwrap().conditions[0].clone();
    assert_eq!((valid.status.as_str(), valid.reason.as_str()), ("True", "ConfigValid"));

    // Edited to an inline provider over plain HTTP: invalid, so the proxy stops again.
    let plain_http = json!({"spec": {"type": "inline", "kubernetesServiceAccount": null, "inline": {"issuer": "http://idp.example.com"}}});
    configs.patch("corp", &PatchParams::default(), &Patch::Merge(plain_http)).await.unwrap();
    eventually("an insecure issuer to stop the proxy", &g.operator, || async {
        let status = failed_and_stopped(&servers, &deployments, "guarded").await?;
        (status.message.contains("MCPOIDCConfig corp is invalid") && status.message.contains("plain HTTP")).then_some(())
    })
    .await;

    // What the proxy would not enforce is refused by the schema, with the reason.
    // Deleted: the server says which object is missing.
    configs.delete("corp", &DeleteParams::default()).await.unwrap();
    eventually("guarded Failed: its OIDC config not found", &g.operator, || async {
        let status = servers.get("guarded").await.ok()?.status?;
        (status.phase == Some(Phase::Failed) && status.message.contains("MCPOIDCConfig corp not found")).then_some(())
    })
    .await;

    let unenforced = oidc("per-account", json!({"type": "kubernetesServiceAccount", "kubernetesServiceAccount": {"serviceAccount": "ci"}}));
    let refused = configs.create(&PostParams::default(), &unenforced).await.expect_err("serviceAccount is not enforced");
    assert!(refused.to_string().contains("not enforced by this operator release"), "{refused}");
    // An audience is required: a token for any audience must not pass.
    let no_audience = Guide::manifest("open", &g.team, "{image: ghcr.io/acme/tool, oidcConfigRef: {name: corp}}");
    let (ok, _, err) = g.kubectl_apply(&no_audience, &[]);
    assert!(!ok && err.contains("spec.oidcConfigRef.audience: Required value"), "{err}");
    servers.delete("guarded", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn authorization_policies_reach_the_proxy_inline_shared_or_mounted_and_the_proxy_stops_without_them() {
    use toolhive_operator::kinds::authz::MCPAuthzConfig;
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let configs: Api<MCPAuthzConfig> = Api::namespaced(admin.clone(), &g.team);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &g.team);
    let authz_step = |rc: &serde_json::Value| {
        let steps = rc["middleware_configs"].as_array().cloned().unwrap_or_default();
        steps.into_iter().find(|m| m["type"] == "authorization").map(|m| m["parameters"]["config_data"].clone())
    };

    // Inline Cedar policies.
    let call_search = r#"permit(principal, action == Action::"call_tool", resource == Tool::"search");"#;
    let inline = json!({"image": "ghcr.io/acme/tool", "authzConfig": {"type": "inline", "inline": {"policies": [call_search]}}});
    create(g, &servers, &server("policed", inline)).await;
    let rc = eventually("the inline policies in the RunConfig", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "policed").await?;
        authz_step(&rc).is_some().then_some(rc)
    })
    .await;
    assert_eq!(rc["authz_config"]["cedar"]["policies"], json!([call_search]));
    assert_eq!(authz_step(&rc), Some(rc["authz_config"].clone()), "the authz step decides with what the RunConfig says");

    // A shared MCPAuthzConfig: resolved, and an edit rolls the proxy.
    let shared: MCPAuthzConfig = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPAuthzConfig", "metadata": {"name": "team-policies"},
        "spec": {"type": "cedarv1", "config": {"policies": [call_search], "entities_json": "[]"}}
    }))
    .unwrap();
    configs.create(&PostParams::default(), &shared).await.unwrap();
    create(g, &servers, &server("shared-policed", json!({"image": "ghcr.io/acme/tool", "authzConfigRef": {"name": "team-policies"}})))
        .await;
    let (first_hash, replicas) = eventually("the shared policies in the RunConfig", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "shared-policed").await?;
        (rc["authz_config"]["cedar"]["policies"] == json!([call_search])).then_some(())?;
        proxy_template(&deployments, "shared-policed").await
    })
    .await;
    assert_ne!(replicas, Some(0));
    let call_any = r#"permit(principal, action == Action::"call_tool", resource);"#;
    let edit = json!({"spec": {"config": {"policies": [call_any]}}});
    configs.patch("team-policies", &PatchParams::default(), &Patch::Merge(edit)).await.unwrap();
    eventually("the edit in the RunConfig and a new proxy template", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "shared-policed").await?;
        let (hash, _) = proxy_template(&deployments, "shared-policed").await?;
        (rc["authz_config"]["cedar"]["policies"] == json!([call_any]) && hash != first_hash).then_some(())
    })
    .await;

    // No policies left: invalid, the server is Failed and its proxy stops.
    configs.patch("team-policies", &PatchParams::default(), &Patch::Merge(json!({"spec": {"config": {"policies": []}}}))).await.unwrap();
    eventually("shared-policed Failed with its proxy stopped", &g.operator, || async {
        let status = failed_and_stopped(&servers, &deployments, "shared-policed").await?;
        let says = status.message.contains("MCPAuthzConfig team-policies is invalid") && status.message.contains("spec.config.policies");
        let condition = status.conditions.iter().find(|c| c.type_ == "AuthzConfigRefValidated")?;
        (says && condition.reason == "AuthzConfigRefNotValid").then_some(())
    })
    .await;
    configs.delete("team-policies", &DeleteParams::default()).await.unwrap();
    eventually("shared-policed Failed: its MCPAuthzConfig not found", &g.operator, || async {
        let status = servers.get("shared-policed").await.ok()?.status?;
        (status.phase == Some(Phase::Failed) && status.message.contains("MCPAuthzConfig team-policies not found")).then_some(())
    })
    .await;

    // Policies in a ConfigMap: mounted for the runner, which reads the file; the
    // operator sees only that the ConfigMap exists and when it changes. Missing: the
    // server is Failed and its proxy never starts.
    let cm_server = json!({"image": "ghcr.io/acme/tool", "authzConfig": {"type": "configMap", "configMap": {"name": "team-cedar"}}});
    create(g, &servers, &server("cm-policed", cm_server)).await;
    eventually("cm-policed Failed: its policy ConfigMap not found, no proxy replica", &g.operator, || async {
        let status = failed_and_stopped(&servers, &deployments, "cm-policed").await?;
        status.message.contains("spec.authzConfig.configMap: ConfigMap team-cedar not found").then_some(())
    })
    .await;
    let policy_file = |policies: &str| {
        let file = json!({"version": "1.0", "type": "cedarv1", "cedar": {"policies": [policies], "entities_json": "[]"}});
        serde_json::from_value::<ConfigMap>(json!({"metadata": {"name": "team-cedar"}, "data": {"authz.json": file.to_string()}})).unwrap()
    };
    configmaps.create(&PostParams::default(), &policy_file(call_search)).await.unwrap();
    let policy_version = |d: Deployment| {
        let template = d.spec?.template;
        let version = template.metadata?.annotations?.get("toolhive.stacklok.dev/configmap-versions")?.clone();
        let volumes = template.spec?.volumes?;
        let mounted = volumes.iter().any(|v| v.config_map.as_ref().is_some_and(|c| c.name == "team-cedar"));
        mounted.then_some(version)
    };
    let first_version = eventually("cm-policed's proxy with the ConfigMap mounted, serving", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "cm-policed").await?;
        let step = rc["middleware_configs"].as_array()?.iter().find(|m| m["type"] == "authorization")?.clone();
        (step["parameters"]["config_path"] == rc["authz_config_path"] && rc.get("authz_config").is_none()).then_some(())?;
        let deployment = deployments.get_opt("cm-policed").await.ok()??;
        (deployment.spec.as_ref()?.replicas != Some(0)).then_some(())?;
        policy_version(deployment)
    })
    .await;
    configmaps.replace("team-cedar", &PostParams::default(), &policy_file(call_any)).await.unwrap();
    eventually("an edit of the policies rolls cm-policed's proxy", &g.operator, || async {
        let version = policy_version(deployments.get_opt("cm-policed").await.ok()??)?;
        (version != first_version).then_some(())
    })
    .await;
    // Claim settings cannot be laid over policies the operator never reads: refused.
    let overridden = Guide::manifest(
        "cm-claims",
        &g.team,
        "{image: ghcr.io/acme/tool, authzConfig: {type: configMap, configMap: {name: team-cedar}, groupClaimName: groups}}",
    );
    let (ok, _, err) = g.kubectl_apply(&overridden, &[]);
    assert!(!ok && err.contains("set groupClaimName, roleClaimName and groupEntityType in the ConfigMap"), "{err}");
    configmaps.delete("team-cedar", &DeleteParams::default()).await.unwrap();
    servers.delete("cm-policed", &DeleteParams::default()).await.unwrap();
    for name in ["policed", "shared-policed"] {
        servers.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn a_permission_profile_from_a_configmap_must_exist_and_an_edit_rolls_the_proxy() {
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &g.team);
    let spec = json!({"image": "ghcr.io/acme/tool", "permissionProfile": {"type": "configmap", "name": "egress", "key": "profile.json"}});
    create(g, &servers, &server("profiled", spec)).await;
    eventually("profiled Failed: its profile ConfigMap not found, no proxy replica", &g.operator, || async {
        let status = failed_and_stopped(&servers, &deployments, "profiled").await?;
        status.message.contains("spec.permissionProfile: ConfigMap egress not found").then_some(())
    })
    .await;
    let profile = |hosts: &[&str]| {
        let text = json!({"network": {"outbound": {"allow_host": hosts, "allow_port": [443]}}}).to_string();
        serde_json::from_value::<ConfigMap>(json!({"metadata": {"name": "egress"}, "data": {"profile.json": text}})).unwrap()
    };
    configmaps.create(&PostParams::default(), &profile(&["api.example.com"])).await.unwrap();
    let versions = |d: Deployment| d.spec?.template.metadata?.annotations?.get("toolhive.stacklok.dev/configmap-versions").cloned();
    let first = eventually("profiled's proxy serving with the profile's version in its template", &g.operator, || async {
        let deployment = deployments.get_opt("profiled").await.ok()??;
        (deployment.spec.as_ref()?.replicas != Some(0)).then_some(())?;
        versions(deployment)
    })
    .await;
    assert!(first.starts_with("egress="), "{first}");
    configmaps.replace("egress", &PostParams::default(), &profile(&["api.example.com", "pypi.org"])).await.unwrap();
    eventually("an edit of the profile rolls the proxy", &g.operator, || async {
        let now = versions(deployments.get_opt("profiled").await.ok()??)?;
        (now != first).then_some(())
    })
    .await;
    servers.delete("profiled", &DeleteParams::default()).await.unwrap();
    configmaps.delete("egress", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn webhooks_reach_the_proxy_with_their_secrets_mounted_and_the_proxy_stops_without_them() {
    use toolhive_operator::kinds::webhookconfig::MCPWebhookConfig;
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let configs: Api<MCPWebhookConfig> = Api::namespaced(admin.clone(), &g.team);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &g.team);
    let hooks: MCPWebhookConfig = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1alpha1", "kind": "MCPWebhookConfig", "metadata": {"name": "hooks"},
        "spec": {"validating": [{"name": "policy", "url": "https://policy.security.svc/check", "timeout": "5s",
            "hmacSecretRef": {"name": "hook-keys", "key": "policy"}}]}
    }))
    .unwrap();
    configs.create(&PostParams::default(), &hooks).await.unwrap();
    // Its status is written once something in the namespace names one of its kind.
    create(g, &servers, &server("hooked", json!({"image": "ghcr.io/acme/tool", "webhookConfigRef": {"name": "hooks"}}))).await;
    eventually("the webhook config to be Valid", &g.operator, || async {
        let status = configs.get("hooks").await.ok()?.status?;
        (status.conditions.first()?.status == "True" && status.config_hash.len() == 16).then_some(())
    })
    .await;
    let rc = eventually("the webhook in the RunConfig", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "hooked").await?;
        (rc["validating_webhooks"][0]["name"] == "policy").then_some(rc)
    })
    .await;
    assert_eq!(rc["validating_webhooks"][0]["timeout"], 5_000_000_000u64, "nanoseconds, as the runner reads a duration");
    let steps: Vec<&str> = rc["middleware_configs"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert!(steps.contains(&"validating-webhook"), "{steps:?}");
    // The HMAC key: a Secret volume, mounted where the RunConfig says, never read by the operator.
    let key_path = rc["validating_webhooks"][0]["hmac_secret_ref"].as_str().unwrap().to_string();
    let (first_hash, _) = eventually("the proxy", &g.operator, || proxy_template(&deployments, "hooked")).await;
    let pod = deployments.get("hooked").await.unwrap().spec.unwrap().template.spec.unwrap();
    let mount =
        pod.containers[0].volume_mounts.iter().flatten().find(|m| m.mount_path == key_path).expect("mounted where the runner reads it");
    let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
    assert_eq!(volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()), Some("hook-keys"));

    // An edit rolls the proxy; plain HTTP makes it invalid and stops the proxy.
    let edit = json!({"spec": {"validating": [{"name": "policy", "url": "https://policy.security.svc/v2", "hmacSecretRef": {"name": "hook-keys", "key": "policy"}}]}});
    configs.patch("hooks", &PatchParams::default(), &Patch::Merge(edit)).await.unwrap();
    eventually("the edit in the RunConfig and a new proxy template", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "hooked").await?;
        let (hash, _) = proxy_template(&deployments, "hooked").await?;
        (rc["validating_webhooks"][0]["url"] == "https://policy.security.svc/v2" && hash != first_hash).then_some(())
    })
    .await;
    let plain = json!({"spec": {"validating": [{"name": "policy", "url": "http://policy.security.svc/check"}]}});
    configs.patch("hooks", &PatchParams::default(), &Patch::Merge(plain)).await.unwrap();
    eventually("an http webhook to stop the proxy", &g.operator, || async {
        let status = failed_and_stopped(&servers, &deployments, "hooked").await?;
        let condition = status.conditions.iter().find(|c| c.type_ == "WebhookConfigRefValidated")?;
        let says = status.message.contains("MCPWebhookConfig hooks is invalid") && status.message.contains("use https");
        (says && condition.status == "False").then_some(())
    })
    .await;
    configs.delete("hooks", &DeleteParams::default()).await.unwrap();
    eventually("hooked Failed: its webhook config not found", &g.operator, || async {
        let status = servers.get("hooked").await.ok()?.status?;
        (status.phase == Some(Phase::Failed) && status.message.contains("MCPWebhookConfig hooks not found")).then_some(())
    })
    .await;
    servers.delete("hooked", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_token_exchange_reaches_the_proxy_and_auth_types_not_carried_out_stop_it() {
    use toolhive_operator::kinds::externalauth::MCPExternalAuthConfig;
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let configs: Api<MCPExternalAuthConfig> = Api::namespaced(admin.clone(), &g.team);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &g.team);
    let exchange: MCPExternalAuthConfig = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPExternalAuthConfig", "metadata": {"name": "exchange"},
        "spec": {"type": "tokenExchange", "tokenExchange": {"tokenUrl": "https://idp.example.com/token", "audience": "backend",
            "clientId": "proxy", "clientSecretRef": {"name": "exchange-client", "key": "secret"}}}
    }))
    .unwrap();
    configs.create(&PostParams::default(), &exchange).await.unwrap();
    create(g, &servers, &server("exchanging", json!({"image": "ghcr.io/acme/tool", "externalAuthConfigRef": {"name": "exchange"}}))).await;
    let rc = eventually("the token exchange in the RunConfig", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "exchanging").await?;
        (rc["token_exchange_config"]["audience"] == "backend").then_some(rc)
    })
    .await;
    let steps: Vec<&str> = rc["middleware_configs"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert!(steps.windows(2).any(|w| w == ["auth", "tokenexchange"]), "{steps:?}");
    eventually("the client secret by reference on the proxy", &g.operator, || async {
        let pod = deployments.get_opt("exchanging").await.ok()??.spec?.template.spec?;
        let env = pod.containers.first()?.env.clone()?;
        let secret = env.iter().find(|e| e.name == "TOOLHIVE_TOKEN_EXCHANGE_CLIENT_SECRET")?.value_from.clone()?.secret_key_ref?;
        (secret.name == "exchange-client").then_some(())
    })
    .await;

    // Changed to a type this release does not carry out: the proxy stops, saying why.
    let aws = json!({"spec": {"type": "awsSts", "tokenExchange": null, "awsSts": {"region": "eu-west-1"}}});
    configs.patch("exchange", &PatchParams::default(), &Patch::Merge(aws)).await.unwrap();
    eventually("an awsSts config to stop the proxy", &g.operator, || async {
        let status = failed_and_stopped(&servers, &deployments, "exchanging").await?;
        let condition = status.conditions.iter().find(|c| c.type_ == "ExternalAuthConfigRefValidated")?;
        let says = status.message.contains("awsSts (signing requests to a remote MCP server with AWS credentials) is not carried out");
        (says && condition.reason == "ExternalAuthConfigRefNotValid").then_some(())
    })
    .await;
    configs.delete("exchange", &DeleteParams::default()).await.unwrap();
    eventually("exchanging Failed: its MCPExternalAuthConfig not found", &g.operator, || async {
        let status = servers.get("exchanging").await.ok()?.status?;
        (status.phase == Some(Phase::Failed) && status.message.contains("MCPExternalAuthConfig exchange not found")).then_some(())
    })
    .await;
    servers.delete("exchanging", &DeleteParams::default()).await.unwrap();
}

/// The RunConfig the operator wrote for `name`, parsed.
async fn runconfig_of(configmaps: &Api<ConfigMap>, name: &str) -> Option<serde_json::Value> {
    let cm = configmaps.get_opt(&format!("{name}-runconfig")).await.ok()??;
    serde_json::from_str(cm.data?.get("runconfig.json")?).ok()
}

/// `name`'s status once it is Failed with its proxy Deployment at 0 replicas: a server
/// that must not serve.
async fn failed_and_stopped(
    servers: &Api<MCPServer>,
    deployments: &Api<Deployment>,
    name: &str,
) -> Option<toolhive_operator::kinds::mcpserver::api::MCPServerStatus> {
    let status = servers.get(name).await.ok()?.status?;
    let (_, replicas) = proxy_template(deployments, name).await?;
    (status.phase == Some(Phase::Failed) && replicas == Some(0)).then_some(status)
}

/// The proxy Deployment's pod-template RunConfig digest (it changes when the proxy
/// rolls) and its replicas.
async fn proxy_template(deployments: &Api<Deployment>, name: &str) -> Option<(String, Option<i32>)> {
    let spec = deployments.get_opt(name).await.ok()??.spec?;
    Some((spec.template.metadata?.annotations?.get("toolhive.stacklok.dev/runconfig-hash")?.clone(), spec.replicas))
}

#[tokio::test]
async fn a_telemetry_config_reaches_the_proxy_its_secrets_by_reference_and_the_proxy_stops_without_it() {
    use toolhive_operator::kinds::telemetry::MCPTelemetryConfig;
    let g = guide();
    let _webhooks = guide_webhook_shared().await;
    let admin = g.admin().await;
    let servers = g.servers(&admin, &g.team);
    let configs: Api<MCPTelemetryConfig> = Api::namespaced(admin.clone(), &g.team);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &g.team);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &g.team);
    let secret_value = "otel-token-never-copied";
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "otel-creds"}, "stringData": {"token": secret_value}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &g.team).create(&PostParams::default(), &secret).await.unwrap();
    let config: MCPTelemetryConfig = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPTelemetryConfig", "metadata": {"name": "otel"},
        "spec": {"openTelemetry": {"enabled": true, "endpoint": "https://collector.obs:4317", "tracing": {"enabled": true},
            "sensitiveHeaders": [{"name": "x-api-key", "secretKeyRef": {"name": "otel-creds", "key": "token"}}]}}
    }))
    .unwrap();
    configs.create(&PostParams::default(), &config).await.unwrap();
    // Referenced: the RunConfig carries it, the proxy gets the header by reference.
    // (Its status is written once something in the namespace names one of its kind.)
    let reference = json!({"name": "otel", "serviceName": "traced-svc"});
    create(g, &servers, &server("traced", json!({"image": "ghcr.io/acme/tool", "telemetryConfigRef": reference}))).await;
    let defaulted = eventually("the telemetry config to be Valid", &g.operator, || async {
        let config = configs.get("otel").await.ok()?;
        let status = config.status.as_ref()?;
        (status.conditions.first()?.status == "True" && status.config_hash.len() == 16).then_some(config)
    })
    .await;
    let otel = defaulted.spec.open_telemetry.unwrap();
    assert_eq!((otel.use_legacy_attributes, otel.tracing.unwrap().sampling_rate.as_str()), (true, "0.05"), "the schema's defaults");

    let rc = eventually("the telemetry in the RunConfig", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "traced").await?;
        (rc["telemetry_config"]["endpoint"] == "collector.obs:4317").then_some(rc)
    })
    .await;
    assert_eq!(rc["telemetry_config"]["serviceName"], "traced-svc");
    assert_eq!(rc["telemetry_config"]["samplingRate"], "0.05");
    let steps: Vec<&str> = rc["middleware_configs"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert!(steps.windows(2).any(|w| w == ["mcp-parser", "telemetry"]), "{steps:?}");
    let (first_hash, replicas) = eventually("the proxy", &g.operator, || proxy_template(&deployments, "traced")).await;
    assert_ne!(replicas, Some(0), "a resolved telemetry config lets the proxy run");
    let proxy = deployments.get("traced").await.unwrap();
    let env = proxy.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let header = env.iter().find(|e| e.name == "TOOLHIVE_OTEL_HEADER_X_API_KEY").expect("the sensitive header's variable");
    let by_reference = header.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).map(|s| (s.name.as_str(), s.key.as_str()));
    assert_eq!((header.value.as_deref(), by_reference), (None, Some(("otel-creds", "token"))));
    for cm in configmaps.list(&kube::api::ListParams::default()).await.unwrap().items {
        assert!(!serde_json::to_string(&cm.data).unwrap().contains(secret_value), "a Secret's value copied into {}", cm.name_any());
    }

    // An edit rolls the proxy.
    let edit = json!({"spec": {"openTelemetry": {"tracing": {"enabled": true, "samplingRate": "0.5"}}}});
    configs.patch("otel", &PatchParams::default(), &Patch::Merge(edit)).await.unwrap();
    eventually("the edit in the RunConfig and a new proxy template", &g.operator, || async {
        let rc = runconfig_of(&configmaps, "traced").await?;
        let (hash, _) = proxy_template(&deployments, "traced").await?;
        (rc["telemetry_config"]["samplingRate"] == "0.5" && hash != first_hash).then_some(())
    })
    .await;

    // Made invalid (an endpoint with no signal to send to it): the config says why,
    // the server is Failed and its proxy stops.
    let invalid = json!({"spec": {"openTelemetry": {"tracing": {"enabled": false}}}});
    configs.patch("otel", &PatchParams::default(), &Patch::Merge(invalid)).await.unwrap();
    eventually("the invalid config to stop the proxy", &g.operator, || async {
        let status = failed_and_stopped(&servers, &deployments, "traced").await?;
        let valid = configs.get("otel").await.ok()?.status?.conditions.first()?.status.clone();
        let says = status.message.contains("MCPTelemetryConfig otel is invalid") && status.message.contains("enable tracing or metrics");
        (says && valid == "False").then_some(())
    })
    .await;

    // Deleted: the server says which object is missing.
    configs.delete("otel", &DeleteParams::default()).await.unwrap();
    eventually("traced Failed: its telemetry config not found", &g.operator, || async {
        let status = servers.get("traced").await.ok()?.status?;
        (status.phase == Some(Phase::Failed) && status.message.contains("MCPTelemetryConfig otel not found")).then_some(())
    })
    .await;

    // A reference is a name in the server's namespace, never a path to another.
    let elsewhere = server("elsewhere", json!({"image": "ghcr.io/acme/tool", "telemetryConfigRef": {"name": "kube-system/otel"}}));
    let refused = servers.create(&PostParams::default(), &elsewhere).await.expect_err("a path into another namespace");
    assert!(refused.to_string().contains("spec.telemetryConfigRef.name"), "{refused}");
    servers.delete("traced", &DeleteParams::default()).await.unwrap();
}
