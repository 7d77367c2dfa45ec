//! JWT verification (HS256, RS256) with `exp`, `nbf`, `iss` and `aud`
//! checked. Keys come from the config (a shared secret or a PEM public
//! key) or a JWKS file; a token's `kid` picks among them.
//!
//! Failures say which check failed, never what the token held.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sluice_config::{JwtAlgorithm, JwtConfig};

use super::{Principal, PrincipalSource};

/// Why a key set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    /// A key file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key could not be used.
    #[error("{what}: {reason}")]
    Key {
        /// Which key.
        what: String,
        /// Why.
        reason: String,
    },
}

struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The configured keys and checks.
pub struct JwtVerifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    principal_claim: String,
    groups_claim: String,
    leeway_secs: u64,
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, JwtSetupError> {
    std::fs::read(path).map_err(|source| JwtSetupError::Read {
        path: path.to_owned(),
        source,
    })
}

impl JwtVerifier {
    /// Reads every key the config names.
    pub fn load(config: &JwtConfig) -> Result<Self, JwtSetupError> {
        let mut keys = Vec::new();
        for (i, k) in config.keys.iter().enumerate() {
            let what = format!("auth.jwt.keys[{i}]");
            let key_error = |reason: String| JwtSetupError::Key {
                what: what.clone(),
                reason,
            };
            let (algorithm, key) = match k.algorithm {
                JwtAlgorithm::Hs256 => {
                    let secret = match (&k.secret, &k.secret_file) {
                        (Some(s), _) => s.as_bytes().to_vec(),
                        (None, Some(path)) => {
                            let mut bytes = read(path)?;
                            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                bytes.pop();
                            }
                            bytes
                        }
                        (None, None) => return Err(key_error("no secret".into())),
                    };
                    if secret.len() < 32 {
                        return Err(key_error(
                            "an HS256 secret must be at least 32 bytes".into(),
                        ));
                    }
                    (Algorithm::HS256, DecodingKey::from_secret(&secret))
                }
                JwtAlgorithm::Rs256 => {
                    let Some(path) = &k.public_key_file else {
                        return Err(key_error("no public_key_file".into()));
                    };
                    let pem = read(path)?;
                    let key = DecodingKey::from_rsa_pem(&pem)
                        .map_err(|e| key_error(format!("{}: {e}", path.display())))?;
                    (Algorithm::RS256, key)
                }
            };
            keys.push(Key {
                kid: k.kid.clone(),
                algorithm,
                key,
            });
        }
        if let Some(path) = &config.jwks_file {
            let text = read(path)?;
            let set: JwkSet = serde_json::from_slice(&text).map_err(|e| JwtSetupError::Key {
                what: path.display().to_string(),
                reason: format!("not a JWKS document: {e}"),
            })?;
            for jwk in &set.keys {
                let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                    (Some(KeyAlgorithm::RS256), _) | (None, AlgorithmParameters::RSA(_)) => {
                        Algorithm::RS256
                    }
                    // Keys for algorithms Sluice does not verify are skipped.
                    _ => continue,
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtSetupError::Key {
                    what: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                });
            }
        }
        Ok(Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            principal_claim: config.principal_claim.clone(),
            groups_claim: config.groups_claim.clone(),
            leeway_secs: config.leeway_secs,
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = self.leeway_secs;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// The principal a token names, once its signature and claims check out.
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        if !matches!(header.alg, Algorithm::HS256 | Algorithm::RS256) {
            return Err("unsupported token algorithm; HS256 and RS256 are accepted");
        }
        let by_alg = self.keys.iter().filter(|k| k.algorithm == header.alg);
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) if self.keys.iter().any(|k| k.kid.as_ref() == Some(kid)) => {
                by_alg.filter(|k| k.kid.as_ref() == Some(kid)).collect()
            }
            _ => by_alg
                .filter(|k| k.kid.is_none() || header.kid.is_none())
                .collect(),
        };
        if candidates.is_empty() {
            return Err("no key for this token");
        }
        let validation = self.validation(header.alg);
        let mut last = "invalid token signature";
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.principal(&data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => "invalid token signature",
                        ErrorKind::ExpiredSignature => "token expired",
                        ErrorKind::ImmatureSignature => "token not yet valid",
                        ErrorKind::InvalidAudience => "token audience not accepted",
                        ErrorKind::InvalidIssuer => "token issuer not accepted",
                        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                        _ => "invalid token",
                    };
                    // Only a bad signature means another key might fit.
                    if !matches!(e.kind(), ErrorKind::InvalidSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Arc<Principal>, &'static str> {
        let name = claims
            .get(&self.principal_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("token has no principal claim")?;
        let groups = match claims.get(&self.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Arc::new(Principal {
            name: name.to_owned(),
            groups,
            source: PrincipalSource::Jwt,
        }))
    }
}

/// Whether a bearer credential looks like a JWT (three dot-separated parts)
/// rather than an API key.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use sluice_config::JwtKeyConfig;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";

    fn verifier() -> JwtVerifier {
        JwtVerifier::load(&JwtConfig {
            issuer: Some("https://issuer.example".into()),
            audience: Some("sluice".into()),
            keys: vec![JwtKeyConfig {
                kid: None,
                algorithm: JwtAlgorithm::Hs256,
                secret_file: None,
                secret: Some(SECRET.into()),
                public_key_file: None,
            }],
            jwks_file: None,
            principal_claim: "sub".into(),
            groups_claim: "groups".into(),
            leeway_secs: 0,
        })
        .unwrap()
    }

    fn token(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn checks_every_claim() {
        let v = verifier();
        let base = |f: &dyn Fn(&mut Map<String, Value>)| {
            let mut m = json!({"sub":"alice","iss":"https://issuer.example","aud":"sluice","exp":now()+600,"groups":["web"]})
                .as_object()
                .unwrap()
                .clone();
            f(&mut m);
            Value::Object(m)
        };
        let ok = v.verify(&token(base(&|_| {}), SECRET)).unwrap();
        assert_eq!(
            (ok.name.as_str(), ok.groups.as_slice()),
            ("alice", &["web".to_string()][..])
        );
        type Change<'a> = &'a dyn Fn(&mut Map<String, Value>);
        let cases: [(Change, &str); 5] = [
            (
                &|m| {
                    m.insert("exp".into(), json!(now() - 600));
                },
                "token expired",
            ),
            (
                &|m| {
                    m.insert("nbf".into(), json!(now() + 600));
                },
                "token not yet valid",
            ),
            (
                &|m| {
                    m.insert("aud".into(), json!("other"));
                },
                "token audience not accepted",
            ),
            (
                &|m| {
                    m.insert("iss".into(), json!("evil"));
                },
                "token issuer not accepted",
            ),
            (
                &|m| {
                    m.remove("exp");
                },
                "token lacks a required claim",
            ),
        ];
        for (change, want) in cases {
            assert_eq!(v.verify(&token(base(change), SECRET)).unwrap_err(), want);
        }
        let forged = token(base(&|_| {}), "another-secret-another-secret-another");
        assert_eq!(v.verify(&forged).unwrap_err(), "invalid token signature");
        assert_eq!(v.verify("a.b.c").unwrap_err(), "malformed token");
        assert_eq!(v.verify("").unwrap_err(), "malformed token");
    }

    #[test]
    fn alg_none_is_refused() {
        // {"alg":"none"} . {"sub":"x"} . (no signature)
        let t = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
        assert!(verifier().verify(t).is_err());
    }
}
