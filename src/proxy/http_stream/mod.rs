//! The HTTP stream listener (default 18080) on the shards: HTTP-FLV, HTTP-TS and HLS players,
//! `/api/v1/versions`, static files.
//!
//! One connection, many requests (keep-alive), each routed by [`route`]:
//!
//! | request | answer |
//! |---|---|
//! | `OPTIONS` anything | 200, CORS headers, no origin contacted |
//! | a path with a `..` segment | 400 |
//! | `/api/v1/versions` | the SRS proxy's version body |
//! | anything with `spbhid=` in its query | HLS: the playlist's origin ([`hls`]); unknown id: 400 |
//! | `*.m3u8` | HLS playlist, fetched and rewritten ([`hls`]) |
//! | `*.flv`, `*.ts` | HTTP-FLV / HTTP-TS live: forwarded, then relayed ([`forward`]) |
//! | anything else | `--static-files` ([`static_files`]) or 404 |
//!
//! Stream key: [`StreamKey::from_http`], the same key as RTMP for the same stream. No alive
//! origin: 503; origin unreachable or broken: 502 (504 when it timed out); each with a one-line
//! text reason and a log line.
//!
//! Limits: a request head of at most 16 KiB and 64 headers (431), a request body refused on
//! stream routes (413; chunked 411), `--http-request-timeout` to finish a head once started
//! (408), `--http-idle-timeout` between requests. An idle connection holds no buffer.

pub mod hls;
pub mod origin;
pub mod static_files;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::future;
use glommio::net::TcpStream;
use serde_json::json;

use crate::balance::stream_key::{percent_decode, query_param};
use crate::balance::{Origin, StreamKey};
use crate::codec::http::{self, BodyLength, Limits, Request, Response, Status};
use crate::control::bridge::{Protocol, Role};
use crate::shard::{Shard, relay};
use origin::OriginError;

/// Bounds on a player's request head.
pub const REQUEST_LIMITS: Limits = Limits { max_head: 16 * 1024, max_headers: 64 };
/// Bytes read from a client at a time while its head is incomplete.
const READ_CHUNK: usize = 4096;
/// The `Server` header.
pub(crate) const SERVER: &str = concat!("streamgate/", env!("CARGO_PKG_VERSION"));

/// Whether the connection takes another request after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// The HTTP listeners the shards serve with this loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `--http-server`: streams, versions, static files.
    Stream,
    /// `--http-api`: WebRTC signalling ([`crate::proxy::webrtc::signal`]).
    Api,
}

/// Serves one connection of the HTTP stream listener.
pub async fn serve(shard: Rc<Shard>, client: TcpStream, peer: SocketAddr) {
    serve_on(shard, client, peer, Listener::Stream).await
}

/// Serves one connection of the HTTP API listener (WHIP/WHEP signalling).
pub async fn serve_api(shard: Rc<Shard>, client: TcpStream, peer: SocketAddr) {
    serve_on(shard, client, peer, Listener::Api).await
}

/// Serves one HTTP client connection until it closes, idles out or a response ends it.
async fn serve_on(shard: Rc<Shard>, client: TcpStream, peer: SocketAddr, listener: Listener) {
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
        first = false;
        let next = match listener {
            Listener::Stream => route(&shard, &client, peer, &req).await,
            Listener::Api => crate::proxy::webrtc::signal::route(&shard, &client, peer, &req, &mut pending).await,
        };
        if next == Next::Close {
            break;
        }
        if pending.is_empty() {
            pending = Vec::new(); // an idle keep-alive connection holds no buffer
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both).await;
}

/// Reads the next request head into `buf`: `Ok(None)` when the client closed or stayed idle
/// past `--http-idle-timeout`, `Err` with the answer for a bad or late head. The first request
/// of a connection must arrive whole within `--http-request-timeout` of the accept (a client
/// that connects and says nothing holds its slot no longer than one that talks slowly); later
/// ones get the idle timeout to start and then the request timeout to finish.
async fn read_request(
    shard: &Shard,
    client: &TcpStream,
    buf: &mut Vec<u8>,
    first: bool,
) -> Result<Option<Request>, Response> {
    let config = &shard.config;
    if buf.is_empty() && !first {
        let idle = config.http_idle_timeout;
        let woke = future::or(async { client.readable().await.is_ok() }, async {
            glommio::timer::sleep(idle).await;
            false
        })
        .await;
        if !woke {
            return Ok(None);
        }
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
        let read = future::or(async { Some(relay::recv(client, &mut buf[old..]).await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => buf.truncate(old + n),
            Some(_) => return Ok(None), // closed or reset mid-head: nobody to answer
            None => return Err(text(408, &format!("request head not complete within {timeout:?}"))),
        }
    }
}

/// Reads a request body of `len` bytes (some may already be in `pending`) within
/// `--http-request-timeout`; `Err` with the answer when it does not arrive.
pub(crate) async fn read_body(
    shard: &Shard,
    client: &TcpStream,
    pending: &mut Vec<u8>,
    len: usize,
) -> Result<Vec<u8>, Response> {
    let timeout = shard.config.http_request_timeout;
    let deadline = Instant::now() + timeout;
    let mut body: Vec<u8> = pending.drain(..len.min(pending.len())).collect();
    while body.len() < len {
        let old = body.len();
        body.resize(len, 0);
        let left = deadline.saturating_duration_since(Instant::now());
        let read = future::or(async { Some(relay::recv(client, &mut body[old..]).await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => body.truncate(old + n),
            Some(_) => return Err(text(400, "the client closed before sending its whole body")),
            None => return Err(text(408, &format!("request body not complete within {timeout:?}"))),
        }
    }
    Ok(body)
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Versions,
    HlsById,
    Playlist,
    Live(Protocol),
    Static,
}

fn classify(req: &Request) -> Route {
    let path = req.path.as_str();
    if path == "/api/v1/versions" {
        Route::Versions
    } else if query_param(req.query.as_deref(), "spbhid").is_some() {
        Route::HlsById
    } else if path.ends_with(".m3u8") {
        Route::Playlist
    } else if path.ends_with(".flv") {
        Route::Live(Protocol::HttpFlv)
    } else if path.ends_with(".ts") {
        Route::Live(Protocol::HttpTs)
    } else {
        Route::Static
    }
}

/// Answers one request.
async fn route(shard: &Rc<Shard>, client: &TcpStream, peer: SocketAddr, req: &Request) -> Next {
    let keep = if req.keep_alive() { Next::KeepAlive } else { Next::Close };
    let route = classify(req);
    let stream_route = matches!(route, Route::HlsById | Route::Playlist | Route::Live(_));
    if req.method == "OPTIONS" {
        return reply(client, req, cors(Response::new(200, "text/plain", "")), keep).await;
    }
    match req.content_length() {
        Ok(None | Some(0)) => {}
        Ok(Some(_)) => {
            return reply(client, req, text(413, "this listener takes no request bodies"), Next::Close).await;
        }
        Err(e) => return reply(client, req, text(411, &e.to_string()), Next::Close).await,
    }
    if has_dot_segment(&req.path) {
        log::debug!("http client {peer}: refused path {:?}", req.path);
        return reply(client, req, text(400, "path with a '..' segment refused"), keep).await;
    }
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        let refused = text(405, &format!("method {} not allowed; use GET, HEAD or OPTIONS", req.method));
        let refused = refused.with_header("Allow", "GET, HEAD, OPTIONS");
        return reply(client, req, if stream_route { cors(refused) } else { refused }, keep).await;
    }
    match route {
        Route::Versions => reply(client, req, versions(), keep).await,
        Route::Static => static_files::serve(shard, client, req, keep).await,
        Route::HlsById => hls::by_id(shard, client, peer, req, keep).await,
        Route::Playlist => hls::playlist(shard, client, peer, req, keep).await,
        Route::Live(protocol) => live(shard, client, peer, req, protocol, keep).await,
    }
}

/// HTTP-FLV and HTTP-TS: pick the stream's origin and forward.
async fn live(
    shard: &Rc<Shard>,
    client: &TcpStream,
    peer: SocketAddr,
    req: &Request,
    protocol: Protocol,
    keep: Next,
) -> Next {
    let key = match StreamKey::from_http(req.header("host"), &req.path, req.query.as_deref()) {
        Ok(key) => key,
        Err(e) => return reply(client, req, cors(text(400, &e.to_string())), keep).await,
    };
    let origin = match super::pick(shard, &key).await {
        Ok(origin) => origin,
        Err(reason) => {
            log::warn!("{} play {key} from {peer} refused: {reason}", protocol.name());
            return reply(client, req, cors(text(503, &format!("no origin for {key}: {reason}"))), keep).await;
        }
    };
    forward(shard, client, peer, req, &key, &origin, protocol, keep).await
}

/// Sends the request to the stream's origin and relays the answer: the origin's status and
/// end-to-end headers with CORS added, then the body, zero-copy with `--relay`. A body of known
/// length keeps the player's connection; a live body (chunked or until close) ends it.
#[allow(clippy::too_many_arguments)]
async fn forward(
    shard: &Rc<Shard>,
    client: &TcpStream,
    peer: SocketAddr,
    req: &Request,
    key: &StreamKey,
    origin: &Origin,
    protocol: Protocol,
    keep: Next,
) -> Next {
    let name = protocol.name();
    let answered = match origin::http_addr(origin) {
        Ok(addr) => origin::request(addr, req, &[], peer, false, shard.config.http_origin_timeout).await,
        Err(e) => Err(e),
    };
    let mut answered = match answered {
        Ok(a) => a,
        Err(e) => return origin_failed(shard, client, req, peer, key, protocol, &e, keep).await,
    };
    let length = match answered.head.body_length(&req.method) {
        Ok(length) => length,
        Err(e) => {
            let e = OriginError::Bad(answered.addr, e.to_string());
            return origin_failed(shard, client, req, peer, key, protocol, &e, keep).await;
        }
    };
    let keep = match length {
        BodyLength::Empty | BodyLength::Exact(_) => keep,
        BodyLength::Chunked | BodyLength::UntilClose => Next::Close,
    };
    let mut head = Vec::with_capacity(512);
    let extra = [("Transfer-Encoding", &b"chunked"[..])];
    let chunked = if length == BodyLength::Chunked { &extra[..] } else { &[] };
    write_head(&mut head, answered.head.status, &answered.head.reason, &answered.head.headers, chunked, keep);
    let session = shard.open_session(key, protocol, Role::Play).await;
    let traffic = session.traffic.clone();
    let started = Instant::now();
    let mode = shard.config.relay;
    let body_start = match length {
        BodyLength::Empty => &[][..],
        BodyLength::Exact(n) => &answered.rest[..answered.rest.len().min(usize::try_from(n).unwrap_or(usize::MAX))],
        _ => &answered.rest[..],
    };
    head.extend_from_slice(body_start);
    let sent_first = relay::send_all(client, &head).await;
    traffic.bytes_out.set(head.len() as u64);
    let upstream = &answered.stream;
    crate::shard::conn::set_origin(upstream);
    crate::shard::fault::inject().await;
    let outcome: std::io::Result<&str> = match (sent_first, length) {
        (Err(e), _) => Err(e),
        (Ok(()), BodyLength::Empty) => Ok("answered"),
        (Ok(()), BodyLength::Exact(n)) => {
            let left = n - body_start.len() as u64;
            relay::forward_exact(mode, upstream, client, left, &traffic.bytes_out).await.map(|_| "answered")
        }
        (Ok(()), _) => {
            answered.rest = Vec::new();
            let down = async {
                let batch = shard.config.relay_batch;
                relay::one_way(mode, upstream, client, &traffic.bytes_out, batch).await.map(|_| "the origin closed")
            };
            let gone = async { client_gone(client).await.map(|_| "the player closed") };
            future::or(down, gone).await
        }
    };
    drop(session);
    let bytes = traffic.bytes_out.get();
    let status = answered.head.status;
    let took = started.elapsed();
    match (outcome, protocol) {
        (Ok(end), Protocol::Hls) => {
            log::debug!("hls {} {key} from {peer} via origin {}: {status}, {bytes} bytes, {end}", req.path, origin.id);
            keep
        }
        (Ok(end), _) => {
            log::info!(
                "{name} play {key} from {peer} via origin {} ({status}) ended after {took:.1?}: {end}; {bytes} bytes out",
                origin.id
            );
            keep
        }
        (Err(e), _) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
            log::info!(
                "{name} play {key} from {peer} via origin {} ({status}) ended after {took:.1?}: a peer reset the connection; {bytes} bytes out",
                origin.id
            );
            Next::Close
        }
        (Err(e), _) => {
            log::warn!(
                "{name} play {key} from {peer} via origin {} ({status}) failed after {took:.1?}: {e}",
                origin.id
            );
            Next::Close
        }
    }
}

/// Waits until the player closes or resets its connection; what it sends meanwhile (a live
/// body's player has nothing more to say) is read and dropped.
async fn client_gone(client: &TcpStream) -> std::io::Result<()> {
    let mut sink = [0u8; 512];
    loop {
        if relay::recv(client, &mut sink).await? == 0 {
            return Ok(());
        }
    }
}

/// Answers a failed origin request with its status and logs it.
#[allow(clippy::too_many_arguments)]
async fn origin_failed(
    shard: &Shard,
    client: &TcpStream,
    req: &Request,
    peer: SocketAddr,
    key: &StreamKey,
    protocol: Protocol,
    e: &OriginError,
    keep: Next,
) -> Next {
    super::failed(shard, e.pick_failure());
    log::warn!("{} {} {key} from {peer}: {e}", protocol.name(), req.path);
    reply(client, req, cors(text(e.status(), &e.to_string())), keep).await
}

/// Writes the status line, the origin's end-to-end headers (without its CORS headers), CORS,
/// `extra` and `Connection`.
fn write_head(
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

/// The CORS headers on every stream response (srs-proxy-behaviour.md §6.4).
pub const CORS: [(&str, &str); 3] = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Headers", "*"),
    ("Access-Control-Allow-Methods", "*"),
];

pub(crate) fn cors(mut r: Response) -> Response {
    for (n, v) in CORS {
        r = r.with_header(n, v);
    }
    r
}

/// A one-line text answer.
pub fn text(status: u16, message: &str) -> Response {
    Response::new(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// Sends a complete response (no body for HEAD) and says what the connection does next.
pub(crate) async fn reply(client: &TcpStream, req: &Request, response: Response, keep: Next) -> Next {
    let response = response.with_header("Server", SERVER);
    let mut wire = response.encode(keep == Next::KeepAlive);
    if req.method == "HEAD" {
        wire.truncate(wire.len() - response.body.len());
    }
    match relay::send_all(client, &wire).await {
        Ok(()) => keep,
        Err(_) => Next::Close,
    }
}

/// The SRS proxy's version body on its HTTP stream server (srs-proxy-behaviour.md §1.4).
fn versions() -> Response {
    let number = |s: &str| s.parse::<u64>().unwrap_or(0);
    Response::json(
        200,
        &json!({
            "code": 0,
            "pid": std::process::id().to_string(),
            "data": {
                "major": number(env!("CARGO_PKG_VERSION_MAJOR")),
                "minor": number(env!("CARGO_PKG_VERSION_MINOR")),
                "revision": number(env!("CARGO_PKG_VERSION_PATCH")),
                "version": env!("CARGO_PKG_VERSION"),
                "signature": "streamgate",
            },
        }),
    )
}

/// Whether the decoded path has a `..` segment (or a NUL byte).
fn has_dot_segment(path: &str) -> bool {
    let decoded = percent_decode(path);
    decoded.contains('\0') || decoded.split(['/', '\\']).any(|s| s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str) -> Request {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        match http::parse_request(raw.as_bytes(), REQUEST_LIMITS).unwrap() {
            Status::Complete(r) => r,
            Status::Partial => panic!(),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(classify(&req("/live/a.flv?token=1")), Route::Live(Protocol::HttpFlv));
        assert_eq!(classify(&req("/live/a.ts")), Route::Live(Protocol::HttpTs));
        assert_eq!(classify(&req("/live/a-3.ts?spbhid=abc")), Route::HlsById);
        assert_eq!(classify(&req("/live/init.mp4?x=1&spbhid=abc")), Route::HlsById);
        assert_eq!(classify(&req("/live/a.m3u8?hls_ctx=1")), Route::Playlist);
        assert_eq!(classify(&req("/live/a.m3u8?spbhid=abc")), Route::HlsById);
        assert_eq!(classify(&req("/api/v1/versions")), Route::Versions);
        assert_eq!(classify(&req("/players/whep.html")), Route::Static);
        assert_eq!(classify(&req("/live/a.FLV")), Route::Static, "suffixes are case-sensitive, as in SRS");
    }

    #[test]
    fn dot_segments() {
        assert!(has_dot_segment("/../etc/passwd"));
        assert!(has_dot_segment("/a/%2e%2e/b"));
        assert!(has_dot_segment("/a/..\\b"));
        assert!(has_dot_segment("/a%00.flv"));
        assert!(!has_dot_segment("/a/..b/c...flv"));
    }

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
