//! Identity, ACLs and quotas over real TLS sockets: API keys, HS256 and
//! RS256 tokens (from a key file and a JWKS file), client certificates,
//! WebSocket tokens by subprotocol and by first frame; ACL allow and deny
//! on REST, SSE, WebSocket and the admin listener; quotas in both modes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::TestGateway;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use sluice::auth::apikey::{generate_key, hash_key};
use sluice_config::{
    AclRule, ApiKeyConfig, AuthConfig, JwtAlgorithm, JwtConfig, JwtKeyConfig, Operation,
    QuotaConfig, QuotaMode,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "sluice";
const HS_SECRET: &str = "test-only-hs256-secret-of-at-least-32-bytes";
const FRAME_WAIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The keys of one test run: made fresh, only their hashes go in the config.
struct Keys {
    dev1: String,
    reader: String,
    ops: String,
}

impl Keys {
    fn new() -> Self {
        Self {
            dev1: generate_key().unwrap(),
            reader: generate_key().unwrap(),
            ops: generate_key().unwrap(),
        }
    }
}

fn api_key(principal: &str, key: &str, groups: &[&str]) -> ApiKeyConfig {
    ApiKeyConfig {
        principal: principal.into(),
        key_sha256: hash_key(key),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn rule(
    principal: Option<&str>,
    group: Option<&str>,
    topic: Option<&str>,
    prefix: Option<&str>,
    operations: &[Operation],
) -> AclRule {
    AclRule {
        principal: principal.map(Into::into),
        group: group.map(Into::into),
        topic: topic.map(Into::into),
        prefix: prefix.map(Into::into),
        operations: operations.to_vec(),
    }
}

fn auth_config(keys: &Keys) -> AuthConfig {
    use Operation::*;
    AuthConfig {
        api_keys: vec![
            api_key("dev-1", &keys.dev1, &["devices"]),
            api_key("reader", &keys.reader, &[]),
            api_key("ops", &keys.ops, &[]),
        ],
        jwt: Some(JwtConfig {
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            keys: vec![
                JwtKeyConfig {
                    kid: None,
                    algorithm: JwtAlgorithm::Hs256,
                    secret_file: None,
                    secret: Some(HS_SECRET.into()),
                    public_key_file: None,
                },
                JwtKeyConfig {
                    kid: Some("rs-file".into()),
                    algorithm: JwtAlgorithm::Rs256,
                    secret_file: None,
                    secret: None,
                    public_key_file: Some(fixture("jwt-rs256-public.pem")),
                },
            ],
            jwks_file: Some(fixture("jwks.json")),
            principal_claim: "sub".into(),
            groups_claim: "groups".into(),
            leeway_secs: 5,
        }),
        acls: vec![
            rule(
                Some("dev-1"),
                None,
                None,
                Some("devices.dev-1."),
                &[Produce, Consume],
            ),
            rule(
                Some("reader"),
                None,
                None,
                Some("devices."),
                &[Consume, Describe],
            ),
            rule(None, Some("web"), Some("news"), None, &[Consume, Describe]),
            rule(None, Some("web"), Some("chat"), None, &[Produce]),
            rule(Some("ops"), None, None, None, &[Admin, Describe]),
            rule(
                Some("device-9"),
                None,
                None,
                Some("devices.device-9."),
                &[Produce],
            ),
        ],
        ..AuthConfig::default()
    }
}

async fn secure_gateway(keys: &Keys, adjust: impl FnOnce(&mut AuthConfig)) -> TestGateway {
    let mut auth = auth_config(keys);
    adjust(&mut auth);
    let gw = TestGateway::start_with(|c| c.auth = Some(auth)).await;
    for topic in ["devices.dev-1.temp", "devices.dev-2.temp", "news", "chat"] {
        let response = gw
            .client
            .post(format!("{}/v3/clusters/sluice/topics", gw.url))
            .bearer_auth(&keys.ops)
            .json(&json!({"topic_name": topic, "partitions_count": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{topic}");
    }
    gw
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str, groups: &[&str]) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "groups": groups})
}

fn hs_token(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn rs_token(claims: &Value, kid: &str) -> String {
    let pem = std::fs::read(fixture("jwt-rs256-private.pem")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

fn record_body() -> String {
    json!({"records": [{"value": "aGVsbG8="}]}).to_string()
}

/// A v2 produce with `credential` as a bearer token; status and body.
async fn produce(gw: &TestGateway, topic: &str, credential: Option<&str>) -> (StatusCode, Value) {
    let mut request = gw
        .client
        .post(format!("{}/topics/{topic}", gw.url))
        .header("content-type", BINARY)
        .body(record_body());
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(gw: &TestGateway, path: &str, credential: Option<&str>) -> reqwest::Response {
    let mut request = gw.client.get(format!("{}{path}", gw.url));
    if let Some(credential) = credential {
        request = request.header("x-api-key", credential);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn api_keys_acls_on_rest_produce_read_and_metadata() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |_| {}).await;

    // Who are you: no credentials, a wrong key, a malformed header.
    let response = gw
        .client
        .post(format!("{}/topics/devices.dev-1.temp", gw.url))
        .header("content-type", BINARY)
        .body(record_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"sluice\""
    );
    assert_eq!(response.json::<Value>().await.unwrap()["error_code"], 40101);
    let (status, body) = produce(&gw, "devices.dev-1.temp", Some("sk_not-a-key")).await;
    assert_eq!(
        (status.as_u16(), body["error_code"].as_u64()),
        (401, Some(40101))
    );
    let response = gw
        .client
        .get(format!("{}/topics", gw.url))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Allowed: its own prefix. Denied: another device's, and reading a
    // prefix it may not describe.
    let (status, body) = produce(&gw, "devices.dev-1.temp", Some(&keys.dev1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["throttle_time_ms"], 0, "{body}");
    let (status, body) = produce(&gw, "devices.dev-2.temp", Some(&keys.dev1)).await;
    assert_eq!(
        (status.as_u16(), body["error_code"].as_u64()),
        (403, Some(40301))
    );
    let (status, _) = produce(&gw, "devices.dev-1.temp", Some(&keys.reader)).await;
    assert_eq!(status, 403);

    // Reads: the reader may consume devices.*, the device only its own.
    let path = "/topics/devices.dev-1.temp/partitions/0/records?offset=0";
    let response = get(&gw, path, Some(&keys.reader)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(get(&gw, path, Some(&keys.dev1)).await.status(), 200);
    let other = "/topics/news/partitions/0/records?offset=0";
    assert_eq!(get(&gw, other, Some(&keys.dev1)).await.status(), 403);

    // Metadata is describe: the reader on devices.*, ops everywhere; topic
    // listings need describe on the whole cluster.
    assert_eq!(
        get(&gw, "/topics/devices.dev-2.temp", Some(&keys.reader))
            .await
            .status(),
        200
    );
    assert_eq!(
        get(&gw, "/topics/news", Some(&keys.reader)).await.status(),
        403
    );
    assert_eq!(get(&gw, "/topics", Some(&keys.reader)).await.status(), 403);
    assert_eq!(get(&gw, "/topics", Some(&keys.ops)).await.status(), 200);
    assert_eq!(
        get(&gw, "/v3/clusters/sluice/topics", Some(&keys.ops))
            .await
            .status(),
        200
    );
    // v3 produce is produce.
    let v3 = gw
        .client
        .post(format!(
            "{}/v3/clusters/sluice/topics/devices.dev-2.temp/records",
            gw.url
        ))
        .bearer_auth(&keys.dev1)
        .json(&json!({"value": {"type": "JSON", "data": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(v3.status(), 403);
    // Topic creation is admin.
    let create = gw
        .client
        .post(format!("{}/v3/clusters/sluice/topics", gw.url))
        .bearer_auth(&keys.dev1)
        .json(&json!({"topic_name": "devices.dev-1.new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 403);
    // Unknown routes answer 404 only to someone who authenticated.
    assert_eq!(get(&gw, "/nope", None).await.status(), 401);
    assert_eq!(get(&gw, "/nope", Some(&keys.reader)).await.status(), 404);
    // The API document stays public.
    assert_eq!(get(&gw, "/openapi.json", None).await.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn jwts_hs256_and_rs256_with_every_claim_checked() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |_| {}).await;
    let good = claims("alice", &["web"]);

    let ok = [
        hs_token(&good, HS_SECRET),
        rs_token(&good, "rs-file"),
        rs_token(&good, "rs-2026"),
    ];
    for token in &ok {
        let (status, body) = produce(&gw, "chat", Some(token)).await;
        assert_eq!(status, 200, "{body}");
        // The group allows chat, not news.
        let (status, body) = produce(&gw, "news", Some(token)).await;
        assert_eq!(
            (status.as_u16(), body["error_code"].as_u64()),
            (403, Some(40301))
        );
    }

    let with = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = good.as_object().unwrap().clone();
        change(&mut c);
        Value::Object(c)
    };
    let bad = [
        (
            "expired",
            hs_token(
                &with(&|c| {
                    c.insert("exp".into(), json!(now() - 600));
                }),
                HS_SECRET,
            ),
            "token expired",
        ),
        (
            "not yet valid",
            rs_token(
                &with(&|c| {
                    c.insert("nbf".into(), json!(now() + 600));
                }),
                "rs-2026",
            ),
            "token not yet valid",
        ),
        (
            "forged",
            hs_token(&good, "another-secret-that-is-also-long-enough"),
            "invalid token signature",
        ),
        (
            "wrong audience",
            rs_token(
                &with(&|c| {
                    c.insert("aud".into(), json!("billing"));
                }),
                "rs-file",
            ),
            "token audience not accepted",
        ),
        (
            "wrong issuer",
            hs_token(
                &with(&|c| {
                    c.insert("iss".into(), json!("https://evil.example"));
                }),
                HS_SECRET,
            ),
            "token issuer not accepted",
        ),
        (
            "unknown kid",
            rs_token(&good, "rs-unknown"),
            "no key for this token",
        ),
    ];
    for (what, token, message) in &bad {
        let (status, body) = produce(&gw, "chat", Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error_code"], 40101, "{what}");
        assert_eq!(body["message"], *message, "{what}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn failed_authentications_cool_an_address_down() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |a| {
        a.failed_auth.max_failures = 3;
        a.failed_auth.cooldown_ms = 60_000;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(produce(&gw, "chat", Some("sk_wrong")).await.0, 401);
    }
    // Now even a good key from this address waits.
    let response = gw
        .client
        .get(format!("{}/topics", gw.url))
        .bearer_auth(&keys.ops)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.json::<Value>().await.unwrap()["error_code"], 42902);
    gw.stop().await;
}

#[tokio::test]
async fn admin_listener_needs_the_admin_operation() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |_| {}).await;
    let admin = |path: &str, key: Option<&str>| {
        let mut request = gw.client.get(format!("{}{path}", gw.admin_url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    assert_eq!(admin("/healthz", None).await.unwrap().status(), 200);
    assert_eq!(admin("/readyz", None).await.unwrap().status(), 200);
    let response = admin("/admin/clusters", None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let response = admin("/admin/clusters", Some(&keys.reader)).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.json::<Value>().await.unwrap()["error_code"], 40301);
    assert_eq!(
        admin("/admin/clusters", Some(&keys.ops))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        admin("/admin/topics/news/placement", Some(&keys.ops))
            .await
            .unwrap()
            .status(),
        200
    );
    // Reload is an admin call too; without a config file it says why.
    let reload = gw
        .client
        .post(format!("{}/admin/reload", gw.admin_url))
        .bearer_auth(&keys.reader)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 403);
    gw.stop().await;
}

#[tokio::test]
async fn sse_needs_consume() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |_| {}).await;
    let open = |path: &str, key: Option<&str>| {
        let mut request = gw.client.get(format!("{}{path}", gw.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let response = open(
        "/topics/devices.dev-1.temp/events?from=earliest",
        Some(&keys.reader),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    drop(response);
    let response = open("/topics/news/events", Some(&keys.reader))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.json::<Value>().await.unwrap()["error_code"], 40301);
    assert_eq!(
        open("/topics/news/events", None).await.unwrap().status(),
        401
    );
    let token = hs_token(&claims("browser-1", &["web"]), HS_SECRET);
    assert_eq!(
        open("/topics/news/events", Some(&token))
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}

/// A WebSocket client; connecting answers the HTTP status of a refused upgrade.
struct Ws {
    stream: WebSocketStream<TlsStream<TcpStream>>,
    protocol: Option<String>,
}

fn client_tls(gw: &TestGateway) -> rustls::ClientConfig {
    let ca = gw.data_dir.path().join("tls/ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Ws {
    async fn connect(gw: &TestGateway, query: &str, protocols: Option<&str>) -> Result<Self, u16> {
        let tcp = TcpStream::connect(gw.addr).await.expect("TCP connect");
        let tls = TlsConnector::from(Arc::new(client_tls(gw)))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake");
        let url = format!("wss://localhost:{}/v1/ws{query}", gw.addr.port());
        let mut request = url.into_client_request().unwrap();
        if let Some(protocols) = protocols {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocols.parse().unwrap());
        }
        match tokio_tungstenite::client_async(request, tls).await {
            Ok((stream, response)) => Ok(Self {
                stream,
                protocol: response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_owned()),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("upgrade failed: {e}"),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::text(frame.to_string()))
            .await
            .expect("frame sent");
    }

    /// The next text frame as JSON, or `None` when the server closed.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.stream.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap())
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    }

    async fn produce(&mut self, id: &str, topic: &str) -> Value {
        self.send(
            json!({"type": "produce", "id": id, "topic": topic, "records": [{"value": "aGk="}]}),
        )
        .await;
        self.next().await.expect("an answer")
    }
}

#[tokio::test]
async fn websocket_token_by_subprotocol_and_by_first_frame() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |_| {}).await;

    // No credentials: 401 before any upgrade; a bad token likewise.
    assert_eq!(Ws::connect(&gw, "", None).await.err(), Some(401));
    assert_eq!(
        Ws::connect(&gw, "", Some("sluice.v1.json, sluice.bearer.sk_wrong"))
            .await
            .err(),
        Some(401)
    );

    // A browser's JWT as a subprotocol; only the real subprotocol is echoed.
    let token = hs_token(&claims("browser-1", &["web"]), HS_SECRET);
    let mut ws = Ws::connect(
        &gw,
        "",
        Some(&format!("sluice.v1.json, sluice.bearer.{token}")),
    )
    .await
    .expect("upgrade");
    assert_eq!(ws.protocol.as_deref(), Some("sluice.v1.json"));
    let ack = ws.produce("p1", "chat").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let denied = ws.produce("p2", "news").await;
    assert_eq!(
        (denied["type"].as_str(), denied["id"].as_str()),
        (Some("error"), Some("p2"))
    );
    assert_eq!(denied["error_code"], 40301, "{denied}");
    ws.send(json!({"type": "subscribe", "id": "s1", "topic": "chat"}))
        .await;
    let denied = ws.next().await.unwrap();
    assert_eq!(
        (denied["id"].as_str(), denied["error_code"].as_u64()),
        (Some("s1"), Some(40301))
    );
    ws.send(json!({"type": "subscribe", "id": "s2", "topic": "news", "from": "earliest"}))
        .await;
    let subscribed = ws.next().await.unwrap();
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");

    // An API key in the first frame.
    let mut ws = Ws::connect(&gw, "?auth=frame", None)
        .await
        .expect("upgrade");
    ws.send(json!({"type": "auth", "token": keys.dev1})).await;
    let hello = ws.next().await.unwrap();
    assert_eq!(
        (hello["type"].as_str(), hello["principal"].as_str()),
        (Some("authenticated"), Some("dev-1"))
    );
    assert_eq!(ws.produce("p1", "devices.dev-1.temp").await["type"], "ack");
    assert_eq!(
        ws.produce("p2", "devices.dev-2.temp").await["error_code"],
        40301
    );

    // A frame before authenticating, or a bad token, ends the session.
    let mut ws = Ws::connect(&gw, "?auth=frame", None)
        .await
        .expect("upgrade");
    let refused = ws.produce("p1", "chat").await;
    assert_eq!(refused["error_code"], 40101, "{refused}");
    assert!(ws.next().await.is_none(), "closed after refusing");
    let mut ws = Ws::connect(&gw, "?auth=frame", None)
        .await
        .expect("upgrade");
    let expired = hs_token(
        &json!({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": now() - 600}),
        HS_SECRET,
    );
    ws.send(json!({"type": "auth", "token": expired})).await;
    let refused = ws.next().await.unwrap();
    assert_eq!(
        (refused["error_code"].as_u64(), refused["message"].as_str()),
        (Some(40101), Some("token expired"))
    );
    assert!(
        ws.next().await.is_none(),
        "closed after a failed auth frame"
    );
    gw.stop().await;
}

/// A session opened to authenticate by frame that never sends one is
/// closed (4401) after `auth.websocket.frame_timeout_ms`; one that did is
/// not.
#[tokio::test]
async fn websocket_without_an_auth_frame_is_closed_after_the_deadline() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |auth| auth.websocket.frame_timeout_ms = 300).await;

    let mut silent = Ws::connect(&gw, "?auth=frame", None)
        .await
        .expect("upgrade");
    let mut authenticated = Ws::connect(&gw, "?auth=frame", None)
        .await
        .expect("upgrade");
    authenticated
        .send(json!({"type": "auth", "token": keys.dev1}))
        .await;
    assert_eq!(authenticated.next().await.unwrap()["type"], "authenticated");

    let refused = silent.next().await.expect("an error frame first");
    assert_eq!(refused["error_code"], 40101, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("no auth frame within 300 ms")),
        "{refused}"
    );
    let close = tokio::time::timeout(FRAME_WAIT, silent.stream.next())
        .await
        .expect("closed in time");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4401),
        other => panic!("expected a Close frame, got {other:?}"),
    }

    // Well past the deadline, the authenticated session works on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        authenticated.produce("p1", "devices.dev-1.temp").await["type"],
        "ack"
    );
    gw.stop().await;
}

/// A CA and a client certificate it signed, as PEM.
struct ClientPki {
    ca_pem: String,
    identity_pem: String,
}

fn client_pki(cn: &str) -> ClientPki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Fleet CA");
    ca_params.distinguished_name = name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec![format!("{cn}.fleet.example")]).unwrap();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    params.distinguished_name = name;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    ClientPki {
        ca_pem: ca.pem(),
        identity_pem: format!("{}{}", cert.pem(), key.serialize_pem()),
    }
}

#[tokio::test]
async fn client_certificates_name_the_principal() {
    let keys = Keys::new();
    let pki = client_pki("device-9");
    let stranger = client_pki("device-9");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("fleet-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let gw = secure_gateway(&keys, |a| {
        a.mtls = Some(sluice_config::MtlsConfig {
            ca_file: ca_file.clone(),
            principal_from: sluice_config::CertPrincipalSource::Cn,
            required: false,
        });
    })
    .await;
    let ca = std::fs::read(gw.data_dir.path().join("tls/ca.pem")).unwrap();
    let client_with = |identity: &str| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    let device = client_with(&pki.identity_pem);
    let send = |client: &reqwest::Client, topic: &str| {
        client
            .post(format!("{}/topics/{topic}", gw.url))
            .header("content-type", BINARY)
            .body(record_body())
            .send()
    };
    assert_eq!(
        send(&device, "devices.device-9.temp")
            .await
            .unwrap()
            .status(),
        200
    );
    let denied = send(&device, "devices.dev-1.temp").await.unwrap();
    assert_eq!(denied.status(), 403);
    assert!(denied.text().await.unwrap().contains("device-9"));
    // No certificate: the connection is served, the request needs credentials.
    assert_eq!(
        send(&gw.client, "devices.device-9.temp")
            .await
            .unwrap()
            .status(),
        401
    );
    // A certificate from another CA fails the handshake.
    let outsider = client_with(&stranger.identity_pem);
    assert!(send(&outsider, "devices.device-9.temp").await.is_err());
    gw.stop().await;
}

fn quota(mode: QuotaMode) -> QuotaConfig {
    QuotaConfig {
        produce_bytes_per_sec: None,
        consume_bytes_per_sec: None,
        requests_per_sec: None,
        max_connections: None,
        max_subscriptions: None,
        burst_ms: 1_000,
        mode,
    }
}

#[tokio::test]
async fn quotas_reject_throttle_and_count() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |a| {
        a.quotas.principals.insert(
            "dev-1".into(),
            QuotaConfig {
                requests_per_sec: Some(1),
                ..quota(QuotaMode::Reject)
            },
        );
        a.quotas.principals.insert(
            "reader".into(),
            QuotaConfig {
                consume_bytes_per_sec: Some(100),
                max_subscriptions: Some(1),
                burst_ms: 100,
                ..quota(QuotaMode::Throttle)
            },
        );
    })
    .await;
    // Reject: a burst of one request (and one more into debt), then 429
    // with Retry-After and 42901 while the debt lasts.
    let mut answers = Vec::new();
    let response = loop {
        let response = gw
            .client
            .post(format!("{}/topics/devices.dev-1.temp", gw.url))
            .header("content-type", BINARY)
            .bearer_auth(&keys.dev1)
            .body(record_body())
            .send()
            .await
            .unwrap();
        if response.status() != 200 || answers.len() == 10 {
            break response;
        }
        answers.push(response.status());
    };
    assert!(answers.len() >= 2, "the burst passes: {answers:?}");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.json::<Value>().await.unwrap()["error_code"], 42901);
    // Others are not affected.
    assert_eq!(get(&gw, "/topics", Some(&keys.ops)).await.status(), 200);

    // Throttle on reads: the answer is held and says for how long.
    let path = "/topics/devices.dev-1.temp/partitions/0/records?offset=0";
    let first = get(&gw, path, Some(&keys.reader)).await;
    assert_eq!(first.status(), 200);
    let started = std::time::Instant::now();
    let second = get(&gw, path, Some(&keys.reader)).await;
    assert_eq!(second.status(), 200);
    let held: u64 = second.headers()["sluice-throttle-time-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(held > 0);
    assert!(started.elapsed() >= Duration::from_millis(held));

    // One subscription at a time for the reader.
    let sse = gw
        .client
        .get(format!("{}/topics/devices.dev-1.temp/events", gw.url))
        .bearer_auth(&keys.reader)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let second = gw
        .client
        .get(format!("{}/topics/devices.dev-2.temp/events", gw.url))
        .bearer_auth(&keys.reader)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 429);
    drop(sse);
    gw.stop().await;
}

#[tokio::test]
async fn websocket_throttle_pauses_and_says_so() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |a| {
        a.quotas.default = Some(QuotaConfig {
            produce_bytes_per_sec: Some(1_000),
            burst_ms: 100,
            ..quota(QuotaMode::Throttle)
        });
    })
    .await;
    let token = hs_token(&claims("browser-2", &["web"]), HS_SECRET);
    let mut ws = Ws::connect(
        &gw,
        "",
        Some(&format!("sluice.v1.json, sluice.bearer.{token}")),
    )
    .await
    .expect("upgrade");
    let big = "QUFB".repeat(100);
    let mut throttles = 0;
    let started = std::time::Instant::now();
    for i in 0..4 {
        ws.send(json!({"type": "produce", "id": format!("p{i}"), "topic": "chat", "records": [{"value": big}]}))
            .await;
    }
    let mut acks = 0;
    while acks < 4 {
        let frame = ws.next().await.unwrap();
        match frame["type"].as_str() {
            Some("ack") => acks += 1,
            Some("throttle") => {
                assert!(frame["throttle_time_ms"].as_u64().unwrap() > 0);
                throttles += 1;
            }
            other => panic!("unexpected {other:?}: {frame}"),
        }
    }
    assert!(throttles >= 2, "{throttles}");
    // ~4 × 460 bytes at 1000 B/s with a 100-byte burst: well over a second.
    assert!(started.elapsed() >= Duration::from_millis(1_000));
    gw.stop().await;
}

#[tokio::test]
async fn websocket_pushes_count_against_the_consume_quota() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |a| {
        a.quotas.default = Some(QuotaConfig {
            consume_bytes_per_sec: Some(2_000),
            burst_ms: 100,
            ..quota(QuotaMode::Reject)
        });
    })
    .await;
    // dev-1 may produce and consume its own topics.
    let mut ws = Ws::connect(
        &gw,
        "",
        Some(&format!("sluice.v1.json, sluice.bearer.{}", keys.dev1)),
    )
    .await
    .expect("upgrade");
    let big = "QUFB".repeat(100);
    for i in 0..6 {
        ws.send(json!({"type": "produce", "id": format!("p{i}"), "topic": "devices.dev-1.pushes", "records": [{"value": big}]}))
            .await;
        assert_eq!(ws.next().await.unwrap()["type"], "ack");
    }
    let started = std::time::Instant::now();
    ws.send(json!({"type": "subscribe", "id": "s", "topic": "devices.dev-1.pushes", "from": "earliest"}))
        .await;
    let (mut records, mut throttles) = (0, 0);
    while records < 6 {
        let frame = ws.next().await.unwrap();
        match frame["type"].as_str() {
            Some("subscribed") => {}
            Some("record") => records += 1,
            Some("throttle") => {
                assert!(frame["throttle_time_ms"].as_u64().unwrap() > 0);
                throttles += 1;
            }
            other => panic!("unexpected {other:?}: {frame}"),
        }
    }
    // Six pushes of about 700 bytes at 2,000 B/s with a 200-byte burst:
    // the subscription is paused (both modes; a push cannot be refused).
    assert!(throttles >= 2, "{throttles}");
    assert!(started.elapsed() >= Duration::from_millis(1_000));
    gw.stop().await;
}

#[tokio::test]
async fn anonymous_only_when_allowed() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |a| {
        a.allow_anonymous = true;
        a.acls.push(rule(
            Some("anonymous"),
            None,
            Some("news"),
            None,
            &[Consume],
        ));
    })
    .await;
    use Operation::Consume;
    let path = "/topics/news/partitions/0/records?offset=0";
    assert_eq!(get(&gw, path, None).await.status(), 200);
    assert_eq!(produce(&gw, "news", None).await.0, 403);
    // A bad credential is still a 401, not a fall back to anonymous.
    assert_eq!(get(&gw, path, Some("sk_wrong")).await.status(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn auth_off_by_default() {
    let gw = TestGateway::start().await;
    let (status, body) = produce(&gw, "open", None).await;
    assert_eq!(status, 200);
    // No quota, no throttle field added to the Confluent answer.
    assert!(body.get("throttle_time_ms").is_none(), "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn websocket_auth_frame_in_cbor_framing() {
    let keys = Keys::new();
    let gw = secure_gateway(&keys, |_| {}).await;
    let mut ws = Ws::connect(&gw, "?framing=cbor&auth=frame", None)
        .await
        .expect("upgrade");
    let cbor = |value: &Value| {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out).unwrap();
        out
    };
    let next_cbor = async |ws: &mut Ws| loop {
        match tokio::time::timeout(FRAME_WAIT, ws.stream.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Binary(bytes))) => {
                break ciborium::de::from_reader::<Value, _>(&bytes[..]).unwrap()
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    };
    ws.stream
        .send(Message::binary(cbor(
            &json!({"type": "auth", "token": keys.dev1}),
        )))
        .await
        .unwrap();
    let hello = next_cbor(&mut ws).await;
    assert_eq!(hello["type"], "authenticated", "{hello}");
    assert_eq!(hello["principal"], "dev-1");
    ws.stream
        .send(Message::binary(cbor(
            &json!({"type": "produce", "id": "p", "topic": "news", "records": []}),
        )))
        .await
        .unwrap();
    let refused = next_cbor(&mut ws).await;
    assert_eq!(refused["error_code"], 40301, "{refused}");
    gw.stop().await;
}
