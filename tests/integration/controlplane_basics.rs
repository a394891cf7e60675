use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

/// A CRD, a namespace and a custom object round-trip through the real API server.
#[tokio::test]
async fn creates_namespace_crd_and_custom_object() {
    let cp = controlplane::shared();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "basics").await.unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.test"},
        "spec": {
            "group": "example.test",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}}}
            }}}]
        }
    }))
    .unwrap();
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create crd: {e}"),
    }
    let gvk = GroupVersionKind::gvk("example.test", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let mut obj = DynamicObject::new("w1", &ar);
    obj.data = json!({"spec": {"size": 3}});
    // The CRD takes a moment to be served after it is established.
    let mut created = None;
    for _ in 0..100 {
        match widgets.create(&PostParams::default(), &obj).await {
            Ok(o) => {
                created = Some(o);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let created = created.expect("custom object created");
    assert_eq!(created.data["spec"]["size"], 3);
    let got = widgets.get("w1").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);

    // Schema validation is real: size 0 violates minimum 1.
    let mut bad = DynamicObject::new("w2", &ar);
    bad.data = json!({"spec": {"size": 0}});
    let err = widgets.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 422), "{err}");
}

/// RBAC is enforced: an impersonated ServiceAccount can do only what it is bound to.
#[tokio::test]
async fn impersonated_service_account_is_forbidden_without_rbac() {
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let ns = cp.namespace(&admin, "rbac").await.unwrap();
    let sa_client = cp.client_as_service_account(&ns, "reader").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sa_client.clone(), &ns);

    let err = cms.list(&Default::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 403), "expected 403, got {err}");

    // Grant list on configmaps in this namespace only.
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "cm-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns).create(&PostParams::default(), &role).await.unwrap();
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "cm-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &ns).create(&PostParams::default(), &rb).await.unwrap();
    // RBAC takes effect through the authorizer's informer; allow it a moment.
    let mut allowed = false;
    for _ in 0..50 {
        if cms.list(&Default::default()).await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(allowed, "list allowed after binding");
    // Still forbidden: writing, and anything in another namespace.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    let err = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 403), "{err}");
    let other: Api<ConfigMap> = Api::namespaced(sa_client, "default");
    let err = other.list(&Default::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 403), "{err}");
}
