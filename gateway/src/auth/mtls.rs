//! Client certificates: the verifier the public listener's TLS uses, and
//! the principal a verified certificate names.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use sluice_config::{CertPrincipalSource, MtlsConfig};
use x509_parser::extensions::GeneralName;

/// Why the client verifier could not be built.
#[derive(Debug, thiserror::Error)]
#[error("auth.mtls.ca_file {path}: {reason}")]
pub struct MtlsSetupError {
    path: std::path::PathBuf,
    reason: String,
}

/// A verifier of client certificates against the configured CA. Unless
/// `required`, a client may also connect without one.
pub fn client_verifier(config: &MtlsConfig) -> Result<Arc<dyn ClientCertVerifier>, MtlsSetupError> {
    let error = |reason: String| MtlsSetupError {
        path: config.ca_file.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&config.ca_file)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no CERTIFICATE block found".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| error(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if config.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| error(e.to_string()))
}

/// The principal of a certificate the handshake verified: its subject CN
/// or its first DNS, URI or e-mail SAN.
pub fn principal_from_cert(
    cert: &CertificateDer<'_>,
    source: CertPrincipalSource,
) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = match source {
        CertPrincipalSource::Cn => parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        CertPrincipalSource::San => {
            parsed
                .subject_alternative_name()
                .ok()
                .flatten()
                .and_then(|san| {
                    san.value.general_names.iter().find_map(|n| match n {
                        GeneralName::DNSName(s)
                        | GeneralName::URI(s)
                        | GeneralName::RFC822Name(s) => Some((*s).to_owned()),
                        _ => None,
                    })
                })
        }
    };
    name.filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    #[test]
    fn principal_from_cn_or_san() {
        let mut params =
            CertificateParams::new(vec!["device-7.fleet.example".to_string()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "device-7");
        params.distinguished_name = dn;
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let der = cert.der();
        assert_eq!(
            principal_from_cert(der, CertPrincipalSource::Cn).as_deref(),
            Some("device-7")
        );
        assert_eq!(
            principal_from_cert(der, CertPrincipalSource::San).as_deref(),
            Some("device-7.fleet.example")
        );
        assert_eq!(
            principal_from_cert(
                &CertificateDer::from(vec![1, 2, 3]),
                CertPrincipalSource::Cn
            ),
            None
        );
    }
}
