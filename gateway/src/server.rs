//! Listeners: binding, the accept loop and its connection cap, TLS with
//! ALPN, HTTP/1.1 and HTTP/2 serving, and graceful drain.
//!
//! Shutdown runs in order: stop accepting, let in-flight requests finish
//! within the grace period, then cut what is left and flush the clusters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sluice_broker::embedded::EmbeddedCluster;
use sluice_broker::kafka::KafkaCluster;
use sluice_broker::Cluster;
use sluice_config::PlacementStoreKind;
use sluice_config::{CertPrincipalSource, ClusterConfig, ClusterKind, Config};
use sluice_federation::kafka_store::KafkaStore;
use sluice_federation::store::{FileStore, PlacementStore};
use sluice_federation::Federation;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::app::{self, AppState};
use crate::telemetry::Telemetry;
use crate::tls::ServerTls;

/// Pause after an accept error (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Connection-level limits of one listener.
#[derive(Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_read_timeout: Duration,
    tls_handshake_timeout: Duration,
    /// Where a client certificate names the principal (client certificates on).
    cert_principal: Option<CertPrincipalSource>,
}

/// A running gateway: its listeners, clusters and the tasks serving them.
pub struct Gateway {
    /// Where the public listener is bound.
    pub addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    /// Whether the public listener speaks TLS.
    pub tls: bool,
    /// The generated CA clients should trust, when the certificate was generated.
    pub generated_ca_file: Option<std::path::PathBuf>,
    /// SHA-256 fingerprint of the public listener's certificate.
    pub tls_fingerprint: Option<String>,
    shutdown: ShutdownHandle,
    listeners: JoinSet<()>,
    federation: Arc<Federation>,
    auth: Arc<crate::auth::Auth>,
    embedded: Vec<Arc<EmbeddedCluster>>,
    kafka: Vec<Arc<KafkaCluster>>,
    telemetry: Arc<Telemetry>,
}

/// Starts a gateway's shutdown from anywhere (signal handler, tests).
#[derive(Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
    draining: Arc<AtomicBool>,
}

impl Default for ShutdownHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownHandle {
    /// A handle whose shutdown nobody has started yet.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self {
            tx: Arc::new(tx),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stops accepting and begins the drain.
    pub fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.tx.send_replace(true);
    }

    /// Whether shutdown has begun (readiness turns false).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has begun: long-lived responses (event
    /// streams) end then, so the drain does not wait out its grace period.
    pub async fn draining(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|draining| *draining).await;
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

impl Gateway {
    /// Opens the clusters, binds both listeners and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let telemetry = Telemetry::start(&config).context("setting up telemetry")?;
        let data_dir = config.storage.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;

        let mut clusters: Vec<(ClusterConfig, Arc<dyn Cluster>)> = Vec::new();
        let mut embedded = Vec::new();
        let mut kafka = Vec::new();
        for cluster in &config.clusters {
            match cluster.kind {
                ClusterKind::Embedded => {
                    let dir = data_dir.join("clusters").join(&cluster.name);
                    let (name, settings) = (cluster.name.clone(), cluster.embedded.clone());
                    let opened = tokio::task::spawn_blocking(move || {
                        EmbeddedCluster::open(&name, &dir, &settings).with_context(|| {
                            format!("opening embedded cluster {name:?} in {}", dir.display())
                        })
                    })
                    .await??;
                    embedded.push(opened.clone());
                    clusters.push((cluster.clone(), opened));
                }
                ClusterKind::Kafka => {
                    // Validation guarantees the table; a cluster that is down
                    // is no reason to fail startup (its health says so).
                    let settings = cluster.kafka.as_ref().with_context(|| {
                        format!(
                            "cluster {:?}: kind \"kafka\" needs [clusters.kafka]",
                            cluster.name
                        )
                    })?;
                    let connected = KafkaCluster::connect(&cluster.name, settings)
                        .with_context(|| format!("configuring kafka cluster {:?}", cluster.name))?;
                    kafka.push(connected.clone());
                    clusters.push((cluster.clone(), connected));
                }
            }
        }
        let store = open_placement_store(&config).await?;
        let federation = Federation::open(clusters, &config, store)
            .await
            .context("opening the federation")?;

        let auth = crate::auth::Auth::new(&config).context("setting up auth")?;
        let shutdown = ShutdownHandle::new();
        let state = AppState {
            federation: federation.clone(),
            config: config.clone(),
            shutdown: shutdown.clone(),
            telemetry: telemetry.clone(),
            consumers: crate::rest::consumers::Consumers::new(federation.clone(), &config),
        };
        let grace = Duration::from_millis(config.gateway.shutdown_grace_ms);

        let public_tls = if config.listener.insecure {
            None
        } else {
            let client_auth = match config.auth.as_ref().and_then(|a| a.mtls.as_ref()) {
                Some(mtls) => Some(crate::auth::mtls::client_verifier(mtls)?),
                None => None,
            };
            let tls = ServerTls::load_or_generate_with_client_auth(
                config.listener.tls.as_ref(),
                &data_dir,
                client_auth,
            )
            .context("setting up TLS for the listener")?;
            tracing::info!(
                cert = %tls.cert_file.display(),
                ca = tls.generated_ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                sha256 = %tls.fingerprint_sha256,
                "listener certificate"
            );
            Some(tls)
        };
        let generated_ca_file = public_tls
            .as_ref()
            .and_then(|t| t.generated_ca_file.clone());
        let tls_fingerprint = public_tls.as_ref().map(|t| t.fingerprint_sha256.clone());
        let admin_tls = if config.admin.insecure {
            None
        } else {
            Some(
                ServerTls::load_or_generate(config.admin.tls.as_ref(), &data_dir)
                    .context("setting up TLS for the admin listener")?,
            )
        };

        let public = TcpListener::bind(config.listener.address)
            .await
            .with_context(|| format!("binding listener.address {}", config.listener.address))?;
        let admin = TcpListener::bind(config.admin.address)
            .await
            .with_context(|| format!("binding admin.address {}", config.admin.address))?;
        let addr = public.local_addr()?;
        let admin_addr = admin.local_addr()?;

        let public_limits = Limits {
            max_connections: config.listener.max_connections,
            header_read_timeout: Duration::from_millis(config.listener.header_read_timeout_ms),
            tls_handshake_timeout: Duration::from_millis(config.listener.tls_handshake_timeout_ms),
            cert_principal: config
                .auth
                .as_ref()
                .and_then(|a| a.mtls.as_ref())
                .map(|m| m.principal_from),
        };
        let admin_limits = Limits {
            max_connections: config.admin.max_connections,
            cert_principal: None,
            ..public_limits
        };

        let mut listeners = JoinSet::new();
        listeners.spawn(serve(
            public,
            public_tls.map(|t| TlsAcceptor::from(t.config)),
            crate::auth::layer::public(
                app::router(state.clone()),
                auth.clone(),
                config.listener.max_body_bytes,
            ),
            public_limits,
            grace,
            shutdown.subscribe(),
        ));
        listeners.spawn(serve(
            admin,
            admin_tls.map(|t| TlsAcceptor::from(t.config)),
            crate::auth::layer::admin(
                crate::admin::router(federation.clone(), shutdown.clone())
                    .merge(crate::telemetry::scrape::router(
                        telemetry.clone(),
                        federation.clone(),
                    ))
                    .merge(crate::rest::consumers::internal_router(state.clone())),
                auth.clone(),
            ),
            admin_limits,
            grace,
            shutdown.subscribe(),
        ));

        Ok(Self {
            addr,
            admin_addr,
            tls: !config.listener.insecure,
            generated_ca_file,
            tls_fingerprint,
            shutdown,
            listeners,
            federation,
            auth,
            embedded,
            kafka,
            telemetry,
        })
    }

    /// Tracing and metrics of this gateway.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The federation this gateway routes through.
    pub fn federation(&self) -> &Arc<Federation> {
        &self.federation
    }

    /// Identity, ACLs and quotas; `reload` re-reads them.
    pub fn auth(&self) -> &Arc<crate::auth::Auth> {
        &self.auth
    }

    /// An embedded cluster by name (tests flip its fault switch).
    pub fn embedded_cluster(&self, name: &str) -> Option<&Arc<EmbeddedCluster>> {
        self.embedded.iter().find(|c| c.name() == name)
    }

    /// A handle that starts this gateway's shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Waits until shutdown was requested and the drain is complete, then
    /// flushes the embedded clusters to disk.
    pub async fn wait(mut self) {
        while self.listeners.join_next().await.is_some() {}
        drop(self.federation);
        // Records still queued in librdkafka (acks=0) go out before exit.
        for cluster in &self.kafka {
            if let Err(e) = cluster.shutdown().await {
                tracing::error!(cluster = cluster.name(), error = %e, "flushing on shutdown failed");
            }
        }
        for cluster in &self.embedded {
            if let Err(e) = cluster.shutdown() {
                tracing::error!(cluster = cluster.name(), error = %e, "flushing on shutdown failed");
            }
        }
        // Spans of the drained requests go out last.
        self.telemetry.shutdown().await;
    }

    /// Shuts down and waits for the drain to complete.
    pub async fn stop(self) {
        self.shutdown.shutdown();
        self.wait().await;
    }
}

/// The placement store the config names: a local file, or a compacted topic
/// on a Kafka cluster shared with other gateways.
async fn open_placement_store(config: &Config) -> anyhow::Result<Arc<dyn PlacementStore>> {
    let placement = &config.federation.placement;
    match placement.store {
        PlacementStoreKind::File => Ok(Arc::new(
            FileStore::open(&config.storage.data_dir).context("opening the placement store")?,
        )),
        PlacementStoreKind::Kafka => {
            // Validation guarantees the cluster exists and is a Kafka one.
            let name = placement.cluster.clone().unwrap_or_default();
            let kafka = config
                .cluster(&name)
                .and_then(|c| c.kafka.clone())
                .with_context(|| {
                    format!("federation.placement.cluster {name:?} is not a kafka cluster")
                })?;
            let topic = placement.topic.clone();
            let store = tokio::task::spawn_blocking(move || {
                KafkaStore::open(
                    &kafka.bootstrap_servers,
                    &kafka.properties,
                    &topic,
                    Duration::from_millis(kafka.request_timeout_ms),
                )
            })
            .await?
            .with_context(|| format!("opening the placement topic on cluster {name:?}"))?;
            Ok(Arc::new(store))
        }
    }
}

/// Accepts and serves connections until shutdown, then drains them.
async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());

    loop {
        // The permit is taken before accepting, so a full gateway leaves new
        // connections in the kernel's backlog instead of accepting and dropping them.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let router = router.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, tls, router, builder, limits, watcher).await;
        });
    }
    drop(listener);

    // Stop keep-alive reuse and let in-flight requests finish.
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "grace period over; closing remaining connections"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) {
    // What auth knows of the connection, set once the handshake verified
    // (or did not ask for) a client certificate.
    let connection = Arc::new(std::sync::OnceLock::<Arc<crate::auth::Connection>>::new());
    let for_requests = Arc::clone(&connection);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(connection) = for_requests.get() {
            request.extensions_mut().insert(Arc::clone(connection));
        }
        let router = router.clone();
        async move { router.oneshot(request).await }
    });
    match tls {
        Some(acceptor) => {
            let stream =
                match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(client.addr = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(client.addr = %peer, "TLS handshake timed out");
                        return;
                    }
                };
            let principal = limits.cert_principal.and_then(|source| {
                let cert = stream.get_ref().1.peer_certificates()?.first()?;
                crate::auth::mtls::principal_from_cert(cert, source)
            });
            let _ = connection.set(crate::auth::Connection::new(peer, principal));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
            }
        }
        None => {
            let _ = connection.set(crate::auth::Connection::new(peer, None));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
            }
        }
    }
}
