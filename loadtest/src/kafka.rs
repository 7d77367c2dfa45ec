//! `kafka-compare` (feature `kafka`): the Kafka backend's overhead, in one
//! run. Starts one tansu broker (the `sluice-testbed` crate), a Sluice
//! process whose only cluster is that broker, runs a produce scenario
//! through Sluice over REST, then produces the same records (size, keys,
//! batch-sized windows in flight) straight to the broker with librdkafka
//! for the same time, and reports both rates and their ratio.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use tokio::time::Instant;

use crate::net::TlsOptions;
use crate::payload::{KeyDistribution, KeyPicker, Rng, Stamp};
use crate::scenario::Scenario;
use crate::{run, Report, RunOptions};

/// Arguments of `kafka-compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The `sluice` binary to start.
    #[arg(long, default_value = "target/release/sluice")]
    pub sluice_bin: PathBuf,
    /// The produce scenario (its first producer group is the load).
    #[arg(long, default_value = "loadtest/scenarios/kafka-compare")]
    pub scenario: PathBuf,
    /// Changes one setting of the scenario.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Writes the Sluice run's report files and `compare.json` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The comparison.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// Records/s acknowledged through Sluice.
    pub through_sluice_records_per_sec: f64,
    /// Records/s acknowledged by the broker to librdkafka directly.
    pub direct_records_per_sec: f64,
    /// Sluice / direct.
    pub ratio: f64,
    /// Records sent directly.
    pub direct_records: u64,
    /// Seconds of the direct run.
    pub direct_secs: f64,
    /// Failed direct deliveries.
    pub direct_errors: u64,
    /// The Sluice run's report.
    pub sluice: Report,
}

struct SluiceProcess(Child);

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the comparison and prints it.
pub async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let mut scenario = Scenario::load(&args.scenario, &args.set)?;
    let group = scenario
        .producers
        .first()
        .cloned()
        .context("the scenario needs a producer group")?;
    let bed = sluice_testbed::KafkaTestbed::start(1)
        .await
        .context("starting tansu (run scripts/install-test-deps)")?;
    let topic = scenario.topic.name.clone();
    bed.create_topic(0, &topic, scenario.topic.partitions)
        .await
        .context("creating the topic on the broker")?;
    scenario.topic.unique = false;
    scenario.topic.create = false;

    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = format!(
        "[listener]\naddress = \"127.0.0.1:0\"\nmax_connections = 20000\n[admin]\naddress = \"127.0.0.1:0\"\ninsecure = true\n[storage]\ndata_dir = {data:?}\n[log]\nlevel = \"warn\"\n[[clusters]]\nname = \"kafka-0\"\nkind = \"kafka\"\n[clusters.kafka]\nbootstrap_servers = \"{}\"\n",
        bed.bootstrap(0)
    );
    let config_file = dir.path().join("sluice.toml");
    std::fs::write(&config_file, config)?;
    let mut child = Command::new(&args.sluice_bin)
        .args(["serve", "--config"])
        .arg(&config_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", args.sluice_bin.display()))?;
    let stdout = child.stdout.take().context("sluice stdout")?;
    let process = SluiceProcess(child);
    // The reader keeps draining stdout after the address: a closed pipe
    // would make the gateway's next line to stdout fail.
    let (found, address) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(address) = line.strip_prefix("sluice: listening on ") {
                if let Some(found) = found.take() {
                    let _ = found.send(address.to_owned());
                }
            }
        }
    });
    let line = address.await.context("sluice did not print its address")?;
    let public = line.split_whitespace().next().unwrap_or_default();
    let port = public.rsplit(':').next().unwrap_or_default();
    let url = format!("https://localhost:{port}");
    let options = RunOptions {
        url: url.clone(),
        tls: TlsOptions {
            cacert: Some(data.join("tls/ca.pem")),
            insecure: false,
        },
        server_pid: Some(process.0.id()),
        progress: true,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        worker_exe: None,
    };
    eprintln!(
        "kafka-compare: through Sluice at {url} to tansu at {}",
        bed.bootstrap(0)
    );
    let report = run(&scenario, &options).await?;
    let through = report
        .groups
        .iter()
        .find(|g| g.name == group.name)
        .map_or(0.0, |g| g.records_per_sec);
    drop(process);

    eprintln!("kafka-compare: straight to the broker with librdkafka");
    // The producer settings of Sluice's Kafka backend.
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bed.bootstrap(0))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("batch.num.messages", "10000");
    let producer: FutureProducer = config.create()?;
    let keys = KeyDistribution::parse(&group.keys)?;
    let picker = KeyPicker::new(&keys);
    let mut rng = Rng::new(scenario.seed, 0);
    // As many records in flight as the Sluice run had: connections × batch.
    let window = (group.connections * group.batch) as usize;
    let duration = Duration::from_millis(scenario.run.duration_ms);
    let start = Instant::now();
    let deadline = start + duration;
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    let (mut sent, mut acked, mut errors) = (0u64, 0u64, 0u64);
    let mut value = String::new();
    use futures_util::StreamExt as _;
    loop {
        while in_flight.len() < window && Instant::now() < deadline {
            value.clear();
            Stamp {
                producer: 0,
                seq: sent,
                sent_us: crate::payload::now_us(),
            }
            .write_value(group.record_bytes, &mut value);
            let key = picker.pick(&mut rng).map(|k| format!("key-{k}"));
            let mut record = FutureRecord::to(&topic).payload(value.as_bytes());
            if let Some(key) = &key {
                record = record.key(key.as_bytes());
            }
            match producer.send_result(record) {
                Ok(delivery) => in_flight.push(delivery),
                Err(_) => errors += 1,
            }
            sent += 1;
        }
        match in_flight.next().await {
            Some(Ok(Ok(_))) => acked += 1,
            Some(_) => errors += 1,
            None => break,
        }
    }
    let direct_secs = start.elapsed().as_secs_f64();
    let direct = acked as f64 / direct_secs.max(1e-3);
    let comparison = Comparison {
        through_sluice_records_per_sec: through,
        direct_records_per_sec: direct,
        ratio: if direct > 0.0 { through / direct } else { 0.0 },
        direct_records: acked,
        direct_secs,
        direct_errors: errors,
        sluice: report,
    };
    if let Some(out) = &args.out {
        comparison.sluice.write(out)?;
        std::fs::write(
            out.join("compare.json"),
            serde_json::to_string_pretty(&comparison)?,
        )?;
    }
    print!("{}", comparison.sluice.to_text());
    println!(
        "kafka-compare: through Sluice {:.0} records/s, direct librdkafka {:.0} records/s ({} records in {:.1} s, {} errors): ratio {:.2}",
        comparison.through_sluice_records_per_sec,
        comparison.direct_records_per_sec,
        comparison.direct_records,
        comparison.direct_secs,
        comparison.direct_errors,
        comparison.ratio
    );
    Ok(())
}
