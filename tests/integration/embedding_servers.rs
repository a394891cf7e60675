//! EmbeddingServer through a real API server, the webhook called over TLS, the
//! operator running as the chart's ServiceAccount (namespace mode, so the API
//! server's RBAC proves the chart grants what the controller uses):
//! - ToolHive v0.66.0's cache example gets the reference's StatefulSet (with its
//!   volume claim) and Service, and its status follows the StatefulSet's (written by
//!   the test: this control plane runs no StatefulSet controller and no node):
//!   Pending, Downloading while a pod is not ready, Ready;
//! - an edit (replicas, arguments) reaches the StatefulSet; a change of the model
//!   cache, a pod template, an image from a registry the namespace does not allow and
//!   a quantity that does not parse are refused at admission with their paths;
//! - deleting the server deletes its children.

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use toolhive_operator::kinds::embedding::api::{EmbeddingPhase, EmbeddingServer};

use super::common::{eventually, eventually_within, run};
use super::guide::guide;
use super::release::{install_release, ready};
use super::server_entries::upstream_source;

fn object(name: &str, spec: Value) -> EmbeddingServer {
    serde_json::from_value(
        json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "EmbeddingServer", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

#[tokio::test]
async fn embedding_servers_get_the_reference_s_statefulset_and_are_held_to_the_namespace_s_rules() {
    let _crds = guide();
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let ca = controlplane::Authority::new("embedding-webhook-ca").unwrap();
    let policy = json!({"defaults": {"allowedRegistries": ["ghcr.io", "docker.io"], "mcpResources": {"max": {"memory": "8Gi"}}}});
    let install = install_release(&admin, kc, &ca, "embedding", json!({}), policy).await;
    ready(&install).await;
    let ns = install.team.clone();

    // v0.66.0's example with a model cache, as a user applies it.
    let file = upstream_source().join("examples/operator/embedding-servers/embedding-with-cache.yaml");
    let mut example: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    example["metadata"]["namespace"] = json!(ns);
    let (ok, _, err) = run("kubectl", kc, &["apply", "--server-side", "-f", "-"], Some(&example.to_string()));
    assert!(ok, "the example applies: {err}");
    let name = "embedding-with-cache";
    let embeddings: Api<EmbeddingServer> = Api::namespaced(admin.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let set = eventually("the StatefulSet", &install.operator, || async { statefulsets.get_opt(name).await.ok()? }).await;
    let spec = set.spec.as_ref().unwrap();
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("text-embeddings-inference:latest"));
    assert_eq!(container.args.as_ref().unwrap()[..4], ["--model-id", "sentence-transformers/all-MiniLM-L6-v2", "--port", "8080"]);
    let env: Vec<&str> = container.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(env, ["MODEL_ID", "RUST_LOG", "MAX_BATCH_TOKENS", "HF_HOME"]);
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("model-cache"));
    let size = claim.spec.as_ref().and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage").cloned());
    assert_eq!(size.map(|q| q.0), Some("10Gi".to_string()));
    let service = eventually("the Service", &install.operator, || async { services.get_opt(name).await.ok()? }).await;
    assert_eq!(service.spec.unwrap().ports.unwrap()[0].port, 8080);
    // What a StatefulSet controller would report: a pod not ready (the model loading), then ready.
    let pending = eventually("Pending", &install.operator, || async {
        let status = embeddings.get(name).await.ok()?.status?;
        (status.phase == Some(EmbeddingPhase::Pending)).then_some(status)
    })
    .await;
    assert_eq!(pending.url, format!("http://{name}.{ns}.svc.cluster.local:8080"));
    for (ready, phase) in [(0, EmbeddingPhase::Downloading), (1, EmbeddingPhase::Ready)] {
        let status = json!({"status": {"replicas": 1, "readyReplicas": ready, "availableReplicas": ready}});
        statefulsets.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
        let seen = eventually(phase.as_str(), &install.operator, || async {
            let status = embeddings.get(name).await.ok()?.status?;
            (status.phase == Some(phase)).then_some(status)
        })
        .await;
        assert_eq!(seen.ready_replicas, ready);
    }

    // An edit reaches the StatefulSet.
    let edit = json!({"spec": {"replicas": 2, "args": ["--max-client-batch-size", "8"]}});
    embeddings.patch(name, &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    eventually("the edit in the StatefulSet", &install.operator, || async {
        let spec = statefulsets.get(name).await.ok()?.spec?;
        let args = spec.template.spec?.containers[0].args.clone()?;
        (spec.replicas == Some(2) && args.ends_with(&["--max-client-batch-size".to_string(), "8".to_string()])).then_some(())
    })
    .await;

    // Refused at admission, each with its path.
    let cache = json!({"spec": {"modelCache": {"enabled": true, "size": "50Gi"}}});
    let refused = embeddings.patch(name, &PatchParams::default(), &Patch::Merge(&cache)).await.unwrap_err().to_string();
    assert!(refused.contains("spec.modelCache: Forbidden: the model cache cannot change"), "{refused}");
    let refused = embeddings
        .create(
            &PostParams::default(),
            &object(
                "bad",
                json!({"image": "quay.io/acme/tei:1", "podTemplateSpec": {"spec": {"containers": [{"name": "embedding", "image": "quay.io/acme/side:1"}]}},
                    "resources": {"limits": {"memory": "16Gi", "cpu": "two"}}}),
            ),
        )
        .await
        .unwrap_err()
        .to_string();
    for field in [
        "spec.podTemplateSpec.spec.containers[0].image: Forbidden: registry \"quay.io\" is not allowed",
        "spec.resources.limits.cpu: Invalid value",
        "spec.image: Forbidden: registry \"quay.io\" is not allowed",
    ] {
        assert!(refused.contains(field), "{field} in {refused}");
    }
    let over = embeddings
        .create(&PostParams::default(), &object("big", json!({"resources": {"limits": {"memory": "16Gi"}}})))
        .await
        .unwrap_err()
        .to_string();
    assert!(over.contains("spec.resources.limits.memory: Forbidden: 16Gi exceeds the namespace maximum of 8Gi"), "{over}");

    // Deleting the server deletes its children (the controller-manager's garbage
    // collector; it learns of a kind whose CRD came with this binary's control plane
    // only at its next discovery, up to a minute later).
    embeddings.delete(name, &DeleteParams::default()).await.unwrap();
    eventually_within("the children gone", &install.operator, std::time::Duration::from_secs(120), || async {
        (statefulsets.get_opt(name).await.ok()?.is_none() && services.get_opt(name).await.ok()?.is_none()).then_some(())
    })
    .await;
    run("helm", kc, &["uninstall", &install.release, "-n", &install.release_ns], None);
}
