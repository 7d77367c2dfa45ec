//! The routes doing what they are for.

use axum::http::Method;
use serde_json::json;
use sluice_federation::cursor::Cursor;

use super::memory::NOW_MS;
use super::{app, BINARY, JSON_V2};

#[tokio::test]
async fn binary_produce_with_key_and_headers_reads_back() {
    let app = app();
    let reply = app
        .post(
            "/topics/orders",
            BINARY,
            json!({"records": [
                {"key": "aGk=", "value": "AAEC", "partition": 1,
                 "headers": [{"name": "trace", "value": "eA=="}], "timestamp": 1000},
                {"value": null, "partition": 1}
            ]}),
        )
        .await;
    assert_eq!(reply.content_type(), "application/vnd.kafka.v2+json");
    assert_eq!(
        reply.ok(200),
        json!({"key_schema_id": null, "value_schema_id": null, "offsets": [
            {"partition": 1, "offset": 0, "error_code": null, "error": null},
            {"partition": 1, "offset": 1, "error_code": null, "error": null}
        ]})
    );

    let reply = app.get("/topics/orders/partitions/1/records").await;
    assert_eq!(reply.content_type(), BINARY);
    assert_eq!(
        reply.ok(200),
        json!([
            {"topic": "orders", "key": "aGk=", "value": "AAEC", "partition": 1, "offset": 0,
             "timestamp": 1000, "headers": [{"name": "trace", "value": "eA=="}],
             "cursor": Cursor::at_epoch(1, [(1, 1)]).encode("orders")},
            {"topic": "orders", "key": null, "value": null, "partition": 1, "offset": 1,
             "timestamp": NOW_MS, "headers": [],
             "cursor": Cursor::at_epoch(1, [(1, 2)]).encode("orders")}
        ])
    );
    let reply = app
        .get("/topics/orders/partitions/1/records?offset=1")
        .await;
    assert_eq!(reply.ok(200)[0]["offset"], json!(1));
}

#[tokio::test]
async fn json_produce_reads_back_in_both_formats() {
    let app = app();
    for content_type in [JSON_V2, "application/json; charset=utf-8"] {
        let reply = app
            .post(
                "/topics/events",
                content_type,
                json!({"records": [{"key": {"id": 7}, "value": [1, "two"], "partition": 0}]}),
            )
            .await;
        reply.ok(200);
    }
    let reply = app
        .get_as("/topics/events/partitions/0/records", JSON_V2)
        .await;
    assert_eq!(reply.content_type(), JSON_V2);
    let records = reply.ok(200);
    assert_eq!(records[1]["key"], json!({"id": 7}));
    assert_eq!(records[1]["value"], json!([1, "two"]));

    // The stored bytes are the compact JSON text, visible in binary.
    let reply = app
        .get_as("/topics/events/partitions/0/records", "*/*")
        .await;
    assert_eq!(reply.content_type(), BINARY);
    // base64 of `[1,"two"]`
    assert_eq!(reply.ok(200)[0]["value"], json!("WzEsInR3byJd"));
}

#[tokio::test]
async fn partition_url_form_and_max_bytes() {
    let app = app();
    let reply = app
        .post(
            "/topics/t/partitions/2",
            BINARY,
            json!({"records": [{"value": "YWFhYQ=="}, {"value": "YmJiYg==", "partition": 2}]}),
        )
        .await;
    let offsets = reply.ok(200)["offsets"].clone();
    assert_eq!(offsets[0]["partition"], json!(2));
    assert_eq!(offsets[1]["offset"], json!(1));
    // One record is always returned, however small max_bytes is.
    let reply = app.get("/topics/t/partitions/2/records?max_bytes=1").await;
    assert_eq!(reply.ok(200).as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn acks_query_parameter() {
    let app = app();
    let reply = app
        .post(
            "/topics/t?acks=0",
            BINARY,
            json!({"records": [{"value": "eA=="}]}),
        )
        .await;
    assert_eq!(reply.ok(200)["offsets"][0]["offset"], json!(null));
    for acks in ["1", "all", "-1"] {
        let reply = app
            .post(
                &format!("/topics/t?acks={acks}"),
                BINARY,
                json!({"records": [{"value": "eA=="}]}),
            )
            .await;
        assert!(reply.ok(200)["offsets"][0]["offset"].is_u64());
    }
    let reply = app
        .post(
            "/topics/t?acks=2",
            BINARY,
            json!({"records": [{"value": "eA=="}]}),
        )
        .await;
    assert!(reply.error(400, 400).contains("acks"));
}

#[tokio::test]
async fn metadata_routes() {
    let app = app();
    app.post("/topics/b", BINARY, json!({"records": [{"value": "eA=="}]}))
        .await
        .ok(200);
    app.post("/topics/a", BINARY, json!({"records": [{"value": "eA=="}]}))
        .await
        .ok(200);
    assert_eq!(app.get("/topics").await.ok(200), json!(["a", "b"]));

    let partition = |p: u32| {
        json!({"partition": p, "leader": 0,
               "replicas": [{"broker": 0, "leader": true, "in_sync": true}]})
    };
    let reply = app.get("/topics/a").await;
    assert_eq!(reply.content_type(), "application/vnd.kafka.v2+json");
    assert_eq!(
        reply.ok(200),
        json!({"name": "a", "configs": {}, "cluster": "memory",
               "partitions": [partition(0), partition(1), partition(2)]})
    );
    assert_eq!(
        app.get("/topics/a/partitions").await.ok(200),
        json!([partition(0), partition(1), partition(2)])
    );
    assert_eq!(
        app.get("/topics/a/partitions/2").await.ok(200),
        partition(2)
    );
    app.get("/topics/a/partitions/3").await.error(404, 40402);
}

#[tokio::test]
async fn offsets_route() {
    let app = app();
    let body = json!({"records": [{"value": "eA=="}, {"value": "eQ=="}, {"value": "eg=="}]});
    app.post("/topics/t/partitions/0", BINARY, body)
        .await
        .ok(200);
    assert_eq!(
        app.get("/topics/t/partitions/0/offsets").await.ok(200),
        json!({"beginning_offset": 0, "end_offset": 3})
    );
    app.cluster.drop_before("t", 0, 2);
    assert_eq!(
        app.get("/topics/t/partitions/0/offsets").await.ok(200),
        json!({"beginning_offset": 2, "end_offset": 3})
    );
    let message = app
        .get("/topics/t/partitions/0/records?offset=1")
        .await
        .error(416, 41601);
    assert!(
        message.contains("start at 2") && message.contains("next is 3"),
        "{message}"
    );
    // Naming no offset means "from the earliest held", not offset 0.
    let records = app.get("/topics/t/partitions/0/records").await.ok(200);
    assert_eq!(records[0]["offset"], json!(2));
}

#[tokio::test]
async fn auto_create_follows_config() {
    let app = app();
    app.get("/topics/fresh").await.error(404, 40401);
    app.post(
        "/topics/fresh",
        BINARY,
        json!({"records": [{"value": "eA=="}]}),
    )
    .await
    .ok(200);
    assert_eq!(app.get("/topics/fresh").await.ok(200)["name"], "fresh");

    let app = super::app_with(|c| c.topics.auto_create = false);
    let message = app
        .post(
            "/topics/fresh",
            BINARY,
            json!({"records": [{"value": "eA=="}]}),
        )
        .await
        .error(404, 40401);
    assert!(message.contains("fresh"), "{message}");
}

#[tokio::test]
async fn v3_topics() {
    let app = app();
    assert_eq!(
        app.get("/v3/clusters/sluice").await.ok(200),
        json!({"kind": "KafkaCluster", "cluster_id": "sluice"})
    );
    assert_eq!(
        app.get("/v3/clusters").await.ok(200)["data"][0]["cluster_id"],
        "sluice"
    );
    let created = app
        .post(
            "/v3/clusters/sluice/topics",
            "application/json",
            json!({"topic_name": "t1", "partitions_count": 5, "replication_factor": 3}),
        )
        .await
        .ok(201);
    let t1 = json!({"kind": "KafkaTopic", "cluster_id": "sluice", "topic_name": "t1",
                    "partitions_count": 5, "is_internal": false, "home_cluster": "memory"});
    assert_eq!(created, t1);
    assert_eq!(app.get("/v3/clusters/sluice/topics/t1").await.ok(200), t1);
    assert_eq!(
        app.get("/v3/clusters/sluice/topics").await.ok(200)["data"],
        json!([t1])
    );
    app.post(
        "/v3/clusters/sluice/topics",
        "application/json",
        json!({"topic_name": "t1"}),
    )
    .await
    .error(400, 40002);
    let reply = app
        .call(Method::DELETE, "/v3/clusters/sluice/topics/t1", &[], "")
        .await;
    assert_eq!(reply.status.as_u16(), 204);
    assert!(reply.body.is_empty());
    app.get("/v3/clusters/sluice/topics/t1")
        .await
        .error(404, 40401);
    app.call(Method::DELETE, "/v3/clusters/sluice/topics/t1", &[], "")
        .await
        .error(404, 40401);
}

#[tokio::test]
async fn v3_produce_reads_back() {
    let app = app();
    let reply = app
        .post(
            "/v3/clusters/sluice/topics/v3t/records",
            "application/json",
            json!({"partition_id": 1,
                   "headers": [{"name": "h", "value": "eA=="}, {"name": "n", "value": null}],
                   "key": {"type": "STRING", "data": "k1"},
                   "value": {"type": "JSON", "data": {"z": 1, "a": 2}},
                   "timestamp": "2024-05-01T12:00:00.250Z"}),
        )
        .await;
    assert_eq!(
        reply.ok(200),
        json!({"error_code": 200, "cluster_id": "sluice", "topic_name": "v3t",
               "partition_id": 1, "offset": 0, "timestamp": "2024-05-01T12:00:00.250Z",
               "key": {"type": "STRING", "size": 2}, "value": {"type": "JSON", "size": 13}})
    );
    let records = app.get("/topics/v3t/partitions/1/records").await.ok(200);
    assert_eq!(records[0]["key"], "azE="); // "k1"
    assert_eq!(records[0]["timestamp"], 1_714_564_800_250_i64);
    assert_eq!(
        records[0]["headers"],
        json!([{"name": "h", "value": "eA=="}, {"name": "n", "value": ""}])
    );
    // The STRING key is not JSON, so this partition only reads as binary.
    app.get_as("/topics/v3t/partitions/1/records", JSON_V2)
        .await
        .error(406, 40601);

    let reply = app
        .post(
            "/v3/clusters/sluice/topics/v3t/records",
            "application/json",
            json!({"value": {"type": "BINARY", "data": "AAE="}, "timestamp": 5}),
        )
        .await
        .ok(200);
    assert_eq!(reply["key"], json!(null));
    assert_eq!(reply["value"], json!({"type": "BINARY", "size": 2}));
    assert_eq!(reply["timestamp"], "1970-01-01T00:00:00.005Z");

    // Raw text: `json!` would sort the object's keys before sending.
    app.post_raw(
        "/v3/clusters/sluice/topics/v3t/records",
        "application/json",
        r#"{"partition_id": 2, "key": {"data": [1]}, "value": {"data": {"z": 1, "a": 2}}}"#,
    )
    .await
    .ok(200);
    let reply = app
        .get_as("/topics/v3t/partitions/2/records", JSON_V2)
        .await;
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert!(
        text.contains(r#""key":[1],"value":{"z":1,"a":2}"#),
        "{text}"
    );
}
