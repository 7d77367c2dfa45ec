//! Federation through real gateways (TLS listener, embedded clusters): what
//! users of placement rely on. Topics move under live traffic without losing,
//! duplicating or reordering a record; a down home answers by policy (fast
//! 503, or failover to a new epoch); placement and cursors survive restarts;
//! a new cluster takes its share through a rebalance; bad cursors are 400s;
//! pins place topics.
//!
//! Every wait is bounded in time and in turns; nothing asserts speed.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::TestGateway;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_broker::Cluster as _;
use sluice_config::{ClusterConfig, Config, DownPolicy, PinConfig, TopicPolicyConfig};
use sluice_federation::ring::TopicRing;

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const CURSOR_HEADER: &str = "sluice-next-cursor";
const CLUSTERS: [&str; 3] = ["local-0", "local-1", "local-2"];

/// The longest any wait may take: generous, because two cores are shared
/// by every test and build. Reaching it fails the test; it is a hang guard,
/// not a speed requirement.
const WAIT: Duration = Duration::from_secs(60);
/// Bound on an answer that must not wait for anything (a reject's 503).
/// Far above what it takes; only a request that waits for the down
/// cluster would reach it.
const NOT_A_HANG: Duration = Duration::from_secs(10);
/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(20);
/// Most polls of one condition (with `WAIT`, bounds every loop).
const MAX_POLLS: usize = 5_000;

/// Test defaults for every gateway here: health probed every 100 ms.
fn fast_probe(config: &mut Config) {
    config.federation.health_check_interval_ms = 100;
}

// ------------------------------------------------------------------ client

/// What the tests and their tasks need to talk to one gateway.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    url: String,
    admin_url: String,
}

impl Api {
    fn of(gw: &TestGateway) -> Self {
        Self {
            client: gw.client.clone(),
            url: gw.url.clone(),
            admin_url: gw.admin_url.clone(),
        }
    }
}

/// An answer, read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    async fn of(response: reqwest::Response) -> Self {
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.expect("body"),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.status, self.text))
    }

    /// Asserts the status; returns the body as JSON.
    fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        self.json()
    }

    /// Asserts Confluent's error shape; returns the message.
    fn error(&self, status: u16, code: u32) -> String {
        let body = self.json();
        assert_eq!(self.status.as_u16(), status, "{body}");
        assert_eq!(body["error_code"], json!(code), "{body}");
        body["message"].as_str().expect("message").to_owned()
    }

    /// Asserts the fast "retry later" answer: 503, code 50301, Retry-After.
    fn assert_unavailable(&self) {
        self.error(503, 50301);
        let retry_after = self
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            retry_after.is_some_and(|s| s >= 1),
            "Retry-After missing: {:?}",
            self.headers
        );
    }
}

/// Runs one request under the hang guard: a request that does not answer
/// within [`WAIT`] fails the test instead of hanging it.
async fn bounded<T>(what: &str, request: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

async fn admin_get(api: &Api, path: &str) -> Reply {
    let request = api.client.get(format!("{}{path}", api.admin_url)).send();
    Reply::of(bounded(path, request).await.expect("admin answers")).await
}

async fn admin_post(api: &Api, path: &str, body: Option<Value>) -> Reply {
    let mut request = api.client.post(format!("{}{path}", api.admin_url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    Reply::of(bounded(path, request.send()).await.expect("admin answers")).await
}

async fn get(api: &Api, path: &str) -> Reply {
    let request = api.client.get(format!("{}{path}", api.url)).send();
    Reply::of(bounded(path, request).await.expect("gateway answers")).await
}

/// Produces `(partition, value)` records in one request with `acks=all`.
async fn produce_raw(api: &Api, topic: &str, records: &[(u32, &str)]) -> Reply {
    let records: Vec<Value> = records
        .iter()
        .map(|(p, v)| json!({"partition": p, "value": BASE64.encode(v)}))
        .collect();
    let request = api
        .client
        .post(format!("{}/topics/{topic}?acks=all", api.url))
        .header("content-type", BINARY)
        .body(json!({ "records": records }).to_string())
        .send();
    Reply::of(bounded("produce", request).await.expect("gateway answers")).await
}

/// Produces and asserts success; returns each record's `(partition, offset)`.
async fn produce(api: &Api, topic: &str, records: &[(u32, &str)]) -> Vec<(u32, u64)> {
    let reply = produce_raw(api, topic, records).await;
    acked_offsets(&reply.ok(200), records.len())
}

fn acked_offsets(body: &Value, n: usize) -> Vec<(u32, u64)> {
    let offsets = body["offsets"].as_array().expect("offsets");
    assert_eq!(offsets.len(), n, "{body}");
    offsets
        .iter()
        .map(|o| {
            assert!(o["error"].is_null(), "{body}");
            (
                o["partition"].as_u64().expect("partition") as u32,
                o["offset"].as_u64().expect("offset"),
            )
        })
        .collect()
}

/// One record as a read hands it out.
#[derive(Debug, Clone)]
struct ReadRecord {
    value: String,
    partition: u32,
    offset: u64,
    cursor: String,
}

/// A page of a cursor read: its records and the cursor to resume after it.
struct Page {
    records: Vec<ReadRecord>,
    next_cursor: String,
}

async fn read_raw(
    api: &Api,
    topic: &str,
    partition: u32,
    query: &[(&str, &str)],
    max_bytes: Option<usize>,
) -> Reply {
    let mut request = api
        .client
        .get(format!(
            "{}/topics/{topic}/partitions/{partition}/records",
            api.url
        ))
        .header("accept", BINARY)
        .query(query);
    if let Some(max) = max_bytes {
        request = request.query(&[("max_bytes", max)]);
    }
    Reply::of(
        bounded("read", request.send())
            .await
            .expect("gateway answers"),
    )
    .await
}

/// Parses a successful read and checks what every page promises: records
/// of the partition asked for, each with its own cursor, and a next-cursor
/// header equal to the last record's cursor.
fn page(reply: &Reply, partition: u32) -> Page {
    let body = reply.ok(200);
    let next_cursor = reply
        .headers
        .get(CURSOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {CURSOR_HEADER} header: {:?}", reply.headers))
        .to_owned();
    let records: Vec<ReadRecord> = body
        .as_array()
        .expect("an array of records")
        .iter()
        .map(|r| {
            let value = BASE64
                .decode(r["value"].as_str().expect("value"))
                .expect("base64 value");
            ReadRecord {
                value: String::from_utf8(value).expect("UTF-8 value"),
                partition: r["partition"].as_u64().expect("partition") as u32,
                offset: r["offset"].as_u64().expect("offset"),
                cursor: r["cursor"].as_str().expect("cursor").to_owned(),
            }
        })
        .collect();
    for r in &records {
        assert_eq!(r.partition, partition, "{body}");
    }
    if let Some(last) = records.last() {
        assert_eq!(
            last.cursor, next_cursor,
            "the header resumes after the last record"
        );
    }
    Page {
        records,
        next_cursor,
    }
}

/// One cursor read (no cursor: from the start).
async fn read_page(
    api: &Api,
    topic: &str,
    partition: u32,
    cursor: Option<&str>,
    max_bytes: Option<usize>,
) -> Page {
    let query: Vec<(&str, &str)> = cursor.map(|c| ("cursor", c)).into_iter().collect();
    page(
        &read_raw(api, topic, partition, &query, max_bytes).await,
        partition,
    )
}

/// Reads with a cursor until a page comes back empty; returns the records
/// and the cursor to continue from.
async fn read_to_end(
    api: &Api,
    topic: &str,
    partition: u32,
    cursor: Option<&str>,
) -> (Vec<ReadRecord>, String) {
    let mut cursor = cursor.map(str::to_owned);
    let mut records = Vec::new();
    for _ in 0..MAX_POLLS {
        let page = read_page(api, topic, partition, cursor.as_deref(), Some(4096)).await;
        cursor = Some(page.next_cursor);
        if page.records.is_empty() {
            return (records, cursor.unwrap_or_default());
        }
        records.extend(page.records);
    }
    panic!("{topic}/{partition}: still reading after {MAX_POLLS} pages");
}

fn values(records: &[ReadRecord]) -> Vec<String> {
    records.iter().map(|r| r.value.clone()).collect()
}

/// Reads a few records from the start (one per page), leaving the rest;
/// returns them and the cursor after them.
async fn read_some(api: &Api, topic: &str, partition: u32, n: usize) -> (Vec<String>, String) {
    let mut cursor: Option<String> = None;
    let mut got = Vec::new();
    for _ in 0..MAX_POLLS {
        if got.len() >= n {
            break;
        }
        // max_bytes=1 still hands out one stored batch: one record each
        // here, since every record was produced in a request of its own.
        let page = read_page(api, topic, partition, cursor.as_deref(), Some(1)).await;
        assert!(!page.records.is_empty(), "{topic}/{partition} ran out");
        got.extend(values(&page.records));
        cursor = Some(page.next_cursor);
    }
    assert_eq!(got.len(), n, "one record per page");
    (got, cursor.expect("read at least once"))
}

/// Polls `check` until it returns `Some`, within [`WAIT`] and [`MAX_POLLS`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    for _ in 0..MAX_POLLS {
        if let Some(done) = check().await {
            return done;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
    panic!("gave up waiting for {what} after {MAX_POLLS} polls");
}

// ------------------------------------------------------------------ admin

async fn placement(api: &Api, topic: &str) -> Value {
    admin_get(api, &format!("/admin/topics/{topic}/placement"))
        .await
        .ok(200)
}

/// The topic's home as the public API shows it.
async fn home_of(api: &Api, topic: &str) -> String {
    get(api, &format!("/topics/{topic}")).await.ok(200)["cluster"]
        .as_str()
        .expect("cluster")
        .to_owned()
}

/// A cluster's entry in `GET /admin/clusters`.
async fn cluster_entry(api: &Api, name: &str) -> Value {
    let body = admin_get(api, "/admin/clusters").await.ok(200);
    body["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name}: {body}"))
        .clone()
}

async fn wait_cluster_status(api: &Api, name: &str, status: &str) {
    wait_for(&format!("cluster {name} {status}"), || async {
        (cluster_entry(api, name).await["status"] == status).then_some(())
    })
    .await;
}

/// Polls `GET /admin/rebalance` until it leaves `running`; returns it.
async fn wait_rebalance_finished(api: &Api) -> Value {
    wait_for("the rebalance to finish", || async {
        let status = admin_get(api, "/admin/rebalance").await.ok(200);
        (status["state"] != "running").then_some(status)
    })
    .await
}

fn epochs(placement: &Value) -> &Vec<Value> {
    placement["epochs"].as_array().expect("epochs")
}

fn offsets_of(epoch: &Value, field: &str) -> Vec<u64> {
    epoch[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {epoch}"))
        .iter()
        .map(|o| o.as_u64().expect("offset"))
        .collect()
}

/// A cluster other than `home`.
fn other_than(home: &str) -> &'static str {
    CLUSTERS
        .iter()
        .find(|c| **c != home)
        .expect("another cluster")
}

/// A topic name starting with `prefix` whose ring owner is (or is not) `cluster`.
fn name_owned(prefix: &str, cluster: &str, owned: bool) -> String {
    let ring = TopicRing::new(CLUSTERS.iter().map(|c| (*c, 100))).expect("ring");
    (0..1_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|t| (ring.owner(t) == Some(cluster)) == owned)
        .expect("a name with that owner")
}

// ------------------------------------------------------------------ 1. migration under live traffic

#[derive(Clone, Copy, Debug)]
enum Move {
    /// `POST /admin/topics/{t}/migrate`.
    Migrate,
    /// `POST /admin/clusters/{home}/drain`, then poll the rebalance.
    Drain,
}

const PRODUCERS: usize = 3;
const PARTITIONS: u32 = 3;
/// Records acknowledged before the move, and again after it.
const RECORDS_PER_PHASE: usize = 90;
/// Upper bound on requests per producer, whatever happens.
const MAX_REQUESTS_PER_PRODUCER: usize = 2_000;

/// A record the gateway acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    partition: u32,
    offset: u64,
    value: String,
}

#[derive(Default)]
struct Traffic {
    /// Per producer, its acknowledged records in the order they were acked.
    acked: Mutex<Vec<Vec<Acked>>>,
    acked_count: AtomicUsize,
    /// Every value ever sent, acknowledged or not.
    sent: Mutex<BTreeSet<String>>,
    /// Failed produces and reads; a move must cause none.
    failures: Mutex<Vec<String>>,
    stop_producing: AtomicBool,
    /// Set with `targets` once producing stopped: readers read until they hold that many.
    producers_done: AtomicBool,
    targets: Mutex<Vec<usize>>,
}

impl Traffic {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// Producer `k`: requests of two records to two partitions, each awaited
/// before the next, so ack order is send order.
async fn producer(api: Api, topic: &'static str, k: usize, traffic: Arc<Traffic>) {
    for i in 0..MAX_REQUESTS_PER_PRODUCER {
        if traffic.stop_producing.load(Ordering::Acquire) {
            return;
        }
        let batch: Vec<(u32, String)> = (0..2)
            .map(|j| {
                let n = 2 * i + j;
                (((n + k) % PARTITIONS as usize) as u32, format!("p{k}-{n}"))
            })
            .collect();
        traffic
            .sent
            .lock()
            .unwrap()
            .extend(batch.iter().map(|(_, v)| v.clone()));
        let borrowed: Vec<(u32, &str)> = batch.iter().map(|(p, v)| (*p, v.as_str())).collect();
        let reply = produce_raw(&api, topic, &borrowed).await;
        if reply.status != StatusCode::OK {
            traffic.fail(format!(
                "producer {k} request {i}: {} {}",
                reply.status, reply.text
            ));
            tokio::time::sleep(POLL).await;
            continue;
        }
        let offsets = acked_offsets(&reply.json(), batch.len());
        let mut acked = traffic.acked.lock().unwrap();
        for ((partition, value), (got_partition, offset)) in batch.into_iter().zip(offsets) {
            assert_eq!(partition, got_partition, "the partition asked for");
            acked[k].push(Acked {
                partition,
                offset,
                value,
            });
        }
        drop(acked);
        traffic.acked_count.fetch_add(2, Ordering::AcqRel);
    }
}

/// A reader of one partition: starts with no cursor, then always resumes
/// with the cursor it was handed. Small pages, so it crosses the move
/// mid-stream.
async fn reader(
    api: Api,
    topic: &'static str,
    partition: u32,
    traffic: Arc<Traffic>,
) -> Vec<ReadRecord> {
    let mut cursor: Option<String> = None;
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    for _ in 0..20 * MAX_POLLS {
        if Instant::now() >= deadline {
            traffic.fail(format!("reader {partition}: timed out"));
            break;
        }
        let query: Vec<(&str, &str)> = cursor
            .as_deref()
            .map(|c| ("cursor", c))
            .into_iter()
            .collect();
        let reply = read_raw(&api, topic, partition, &query, Some(256)).await;
        if reply.status != StatusCode::OK {
            traffic.fail(format!(
                "reader {partition}: {} {}",
                reply.status, reply.text
            ));
            tokio::time::sleep(POLL).await;
            continue;
        }
        let page = page(&reply, partition);
        cursor = Some(page.next_cursor);
        if !page.records.is_empty() {
            got.extend(page.records);
            continue;
        }
        if traffic.producers_done.load(Ordering::Acquire)
            && got.len() >= traffic.targets.lock().unwrap()[partition as usize]
        {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    got
}

async fn wait_acked(traffic: &Traffic, at_least: usize) {
    wait_for(&format!("{at_least} acked records"), || async {
        (traffic.acked_count.load(Ordering::Acquire) >= at_least).then_some(())
    })
    .await;
}

/// Moves a topic while producers and cursor readers run, then checks that
/// readers got every acknowledged record exactly once, in order, and that
/// placement and the old cluster tell the same story.
async fn live_traffic_across_a_move(how: Move) {
    let topic: &'static str = "live";
    let gw = TestGateway::start_with(fast_probe).await;
    let api = Api::of(&gw);
    let traffic = Arc::new(Traffic::default());
    traffic.acked.lock().unwrap().resize(PRODUCERS, Vec::new());

    // Created by its first produce (3 partitions by default), so readers
    // find it; these records count like any producer's.
    let seed: Vec<(u32, String)> = (0..PARTITIONS).map(|p| (p, format!("seed-{p}"))).collect();
    let borrowed: Vec<(u32, &str)> = seed.iter().map(|(p, v)| (*p, v.as_str())).collect();
    let seed_offsets = produce(&api, topic, &borrowed).await;
    traffic
        .sent
        .lock()
        .unwrap()
        .extend(seed.iter().map(|(_, v)| v.clone()));
    let seed: Vec<Acked> = seed
        .into_iter()
        .zip(seed_offsets)
        .map(|((partition, value), (_, offset))| Acked {
            partition,
            offset,
            value,
        })
        .collect();
    let home = home_of(&api, topic).await;
    assert_eq!(
        get(&api, "/topics/live/partitions")
            .await
            .ok(200)
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    let readers: Vec<_> = (0..PARTITIONS)
        .map(|p| tokio::spawn(reader(api.clone(), topic, p, traffic.clone())))
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|k| tokio::spawn(producer(api.clone(), topic, k, traffic.clone())))
        .collect();

    wait_acked(&traffic, RECORDS_PER_PHASE).await;
    // Cursors parked early in epoch 1, to resume only after the move: they
    // cross it from the middle of the sealed epoch, whatever the timing.
    let mut parked = Vec::new();
    for p in 0..PARTITIONS {
        let first = read_page(&api, topic, p, None, Some(1)).await;
        assert!(!first.records.is_empty());
        parked.push((first.records.len(), first.next_cursor));
    }
    let new_home = match how {
        Move::Migrate => {
            let to = other_than(&home);
            let reply = admin_post(
                &api,
                &format!("/admin/topics/{topic}/migrate"),
                Some(json!({ "to": to })),
            )
            .await;
            let body = reply.ok(200);
            assert_eq!(body["home"], to, "{body}");
            to.to_owned()
        }
        Move::Drain => {
            let reply = admin_post(&api, &format!("/admin/clusters/{home}/drain"), None).await;
            let body = reply.ok(202);
            let moves = body["moves"].as_array().expect("moves");
            let ours = moves
                .iter()
                .find(|m| m["topic"] == topic)
                .unwrap_or_else(|| panic!("the drain moves {topic}: {body}"));
            assert_eq!(ours["from"], home.as_str(), "{body}");
            assert!(moves.iter().all(|m| m["from"] == home.as_str()), "{body}");
            let to = ours["to"].as_str().expect("to").to_owned();
            assert_ne!(to, home);
            let status = wait_rebalance_finished(&api).await;
            assert_eq!(status["state"], "done", "{status}");
            assert_eq!(status["completed"], json!(moves.len()), "{status}");
            assert_eq!(status["failed"], json!([]), "{status}");
            assert_eq!(cluster_entry(&api, &home).await["state"], "draining");
            to
        }
    };
    let at_move = traffic.acked_count.load(Ordering::Acquire);
    wait_acked(&traffic, at_move + RECORDS_PER_PHASE).await;
    traffic.stop_producing.store(true, Ordering::Release);
    for p in producers {
        bounded("a producer to stop", p)
            .await
            .expect("producer task");
    }

    // Every acknowledged record, per producer in ack order.
    let mut acked = traffic.acked.lock().unwrap().clone();
    acked.push(seed);
    let mut targets = vec![0; PARTITIONS as usize];
    for a in acked.iter().flatten() {
        targets[a.partition as usize] += 1;
    }
    *traffic.targets.lock().unwrap() = targets.clone();
    traffic.producers_done.store(true, Ordering::Release);
    let mut read = Vec::new();
    for r in readers {
        read.push(
            bounded("a reader to catch up", r)
                .await
                .expect("reader task"),
        );
    }
    let failures = traffic.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{how:?} caused failures: {failures:#?}"
    );

    let sent = traffic.sent.lock().unwrap().clone();
    let by_value: HashMap<&str, &Acked> = acked
        .iter()
        .flatten()
        .map(|a| (a.value.as_str(), a))
        .collect();
    assert_eq!(by_value.len(), acked.iter().map(Vec::len).sum::<usize>());
    let producer_of: HashMap<&str, usize> = acked
        .iter()
        .enumerate()
        .flat_map(|(k, list)| list.iter().map(move |a| (a.value.as_str(), k)))
        .collect();
    for (p, records) in read.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for r in records {
            assert!(
                sent.contains(&r.value),
                "partition {p}: {:?} was never sent",
                r.value
            );
            assert!(
                seen.insert(r.value.as_str()),
                "partition {p}: {:?} read twice",
                r.value
            );
            if let Some(a) = by_value.get(r.value.as_str()) {
                assert_eq!(
                    (a.partition, a.offset),
                    (r.partition, r.offset),
                    "{:?} is read where its ack said",
                    r.value
                );
            }
        }
        // Per partition and producer, reads follow ack order exactly.
        let mut got: Vec<Vec<&str>> = vec![Vec::new(); acked.len()];
        for r in records {
            if let Some(&k) = producer_of.get(r.value.as_str()) {
                got[k].push(r.value.as_str());
            }
        }
        for (k, producer) in acked.iter().enumerate() {
            let want: Vec<&str> = producer
                .iter()
                .filter(|a| a.partition == p as u32)
                .map(|a| a.value.as_str())
                .collect();
            assert_eq!(
                got[k], want,
                "partition {p}, producer {k}: every acked record once, in ack order"
            );
        }
        assert_eq!(
            records.len(),
            targets[p],
            "partition {p}: nothing but acked records"
        );
    }

    // Placement: epoch 1 sealed on the old home, epoch 2 active on the new.
    let placed = placement(&api, topic).await;
    let list = epochs(&placed);
    assert_eq!(list.len(), 2, "{placed}");
    let (first, second) = (&list[0], &list[1]);
    assert_eq!(
        (
            &first["epoch"],
            &first["cluster"],
            &first["state"],
            &first["reason"]
        ),
        (&json!(1), &json!(home), &json!("sealed"), &json!("created")),
        "{placed}"
    );
    assert_eq!(
        (
            &second["epoch"],
            &second["cluster"],
            &second["state"],
            &second["reason"]
        ),
        (
            &json!(2),
            &json!(new_home),
            &json!("active"),
            &json!("migration")
        ),
        "{placed}"
    );
    assert!(second["end_offsets"].is_null(), "{placed}");
    assert_eq!(placed["home"], new_home.as_str());
    assert_eq!(home_of(&api, topic).await, new_home);
    let ends = offsets_of(first, "end_offsets");
    let starts = offsets_of(second, "start_offsets");
    assert_eq!(ends.len(), PARTITIONS as usize);

    // The epochs hold exactly the acknowledged records between them, and
    // epoch 1 still lies whole on the old cluster.
    let old = gw.gateway().embedded_cluster(&home).expect("old cluster");
    let mut in_epochs = 0;
    for p in 0..PARTITIONS {
        let there = old
            .offsets(topic, p)
            .await
            .expect("old cluster holds epoch 1");
        assert_eq!((there.earliest, there.latest), (0, ends[p as usize]));
        let current = get(&api, &format!("/topics/{topic}/partitions/{p}/offsets"))
            .await
            .ok(200);
        let end = current["end_offset"].as_u64().expect("end_offset");
        in_epochs += ends[p as usize] + (end - starts[p as usize]);
        assert!(
            end > starts[p as usize],
            "partition {p} was written after the move"
        );
    }
    assert_eq!(in_epochs as usize, targets.iter().sum::<usize>());

    // Readers went through epoch 1 to its end on the old cluster, then
    // epoch 2 from its start on the new one: offsets say which.
    for p in 0..PARTITIONS as usize {
        let offsets: Vec<u64> = read[p].iter().map(|r| r.offset).collect();
        let want: Vec<u64> = (0..ends[p])
            .chain(starts[p]..starts[p] + (read[p].len() as u64 - ends[p]))
            .collect();
        assert_eq!(offsets, want, "partition {p}: epoch 1 whole, then epoch 2");
    }

    for (p, (skip, cursor)) in parked.iter().enumerate() {
        let (rest, _) = read_to_end(&api, topic, p as u32, Some(cursor)).await;
        assert_eq!(
            values(&rest),
            values(&read[p][*skip..]),
            "partition {p}: a cursor parked in epoch 1 resumes after the move"
        );
    }

    // A new reader from the start gets it all again, in the same order.
    for p in 0..PARTITIONS {
        let (again, _) = read_to_end(&api, topic, p, None).await;
        assert_eq!(
            values(&again),
            values(&read[p as usize]),
            "partition {p} from the start"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_under_live_traffic_loses_nothing() {
    live_traffic_across_a_move(Move::Migrate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_live_traffic_loses_nothing() {
    live_traffic_across_a_move(Move::Drain).await;
}

// ------------------------------------------------------------------ 2. failover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_answers_503_fast_and_recovers_by_itself() {
    let gw = TestGateway::start_with(fast_probe).await;
    let api = Api::of(&gw);
    let topic = "held";
    produce(&api, topic, &[(0, "before")]).await;
    let home = home_of(&api, topic).await;
    let elsewhere = name_owned("elsewhere-", &home, false);
    produce(&api, &elsewhere, &[(0, "e-0")]).await;
    assert_ne!(home_of(&api, &elsewhere).await, home);

    let switch = gw.gateway().embedded_cluster(&home).expect("home").clone();
    switch.set_available(false);
    // The first produce finds the home down by its error, the second by
    // its recorded health: both are a fast 503, and neither is written.
    for value in ["refused-1", "refused-2"] {
        // A hang guard far below the client's timeout: reject never waits
        // for the home to come back.
        tokio::time::timeout(NOT_A_HANG, produce_raw(&api, topic, &[(0, value)]))
            .await
            .expect("the 503 comes without waiting for the home")
            .assert_unavailable();
    }
    read_raw(&api, topic, 0, &[], None)
        .await
        .assert_unavailable();
    assert_eq!(cluster_entry(&api, &home).await["status"], "down");
    // Topics homed elsewhere do not notice.
    produce(&api, &elsewhere, &[(0, "e-1")]).await;
    let (got, _) = read_to_end(&api, &elsewhere, 0, None).await;
    assert_eq!(values(&got), ["e-0", "e-1"]);
    // Reject never moves the topic.
    assert_eq!(epochs(&placement(&api, topic).await).len(), 1);

    switch.set_available(true);
    // No manual step: the probe sees the home back and produce works.
    let mut attempt = 0;
    let accepted = wait_for("produce to work again", || {
        attempt += 1;
        let value = format!("after-{attempt}");
        let api = api.clone();
        async move {
            let reply = produce_raw(&api, topic, &[(0, &value)]).await;
            match reply.status.as_u16() {
                200 => Some(value),
                503 => None,
                _ => panic!("{}: {}", reply.status, reply.text),
            }
        }
    })
    .await;
    wait_cluster_status(&api, &home, "up").await;
    let (got, _) = read_to_end(&api, topic, 0, None).await;
    assert_eq!(
        values(&got),
        ["before".to_owned(), accepted],
        "refused records were not written"
    );
    let placed = placement(&api, topic).await;
    assert_eq!(epochs(&placed).len(), 1, "{placed}");
    assert_eq!(placed["home"], home.as_str());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_policy_opens_a_new_epoch_and_readers_finish_the_old_one() {
    let gw = TestGateway::start_with(|c| {
        fast_probe(c);
        c.federation.topic_policies.push(TopicPolicyConfig {
            topic: None,
            prefix: Some("fo.".into()),
            on_cluster_down: DownPolicy::Failover,
        });
    })
    .await;
    let api = Api::of(&gw);
    let topic = "fo.orders";
    let first: Vec<String> = (0..10).map(|i| format!("e1-{i}")).collect();
    for v in &first {
        produce(&api, topic, &[(0, v)]).await;
    }
    for i in 0..4 {
        produce(&api, topic, &[(1, &format!("p1-{i}"))]).await;
    }
    let home = home_of(&api, topic).await;
    // Same home, default policy (reject): the policy is per topic.
    let strict = name_owned("strict-", &home, true);
    produce(&api, &strict, &[(0, "s-0")]).await;
    assert_eq!(home_of(&api, &strict).await, home);

    // A reader that has read part of epoch 1.
    let (head, cursor) = read_some(&api, topic, 0, 3).await;
    assert_eq!(head, first[..3]);

    let switch = gw.gateway().embedded_cluster(&home).expect("home").clone();
    switch.set_available(false);
    wait_cluster_status(&api, &home, "down").await;

    let second: Vec<String> = (0..5).map(|i| format!("e2-{i}")).collect();
    for v in &second {
        produce(&api, topic, &[(0, v)]).await;
    }
    produce_raw(&api, &strict, &[(0, "s-1")])
        .await
        .assert_unavailable();

    let placed = placement(&api, topic).await;
    let list = epochs(&placed);
    assert_eq!(list.len(), 2, "{placed}");
    assert_eq!(list[0]["cluster"], home.as_str());
    assert_eq!(list[0]["state"], "sealed");
    assert_eq!(
        offsets_of(&list[0], "end_offsets"),
        [10, 4, 0],
        "sealed where the acks ended"
    );
    assert_eq!(list[1]["reason"], "failover", "{placed}");
    assert_eq!(list[1]["state"], "active", "{placed}");
    let new_home = list[1]["cluster"].as_str().expect("cluster").to_owned();
    assert_ne!(new_home, home);
    assert_eq!(home_of(&api, topic).await, new_home);

    // The rest of epoch 1 is on the down cluster: retry later.
    read_raw(&api, topic, 0, &[("cursor", &cursor)], None)
        .await
        .assert_unavailable();

    switch.set_available(true);
    wait_cluster_status(&api, &home, "up").await;
    let ready = admin_get(&api, "/readyz").await.ok(200);
    let listed = ready["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == home.as_str())
        .cloned();
    assert_eq!(
        listed.map(|c| c["status"].clone()),
        Some(json!("up")),
        "{ready}"
    );

    // The reader finishes epoch 1, then reads epoch 2.
    let (rest, _) = read_to_end(&api, topic, 0, Some(&cursor)).await;
    let want: Vec<String> = first[3..].iter().chain(&second).cloned().collect();
    assert_eq!(values(&rest), want);
    let (all, _) = read_to_end(&api, topic, 1, None).await;
    assert_eq!(values(&all), ["p1-0", "p1-1", "p1-2", "p1-3"]);

    // The topic stays where it failed over to; a rebalance would bring it back.
    produce(&api, topic, &[(0, "e2-5")]).await;
    assert_eq!(home_of(&api, topic).await, new_home);
    let plan = admin_post(&api, "/admin/rebalance/plan", None)
        .await
        .ok(200);
    assert!(
        plan["moves"]
            .as_array()
            .expect("moves")
            .iter()
            .any(|m| m["topic"] == topic
                && m["from"] == new_home.as_str()
                && m["to"] == home.as_str()),
        "{plan}"
    );

    // Restoring it is a migration back: epoch 3 on the old home, and a
    // reader from the start still gets every record, in order.
    admin_post(&api, "/admin/rebalance/apply", None)
        .await
        .ok(202);
    let status = wait_rebalance_finished(&api).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(home_of(&api, topic).await, home);
    produce(&api, topic, &[(0, "e3-0")]).await;
    let placed = placement(&api, topic).await;
    let list = epochs(&placed);
    assert_eq!(list.len(), 3, "{placed}");
    assert_eq!(
        (&list[2]["cluster"], &list[2]["reason"]),
        (&json!(home), &json!("migration")),
        "{placed}"
    );
    assert_eq!(
        offsets_of(&list[2], "start_offsets"),
        [10, 4, 0],
        "{placed}"
    );
    let (all, _) = read_to_end(&api, topic, 0, None).await;
    let want: Vec<String> = first
        .iter()
        .chain(&second)
        .cloned()
        .chain(["e2-5".to_owned(), "e3-0".to_owned()])
        .collect();
    assert_eq!(values(&all), want);
    gw.stop().await;
}

/// A drain refused because a rebalance is running must not leave the
/// cluster draining (out of the ring) without its moves.
#[tokio::test]
async fn refused_drain_leaves_the_cluster_active() {
    let gw = TestGateway::start_with(fast_probe).await;
    let api = Api::of(&gw);
    let federation = gw.gateway().federation().clone();
    // On this single-threaded runtime the rebalance task cannot finish
    // before the drain below runs: it is "running" throughout.
    federation
        .apply(Vec::new())
        .expect("an empty rebalance starts");
    let refused = federation.drain("local-1").await;
    assert!(refused.is_err(), "a drain during a rebalance is refused");
    assert_eq!(
        federation.member("local-1").expect("member").state(),
        sluice_config::ClusterState::Active
    );
    wait_rebalance_finished(&api).await;
    assert_eq!(cluster_entry(&api, "local-1").await["state"], "active");
    // New topics still land on it.
    let topic = name_owned("fresh-", "local-1", true);
    produce(&api, &topic, &[(0, "v")]).await;
    assert_eq!(home_of(&api, &topic).await, "local-1");
    // Once the rebalance is over, the drain is accepted.
    let reply = admin_post(&api, "/admin/clusters/local-1/drain", None).await;
    let body = reply.ok(202);
    assert_eq!(body["moves"][0]["topic"], topic.as_str(), "{body}");
    wait_rebalance_finished(&api).await;
    assert_ne!(home_of(&api, &topic).await, "local-1");
    gw.stop().await;
}

/// The first produce after the home dies finds out by the cluster's error,
/// before any probe: under `failover` it must fail over then and there, not
/// answer 503 while healthy clusters could take the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_policy_needs_no_probe_to_fail_over() {
    let gw = TestGateway::start_with(|c| {
        // No probe during the test: only the produce itself can notice.
        c.federation.health_check_interval_ms = 600_000;
        c.federation.on_cluster_down = DownPolicy::Failover;
    })
    .await;
    let api = Api::of(&gw);
    let topic = "sudden";
    produce(&api, topic, &[(0, "before")]).await;
    let home = home_of(&api, topic).await;
    gw.gateway()
        .embedded_cluster(&home)
        .expect("home")
        .set_available(false);
    produce(&api, topic, &[(0, "after")]).await;
    let placed = placement(&api, topic).await;
    let list = epochs(&placed);
    assert_eq!(list.len(), 2, "{placed}");
    assert_eq!(list[1]["reason"], "failover", "{placed}");
    assert_eq!(offsets_of(&list[0], "end_offsets"), [1, 0, 0], "{placed}");
    assert_ne!(home_of(&api, topic).await, home);
    assert_eq!(cluster_entry(&api, &home).await["status"], "down");
    gw.stop().await;
}

/// A gateway that restarted knows nothing acknowledged through it yet; a
/// failover must still seal the old epoch after the records written before
/// the restart, or cursor readers would skip them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_a_restart_keeps_the_records_written_before() {
    let failover = |c: &mut Config| {
        fast_probe(c);
        c.federation.on_cluster_down = DownPolicy::Failover;
    };
    let gw = TestGateway::start_with(failover).await;
    let api = Api::of(&gw);
    let topic = "steady";
    let before: Vec<String> = (0..6).map(|i| format!("b-{i}")).collect();
    for v in &before {
        produce(&api, topic, &[(0, v)]).await;
    }
    produce(&api, topic, &[(2, "p2")]).await;
    let home = home_of(&api, topic).await;
    let dir = gw.stop_keep_data().await;

    let gw = TestGateway::start_in(dir, failover).await;
    let api = Api::of(&gw);
    let switch = gw.gateway().embedded_cluster(&home).expect("home").clone();
    switch.set_available(false);
    wait_cluster_status(&api, &home, "down").await;
    produce(&api, topic, &[(0, "after")]).await;
    let placed = placement(&api, topic).await;
    let list = epochs(&placed);
    assert_eq!(list.len(), 2, "{placed}");
    assert_eq!(list[1]["reason"], "failover");
    assert_eq!(offsets_of(&list[0], "end_offsets"), [6, 0, 1], "{placed}");

    switch.set_available(true);
    wait_cluster_status(&api, &home, "up").await;
    let (got, _) = read_to_end(&api, topic, 0, None).await;
    let want: Vec<String> = before.iter().cloned().chain(["after".to_owned()]).collect();
    assert_eq!(values(&got), want);
    gw.stop().await;
}

// ------------------------------------------------------------------ 3. restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_and_cursors_survive_restarts() {
    let gw = TestGateway::start_with(fast_probe).await;
    let api = Api::of(&gw);
    let topics = ["r.a", "r.b", "r.c", "r.d", "r.e"];
    let mut written: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for topic in topics {
        for i in 0..6 {
            let v = format!("{topic}-{i}");
            produce(&api, topic, &[(0, &v)]).await;
            written.entry(topic).or_default().push(v);
        }
    }
    let (head, saved) = read_some(&api, "r.a", 0, 2).await;
    assert_eq!(head, written["r.a"][..2]);
    let mut before = BTreeMap::new();
    for topic in topics {
        before.insert(
            topic,
            (placement(&api, topic).await, home_of(&api, topic).await),
        );
    }
    let dir = gw.stop_keep_data().await;

    let gw = TestGateway::start_in(dir, fast_probe).await;
    let api = Api::of(&gw);
    for topic in topics {
        let after = (placement(&api, topic).await, home_of(&api, topic).await);
        assert_eq!(after, before[topic], "{topic}: same home and epochs");
    }
    // The saved cursor continues exactly where it left off, and records
    // written after the restart follow.
    produce(&api, "r.a", &[(0, "r.a-late")]).await;
    let (rest, _) = read_to_end(&api, "r.a", 0, Some(&saved)).await;
    let want: Vec<String> = written["r.a"][2..]
        .iter()
        .cloned()
        .chain(["r.a-late".to_owned()])
        .collect();
    assert_eq!(values(&rest), want);

    // A migrated topic: a cursor from inside epoch 1 still works after a restart.
    let home = home_of(&api, "r.b").await;
    let to = other_than(&home);
    admin_post(&api, "/admin/topics/r.b/migrate", Some(json!({ "to": to })))
        .await
        .ok(200);
    let moved: Vec<String> = (0..4).map(|i| format!("r.b-moved-{i}")).collect();
    for v in &moved {
        produce(&api, "r.b", &[(0, v)]).await;
    }
    let (head, in_epoch_1) = read_some(&api, "r.b", 0, 3).await;
    assert_eq!(head, written["r.b"][..3]);
    let migrated = placement(&api, "r.b").await;
    assert_eq!(epochs(&migrated).len(), 2, "{migrated}");
    let dir = gw.stop_keep_data().await;

    let gw = TestGateway::start_in(dir, fast_probe).await;
    let api = Api::of(&gw);
    assert_eq!(placement(&api, "r.b").await, migrated);
    assert_eq!(home_of(&api, "r.b").await, to);
    let (rest, _) = read_to_end(&api, "r.b", 0, Some(&in_epoch_1)).await;
    let want: Vec<String> = written["r.b"][3..].iter().chain(&moved).cloned().collect();
    assert_eq!(values(&rest), want);
    gw.stop().await;
}

// ------------------------------------------------------------------ 4. rebalance

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_after_adding_a_cluster_moves_its_share_only() {
    let gw = TestGateway::start_with(fast_probe).await;
    let api = Api::of(&gw);
    let topics: Vec<String> = (0..60).map(|i| format!("rb-{i:02}")).collect();
    let mut written: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for topic in &topics {
        let per_partition: Vec<Vec<String>> = (0..PARTITIONS)
            .map(|p| (0..2).map(|i| format!("{topic}/{p}/{i}")).collect())
            .collect();
        for round in 0..2 {
            let batch: Vec<(u32, &str)> = per_partition
                .iter()
                .zip(0..)
                .map(|(list, p)| (p, list[round].as_str()))
                .collect();
            produce(&api, topic, &batch).await;
        }
        written.insert(topic.clone(), per_partition);
    }
    let mut homes = BTreeMap::new();
    for topic in &topics {
        homes.insert(topic.clone(), home_of(&api, topic).await);
    }
    let dir = gw.stop_keep_data().await;

    let four = |c: &mut Config| {
        fast_probe(c);
        c.clusters.push(ClusterConfig::embedded("local-3"));
    };
    let gw = TestGateway::start_in(dir, four).await;
    let api = Api::of(&gw);
    let added = cluster_entry(&api, "local-3").await;
    assert_eq!(
        (&added["status"], &added["topics"]),
        (&json!("up"), &json!(0)),
        "{added}"
    );
    // Adding a cluster moves nothing by itself.
    for topic in &topics {
        assert_eq!(home_of(&api, topic).await, homes[topic]);
    }

    let plan = admin_post(&api, "/admin/rebalance/plan", None)
        .await
        .ok(200);
    let moves = plan["moves"].as_array().expect("moves").clone();
    assert!(!moves.is_empty() && moves.len() < topics.len(), "{plan}");
    let mut moved = BTreeSet::new();
    for m in &moves {
        let topic = m["topic"].as_str().expect("topic").to_owned();
        assert_eq!(m["to"], "local-3", "only moves to the new cluster: {m}");
        assert_eq!(m["from"], homes[&topic].as_str(), "{m}");
        assert!(m["bytes"].as_u64().is_some_and(|b| b > 0), "{m}");
        assert!(moved.insert(topic), "{plan}");
    }

    let applied = admin_post(&api, "/admin/rebalance/apply", None)
        .await
        .ok(202);
    assert_eq!(
        applied["moves"].as_array(),
        Some(&moves),
        "apply runs the plan"
    );
    let status = wait_rebalance_finished(&api).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["completed"], json!(moves.len()), "{status}");
    assert_eq!(status["failed"], json!([]), "{status}");

    for topic in &topics {
        let placed = placement(&api, topic).await;
        let list = epochs(&placed);
        if moved.contains(topic) {
            assert_eq!(list.len(), 2, "{placed}");
            assert_eq!(list[0]["cluster"], homes[topic].as_str(), "{placed}");
            assert_eq!(offsets_of(&list[0], "end_offsets"), [2, 2, 2], "{placed}");
            assert_eq!(list[1]["cluster"], "local-3", "{placed}");
            assert_eq!(list[1]["reason"], "migration", "{placed}");
            assert_eq!(home_of(&api, topic).await, "local-3");
        } else {
            assert_eq!(list.len(), 1, "{placed}");
            assert_eq!(home_of(&api, topic).await, homes[topic]);
        }
        for p in 0..PARTITIONS {
            let (got, _) = read_to_end(&api, topic, p, None).await;
            assert_eq!(values(&got), written[topic][p as usize], "{topic}/{p}");
        }
    }
    // Writes to a moved topic land on the new cluster, after the old epoch.
    let first_moved = moved.iter().next().expect("a moved topic").clone();
    produce(&api, &first_moved, &[(0, "on-local-3")]).await;
    let local3 = gw.gateway().embedded_cluster("local-3").expect("local-3");
    assert_eq!(
        local3
            .offsets(&first_moved, 0)
            .await
            .expect("offsets")
            .latest,
        1
    );
    let (got, _) = read_to_end(&api, &first_moved, 0, None).await;
    assert_eq!(got.last().map(|r| r.value.as_str()), Some("on-local-3"));

    let listed: Vec<String> =
        serde_json::from_value(get(&api, "/topics").await.ok(200)).expect("names");
    assert_eq!(listed, topics, "every topic is still listed");
    let again = admin_post(&api, "/admin/rebalance/plan", None)
        .await
        .ok(200);
    assert_eq!(again["moves"], json!([]), "nothing left to move");
    assert_eq!(
        cluster_entry(&api, "local-3").await["topics"],
        json!(moved.len())
    );
    gw.stop().await;
}

// ------------------------------------------------------------------ 5. bad cursors

#[tokio::test]
async fn bad_cursors_are_client_errors() {
    let gw = TestGateway::start_with(fast_probe).await;
    let api = Api::of(&gw);
    produce(&api, "mine", &[(0, "m-0"), (0, "m-1")]).await;
    produce(&api, "theirs", &[(0, "t-0")]).await;
    let mine = read_page(&api, "mine", 0, None, None).await.next_cursor;
    let theirs = read_page(&api, "theirs", 0, None, None).await.next_cursor;

    for bad in ["not a cursor", "AAAA", "%%%", &mine[..mine.len() - 2]] {
        let message = read_raw(&api, "mine", 0, &[("cursor", bad)], None)
            .await
            .error(400, 400);
        assert!(message.contains("invalid cursor"), "{bad:?}: {message}");
    }
    // One character changed: the checksum notices.
    let mut edited = mine.clone().into_bytes();
    let last = edited.len() - 3;
    edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).expect("ASCII");
    let message = read_raw(&api, "mine", 0, &[("cursor", &edited)], None)
        .await
        .error(400, 400);
    assert!(message.contains("invalid cursor"), "{message}");

    let message = read_raw(&api, "mine", 0, &[("cursor", &theirs)], None)
        .await
        .error(400, 400);
    assert!(message.contains("belongs to another topic"), "{message}");

    let message = read_raw(&api, "mine", 1, &[("cursor", &mine)], None)
        .await
        .error(400, 400);
    assert!(message.contains("partition 1"), "{message}");

    let message = read_raw(&api, "mine", 0, &[("cursor", &mine), ("offset", "0")], None)
        .await
        .error(400, 400);
    assert!(
        message.contains("cursor") && message.contains("offset"),
        "{message}"
    );

    // The good cursor still works after all that.
    let page = read_page(&api, "mine", 0, Some(&mine), None).await;
    assert!(page.records.is_empty());
    assert_eq!(page.next_cursor, mine);
    gw.stop().await;
}

// ------------------------------------------------------------------ 6. pins

#[tokio::test]
async fn pins_place_topics_on_their_cluster() {
    let ring = TopicRing::new(CLUSTERS.iter().map(|c| (*c, 100))).expect("ring");
    // Pin each to a cluster the ring would not choose, so the pin shows.
    let not_owner = |topic: &str| other_than(ring.owner(topic).expect("owner")).to_owned();
    let exact = "orders";
    let exact_to = not_owner(exact);
    let prefixed = ["audit.login", "audit.logout", "audit.x.y"];
    let prefix_to = CLUSTERS
        .iter()
        .find(|c| prefixed.iter().all(|t| ring.owner(t) != Some(**c)))
        .map(|c| c.to_string())
        .unwrap_or_else(|| not_owner(prefixed[0]));
    // An exact pin wins over a prefix pin.
    let special = "audit.special";
    let special_to = CLUSTERS
        .iter()
        .find(|c| **c != prefix_to)
        .expect("another")
        .to_string();
    let pins = vec![
        PinConfig {
            topic: Some(exact.into()),
            prefix: None,
            cluster: exact_to.clone(),
        },
        PinConfig {
            topic: None,
            prefix: Some("audit.".into()),
            cluster: prefix_to.clone(),
        },
        PinConfig {
            topic: Some(special.into()),
            prefix: None,
            cluster: special_to.clone(),
        },
    ];
    let gw = TestGateway::start_with(|c| {
        fast_probe(c);
        c.federation.pins = pins;
    })
    .await;
    let api = Api::of(&gw);
    let mut want = vec![
        (exact.to_owned(), exact_to),
        (special.to_owned(), special_to),
    ];
    want.extend(prefixed.iter().map(|t| (t.to_string(), prefix_to.clone())));
    for (topic, cluster) in &want {
        produce(&api, topic, &[(0, "v")]).await;
        assert_eq!(&home_of(&api, topic).await, cluster, "{topic}");
        let placed = placement(&api, topic).await;
        assert_eq!(placed["home"], cluster.as_str(), "{placed}");
        let stored = gw
            .gateway()
            .embedded_cluster(cluster)
            .expect("pinned cluster")
            .offsets(topic, 0)
            .await
            .expect("the record is on the pinned cluster");
        assert_eq!(stored.latest, 1, "{topic}");
    }
    // Pinned topics are where they belong: no rebalance move for them.
    let plan = admin_post(&api, "/admin/rebalance/plan", None)
        .await
        .ok(200);
    assert_eq!(plan["moves"], json!([]), "{plan}");
    gw.stop().await;
}
