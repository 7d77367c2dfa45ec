//! A real gateway on 127.0.0.1:0 over TLS with an embedded cluster in a
//! temporary directory (the pattern of gateway/tests/common), and helpers
//! to run a scenario against it.

#![allow(dead_code)]

use sluice::Gateway;
use sluice_config::Config;
use sluice_loadtest::net::TlsOptions;
use sluice_loadtest::{Report, RunOptions, Scenario};
use tempfile::TempDir;

/// A running gateway for a test.
pub struct TestGateway {
    /// `https://localhost:PORT`.
    pub url: String,
    /// The generated CA.
    pub cacert: std::path::PathBuf,
    gateway: Gateway,
    _data_dir: TempDir,
}

impl TestGateway {
    /// A gateway on the defaults (one embedded cluster, fsync in the
    /// background), bound to ephemeral loopback ports.
    pub async fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.storage.data_dir = data_dir.path().to_owned();
        config.listener.address = "127.0.0.1:0".parse().unwrap();
        config.admin.address = "127.0.0.1:0".parse().unwrap();
        config.gateway.shutdown_grace_ms = 1_000;
        config
            .validate(std::path::Path::new("test"))
            .expect("test config is valid");
        let gateway = Gateway::start(config).await.expect("gateway starts");
        let cacert = gateway.generated_ca_file.clone().expect("generated CA");
        Self {
            url: format!("https://localhost:{}", gateway.addr.port()),
            cacert,
            gateway,
            _data_dir: data_dir,
        }
    }

    /// Options to run against this gateway.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            url: self.url.clone(),
            tls: TlsOptions {
                cacert: Some(self.cacert.clone()),
                insecure: false,
            },
            server_pid: Some(std::process::id()),
            progress: false,
            command: String::new(),
            worker_exe: Some(env!("CARGO_BIN_EXE_sluice-loadtest").into()),
        }
    }

    /// Runs scenario TOML against this gateway.
    pub async fn run(&self, toml: &str) -> Report {
        let scenario = Scenario::parse(toml, &[]).expect("scenario parses");
        sluice_loadtest::run(&scenario, &self.options())
            .await
            .expect("run completes")
    }

    /// Shuts down.
    pub async fn stop(self) {
        self.gateway.stop().await;
    }
}

/// The report's group `name`.
pub fn group<'a>(report: &'a Report, name: &str) -> &'a sluice_loadtest::report::GroupReport {
    report
        .groups
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no group {name} in {}", report.to_text()))
}

/// Total errors of a group.
pub fn errors(g: &sluice_loadtest::report::GroupReport) -> u64 {
    g.summary.errors.values().sum()
}
