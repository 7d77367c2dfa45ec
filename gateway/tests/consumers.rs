//! Confluent v2 consumer instances and consumer groups, end to end over
//! TLS: the whole flow, long-polls, `max_bytes`, rebalancing, groups over
//! topics on different clusters and across a migration, and two gateway
//! processes behind one round-robin address.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::TestGateway;
use serde_json::{json, Value};

const V2: &str = "application/vnd.kafka.v2+json";
const BINARY: &str = "application/vnd.kafka.binary.v2+json";

fn b64(s: &str) -> String {
    BASE64.encode(s)
}

fn unb64(v: &Value) -> String {
    String::from_utf8(BASE64.decode(v.as_str().expect("base64 string")).unwrap()).unwrap()
}

/// One consumer instance, driven over HTTP.
struct Consumer {
    http: reqwest::Client,
    url: String,
    group: String,
    instance: String,
}

impl Consumer {
    /// Creates an instance named `name` in `group` with extra settings.
    async fn create(
        http: &reqwest::Client,
        url: &str,
        group: &str,
        name: &str,
        settings: Value,
    ) -> Self {
        let mut body = json!({"name": name, "format": "binary", "auto.offset.reset": "earliest", "auto.commit.enable": "false"});
        if let (Some(b), Some(s)) = (body.as_object_mut(), settings.as_object()) {
            b.extend(s.clone());
        }
        let reply = http
            .post(format!("{url}/consumers/{group}"))
            .header("content-type", V2)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
        let answer: Value = reply.json().await.unwrap();
        assert_eq!(answer["instance_id"], name);
        assert!(
            answer["base_uri"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/consumers/{group}/instances/{name}")),
            "{answer}"
        );
        Self {
            http: http.clone(),
            url: url.to_owned(),
            group: group.to_owned(),
            instance: name.to_owned(),
        }
    }

    fn at(&self, rest: &str) -> String {
        format!(
            "{}/consumers/{}/instances/{}{rest}",
            self.url, self.group, self.instance
        )
    }

    async fn post(&self, rest: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.at(rest))
            .header("content-type", V2)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn expect(&self, rest: &str, body: Value, status: u16) {
        let reply = self.post(rest, body).await;
        assert_eq!(
            reply.status(),
            status,
            "{rest}: {}",
            reply.text().await.unwrap()
        );
    }

    async fn subscribe(&self, topics: &[&str]) {
        self.expect("/subscription", json!({ "topics": topics }), 204)
            .await;
    }

    async fn poll_raw(&self, timeout_ms: u64, max_bytes: Option<u64>) -> reqwest::Response {
        let mut url = self.at(&format!("/records?timeout={timeout_ms}"));
        if let Some(m) = max_bytes {
            url.push_str(&format!("&max_bytes={m}"));
        }
        self.http
            .get(url)
            .header("accept", BINARY)
            .send()
            .await
            .unwrap()
    }

    async fn poll(&self, timeout_ms: u64) -> Vec<Value> {
        let reply = self.poll_raw(timeout_ms, None).await;
        assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
        reply.json().await.unwrap()
    }

    /// Polls until `want` records came or `patience` passed.
    async fn poll_until(&self, want: usize, patience: Duration) -> Vec<Value> {
        let deadline = Instant::now() + patience;
        let mut all = Vec::new();
        while all.len() < want && Instant::now() < deadline {
            all.extend(self.poll(500).await);
        }
        all
    }

    async fn commit_all(&self) {
        let reply = self
            .http
            .post(self.at("/offsets"))
            .header("content-type", V2)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    }

    async fn assignments(&self) -> BTreeSet<(String, u64)> {
        let reply = self.http.get(self.at("/assignments")).send().await.unwrap();
        assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
        let body: Value = reply.json().await.unwrap();
        body["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["topic"].as_str().unwrap().to_owned(),
                    p["partition"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    async fn delete(&self) {
        let reply = self.http.delete(self.at("")).send().await.unwrap();
        assert_eq!(reply.status(), 204, "{}", reply.text().await.unwrap());
    }
}

fn values(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| unb64(&r["value"])).collect()
}

async fn error_of(reply: reqwest::Response) -> (u16, u64, String) {
    let status = reply.status().as_u16();
    let body: Value = reply.json().await.expect("JSON error body");
    (
        status,
        body["error_code"].as_u64().expect("error_code"),
        body["message"].as_str().expect("message").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_consumer_flow_end_to_end() {
    let gw = TestGateway::start().await;
    gw.create_topic("flow", 2).await;
    // A record with a key and headers, then more on both partitions.
    let reply = gw
        .client
        .post(format!("{}/topics/flow", gw.url))
        .header("content-type", BINARY)
        .body(
            json!({"records": [{"key": b64("k"), "value": b64("first"), "partition": 0,
                "headers": [{"name": "trace", "value": b64("t-1")}]}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    gw.produce_values("flow", 0, &["a1".into(), "a2".into()])
        .await;
    gw.produce_values("flow", 1, &["b0".into(), "b1".into()])
        .await;

    let c = Consumer::create(&gw.client, &gw.url, "flow-group", "c1", json!({})).await;
    c.subscribe(&["flow"]).await;
    let reply = c.http.get(c.at("/subscription")).send().await.unwrap();
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"topics": ["flow"]})
    );

    // The first poll is not empty: the data is there already.
    let first = c.poll(5_000).await;
    assert!(!first.is_empty(), "first poll came back empty");
    let mut got = first;
    got.extend(c.poll_until(5 - got.len(), Duration::from_secs(10)).await);
    assert_eq!(got.len(), 5, "{got:?}");
    let head = got
        .iter()
        .find(|r| r["partition"] == 0 && r["offset"] == 0)
        .expect("record 0 of partition 0");
    assert_eq!(head["topic"], "flow");
    assert_eq!(unb64(&head["key"]), "k");
    assert_eq!(unb64(&head["value"]), "first");
    assert_eq!(head["headers"][0]["name"], "trace");
    assert_eq!(unb64(&head["headers"][0]["value"]), "t-1");
    assert!(head["timestamp"].as_i64().unwrap() > 0);
    let mut by_partition: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for r in &got {
        by_partition
            .entry(r["partition"].as_u64().unwrap())
            .or_default()
            .push(unb64(&r["value"]));
    }
    assert_eq!(by_partition[&0], ["first", "a1", "a2"]);
    assert_eq!(by_partition[&1], ["b0", "b1"]);

    // Explicit commit: the offset of the last record consumed.
    c.expect(
        "/offsets",
        json!({"offsets": [{"topic": "flow", "partition": 0, "offset": 1}]}),
        200,
    )
    .await;
    let reply = c
        .http
        .get(c.at("/offsets"))
        .header("content-type", V2)
        .body(json!({"partitions": [{"topic": "flow", "partition": 0}, {"topic": "flow", "partition": 1}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let committed: Value = reply.json().await.unwrap();
    assert_eq!(
        committed["offsets"],
        json!([{"topic": "flow", "partition": 0, "offset": 2, "metadata": ""}])
    );
    // Empty body: commit everything consumed.
    c.commit_all().await;
    let committed: Value = common::get_json(&c.http, c.at("/offsets")).await;
    let offsets: BTreeSet<(u64, u64)> = committed["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["partition"].as_u64().unwrap(),
                o["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets, BTreeSet::from([(0, 3), (1, 2)]));

    // Seek to the beginning of partition 1: it is read again.
    c.expect(
        "/positions/beginning",
        json!({"partitions": [{"topic": "flow", "partition": 1}]}),
        204,
    )
    .await;
    assert_eq!(
        values(&c.poll_until(2, Duration::from_secs(10)).await),
        ["b0", "b1"]
    );
    // Seek to an offset.
    c.expect(
        "/positions",
        json!({"offsets": [{"topic": "flow", "partition": 0, "offset": 2}]}),
        204,
    )
    .await;
    assert_eq!(
        values(&c.poll_until(1, Duration::from_secs(10)).await),
        ["a2"]
    );
    // Seek to the end: nothing until something new arrives.
    c.expect(
        "/positions/end",
        json!({"partitions": [{"topic": "flow", "partition": 0}, {"topic": "flow", "partition": 1}]}),
        204,
    )
    .await;
    c.expect(
        "/positions/beginning",
        json!({"partitions": [{"topic": "other", "partition": 0}]}),
        404,
    )
    .await;
    assert!(c.poll(300).await.is_empty());
    gw.produce_values("flow", 1, &["b2".into()]).await;
    assert_eq!(
        values(&c.poll_until(1, Duration::from_secs(10)).await),
        ["b2"]
    );

    // Delete: the instance is gone.
    c.delete().await;
    let (status, code, message) = error_of(c.poll_raw(0, None).await).await;
    assert_eq!((status, code), (404, 40403), "{message}");
    let (status, code, _) = error_of(c.http.delete(c.at("")).send().await.unwrap()).await;
    assert_eq!((status, code), (404, 40403));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_errors() {
    let gw = TestGateway::start().await;
    let url = &gw.url;
    let http = &gw.client;
    let post = |path: &str, ct: &str, body: &str| {
        http.post(format!("{url}{path}"))
            .header("content-type", ct.to_owned())
            .body(body.to_owned())
            .send()
    };
    let (s, code, m) = error_of(
        post("/consumers/g", V2, r#"{"format":"avro"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, code), (422, 42204), "{m}");
    assert!(m.contains("avro"), "{m}");
    let (s, code, m) = error_of(post("/consumers/g", V2, r#"{"name":"a b"}"#).await.unwrap()).await;
    assert_eq!((s, code), (422, 42204), "{m}");
    let (s, _, m) = error_of(post("/consumers/g", V2, r#"{"name":"#).await.unwrap()).await;
    assert_eq!(s, 400, "{m}");
    let (s, _, m) = error_of(post("/consumers/g", "text/plain", "{}").await.unwrap()).await;
    assert_eq!(s, 415, "{m}");
    let (s, code, m) = error_of(
        post(
            "/consumers/g/instances/nobody/subscription",
            V2,
            r#"{"topics":["t"]}"#,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((s, code), (404, 40403), "{m}");
    let (s, _, m) = error_of(post("/consumers/bad%20group", V2, "{}").await.unwrap()).await;
    assert_eq!(s, 400, "{m}");

    let c = Consumer::create(http, url, "g", "c", json!({})).await;
    let (s, code, _) = error_of(post("/consumers/g", V2, r#"{"name":"c"}"#).await.unwrap()).await;
    assert_eq!((s, code), (409, 40902));
    let (s, _, m) = error_of(
        c.post(
            "/subscription",
            json!({"topics": ["a"], "topic_pattern": "b"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 422, "{m}");
    let (s, _, m) = error_of(c.post("/subscription", json!({"topic_pattern": "("})).await).await;
    assert_eq!(s, 422, "{m}");
    let (s, _, m) = error_of(
        c.post("/subscription", json!({"topics": ["bad name"]}))
            .await,
    )
    .await;
    assert_eq!(s, 422, "{m}");
    let (s, _, m) = error_of(c.post("/positions", json!({"offsets": "x"})).await).await;
    assert_eq!(s, 422, "{m}");
    let (s, code, m) = error_of(
        c.post(
            "/assignments",
            json!({"partitions": [{"topic": "missing", "partition": 0}]}),
        )
        .await,
    )
    .await;
    assert_eq!((s, code), (404, 40401), "{m}");
    gw.create_topic("t", 1).await;
    c.subscribe(&["t"]).await;
    let (s, code, m) = error_of(
        c.post(
            "/assignments",
            json!({"partitions": [{"topic": "t", "partition": 0}]}),
        )
        .await,
    )
    .await;
    assert_eq!((s, code), (409, 40903), "{m}");
    // Accept naming the other format: refused before anything is consumed.
    gw.produce_values("t", 0, &["kept".into()]).await;
    let reply = c
        .http
        .get(c.at("/records?timeout=0"))
        .header("accept", "application/vnd.kafka.json.v2+json")
        .send()
        .await
        .unwrap();
    let (s, code, m) = error_of(reply).await;
    assert_eq!((s, code), (406, 40601), "{m}");
    assert_eq!(
        values(&c.poll_until(1, Duration::from_secs(10)).await),
        ["kept"]
    );
    let reply = c.http.get(c.at("/records?timeout=x")).send().await.unwrap();
    assert_eq!(error_of(reply).await.0, 400);
    // The forwarded routes are on the admin listener only.
    let reply = http
        .get(format!(
            "{url}/internal/v2/consumers/g/instances/c/assignments"
        ))
        .send()
        .await
        .unwrap();
    let (s, _, m) = error_of(reply).await;
    assert!(s == 404 && m.contains("no route"), "{s} {m}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_expire_with_40403() {
    let gw = TestGateway::start_with(|c| c.consumers.instance_timeout_ms = 300).await;
    gw.create_topic("idle", 1).await;
    let c = Consumer::create(&gw.client, &gw.url, "idle-group", "sleepy", json!({})).await;
    c.subscribe(&["idle"]).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (status, code, message) = error_of(c.poll_raw(0, None).await).await;
    assert_eq!((status, code), (404, 40403), "{message}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_when_a_record_arrives() {
    let gw = TestGateway::start().await;
    gw.create_topic("wait", 1).await;
    let c = Consumer::create(&gw.client, &gw.url, "wait-group", "w", json!({})).await;
    c.subscribe(&["wait"]).await;
    let timeout_ms = 20_000;
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let records = c.poll(timeout_ms).await;
        (records, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let produced = Instant::now();
    gw.produce_values("wait", 0, &["hello".into()]).await;
    let (records, returned) = poll.await.unwrap();
    assert_eq!(values(&records), ["hello"]);
    assert!(returned >= produced, "returned before the record existed");
    assert!(
        returned.duration_since(started) < Duration::from_millis(timeout_ms / 2),
        "the poll waited for its timeout instead of returning with the record"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_min_bytes_waits_for_enough_records() {
    let gw = TestGateway::start().await;
    gw.create_topic("min", 1).await;
    gw.produce_values("min", 0, &["a".repeat(100)]).await;
    let c = Consumer::create(
        &gw.client,
        &gw.url,
        "min-group",
        "m",
        json!({"fetch.min.bytes": "250"}),
    )
    .await;
    c.subscribe(&["min"]).await;
    let timeout_ms = 20_000;
    let started = Instant::now();
    let poll = tokio::spawn(async move { c.poll(timeout_ms).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !poll.is_finished(),
        "100 bytes are not enough for fetch.min.bytes 250"
    );
    gw.produce_values("min", 0, &["b".repeat(100), "c".repeat(100)])
        .await;
    let records = poll.await.unwrap();
    assert_eq!(records.len(), 3, "all three records in one answer");
    assert!(started.elapsed() < Duration::from_millis(timeout_ms / 2));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_bounds_an_answer() {
    let gw = TestGateway::start().await;
    gw.create_topic("sized", 1).await;
    let values_in: Vec<String> = (0..10).map(|i| format!("{i:0>100}")).collect();
    gw.produce_values("sized", 0, &values_in).await;
    let c = Consumer::create(&gw.client, &gw.url, "sized-group", "s", json!({})).await;
    c.subscribe(&["sized"]).await;
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let reply = c.poll_raw(2_000, Some(250)).await;
        assert_eq!(reply.status(), 200);
        let batch: Vec<Value> = reply.json().await.unwrap();
        assert!(!batch.is_empty(), "records are there");
        assert!(
            batch.len() <= 2,
            "250 bytes hold at most two 100-byte values: {}",
            batch.len()
        );
        seen.extend(values(&batch));
    }
    assert_eq!(seen, values_in);
    // One record larger than max_bytes still comes (at least one record).
    gw.produce_values("sized", 0, &["x".repeat(500)]).await;
    let reply = c.poll_raw(2_000, Some(10)).await;
    let batch: Vec<Value> = reply.json().await.unwrap();
    assert_eq!(batch.len(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_partitions_and_rebalance_when_one_leaves() {
    let gw = TestGateway::start().await;
    gw.create_topic("split", 4).await;
    let round1 = gw.produce_round("split", 4, 5, "r1").await;
    let a = Consumer::create(&gw.client, &gw.url, "split-group", "a", json!({})).await;
    let b = Consumer::create(&gw.client, &gw.url, "split-group", "b", json!({})).await;
    a.subscribe(&["split"]).await;
    b.subscribe(&["split"]).await;
    let (pa, pb) = (a.assignments().await, b.assignments().await);
    assert_eq!(pa.len(), 2, "{pa:?}");
    assert_eq!(pb.len(), 2, "{pb:?}");
    assert!(pa.is_disjoint(&pb));

    // Each reads its own half; together, everything once.
    let got_a = a.poll_until(10, Duration::from_secs(10)).await;
    let got_b = b.poll_until(10, Duration::from_secs(10)).await;
    for r in &got_a {
        assert!(pa.contains(&("split".into(), r["partition"].as_u64().unwrap())));
    }
    let mut all: Vec<String> = values(&got_a);
    all.extend(values(&got_b));
    all.sort();
    let mut want = round1.clone();
    want.sort();
    assert_eq!(all, want);
    a.commit_all().await;
    b.commit_all().await;

    // b leaves: a takes all four partitions and continues from b's commits.
    b.delete().await;
    assert_eq!(a.assignments().await.len(), 4);
    let round2 = gw.produce_round("split", 4, 3, "r2").await;
    let mut got: Vec<String> = values(&a.poll_until(12, Duration::from_secs(10)).await);
    got.sort();
    let mut want = round2;
    want.sort();
    assert_eq!(got, want, "only the new records, none of b's again");
    assert!(a.poll(300).await.is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reads_topics_homed_on_different_clusters() {
    let gw = TestGateway::start().await;
    // Topics until at least two clusters are homes.
    let mut by_home: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..20 {
        let topic = format!("spread-{i}");
        gw.create_topic(&topic, 1).await;
        let info: Value = common::get_json(&gw.client, format!("{}/topics/{topic}", gw.url)).await;
        by_home
            .entry(info["cluster"].as_str().unwrap().to_owned())
            .or_insert(topic);
        if by_home.len() == 3 {
            break;
        }
    }
    assert!(by_home.len() >= 2, "{by_home:?}");
    let topics: Vec<&str> = by_home.values().map(String::as_str).collect();
    for t in &topics {
        gw.produce_values(t, 0, &[format!("in-{t}")]).await;
    }
    let c = Consumer::create(&gw.client, &gw.url, "spread-group", "c", json!({})).await;
    c.expect("/subscription", json!({"topic_pattern": "spread-.*"}), 204)
        .await;
    let got = c.poll_until(topics.len(), Duration::from_secs(10)).await;
    let got: BTreeSet<String> = values(&got).into_iter().collect();
    let want: BTreeSet<String> = topics.iter().map(|t| format!("in-{t}")).collect();
    assert_eq!(got, want);
    // Commits land on each topic's own cluster and read back.
    c.commit_all().await;
    let committed: Value = common::get_json(&c.http, c.at("/offsets")).await;
    let with_progress = committed["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["offset"] == 1)
        .count();
    assert_eq!(with_progress, topics.len(), "{committed}");
    // A topic created later that matches the pattern joins the assignment.
    gw.create_topic("spread-late", 1).await;
    gw.produce_values("spread-late", 0, &["late".into()]).await;
    let got = c.poll_until(1, Duration::from_secs(10)).await;
    assert_eq!(values(&got), ["late"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_drains_the_old_epoch_across_a_migration() {
    let gw = TestGateway::start().await;
    let topic = "moving-group";
    gw.create_topic(topic, 2).await;
    let round1 = gw.produce_round(topic, 2, 6, "old").await;

    // Read some of the old epoch, commit it, leave.
    let c = Consumer::create(&gw.client, &gw.url, "mover", "first", json!({})).await;
    c.subscribe(&[topic]).await;
    let mut consumed: Vec<Value> = Vec::new();
    while consumed.len() < 4 {
        let reply = c.poll_raw(2_000, Some(30)).await;
        consumed.extend(reply.json::<Vec<Value>>().await.unwrap());
    }
    c.commit_all().await;
    c.delete().await;

    // Move the topic; write more in the new epoch.
    migrate_away(&gw, topic).await;
    let round2 = gw.produce_round(topic, 2, 4, "new").await;

    // A new member continues from the commit: the rest of the old epoch
    // first, then the new one, nothing twice, nothing lost.
    let d = Consumer::create(&gw.client, &gw.url, "mover", "second", json!({})).await;
    d.subscribe(&[topic]).await;
    let want_total = round1.len() + round2.len() - consumed.len();
    let rest = d.poll_until(want_total, Duration::from_secs(15)).await;
    assert!(d.poll(300).await.is_empty(), "nothing beyond");
    let mut per_partition: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for r in consumed.iter().chain(rest.iter()) {
        per_partition
            .entry(r["partition"].as_u64().unwrap())
            .or_default()
            .push(unb64(&r["value"]));
    }
    for p in 0..2u64 {
        let want: Vec<String> = round1
            .iter()
            .chain(round2.iter())
            .filter(|v| v.contains(&format!("-p{p}-")))
            .cloned()
            .collect();
        assert_eq!(
            per_partition[&p], want,
            "partition {p}: old epoch first, no loss, no duplicate"
        );
    }
    // The committed offset after finishing reads back in the new epoch.
    d.commit_all().await;
    let committed: Value = common::get_json(&d.http, d.at("/offsets")).await;
    assert_eq!(
        committed["offsets"].as_array().unwrap().len(),
        2,
        "{committed}"
    );
    gw.stop().await;
}

/// Migrates `topic` from its home to another embedded cluster; returns both.
async fn migrate_away(gw: &TestGateway, topic: &str) -> (String, &'static str) {
    let info: Value = common::get_json(&gw.client, format!("{}/topics/{topic}", gw.url)).await;
    let from = info["cluster"].as_str().unwrap().to_owned();
    let to = ["local-0", "local-1", "local-2"]
        .into_iter()
        .find(|c| *c != from)
        .unwrap();
    common::migrate(&gw.admin_url, topic, to).await;
    (from, to)
}

/// Waits until the group's lag samples are exactly `want` (cluster, records).
async fn lag_becomes(gw: &TestGateway, group: &str, want: &[(&str, f64)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = gw.gateway().telemetry().render_metrics();
        let got: Vec<(&str, Option<f64>)> = want
            .iter()
            .map(|(cluster, _)| {
                (
                    *cluster,
                    common::sample(
                        &text,
                        "sluice_consumer_lag_records",
                        &[("cluster", cluster), ("group", group)],
                    ),
                )
            })
            .collect();
        if got.iter().zip(want).all(|((_, g), (_, w))| *g == Some(*w)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lag of {group}: want {want:?}, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_is_measured_by_cluster_across_a_migration() {
    let gw = TestGateway::start_with(|c| c.consumers.lag_interval_ms = 50).await;
    let topic = "lagging";
    gw.create_topic(topic, 1).await;
    let first: Vec<String> = (0..10).map(|i| format!("old-{i}")).collect();
    gw.produce_values(topic, 0, &first).await;
    let home: Value = common::get_json(&gw.client, format!("{}/topics/{topic}", gw.url)).await;
    let home = home["cluster"].as_str().unwrap().to_owned();

    let c = Consumer::create(&gw.client, &gw.url, "laggers", "only", json!({})).await;
    c.subscribe(&[topic]).await;
    let read = c.poll_until(5, Duration::from_secs(10)).await;
    assert!(read.len() >= 5);
    // Offset 3 consumed: the next to read is 4, six records behind.
    c.expect(
        "/offsets",
        json!({"offsets": [{"topic": topic, "partition": 0, "offset": 3}]}),
        200,
    )
    .await;
    lag_becomes(&gw, "laggers", &[(&home, 6.0)]).await;

    // Moved, with five more in the new epoch: the old epoch's six are
    // still owed on the old cluster, the five on the new one.
    let (from, to) = migrate_away(&gw, topic).await;
    let second: Vec<String> = (0..5).map(|i| format!("new-{i}")).collect();
    gw.produce_values(topic, 0, &second).await;
    lag_becomes(&gw, "laggers", &[(&from, 6.0), (to, 5.0)]).await;

    // Read to the end and committed: nothing owed anywhere.
    let rest = c.poll_until(15 - read.len(), Duration::from_secs(10)).await;
    assert_eq!(read.len() + rest.len(), 15);
    c.commit_all().await;
    lag_becomes(&gw, "laggers", &[(&from, 0.0), (to, 0.0)]).await;

    // The group gone: its lag is 0, not its last value.
    gw.produce_values(topic, 0, &["late-0".into(), "late-1".into()])
        .await;
    lag_becomes(&gw, "laggers", &[(&from, 0.0), (to, 2.0)]).await;

    // While the home does not answer, the lag is unknown: it keeps its
    // last value, not 0.
    let home = gw.gateway().embedded_cluster(to).expect("new home").clone();
    home.set_available(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    lag_becomes(&gw, "laggers", &[(&from, 0.0), (to, 2.0)]).await;
    home.set_available(true);
    c.delete().await;
    lag_becomes(&gw, "laggers", &[(&from, 0.0), (to, 0.0)]).await;
    gw.stop().await;
}

mod behind_a_balancer {
    //! Two `sluice` processes sharing three Kafka-protocol brokers and a
    //! Kafka placement store, with a round-robin TCP proxy in front: every
    //! new connection goes to the other gateway.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::common::process::{toml_path, SluiceProcess};
    use super::*;
    use sluice::rest::consumers::forward::{Owner, Peers};
    use sluice_config::{Config, PeerConfig};
    use sluice_testbed::KafkaTestbed;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn config(
        bed: &KafkaTestbed,
        data_dir: &std::path::Path,
        node: &str,
        admin_port: u16,
        peers: &[(&str, u16)],
    ) -> String {
        let mut text = format!("[gateway]\nnode_id = \"{node}\"\n");
        for (name, port) in peers {
            text.push_str(&format!(
                "[[gateway.peers]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}\"\n"
            ));
        }
        text.push_str(&format!(
            "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\ninsecure = true\n[storage]\ndata_dir = {}\n",
            toml_path(data_dir)
        ));
        text.push_str("[federation]\nhealth_check_interval_ms = 100\n[federation.placement]\nstore = \"kafka\"\ncluster = \"kafka-0\"\n");
        for i in 0..bed.len() {
            text.push_str(&format!(
                "[[clusters]]\nname = \"kafka-{i}\"\nkind = \"kafka\"\n[clusters.kafka]\nbootstrap_servers = \"{}\"\nrequest_timeout_ms = 3000\n",
                bed.bootstrap(i)
            ));
        }
        text
    }

    /// A TCP proxy sending each new connection to the next backend in turn.
    async fn round_robin(backends: Vec<std::net::SocketAddr>) -> (u16, Arc<Vec<AtomicUsize>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let seen = counts.clone();
        tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let i = next % backends.len();
                next += 1;
                seen[i].fetch_add(1, Ordering::Relaxed);
                let backend = backends[i];
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        (port, counts)
    }

    fn public_addr(url: &str) -> std::net::SocketAddr {
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_works_through_a_round_robin_balancer_over_two_gateways() {
        let bed = KafkaTestbed::start(3).await.expect("test bed");
        let (port_a, port_b) = (free_port(), free_port());
        let peers = [("gw-a", port_a), ("gw-b", port_b)];
        let dir_a = tempfile::tempdir().unwrap();
        let dir_b = tempfile::tempdir().unwrap();
        let data_a = dir_a.path().join("data");
        let data_b = dir_b.path().join("data");
        let mut a =
            SluiceProcess::start(dir_a.path(), &config(&bed, &data_a, "gw-a", port_a, &peers));
        let mut b =
            SluiceProcess::start(dir_b.path(), &config(&bed, &data_b, "gw-b", port_b, &peers));
        let (proxy, counts) = round_robin(vec![public_addr(&a.url), public_addr(&b.url)]).await;

        // Trusts both gateways' CAs; a new connection for every request, so
        // consecutive requests alternate gateways.
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30));
        for data in [&data_a, &data_b] {
            let pem = std::fs::read(data.join("tls/ca.pem")).unwrap();
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let http = builder.build().unwrap();
        let url = format!("https://localhost:{proxy}");

        let topic = "balanced";
        let reply = http
            .post(format!("{url}/v3/clusters/sluice/topics"))
            .json(&json!({"topic_name": topic, "partitions_count": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201, "{}", reply.text().await.unwrap());
        // Both gateways know the topic before consumers look for it.
        for gw in [&a.url, &b.url] {
            let direct = SluiceProcess::client(if gw == &a.url { &data_a } else { &data_b });
            let deadline = Instant::now() + Duration::from_secs(10);
            while direct
                .get(format!("{gw}/topics/{topic}"))
                .send()
                .await
                .unwrap()
                .status()
                != 200
            {
                assert!(Instant::now() < deadline, "{gw} never learned {topic}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut produced = Vec::new();
        for p in 0..3u32 {
            let values: Vec<String> = (0..8).map(|i| format!("v-p{p}-{i}")).collect();
            let records: Vec<Value> = values
                .iter()
                .map(|v| json!({"partition": p, "value": b64(v)}))
                .collect();
            let reply = http
                .post(format!("{url}/topics/{topic}?acks=all"))
                .header("content-type", BINARY)
                .body(json!({ "records": records }).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
            produced.extend(values);
        }

        let group = "balanced-group";
        let m1 = Consumer::create(&http, &url, group, "m1", json!({})).await;
        let m2 = Consumer::create(&http, &url, group, "m2", json!({})).await;
        m1.subscribe(&[topic]).await;
        m2.subscribe(&[topic]).await;
        let (p1, p2) = (m1.assignments().await, m2.assignments().await);
        assert!(
            p1.is_disjoint(&p2) && p1.len() + p2.len() == 3,
            "{p1:?} {p2:?}"
        );

        // Both members poll and commit in turn; every request succeeds.
        let mut consumed: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumed.len() < produced.len() {
            assert!(Instant::now() < deadline, "consumed only {consumed:?}");
            for m in [&m1, &m2] {
                let batch = m.poll(300).await;
                consumed.extend(values(&batch));
                m.commit_all().await;
            }
        }
        // m2 leaves; m1 takes its partitions from m2's commits.
        m2.delete().await;
        assert_eq!(m1.assignments().await.len(), 3);
        let reply = http
            .post(format!("{url}/topics/{topic}?acks=all"))
            .header("content-type", BINARY)
            .body(json!({"records": [{"partition": 0, "value": b64("late-0")}, {"partition": 2, "value": b64("late-2")}]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        produced.extend(["late-0".to_owned(), "late-2".to_owned()]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumed.len() < produced.len() {
            assert!(Instant::now() < deadline, "consumed only {consumed:?}");
            consumed.extend(values(&m1.poll(300).await));
            m1.commit_all().await;
        }
        assert!(m1.poll(500).await.is_empty(), "nothing more");
        let mut got = consumed.clone();
        got.sort();
        let mut want = produced.clone();
        want.sort();
        assert_eq!(got, want, "every record exactly once");
        let (to_a, to_b) = (
            counts[0].load(Ordering::Relaxed),
            counts[1].load(Ordering::Relaxed),
        );
        assert!(
            to_a >= 10 && to_b >= 10,
            "requests alternated: {to_a} and {to_b}"
        );

        let mut cfg = Config::default();
        cfg.gateway.node_id = Some("gw-a".into());
        cfg.gateway.peers = peers
            .iter()
            .map(|(n, p)| PeerConfig {
                name: (*n).into(),
                url: format!("http://127.0.0.1:{p}"),
            })
            .collect();
        let owned_by_a = |g: &str| matches!(Peers::new(&cfg).owner(g), Owner::Local);

        // A WebSocket member connected to the gateway that does not own its
        // group reaches the group through forwarding.
        let ws_group = "ws-balanced";
        let (ws_addr, ws_ca) = if owned_by_a(ws_group) {
            (public_addr(&b.url), data_b.join("tls/ca.pem"))
        } else {
            (public_addr(&a.url), data_a.join("tls/ca.pem"))
        };
        let mut ws = super::websocket_groups::Ws::connect_to(ws_addr, &ws_ca).await;
        ws.join(topic, ws_group).await;
        let pushed = ws.until(produced.len(), 3).await;
        let mut pushed = values(&pushed);
        pushed.sort();
        assert_eq!(pushed, want, "the WebSocket member reads every record once");
        ws.commit("w1").await;
        drop(ws);

        // The owner gone: the other gateway answers 503 + Retry-After, never 40403.
        let a_owns = owned_by_a(group);
        let (survivor_url, survivor_data) = if a_owns {
            a.kill_9();
            (b.url.clone(), &data_b)
        } else {
            b.kill_9();
            (a.url.clone(), &data_a)
        };
        let direct = SluiceProcess::client(survivor_data);
        let reply = direct
            .get(format!(
                "{survivor_url}/consumers/{group}/instances/m1/records?timeout=0"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 503);
        assert_eq!(reply.headers()["retry-after"], "1");
        let (_, code, _) = error_of(reply).await;
        assert_eq!(code, 50301);
        drop((a, b));
    }
}

mod websocket_groups {
    //! Group subscriptions over `/v1/ws` with a real TLS WebSocket client.

    use std::sync::Arc;

    use futures_util::{SinkExt, StreamExt};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;
    use tokio_rustls::TlsConnector;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    use super::*;

    const FRAME_WAIT: Duration = Duration::from_secs(15);

    pub(super) struct Ws {
        stream: WebSocketStream<TlsStream<TcpStream>>,
        /// The partitions of the last `assigned` frame.
        pub(super) assigned: BTreeSet<u64>,
    }

    impl Ws {
        async fn connect(gw: &TestGateway) -> Self {
            Self::connect_to(gw.addr, &gw.data_dir.path().join("tls/ca.pem")).await
        }

        /// Connects to the gateway at `addr`, trusting the CA in `ca`.
        pub(super) async fn connect_to(addr: std::net::SocketAddr, ca: &std::path::Path) -> Self {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
                roots.add(cert.expect("CA PEM")).expect("CA certificate");
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let url = format!("wss://localhost:{}/v1/ws", addr.port());
            let (stream, _) = tokio_tungstenite::client_async(url.as_str(), tls)
                .await
                .expect("WebSocket upgrade");
            Self {
                stream,
                assigned: BTreeSet::new(),
            }
        }

        async fn send(&mut self, frame: Value) {
            self.stream
                .send(Message::text(frame.to_string()))
                .await
                .unwrap();
        }

        async fn next(&mut self) -> Value {
            loop {
                let message = tokio::time::timeout(FRAME_WAIT, self.stream.next())
                    .await
                    .expect("a frame in time");
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                        if frame["type"] == "assigned" {
                            self.assigned = frame["partitions"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|p| p["partition"].as_u64().unwrap())
                                .collect();
                        }
                        return frame;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a text frame, got {other:?}"),
                }
            }
        }

        /// Reads frames until `records` records came and the assignment
        /// holds `partitions` partitions; returns the records.
        pub(super) async fn until(&mut self, records: usize, partitions: usize) -> Vec<Value> {
            let mut out = Vec::new();
            while out.len() < records || self.assigned.len() != partitions {
                let frame = self.next().await;
                match frame["type"].as_str() {
                    Some("record") => out.push(frame),
                    Some("assigned" | "subscribed") => {}
                    _ => panic!("unexpected frame {frame}"),
                }
            }
            out
        }

        pub(super) async fn join(&mut self, topic: &str, group: &str) {
            self.send(json!({"type": "subscribe", "id": "s", "topic": topic, "group": group, "credit": 1000}))
                .await;
        }

        pub(super) async fn commit(&mut self, id: &str) {
            self.send(json!({"type": "commit", "sub": "s", "id": id}))
                .await;
            loop {
                let frame = self.next().await;
                match frame["type"].as_str() {
                    Some("committed") => {
                        assert_eq!(frame["id"], id);
                        return;
                    }
                    Some("assigned") => {}
                    _ => panic!("unexpected frame {frame}"),
                }
            }
        }
    }

    pub(super) fn partitions_of(records: &[Value]) -> BTreeSet<u64> {
        records
            .iter()
            .map(|r| r["partition"].as_u64().unwrap())
            .collect()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_websocket_members_split_partitions_and_rebalance() {
        let gw = TestGateway::start().await;
        let topic = "ws-split";
        gw.create_topic(topic, 4).await;
        let round1 = gw.produce_round(topic, 4, 3, "r1").await;

        let mut a = Ws::connect(&gw).await;
        a.join(topic, "ws-group").await;
        let got = a.until(12, 4).await;
        assert_eq!(sorted(values(&got)), sorted(round1));
        assert_eq!(got[0]["group"], "ws-group");
        a.commit("c1").await;

        // b joins: each holds two partitions.
        let mut b = Ws::connect(&gw).await;
        b.join(topic, "ws-group").await;
        b.until(0, 2).await;
        a.until(0, 2).await;
        assert!(a.assigned.is_disjoint(&b.assigned));

        let round2 = gw.produce_round(topic, 4, 2, "r2").await;
        let got_a = a.until(4, 2).await;
        let got_b = b.until(4, 2).await;
        assert!(partitions_of(&got_a).is_subset(&a.assigned));
        assert!(partitions_of(&got_b).is_subset(&b.assigned));
        let mut both = values(&got_a);
        both.extend(values(&got_b));
        assert_eq!(sorted(both), sorted(round2));
        a.commit("c2").await;
        b.commit("c3").await;

        // b leaves: a takes every partition, continuing from b's commit.
        b.stream.close(None).await.unwrap();
        drop(b);
        a.until(0, 4).await;
        let round3 = gw.produce_round(topic, 4, 2, "r3").await;
        let got = a.until(8, 4).await;
        assert_eq!(sorted(values(&got)), sorted(round3), "nothing of b's again");

        // Commit frames for a subscription without a group are refused.
        a.send(json!({"type": "commit", "sub": "nope"})).await;
        let frame = a.next().await;
        assert_eq!(frame["type"], "error", "{frame}");
        gw.stop().await;
    }
}
