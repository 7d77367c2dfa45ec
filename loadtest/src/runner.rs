//! Runs a scenario end to end: topic, subscribers (all subscribed before
//! anything is produced), producers, progress line, drain, verification,
//! report.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::Method;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::HttpConn;
use crate::net::{raise_nofile_limit, Target, TlsOptions};
use crate::pacing::{share, Schedule};
use crate::payload::now_us;
use crate::report::{
    ClientReport, Curve, GroupReport, IdleReport, Machine, Report, Resources, TargetResult,
};
use crate::scenario::{IdleSettings, LoadMode, ProduceProtocol, Scenario, SubscribeProtocol};
use crate::stats::{lock, percentile_curve, summarize, Registry, Role, StatsHandle, Timeline};
use crate::verify::{AckLog, Delivery};
use crate::workload::consumer::ConsumerV2Subscriber;
use crate::workload::idle::IdleSet;
use crate::workload::rest::RestProducer;
use crate::workload::sse::SseSubscriber;
use crate::workload::ws::{WsProducer, WsSubscriber};
use crate::workload::{principal, Ctx, Phase};

/// How the scenario is run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The gateway, `https://host:port`.
    pub url: String,
    /// TLS trust.
    pub tls: TlsOptions,
    /// The gateway's process, for its memory and CPU.
    pub server_pid: Option<u32>,
    /// Print the progress line to stderr every second.
    pub progress: bool,
    /// The command line, for the report.
    pub command: String,
    /// The `sluice-loadtest` binary, for idle-connection child processes
    /// (the current executable when absent).
    pub worker_exe: Option<PathBuf>,
}

/// Runs `scenario` against `options.url`.
pub async fn run(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<Report> {
    scenario.validate()?;
    let machine = Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load_start: load_average(),
        load_end: 0.0,
        steal_pct: 0.0,
    };
    let steal_start = steal_ticks();
    let started_at_ms = now_us() / 1000;
    let cpu_start = cpu_secs("self");
    let server = options.server_pid.map(|p| p.to_string());
    let server_cpu_start = server.as_deref().and_then(cpu_secs);
    let server_rss_start = server.as_deref().and_then(|p| proc_status(p, "VmRSS"));
    raise_nofile_limit();
    let target = Target::new(&options.url, &options.tls, scenario.run.source_addresses).await?;
    let topic = if scenario.topic.unique {
        format!("{}-{:x}", scenario.topic.name, now_us())
    } else {
        scenario.topic.name.clone()
    };
    let auth_header = HeaderName::from_bytes(scenario.run.auth_header.as_bytes())
        .context("run.auth_header is not a header name")?;
    let needs_topic = !scenario.producers.is_empty() || !scenario.subscribers.is_empty();
    let cluster_id = if needs_topic {
        cluster_id(&target).await
    } else {
        "sluice".to_owned()
    };
    if needs_topic && scenario.topic.create {
        create_topic(&target, &cluster_id, &topic, scenario.topic.partitions).await?;
    }
    let idle = match &scenario.idle {
        Some(idle) => Some(run_idle(idle, options, &target, server.as_deref()).await?),
        None => None,
    };

    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let acks = scenario.run.verify.then(AckLog::default);
    let ctx = Arc::new(Ctx {
        target: target.clone(),
        topic: topic.clone(),
        cluster_id,
        acks: acks.clone(),
        acked_records: AtomicU64::new(0),
        phase: phase_rx,
        auth_header,
        seed: scenario.seed,
    });
    let registry = Registry::default();
    let mut handles: BTreeMap<(String, Role, u32), StatsHandle> = BTreeMap::new();
    let mut handle_for = |group: &str, role: Role, client: u32, template: Option<&str>| {
        handles
            .entry((group.to_owned(), role, client))
            .or_insert_with(|| {
                let name = template.map_or("-".to_owned(), |t| principal(t, group, client));
                registry.register(group, role, client, name, None)
            })
            .clone()
    };

    // Subscribers first, all subscribed before the producers start.
    let total_subscribers: u32 = scenario.subscribers.iter().map(|s| s.connections).sum();
    let (ready_tx, mut ready_rx) =
        tokio::sync::mpsc::channel::<Result<(), String>>(total_subscribers.max(1) as usize);
    let mut subscribers = tokio::task::JoinSet::new();
    for g in &scenario.subscribers {
        for i in 0..g.connections {
            let client = i % g.clients;
            let stats = handle_for(&g.name, Role::Subscriber, client, g.credential.as_deref());
            let auth = ctx.credential(g.credential.as_deref(), &g.name, client);
            let (ctx, group, ready) = (ctx.clone(), g.clone(), ready_tx.clone());
            match g.protocol {
                SubscribeProtocol::Ws => subscribers.spawn(
                    WsSubscriber {
                        ctx,
                        group,
                        auth,
                        stats,
                    }
                    .run(ready),
                ),
                SubscribeProtocol::Sse => subscribers.spawn(
                    SseSubscriber {
                        ctx,
                        group,
                        auth,
                        stats,
                    }
                    .run(ready),
                ),
                SubscribeProtocol::RestConsumerV2 => subscribers.spawn(
                    ConsumerV2Subscriber {
                        ctx,
                        group,
                        index: i,
                        auth,
                        stats,
                    }
                    .run(ready),
                ),
            };
        }
    }
    drop(ready_tx);
    let mut subscribe_failures = Vec::new();
    let ready_deadline =
        Instant::now() + crate::workload::SUBSCRIBE_TIMEOUT + Duration::from_secs(5);
    for _ in 0..total_subscribers {
        match tokio::time::timeout_at(ready_deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => subscribe_failures.push(e),
            Ok(None) | Err(_) => {
                subscribe_failures.push("subscriber not ready in time".to_owned());
                break;
            }
        }
    }
    if !subscribe_failures.is_empty() {
        eprintln!(
            "sluice-loadtest: {} of {total_subscribers} subscribers failed to start; first: {}",
            subscribe_failures.len(),
            subscribe_failures[0]
        );
    }

    // Producers.
    let start = Instant::now() + Duration::from_millis(20);
    let wall_start_us = now_us() + 20_000;
    let ramp = Duration::from_millis(scenario.run.ramp_up_ms);
    let deadline = start + Duration::from_millis(scenario.run.duration_ms.max(1));
    let deadline = if scenario.run.duration_ms == 0 {
        start + Duration::from_secs(24 * 3600)
    } else {
        deadline
    };
    for entry in registry.entries() {
        lock(&entry.handle).set_steady_from(start + ramp);
    }
    let drain = Duration::from_millis(scenario.run.drain_ms);
    let mut producers = tokio::task::JoinSet::new();
    let mut producer_id = 0u32;
    for g in &scenario.producers {
        for i in 0..g.connections {
            producer_id += 1;
            let client = i % g.clients;
            let stats = handle_for(&g.name, Role::Producer, client, g.credential.as_deref());
            lock(&stats).set_steady_from(start + ramp);
            let auth = ctx.credential(g.credential.as_deref(), &g.name, client);
            let count = share(g.count, g.connections, i);
            let schedule = match g.mode {
                // Connections take turns: connection i is offset by i
                // sends of the group's rate, so the group's sends are
                // evenly spaced and exactly `rate × time` are due.
                LoadMode::Open => Schedule::open(
                    start + Duration::from_secs_f64(f64::from(i) / g.rate_per_sec),
                    g.rate_per_sec / f64::from(g.connections),
                    ramp,
                    deadline,
                    count,
                ),
                LoadMode::Closed => Schedule::closed(
                    start + ramp.mul_f64(f64::from(i) / f64::from(g.connections)),
                    deadline,
                    count,
                ),
            };
            let ctx = ctx.clone();
            let group = g.clone();
            if g.protocol == ProduceProtocol::Ws {
                producers.spawn(
                    WsProducer {
                        ctx,
                        group,
                        producer: producer_id,
                        auth,
                        stats,
                        schedule,
                        wall_start_us,
                        start,
                        drain,
                    }
                    .run(),
                );
            } else {
                producers.spawn(
                    RestProducer {
                        ctx,
                        group,
                        producer: producer_id,
                        auth,
                        stats,
                        schedule,
                        wall_start_us,
                        start,
                    }
                    .run(),
                );
            }
        }
    }
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let progress = {
        let registry = registry.clone();
        let print = options.progress;
        tokio::spawn(async move {
            let mut timeline = Timeline::new(registry, start);
            let mut tick = tokio::time::interval_at(
                start + crate::stats::PROGRESS_INTERVAL,
                crate::stats::PROGRESS_INTERVAL,
            );
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let line = timeline.sample();
                        if print {
                            eprintln!("{line}");
                        }
                    }
                    _ = &mut stop_rx => break,
                }
            }
            timeline.sample();
            timeline
        })
    };
    while let Some(done) = producers.join_next().await {
        if let Err(e) = done {
            eprintln!("sluice-loadtest: a producer failed: {e}");
        }
    }
    let producers_done = Instant::now();
    let _ = phase_tx.send(Phase::Draining {
        until: producers_done + drain,
    });
    let mut deliveries: Vec<Delivery> = Vec::new();
    while let Some(done) = subscribers.join_next().await {
        match done {
            Ok(d) => deliveries.push(d),
            Err(e) => eprintln!("sluice-loadtest: a subscriber failed: {e}"),
        }
    }
    let _ = stop_tx.send(());
    let ticks = progress.await.map(|t| t.ticks).unwrap_or_default();
    let elapsed_secs = if scenario.producers.is_empty() {
        0.0
    } else {
        producers_done
            .saturating_duration_since(start)
            .as_secs_f64()
    };

    // The report.
    let entries = registry.entries();
    let secs = elapsed_secs.max(1e-3);
    let mut groups = Vec::new();
    let mut curves = Vec::new();
    let describe = |role: Role, name: &str| -> (String, u32, String, f64, u32) {
        match role {
            Role::Producer => scenario
                .producers
                .iter()
                .find(|p| p.name == name)
                .map(|p| {
                    (
                        protocol_name(&p.protocol),
                        p.connections,
                        match p.mode {
                            LoadMode::Open => "open".to_owned(),
                            LoadMode::Closed => "closed".to_owned(),
                        },
                        p.rate_per_sec,
                        p.batch,
                    )
                })
                .unwrap_or_default(),
            Role::Subscriber => scenario
                .subscribers
                .iter()
                .find(|s| s.name == name)
                .map(|s| {
                    (
                        serde_json::to_value(s.protocol)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        s.connections,
                        "-".to_owned(),
                        0.0,
                        1,
                    )
                })
                .unwrap_or_default(),
        }
    };
    // Producers first, in scenario order, then subscribers.
    let mut keys: Vec<(Role, String)> = Vec::new();
    for e in &entries {
        if !keys.contains(&(e.role, e.group.clone())) {
            keys.push((e.role, e.group.clone()));
        }
    }
    keys.sort_by_key(|k| k.0);
    for (role, name) in &keys {
        let members: Vec<_> = entries
            .iter()
            .filter(|e| &e.role == role && &e.group == name)
            .collect();
        let (summary, latency, e2e) = summarize(&members);
        let (protocol, connections, mode, rate, batch) = describe(*role, name);
        match role {
            Role::Producer => curves.push(Curve {
                group: name.clone(),
                kind: "request".to_owned(),
                points: percentile_curve(&latency),
            }),
            Role::Subscriber => curves.push(Curve {
                group: name.clone(),
                kind: "end-to-end".to_owned(),
                points: percentile_curve(&e2e),
            }),
        }
        groups.push(GroupReport {
            name: name.clone(),
            role: *role,
            protocol,
            connections,
            mode,
            rate_per_sec: rate,
            batch,
            secs,
            requests_per_sec: summary.acked_requests as f64 / secs,
            records_per_sec: summary.records as f64 / secs,
            mb_per_sec: summary.bytes as f64 / secs / 1e6,
            summary,
        });
    }
    let clients = entries
        .iter()
        .map(|e| {
            let (summary, _, _) = summarize(&[e]);
            ClientReport {
                group: e.group.clone(),
                client: e.client,
                principal: e.principal.clone(),
                requests_per_sec: match e.role {
                    Role::Producer => summary.acked_requests as f64 / secs,
                    Role::Subscriber => summary.records as f64 / secs,
                },
                summary,
            }
        })
        .collect();
    let verification = acks.map(|log| log.check(&deliveries));
    let resources = Resources {
        loadgen_cpu_secs: cpu_secs("self").unwrap_or(0.0) - cpu_start.unwrap_or(0.0),
        server_cpu_secs: server
            .as_deref()
            .and_then(cpu_secs)
            .zip(server_cpu_start)
            .map(|(end, start)| end - start),
        server_rss_start_kib: server_rss_start,
        server_rss_end_kib: server.as_deref().and_then(|p| proc_status(p, "VmRSS")),
        server_rss_peak_kib: server.as_deref().and_then(|p| proc_status(p, "VmHWM")),
    };
    let mut report = Report {
        scenario: scenario.name.clone(),
        goal: scenario.goal.clone(),
        seed: scenario.seed,
        url: options.url.clone(),
        topic,
        command: options.command.clone(),
        started_at_ms,
        elapsed_secs,
        machine: Machine {
            load_end: load_average(),
            steal_pct: steal_share(steal_start, steal_ticks()),
            ..machine
        },
        groups,
        clients,
        timeline: ticks,
        latency_curves: curves,
        verification,
        idle,
        resources,
        targets: Vec::new(),
    };
    report.targets = scenario
        .targets
        .iter()
        .map(|t| {
            let measured = measure(&report, t.group.as_deref(), &t.metric);
            let met = measured
                .map(|m| t.min.is_none_or(|min| m >= min) && t.max.is_none_or(|max| m <= max));
            TargetResult {
                figure: t.figure.clone(),
                metric: t.metric.clone(),
                group: t.group.clone(),
                min: t.min,
                max: t.max,
                measured,
                met,
            }
        })
        .collect();
    Ok(report)
}

fn protocol_name(p: &ProduceProtocol) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A named figure of the report.
fn measure(report: &Report, group: Option<&str>, metric: &str) -> Option<f64> {
    if metric == "idle_kib_per_connection" {
        return report.idle.as_ref()?.server_kib_per_connection;
    }
    let g = report
        .groups
        .iter()
        .find(|g| group.is_none_or(|name| g.name == name))?;
    match metric {
        "records_per_sec" | "deliveries_per_sec" => Some(g.records_per_sec),
        "requests_per_sec" => Some(g.requests_per_sec),
        "p99_ms" => g.summary.latency_ms.as_ref().map(|p| p.p99),
        "e2e_p99_ms" => g.summary.e2e_ms.as_ref().map(|p| p.p99),
        _ => None,
    }
}

/// The v3 cluster id (`GET /v3/clusters`), `sluice` when it cannot be read.
async fn cluster_id(target: &Target) -> String {
    let fallback = "sluice".to_owned();
    let Ok(mut conn) = HttpConn::connect(target, None).await else {
        return fallback;
    };
    let accept = [(ACCEPT, HeaderValue::from_static("application/json"))];
    let Ok(answer) = conn
        .request(
            Method::GET,
            &target.path("/v3/clusters"),
            &accept,
            Bytes::new(),
        )
        .await
    else {
        return fallback;
    };
    serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v["data"][0]["cluster_id"].as_str().map(str::to_owned))
        .unwrap_or(fallback)
}

/// Creates the topic; an existing topic is fine.
async fn create_topic(
    target: &Target,
    cluster_id: &str,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<()> {
    let mut conn = HttpConn::connect(target, None)
        .await
        .with_context(|| format!("connecting to {}", target.authority()))?;
    let body = serde_json::json!({"topic_name": topic, "partitions_count": partitions});
    let headers = [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    let answer = conn
        .request(
            Method::POST,
            &target.path(&format!("/v3/clusters/{cluster_id}/topics")),
            &headers,
            Bytes::from(body.to_string()),
        )
        .await?;
    if !answer.status.is_success() && !String::from_utf8_lossy(&answer.body).contains("40002") {
        eprintln!(
            "sluice-loadtest: creating topic {topic} answered {} ({}); going on (it may be auto-created)",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(())
}

/// Opens the idle connections (over child processes when asked) and
/// measures the gateway's memory.
async fn run_idle(
    idle: &IdleSettings,
    options: &RunOptions,
    target: &Target,
    server: Option<&str>,
) -> anyhow::Result<IdleReport> {
    let rss_before = server.and_then(|p| proc_status(p, "VmRSS"));
    let started = Instant::now();
    let processes = idle.processes.max(1);
    let mut report = IdleReport {
        asked: idle.connections,
        opened: 0,
        failed: 0,
        first_error: None,
        processes,
        open_secs: 0.0,
        server_rss_before_kib: rss_before,
        server_rss_open_kib: None,
        server_kib_per_connection: None,
        server_fds_open: None,
    };
    let measure = |report: &mut IdleReport| {
        let rss = server.and_then(|p| proc_status(p, "VmRSS"));
        report.server_rss_open_kib = rss;
        report.server_fds_open = server.and_then(fd_count);
        if let (Some(before), Some(after)) = (rss_before, rss) {
            if report.opened > 0 {
                report.server_kib_per_connection =
                    Some(after.saturating_sub(before) as f64 / report.opened as f64);
            }
        }
    };
    let hold = Duration::from_millis(idle.hold_ms);
    if processes == 1 {
        let set = IdleSet::open(
            target,
            idle.connections,
            idle.websocket,
            idle.open_concurrency,
        )
        .await;
        report.open_secs = started.elapsed().as_secs_f64();
        report.opened = set.opened;
        report.failed = set.failed;
        report.first_error = set.first_error.clone();
        tokio::time::sleep(Duration::from_millis(500)).await;
        measure(&mut report);
        tokio::time::sleep(hold).await;
        set.close();
        return Ok(report);
    }
    let exe = match &options.worker_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("finding the sluice-loadtest binary")?,
    };
    let sources: Vec<IpAddr> = target.source_addrs().to_vec();
    let mut children = Vec::new();
    for j in 0..processes {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("idle-worker")
            .arg("--url")
            .arg(&options.url)
            .arg("--connections")
            .arg(share(u64::from(idle.connections), processes, j).to_string())
            .arg("--concurrency")
            .arg(idle.open_concurrency.to_string());
        if !idle.websocket {
            cmd.arg("--tcp-only");
        }
        if let Some(ca) = &options.tls.cacert {
            cmd.arg("--cacert").arg(ca);
        }
        if options.tls.insecure {
            cmd.arg("--insecure");
        }
        let mine: Vec<String> = sources
            .iter()
            .enumerate()
            .filter(|(i, _)| (*i as u32) % processes == j)
            .map(|(_, ip)| ip.to_string())
            .collect();
        if !mine.is_empty() {
            cmd.arg("--source-ips").arg(mine.join(","));
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        children.push(cmd.spawn().context("starting an idle-worker process")?);
    }
    for child in &mut children {
        let stdout = child.stdout.take().context("worker stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .unwrap_or_default();
        // "ready OPENED FAILED [first error]"
        let mut parts = line.splitn(4, ' ');
        if parts.next() == Some("ready") {
            report.opened += parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            report.failed += parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if let Some(e) = parts.next() {
                report.first_error.get_or_insert_with(|| e.to_owned());
            }
        } else {
            report
                .first_error
                .get_or_insert_with(|| "an idle worker did not report".to_owned());
        }
    }
    report.open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    measure(&mut report);
    tokio::time::sleep(hold).await;
    for mut child in children {
        drop(child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    Ok(report)
}

/// The `idle-worker` child: opens `connections`, prints `ready OPENED FAILED [error]`,
/// holds them until stdin closes.
pub async fn idle_worker(
    url: &str,
    tls: &TlsOptions,
    connections: u32,
    source_ips: Vec<IpAddr>,
    websocket: bool,
    concurrency: u32,
) -> anyhow::Result<()> {
    raise_nofile_limit();
    let mut target = Target::new(url, tls, 1).await?;
    if !source_ips.is_empty() {
        target = target.with_source_addrs(source_ips);
    }
    let set = IdleSet::open(&target, connections, websocket, concurrency).await;
    println!(
        "ready {} {}{}",
        set.opened,
        set.failed,
        set.first_error
            .as_deref()
            .map_or(String::new(), |e| format!(" {}", e.replace('\n', " ")))
    );
    // Hold until the parent closes our stdin (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
    set.close();
    Ok(())
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// (steal, total) ticks of all CPUs from the `cpu` line of `/proc/stat`.
fn steal_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice],
    // guest time being counted in user already.
    let steal = *ticks.get(7)?;
    let total = ticks.iter().take(8).sum();
    Some((steal, total))
}

/// Percent of CPU time stolen between two readings.
fn steal_share(start: Option<(u64, u64)>, end: Option<(u64, u64)>) -> f64 {
    match (start, end) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
            100.0 * s1.saturating_sub(s0) as f64 / (t1 - t0) as f64
        }
        _ => 0.0,
    }
}

/// User + system CPU seconds of a process (`self` or a pid), from `/proc/<p>/stat`.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": state is field 0; utime and stime are 11 and 12.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

/// A `kB` field of `/proc/<pid>/status`.
fn proc_status(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn fd_count(pid: &str) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}
