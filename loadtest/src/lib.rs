//! `sluice-loadtest`: a load generator for Sluice and for any
//! Confluent-compatible REST proxy. It talks to the gateway only over the
//! network.
//!
//! - [`scenario`]: scenarios as data (`loadtest/scenarios/<name>/scenario.toml`),
//!   with `--set key=value` overrides.
//! - [`net`]: the target (URL, TLS roots or `--insecure`), connections
//!   spread over several loopback source addresses, the open-file limit.
//! - [`http`]: HTTP/1.1 keep-alive connections on hyper's client directly.
//! - [`payload`]: record values carrying a producer id, a sequence number
//!   and the intended send time; keys (none, uniform, zipf); bodies.
//! - [`pacing`]: open loop (arrival rate, ramp-up, coordinated-omission
//!   correction) and closed loop (fixed concurrency); duration and count limits.
//! - [`stats`]: HDR histograms and counters per group and client, the
//!   per-second timeline and the live progress line.
//! - [`verify`]: every acknowledged record delivered to every subscriber,
//!   in order per partition, no loss, no duplicate.
//! - [`workload`]: REST produce, WebSocket produce and subscribe, SSE
//!   subscribe, idle connections, and the place for the Confluent v2
//!   consumer workload.
//! - [`runner`]: runs a scenario end to end; [`report`]: text, JSON, HTML.
//! - `kafka` (feature `kafka`): the same load through Sluice and straight
//!   to a tansu broker with librdkafka, and the ratio.

pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod net;
pub mod pacing;
pub mod payload;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod verify;
pub mod workload;

pub use report::Report;
pub use runner::{run, RunOptions};
pub use scenario::Scenario;
