//! `sluice-loadtest`: command line → scenario → run → report.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_loadtest::net::TlsOptions;
use sluice_loadtest::{run, RunOptions, Scenario};

/// The gateway's allocator, so that in `kafka-compare` the direct
/// librdkafka client and the gateway run on the same one, and the load
/// generator spends less of the shared cores on allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice-loadtest",
    version,
    about = "Load generator for Sluice and Confluent-compatible REST proxies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct TargetArgs {
    /// The gateway, e.g. https://localhost:8443.
    #[arg(long, default_value = "https://localhost:8443")]
    url: String,
    /// PEM file of the CA to trust (e.g. data/tls/ca.pem).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Accept any server certificate.
    #[arg(long)]
    insecure: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario (a folder with scenario.toml, or the file).
    Run {
        /// Scenario folder or file, e.g. loadtest/scenarios/rest-single.
        scenario: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// Changes one setting: `run.duration_ms=3000`, `producers.0.rate_per_sec=5000`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Shorthand for --set run.verify=true.
        #[arg(long)]
        verify: bool,
        /// The gateway's PID: its memory and CPU go into the report.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Writes report.txt, report.json and report.html here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Prints the JSON report instead of the text one.
        #[arg(long)]
        json: bool,
        /// No progress line.
        #[arg(long)]
        quiet: bool,
        /// Runtime worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Lists the scenarios in a folder with their goals.
    List {
        /// Folder of scenarios.
        #[arg(default_value = "loadtest/scenarios")]
        dir: PathBuf,
    },
    /// Prints a Markdown table of `LABEL=DIR/report.json` (or `DIR`) reports.
    Summarize {
        /// `label=path` pairs; a bare path is labelled by its folder.
        reports: Vec<String>,
    },
    /// Child process of an idle-connection scenario (started by `run`).
    #[command(hide = true)]
    IdleWorker {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        connections: u32,
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
        #[arg(long, value_delimiter = ',')]
        source_ips: Vec<IpAddr>,
        #[arg(long)]
        tcp_only: bool,
    },
    /// The same produce load through Sluice (REST) and straight to a tansu
    /// broker with librdkafka, in one run; prints the ratio.
    #[cfg(feature = "kafka")]
    KafkaCompare(sluice_loadtest::kafka::CompareArgs),
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    Ok(builder.build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            scenario,
            target,
            mut set,
            verify,
            server_pid,
            out,
            json,
            quiet,
            threads,
        } => {
            if verify {
                set.push("run.verify=true".to_owned());
            }
            let scenario = Scenario::load(&scenario, &set)?;
            let options = RunOptions {
                url: target.url,
                tls: TlsOptions {
                    cacert: target.cacert,
                    insecure: target.insecure,
                },
                server_pid,
                progress: !quiet,
                command: std::env::args().collect::<Vec<_>>().join(" "),
                worker_exe: None,
            };
            let report = runtime(threads)?.block_on(run(&scenario, &options))?;
            if let Some(dir) = out {
                report.write(&dir)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            if report.verification.as_ref().is_some_and(|v| !v.ok) {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::List { dir } => {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("scenario.toml").is_file())
                .collect();
            entries.sort();
            for path in entries {
                let s = Scenario::load(&path, &[])?;
                println!(
                    "{:24} {}",
                    s.name,
                    s.goal.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
            Ok(())
        }
        Command::Summarize { reports } => {
            let mut loaded = Vec::new();
            for r in reports {
                let (label, path) = match r.split_once('=') {
                    Some((l, p)) => (l.to_owned(), PathBuf::from(p)),
                    None => {
                        let p = PathBuf::from(&r);
                        let label = p
                            .file_name()
                            .map_or(r.clone(), |n| n.to_string_lossy().into_owned());
                        (label, p)
                    }
                };
                let file = if path.is_dir() {
                    path.join("report.json")
                } else {
                    path
                };
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                loaded.push((label, serde_json::from_str(&text)?));
            }
            print!("{}", sluice_loadtest::report::markdown::summarize(&loaded));
            Ok(())
        }
        Command::IdleWorker {
            target,
            connections,
            concurrency,
            source_ips,
            tcp_only,
        } => runtime(None)?.block_on(sluice_loadtest::runner::idle_worker(
            &target.url,
            &TlsOptions {
                cacert: target.cacert,
                insecure: target.insecure,
            },
            connections,
            source_ips,
            !tcp_only,
            concurrency,
        )),
        #[cfg(feature = "kafka")]
        Command::KafkaCompare(args) => {
            runtime(None)?.block_on(sluice_loadtest::kafka::compare(args))
        }
    }
}
