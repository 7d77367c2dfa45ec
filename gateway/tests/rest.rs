//! The REST routes over real TLS sockets, against the embedded cluster:
//! what a Confluent REST Proxy client would see.

mod common;

use common::TestGateway;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const JSON_V2: &str = "application/vnd.kafka.json.v2+json";
const KAFKA_V2: &str = "application/vnd.kafka.v2+json";
const JSON: &str = "application/json";

/// An answer, read whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.status, self.text))
    }

    /// Asserts a success status; returns the body as JSON (null if empty).
    fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts Confluent's error shape; returns the message.
    fn error(&self, status: u16, code: u32) -> String {
        let body = self.json();
        assert_eq!(self.status.as_u16(), status, "{body}");
        assert_eq!(body["error_code"], json!(code), "{body}");
        assert_eq!(self.content_type(), KAFKA_V2);
        body["message"].as_str().expect("message").to_owned()
    }
}

async fn send(
    gw: &TestGateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Reply {
    let mut request = gw.client.request(method, format!("{}{path}", gw.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request reaches the gateway");
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body"),
    }
}

async fn get(gw: &TestGateway, path: &str) -> Reply {
    send(gw, Method::GET, path, &[], None).await
}

async fn get_as(gw: &TestGateway, path: &str, accept: &str) -> Reply {
    send(gw, Method::GET, path, &[(ACCEPT.as_str(), accept)], None).await
}

async fn post(gw: &TestGateway, path: &str, content_type: &str, body: impl ToString) -> Reply {
    send(
        gw,
        Method::POST,
        path,
        &[(CONTENT_TYPE.as_str(), content_type)],
        Some(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn binary_produce_with_key_and_headers_reads_back() {
    let gw = TestGateway::start().await;
    let reply = post(
        &gw,
        "/topics/orders",
        BINARY,
        json!({"records": [
            {"key": "a2V5LTE=", "value": "AAECAw==", "partition": 1,
             "headers": [{"name": "trace", "value": "dC0x"}, {"name": "empty", "value": null}],
             "timestamp": 1_700_000_000_000_i64},
            {"key": "a2V5LTI=", "value": null, "partition": 1}
        ]}),
    )
    .await;
    assert_eq!(reply.content_type(), KAFKA_V2);
    let produced = reply.ok(200);
    assert_eq!(produced["key_schema_id"], Value::Null);
    assert_eq!(produced["value_schema_id"], Value::Null);
    assert_eq!(
        produced["offsets"],
        json!([
            {"partition": 1, "offset": 0, "error_code": null, "error": null},
            {"partition": 1, "offset": 1, "error_code": null, "error": null}
        ])
    );

    let reply = get(&gw, "/topics/orders/partitions/1/records").await;
    assert_eq!(reply.content_type(), BINARY);
    let records = reply.ok(200);
    assert_eq!(records.as_array().map(Vec::len), Some(2), "{records}");
    let first = &records[0];
    assert_eq!(first["topic"], "orders");
    assert_eq!(first["key"], "a2V5LTE=");
    assert_eq!(first["value"], "AAECAw==");
    assert_eq!(first["partition"], 1);
    assert_eq!(first["offset"], 0);
    assert_eq!(first["timestamp"], 1_700_000_000_000_i64);
    assert_eq!(
        first["headers"],
        json!([{"name": "trace", "value": "dC0x"}, {"name": "empty", "value": ""}])
    );
    assert_eq!(records[1]["value"], Value::Null);
    assert!(records[1]["timestamp"].as_i64().is_some_and(|t| t > 0));

    let from_one = get(&gw, "/topics/orders/partitions/1/records?offset=1")
        .await
        .ok(200);
    assert_eq!(from_one[0]["offset"], 1);
    gw.stop().await;
}

#[tokio::test]
async fn json_produce_reads_back_as_json_and_binary() {
    let gw = TestGateway::start().await;
    // Raw text, so the server sees the keys in this order.
    let body =
        r#"{"records":[{"key":"user-7","value":{"zeta":1,"alpha":[true,null]},"partition":0}]}"#;
    post(&gw, "/topics/events", JSON_V2, body).await.ok(200);
    post(&gw, "/topics/events", JSON, body).await.ok(200);

    let reply = get_as(&gw, "/topics/events/partitions/0/records", JSON_V2).await;
    assert_eq!(reply.content_type(), JSON_V2);
    assert!(
        reply
            .text
            .contains(r#""key":"user-7","value":{"zeta":1,"alpha":[true,null]}"#),
        "{}",
        reply.text
    );
    assert_eq!(reply.ok(200).as_array().map(Vec::len), Some(2));

    // In binary, the same record is its compact JSON text in base64.
    let reply = get_as(&gw, "/topics/events/partitions/0/records", JSON).await;
    assert_eq!(reply.content_type(), BINARY);
    assert_eq!(reply.ok(200)[0]["key"], "InVzZXItNyI="); // "\"user-7\""
    gw.stop().await;
}

#[tokio::test]
async fn partition_url_form() {
    let gw = TestGateway::start().await;
    let reply = post(
        &gw,
        "/topics/p/partitions/2",
        BINARY,
        json!({"records": [{"value": "eA=="}, {"value": "eQ==", "partition": 2}]}),
    )
    .await;
    let offsets = reply.ok(200)["offsets"].clone();
    assert_eq!(
        offsets[0],
        json!({"partition": 2, "offset": 0, "error_code": null, "error": null})
    );
    assert_eq!(offsets[1]["offset"], 1);
    let message = post(
        &gw,
        "/topics/p/partitions/2",
        BINARY,
        json!({"records": [{"value": "eA==", "partition": 0}]}),
    )
    .await
    .error(422, 422);
    assert!(message.starts_with("records[0].partition"), "{message}");
    post(
        &gw,
        "/topics/p/partitions/3",
        BINARY,
        json!({"records": [{"value": "eA=="}]}),
    )
    .await
    .error(404, 40402);
    gw.stop().await;
}

#[tokio::test]
async fn v3_produce_reads_back() {
    let gw = TestGateway::start().await;
    let reply = post(
        &gw,
        "/v3/clusters/sluice/topics/v3/records",
        JSON,
        json!({"partition_id": 0,
               "headers": [{"name": "h", "value": "eA=="}],
               "key": {"type": "BINARY", "data": "aGk="},
               "value": {"type": "STRING", "data": "hello"},
               "timestamp": "2024-05-01T12:00:00.250Z"}),
    )
    .await;
    assert_eq!(
        reply.ok(200),
        json!({"error_code": 200, "cluster_id": "sluice", "topic_name": "v3",
               "partition_id": 0, "offset": 0, "timestamp": "2024-05-01T12:00:00.250Z",
               "key": {"type": "BINARY", "size": 2}, "value": {"type": "STRING", "size": 5}})
    );
    let records = get(&gw, "/topics/v3/partitions/0/records").await.ok(200);
    assert_eq!(records[0]["key"], "aGk=");
    assert_eq!(records[0]["value"], "aGVsbG8="); // "hello"
    assert_eq!(records[0]["timestamp"], 1_714_564_800_250_i64);
    assert_eq!(
        records[0]["headers"],
        json!([{"name": "h", "value": "eA=="}])
    );

    let reply = post(
        &gw,
        "/v3/clusters/sluice/topics/v3/records",
        JSON,
        json!({"partition_id": 0, "value": {"data": {"n": 1}}}),
    )
    .await
    .ok(200);
    assert_eq!(reply["offset"], 1);
    assert_eq!(reply["key"], Value::Null);
    assert_eq!(reply["value"], json!({"type": "JSON", "size": 7}));

    let message = get(&gw, "/v3/clusters/nope/topics").await.error(404, 404);
    assert_eq!(message, "Cluster nope not found");
    gw.stop().await;
}

#[tokio::test]
async fn v3_topic_routes() {
    let gw = TestGateway::start().await;
    assert_eq!(
        get(&gw, "/v3/clusters/sluice").await.ok(200),
        json!({"kind": "KafkaCluster", "cluster_id": "sluice"})
    );
    let created = post(
        &gw,
        "/v3/clusters/sluice/topics",
        JSON,
        json!({"topic_name": "made", "partitions_count": 4}),
    )
    .await
    .ok(201);
    // The home is the ring's choice among the configured clusters.
    let home = created["home_cluster"]
        .as_str()
        .expect("home_cluster")
        .to_owned();
    assert!(gw.config.clusters.iter().any(|c| c.name == home), "{home}");
    let topic = json!({"kind": "KafkaTopic", "cluster_id": "sluice", "topic_name": "made",
                       "partitions_count": 4, "is_internal": false, "home_cluster": home});
    assert_eq!(created, topic);
    assert_eq!(
        get(&gw, "/v3/clusters/sluice/topics/made").await.ok(200),
        topic
    );
    assert_eq!(
        get(&gw, "/v3/clusters/sluice/topics").await.ok(200)["data"],
        json!([topic])
    );
    post(
        &gw,
        "/v3/clusters/sluice/topics",
        JSON,
        json!({"topic_name": "made"}),
    )
    .await
    .error(400, 40002);
    let reply = send(
        &gw,
        Method::DELETE,
        "/v3/clusters/sluice/topics/made",
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    get(&gw, "/v3/clusters/sluice/topics/made")
        .await
        .error(404, 40401);
    gw.stop().await;
}

#[tokio::test]
async fn metadata_and_offsets() {
    let gw = TestGateway::start_with(|c| c.topics.default_partitions = 2).await;
    assert_eq!(get(&gw, "/topics").await.ok(200), json!([]));
    let body = json!({"records": [{"value": "eA=="}, {"value": "eQ=="}, {"value": "eg=="}]});
    post(&gw, "/topics/beta/partitions/1", BINARY, &body)
        .await
        .ok(200);
    post(&gw, "/topics/alpha", BINARY, &body).await.ok(200);
    let reply = get(&gw, "/topics").await;
    assert_eq!(reply.content_type(), KAFKA_V2);
    assert_eq!(reply.ok(200), json!(["alpha", "beta"]));

    let partition = |p: u32| {
        json!({"partition": p, "leader": 0,
               "replicas": [{"broker": 0, "leader": true, "in_sync": true}]})
    };
    let topic = get(&gw, "/topics/beta").await.ok(200);
    assert_eq!(topic["name"], "beta");
    assert_eq!(topic["configs"], json!({}));
    assert_eq!(topic["partitions"], json!([partition(0), partition(1)]));
    let home = topic["cluster"]
        .as_str()
        .expect("the home cluster is shown");
    assert!(
        gw.config.clusters.iter().any(|c| c.name == home),
        "{home} is a configured cluster"
    );
    assert_eq!(
        get(&gw, "/topics/beta/partitions").await.ok(200),
        json!([partition(0), partition(1)])
    );
    assert_eq!(
        get(&gw, "/topics/beta/partitions/1").await.ok(200),
        partition(1)
    );
    get(&gw, "/topics/beta/partitions/2")
        .await
        .error(404, 40402);

    assert_eq!(
        get(&gw, "/topics/beta/partitions/1/offsets").await.ok(200),
        json!({"beginning_offset": 0, "end_offset": 3})
    );
    assert_eq!(
        get(&gw, "/topics/beta/partitions/0/offsets").await.ok(200),
        json!({"beginning_offset": 0, "end_offset": 0})
    );
    get(&gw, "/topics/gone/partitions/0/offsets")
        .await
        .error(404, 40401);
    gw.stop().await;
}

#[tokio::test]
async fn acks_query_parameter() {
    let gw = TestGateway::start().await;
    let body = json!({"records": [{"value": "eA==", "partition": 0}]});
    for acks in ["1", "all", "-1"] {
        let reply = post(&gw, &format!("/topics/a?acks={acks}"), BINARY, &body).await;
        assert!(
            reply.ok(200)["offsets"][0]["offset"].is_u64(),
            "acks={acks}"
        );
    }
    let reply = post(&gw, "/topics/a?acks=0", BINARY, &body).await.ok(200);
    assert_eq!(reply["offsets"][0]["offset"], Value::Null);
    let message = post(&gw, "/topics/a?acks=most", BINARY, &body)
        .await
        .error(400, 400);
    assert!(message.contains("acks"), "{message}");
    gw.stop().await;
}

#[tokio::test]
async fn auto_create_on_produce_only_when_enabled() {
    let gw = TestGateway::start().await;
    get(&gw, "/topics/auto").await.error(404, 40401);
    post(
        &gw,
        "/topics/auto",
        BINARY,
        json!({"records": [{"value": "eA=="}]}),
    )
    .await
    .ok(200);
    let topic = get(&gw, "/topics/auto").await.ok(200);
    assert_eq!(
        topic["partitions"].as_array().map(Vec::len),
        Some(gw.config.topics.default_partitions as usize)
    );
    gw.stop().await;

    let gw = TestGateway::start_with(|c| c.topics.auto_create = false).await;
    let message = post(
        &gw,
        "/topics/auto",
        BINARY,
        json!({"records": [{"value": "eA=="}]}),
    )
    .await
    .error(404, 40401);
    assert!(message.contains("auto"), "{message}");
    gw.stop().await;
}

#[tokio::test]
async fn routing_errors() {
    let gw = TestGateway::start().await;
    get(&gw, "/no/such/route").await.error(404, 404);
    let reply = send(&gw, Method::PUT, "/topics/t", &[], None).await;
    reply.error(405, 405);
    assert!(reply.headers.contains_key("allow"));
    send(&gw, Method::DELETE, "/topics", &[], None)
        .await
        .error(405, 405);
    gw.stop().await;
}

#[tokio::test]
async fn body_errors() {
    let gw = TestGateway::start().await;
    let message = post(&gw, "/topics/t", BINARY, r#"{"records": [{"value": "#)
        .await
        .error(400, 400);
    assert!(message.contains("line 1 column"), "{message}");
    let message = post(
        &gw,
        "/topics/t",
        BINARY,
        json!({"records": [{}, {}, {"partition": "two"}]}),
    )
    .await
    .error(422, 422);
    assert!(
        message.starts_with("records[2].partition: invalid type"),
        "{message}"
    );
    let message = post(
        &gw,
        "/topics/t",
        BINARY,
        json!({"records": [{"value": "not base64!"}]}),
    )
    .await
    .error(422, 422);
    assert!(
        message.starts_with("records[0].value: invalid base64"),
        "{message}"
    );
    let message = post(
        &gw,
        "/topics/t",
        BINARY,
        json!({"records": [{"value": "", "headers": [{"name": "a", "value": ""}, {"name": "b", "value": "?"}]}]}),
    )
    .await
    .error(422, 422);
    assert!(
        message.starts_with("records[0].headers[1].value"),
        "{message}"
    );
    post(&gw, "/topics/t", BINARY, json!({"records": []}))
        .await
        .error(422, 422);
    post(
        &gw,
        "/topics/t",
        BINARY,
        json!({"value_schema_id": 4, "records": [{"value": "eA=="}]}),
    )
    .await
    .error(422, 422);
    let message = post(
        &gw,
        "/v3/clusters/sluice/topics/t/records",
        JSON,
        json!({"value": {"type": "BINARY", "data": "%"}}),
    )
    .await
    .error(422, 422);
    assert!(
        message.starts_with("value.data: invalid base64"),
        "{message}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let gw = TestGateway::start_with(|c| c.listener.max_body_bytes = 1024).await;
    let big = json!({"records": [{"value": "A".repeat(4096)}]});
    post(&gw, "/topics/t", BINARY, &big).await.error(413, 413);
    post(&gw, "/v3/clusters/sluice/topics/t/records", JSON, &big)
        .await
        .error(413, 413);
    post(
        &gw,
        "/topics/t",
        BINARY,
        json!({"records": [{"value": "eA=="}]}),
    )
    .await
    .ok(200);
    gw.stop().await;
}

#[tokio::test]
async fn content_type_errors() {
    let gw = TestGateway::start().await;
    let body = json!({"records": [{"value": "eA=="}]}).to_string();
    let message = send(&gw, Method::POST, "/topics/t", &[], Some(body.clone()))
        .await
        .error(415, 415);
    assert!(message.contains(BINARY), "{message}");
    post(&gw, "/topics/t", "text/plain", &body)
        .await
        .error(415, 415);
    let message = post(
        &gw,
        "/topics/t",
        "application/vnd.kafka.avro.v2+json",
        &body,
    )
    .await
    .error(415, 415);
    assert!(message.contains("schema"), "{message}");
    post(&gw, "/v3/clusters/sluice/topics", "text/plain", "{}")
        .await
        .error(415, 415);

    post(
        &gw,
        "/topics/t/partitions/0",
        BINARY,
        json!({"records": [{"value": "/w=="}]}),
    )
    .await
    .ok(200);
    let message = get_as(&gw, "/topics/t/partitions/0/records", JSON_V2)
        .await
        .error(406, 40601);
    assert!(message.contains("offset 0"), "{message}");
    get_as(&gw, "/topics/t/partitions/0/records", "image/png")
        .await
        .error(406, 406);
    gw.stop().await;
}

#[tokio::test]
async fn path_and_query_errors() {
    let gw = TestGateway::start().await;
    for path in [
        "/topics/%FF",
        "/topics/%C3%28/partitions",
        "/topics/bad%20name",
        "/topics/a%2Fb",
    ] {
        let message = get(&gw, path).await.error(400, 400);
        assert!(
            message.contains("UTF-8") || message.contains("topic names must match"),
            "{path}: {message}"
        );
    }
    post(
        &gw,
        "/topics/%FF",
        BINARY,
        json!({"records": [{"value": "eA=="}]}),
    )
    .await
    .error(400, 400);
    post(
        &gw,
        "/topics/no$pe",
        BINARY,
        json!({"records": [{"value": "eA=="}]}),
    )
    .await
    .error(400, 400);
    for path in [
        "/topics/t/partitions/one",
        "/topics/t/partitions/-1/offsets",
        "/topics/t/partitions/1.5/records",
    ] {
        let message = get(&gw, path).await.error(400, 400);
        assert!(message.contains("partition"), "{path}: {message}");
    }
    for (path, name) in [
        ("/topics/t/partitions/0/records?offset=first", "offset"),
        ("/topics/t/partitions/0/records?max_bytes=-5", "max_bytes"),
    ] {
        let message = get(&gw, path).await.error(400, 400);
        assert!(message.contains(name), "{path}: {message}");
    }
    gw.stop().await;
}
