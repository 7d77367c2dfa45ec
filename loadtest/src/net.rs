//! The target gateway: its URL, TLS trust, and connections spread over
//! several loopback source addresses.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{bail, Context as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How the load generator reaches the gateway.
#[derive(Clone)]
pub struct Target {
    /// `https` or `http`.
    pub scheme: String,
    /// Host as written in the URL (SNI and `Host`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path prefix before the routes (no trailing slash), usually empty.
    pub base_path: String,
    /// The resolved address connections go to.
    pub addr: SocketAddr,
    tls: Option<TlsConnector>,
    server_name: ServerName<'static>,
    source_addrs: Vec<IpAddr>,
    next_source: Arc<AtomicUsize>,
}

/// TLS trust for an `https` target.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the CA(s) to trust.
    pub cacert: Option<std::path::PathBuf>,
    /// Accept any server certificate (off by default).
    pub insecure: bool,
}

impl Target {
    /// Parses `url` (`https://host:port[/prefix]`), resolves the host and
    /// prepares TLS. `source_addrs` > 1 spreads connections over
    /// 127.0.0.1 ..= 127.0.0.N when the target is on IPv4 loopback.
    pub async fn new(url: &str, tls: &TlsOptions, source_addrs: u32) -> anyhow::Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("{url}: expected http://host:port or https://host:port"))?;
        if scheme != "http" && scheme != "https" {
            bail!("{url}: the scheme must be http or https");
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse::<u16>()
                    .with_context(|| format!("{url}: bad port {p:?}"))?,
            ),
            _ => (
                authority.to_owned(),
                if scheme == "https" { 443 } else { 80 },
            ),
        };
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .collect();
        // Prefer IPv4: the extra loopback source addresses are IPv4.
        addrs.sort_by_key(|a| !a.is_ipv4());
        let addr = *addrs
            .first()
            .with_context(|| format!("{host} resolves to no address"))?;
        let connector = if scheme == "https" {
            Some(TlsConnector::from(Arc::new(client_tls_config(tls)?)))
        } else {
            None
        };
        let server_name = ServerName::try_from(host.clone())
            .with_context(|| format!("{host} is not a valid TLS server name"))?;
        let source_addrs = match addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && source_addrs > 1 => (1..=source_addrs.min(254))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            scheme: scheme.to_owned(),
            host,
            port,
            base_path: path.to_owned(),
            addr,
            tls: connector,
            server_name,
            source_addrs,
            next_source: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `path` under the base path, e.g. `/topics/t`.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// The source addresses connections are spread over (empty: the kernel picks).
    pub fn source_addrs(&self) -> &[IpAddr] {
        &self.source_addrs
    }

    /// Only connections from `addrs` (a share of the spread, for one of several processes).
    pub fn with_source_addrs(mut self, addrs: Vec<IpAddr>) -> Self {
        self.source_addrs = addrs;
        self
    }

    /// Opens a TCP (and TLS, for https) connection, from the next source
    /// address in turn. `alpn` is not set: HTTP/1.1 is spoken on every connection.
    pub async fn connect(&self) -> io::Result<Stream> {
        let socket = TcpSocket::new_v4().or_else(|_| TcpSocket::new_v6())?;
        let socket = match self.addr {
            SocketAddr::V4(_) => socket,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if !self.source_addrs.is_empty() {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.source_addrs.len();
            socket.bind(SocketAddr::new(self.source_addrs[i], 0))?;
        }
        let tcp = socket.connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(connector) => {
                let tls = connector.connect(self.server_name.clone(), tcp).await?;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }
}

fn client_tls_config(options: &TlsOptions) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let Some(ca) = &options.cacert else {
            bail!("an https target needs --cacert <PEM file> (or --insecure to skip verification)");
        };
        builder
            .with_root_certificates(load_roots(ca)?)
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn load_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading CA file {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("{}: bad PEM", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{}: bad CA certificate", path.display()))?;
    }
    if roots.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A plaintext or TLS connection.
pub enum Stream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Raises the open-file soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}
