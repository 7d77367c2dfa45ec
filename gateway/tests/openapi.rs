//! The OpenAPI document served at `/openapi.json` describes routes that
//! exist: every path and method in it is answered by a handler, never by
//! the router's "no such route" or "method not allowed" answers.

mod common;

use common::TestGateway;
use serde_json::{json, Value};

/// A value for each path parameter, so the request reaches a handler.
fn fill(path: &str) -> String {
    path.replace("{topic}", "described")
        .replace("{partition}", "0")
        .replace("{cluster_id}", "sluice")
        .replace("{group}", "described-group")
        .replace("{instance}", "described-instance")
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let gw = TestGateway::start().await;
    let reply = gw
        .client
        .get(format!("{}/openapi.json", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["content-type"], "application/json");
    let spec: Value = reply.json().await.expect("the document is JSON");
    assert_eq!(spec["openapi"], "3.1.0");

    // A topic for the routes that need one.
    let created = gw
        .client
        .post(format!("{}/topics/described", gw.url))
        .header("Content-Type", "application/vnd.kafka.binary.v2+json")
        .json(&json!({"records": [{"value": "eA=="}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);

    let paths = spec["paths"].as_object().expect("paths");
    assert!(paths.len() >= 12, "the REST routes are described");
    let mut checked = 0;
    for (path, item) in paths {
        for method in ["get", "post", "delete"] {
            if item.get(method).is_none() || path.ends_with("/events") || method == "delete" {
                // The event stream never ends by itself, and a delete would
                // remove the topic the other routes use; both have tests of
                // their own (sse.rs, rest.rs).
                continue;
            }
            let url = format!("{}{}", gw.url, fill(path));
            let request = match method {
                "get" => gw.client.get(&url),
                _ => gw
                    .client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body("{}"),
            };
            let reply = request.send().await.unwrap();
            let status = reply.status().as_u16();
            let body = reply.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} is routed: {body}");
            assert!(
                !(status == 404 && body.contains("no route for")),
                "{method} {path} is routed: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 14, "checked {checked} routes");
    gw.stop().await;
}
