use std::path::{Path, PathBuf};

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

fn error(text: &str) -> String {
    parse(text)
        .expect_err("config should be rejected")
        .to_string()
}

#[test]
fn default_config_file_matches_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sluice.toml");
    let config = Config::load(&path).expect("default config parses");
    assert_eq!(config, Config::default());
}

#[test]
fn every_example_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples directory") {
        let path: PathBuf = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs found in {}", dir.display());
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let msg = error("[listener]\naddres = \"127.0.0.1:1\"\n");
    assert!(msg.contains("test.toml"), "{msg}");
    assert!(msg.contains("addres"), "{msg}");

    let msg = error(
        "[[clusters]]\nname = \"a\"\nkind = \"embedded\"\n[clusters.embedded]\nfsnc = \"always\"\n",
    );
    assert!(msg.contains("fsnc"), "{msg}");
}

#[test]
fn bad_values_name_the_key_and_the_rule() {
    let msg = error("[listener]\naddress = \"nowhere\"\n");
    assert!(msg.contains("address"), "{msg}");

    let msg = error("[[clusters]]\nname = \"a b\"\nkind = \"embedded\"\n");
    assert!(msg.contains("clusters[0].name"), "{msg}");
    assert!(msg.contains("[a-zA-Z0-9._-]"), "{msg}");

    let msg = error(
        "[[clusters]]\nname = \"a\"\nkind = \"embedded\"\n[[clusters]]\nname = \"a\"\nkind = \"embedded\"\n",
    );
    assert!(msg.contains("clusters[1].name"), "{msg}");
    assert!(msg.contains("duplicate"), "{msg}");

    let msg = error("[[clusters]]\nname = \"a\"\nkind = \"embedded\"\nweight = 0\n");
    assert!(msg.contains("clusters[0].weight"), "{msg}");

    let msg = error("[topics]\ndefault_partitions = 0\n");
    assert!(msg.contains("topics.default_partitions"), "{msg}");

    let msg = error("clusters = []\n");
    assert!(msg.contains("`clusters`"), "{msg}");

    let msg = error("[[clusters]]\nname = \"a\"\nkind = \"martian\"\n");
    assert!(msg.contains("martian"), "{msg}");

    let msg =
        error("[listener]\ninsecure = true\n[listener.tls]\ncert_file = \"a\"\nkey_file = \"b\"\n");
    assert!(msg.contains("listener.tls"), "{msg}");
}

#[test]
fn pins_and_policies_are_checked() {
    let clusters = "[[clusters]]\nname = \"a\"\nkind = \"embedded\"\n";
    let ok = format!(
        "[[federation.pins]]\ntopic = \"orders\"\ncluster = \"a\"\n[[federation.topic_policies]]\nprefix = \"iot.\"\non_cluster_down = \"failover\"\n{clusters}"
    );
    let c = parse(&ok).unwrap();
    assert_eq!(c.federation.pins.len(), 1);
    assert_eq!(
        c.federation.topic_policies[0].on_cluster_down,
        DownPolicy::Failover
    );

    let msg = error(&format!(
        "[[federation.pins]]\ntopic = \"orders\"\ncluster = \"zzz\"\n{clusters}"
    ));
    assert!(msg.contains("federation.pins[0].cluster"), "{msg}");
    assert!(msg.contains("zzz"), "{msg}");

    let msg = error(&format!(
        "[[federation.pins]]\ntopic = \"o\"\nprefix = \"p\"\ncluster = \"a\"\n{clusters}"
    ));
    assert!(msg.contains("exactly one"), "{msg}");

    let msg = error("[[clusters]]\nname = \"a\"\nkind = \"embedded\"\nstate = \"draining\"\n");
    assert!(msg.contains("active"), "{msg}");
}

#[test]
fn acks_parse_in_kafka_spelling() {
    assert_eq!(Acks::parse("0"), Some(Acks::None));
    assert_eq!(Acks::parse("1"), Some(Acks::Leader));
    assert_eq!(Acks::parse("all"), Some(Acks::All));
    assert_eq!(Acks::parse("-1"), Some(Acks::All));
    assert_eq!(Acks::parse("2"), None);
    let c = parse("[gateway]\ndefault_acks = \"1\"\n").unwrap();
    assert_eq!(c.gateway.default_acks, Acks::Leader);
}

#[test]
fn topic_name_rule_is_kafkas() {
    assert!(is_valid_topic_name("orders.v1_eu-west"));
    assert!(is_valid_topic_name(&"a".repeat(249)));
    assert!(!is_valid_topic_name(&"a".repeat(250)));
    assert!(!is_valid_topic_name(""));
    assert!(!is_valid_topic_name("a b"));
    assert!(!is_valid_topic_name("a/b"));
    assert!(!is_valid_topic_name("é"));
}

#[test]
fn clusters_dir_adds_one_cluster_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let clusters = dir.path().join("clusters.d");
    std::fs::create_dir(&clusters).unwrap();
    // The shipped examples are valid cluster files.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clusters.d");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, clusters.join(path.file_name().unwrap())).unwrap();
    }
    let main = dir.path().join("sluice.toml");
    std::fs::write(
        &main,
        format!(
            "clusters_dir = {:?}\n[[clusters]]\nname = \"local\"\nkind = \"embedded\"\n",
            clusters.display().to_string()
        ),
    )
    .unwrap();
    let config = Config::load(&main).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["local", "kafka-east", "kafka-north", "kafka-west"]);
    assert!(config.clusters[1..]
        .iter()
        .all(|c| c.kind == ClusterKind::Kafka && c.kafka.is_some()));

    // A bad cluster file is named in the error, with the key.
    std::fs::write(
        clusters.join("broken.toml"),
        "kind = \"kafka\"\nweight = 0\n",
    )
    .unwrap();
    let msg = Config::load(&main).unwrap_err().to_string();
    assert!(
        msg.contains("broken.toml") && msg.contains("weight"),
        "{msg}"
    );
    std::fs::write(
        clusters.join("broken.toml"),
        "kind = \"kafka\"\nbogus = 1\n",
    )
    .unwrap();
    let msg = Config::load(&main).unwrap_err().to_string();
    assert!(
        msg.contains("broken.toml") && msg.contains("bogus"),
        "{msg}"
    );
}

#[test]
fn tracing_is_off_by_default_and_on_with_an_endpoint() {
    let config = parse("").unwrap();
    assert!(!config.tracing.enabled());
    assert_eq!(config.tracing.traces_url(), None);

    let config = parse(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsampling_ratio = 0.01\nservice_name = \"edge\"\n",
    )
    .unwrap();
    assert!(config.tracing.enabled());
    assert_eq!(
        config.tracing.traces_url().as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
    assert_eq!(config.tracing.sampling_ratio, 0.01);
    // A URL with a path is used as it is.
    let config =
        parse("[tracing]\notlp_endpoint = \"http://collector:4318/custom/traces\"\n").unwrap();
    assert_eq!(
        config.tracing.traces_url().as_deref(),
        Some("http://collector:4318/custom/traces")
    );
}

#[test]
fn peers_need_a_node_id_among_them() {
    let peers = "[[gateway.peers]]\nname = \"a\"\nurl = \"http://127.0.0.1:9001\"\n[[gateway.peers]]\nname = \"b\"\nurl = \"http://127.0.0.1:9002\"\n";
    let msg = error(peers);
    assert!(msg.contains("gateway.node_id"), "{msg}");
    let msg = error(&format!("[gateway]\nnode_id = \"c\"\n{peers}"));
    assert!(
        msg.contains("gateway.node_id") && msg.contains("\"c\""),
        "{msg}"
    );
    let config = parse(&format!("[gateway]\nnode_id = \"a\"\n{peers}")).unwrap();
    assert_eq!(config.gateway.peers.len(), 2);
    let msg = error(&format!(
        "[admin]\ninsecure = false\n[gateway]\nnode_id = \"a\"\n{peers}"
    ));
    assert!(
        msg.contains("gateway.peers") && msg.contains("admin.insecure"),
        "{msg}"
    );
}

#[test]
fn tracing_settings_are_checked_with_precise_errors() {
    let cases = [
        (
            "otlp_endpoint = \"https://c:4318\"",
            "`tracing.otlp_endpoint`: must be an http:// URL",
        ),
        (
            "otlp_endpoint = \"c:4318\"",
            "`tracing.otlp_endpoint`: \"c:4318\" must be an http://host:port URL",
        ),
        (
            "otlp_endpoint = \"http://c:99999\"",
            "`tracing.otlp_endpoint`",
        ),
        (
            "otlp_endpoint = \"http:///v1/traces\"",
            "`tracing.otlp_endpoint`",
        ),
        (
            "sampling_ratio = 1.5",
            "`tracing.sampling_ratio`: must be between 0.0 and 1.0",
        ),
        ("sampling_ratio = -0.1", "`tracing.sampling_ratio`"),
        ("sampling_ratio = nan", "`tracing.sampling_ratio`"),
        (
            "service_name = \" \"",
            "`tracing.service_name`: must not be empty",
        ),
        ("max_queue_spans = 0", "`tracing.max_queue_spans`"),
        (
            "max_queue_spans = 10\nmax_export_batch_spans = 11",
            "`tracing.max_export_batch_spans`: must be at least 1 and at most max_queue_spans",
        ),
        ("export_interval_ms = 0", "`tracing.export_interval_ms`"),
        ("export_timeout_ms = 0", "`tracing.export_timeout_ms`"),
        ("protocol = \"grpc\"", "grpc"),
        ("endpoint = \"http://c:4318\"", "endpoint"),
    ];
    for (body, expected) in cases {
        let msg = error(&format!("[tracing]\n{body}\n"));
        assert!(msg.contains(expected), "{body}: {msg}");
        assert!(msg.starts_with("test.toml"), "{body}: {msg}");
    }
}

#[test]
fn peer_urls_and_names_are_checked() {
    let msg = error(
        "[gateway]\nnode_id = \"a\"\n[[gateway.peers]]\nname = \"a\"\nurl = \"https://x:1\"\n",
    );
    assert!(msg.contains("gateway.peers[0].url"), "{msg}");
    let msg =
        error("[gateway]\nnode_id = \"a\"\n[[gateway.peers]]\nname = \"a\"\nurl = \"http://x\"\n");
    assert!(msg.contains("port"), "{msg}");
    let msg = error("[gateway]\nnode_id = \"a\"\n[[gateway.peers]]\nname = \"a\"\nurl = \"http://x:1\"\n[[gateway.peers]]\nname = \"a\"\nurl = \"http://y:1\"\n");
    assert!(
        msg.contains("gateway.peers[1].name") && msg.contains("duplicate"),
        "{msg}"
    );
}

#[test]
fn consumer_timeouts_are_checked() {
    let msg = error("[consumers]\ninstance_timeout_ms = 0\n");
    assert!(msg.contains("consumers.instance_timeout_ms"), "{msg}");
    let msg = error("[consumers]\nrequest_timeout_ms = 5000\nmax_poll_timeout_ms = 1000\n");
    assert!(msg.contains("consumers.request_timeout_ms"), "{msg}");
}

/// Two Kafka clusters with placement shared on the first, plus `extra`
/// under `[federation.placement]`.
fn shared_placement(extra: &str) -> String {
    format!(
        "[federation.placement]\nstore = \"kafka\"\ncluster = \"k0\"\n{extra}\n\
         [[clusters]]\nname = \"k0\"\nkind = \"kafka\"\n[clusters.kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\nrequest_timeout_ms = 5000\n\
         [[clusters]]\nname = \"k1\"\nkind = \"kafka\"\n[clusters.kafka]\nbootstrap_servers = \"127.0.0.1:9093\"\nrequest_timeout_ms = 7000\n"
    )
}

#[test]
fn a_placement_lease_needs_shared_placement_and_a_later_look_for_late_writes() {
    let config = parse(&shared_placement(
        "lease_ms = 2000\nlate_write_grace_ms = 10000",
    ))
    .unwrap();
    assert_eq!(config.federation.placement.lease_ms, 2000);
    // The look must come after the lease plus the slowest request timeout (7 s).
    let e = error(&shared_placement(
        "lease_ms = 3000\nlate_write_grace_ms = 10000",
    ));
    assert!(
        e.contains("federation.placement.late_write_grace_ms"),
        "{e}"
    );
    assert!(e.contains("7000"), "{e}");
    let e = error("[federation.placement]\nlease_ms = 1000\n");
    assert!(e.contains("federation.placement.lease_ms"), "{e}");
    assert!(e.contains("store = \"kafka\""), "{e}");
    let e = error(&shared_placement("late_write_grace_ms = 0"));
    assert!(e.contains("late_write_grace_ms"), "{e}");
}
