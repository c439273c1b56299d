//! The HTTP/1 server of the shards' two HTTP listeners, whatever they route: the HTTP stream
//! listener ([`crate::proxy::http_stream`]: HTTP-FLV/TS, HLS, static files) and the HTTP API
//! listener ([`crate::proxy::webrtc::signal`]: WHIP/WHEP), plus the client that asks origins
//! ([`origin`]).
//!
//! [`serve`] runs one connection: it reads a request head, hands the request to the listener's
//! handler as an [`Exchange`] (the request, its connection and what the handler may do with
//! them: answer, read a body), and goes on with the next request while the handler says
//! [`Next::KeepAlive`].
//!
//! Limits: a request head of at most 16 KiB and 64 headers (431), `--http-request-timeout` to
//! finish a head once started and to send a body (408), `--http-idle-timeout` between requests.
//! The first request of a connection must arrive whole within the request timeout of the
//! accept, so a client that connects and says nothing holds its slot no longer than one that
//! talks slowly. An idle keep-alive connection holds no buffer.
//!
//! The System API (control thread, tokio) has its own small server in
//! `control::http_server`; both parse and encode with [`crate::codec::http`].

pub mod origin;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use glommio::net::TcpStream;

use crate::balance::StreamKey;
use crate::balance::stream_key::KeyError;
use crate::codec::http::{self, Limits, Request, Response, Status};
use crate::shard::{Shard, relay, within};

/// Bounds on a client's request head.
pub const REQUEST_LIMITS: Limits = Limits { max_head: 16 * 1024, max_headers: 64 };
/// Bytes read from a client at a time while its head is incomplete.
const READ_CHUNK: usize = 4096;
/// The `Server` header.
pub const SERVER: &str = concat!("streamgate/", env!("CARGO_PKG_VERSION"));

/// The CORS headers on every stream and signalling response (browser players on other origins).
pub const CORS: [(&str, &str); 3] = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Headers", "*"),
    ("Access-Control-Allow-Methods", "*"),
];

/// Whether the connection takes another request after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// One request on its connection, as a handler sees it.
pub struct Exchange<'a> {
    pub shard: &'a Rc<Shard>,
    pub client: &'a TcpStream,
    pub peer: SocketAddr,
    pub req: &'a Request,
    /// What the client asked for after this request (`Connection`, the HTTP version).
    pub keep: Next,
    /// Bytes the client sent past the request head.
    pending: &'a mut Vec<u8>,
}

impl Exchange<'_> {
    /// Sends a complete response (no body for HEAD); the connection goes on as the client
    /// asked, unless the send failed.
    pub async fn reply(&self, response: Response) -> Next {
        self.reply_then(response, self.keep).await
    }

    /// [`Exchange::reply`], then `next` (a handler closes after a request it could not read).
    pub async fn reply_then(&self, response: Response, next: Next) -> Next {
        let response = response.with_header("Server", SERVER);
        let mut wire = response.encode(next == Next::KeepAlive);
        if self.req.method == "HEAD" {
            wire.truncate(wire.len() - response.body.len());
        }
        match relay::send_all(self.client, &wire).await {
            Ok(()) => next,
            Err(_) => Next::Close,
        }
    }

    /// The stream the request names (host, path and query, as every protocol keys it).
    pub fn stream_key(&self) -> Result<StreamKey, KeyError> {
        StreamKey::from_http(self.req.header("host"), &self.req.path, self.req.query.as_deref())
    }

    /// Reads a request body of `len` bytes within `--http-request-timeout`; `Err` with the
    /// answer when it does not arrive.
    pub async fn read_body(&mut self, len: usize) -> Result<Vec<u8>, Response> {
        let timeout = self.shard.config.http_request_timeout;
        let deadline = Instant::now() + timeout;
        let mut body: Vec<u8> = self.pending.drain(..len.min(self.pending.len())).collect();
        while body.len() < len {
            let old = body.len();
            body.resize(len, 0);
            let left = deadline.saturating_duration_since(Instant::now());
            match within(left, relay::recv(self.client, &mut body[old..])).await {
                Some(Ok(n)) if n > 0 => body.truncate(old + n),
                Some(_) => return Err(text(400, "the client closed before sending its whole body")),
                None => return Err(text(408, &format!("request body not complete within {timeout:?}"))),
            }
        }
        Ok(body)
    }
}

/// Serves one HTTP connection until it closes, idles out or a response ends it, handing each
/// request to `handler`.
pub async fn serve(
    shard: Rc<Shard>,
    client: TcpStream,
    peer: SocketAddr,
    handler: impl AsyncFn(&mut Exchange<'_>) -> Next,
) {
    let mut pending = Vec::new();
    let mut first = true;
    loop {
        let req = match read_request(&shard, &client, &mut pending, first).await {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(reply) => {
                log::debug!("http client {peer}: {} {}", reply.status, String::from_utf8_lossy(&reply.body).trim());
                let _ = relay::send_all(&client, &reply.encode(false)).await;
                break;
            }
        };
        pending.drain(..req.head_len);
        if pending.is_empty() {
            pending = Vec::new(); // a live body may last hours: the head's buffer is not kept
        }
        first = false;
        let keep = if req.keep_alive() { Next::KeepAlive } else { Next::Close };
        let mut exchange = Exchange { shard: &shard, client: &client, peer, req: &req, keep, pending: &mut pending };
        if handler(&mut exchange).await == Next::Close {
            break;
        }
        if pending.is_empty() {
            pending = Vec::new(); // an idle keep-alive connection holds no buffer
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both).await;
}

/// Reads the next request head into `buf`: `Ok(None)` when the client closed or stayed idle
/// past `--http-idle-timeout`, `Err` with the answer for a bad or late head (see the module
/// documentation for the timeouts).
async fn read_request(
    shard: &Shard,
    client: &TcpStream,
    buf: &mut Vec<u8>,
    first: bool,
) -> Result<Option<Request>, Response> {
    let config = &shard.config;
    if buf.is_empty() && !first && !matches!(within(config.http_idle_timeout, client.readable()).await, Some(Ok(()))) {
        return Ok(None);
    }
    let timeout = config.http_request_timeout;
    let deadline = Instant::now() + timeout;
    loop {
        if !buf.is_empty() {
            match http::parse_request(buf, REQUEST_LIMITS) {
                Ok(Status::Complete(req)) => return Ok(Some(req)),
                Ok(Status::Partial) => {}
                Err(e) => return Err(text(e.status(), &e.to_string())),
            }
        }
        let old = buf.len();
        buf.resize(old + READ_CHUNK, 0);
        let left = deadline.saturating_duration_since(Instant::now());
        match within(left, relay::recv(client, &mut buf[old..])).await {
            Some(Ok(n)) if n > 0 => buf.truncate(old + n),
            Some(_) => return Ok(None), // closed or reset mid-head: nobody to answer
            None => return Err(text(408, &format!("request head not complete within {timeout:?}"))),
        }
    }
}

/// Adds the CORS headers.
pub fn cors(mut r: Response) -> Response {
    for (n, v) in CORS {
        r = r.with_header(n, v);
    }
    r
}

/// A one-line text answer.
pub fn text(status: u16, message: &str) -> Response {
    Response::new(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// An origin's answer as the client's: the origin's status and end-to-end headers without its
/// length, `Server` and CORS headers (the caller sets its own body and CORS).
pub fn passed_on(status: u16, origin_headers: &[(String, Vec<u8>)], body: Vec<u8>) -> Response {
    let mut response = Response { status, headers: Vec::new(), body };
    for (name, value) in http::end_to_end(origin_headers) {
        let lower = name.to_ascii_lowercase();
        if lower == "content-length" || lower == "server" || lower.starts_with("access-control-") {
            continue;
        }
        response.headers.push((name.clone(), String::from_utf8_lossy(value).into_owned()));
    }
    response
}

/// Writes the head of a relayed answer: the status line, the origin's end-to-end headers
/// (without its CORS and `Server` headers), CORS, ours, `extra` and `Connection`.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    origin_headers: &[(String, Vec<u8>)],
    extra: &[(&str, &[u8])],
    keep: Next,
) {
    let kept = http::end_to_end(origin_headers)
        .filter(|(n, _)| !n.to_ascii_lowercase().starts_with("access-control-") && !n.eq_ignore_ascii_case("server"))
        .map(|(n, v)| (n.as_str(), v.as_slice()));
    let connection: &[u8] = if keep == Next::KeepAlive { b"keep-alive" } else { b"close" };
    let ours = CORS.iter().map(|(n, v)| (*n, v.as_bytes())).chain([("Server", SERVER.as_bytes())]);
    http::write_head(
        out,
        status,
        reason,
        kept.chain(ours).chain(extra.iter().copied()).chain([("Connection", connection)]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_head_replaces_cors_and_connection() {
        let h = |n: &str, v: &str| (n.to_string(), v.as_bytes().to_vec());
        let origin =
            [h("Content-Type", "video/x-flv"), h("Connection", "keep-alive"), h("Access-Control-Allow-Origin", "x")];
        let mut out = Vec::new();
        write_head(&mut out, 200, "OK", &origin, &[("Transfer-Encoding", b"chunked")], Next::Close);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nAccess-Control-Allow-Origin: *\r\n\
Access-Control-Allow-Headers: *\r\nAccess-Control-Allow-Methods: *\r\nServer: {SERVER}\r\n\
Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
        );
    }
}
