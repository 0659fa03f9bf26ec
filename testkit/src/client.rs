//! The one HTTP client of the tests and the load tool: HTTP/1.1 over hyper, one keep-alive
//! connection per [`Connection`], JSON in and out.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// An answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 connection, kept alive across requests.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Result<Connection, Error> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender })
    }

    /// Whether the server has closed this connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status, headers: parts.headers, body })
    }

    /// `method path` with an optional `Authorization: token ...` and an optional JSON body.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, Error> {
        self.send(request(method, path, token, body.map(|b| Bytes::from(b.to_string())))).await
    }
}

/// A request as the tests send them; a body is sent as JSON.
pub fn request(method: &str, path: &str, token: Option<&str>, body: Option<Bytes>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a valid method"))
        .uri(path)
        .header("host", "localhost");
    if let Some(token) = token {
        builder = builder.header(AUTHORIZATION, format!("token {token}"));
    }
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    builder.body(Full::new(body.unwrap_or_default())).expect("a valid request")
}

/// One request over a connection of its own.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Reply, Error> {
    Connection::open(addr).await?.call(method, path, token, body).await
}
