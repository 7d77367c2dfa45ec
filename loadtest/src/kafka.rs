//! `kafka-compare` (feature `kafka`): the Kafka backend's overhead, in one
//! run. Starts one tansu broker (the `sluice-testbed` crate) and a Sluice
//! process whose only cluster is that broker, then alternates, `--rounds`
//! times: a block of the produce scenario through Sluice, a block of the
//! same load produced straight to the broker with librdkafka (as many
//! producers as the Sluice run has connections × requests in flight, each
//! sending a batch of the same records and waiting for all of its acks, as
//! the Sluice clients do), and a block with a sliding window of as many
//! records in flight (each ack lets one more record go at once: what a
//! single librdkafka producer streaming on its own reaches). Reports the
//! rates and both ratios, overall and per round. (The Sluice process stays
//! up, idle, during the direct blocks.)

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
    /// Records/s acknowledged by the broker to librdkafka directly, sent
    /// as the Sluice clients send them: each of `connections × in_flight`
    /// producers sends a batch and waits for all of its acks.
    pub direct_records_per_sec: f64,
    /// Sluice / direct.
    pub ratio: f64,
    /// Records/s acknowledged directly with a sliding window of as many
    /// records in flight: each ack lets one more record go at once.
    pub direct_window_records_per_sec: f64,
    /// Sluice / direct with the sliding window.
    pub window_ratio: f64,
}

/// The comparison.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// Records/s acknowledged through Sluice, over all rounds.
    pub through_sluice_records_per_sec: f64,
    /// Records/s acknowledged by the broker to librdkafka directly, in
    /// batches as the Sluice clients send them, over all rounds.
    pub direct_records_per_sec: f64,
    /// Sluice / direct, over all rounds.
    pub ratio: f64,
    /// The median of the rounds' ratios.
    pub median_round_ratio: f64,
    /// Records/s acknowledged directly with a sliding window, over all rounds.
    pub direct_window_records_per_sec: f64,
    /// Sluice / direct with the sliding window, over all rounds.
    pub window_ratio: f64,
    /// The median of the rounds' sliding-window ratios.
    pub median_round_window_ratio: f64,
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
        seed: scenario.seed,
        // As many producers, each with a batch in flight, as the Sluice
        // run had connections × frames in flight.
        producers: (group.connections * group.in_flight) as usize,
        batch: group.batch as usize,
        record_bytes: group.record_bytes,
        sent: 0,
    };
    let rounds = args.rounds.max(1);
    let block = Duration::from_millis(scenario.run.duration_ms / u64::from(rounds));
    scenario.run.duration_ms = block.as_millis() as u64;
    let mut results = Vec::new();
    let mut report = None;
    let mut batched = Tally::default();
    let mut window = Tally::default();
    for round in 1..=rounds {
        eprintln!("kafka-compare: round {round}/{rounds}, through Sluice");
        let sluice = run(&scenario, &options).await?;
        let through = sluice
            .groups
            .iter()
            .find(|g| g.name == group.name)
            .map_or(0.0, |g| g.records_per_sec);
        eprintln!("kafka-compare: round {round}/{rounds}, straight to the broker with librdkafka, in batches");
        let rate = batched.add(direct.batches(block).await);
        eprintln!("kafka-compare: round {round}/{rounds}, straight to the broker with librdkafka, sliding window");
        let window_rate = window.add(direct.window(block).await);
        let ratio = |direct: f64| if direct > 0.0 { through / direct } else { 0.0 };
        eprintln!(
            "kafka-compare: round {round}: through Sluice {through:.0} records/s, direct {rate:.0} records/s in batches (ratio {:.2}), {window_rate:.0} with a sliding window (ratio {:.2})",
            ratio(rate),
            ratio(window_rate),
        );
        results.push(Round {
            through_sluice_records_per_sec: through,
            direct_records_per_sec: rate,
            ratio: ratio(rate),
            direct_window_records_per_sec: window_rate,
            window_ratio: ratio(window_rate),
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
    let ratio = |direct: f64| if direct > 0.0 { through / direct } else { 0.0 };
    let comparison = Comparison {
        through_sluice_records_per_sec: through,
        direct_records_per_sec: batched.rate(),
        ratio: ratio(batched.rate()),
        median_round_ratio: median(results.iter().map(|r| r.ratio).collect()),
        direct_window_records_per_sec: window.rate(),
        window_ratio: ratio(window.rate()),
        median_round_window_ratio: median(results.iter().map(|r| r.window_ratio).collect()),
        rounds: results,
        direct_records: batched.acked + window.acked,
        direct_secs: batched.secs + window.secs,
        direct_errors: batched.errors + window.errors,
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
    let rounds = |f: fn(&Round) -> f64| {
        comparison
            .rounds
            .iter()
            .map(|r| format!("{:.2}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "kafka-compare: through Sluice {:.0} records/s, direct librdkafka in the same batches {:.0} records/s: ratio {:.2}; {} rounds, median round ratio {:.2} ({}); direct with a sliding window of as many records {:.0} records/s: ratio {:.2}, median round ratio {:.2} ({}); {} direct records in {:.1} s, {} errors",
        comparison.through_sluice_records_per_sec,
        comparison.direct_records_per_sec,
        comparison.ratio,
        comparison.rounds.len(),
        comparison.median_round_ratio,
        rounds(|r| r.ratio),
        comparison.direct_window_records_per_sec,
        comparison.window_ratio,
        comparison.median_round_window_ratio,
        rounds(|r| r.window_ratio),
        comparison.direct_records,
        comparison.direct_secs,
        comparison.direct_errors,
    );
    Ok(())
}

/// The median of `values` (0 for none).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The direct blocks of one kind, added up.
#[derive(Default)]
struct Tally {
    acked: u64,
    errors: u64,
    secs: f64,
}

impl Tally {
    /// Adds a block `(acked, errors, secs)`; returns its rate.
    fn add(&mut self, (acked, errors, secs): (u64, u64, f64)) -> f64 {
        self.acked += acked;
        self.errors += errors;
        self.secs += secs;
        acked as f64 / secs.max(1e-3)
    }

    fn rate(&self) -> f64 {
        self.acked as f64 / self.secs.max(1e-3)
    }
}

/// librdkafka producing straight to the broker.
struct Direct {
    producer: FutureProducer,
    topic: String,
    picker: KeyPicker,
    seed: u64,
    producers: usize,
    batch: usize,
    record_bytes: usize,
    sent: u64,
}

impl Direct {
    /// Produces for `duration` the way the Sluice clients do: each
    /// producer sends a batch, waits until every record of it is
    /// acknowledged, then sends the next. Returns the records
    /// acknowledged, the failures and the seconds taken.
    async fn batches(&mut self, duration: Duration) -> (u64, u64, f64) {
        let start = Instant::now();
        let deadline = start + duration;
        let this = &*self;
        let producers = (0..this.producers).map(|p| async move {
            let mut rng = Rng::new(this.seed, p as u64 + 1);
            let (mut acked, mut errors, mut seq) = (0u64, 0u64, 0u64);
            let mut value = String::new();
            let mut deliveries = Vec::with_capacity(this.batch);
            while Instant::now() < deadline {
                for _ in 0..this.batch {
                    match this.send(p as u32, seq, &mut rng, &mut value) {
                        Ok(delivery) => deliveries.push(delivery),
                        Err(()) => errors += 1,
                    }
                    seq += 1;
                }
                for delivery in deliveries.drain(..) {
                    match delivery.await {
                        Ok(Ok(_)) => acked += 1,
                        _ => errors += 1,
                    }
                }
            }
            (acked, errors, seq)
        });
        let results = futures_util::future::join_all(producers).await;
        let (mut acked, mut errors) = (0, 0);
        for (a, e, sent) in results {
            acked += a;
            errors += e;
            self.sent += sent;
        }
        (acked, errors, start.elapsed().as_secs_f64())
    }

    /// Produces for `duration` with `producers × batch` records in flight,
    /// each ack letting the next record go; returns the records
    /// acknowledged, the failures and the seconds taken.
    async fn window(&mut self, duration: Duration) -> (u64, u64, f64) {
        use futures_util::StreamExt as _;
        let start = Instant::now();
        let deadline = start + duration;
        let window = self.producers * self.batch;
        let mut rng = Rng::new(self.seed, 0);
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let (mut acked, mut errors) = (0u64, 0u64);
        let mut value = String::new();
        loop {
            while in_flight.len() < window && Instant::now() < deadline {
                match self.send(0, self.sent, &mut rng, &mut value) {
                    Ok(delivery) => in_flight.push(delivery),
                    Err(()) => errors += 1,
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

    /// Hands one stamped record to librdkafka.
    fn send(
        &self,
        producer: u32,
        seq: u64,
        rng: &mut Rng,
        value: &mut String,
    ) -> Result<rdkafka::producer::DeliveryFuture, ()> {
        value.clear();
        Stamp {
            producer,
            seq,
            sent_us: crate::payload::now_us(),
        }
        .write_value(self.record_bytes, value);
        // A key name and a send time per record. Naming keys once and
        // stamping once per batch, as the Sluice clients do, measured
        // slower here (681k-697k records/s in batches against 711k-758k,
        // six-round runs on the same build): this is the stricter baseline.
        let key = self.picker.pick(rng).map(|k| format!("key-{k}"));
        let mut record = FutureRecord::to(&self.topic).payload(value.as_bytes());
        if let Some(key) = &key {
            record = record.key(key.as_bytes());
        }
        self.producer.send_result(record).map_err(|_| ())
    }
}
