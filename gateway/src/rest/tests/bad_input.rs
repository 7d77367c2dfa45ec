//! Malformed requests: every bad input is a 4xx in Confluent's error shape
//! naming what was wrong, and no input panics.

use axum::http::Method;
use serde_json::json;

use super::{app, app_with, BINARY, JSON_V2};

#[tokio::test]
async fn malformed_json_is_400_with_position() {
    let app = app();
    for body in ["{\"records\": [", "", "{\"records\": []} trailing", "\u{1}"] {
        let message = app
            .post_raw("/topics/t", BINARY, body)
            .await
            .error(400, 400);
        assert!(message.starts_with("malformed JSON"), "{message}");
        assert!(message.contains("line 1 column"), "{message}");
    }
    let message = app
        .post_raw("/v3/clusters/sluice/topics", "application/json", "{")
        .await
        .error(400, 400);
    assert!(message.contains("line 1 column"), "{message}");
}

#[tokio::test]
async fn wrong_shape_is_422_naming_the_path() {
    let app = app();
    let cases = [
        (
            json!({"records": [{}, {}, {"partition": "x"}]}),
            "records[2].partition: invalid type",
        ),
        (
            json!({"records": [{"partition": -1}]}),
            "records[0].partition: invalid value",
        ),
        (json!({"records": {}}), "records: invalid type"),
        (json!({}), "missing field `records`"),
        (json!([]), "the body must be a JSON object"),
        (
            json!({"records": [[]]}),
            "records[0]: invalid length 0, expected a record object",
        ),
        (json!({"records": []}), "records: must not be empty"),
        (
            json!({"records": [{"value": "%%%"}]}),
            "records[0].value: invalid base64",
        ),
        (
            json!({"records": [{"value": "", "headers": [{"name": "a", "value": ""}, {"name": "b", "value": "!"}]}]}),
            "records[0].headers[1].value: invalid base64",
        ),
        (
            json!({"records": [{"headers": [{"value": ""}]}]}),
            "records[0].headers[0]: missing field `name`",
        ),
        (
            json!({"key_schema": "{}", "records": [{}]}),
            "key_schema: schemas are not supported",
        ),
    ];
    for (body, expected) in cases {
        let message = app
            .post("/topics/t", BINARY, body.clone())
            .await
            .error(422, 422);
        assert!(message.starts_with(expected), "{body}: {message}");
    }
    let message = app
        .post(
            "/topics/t/partitions/1",
            JSON_V2,
            json!({"records": [{"value": 1, "partition": 0}]}),
        )
        .await
        .error(422, 422);
    assert!(message.starts_with("records[0].partition"), "{message}");
}

#[tokio::test]
async fn content_types_are_negotiated() {
    let app = app();
    let body = json!({"records": [{"value": "eA=="}]}).to_string();
    let message = app
        .call(Method::POST, "/topics/t", &[], body.clone())
        .await
        .error(415, 415);
    assert!(
        message.contains(BINARY) && message.contains(JSON_V2),
        "{message}"
    );
    app.post_raw("/topics/t", "text/plain", body.clone())
        .await
        .error(415, 415);
    for schema in ["avro", "protobuf", "jsonschema"] {
        let content_type = format!("application/vnd.kafka.{schema}.v2+json");
        let message = app
            .post_raw("/topics/t", &content_type, body.clone())
            .await
            .error(415, 415);
        assert!(message.contains("schema formats"), "{message}");
    }
    app.post_raw("/v3/clusters/sluice/topics/t/records", BINARY, "{}")
        .await
        .error(415, 415);
    app.get_as("/topics/t/partitions/0/records", "text/html")
        .await
        .error(406, 406);
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = app_with(|c| c.listener.max_body_bytes = 64);
    let value = "eA==".repeat(40);
    let body = json!({"records": [{"value": value}]});
    let message = app
        .post("/topics/t", BINARY, body.clone())
        .await
        .error(413, 413);
    assert!(message.contains("64"), "{message}");
    app.post(
        "/v3/clusters/sluice/topics/t/records",
        "application/json",
        body,
    )
    .await
    .error(413, 413);
    app.post("/topics/t", BINARY, json!({"records": [{"value": "eA=="}]}))
        .await
        .ok(200);
}

#[tokio::test]
async fn bad_path_and_query_parameters_are_400() {
    let app = app();
    for uri in [
        "/topics/a%20b",
        "/topics/%2E%2E%2Fx",
        "/topics/%FF",
        "/topics/%FF/partitions",
    ] {
        let message = app.get(uri).await.error(400, 400);
        assert!(
            message.contains("topic names must match") || message.contains("UTF-8"),
            "{uri}: {message}"
        );
    }
    let long = "x".repeat(250);
    app.get(&format!("/topics/{long}")).await.error(400, 400);
    let message = app
        .post_raw("/topics/%FF", BINARY, "{}")
        .await
        .error(400, 400);
    assert!(message.contains("UTF-8"), "{message}");
    for uri in [
        "/topics/t/partitions/x",
        "/topics/t/partitions/-1/offsets",
        "/topics/t/partitions/99999999999/records",
    ] {
        let message = app.get(uri).await.error(400, 400);
        assert!(message.contains("partition"), "{uri}: {message}");
    }
    for (uri, name) in [
        ("/topics/t/partitions/0/records?offset=x", "offset"),
        ("/topics/t/partitions/0/records?offset=-1", "offset"),
        ("/topics/t/partitions/0/records?max_bytes=1.5", "max_bytes"),
    ] {
        let message = app.get(uri).await.error(400, 400);
        assert!(message.contains(name), "{uri}: {message}");
    }
    app.post(
        "/v3/clusters/sluice/topics",
        "application/json",
        json!({"topic_name": "bad name"}),
    )
    .await
    .error(400, 400);
}

#[tokio::test]
async fn v3_bad_bodies() {
    let app = app();
    let uri = "/v3/clusters/sluice/topics/t/records";
    for (body, expected) in [
        (
            json!({"value": {"type": "BINARY", "data": "@"}}),
            "value.data: invalid base64",
        ),
        (
            json!({"key": {"type": "AVRO", "data": {}}}),
            "key.type: schema formats",
        ),
        (
            json!({"headers": [{"name": "h", "value": "!"}]}),
            "headers[0].value: invalid base64",
        ),
        (json!({"timestamp": "noon"}), "timestamp: expected"),
        (json!({"partition_id": "one"}), "partition_id: invalid type"),
    ] {
        let message = app
            .post(uri, "application/json", body.clone())
            .await
            .error(422, 422);
        assert!(message.starts_with(expected), "{body}: {message}");
    }
    app.post(uri, "application/json", json!({"partition_id": 7}))
        .await
        .error(404, 40402);
    app.post(
        "/v3/clusters/sluice/topics",
        "application/json",
        json!({"topic_name": "t", "configs": [{"name": "cleanup.policy", "value": "compact"}]}),
    )
    .await
    .error(422, 422);
    app.post(
        "/v3/clusters/sluice/topics",
        "application/json",
        json!({"topic_name": "z", "partitions_count": 0}),
    )
    .await
    .error(400, 400);
}

#[tokio::test]
async fn odd_inputs_never_panic() {
    let app = app();
    let uris = [
        "/topics/%00",
        "/topics/t/partitions/%FF/records",
        "/topics/t/partitions/0/records?offset=%FF",
        "/topics/t/partitions/0/records?%zz",
        "/topics/t/partitions/0/records?max_bytes=18446744073709551615",
        "/v3/clusters/%FF/topics",
        "/%FF%FE",
    ];
    for uri in uris {
        let reply = app.get(uri).await;
        assert!(reply.status.is_client_error(), "{uri}: {}", reply.status);
        reply.json();
    }
    let bodies: [&[u8]; 5] = [
        b"\xff\xfe",
        b"{\"records\":[{\"value\":\"\\ud800\"}]}",
        b"null",
        b"[[[[[[",
        b"{\"records\":[{\"key\":{\"a\":[1e999]}}]}",
    ];
    for body in bodies {
        for content_type in [BINARY, JSON_V2] {
            let reply = app.post_raw("/topics/t", content_type, body.to_vec()).await;
            assert!(
                reply.status.is_client_error(),
                "{:?}: {}",
                body,
                reply.status
            );
            reply.json();
        }
    }
}
