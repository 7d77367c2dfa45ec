//! Scenarios as data: `loadtest/scenarios/<name>/scenario.toml` holds the
//! goal, the seed and every setting of a run. `--set key=value` changes
//! one setting for one run (`run.duration_ms=2000`,
//! `producers.0.rate_per_sec=5000`).

use std::path::Path;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// Default run length.
pub const DEFAULT_DURATION_MS: u64 = 10_000;
/// Default time subscribers get after the producers stop to receive the rest.
pub const DEFAULT_DRAIN_MS: u64 = 5_000;
/// Default seed of the key and payload choices.
pub const DEFAULT_SEED: u64 = 1;
/// Default record value size.
pub const DEFAULT_RECORD_BYTES: usize = 100;
/// Default credit of a WebSocket subscription.
pub const DEFAULT_CREDIT: u32 = 1_000;

/// One scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; the folder's name when read from `scenarios/<name>/`.
    #[serde(default)]
    pub name: String,
    /// What the scenario shows, in a sentence or two.
    pub goal: String,
    /// Seed of every random choice (keys), so runs repeat.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Length, limits and checks of the run.
    #[serde(default)]
    pub run: RunSettings,
    /// The topic the run uses.
    #[serde(default)]
    pub topic: TopicSettings,
    /// Groups of producing connections.
    #[serde(default)]
    pub producers: Vec<ProducerGroup>,
    /// Groups of subscribing connections.
    #[serde(default)]
    pub subscribers: Vec<SubscriberGroup>,
    /// Idle connections held open while the gateway's memory is measured.
    #[serde(default)]
    pub idle: Option<IdleSettings>,
    /// Figures the scenario is meant to reach, shown next to the results.
    #[serde(default)]
    pub targets: Vec<TargetFigure>,
}

fn default_seed() -> u64 {
    DEFAULT_SEED
}

/// Length, limits and checks of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// How long producers send (after the subscribers are ready).
    pub duration_ms: u64,
    /// Producers go from nothing to their full rate (open loop) or
    /// connection count (closed loop) over this time; the summary
    /// histograms leave it out.
    pub ramp_up_ms: u64,
    /// After the producers stop: how long subscribers may take to receive the rest.
    pub drain_ms: u64,
    /// Check that every acknowledged record reached every subscriber, in
    /// order per partition, once.
    pub verify: bool,
    /// Spread connections over 127.0.0.1 ..= 127.0.0.N (loopback targets).
    pub source_addresses: u32,
    /// Header carrying each client's credential.
    pub auth_header: String,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            duration_ms: DEFAULT_DURATION_MS,
            ramp_up_ms: 0,
            drain_ms: DEFAULT_DRAIN_MS,
            verify: false,
            source_addresses: 1,
            auth_header: "Authorization".to_owned(),
        }
    }
}

/// The topic of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicSettings {
    /// Topic name (with `unique`, a suffix is added).
    pub name: String,
    /// Add `-<run id>` so every run starts on an empty topic.
    pub unique: bool,
    /// Partitions when the run creates the topic.
    pub partitions: u32,
    /// Create the topic through the v3 route before the run (otherwise the
    /// first produce auto-creates it, or it must exist).
    pub create: bool,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            name: "loadtest".to_owned(),
            unique: true,
            partitions: 3,
            create: true,
        }
    }
}

/// How a producer group sends.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProduceProtocol {
    /// `POST /topics/{t}`, `application/vnd.kafka.binary.v2+json`.
    RestV2Binary,
    /// `POST /topics/{t}`, `application/vnd.kafka.json.v2+json`.
    RestV2Json,
    /// `POST /v3/clusters/{c}/topics/{t}/records`, one record per request.
    RestV3,
    /// `produce` frames on `/v1/ws`.
    Ws,
}

/// How a subscriber group reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SubscribeProtocol {
    /// `subscribe` on `/v1/ws`.
    Ws,
    /// `GET /topics/{t}/events`.
    Sse,
    /// Confluent v2 consumer instances (`/consumers/{group}/...`).
    RestConsumerV2,
}

/// Open or closed loop.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoadMode {
    /// Fixed concurrency: the next request leaves when an answer comes.
    #[default]
    Closed,
    /// Fixed arrival rate: requests leave on a schedule, latency counts
    /// from the scheduled time.
    Open,
}

/// A group of producing connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerGroup {
    /// Name in reports.
    pub name: String,
    /// How it sends.
    pub protocol: ProduceProtocol,
    /// Connections (REST: one request in flight each).
    #[serde(default = "one")]
    pub connections: u32,
    /// Produce frames in flight per WebSocket connection.
    #[serde(default = "one")]
    pub in_flight: u32,
    /// Records per request or frame.
    #[serde(default = "one")]
    pub batch: u32,
    /// Size of each record value (at least the 41-byte stamp).
    #[serde(default = "default_record_bytes")]
    pub record_bytes: usize,
    /// `none`, `uniform:K` or `zipf:K:EXPONENT`.
    #[serde(default = "default_keys")]
    pub keys: String,
    /// Open or closed loop.
    #[serde(default)]
    pub mode: LoadMode,
    /// Open loop: requests (frames) per second for the whole group.
    #[serde(default)]
    pub rate_per_sec: f64,
    /// Stop after this many requests (frames) for the whole group; 0: no limit.
    #[serde(default)]
    pub count: u64,
    /// Distinct clients (credentials); connections are dealt to them in turn.
    #[serde(default = "one")]
    pub clients: u32,
    /// Credential template sent in `run.auth_header`; `{group}` and
    /// `{client}` are replaced. None: no header.
    #[serde(default)]
    pub credential: Option<String>,
    /// `acks` asked for (`0`, `1`, `all`); the gateway's default when absent.
    #[serde(default)]
    pub acks: Option<String>,
    /// Open loop: wait for each send time with a `timerfd` (tens of
    /// microseconds late at most) instead of tokio's millisecond timer, for
    /// scenarios whose figure is latency. Costs the load generator a
    /// wake-up per send.
    #[serde(default)]
    pub precise_pacing: bool,
}

/// A group of subscribing connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberGroup {
    /// Name in reports.
    pub name: String,
    /// How it reads.
    pub protocol: SubscribeProtocol,
    /// Subscribers (one connection each).
    #[serde(default = "one")]
    pub connections: u32,
    /// WebSocket credit: granted again in halves as records arrive.
    #[serde(default = "default_credit")]
    pub credit: u32,
    /// Distinct clients (credentials).
    #[serde(default = "one")]
    pub clients: u32,
    /// Credential template, as for producers.
    #[serde(default)]
    pub credential: Option<String>,
}

/// Idle connections for the memory measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleSettings {
    /// Connections in all.
    pub connections: u32,
    /// Client processes they are spread over (each below the per-process
    /// open-file limit).
    #[serde(default = "one")]
    pub processes: u32,
    /// WebSocket upgrade (`/v1/ws`) on each, or bare TLS/TCP connections.
    #[serde(default = "yes")]
    pub websocket: bool,
    /// Connections opened at once per process.
    #[serde(default = "default_open_concurrency")]
    pub open_concurrency: u32,
    /// How long the connections are held once all are open.
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
}

/// A figure a scenario aims at.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFigure {
    /// What is measured, in words ("records/s of group main").
    pub figure: String,
    /// Group it reads.
    #[serde(default)]
    pub group: Option<String>,
    /// `records_per_sec`, `requests_per_sec`, `p99_ms`, `deliveries_per_sec`, `idle_kib_per_connection`.
    pub metric: String,
    /// At least this.
    #[serde(default)]
    pub min: Option<f64>,
    /// At most this.
    #[serde(default)]
    pub max: Option<f64>,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_record_bytes() -> usize {
    DEFAULT_RECORD_BYTES
}
fn default_keys() -> String {
    "none".to_owned()
}
fn default_credit() -> u32 {
    DEFAULT_CREDIT
}
fn default_open_concurrency() -> u32 {
    64
}
fn default_hold_ms() -> u64 {
    3_000
}

impl Scenario {
    /// Reads `path` (a `scenario.toml`, or a folder holding one) and applies
    /// `overrides` (`key=value`, value in TOML syntax or a bare string).
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<Self> {
        let file = if path.is_dir() {
            path.join("scenario.toml")
        } else {
            path.to_owned()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let mut scenario = Self::parse(&text, overrides)
            .with_context(|| format!("scenario {}", file.display()))?;
        if scenario.name.is_empty() {
            let dir = if path.is_dir() {
                path
            } else {
                path.parent().unwrap_or(path)
            };
            scenario.name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".to_owned());
        }
        Ok(scenario)
    }

    /// Parses scenario TOML and applies `overrides`.
    pub fn parse(text: &str, overrides: &[String]) -> anyhow::Result<Self> {
        let mut value: toml::Value = toml::from_str(text)?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let scenario: Self = value.try_into()?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.producers.is_empty() && self.subscribers.is_empty() && self.idle.is_none() {
            bail!("nothing to run: no [[producers]], [[subscribers]] or [idle]");
        }
        for p in &self.producers {
            crate::payload::KeyDistribution::parse(&p.keys)
                .with_context(|| format!("producers {}: keys", p.name))?;
            if p.connections == 0 || p.batch == 0 || p.in_flight == 0 || p.clients == 0 {
                bail!(
                    "producers {}: connections, batch, in_flight and clients must be at least 1",
                    p.name
                );
            }
            if p.mode == LoadMode::Open && p.rate_per_sec <= 0.0 {
                bail!("producers {}: an open loop needs rate_per_sec > 0", p.name);
            }
            if p.protocol == ProduceProtocol::RestV3 && p.batch != 1 {
                bail!(
                    "producers {}: v3 produce carries one record per request (batch = 1)",
                    p.name
                );
            }
            if let Some(acks) = &p.acks {
                if !matches!(acks.as_str(), "0" | "1" | "all" | "-1") {
                    bail!("producers {}: acks must be 0, 1, all or -1", p.name);
                }
            }
        }
        for s in &self.subscribers {
            if s.connections == 0 || s.clients == 0 {
                bail!(
                    "subscribers {}: connections and clients must be at least 1",
                    s.name
                );
            }
        }
        if self.run.duration_ms == 0 && self.producers.iter().any(|p| p.count == 0) {
            bail!("run.duration_ms = 0 needs a count on every producer group");
        }
        Ok(())
    }
}

/// `a.b.0.c=value`: sets one key; the value is TOML (`5000`, `true`,
/// `"x"`), or taken as a string when it does not parse.
fn apply_override(root: &mut toml::Value, assignment: &str) -> anyhow::Result<()> {
    let (path, raw) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment}: expected key=value"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let parts: Vec<&str> = path.trim().split('.').collect();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        node = match node {
            toml::Value::Table(table) => {
                if last {
                    table.insert((*part).to_owned(), value);
                    return Ok(());
                }
                table
                    .entry((*part).to_owned())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
            }
            toml::Value::Array(items) => {
                let index: usize = part
                    .parse()
                    .with_context(|| format!("--set {path}: {part} is not an index"))?;
                let len = items.len();
                let item = items
                    .get_mut(index)
                    .with_context(|| format!("--set {path}: index {index} of {len}"))?;
                if last {
                    *item = value;
                    return Ok(());
                }
                item
            }
            _ => bail!("--set {path}: {part} is not inside a table or array"),
        };
    }
    bail!("--set {assignment}: empty key")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
goal = "g"
[[producers]]
name = "p"
protocol = "rest-v2-binary"
"#;

    #[test]
    fn overrides_reach_tables_and_arrays() {
        let s = Scenario::parse(
            MINIMAL,
            &[
                "run.duration_ms=1234".into(),
                "producers.0.connections=7".into(),
                "producers.0.keys=uniform:10".into(),
                "topic.name=\"x\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(s.run.duration_ms, 1234);
        assert_eq!(s.producers[0].connections, 7);
        assert_eq!(s.producers[0].keys, "uniform:10");
        assert_eq!(s.topic.name, "x");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Scenario::parse(&format!("{MINIMAL}\nconections = 3\n"), &[]).is_err());
        assert!(Scenario::parse(MINIMAL, &["producers.3.batch=1".into()]).is_err());
    }

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let s = Scenario::load(&path, &[]).unwrap();
            assert!(!s.goal.is_empty(), "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 7, "{seen} scenarios");
    }
}
