//! Identity, ACLs and quotas for every front-end.
//!
//! - [`Auth`]: the shared state: the current [`Snapshot`] of `[auth]`
//!   (swapped whole on reload, so requests in flight keep the one they
//!   started with), quota buckets and counters, failed-auth counts.
//! - [`access`]: the one table mapping a route to the operation and topic
//!   it needs; a new route is covered by adding its line there.
//! - [`layer`]: the middleware on the public and admin routers: who are
//!   you (401), may you (403), how much (throttle or 429).
//! - [`ws`]: the same checks per WebSocket frame.
//! - [`apikey`], [`jwt`], [`mtls`]: the three ways to name a principal.
//! - [`acl`], [`quota`], [`failures`]: the rules, the buckets, the cool-down.
//!
//! With no `[auth]` table auth is off and every check passes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sluice_config::{AuthConfig, Config, FailedAuthConfig, Operation, QuotaConfig};

use crate::error::ApiError;

pub mod access;
pub mod acl;
pub mod apikey;
pub mod failures;
pub mod jwt;
pub mod layer;
pub mod mtls;
pub mod quota;
pub mod ws;

use acl::{Acl, Resource};
use apikey::ApiKeys;
use failures::FailedAuth;
use jwt::JwtVerifier;
use quota::{Buckets, Count, CountPermit, QuotaState};

/// Confluent's code for a request without valid credentials.
pub const UNAUTHENTICATED: u32 = 40101;
/// Confluent's code for a principal the ACLs do not allow.
pub const FORBIDDEN: u32 = 40301;
/// Code for a request over its quota.
pub const QUOTA_EXCEEDED: u32 = 42901;
/// Code for an address cooling down after failed authentications.
pub const TOO_MANY_FAILURES: u32 = 42902;
/// Header reporting how long an answer was held for a quota.
pub const THROTTLE_HEADER: &str = "sluice-throttle-time-ms";
/// `WWW-Authenticate` challenge sent with every 401.
pub const CHALLENGE: &str = "Bearer realm=\"sluice\"";
/// The principal of requests without credentials, where allowed.
pub const ANONYMOUS: &str = "anonymous";

/// Where a principal's identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalSource {
    /// An API key.
    ApiKey,
    /// A verified JWT.
    Jwt,
    /// A verified client certificate.
    Certificate,
    /// No credentials, where the config allows that.
    Anonymous,
}

/// An authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name, as ACLs and quotas refer to it.
    pub name: String,
    /// Groups, for ACLs.
    pub groups: Vec<String>,
    /// How it authenticated.
    pub source: PrincipalSource,
}

/// Why the gateway's auth could not be set up from a config.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// JWT keys.
    #[error(transparent)]
    Jwt(#[from] jwt::JwtSetupError),
    /// The client-certificate CA.
    #[error(transparent)]
    Mtls(#[from] mtls::MtlsSetupError),
    /// The config file, on reload.
    #[error(transparent)]
    Config(#[from] sluice_config::ConfigError),
}

/// One consistent view of `[auth]`; replaced whole on reload.
pub struct Snapshot {
    config: Option<AuthConfig>,
    api_keys: ApiKeys,
    jwt: Option<JwtVerifier>,
    acl: Acl,
}

impl Snapshot {
    /// Builds the verifiers and rules of `config` (off when `None`).
    pub fn new(config: Option<&AuthConfig>) -> Result<Self, AuthSetupError> {
        let Some(config) = config else {
            return Ok(Self {
                config: None,
                api_keys: ApiKeys::default(),
                jwt: None,
                acl: Acl::default(),
            });
        };
        Ok(Self {
            api_keys: ApiKeys::new(&config.api_keys),
            jwt: config.jwt.as_ref().map(JwtVerifier::load).transpose()?,
            acl: Acl::new(config.acls.clone()),
            config: Some(config.clone()),
        })
    }

    /// Whether auth is on.
    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    fn allow_anonymous(&self) -> bool {
        self.config.as_ref().is_some_and(|c| c.allow_anonymous)
    }

    fn failed_auth(&self) -> FailedAuthConfig {
        self.config
            .as_ref()
            .map(|c| c.failed_auth.clone())
            .unwrap_or_default()
    }

    /// The quota that applies to `principal`: its own, else the default.
    pub fn quota(&self, principal: &str) -> Option<&QuotaConfig> {
        let quotas = &self.config.as_ref()?.quotas;
        quotas.principals.get(principal).or(quotas.default.as_ref())
    }

    /// Whether the ACLs allow it.
    pub fn allows(
        &self,
        principal: &Principal,
        operation: Operation,
        resource: Resource<'_>,
    ) -> bool {
        !self.enabled() || self.acl.allows(principal, operation, resource)
    }

    /// Checks a presented credential: a JWT or an API key.
    pub fn authenticate(&self, credential: &str) -> Result<Arc<Principal>, &'static str> {
        if jwt::looks_like_jwt(credential) {
            match &self.jwt {
                Some(verifier) => verifier.verify(credential),
                None => Err("tokens are not accepted here"),
            }
        } else {
            self.api_keys
                .authenticate(credential)
                .ok_or("unknown API key")
        }
    }
}

/// Credentials a request or session brought.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// A bearer token or API key.
    Secret(&'a str),
    /// Nothing.
    None,
}

/// The gateway's auth state, shared by both listeners and every session.
pub struct Auth {
    snapshot: ArcSwap<Snapshot>,
    quotas: QuotaState,
    failures: FailedAuth,
    source: OnceLock<PathBuf>,
}

impl Auth {
    /// Auth as `config` says.
    pub fn new(config: &Config) -> Result<Arc<Self>, AuthSetupError> {
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::new(config.auth.as_ref())?),
            quotas: QuotaState::default(),
            failures: FailedAuth::default(),
            source: OnceLock::new(),
        }))
    }

    /// Auth off (for routers built without a config, e.g. in unit tests).
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(Snapshot {
                config: None,
                api_keys: ApiKeys::default(),
                jwt: None,
                acl: Acl::default(),
            }),
            quotas: QuotaState::default(),
            failures: FailedAuth::default(),
            source: OnceLock::new(),
        })
    }

    /// The current rules.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Remembers the config file that reloads read.
    pub fn set_source(&self, path: &Path) {
        let _ = self.source.set(path.to_owned());
    }

    /// Re-reads `[auth]` from the config file and swaps it in. Connections
    /// and sessions stay; their next request or frame sees the new rules.
    /// Quota buckets start afresh under the new limits.
    pub fn reload(&self) -> Result<(), AuthSetupError> {
        let Some(path) = self.source.get() else {
            return Err(AuthSetupError::Config(
                sluice_config::ConfigError::Invalid {
                    file: PathBuf::from("(none)"),
                    key: "auth".into(),
                    rule: "the gateway was started without a config file; nothing to reload".into(),
                },
            ));
        };
        let config = Config::load(path)?;
        self.replace(config.auth.as_ref())
    }

    /// Swaps in rules built from `config`.
    pub fn replace(&self, config: Option<&AuthConfig>) -> Result<(), AuthSetupError> {
        let snapshot = Snapshot::new(config)?;
        self.snapshot.store(Arc::new(snapshot));
        self.quotas.reset_buckets();
        tracing::info!(enabled = config.is_some(), "auth rules reloaded");
        Ok(())
    }

    /// Authenticates a credential (or its absence) from `peer`, counting
    /// failures for the address's cool-down.
    pub fn authenticate(
        &self,
        snapshot: &Snapshot,
        credential: Credential<'_>,
        cert_principal: Option<&Arc<Principal>>,
        peer: Option<SocketAddr>,
    ) -> Result<Arc<Principal>, ApiError> {
        let result = match credential {
            Credential::Secret(secret) => snapshot.authenticate(secret),
            Credential::None => match cert_principal {
                Some(principal) => return Ok(Arc::clone(principal)),
                None if snapshot.allow_anonymous() => {
                    return Ok(Arc::new(Principal {
                        name: ANONYMOUS.to_owned(),
                        groups: Vec::new(),
                        source: PrincipalSource::Anonymous,
                    }))
                }
                None => {
                    Err("credentials required: an API key, a bearer token or a client certificate")
                }
            },
        };
        result.map_err(|reason| {
            if let (Credential::Secret(_), Some(peer)) = (credential, peer) {
                let config = snapshot.failed_auth();
                if self.failures.record(peer.ip(), &config, Instant::now()) {
                    tracing::warn!(client.addr = %peer.ip(), "too many failed authentications; cooling down");
                }
            }
            tracing::debug!(client.addr = ?peer, reason, "authentication failed");
            unauthenticated(reason)
        })
    }

    /// How much longer `peer` is cooling down after failed authentications.
    pub fn cooling_down(&self, peer: SocketAddr) -> Option<Duration> {
        self.failures.blocked(peer.ip(), Instant::now())
    }

    /// The rate buckets of `principal`, when a quota applies to it.
    pub fn buckets(&self, snapshot: &Snapshot, principal: &str) -> Option<Arc<Buckets>> {
        let config = snapshot.quota(principal)?;
        Some(self.quotas.buckets(principal, config))
    }

    /// One unit of `principal`'s connections or subscriptions; 429 when
    /// its quota has them all out.
    pub fn acquire(
        &self,
        snapshot: &Snapshot,
        principal: &str,
        count: Count,
    ) -> Result<Option<CountPermit>, ApiError> {
        let Some(config) = snapshot.quota(principal) else {
            return Ok(None);
        };
        let limit = match count {
            Count::Connections => config.max_connections,
            Count::Subscriptions => config.max_subscriptions,
        };
        if limit.is_none() {
            return Ok(None);
        }
        match self.quotas.counters(principal).try_acquire(count, limit) {
            Some(permit) => Ok(Some(permit)),
            None => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                QUOTA_EXCEEDED,
                match count {
                    Count::Connections => "too many connections open for this principal",
                    Count::Subscriptions => "too many subscriptions open for this principal",
                },
            )),
        }
    }
}

/// 401: who are you.
pub fn unauthenticated(reason: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, UNAUTHENTICATED, reason)
}

/// 403: not allowed.
pub fn forbidden(principal: &Principal, operation: Operation, resource: Resource<'_>) -> ApiError {
    let what = match resource {
        Resource::Topic(topic) => format!("topic {topic:?}"),
        Resource::Cluster => "the cluster".to_owned(),
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        FORBIDDEN,
        format!(
            "principal {:?} is not allowed to {} on {what}",
            principal.name,
            operation_name(operation)
        ),
    )
}

/// 429 for a rate quota.
pub fn over_quota() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        QUOTA_EXCEEDED,
        "quota exceeded; retry after the time in Retry-After",
    )
}

/// Seconds for a `Retry-After` header: at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

/// An error answer with the headers auth adds: the challenge on 401,
/// `Retry-After` on 429.
pub fn respond(error: ApiError, retry_after: Option<Duration>) -> Response {
    let status = error.status;
    let mut response = error.into_response();
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        );
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let secs = retry_after_secs(retry_after.unwrap_or(Duration::from_secs(1)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// 429 for an address cooling down.
pub fn cooling_down(wait: Duration) -> Response {
    respond(
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            TOO_MANY_FAILURES,
            "too many failed authentications from this address; retry after the time in Retry-After",
        ),
        Some(wait),
    )
}

/// The config name of an operation.
pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Produce => "produce",
        Operation::Consume => "consume",
        Operation::Describe => "describe",
        Operation::Admin => "admin",
    }
}

/// A connection as auth sees it: where from, the certificate's principal
/// (verified in the handshake), and the connection quota unit it holds
/// once a principal used it. Lives as long as the connection (and any
/// WebSocket session upgraded from it).
#[derive(Debug)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// The principal of the client certificate, when one was presented.
    pub cert_principal: Option<Arc<Principal>>,
    counted: OnceLock<Result<Option<CountPermit>, ApiError>>,
}

impl Connection {
    /// A connection from `peer` with the principal its certificate names.
    pub fn new(peer: SocketAddr, cert_principal: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            peer,
            cert_principal: cert_principal.map(|name| {
                Arc::new(Principal {
                    name,
                    groups: Vec::new(),
                    source: PrincipalSource::Certificate,
                })
            }),
            counted: OnceLock::new(),
        })
    }

    /// Counts this connection against the first principal that uses it.
    pub fn count(&self, auth: &Auth, snapshot: &Snapshot, principal: &str) -> Result<(), ApiError> {
        self.counted
            .get_or_init(|| auth.acquire(snapshot, principal, Count::Connections))
            .as_ref()
            .map(|_| ())
            .map_err(Clone::clone)
    }
}

/// What the auth layer hands the handlers it lets through.
#[derive(Clone)]
pub struct AuthContext {
    /// The gateway's auth state.
    pub auth: Arc<Auth>,
    /// Who the request is from; `None` while auth is off, or for a
    /// WebSocket that will authenticate with its first frame.
    pub principal: Option<Arc<Principal>>,
    /// The connection it came on.
    pub connection: Option<Arc<Connection>>,
}
