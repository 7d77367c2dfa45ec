//! The real `sluice` binary on its default settings (but ephemeral ports):
//! the README's quickstart round trip, a volley of bad input each answered
//! with the right status and error code, and a log with no panic in it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{toml_path, SluiceProcess};

use serde_json::{json, Value};

fn start(dir: &Path) -> SluiceProcess {
    // The default config, with ephemeral ports and a data directory of the test's own.
    let default = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sluice.toml"),
    )
    .unwrap();
    let config = default
        .replace("\"127.0.0.1:8443\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:8444\"", "\"127.0.0.1:0\"")
        .replace(
            "data_dir = \"data\"",
            &format!("data_dir = {}", toml_path(&dir.join("data"))),
        );
    SluiceProcess::start(dir, &config)
}

async fn expect_error(response: reqwest::Response, status: u16, code: u64) -> String {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("errors are JSON");
    assert_eq!(body["error_code"], code, "{body}");
    body["message"].as_str().expect("a message").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_round_trip_and_bad_input_without_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start(dir.path());
    let http = SluiceProcess::client(&dir.path().join("data"));
    let url = &running.url;
    let binary = "application/vnd.kafka.binary.v2+json";

    // The README's round trip: key and header in, the same out.
    let produced: Value = http
        .post(format!("{url}/topics/greetings"))
        .header("Content-Type", binary)
        .body(r#"{"records":[{"key":"a2V5LTE=","value":"aGVsbG8gc2x1aWNl","headers":[{"name":"source","value":"d2Vi"}]}]}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let partition = produced["offsets"][0]["partition"].as_u64().unwrap();
    assert_eq!(produced["offsets"][0]["offset"], 0);
    let records: Value = common::get_json(
        &http,
        format!("{url}/topics/greetings/partitions/{partition}/records?offset=0"),
    )
    .await;
    assert_eq!(records[0]["key"], "a2V5LTE=");
    assert_eq!(records[0]["value"], "aGVsbG8gc2x1aWNl");
    assert_eq!(
        records[0]["headers"],
        json!([{"name": "source", "value": "d2Vi"}])
    );

    // Bad input, each with its status and Confluent error code.
    let post = |path: &str, content_type: &str, body: String| {
        http.post(format!("{url}{path}"))
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let msg = expect_error(
        post(
            "/topics/bad%20name",
            binary,
            r#"{"records":[{"value":"YQ=="}]}"#.into(),
        )
        .await
        .unwrap(),
        400,
        400,
    )
    .await;
    assert!(msg.contains("[a-zA-Z0-9._-]"), "{msg}");
    let msg = expect_error(
        post(
            "/topics/greetings",
            binary,
            r#"{"records":[{"value":"YQ=="}"#.into(),
        )
        .await
        .unwrap(),
        400,
        400,
    )
    .await;
    assert!(msg.contains("line"), "{msg}");
    expect_error(
        post("/topics/greetings", "text/plain", "hello".into())
            .await
            .unwrap(),
        415,
        415,
    )
    .await;
    let huge = format!(
        r#"{{"records":[{{"value":"{}"}}]}}"#,
        "A".repeat(9 * 1024 * 1024)
    );
    expect_error(
        post("/topics/greetings", binary, huge).await.unwrap(),
        413,
        413,
    )
    .await;
    expect_error(
        post(
            "/topics/greetings/partitions/99",
            binary,
            r#"{"records":[{"value":"YQ=="}]}"#.into(),
        )
        .await
        .unwrap(),
        404,
        40402,
    )
    .await;
    let msg = expect_error(
        post(
            "/topics/greetings",
            binary,
            r#"{"records":[{"value":"not base64!"}]}"#.into(),
        )
        .await
        .unwrap(),
        422,
        422,
    )
    .await;
    assert!(msg.contains("records[0].value"), "{msg}");
    expect_error(
        http.get(format!("{url}/topics/%FF%FE"))
            .send()
            .await
            .unwrap(),
        400,
        400,
    )
    .await;
    expect_error(
        http.get(format!("{url}/topics/nope")).send().await.unwrap(),
        404,
        40401,
    )
    .await;

    let ready = reqwest::get(format!("{}/readyz", running.admin_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // SIGTERM drains and exits cleanly.
    assert!(running.terminate(), "clean exit after SIGTERM");
    // Give the reader thread a moment to collect the last lines.
    std::thread::sleep(Duration::from_millis(100));
    let log = running.log();
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
    assert!(
        log.contains("listener certificate"),
        "the certificate is logged:\n{log}"
    );
}
