//! The run's report: figures per group and per client, the per-second
//! timeline, latency percentile curves, verification, idle-connection
//! memory and resource use; rendered as text, JSON and a self-contained
//! HTML page ([`html`]).

pub mod html;
pub mod markdown;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::stats::{error_total, Role, Summary, Tick};
use crate::verify::VerifyReport;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Its goal.
    pub goal: String,
    /// Its seed.
    pub seed: u64,
    /// The gateway's URL.
    pub url: String,
    /// The topic used.
    pub topic: String,
    /// The command line, when run from the CLI.
    pub command: String,
    /// Start, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Seconds the producers ran (from the first send to the last answer).
    pub elapsed_secs: f64,
    /// The machine.
    pub machine: Machine,
    /// Figures per group.
    pub groups: Vec<GroupReport>,
    /// Figures per client (credential) of each group.
    pub clients: Vec<ClientReport>,
    /// One entry per second and group.
    pub timeline: Vec<Tick>,
    /// Latency percentile curves.
    pub latency_curves: Vec<Curve>,
    /// Verification, when asked for.
    pub verification: Option<VerifyReport>,
    /// Idle-connection memory, when the scenario has `[idle]`.
    pub idle: Option<IdleReport>,
    /// CPU and memory of the load generator and (with `--server-pid`) the gateway.
    pub resources: Resources,
    /// The scenario's target figures next to what was measured.
    pub targets: Vec<TargetResult>,
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// 1-minute load average at the start.
    pub load_start: f64,
    /// 1-minute load average at the end.
    pub load_end: f64,
    /// Share of the machine's CPU time the hypervisor gave to others during
    /// the run (`steal` in `/proc/stat`), in percent: high steal means the
    /// figures are the host's, not Sluice's.
    pub steal_pct: f64,
}

/// One group's figures.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Name.
    pub name: String,
    /// Producer or subscriber.
    pub role: Role,
    /// Protocol (`rest-v2-binary`, `ws`, `sse`, ...).
    pub protocol: String,
    /// Connections.
    pub connections: u32,
    /// `open` or `closed` (producers).
    pub mode: String,
    /// Asked arrival rate, requests/s (open loop).
    pub rate_per_sec: f64,
    /// Records per request.
    pub batch: u32,
    /// Seconds over which the rates are computed.
    pub secs: f64,
    /// Requests (frames) answered with success per second.
    pub requests_per_sec: f64,
    /// Records acknowledged (or delivered, summed over subscribers) per second.
    pub records_per_sec: f64,
    /// Value MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// The sums and percentiles.
    pub summary: Summary,
}

/// One client's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    /// Group.
    pub group: String,
    /// Client index.
    pub client: u32,
    /// The principal its credential names (`-` without credential).
    pub principal: String,
    /// Requests (or records) per second.
    pub requests_per_sec: f64,
    /// Sums and percentiles.
    pub summary: Summary,
}

/// A latency percentile curve.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// Group.
    pub group: String,
    /// `request` or `end-to-end`.
    pub kind: String,
    /// (percentile, ms).
    pub points: Vec<(f64, f64)>,
}

/// Idle connections and what they cost the gateway.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Asked for.
    pub asked: u32,
    /// Open at the measurement.
    pub opened: u64,
    /// Failed to open.
    pub failed: u64,
    /// First failure.
    pub first_error: Option<String>,
    /// Client processes.
    pub processes: u32,
    /// Seconds to open them all.
    pub open_secs: f64,
    /// Gateway resident memory before (KiB, VmRSS).
    pub server_rss_before_kib: Option<u64>,
    /// Gateway resident memory with all open (KiB).
    pub server_rss_open_kib: Option<u64>,
    /// (open − before) / opened, KiB.
    pub server_kib_per_connection: Option<f64>,
    /// Gateway file descriptors with all open.
    pub server_fds_open: Option<u64>,
}

/// CPU and memory.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Resources {
    /// Load generator CPU seconds (user + system) over the run.
    pub loadgen_cpu_secs: f64,
    /// Gateway CPU seconds over the run (`--server-pid`).
    pub server_cpu_secs: Option<f64>,
    /// Gateway VmRSS at the start, KiB.
    pub server_rss_start_kib: Option<u64>,
    /// Gateway VmRSS at the end, KiB.
    pub server_rss_end_kib: Option<u64>,
    /// Gateway VmHWM (peak) at the end, KiB.
    pub server_rss_peak_kib: Option<u64>,
}

/// A target figure and the measurement.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// In words.
    pub figure: String,
    /// Metric name.
    pub metric: String,
    /// Group.
    pub group: Option<String>,
    /// At least.
    pub min: Option<f64>,
    /// At most.
    pub max: Option<f64>,
    /// Measured.
    pub measured: Option<f64>,
    /// Whether it was met (None: not measured).
    pub met: Option<bool>,
}

impl Report {
    /// Plain-text summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "scenario {}: {}", self.scenario, self.goal.trim());
        let _ = writeln!(
            out,
            "target {} topic {} seed {}; {:.1} s; machine {} cpus, kernel {}, load {:.2} -> {:.2}, steal {:.1}%",
            self.url,
            self.topic,
            self.seed,
            self.elapsed_secs,
            self.machine.cpus,
            self.machine.kernel,
            self.machine.load_start,
            self.machine.load_end,
            self.machine.steal_pct
        );
        for g in &self.groups {
            let s = &g.summary;
            match g.role {
                Role::Producer => {
                    let _ = writeln!(
                        out,
                        "producer {} ({}, {} conns, {}{}, batch {}): {} requests, {} acked, {} records; {:.0} req/s, {:.0} records/s, {:.2} MB/s; errors {}{}",
                        g.name,
                        g.protocol,
                        g.connections,
                        g.mode,
                        if g.mode == "open" { format!(" at {:.0}/s", g.rate_per_sec) } else { String::new() },
                        g.batch,
                        s.requests,
                        s.acked_requests,
                        s.records,
                        g.requests_per_sec,
                        g.records_per_sec,
                        g.mb_per_sec,
                        error_total(&s.errors),
                        if s.missed > 0 { format!(", {} due sends not made", s.missed) } else { String::new() },
                    );
                    if let Some(p) = &s.latency_ms {
                        let _ = writeln!(
                            out,
                            "  latency ms{}: {}",
                            if g.mode == "open" {
                                " (from intended send time)"
                            } else {
                                ""
                            },
                            percentiles(p)
                        );
                    }
                }
                Role::Subscriber => {
                    let _ = writeln!(
                        out,
                        "subscriber {} ({}, {} conns): {} records delivered; {:.0} deliveries/s; errors {}",
                        g.name,
                        g.protocol,
                        g.connections,
                        s.records,
                        g.records_per_sec,
                        error_total(&s.errors)
                    );
                    if let Some(p) = &s.e2e_ms {
                        let _ = writeln!(out, "  end-to-end ms: {}", percentiles(p));
                    }
                }
            }
            for (kind, n) in &s.errors {
                let _ = writeln!(out, "  error {kind}: {n}");
            }
        }
        if self.clients.len() > 1 {
            let _ = writeln!(out, "per client:");
            for c in &self.clients {
                let p99 = c
                    .summary
                    .latency_ms
                    .as_ref()
                    .or(c.summary.e2e_ms.as_ref())
                    .map_or("-".to_owned(), |p| format!("{:.2}", p.p99));
                let _ = writeln!(
                    out,
                    "  {}/{} ({}): {:.0}/s, {} errors, p99 {} ms",
                    c.group,
                    c.client,
                    c.principal,
                    c.requests_per_sec,
                    error_total(&c.summary.errors),
                    p99
                );
            }
        }
        if let Some(v) = &self.verification {
            let _ = writeln!(
                out,
                "verification {}: {} acknowledged, {} subscribers ({} complete), lost {}, duplicates {}, out of order {}, unexpected {}, uncertain {}, misplaced {}",
                if v.ok { "PASSED" } else { "FAILED" },
                v.acknowledged,
                v.subscribers,
                v.subscribers_complete,
                v.lost,
                v.duplicates,
                v.out_of_order,
                v.unexpected,
                v.uncertain,
                v.placement_mismatches
            );
            for p in &v.problems {
                let _ = writeln!(out, "  {p}");
            }
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                out,
                "idle: {} of {} connections open ({} failed) over {} processes in {:.1} s; gateway RSS {} -> {} KiB, {} per connection, {} fds",
                i.opened,
                i.asked,
                i.failed,
                i.processes,
                i.open_secs,
                opt(i.server_rss_before_kib),
                opt(i.server_rss_open_kib),
                i.server_kib_per_connection.map_or("-".into(), |k| format!("{k:.1} KiB")),
                opt(i.server_fds_open)
            );
            if let Some(e) = &i.first_error {
                let _ = writeln!(out, "  first failure: {e}");
            }
        }
        let r = &self.resources;
        let _ = writeln!(
            out,
            "cpu: load generator {:.1} s{}; gateway RSS {} -> {} KiB (peak {})",
            r.loadgen_cpu_secs,
            r.server_cpu_secs
                .map_or(String::new(), |s| format!(", gateway {s:.1} s")),
            opt(r.server_rss_start_kib),
            opt(r.server_rss_end_kib),
            opt(r.server_rss_peak_kib)
        );
        for t in &self.targets {
            let _ = writeln!(
                out,
                "target {}: {} {} -> {}",
                t.figure,
                t.min.map_or(String::new(), |m| format!(">= {m}")),
                t.max.map_or(String::new(), |m| format!("<= {m}")),
                match (t.measured, t.met) {
                    (Some(m), Some(true)) => format!("{m:.2} met"),
                    (Some(m), _) => format!("{m:.2} NOT met"),
                    _ => "not measured".to_owned(),
                }
            );
        }
        out
    }

    /// Writes `report.txt`, `report.json` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.txt"), self.to_text())?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.html"), html::render(self))?;
        Ok(())
    }
}

fn percentiles(p: &crate::stats::Percentiles) -> String {
    format!(
        "p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} (mean {:.2}, {} samples)",
        p.p50, p.p90, p.p99, p.p999, p.max, p.mean, p.count
    )
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |v| v.to_string())
}
