//! `[auth]`: who a client is (API keys, JWTs, client certificates), what it
//! may do (ACLs) and how much (quotas). Absent means auth is off: every
//! request is served as it was before auth existed, which keeps the
//! default config and the README quickstart working. Present means every
//! request needs a principal and an ACL that allows it (deny by default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Failed authentications from one address within the window before it is cooled down.
pub const DEFAULT_FAILED_AUTH_MAX_FAILURES: u32 = 10;
/// The window failed authentications are counted in.
pub const DEFAULT_FAILED_AUTH_WINDOW_MS: u64 = 60_000;
/// How long an address that failed too often gets 429 for every request.
pub const DEFAULT_FAILED_AUTH_COOLDOWN_MS: u64 = 60_000;
/// How long a WebSocket opened without credentials (`?auth=frame`) has to
/// send its `auth` frame.
pub const DEFAULT_WS_AUTH_FRAME_TIMEOUT_MS: u64 = 10_000;
/// Clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_JWT_LEEWAY_SECS: u64 = 30;
/// Depth of a quota's token bucket, as time at its rate.
pub const DEFAULT_QUOTA_BURST_MS: u64 = 1_000;

/// The `[auth]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Serve requests that bring no credentials as the principal
    /// `anonymous` (ACLs still apply to it). Off: such requests get 401.
    pub allow_anonymous: bool,
    /// API keys, stored as the SHA-256 of the key (`sluice auth hash-key`).
    pub api_keys: Vec<ApiKeyConfig>,
    /// JSON Web Tokens (HS256, RS256).
    pub jwt: Option<JwtConfig>,
    /// Client certificates on the public listener.
    pub mtls: Option<MtlsConfig>,
    /// Who may do what; anything no rule allows is denied.
    pub acls: Vec<AclRule>,
    /// Rates and counts per principal.
    pub quotas: QuotasConfig,
    /// Cool-down for addresses that keep failing authentication.
    pub failed_auth: FailedAuthConfig,
    /// WebSocket sessions that authenticate by frame.
    pub websocket: WebSocketAuthConfig,
}

/// `[auth.websocket]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketAuthConfig {
    /// A session still unauthenticated this long after the upgrade is
    /// closed (4401): an open socket without a principal costs a connection
    /// slot and memory, and must not be held by someone who never sends
    /// credentials.
    pub frame_timeout_ms: u64,
}

impl Default for WebSocketAuthConfig {
    fn default() -> Self {
        Self {
            frame_timeout_ms: DEFAULT_WS_AUTH_FRAME_TIMEOUT_MS,
        }
    }
}

/// One API key.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The principal the key authenticates as.
    pub principal: String,
    /// Lowercase hex SHA-256 of the key, as `sluice auth hash-key` prints it.
    pub key_sha256: String,
    /// Groups the principal belongs to, for ACLs.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("principal", &self.principal)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// JWT verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`; absent means not checked.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's); absent means not checked.
    #[serde(default)]
    pub audience: Option<String>,
    /// Verification keys.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// A JWKS file (`{"keys":[...]}`) with RSA public keys, matched by `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The claim naming the principal.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The claim listing the principal's groups (an array of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_principal_claim() -> String {
    "sub".to_owned()
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_leeway() -> u64 {
    DEFAULT_JWT_LEEWAY_SECS
}

/// A JWT signature algorithm Sluice verifies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    #[serde(rename = "HS256")]
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256 and a public key.
    #[serde(rename = "RS256")]
    Rs256,
}

/// One JWT verification key.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Matched against the token header's `kid`; a key without one is tried
    /// for every token of its algorithm.
    #[serde(default)]
    pub kid: Option<String>,
    /// `HS256` or `RS256`.
    pub algorithm: JwtAlgorithm,
    /// HS256: a file holding the shared secret (its bytes, trailing newline trimmed).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// HS256: the shared secret inline (prefer `secret_file`). Never
    /// written back out (`sluice check-config` leaves it out).
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// RS256: a PEM file with the public key (SPKI or PKCS#1).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for JwtKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeyConfig")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("secret_file", &self.secret_file)
            .field("public_key_file", &self.public_key_file)
            .finish_non_exhaustive()
    }
}

/// Client-certificate authentication.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// PEM file with the CA certificates client certificates must chain to.
    pub ca_file: PathBuf,
    /// Where the principal comes from: the subject's common name, or the
    /// first DNS, URI or e-mail subject alternative name.
    #[serde(default)]
    pub principal_from: CertPrincipalSource,
    /// Refuse the TLS handshake without a client certificate. Off, a client
    /// may connect without one and authenticate with a key or token.
    #[serde(default)]
    pub required: bool,
}

/// The certificate field naming the principal.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CertPrincipalSource {
    /// The subject's CN.
    #[default]
    Cn,
    /// The first subject alternative name (DNS, URI or e-mail).
    San,
}

/// An operation an ACL grants.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Write records.
    Produce,
    /// Read records (REST reads, SSE, WebSocket subscriptions).
    Consume,
    /// Read metadata: topics, partitions, offsets.
    Describe,
    /// Create and delete topics, and every route of the admin listener.
    Admin,
}

/// One ACL rule: who × which topics × what.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// The principal, or `*` for every authenticated one (give this or `group`).
    #[serde(default)]
    pub principal: Option<String>,
    /// A group (from an API key's `groups` or a token's groups claim).
    #[serde(default)]
    pub group: Option<String>,
    /// One topic by name.
    #[serde(default)]
    pub topic: Option<String>,
    /// Every topic starting with this. With neither `topic` nor `prefix`
    /// the rule covers every topic and requests about no one topic
    /// (topic listings, topic creation, admin routes).
    #[serde(default)]
    pub prefix: Option<String>,
    /// What the rule allows.
    pub operations: Vec<Operation>,
}

/// Quota settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// Applies to each principal without its own entry (each gets its own buckets).
    pub default: Option<QuotaConfig>,
    /// Per principal, by name.
    pub principals: BTreeMap<String, QuotaConfig>,
}

/// What happens to a client over a rate quota.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum QuotaMode {
    /// Delay the answer (Kafka's way) and report `throttle_time_ms`.
    #[default]
    Throttle,
    /// 429 with error code 42901 and `Retry-After`.
    Reject,
}

/// One principal's quota. Absent limits are unlimited.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Bytes of request bodies (REST) and produce frames (WebSocket) per second.
    #[serde(default)]
    pub produce_bytes_per_sec: Option<u64>,
    /// Bytes of records read (REST reads, SSE) per second.
    #[serde(default)]
    pub consume_bytes_per_sec: Option<u64>,
    /// Requests (and WebSocket frames) per second.
    #[serde(default)]
    pub requests_per_sec: Option<u64>,
    /// Connections (and WebSocket sessions) open at once.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// WebSocket subscriptions and SSE streams open at once.
    #[serde(default)]
    pub max_subscriptions: Option<u32>,
    /// Bucket depth as time at the rate: how much a quiet client may burst.
    #[serde(default = "default_burst_ms")]
    pub burst_ms: u64,
    /// `throttle` or `reject`.
    #[serde(default)]
    pub mode: QuotaMode,
}

fn default_burst_ms() -> u64 {
    DEFAULT_QUOTA_BURST_MS
}

/// Cool-down for addresses that keep failing authentication.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FailedAuthConfig {
    /// Failures from one address within `window_ms` before it is cooled down.
    pub max_failures: u32,
    /// The counting window.
    pub window_ms: u64,
    /// How long the address then gets 429 for every request.
    pub cooldown_ms: u64,
}

impl Default for FailedAuthConfig {
    fn default() -> Self {
        Self {
            max_failures: DEFAULT_FAILED_AUTH_MAX_FAILURES,
            window_ms: DEFAULT_FAILED_AUTH_WINDOW_MS,
            cooldown_ms: DEFAULT_FAILED_AUTH_COOLDOWN_MS,
        }
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Rules of `[auth]` the types cannot express.
pub(crate) fn validate(auth: &AuthConfig, file: &Path) -> Result<(), ConfigError> {
    let invalid = |key: String, rule: &str| ConfigError::Invalid {
        file: file.to_owned(),
        key,
        rule: rule.to_owned(),
    };
    let mut hashes = std::collections::HashSet::new();
    for (i, key) in auth.api_keys.iter().enumerate() {
        if key.principal.is_empty() {
            return Err(invalid(
                format!("auth.api_keys[{i}].principal"),
                "must not be empty",
            ));
        }
        if !is_sha256_hex(&key.key_sha256) {
            return Err(invalid(
                format!("auth.api_keys[{i}].key_sha256"),
                "must be 64 lowercase hex digits, the SHA-256 printed by `sluice auth hash-key`; never the key itself",
            ));
        }
        if !hashes.insert(key.key_sha256.as_str()) {
            return Err(invalid(
                format!("auth.api_keys[{i}].key_sha256"),
                "the same key is listed twice",
            ));
        }
    }
    if let Some(jwt) = &auth.jwt {
        if jwt.keys.is_empty() && jwt.jwks_file.is_none() {
            return Err(invalid(
                "auth.jwt.keys".into(),
                "give at least one key or a jwks_file",
            ));
        }
        for (i, key) in jwt.keys.iter().enumerate() {
            let ok = match key.algorithm {
                JwtAlgorithm::Hs256 => {
                    (key.secret.is_some() != key.secret_file.is_some())
                        && key.public_key_file.is_none()
                }
                JwtAlgorithm::Rs256 => {
                    key.public_key_file.is_some()
                        && key.secret.is_none()
                        && key.secret_file.is_none()
                }
            };
            if !ok {
                return Err(invalid(
                    format!("auth.jwt.keys[{i}]"),
                    "HS256 takes exactly one of secret_file or secret; RS256 takes public_key_file",
                ));
            }
            if key.secret.as_ref().is_some_and(|s| s.len() < 32) {
                return Err(invalid(
                    format!("auth.jwt.keys[{i}].secret"),
                    "an HS256 secret must be at least 32 bytes",
                ));
            }
        }
        if jwt.principal_claim.is_empty() {
            return Err(invalid(
                "auth.jwt.principal_claim".into(),
                "must not be empty",
            ));
        }
    }
    for (i, rule) in auth.acls.iter().enumerate() {
        let key = |field: &str| format!("auth.acls[{i}].{field}");
        if rule.principal.is_some() == rule.group.is_some() {
            return Err(invalid(
                key("principal"),
                "give exactly one of principal or group",
            ));
        }
        if rule.topic.is_some() && rule.prefix.is_some() {
            return Err(invalid(key("topic"), "give topic or prefix, not both"));
        }
        if rule.operations.is_empty() {
            return Err(invalid(
                key("operations"),
                "must name at least one of produce, consume, describe, admin",
            ));
        }
    }
    let quotas = auth
        .quotas
        .default
        .iter()
        .map(|q| ("auth.quotas.default".to_owned(), q))
        .chain(
            auth.quotas
                .principals
                .iter()
                .map(|(name, q)| (format!("auth.quotas.principals.{name}"), q)),
        );
    for (key, quota) in quotas {
        let zero = [
            ("produce_bytes_per_sec", quota.produce_bytes_per_sec),
            ("consume_bytes_per_sec", quota.consume_bytes_per_sec),
            ("requests_per_sec", quota.requests_per_sec),
        ]
        .into_iter()
        .find(|(_, v)| *v == Some(0));
        if let Some((field, _)) = zero {
            return Err(invalid(
                format!("{key}.{field}"),
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if quota.burst_ms == 0 {
            return Err(invalid(format!("{key}.burst_ms"), "must be at least 1"));
        }
    }
    if auth.websocket.frame_timeout_ms == 0 {
        return Err(invalid(
            "auth.websocket.frame_timeout_ms".into(),
            "must be at least 1",
        ));
    }
    let f = &auth.failed_auth;
    if f.max_failures == 0 || f.window_ms == 0 || f.cooldown_ms == 0 {
        return Err(invalid(
            "auth.failed_auth".into(),
            "max_failures, window_ms and cooldown_ms must each be at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::path::Path;

    fn error(text: &str) -> String {
        Config::parse(text, Path::new("t.toml"))
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn auth_errors_name_the_key_and_rule() {
        let e =
            error("[auth]\n[[auth.api_keys]]\nprincipal = \"a\"\nkey_sha256 = \"sk_plain-key\"\n");
        assert!(
            e.contains("auth.api_keys[0].key_sha256") && e.contains("never the key itself"),
            "{e}"
        );
        let e = error(
            "[auth]\n[[auth.acls]]\nprincipal = \"a\"\ngroup = \"g\"\noperations = [\"produce\"]\n",
        );
        assert!(e.contains("auth.acls[0].principal"), "{e}");
        let e = error("[auth]\n[[auth.acls]]\nprincipal = \"a\"\noperations = [\"fly\"]\n");
        assert!(e.contains("fly"), "{e}");
        let e = error("[auth.jwt]\n[[auth.jwt.keys]]\nalgorithm = \"HS256\"\nsecret = \"short\"\n");
        assert!(e.contains("at least 32 bytes"), "{e}");
        let e = error("[auth.jwt]\n[[auth.jwt.keys]]\nalgorithm = \"RS256\"\n");
        assert!(e.contains("auth.jwt.keys[0]"), "{e}");
        let e = error("[auth.quotas.default]\nrequests_per_sec = 0\n");
        assert!(e.contains("auth.quotas.default.requests_per_sec"), "{e}");
        let e = error("[auth.websocket]\nframe_timeout_ms = 0\n");
        assert!(e.contains("auth.websocket.frame_timeout_ms"), "{e}");
    }

    #[test]
    fn no_auth_table_means_auth_off() {
        assert!(Config::parse("", Path::new("t.toml"))
            .unwrap()
            .auth
            .is_none());
        assert!(Config::parse("[auth]\n", Path::new("t.toml"))
            .unwrap()
            .auth
            .is_some());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let config = Config::parse(
            "[auth.jwt]\n[[auth.jwt.keys]]\nalgorithm = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef-xyz\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }
}
