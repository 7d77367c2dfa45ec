//! Crash safety with the real binary: producers write with acks=all under
//! fsync-always, the process is killed with SIGKILL mid-load, restarted on
//! the same data directory, and every acknowledged record must be there at
//! its acknowledged offset, with nothing that was never sent.

use std::collections::{HashMap, HashSet};
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::process::{ephemeral_config, SluiceProcess};
use serde_json::{json, Value};

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 3;
const WRITERS: usize = 8;
/// Acked records to reach before the kill, so the kill lands mid-load.
const ACKED_BEFORE_KILL: usize = 2000;
const PATIENCE: Duration = Duration::from_secs(60);

fn start(dir: &Path) -> SluiceProcess {
    let config = ephemeral_config(&dir.join("data"))
        + "[[clusters]]\nname = \"local\"\nkind = \"embedded\"\n[clusters.embedded]\nfsync = \"always\"\n";
    SluiceProcess::start(dir, &config)
}

fn client(dir: &Path) -> reqwest::Client {
    SluiceProcess::client(&dir.join("data"))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start(dir.path());
    let http = client(dir.path());

    let created = http
        .post(format!("{}/v3/clusters/sluice/topics", running.url))
        .json(&json!({"topic_name": TOPIC, "partitions_count": PARTITIONS}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());

    // (partition, offset) -> value of every acknowledged record, and every value ever sent.
    let acked: Arc<Mutex<HashMap<(u32, u64), String>>> = Arc::default();
    let sent: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (http, url) = (http.clone(), running.url.clone());
        let (acked, sent) = (acked.clone(), sent.clone());
        writers.push(tokio::spawn(async move {
            let deadline = Instant::now() + PATIENCE;
            for seq in 0u64.. {
                if Instant::now() > deadline {
                    break;
                }
                let partition = (w as u32 + seq as u32) % PARTITIONS;
                // Two records per request, so batches are multi-record on disk.
                let values = [format!("w{w}-s{seq}-a"), format!("w{w}-s{seq}-b")];
                sent.lock().unwrap().extend(values.iter().cloned());
                let body = json!({"records": values.iter().map(|v| json!({
                    "key": b64(&format!("w{w}")),
                    "value": b64(v),
                    "headers": [{"name": "writer", "value": b64(&w.to_string())}],
                })).collect::<Vec<_>>()});
                let response = http
                    .post(format!(
                        "{url}/topics/{TOPIC}/partitions/{partition}?acks=all"
                    ))
                    .header("Content-Type", "application/vnd.kafka.binary.v2+json")
                    .json(&body)
                    .send()
                    .await;
                let Ok(response) = response else { break };
                if response.status() != 200 {
                    break;
                }
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                let mut acked = acked.lock().unwrap();
                for (i, offset) in body["offsets"].as_array().unwrap().iter().enumerate() {
                    let o = offset["offset"].as_u64().expect("acks=all reports offsets");
                    let p = offset["partition"].as_u64().unwrap() as u32;
                    assert_eq!(p, partition);
                    acked.insert((p, o), values[i].clone());
                }
            }
        }));
    }

    let wait_start = Instant::now();
    while acked.lock().unwrap().len() < ACKED_BEFORE_KILL {
        assert!(wait_start.elapsed() < PATIENCE, "load never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.kill_9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    let mut running = start(dir.path());
    let mut seen_values = HashSet::new();
    let mut found = 0usize;
    for partition in 0..PARTITIONS {
        let mut next = 0u64;
        loop {
            let records: Vec<Value> = common::get_json(
                &http,
                format!(
                    "{}/topics/{TOPIC}/partitions/{partition}/records?offset={next}",
                    running.url
                ),
            )
            .await;
            if records.is_empty() {
                break;
            }
            for r in records {
                let offset = r["offset"].as_u64().unwrap();
                assert_eq!(offset, next, "offsets are contiguous after recovery");
                next += 1;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(r["value"].as_str().unwrap())
                    .unwrap();
                let value = String::from_utf8(raw).expect("no garbage after recovery");
                assert!(sent.contains(&value), "record {value:?} was never sent");
                assert!(seen_values.insert(value.clone()), "{value:?} appears twice");
                if let Some(expected) = acked.get(&(partition, offset)) {
                    assert_eq!(
                        &value, expected,
                        "acked record at {partition}/{offset} changed"
                    );
                    found += 1;
                }
            }
        }
    }
    assert_eq!(
        found,
        acked.len(),
        "every acknowledged record survives kill -9"
    );
    eprintln!(
        "kill -9 after {} acked records; {} records recovered, all acked ones intact",
        acked.len(),
        seen_values.len()
    );

    running.kill_9();
}
