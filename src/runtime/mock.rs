//! A mocked API server for reconciler tests (kube's client over `tower-test`): it
//! answers as the API server would and records every request, so a test sees what a
//! reconcile asks of the API without a cluster.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::{Client, client::Body};
use serde_json::{Value, json};

/// Every request: (method, path and query, body).
pub type Calls = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A client whose API server answers a status apply with `owner` holding the
/// applied status, any other apply with the object as stored (`stored`), a GET of an
/// object applied before with it, any other GET of one object with 404, and a list
/// (a GET with a query) with an empty list.
pub fn mock_api(owner: Value) -> (Client, Calls) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls: Calls = Arc::default();
    let recorded = calls.clone();
    tokio::spawn(async move {
        let mut objects = std::collections::HashMap::<String, Value>::new();
        while let Some((request, send)) = handle.next_request().await {
            let (method, path) = (request.method().to_string(), request.uri().to_string());
            let body: Value = serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap_or(Value::Null);
            let object_path = path.split('?').next().unwrap_or_default().to_string();
            let (code, answer) = match method.as_str() {
                "GET" if path.contains('?') => {
                    (200, json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}))
                }
                "GET" => match objects.get(&object_path) {
                    Some(object) => (200, object.clone()),
                    None => (
                        404,
                        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                },
                _ if path.contains("/status") => {
                    let mut object = owner.clone();
                    object["status"] = body["status"].clone();
                    (200, object)
                }
                _ => {
                    let object = stored(&body);
                    objects.insert(object_path, object.clone());
                    (200, object)
                }
            };
            recorded.lock().unwrap().push((method, path, body));
            send.send_response(Response::builder().status(code).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap());
        }
    });
    (Client::new(service, "default"), calls)
}

/// An applied object as the API server stores it: with a uid, a version and a generation.
pub fn stored(applied: &Value) -> Value {
    let mut object = applied.clone();
    object["metadata"]["uid"] = json!("child-uid");
    object["metadata"]["resourceVersion"] = json!("7");
    object["metadata"]["generation"] = json!(1);
    object
}

/// The objects applied (not status), as stored: what the watches show afterwards.
pub fn applied_objects(calls: &Calls) -> Vec<Value> {
    calls.lock().unwrap().iter().filter(|(m, p, _)| m == "PATCH" && !p.contains("/status")).map(|(_, _, body)| stored(body)).collect()
}

/// The names of the objects applied (not status), in order.
pub fn applied_names(calls: &Calls) -> Vec<String> {
    let calls = calls.lock().unwrap();
    let applies = calls.iter().filter(|(m, p, _)| m == "PATCH" && !p.contains("/status"));
    applies.map(|(_, p, _)| p.split('?').next().unwrap().rsplit('/').next().unwrap().to_string()).collect()
}

/// Every request that is not a read.
pub fn writes(calls: &Calls) -> Vec<(String, String, Value)> {
    calls.lock().unwrap().iter().filter(|(m, _, _)| m != "GET").cloned().collect()
}
