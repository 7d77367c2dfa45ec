//! API keys: stored as the SHA-256 of the key, looked up by that hash.
//!
//! A plain (unsalted, fast) SHA-256 is enough because the keys are not
//! passwords: `sluice auth new-key` makes 256 random bits, so there is no
//! dictionary to try and no preimage search that a slow hash would make
//! meaningfully slower. Salting and stretching protect low-entropy
//! secrets; here they would only cost CPU on every request. What the
//! hash does buy is that a leaked config file does not leak a usable key.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use ring::rand::SecureRandom;
use sluice_config::ApiKeyConfig;

use super::{Principal, PrincipalSource};

/// Random bytes in a generated key.
pub const KEY_BYTES: usize = 32;
/// Prefix of generated keys, so they are recognisable in a secret scanner.
pub const KEY_PREFIX: &str = "sk_";

/// Lowercase hex SHA-256 of a key, the form the config stores.
pub fn hash_key(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new high-entropy key: the prefix and 32 random bytes, base64url.
pub fn generate_key() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; KEY_BYTES];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The configured keys, by hash.
#[derive(Default)]
pub struct ApiKeys {
    by_hash: HashMap<String, Arc<Principal>>,
}

impl ApiKeys {
    /// Indexes the configured keys.
    pub fn new(keys: &[ApiKeyConfig]) -> Self {
        let by_hash = keys
            .iter()
            .map(|k| {
                let principal = Principal {
                    name: k.principal.clone(),
                    groups: k.groups.clone(),
                    source: PrincipalSource::ApiKey,
                };
                (k.key_sha256.clone(), Arc::new(principal))
            })
            .collect();
        Self { by_hash }
    }

    /// The principal a presented key belongs to.
    pub fn authenticate(&self, key: &str) -> Option<Arc<Principal>> {
        self.by_hash.get(&hash_key(key)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn generated_keys_differ_and_authenticate() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() > 40);
        let keys = ApiKeys::new(&[ApiKeyConfig {
            principal: "dev-1".into(),
            key_sha256: hash_key(&a),
            groups: vec!["devices".into()],
        }]);
        assert_eq!(keys.authenticate(&a).unwrap().name, "dev-1");
        assert!(keys.authenticate(&b).is_none());
    }
}
