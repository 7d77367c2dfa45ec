//! Test harness: a real gateway on 127.0.0.1:0 over TLS with an embedded
//! cluster in a temporary directory, and a client that trusts its generated CA.

#![allow(dead_code)]

pub mod otlp;
pub mod process;

use std::net::SocketAddr;

use sluice::Gateway;
use sluice_config::Config;
use tempfile::TempDir;

/// A running gateway for a test.
pub struct TestGateway {
    /// Base URL of the public listener, e.g. `https://localhost:PORT`.
    pub url: String,
    /// Base URL of the admin listener, e.g. `http://127.0.0.1:PORT`.
    pub admin_url: String,
    /// The public listener's address.
    pub addr: SocketAddr,
    /// A client trusting the gateway's generated CA.
    pub client: reqwest::Client,
    /// The configuration the gateway runs with.
    pub config: Config,
    gateway: Gateway,
    /// Keeps the data directory alive while the gateway runs.
    pub data_dir: TempDir,
}

impl TestGateway {
    /// A gateway on the defaults, bound to ephemeral loopback ports.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A gateway whose config the caller adjusts after the test defaults are set.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(data_dir, adjust).await
    }

    /// A gateway on an existing data directory (for restarts).
    pub async fn start_in(data_dir: TempDir, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.storage.data_dir = data_dir.path().to_owned();
        config.listener.address = "127.0.0.1:0".parse().unwrap();
        config.admin.address = "127.0.0.1:0".parse().unwrap();
        config.gateway.shutdown_grace_ms = 2_000;
        adjust(&mut config);
        config
            .validate(std::path::Path::new("test"))
            .expect("test config is valid");
        let gateway = Gateway::start(config.clone())
            .await
            .expect("gateway starts");
        let scheme = if gateway.tls { "https" } else { "http" };
        let url = format!("{scheme}://localhost:{}", gateway.addr.port());
        let admin_url = format!("http://{}", gateway.admin_addr);
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = &gateway.generated_ca_file {
            let pem = std::fs::read(ca).expect("generated CA readable");
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
        }
        let client = builder.build().expect("client");
        Self {
            url,
            admin_url,
            addr: gateway.addr,
            client,
            config,
            gateway,
            data_dir,
        }
    }

    /// The running gateway, for what tests reach past HTTP: the federation,
    /// and embedded clusters' fault switches.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Shuts down and waits for the drain.
    pub async fn stop(self) {
        self.gateway.stop().await;
    }

    /// Shuts down and hands back the data directory, for a restart.
    pub async fn stop_keep_data(self) -> TempDir {
        self.gateway.stop().await;
        self.data_dir
    }

    /// Creates a topic through the v3 route; panics unless it is created.
    pub async fn create_topic(&self, topic: &str, partitions: u32) {
        let response = self
            .client
            .post(format!("{}/v3/clusters/sluice/topics", self.url))
            .json(&serde_json::json!({"topic_name": topic, "partitions_count": partitions}))
            .send()
            .await
            .expect("create reaches the gateway");
        assert_eq!(response.status(), 201);
    }

    /// Produces `values` to `partition` over REST (binary format), one
    /// record each; panics unless acknowledged.
    pub async fn produce_values(&self, topic: &str, partition: u32, values: &[String]) {
        use base64::Engine as _;
        let records: Vec<serde_json::Value> = values
            .iter()
            .map(|v| {
                serde_json::json!({
                    "partition": partition,
                    "value": base64::engine::general_purpose::STANDARD.encode(v),
                })
            })
            .collect();
        let response = self
            .client
            .post(format!("{}/topics/{topic}", self.url))
            .header("content-type", "application/vnd.kafka.binary.v2+json")
            .body(serde_json::json!({ "records": records }).to_string())
            .send()
            .await
            .expect("produce reaches the gateway");
        assert_eq!(response.status(), 200);
    }

    /// Produces `per_partition` values named `{round}-p{partition}-{i}` to
    /// each of `partitions`; returns them.
    pub async fn produce_round(
        &self,
        topic: &str,
        partitions: u32,
        per_partition: usize,
        round: &str,
    ) -> Vec<String> {
        let mut all = Vec::new();
        for partition in 0..partitions {
            let values: Vec<String> = (0..per_partition)
                .map(|i| format!("{round}-p{partition}-{i}"))
                .collect();
            self.produce_values(topic, partition, &values).await;
            all.extend(values);
        }
        all
    }
}

/// `GET url` with `client`, the body read as JSON; panics on any failure.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> T {
    client
        .get(url)
        .send()
        .await
        .expect("GET reaches the server")
        .json()
        .await
        .expect("a JSON body")
}

/// The value of the first sample of metric `name` carrying all of `labels`
/// in a Prometheus exposition.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Moves `topic` to cluster `to` through the admin API at `admin_url`;
/// fails the test unless it answers 200.
pub async fn migrate(admin_url: &str, topic: &str, to: &str) {
    let reply = reqwest::Client::new()
        .post(format!("{admin_url}/admin/topics/{topic}/migrate"))
        .json(&serde_json::json!({ "to": to }))
        .send()
        .await
        .expect("admin API reachable");
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
}
