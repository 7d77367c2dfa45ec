//! `kafka-compare` (feature `kafka`): the Kafka backend's overhead, in one
//! run. Starts one tansu broker (the `sluice-testbed` crate) and a Sluice
//! process whose only cluster is that broker, then alternates, `--rounds`
//! times: a block of the produce scenario through Sluice, and a block of
//! the same records (size, keys, as many in flight) produced straight to
//! the broker with librdkafka. Reports both rates and their ratio, overall
//! and per round. (The Sluice process stays up, idle, during the direct
//! blocks.)

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
    /// Rounds of (through Sluice, then direct), each taking the scenario's
    /// duration split evenly: alternating short blocks keeps a change of
    /// the machine's speed from landing on one side only.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
}

/// One round: a block through Sluice, then one direct.
#[derive(Debug, Serialize)]
pub struct Round {
    /// Records/s acknowledged through Sluice.
    pub through_sluice_records_per_sec: f64,
    /// Records/s acknowledged by the broker to librdkafka directly.
    pub direct_records_per_sec: f64,
    /// Sluice / direct.
    pub ratio: f64,
}

/// The comparison.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// Records/s acknowledged through Sluice, over all rounds.
    pub through_sluice_records_per_sec: f64,
    /// Records/s acknowledged by the broker to librdkafka directly, over all rounds.
    pub direct_records_per_sec: f64,
    /// Sluice / direct, over all rounds.
    pub ratio: f64,
    /// The median of the rounds' ratios.
    pub median_round_ratio: f64,
    /// Each round.
    pub rounds: Vec<Round>,
    /// Records sent directly.
    pub direct_records: u64,
    /// Seconds of the direct run.
    pub direct_secs: f64,
    /// Failed direct deliveries.
    pub direct_errors: u64,
    /// The last round's Sluice report.
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
    let mut direct = Direct {
        producer,
        topic: topic.clone(),
        picker: KeyPicker::new(&keys),
        rng: Rng::new(scenario.seed, 0),
        // As many records in flight as the Sluice run had: connections ×
        // frames in flight × batch.
        window: (group.connections * group.in_flight * group.batch) as usize,
        record_bytes: group.record_bytes,
        sent: 0,
    };
    let rounds = args.rounds.max(1);
    let block = Duration::from_millis(scenario.run.duration_ms / u64::from(rounds));
    scenario.run.duration_ms = block.as_millis() as u64;
    let mut results = Vec::new();
    let mut report = None;
    let (mut direct_records, mut direct_secs, mut direct_errors) = (0u64, 0.0, 0u64);
    for round in 1..=rounds {
        eprintln!("kafka-compare: round {round}/{rounds}, through Sluice");
        let sluice = run(&scenario, &options).await?;
        let through = sluice
            .groups
            .iter()
            .find(|g| g.name == group.name)
            .map_or(0.0, |g| g.records_per_sec);
        eprintln!("kafka-compare: round {round}/{rounds}, straight to the broker with librdkafka");
        let (acked, errors, secs) = direct.block(block).await;
        let rate = acked as f64 / secs.max(1e-3);
        (direct_records, direct_secs, direct_errors) = (
            direct_records + acked,
            direct_secs + secs,
            direct_errors + errors,
        );
        eprintln!(
            "kafka-compare: round {round}: through Sluice {through:.0} records/s, direct {rate:.0} records/s, ratio {:.2}",
            through / rate.max(1e-3)
        );
        results.push(Round {
            through_sluice_records_per_sec: through,
            direct_records_per_sec: rate,
            ratio: if rate > 0.0 { through / rate } else { 0.0 },
        });
        report = Some(sluice);
    }
    drop(process);
    // Every Sluice block is as long: the overall rate is their mean.
    let through = results
        .iter()
        .map(|r| r.through_sluice_records_per_sec)
        .sum::<f64>()
        / results.len().max(1) as f64;
    let direct_rate = direct_records as f64 / direct_secs.max(1e-3);
    let mut ratios: Vec<f64> = results.iter().map(|r| r.ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let median = match ratios.len() {
        0 => 0.0,
        n if n % 2 == 1 => ratios[n / 2],
        n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
    };
    let comparison = Comparison {
        through_sluice_records_per_sec: through,
        direct_records_per_sec: direct_rate,
        ratio: if direct_rate > 0.0 {
            through / direct_rate
        } else {
            0.0
        },
        median_round_ratio: median,
        rounds: results,
        direct_records,
        direct_secs,
        direct_errors,
        sluice: report.context("no round ran")?,
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
        "kafka-compare: through Sluice {:.0} records/s, direct librdkafka {:.0} records/s ({} records in {:.1} s, {} errors): ratio {:.2}; {} rounds, median round ratio {:.2} ({})",
        comparison.through_sluice_records_per_sec,
        comparison.direct_records_per_sec,
        comparison.direct_records,
        comparison.direct_secs,
        comparison.direct_errors,
        comparison.ratio,
        comparison.rounds.len(),
        comparison.median_round_ratio,
        comparison
            .rounds
            .iter()
            .map(|r| format!("{:.2}", r.ratio))
            .collect::<Vec<_>>()
            .join(", "),
    );
    Ok(())
}

/// librdkafka producing straight to the broker.
struct Direct {
    producer: FutureProducer,
    topic: String,
    picker: KeyPicker,
    rng: Rng,
    window: usize,
    record_bytes: usize,
    sent: u64,
}

impl Direct {
    /// Produces for `duration` with `window` records in flight; returns
    /// the records acknowledged, the failures and the seconds taken.
    async fn block(&mut self, duration: Duration) -> (u64, u64, f64) {
        use futures_util::StreamExt as _;
        let start = Instant::now();
        let deadline = start + duration;
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let (mut acked, mut errors) = (0u64, 0u64);
        let mut value = String::new();
        loop {
            while in_flight.len() < self.window && Instant::now() < deadline {
                value.clear();
                Stamp {
                    producer: 0,
                    seq: self.sent,
                    sent_us: crate::payload::now_us(),
                }
                .write_value(self.record_bytes, &mut value);
                let key = self.picker.pick(&mut self.rng).map(|k| format!("key-{k}"));
                let mut record = FutureRecord::to(&self.topic).payload(value.as_bytes());
                if let Some(key) = &key {
                    record = record.key(key.as_bytes());
                }
                match self.producer.send_result(record) {
                    Ok(delivery) => in_flight.push(delivery),
                    Err(_) => errors += 1,
                }
                self.sent += 1;
            }
            match in_flight.next().await {
                Some(Ok(Ok(_))) => acked += 1,
                Some(_) => errors += 1,
                None => break,
            }
        }
        (acked, errors, start.elapsed().as_secs_f64())
    }
}
