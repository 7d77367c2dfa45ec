//! HTTP/1.1 keep-alive connections on hyper's client, one request in
//! flight each: the load generator's REST side, kept thin so it costs the
//! shared cores as little as possible.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::net::Target;

/// One keep-alive connection.
pub struct HttpConn {
    sender: http1::SendRequest<Full<Bytes>>,
    authority: HeaderValue,
    auth: Option<(HeaderName, HeaderValue)>,
}

/// An answer: status and the whole body.
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Body bytes.
    pub body: Bytes,
}

impl HttpConn {
    /// Connects and performs the HTTP/1.1 handshake; `auth` is sent on every request.
    pub async fn connect(
        target: &Target,
        auth: Option<(HeaderName, HeaderValue)>,
    ) -> anyhow::Result<Self> {
        let stream = target.connect().await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            authority: HeaderValue::from_str(&target.authority())?,
            auth,
        })
    }

    /// Whether the connection can take another request.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.authority.clone());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        if let Some((name, value)) = &self.auth {
            builder = builder.header(name, value);
        }
        let request = builder.body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }

    /// Sends a request and hands back the streaming response (SSE).
    pub async fn open_stream(
        &mut self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(hyper::header::HOST, self.authority.clone());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        if let Some((name, value)) = &self.auth {
            builder = builder.header(name, value);
        }
        let request = builder.body(Full::new(Bytes::new()))?;
        self.sender.ready().await?;
        Ok(self.sender.send_request(request).await?)
    }
}

/// The `error_code` and `message` of a REST error body, or the status alone.
pub fn error_label(answer: &Answer) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error_code: Option<i64>,
    }
    match serde_json::from_slice::<ErrorBody>(&answer.body) {
        Ok(ErrorBody {
            error_code: Some(code),
        }) => format!("http {} ({code})", answer.status.as_u16()),
        _ => format!("http {}", answer.status.as_u16()),
    }
}
