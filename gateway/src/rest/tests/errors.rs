//! Failures answered in Confluent's error shape with the right status and
//! code: unknown routes and resources, unrenderable records, cluster faults.

use axum::http::Method;
use serde_json::json;
use sluice_broker::BrokerError;

use super::{app, BINARY, JSON_V2};

#[tokio::test]
async fn unknown_route_and_wrong_method() {
    let app = app();
    let message = app.get("/nope").await.error(404, 404);
    assert!(message.contains("/nope"), "{message}");
    app.get("/topics/t/partitions/0/records/extra")
        .await
        .error(404, 404);
    let reply = app.call(Method::PUT, "/topics/t", &[], "").await;
    reply.error(405, 405);
    let allow = reply.headers["allow"].to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    app.call(Method::DELETE, "/topics", &[], "")
        .await
        .error(405, 405);
    app.call(Method::GET, "/v3/clusters/sluice/topics/t/records", &[], "")
        .await
        .error(405, 405);
}

#[tokio::test]
async fn unknown_things_are_404() {
    let app = app();
    app.post("/topics/t", BINARY, json!({"records": [{"value": "eA=="}]}))
        .await
        .ok(200);
    app.get("/topics/missing/partitions")
        .await
        .error(404, 40401);
    app.get("/topics/missing/partitions/0/offsets")
        .await
        .error(404, 40401);
    app.get("/topics/t/partitions/9/records")
        .await
        .error(404, 40402);
    app.post(
        "/topics/t/partitions/9",
        BINARY,
        json!({"records": [{"value": "eA=="}]}),
    )
    .await
    .error(404, 40402);
    let message = app.get("/v3/clusters/other").await.error(404, 404);
    assert_eq!(message, "Cluster other not found");
    app.get("/v3/clusters/other/topics").await.error(404, 404);
    app.post(
        "/v3/clusters/other/topics/t/records",
        "application/json",
        json!({}),
    )
    .await
    .error(404, 404);
}

#[tokio::test]
async fn stored_bytes_that_are_not_json_are_406() {
    let app = app();
    app.post(
        "/topics/t/partitions/0",
        BINARY,
        json!({"records": [{"value": "/w=="}]}),
    )
    .await
    .ok(200);
    let message = app
        .get_as("/topics/t/partitions/0/records", JSON_V2)
        .await
        .error(406, 40601);
    assert!(message.contains("offset 0"), "{message}");
}

#[tokio::test]
async fn cluster_faults_are_503_and_500_without_detail() {
    let app = app();
    app.cluster.fail_with(|| BrokerError::Unavailable {
        cluster: "memory".into(),
        reason: "disk detached".into(),
    });
    // Listings come from the placement table; a produce reaches the cluster.
    let reply = app
        .post("/topics/t", BINARY, json!({"records": [{"value": "eA=="}]}))
        .await;
    let message = reply.error(503, 50301);
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(!message.contains("disk detached"), "{message}");

    let app = super::app();
    app.post("/topics/t", BINARY, json!({"records": [{"value": "eA=="}]}))
        .await;
    app.cluster.fail_with(|| BrokerError::Corrupt {
        location: "/srv/sluice/00000.log:42".into(),
        reason: "crc mismatch".into(),
    });
    let message = app
        .post("/topics/t", BINARY, json!({"records": [{"value": "eA=="}]}))
        .await
        .error(500, 50001);
    assert_eq!(message, "internal error");
    app.cluster
        .fail_with(|| BrokerError::Io(std::io::Error::other("EIO on /srv")));
    let message = app
        .get("/topics/t/partitions/0/records")
        .await
        .error(500, 50001);
    assert_eq!(message, "internal error");
}
