//! A small client for the admin API, used by `sluice federation ...`.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Time the admin API has to answer one request.
const ADMIN_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends one request to a plaintext admin listener and returns the status
/// and the JSON body.
pub async fn call(
    admin: &str,
    method: Method,
    path: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let authority = admin
        .strip_prefix("http://")
        .unwrap_or(admin)
        .trim_end_matches('/');
    if authority.starts_with("https://") {
        bail!("the admin client speaks plaintext HTTP to a loopback admin listener; got {admin}");
    }
    let work = async {
        let stream = TcpStream::connect(authority)
            .await
            .with_context(|| format!("connecting to the admin listener at {authority}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the admin listener")?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let json = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body)
                .context("the admin API answered with something other than JSON")?
        };
        Ok::<_, anyhow::Error>((status, json))
    };
    tokio::time::timeout(ADMIN_REQUEST_TIMEOUT, work)
        .await
        .context("the admin API did not answer in time")?
}
