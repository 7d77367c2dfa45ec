//! Auth on the real `sluice` binary: no key or token ever reaches the log
//! (the process runs at debug level while every credential path is used,
//! good and bad), and rules reload on SIGHUP and `POST /admin/reload`
//! while an open keep-alive connection and a WebSocket session go on.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{ephemeral_config, toml_path, SluiceProcess};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use sluice::auth::apikey::{generate_key, hash_key};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const ISSUER: &str = "https://id.example";

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

async fn tls_to(data_dir: &Path, port: u16) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(data_dir.join("tls/ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn ws(
    data_dir: &Path,
    port: u16,
    query: &str,
    protocols: Option<&str>,
) -> Result<WebSocketStream<TlsStream<TcpStream>>, u16> {
    let tls = tls_to(data_dir, port).await;
    let mut request = format!("wss://localhost:{port}/v1/ws{query}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    match tokio_tungstenite::client_async(request, tls).await {
        Ok((stream, _)) => Ok(stream),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn next_frame(stream: &mut WebSocketStream<TlsStream<TcpStream>>) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .ok()??
        {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

async fn ws_produce(
    stream: &mut WebSocketStream<TlsStream<TcpStream>>,
    id: &str,
    topic: &str,
) -> Value {
    let frame =
        json!({"type": "produce", "id": id, "topic": topic, "records": [{"value": "aGk="}]});
    stream.send(Message::text(frame.to_string())).await.unwrap();
    next_frame(stream).await.expect("an answer")
}

fn hs_token(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn secure_config(data_dir: &Path, secret_file: &Path, keys: &[(&str, &str)], acls: &str) -> String {
    let mut config = ephemeral_config(data_dir);
    config.push_str("[auth]\n");
    for (principal, key) in keys {
        config.push_str(&format!(
            "[[auth.api_keys]]\nprincipal = \"{principal}\"\nkey_sha256 = \"{}\"\n",
            hash_key(key)
        ));
    }
    config.push_str(&format!(
        "[auth.jwt]\nissuer = \"{ISSUER}\"\naudience = \"sluice\"\n[[auth.jwt.keys]]\nalgorithm = \"HS256\"\nsecret_file = {}\n",
        toml_path(secret_file)
    ));
    config.push_str(acls);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_or_token_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let secret = format!("{}-hs256-secret", generate_key().unwrap());
    let secret_file = dir.path().join("hs256.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let good_key = generate_key().unwrap();
    let wrong_key = generate_key().unwrap();
    let acls = "[[auth.acls]]\nprincipal = \"*\"\nprefix = \"t.\"\noperations = [\"produce\", \"consume\"]\n";
    let config = secure_config(&data_dir, &secret_file, &[("app", &good_key)], acls);
    let config_file = dir.path().join("sluice.toml");
    std::fs::write(&config_file, config).unwrap();
    let mut process = SluiceProcess::start_with_log(&config_file, "debug");
    let client = SluiceProcess::client(&data_dir);
    let now = jsonwebtoken::get_current_timestamp();
    let good_token = hs_token(
        &json!({"sub": "web", "iss": ISSUER, "aud": "sluice", "exp": now + 600}),
        &secret,
    );
    let expired = hs_token(
        &json!({"sub": "web", "iss": ISSUER, "aud": "sluice", "exp": now - 600}),
        &secret,
    );
    let forged = hs_token(
        &json!({"sub": "web", "iss": ISSUER, "aud": "sluice", "exp": now + 600}),
        "forged-secret-forged-secret-forged-secret",
    );
    let wrong_aud = hs_token(
        &json!({"sub": "web", "iss": ISSUER, "aud": "other", "exp": now + 600}),
        &secret,
    );
    let secrets = [
        secret.as_str(),
        &good_key,
        &wrong_key,
        &good_token,
        &expired,
        &forged,
        &wrong_aud,
    ];

    let body = json!({"records": [{"value": "aGk="}]}).to_string();
    for (credential, header, want) in [
        (good_key.as_str(), "authorization", 200),
        (good_key.as_str(), "x-api-key", 200),
        (wrong_key.as_str(), "authorization", 401),
        (wrong_key.as_str(), "x-api-key", 401),
        (good_token.as_str(), "authorization", 200),
        (expired.as_str(), "authorization", 401),
        (forged.as_str(), "authorization", 401),
        (wrong_aud.as_str(), "authorization", 401),
    ] {
        let value = if header == "authorization" {
            format!("Bearer {credential}")
        } else {
            credential.to_owned()
        };
        let response = client
            .post(format!("{}/topics/t.logs", process.url))
            .header("content-type", BINARY)
            .header(header, value)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), want, "{header}");
    }
    let port = port_of(&process.url);
    for (token, ok) in [(&good_token, true), (&forged, false), (&good_key, true)] {
        let offered = format!("sluice.v1.json, sluice.bearer.{token}");
        let result = ws(&data_dir, port, "", Some(&offered)).await;
        assert_eq!(result.is_ok(), ok);
        if let Ok(mut stream) = result {
            assert_eq!(ws_produce(&mut stream, "p", "t.logs").await["type"], "ack");
        }
    }
    for token in [&good_key, &wrong_key, &expired] {
        let mut stream = ws(&data_dir, port, "?auth=frame", None).await.unwrap();
        stream
            .send(Message::text(
                json!({"type": "auth", "token": token}).to_string(),
            ))
            .await
            .unwrap();
        let _ = next_frame(&mut stream).await;
    }

    assert!(process.terminate(), "clean exit");
    let log = process.log();
    // The log is at debug and saw the failures (so there was something to leak).
    assert!(log.contains("DEBUG"), "debug logging is on");
    assert!(log.contains("authentication failed"), "{log}");
    for secret in secrets {
        assert!(!log.contains(secret), "a credential appeared in the log");
        // Nor any long piece of one (a token's signature, a key's body).
        for piece in secret.split('.').filter(|p| p.len() >= 16) {
            assert!(
                !log.contains(piece),
                "part of a credential appeared in the log"
            );
        }
    }
    println!(
        "scanned {} bytes of debug log for {} credentials",
        log.len(),
        secrets.len()
    );
}

/// One HTTP/1.1 keep-alive connection: every request goes over it.
struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl KeepAlive {
    async fn open(data_dir: &Path, port: u16) -> Self {
        let tls = tls_to(data_dir, port).await;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self { sender }
    }

    async fn produce(&mut self, topic: &str, key: &str) -> u16 {
        let request = hyper::Request::post(format!("/topics/{topic}"))
            .header("host", "localhost")
            .header("content-type", BINARY)
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::from(
                json!({"records": [{"value": "aGk="}]}).to_string(),
            )))
            .unwrap();
        // A closed connection fails here: the test needs this one to live.
        self.sender.ready().await.expect("connection alive");
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("connection alive");
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    }
}

fn acl(prefix: &str) -> String {
    format!(
        "[[auth.acls]]\nprincipal = \"app\"\nprefix = \"{prefix}\"\noperations = [\"produce\"]\n\
         [[auth.acls]]\nprincipal = \"ops\"\noperations = [\"admin\"]\n"
    )
}

async fn wait_for(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_changes_apply_on_sighup_and_admin_reload_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let secret_file = dir.path().join("hs256.secret");
    std::fs::write(
        &secret_file,
        generate_key().unwrap() + "-padding-for-length",
    )
    .unwrap();
    let app_key = generate_key().unwrap();
    let ops_key = generate_key().unwrap();
    let keys = [("app", app_key.as_str()), ("ops", ops_key.as_str())];
    let config_file = dir.path().join("sluice.toml");
    let write = |prefix: &str| {
        std::fs::write(
            &config_file,
            secure_config(&data_dir, &secret_file, &keys, &acl(prefix)),
        )
        .unwrap()
    };
    write("a.");
    let process = SluiceProcess::start_with_file(&config_file);
    let port = port_of(&process.url);

    let mut conn = KeepAlive::open(&data_dir, port).await;
    let offered = format!("sluice.v1.json, sluice.bearer.{app_key}");
    let mut session = ws(&data_dir, port, "", Some(&offered)).await.unwrap();
    assert_eq!(conn.produce("a.x", &app_key).await, 200);
    assert_eq!(conn.produce("b.x", &app_key).await, 403);
    assert_eq!(
        ws_produce(&mut session, "w1", "b.x").await["error_code"],
        40301
    );

    // SIGHUP: b. allowed, a. no longer; the same connection and session.
    write("b.");
    let pid = process.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    assert!(sent.is_ok_and(|s| s.success()));
    assert!(
        wait_for(async || conn.produce("b.x", &app_key).await == 200).await,
        "new rule applies"
    );
    assert_eq!(conn.produce("a.x", &app_key).await, 403);
    assert_eq!(ws_produce(&mut session, "w2", "b.x").await["type"], "ack");
    assert_eq!(
        ws_produce(&mut session, "w3", "a.x").await["error_code"],
        40301
    );

    // The admin call: c. now.
    write("c.");
    let admin = reqwest::Client::new();
    let reload = |key: &str| {
        admin
            .post(format!("{}/admin/reload", process.admin_url))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(reload(&app_key).await.unwrap().status(), 403);
    assert_eq!(reload(&ops_key).await.unwrap().status(), 200);
    assert_eq!(conn.produce("c.x", &app_key).await, 200);
    assert_eq!(conn.produce("b.x", &app_key).await, 403);
    assert_eq!(ws_produce(&mut session, "w4", "c.x").await["type"], "ack");

    // A broken file is refused and the rules in force stay.
    std::fs::write(&config_file, "[auth]\nnot_a_key = 1\n").unwrap();
    assert_eq!(reload(&ops_key).await.unwrap().status(), 400);
    assert_eq!(conn.produce("c.x", &app_key).await, 200);
}
