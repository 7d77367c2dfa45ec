//! Server certificates: loaded from the configured files, or generated on
//! first start as a local CA plus a server certificate for `localhost`,
//! `127.0.0.1` and `::1`, kept in `<data_dir>/tls/` so clients can trust the
//! CA once (`curl --cacert data/tls/ca.pem`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_config::TlsConfig;

/// ALPN protocols offered, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Names the generated server certificate is valid for.
const GENERATED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A TLS setup failure, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A listener's TLS setup and where its certificate came from.
pub struct ServerTls {
    /// The rustls configuration, with ALPN for HTTP/2 and HTTP/1.1.
    pub config: Arc<rustls::ServerConfig>,
    /// The server certificate file.
    pub cert_file: PathBuf,
    /// The generated CA clients should trust, when the certificate was generated.
    pub generated_ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the server certificate, colon-separated hex.
    pub fingerprint_sha256: String,
}

impl ServerTls {
    /// Loads the configured certificate and key, or generates (once) and
    /// loads the local ones under `data_dir/tls`.
    pub fn load_or_generate(tls: Option<&TlsConfig>, data_dir: &Path) -> Result<Self, TlsError> {
        Self::load_or_generate_with_client_auth(tls, data_dir, None)
    }

    /// As [`Self::load_or_generate`], asking clients for certificates that
    /// `client_auth` verifies (see `crate::auth::mtls`).
    pub fn load_or_generate_with_client_auth(
        tls: Option<&TlsConfig>,
        data_dir: &Path,
        client_auth: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<Self, TlsError> {
        let (cert_file, key_file, ca) = match tls {
            Some(t) => (t.cert_file.clone(), t.key_file.clone(), None),
            None => {
                let generated = generate_if_missing(&data_dir.join("tls"))?;
                (generated.cert, generated.key, Some(generated.ca))
            }
        };
        let certs = load_certs(&cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| TlsError::Pem {
            path: key_file.clone(),
            reason: format!("no usable private key: {e}"),
        })?;
        let fingerprint_sha256 = fingerprint(&certs[0]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?;
        let builder = match client_auth {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            config: Arc::new(config),
            cert_file,
            generated_ca_file: ca,
            fingerprint_sha256,
        })
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// SHA-256 of a certificate's DER, as `AB:CD:...`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

struct GeneratedFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn generate_if_missing(dir: &Path) -> Result<GeneratedFiles, TlsError> {
    let files = GeneratedFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    if files.ca.exists() && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut ca_name = DistinguishedName::new();
    ca_name.push(DnType::CommonName, "Sluice local CA");
    ca_name.push(DnType::OrganizationName, "Sluice");
    ca_params.distinguished_name = ca_name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(
        GENERATED_NAMES
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
    )?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "localhost");
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    // The CA's key is not kept: nothing else is ever signed with it, so a
    // leaked data directory cannot be used to mint certificates clients trust.
    write_atomically(&files.key, key.serialize_pem().as_bytes(), true)?;
    write_atomically(&files.cert, cert.pem().as_bytes(), false)?;
    write_atomically(&files.ca, ca.pem().as_bytes(), false)?;
    Ok(files)
}

/// Writes through a temporary file and a rename, so a crash never leaves a
/// half-written certificate or key behind.
fn write_atomically(path: &Path, data: &[u8], secret: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(data).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServerTls::load_or_generate(None, dir.path()).unwrap();
        let ca = first.generated_ca_file.clone().expect("generated CA");
        assert!(ca.exists());
        let second = ServerTls::load_or_generate(None, dir.path()).unwrap();
        assert_eq!(first.fingerprint_sha256, second.fingerprint_sha256);
        assert_eq!(first.fingerprint_sha256.len(), 32 * 3 - 1);
        assert_eq!(
            first.config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn configured_files_that_are_missing_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsConfig {
            cert_file: dir.path().join("nope.pem"),
            key_file: dir.path().join("nope.key"),
        };
        let err = ServerTls::load_or_generate(Some(&tls), dir.path())
            .err()
            .expect("missing files are an error")
            .to_string();
        assert!(err.contains("nope.pem"), "{err}");
    }
}
