//! Federation end to end on three real Kafka-protocol brokers started by
//! the test bed: topics spread per the ring (checked by reading each broker
//! with an independent client), a migration under live traffic, two
//! gateway processes sharing placement through a compacted topic, and a
//! broker killed under load.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::process::{ephemeral_config, SluiceProcess};
use common::TestGateway;
use serde_json::{json, Value};
use sluice_config::{ClusterConfig, Config, DownPolicy, TopicPolicyConfig};
use sluice_federation::ring::TopicRing;
use sluice_testbed::{read_topic, KafkaTestbed};

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const PATIENCE: Duration = Duration::from_secs(60);

fn cluster_name(i: usize) -> String {
    format!("kafka-{i}")
}

/// Three Kafka clusters from the test bed, probed often.
fn kafka_clusters(bed: &KafkaTestbed, config: &mut Config) {
    config.clusters = (0..bed.len())
        .map(|i| {
            let mut c = ClusterConfig::kafka(&cluster_name(i), &bed.bootstrap(i));
            if let Some(k) = c.kafka.as_mut() {
                k.request_timeout_ms = 3_000;
            }
            c
        })
        .collect();
    config.federation.health_check_interval_ms = 100;
    config.federation.health_check_timeout_ms = 1_000;
}

fn b64(s: &str) -> String {
    BASE64.encode(s)
}

fn unb64(v: &Value) -> String {
    String::from_utf8(BASE64.decode(v.as_str().expect("base64 string")).unwrap()).unwrap()
}

async fn produce(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    records: Value,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{url}/topics/{topic}?acks=all"))
        .header("Content-Type", BINARY)
        .json(&json!({ "records": records }))
        .send()
        .await
}

async fn home_of(http: &reqwest::Client, url: &str, topic: &str) -> String {
    let topic: Value = common::get_json(http, format!("{url}/topics/{topic}")).await;
    topic["cluster"].as_str().expect("home cluster").to_owned()
}

fn index_of(cluster: &str) -> usize {
    cluster.trim_start_matches("kafka-").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_spread_per_the_ring_and_land_on_their_home_broker() {
    let bed = KafkaTestbed::start(3).await.expect("test bed");
    let gw = TestGateway::start_with(|c| kafka_clusters(&bed, c)).await;
    let ring = TopicRing::new((0..3).map(|i| (cluster_name(i), 100))).unwrap();

    let topics: Vec<String> = (0..12).map(|i| format!("spread-{i}")).collect();
    for topic in &topics {
        let reply = produce(
            &gw.client,
            &gw.url,
            topic,
            json!([{"key": b64("k"), "value": b64(topic), "headers": [{"name": "origin", "value": b64("sluice")}]}]),
        )
        .await
        .unwrap();
        assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    }

    let mut used = HashSet::new();
    for topic in &topics {
        let home = home_of(&gw.client, &gw.url, topic).await;
        assert_eq!(
            Some(home.as_str()),
            ring.owner(topic),
            "{topic} is placed by the ring"
        );
        used.insert(home.clone());
        // Read straight from the home broker with an independent client.
        let records = read_topic(&bed.bootstrap(index_of(&home)), topic)
            .await
            .expect("independent read");
        assert_eq!(records.len(), 1, "{topic} on {home}: {records:?}");
        let r = &records[0];
        assert_eq!(r.key.as_deref(), Some(b"k".as_slice()));
        assert_eq!(r.value.as_deref(), Some(topic.as_bytes()));
        assert_eq!(
            r.headers,
            vec![("origin".to_owned(), Some(b"sluice".to_vec()))]
        );
    }
    assert!(
        used.len() >= 2,
        "12 topics spread over more than one cluster: {used:?}"
    );
    gw.stop().await;
}

/// Reads a partition through cursors until `want` values are in or the
/// deadline passes.
async fn read_all(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    partition: u32,
    want: usize,
) -> Vec<String> {
    let mut values = Vec::new();
    let mut cursor: Option<String> = None;
    let deadline = Instant::now() + PATIENCE;
    while values.len() < want && Instant::now() < deadline {
        let mut request = format!("{url}/topics/{topic}/partitions/{partition}/records");
        if let Some(c) = &cursor {
            request.push_str(&format!("?cursor={c}"));
        }
        let reply = http.get(&request).send().await.unwrap();
        assert_eq!(reply.status(), 200);
        let next = reply.headers()["sluice-next-cursor"]
            .to_str()
            .unwrap()
            .to_owned();
        let records: Vec<Value> = reply.json().await.unwrap();
        if records.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        values.extend(records.iter().map(|r| unb64(&r["value"])));
        cursor = Some(next);
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_under_live_traffic_loses_and_duplicates_nothing() {
    let bed = KafkaTestbed::start(3).await.expect("test bed");
    let gw = TestGateway::start_with(|c| kafka_clusters(&bed, c)).await;
    let topic = "moving";
    let created = gw
        .client
        .post(format!("{}/v3/clusters/sluice/topics", gw.url))
        .json(&json!({"topic_name": topic, "partitions_count": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let from = home_of(&gw.client, &gw.url, topic).await;
    let to = (0..3).map(cluster_name).find(|c| *c != from).unwrap();

    // Per partition, acked values in ack order.
    let acked: Arc<Mutex<BTreeMap<u32, Vec<String>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = Vec::new();
    for w in 0..2u32 {
        let (http, url, acked, stop) = (
            gw.client.clone(),
            gw.url.clone(),
            acked.clone(),
            stop.clone(),
        );
        producers.push(tokio::spawn(async move {
            for seq in 0..2_000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let partition = (w + seq) % 3;
                let value = format!("w{w}-{seq}");
                let reply = http
                    .post(format!(
                        "{url}/topics/{topic}/partitions/{partition}?acks=all"
                    ))
                    .header("Content-Type", BINARY)
                    .json(&json!({"records": [{"value": b64(&value)}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
                acked
                    .lock()
                    .unwrap()
                    .entry(partition)
                    .or_default()
                    .push(value);
            }
        }));
    }
    let count = |acked: &Arc<Mutex<BTreeMap<u32, Vec<String>>>>| {
        acked.lock().unwrap().values().map(Vec::len).sum::<usize>()
    };
    let deadline = Instant::now() + PATIENCE;
    while count(&acked) < 150 {
        assert!(Instant::now() < deadline, "traffic never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    common::migrate(&gw.admin_url, topic, &to).await;
    let at_switch = count(&acked);
    while count(&acked) < at_switch + 150 {
        assert!(
            Instant::now() < deadline,
            "traffic stopped after the switch"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    for (partition, values) in &acked {
        let read = read_all(&gw.client, &gw.url, topic, *partition, values.len()).await;
        assert_eq!(
            read.len(),
            values.len(),
            "partition {partition}: every acked record, once"
        );
        let unique: HashSet<_> = read.iter().collect();
        assert_eq!(
            unique.len(),
            read.len(),
            "partition {partition}: no duplicates"
        );
        // Per producer, the acked order is the read order.
        for w in 0..2 {
            let prefix = format!("w{w}-");
            let sent: Vec<_> = values.iter().filter(|v| v.starts_with(&prefix)).collect();
            let got: Vec<_> = read.iter().filter(|v| v.starts_with(&prefix)).collect();
            assert_eq!(sent, got, "partition {partition}, producer {w}: order");
        }
    }

    // What the brokers hold, read independently: epoch 1 on the old home,
    // epoch 2 on the new one, together exactly the acked records.
    let placement: Value = reqwest::get(format!("{}/admin/topics/{topic}/placement", gw.admin_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(placement["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(placement["home"], to.as_str());
    let mut on_brokers = Vec::new();
    for cluster in [&from, &to] {
        for r in read_topic(&bed.bootstrap(index_of(cluster)), topic)
            .await
            .unwrap()
        {
            on_brokers.push(String::from_utf8(r.value.unwrap()).unwrap());
        }
    }
    let mut expected: Vec<String> = acked.values().flatten().cloned().collect();
    expected.sort();
    on_brokers.sort();
    assert_eq!(
        on_brokers, expected,
        "the brokers hold exactly the acked records"
    );
    gw.stop().await;
}

fn shared_placement_config(bed: &KafkaTestbed, data_dir: &std::path::Path) -> String {
    let mut text = ephemeral_config(data_dir)
        + "[federation]\nhealth_check_interval_ms = 100\n[federation.placement]\nstore = \"kafka\"\ncluster = \"kafka-0\"\n";
    for i in 0..bed.len() {
        text.push_str(&format!(
            "[[clusters]]\nname = \"{}\"\nkind = \"kafka\"\n[clusters.kafka]\nbootstrap_servers = \"{}\"\nrequest_timeout_ms = 3000\n",
            cluster_name(i),
            bed.bootstrap(i)
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_share_placement_and_follow_a_migration() {
    let bed = KafkaTestbed::start(3).await.expect("test bed");
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = SluiceProcess::start(
        dir_a.path(),
        &shared_placement_config(&bed, &dir_a.path().join("data")),
    );
    let b = SluiceProcess::start(
        dir_b.path(),
        &shared_placement_config(&bed, &dir_b.path().join("data")),
    );
    let http_a = SluiceProcess::client(&dir_a.path().join("data"));
    let http_b = SluiceProcess::client(&dir_b.path().join("data"));
    let admin = reqwest::Client::new();

    // Topics placed through A are known to B with the same home.
    let topics: Vec<String> = (0..6).map(|i| format!("shared-{i}")).collect();
    for t in &topics {
        let reply = produce(&http_a, &a.url, t, json!([{"value": b64("from a")}]))
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    }
    for t in &topics {
        let home_a = home_of(&http_a, &a.url, t).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = http_b
                .get(format!("{}/topics/{t}", b.url))
                .send()
                .await
                .unwrap();
            if reply.status() == 200 {
                let body: Value = reply.json().await.unwrap();
                assert_eq!(body["cluster"], home_a.as_str(), "{t}: both gateways agree");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{t}: gateway B never learned its placement"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A migration started on A is followed by B within 2 seconds.
    let t = &topics[0];
    let from = home_of(&http_a, &a.url, t).await;
    let to = (0..3).map(cluster_name).find(|c| *c != from).unwrap();
    let started = Instant::now();
    common::migrate(&a.admin_url, t, &to).await;
    let seen = loop {
        let placement: Value = common::get_json(
            &admin,
            format!("{}/admin/topics/{t}/placement", b.admin_url),
        )
        .await;
        if placement["home"] == to.as_str() {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B never saw the migration"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("gateway B followed the migration after {seen:?}");
    assert!(
        seen <= Duration::from_secs(2),
        "followed within 2 s, took {seen:?}"
    );

    // B now writes to the new home.
    let reply = produce(&http_b, &b.url, t, json!([{"value": b64("from b")}]))
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let on_new: Vec<_> = read_topic(&bed.bootstrap(index_of(&to)), t)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(on_new, vec![b"from b".to_vec()]);
    drop((a, b));
}

/// How long after a migration the switching gateway looks for late
/// writes on the old home, in the test below.
const TEST_LATE_WRITE_GRACE_MS: u64 = 1_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_by_a_gateway_that_has_not_seen_a_migration_are_not_lost() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let bed = KafkaTestbed::start(3).await.expect("test bed");
    let config = |dir: &std::path::Path| {
        shared_placement_config(&bed, &dir.join("data")).replace(
            "store = \"kafka\"\n",
            &format!("store = \"kafka\"\nlate_write_grace_ms = {TEST_LATE_WRITE_GRACE_MS}\n"),
        )
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = SluiceProcess::start(dir_a.path(), &config(dir_a.path()));
    let b = SluiceProcess::start(dir_b.path(), &config(dir_b.path()));
    let http_a = SluiceProcess::client(&dir_a.path().join("data"));
    let http_b = SluiceProcess::client(&dir_b.path().join("data"));
    let admin = reqwest::Client::new();
    let t = "contested";
    let reply = produce(
        &http_a,
        &a.url,
        t,
        json!([{"partition": 0, "value": b64("a-0")}]),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    let deadline = Instant::now() + PATIENCE;
    while http_b
        .get(format!("{}/topics/{t}", b.url))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "B never learned {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // B writes without pause while A moves the topic, until a write of B
    // lands on the old home after A sealed it (B has not seen the switch
    // yet), or three moves went by.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (http, url, stop) = (http_b.clone(), b.url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = vec!["a-0".to_owned()];
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0.. {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let value = format!("b-{i}");
                let body = json!([{"partition": 0, "value": b64(&value)}]);
                if let Ok(reply) = produce(&http, &url, t, body).await {
                    if reply.status() == 200 {
                        acked.push(value);
                    }
                }
            }
            acked
        })
    };
    let mut late = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let from = home_of(&http_a, &a.url, t).await;
        let to = (0..3).map(cluster_name).find(|c| *c != from).unwrap();
        common::migrate(&a.admin_url, t, &to).await;
        // Past the time B takes to see the switch, before A's sweep.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let placement: Value = common::get_json(
            &admin,
            format!("{}/admin/topics/{t}/placement", a.admin_url),
        )
        .await;
        let epochs = placement["epochs"].as_array().unwrap();
        let sealed = &epochs[epochs.len() - 2];
        let end = sealed["end_offsets"][0].as_u64().unwrap();
        let on_old = read_topic(&bed.bootstrap(index_of(&from)), t)
            .await
            .unwrap();
        late = on_old
            .iter()
            .filter(|r| r.partition == 0 && r.offset >= end)
            .count();
        eprintln!(
            "moved {from} -> {to}: {late} records landed on {from} past its sealed end {end}"
        );
        if late > 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(
        late > 0,
        "no write landed late in three moves: the race was not exercised"
    );

    // After A's sweep, every acknowledged record reads once through cursors.
    tokio::time::sleep(Duration::from_millis(TEST_LATE_WRITE_GRACE_MS + 1_000)).await;
    let values = read_all(&http_a, &a.url, t, 0, acked.len()).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for v in &values {
        *seen.entry(v.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = acked
        .iter()
        .filter(|v| !seen.contains_key(v.as_str()))
        .collect();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records are not read: {missing:?}",
        missing.len()
    );
    assert!(twice.is_empty(), "read more than once: {twice:?}");
    assert_eq!(values.len(), acked.len());
    drop((a, b));
}

/// Stops a process by its PID until dropped (SIGSTOP, then SIGCONT).
struct Paused(u32);

impl Paused {
    fn signal(pid: u32, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn new(pid: u32) -> Self {
        Self::signal(pid, "-STOP");
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        Self::signal(self.0, "-CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lease_a_gateway_cut_off_from_placement_stops_producing_until_it_is_back() {
    let bed = KafkaTestbed::start(3).await.expect("test bed");
    let dir = tempfile::tempdir().unwrap();
    // Placement on kafka-0, the topic pinned to kafka-1: only placement
    // goes away when kafka-0 stops.
    let config = shared_placement_config(&bed, &dir.path().join("data")).replace(
        "cluster = \"kafka-0\"\n",
        "cluster = \"kafka-0\"\nlease_ms = 1000\nlate_write_grace_ms = 5000\n[[federation.pins]]\ntopic = \"leased\"\ncluster = \"kafka-1\"\n",
    );
    let gw = SluiceProcess::start(dir.path(), &config);
    let http = SluiceProcess::client(&dir.path().join("data"));
    let t = "leased";
    let send = |i: usize| {
        produce(
            &http,
            &gw.url,
            t,
            json!([{ "value": b64(&format!("v-{i}")) }]),
        )
    };
    // Until placement is confirmed (a loaded machine may take a while).
    let deadline = Instant::now() + PATIENCE;
    while send(0).await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "never produced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(home_of(&http, &gw.url, t).await, "kafka-1");

    let paused = Paused::new(bed.pid(0).expect("kafka-0 runs"));
    let started = Instant::now();
    let refused = loop {
        let reply = send(1).await.unwrap();
        if reply.status() == 503 {
            break reply;
        }
        assert_eq!(reply.status(), 200);
        assert!(
            started.elapsed() < PATIENCE,
            "still producing {:?} after placement went away",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("refused after {:?}", started.elapsed());
    // Last confirmed at most 200 ms (the tail's check) before the pause.
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "not before the lease ran out"
    );
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error_code"], 50301, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("cannot confirm"),
        "{body}"
    );

    drop(paused);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = send(2).await.unwrap();
        if reply.status() == 200 {
            break;
        }
        assert_eq!(reply.status(), 503);
        assert!(
            Instant::now() < deadline,
            "never produced again after placement came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_broker_fails_fast_or_over_and_rejoins() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let bed = KafkaTestbed::start(3).await.expect("test bed");
    let gw = TestGateway::start_with(|c| {
        kafka_clusters(&bed, c);
        c.federation.topic_policies = vec![TopicPolicyConfig {
            topic: None,
            prefix: Some("mobile-".into()),
            on_cluster_down: DownPolicy::Failover,
        }];
    })
    .await;

    // Topics on every cluster, under both policies.
    let mut homes: HashMap<String, String> = HashMap::new();
    for i in 0..18 {
        for prefix in ["fixed-", "mobile-"] {
            let t = format!("{prefix}{i}");
            let reply = produce(&gw.client, &gw.url, &t, json!([{"value": b64("hello")}]))
                .await
                .unwrap();
            assert_eq!(reply.status(), 200);
            homes.insert(t.clone(), home_of(&gw.client, &gw.url, &t).await);
        }
    }
    let victim = homes["fixed-0"].clone();
    let elsewhere: Vec<String> = homes
        .iter()
        .filter(|(t, h)| t.starts_with("fixed-") && **h != victim)
        .map(|(t, _)| t.clone())
        .collect();
    let on_victim_fixed: Vec<String> = homes
        .iter()
        .filter(|(t, h)| t.starts_with("fixed-") && **h == victim)
        .map(|(t, _)| t.clone())
        .collect();
    let on_victim_mobile: Vec<String> = homes
        .iter()
        .filter(|(t, h)| t.starts_with("mobile-") && **h == victim)
        .map(|(t, _)| t.clone())
        .collect();
    assert!(!elsewhere.is_empty() && !on_victim_mobile.is_empty());

    bed.kill(index_of(&victim)).expect("broker killed");
    let killed_at = Instant::now();

    // Load on the topics homed elsewhere through the outage.
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut round = 0;
    while killed_at.elapsed() < Duration::from_secs(4) && round < 10_000 {
        let t = &elsewhere[round % elsewhere.len()];
        round += 1;
        match produce(&gw.client, &gw.url, t, json!([{"value": b64("during")}])).await {
            Ok(r) if r.status() == 200 => ok += 1,
            _ => failed += 1,
        }
    }
    let success = ok as f64 / (ok + failed) as f64;
    eprintln!("topics homed elsewhere during the outage: {ok} ok, {failed} failed");
    assert!(success >= 0.999, "success {success} on healthy clusters");

    // Topics on the dead cluster under `reject`: fast 503s once it is known down.
    for t in &on_victim_fixed {
        let asked = Instant::now();
        let reply = produce(&gw.client, &gw.url, t, json!([{"value": b64("x")}]))
            .await
            .unwrap();
        assert_eq!(reply.status(), 503, "{t}");
        assert!(reply.headers().contains_key("retry-after"));
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "a fast 503, not a hang"
        );
    }
    // Under `failover`: they move to a healthy cluster and take writes.
    for t in &on_victim_mobile {
        let reply = produce(&gw.client, &gw.url, t, json!([{"value": b64("moved")}]))
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{t}: {}", reply.text().await.unwrap());
        assert_ne!(home_of(&gw.client, &gw.url, t).await, victim);
    }

    // The broker comes back and rejoins without a manual step.
    bed.restart(index_of(&victim))
        .await
        .expect("broker restarted");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let clusters: Value = reqwest::get(format!("{}/admin/clusters", gw.admin_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let up = clusters["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == victim.as_str() && c["status"] == "up");
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "{victim} never rejoined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Rejoined: a new topic whose ring owner is the restarted cluster is
    // placed there and takes writes. (The test broker keeps nothing over a
    // restart, unlike Kafka, so the old topics' data is gone with it.)
    let ring = TopicRing::new((0..3).map(|i| (cluster_name(i), 100))).unwrap();
    let fresh = (0..1_000)
        .map(|i| format!("rejoin-{i}"))
        .find(|t| ring.owner(t) == Some(victim.as_str()))
        .expect("a topic name the ring gives to the restarted cluster");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = produce(&gw.client, &gw.url, &fresh, json!([{"value": b64("back")}]))
            .await
            .unwrap();
        if reply.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{fresh} never took writes on {victim}: {}",
            reply.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(home_of(&gw.client, &gw.url, &fresh).await, victim);
    // A reject topic homed there takes writes again too: its home had lost
    // it, so Sluice created it again (auto-creation is on) and asked the
    // client to retry.
    let t = &on_victim_fixed[0];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = produce(&gw.client, &gw.url, t, json!([{"value": b64("back")}]))
            .await
            .unwrap();
        if reply.status() == 200 {
            break;
        }
        assert_eq!(reply.status(), 503, "{t}: only retriable answers meanwhile");
        assert!(Instant::now() < deadline, "{t} never took writes again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.stop().await;
}
