//! A test bed for Sluice's Kafka backend: independent Kafka-protocol
//! clusters on loopback, and an independent client to check what landed.
//!
//! - [`KafkaTestbed`] (this file): starts `n` tansu brokers, each its own
//!   cluster with in-memory storage on an ephemeral port of 127.0.0.1, and
//!   kills, restarts and stops them by PID.
//! - [`wire`]: the one Kafka request the test bed speaks itself (Metadata),
//!   to tell that a broker answers and that it is the one it started.
//! - [`python`]: reads a topic back with the Python `confluent-kafka`
//!   client (`testbed/py/read_topic.py`), an implementation independent of
//!   the `rdkafka` crate the backend uses.
//!
//! The tansu binary is installed by `scripts/install-test-deps` and found
//! through `SLUICE_TANSU` or `$HOME/.cache/sluice/bin/tansu`. A missing
//! binary is an error naming the script: tests never skip silently.
//!
//! tansu keeps everything in memory: a restarted broker starts empty (no
//! topics, offsets or groups). Where tansu differs from Kafka is described
//! in `docs/kafka.md`.

pub mod python;
pub mod wire;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use python::{read_topic, ReadRecord};

/// Environment variable naming the tansu binary.
pub const TANSU_ENV: &str = "SLUICE_TANSU";
/// Where `scripts/install-test-deps` puts tansu, under `$HOME`.
pub const DEFAULT_TANSU_PATH: &str = ".cache/sluice/bin/tansu";
/// How long a broker may take to answer after it was started.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a `tansu topic create` may take.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a killed broker may take to be reaped.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting a broker on a fresh port, in case another process
/// took the port between choosing it and tansu binding it.
const START_ATTEMPTS: u32 = 4;
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// An error of the test bed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// The tansu binary is not installed.
    #[error("the tansu broker is not installed at {path}: run scripts/install-test-deps (or set {TANSU_ENV} to a tansu binary)")]
    TansuMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A broker did not answer in time.
    #[error("broker {index} on 127.0.0.1:{port} not ready after {waited:?}: {reason}\n--- broker log (tail) ---\n{log_tail}")]
    NotReady {
        /// Index in the test bed.
        index: usize,
        /// Its port.
        port: u16,
        /// How long it was waited for.
        waited: Duration,
        /// The last thing that went wrong.
        reason: String,
        /// The end of its log.
        log_tail: String,
    },
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// Exit status and output.
        detail: String,
    },
    /// No broker with this index.
    #[error("no broker {0} in this test bed")]
    NoSuchBroker(usize),
    /// An operating-system error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Io { what, source }
}

/// The tansu binary: `$SLUICE_TANSU`, else `$HOME/.cache/sluice/bin/tansu`.
pub fn tansu_binary() -> Result<PathBuf, TestbedError> {
    let path = match std::env::var_os(TANSU_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
            home.join(DEFAULT_TANSU_PATH)
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::TansuMissing { path })
    }
}

/// Independent Kafka-protocol clusters on loopback, one tansu broker each.
///
/// Every process it starts is killed (SIGKILL, by PID) when it is dropped;
/// each broker also has a watchdog that kills it if the test process dies
/// without dropping the test bed.
#[derive(Debug)]
pub struct KafkaTestbed {
    tansu: PathBuf,
    dir: tempfile::TempDir,
    brokers: Vec<Broker>,
}

#[derive(Debug)]
struct Broker {
    index: usize,
    cluster_id: String,
    port: u16,
    log: PathBuf,
    process: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    child: Child,
    /// A `sh` that kills the broker when its stdin (held here) closes, that
    /// is when the test process exits however it exits.
    watchdog: Child,
    _watchdog_stdin: ChildStdin,
}

impl Running {
    /// SIGKILL to both, then reap both (bounded).
    fn kill(mut self) -> Result<(), TestbedError> {
        let _ = self.watchdog.kill();
        let _ = self.child.kill();
        let _ = self.watchdog.wait();
        wait_exit(&mut self.child, EXIT_TIMEOUT)
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Result<(), TestbedError> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() >= deadline => {
                return Err(TestbedError::Command {
                    what: format!("waiting for process {} to exit", child.id()),
                    detail: format!("still running after {timeout:?}"),
                })
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(io_err(format!("waiting for process {}", child.id()))(e)),
        }
    }
}

static TESTBEDS: AtomicU32 = AtomicU32::new(0);

impl KafkaTestbed {
    /// Starts `n` independent brokers and waits until each answers a
    /// Metadata request with its own cluster id.
    pub async fn start(n: usize) -> Result<Self, TestbedError> {
        let tansu = tansu_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-testbed-")
            .tempdir()
            .map_err(io_err("creating the test bed directory"))?;
        let bed = TESTBEDS.fetch_add(1, Ordering::Relaxed);
        let mut testbed = Self {
            tansu,
            dir,
            brokers: Vec::with_capacity(n),
        };
        for index in 0..n {
            let cluster_id = format!("sluice-testbed-{}-{bed}-{index}", std::process::id());
            let log = testbed.dir.path().join(format!("broker-{index}.log"));
            let mut last_error = None;
            for _ in 0..START_ATTEMPTS {
                let port = free_port()?;
                let broker = Broker {
                    index,
                    cluster_id: cluster_id.clone(),
                    port,
                    log: log.clone(),
                    process: Mutex::new(None),
                };
                match testbed.launch(&broker).await {
                    Ok(()) => {
                        testbed.brokers.push(broker);
                        last_error = None;
                        break;
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            if let Some(e) = last_error {
                return Err(e);
            }
        }
        Ok(testbed)
    }

    /// Number of brokers (clusters).
    pub fn len(&self) -> usize {
        self.brokers.len()
    }

    /// Whether the test bed has no broker.
    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty()
    }

    /// `127.0.0.1:PORT` of broker `i`, for `bootstrap.servers`.
    ///
    /// # Panics
    /// If `i` is out of range (a bug in the test).
    pub fn bootstrap(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.broker(i).port)
    }

    /// The port of broker `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn port(&self, i: usize) -> u16 {
        self.broker(i).port
    }

    /// The cluster id broker `i` was started with.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn cluster_id(&self, i: usize) -> &str {
        &self.broker(i).cluster_id
    }

    /// PID of broker `i`, `None` while it is killed.
    pub fn pid(&self, i: usize) -> Option<u32> {
        let broker = self.brokers.get(i)?;
        lock(&broker.process).as_ref().map(|r| r.child.id())
    }

    /// The broker's log file (stdout and stderr of every run).
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn log_file(&self, i: usize) -> &Path {
        &self.broker(i).log
    }

    /// Kills broker `i` with SIGKILL and waits for it to exit. A no-op if
    /// it is not running.
    pub fn kill(&self, i: usize) -> Result<(), TestbedError> {
        let broker = self.brokers.get(i).ok_or(TestbedError::NoSuchBroker(i))?;
        let running = lock(&broker.process).take();
        match running {
            Some(running) => running.kill(),
            None => Ok(()),
        }
    }

    /// Restarts broker `i` on the same port (killing it first if it runs),
    /// after the old process has exited, and waits until it answers. Its
    /// storage is memory: it comes back empty.
    pub async fn restart(&self, i: usize) -> Result<(), TestbedError> {
        self.kill(i)?;
        let broker = self.brokers.get(i).ok_or(TestbedError::NoSuchBroker(i))?;
        self.launch(broker).await
    }

    /// Creates a topic on broker `i` with `tansu topic create`.
    pub async fn create_topic(
        &self,
        i: usize,
        name: &str,
        partitions: u32,
    ) -> Result<(), TestbedError> {
        let broker = self.brokers.get(i).ok_or(TestbedError::NoSuchBroker(i))?;
        let mut command = tokio::process::Command::new(&self.tansu);
        command
            .arg("topic")
            .arg("create")
            .arg("--broker")
            .arg(format!("tcp://127.0.0.1:{}", broker.port))
            .arg("--partitions")
            .arg(partitions.to_string())
            .arg(name)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let what = format!("tansu topic create {name} on broker {i}");
        let output = tokio::time::timeout(DEFAULT_COMMAND_TIMEOUT, command.output())
            .await
            .map_err(|_| TestbedError::Command {
                what: what.clone(),
                detail: format!("no answer within {DEFAULT_COMMAND_TIMEOUT:?}"),
            })?
            .map_err(io_err(what.clone()))?;
        if !output.status.success() {
            return Err(TestbedError::Command {
                what,
                detail: format!(
                    "{}: {}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        Ok(())
    }

    /// Starts the broker's process and waits for it to answer; on failure
    /// the process is killed.
    async fn launch(&self, broker: &Broker) -> Result<(), TestbedError> {
        let running = self.spawn(broker)?;
        let pid = running.child.id();
        *lock(&broker.process) = Some(running);
        match self.wait_ready(broker, pid).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some(running) = lock(&broker.process).take() {
                    let _ = running.kill();
                }
                Err(e)
            }
        }
    }

    fn spawn(&self, broker: &Broker) -> Result<Running, TestbedError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&broker.log)
            .map_err(io_err(format!("opening {}", broker.log.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_err(format!("opening {}", broker.log.display())))?;
        let url = format!("tcp://127.0.0.1:{}", broker.port);
        let child = Command::new(&self.tansu)
            .arg("broker")
            .arg("--cluster-id")
            .arg(&broker.cluster_id)
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg(format!("memory://{}/", broker.cluster_id))
            // The broker reads these from the environment when set.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("SCHEMA_REGISTRY")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_err(format!("starting {}", self.tansu.display())))?;
        let pid = child.id();
        // `cat` returns when the pipe closes: this process exited or
        // dropped the test bed. The comm check keeps a recycled PID safe.
        let script = format!(
            "cat >/dev/null; if [ \"$(cat /proc/{pid}/comm 2>/dev/null)\" = tansu ]; then kill -9 {pid}; fi"
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut watchdog = match watchdog {
            Ok(w) => w,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(io_err("starting the broker's watchdog")(e));
            }
        };
        let Some(stdin) = watchdog.stdin.take() else {
            let mut child = child;
            let _ = child.kill();
            let _ = watchdog.kill();
            let _ = child.wait();
            let _ = watchdog.wait();
            return Err(TestbedError::Command {
                what: "starting the broker's watchdog".into(),
                detail: "no stdin pipe".into(),
            });
        };
        Ok(Running {
            child,
            watchdog,
            _watchdog_stdin: stdin,
        })
    }

    async fn wait_ready(&self, broker: &Broker, pid: u32) -> Result<(), TestbedError> {
        let start = Instant::now();
        let mut reason = String::from("not probed yet");
        loop {
            let exited = {
                let mut guard = lock(&broker.process);
                match guard.as_mut().map(|r| r.child.try_wait()) {
                    Some(Ok(Some(status))) => Some(format!("the broker exited: {status}")),
                    Some(Ok(None)) => None,
                    Some(Err(e)) => Some(format!("cannot watch the broker: {e}")),
                    None => Some("the broker was killed".to_owned()),
                }
            };
            if let Some(exited) = exited {
                reason = exited;
                break;
            }
            let remaining = DEFAULT_READY_TIMEOUT.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                break;
            }
            let probe = wire::metadata(broker.port, remaining.min(Duration::from_secs(2))).await;
            match probe {
                Ok(answer) if answer.cluster_id.as_deref() == Some(broker.cluster_id.as_str()) => {
                    return Ok(())
                }
                Ok(answer) => {
                    reason = format!(
                        "another broker answers on this port (cluster id {:?}, not {:?}; process {pid})",
                        answer.cluster_id, broker.cluster_id
                    );
                }
                Err(e) => reason = e.to_string(),
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        Err(TestbedError::NotReady {
            index: broker.index,
            port: broker.port,
            waited: start.elapsed(),
            reason,
            log_tail: log_tail(&broker.log),
        })
    }

    fn broker(&self, i: usize) -> &Broker {
        self.brokers
            .get(i)
            .unwrap_or_else(|| panic!("no broker {i} in a test bed of {}", self.brokers.len()))
    }

    /// Where the test bed keeps its logs (deleted on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for KafkaTestbed {
    fn drop(&mut self) {
        for broker in &self.brokers {
            if let Some(running) = lock(&broker.process).take() {
                if let Err(e) = running.kill() {
                    eprintln!("sluice-testbed: stopping broker {}: {e}", broker.index);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A port the kernel just handed out on 127.0.0.1 and that is free again.
fn free_port() -> Result<u16, TestbedError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("choosing a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("choosing a free port"))?
        .port();
    drop(listener);
    Ok(port)
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
