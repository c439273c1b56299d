//! The HTTP stream listener (default 18080) on the shards: HTTP-FLV, HTTP-TS, HTTP-MP3,
//! HTTP-AAC and HLS players, `/api/v1/versions`, static files.
//!
//! One connection, many requests (keep-alive), each routed by [`route`]:
//!
//! | request | answer |
//! |---|---|
//! | `OPTIONS` anything | 200, CORS headers, no origin contacted |
//! | a path with a `..` segment | 400 |
//! | `/api/v1/versions` | the version body SRS clients read (`code`, `pid`, `data`) |
//! | `/streams/NAME/...` | the transcoded ladder ([`abr`]; 404 while `--transcode` is off) |
//! | anything with `spbhid=` in its query | HLS: the playlist's origin ([`hls`]); unknown id: 400 |
//! | `*.m3u8` of a local stream | its HLS, remuxed by streamgate ([`local_hls`]) |
//! | `*-N.ts` in a local stream's HLS folder | that segment ([`local_hls`]) |
//! | `*.m3u8` | HLS playlist, fetched and rewritten ([`hls`]) |
//! | `*.flv`, `*.ts`, `*.mp3`, `*.aac` | HTTP-FLV / HTTP-TS / audio-only live: forwarded, then relayed ([`forward`]) |
//! | anything else | `--static-files` ([`static_files`]) or 404 |
//!
//! Stream key: [`StreamKey::from_http`], the same key as RTMP for the same stream. No alive
//! origin: 503; origin unreachable or broken: 502 (504 when it timed out); each with a one-line
//! text reason and a log line.
//!
//! The connection, its keep-alive and timeouts are [`crate::proxy::http`]'s; this listener
//! refuses request bodies (413; chunked 411).

pub mod abr;
pub mod hls;
pub mod hls_sessions;
pub mod local_hls;
pub mod static_files;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;
use serde_json::json;

use super::http::origin::{self, OriginError};
use super::http::{Exchange, Next, cors, text, write_head};
use crate::balance::stream_key::{percent_decode, query_param};
use crate::balance::{Origin, StreamKey};
use crate::bridge::{Protocol, Role};
use crate::codec::http::{BodyLength, Request, Response};
use crate::shard::{Shard, relay};

/// Serves one connection of the HTTP stream listener.
pub async fn serve(shard: Rc<Shard>, client: TcpStream, peer: SocketAddr) {
    super::http::serve(shard, client, peer, route).await
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Versions,
    Abr,
    HlsById,
    Playlist,
    Live(Protocol),
    Static,
}

fn classify(req: &Request) -> Route {
    let path = req.path.as_str();
    if path == "/api/v1/versions" {
        Route::Versions
    } else if abr::is_abr_path(path) {
        Route::Abr
    } else if query_param(req.query.as_deref(), "spbhid").is_some() {
        Route::HlsById
    } else if path.ends_with(".m3u8") {
        Route::Playlist
    } else if path.ends_with(".flv") {
        Route::Live(Protocol::HttpFlv)
    } else if path.ends_with(".ts") {
        Route::Live(Protocol::HttpTs)
    } else if path.ends_with(".mp3") {
        Route::Live(Protocol::HttpMp3)
    } else if path.ends_with(".aac") {
        Route::Live(Protocol::HttpAac)
    } else {
        Route::Static
    }
}

/// Answers one request.
async fn route(ex: &mut Exchange<'_>) -> Next {
    let req = ex.req;
    let route = classify(req);
    let stream_route = matches!(route, Route::Abr | Route::HlsById | Route::Playlist | Route::Live(_));
    if req.method == "OPTIONS" {
        return ex.reply(cors(Response::new(200, "text/plain", ""))).await;
    }
    match req.content_length() {
        Ok(None | Some(0)) => {}
        Ok(Some(_)) => return ex.reply_then(text(413, "this listener takes no request bodies"), Next::Close).await,
        Err(e) => return ex.reply_then(text(411, &e.to_string()), Next::Close).await,
    }
    if has_dot_segment(&req.path) {
        log::debug!("http client {}: refused path {:?}", ex.peer, req.path);
        return ex.reply(text(400, "path with a '..' segment refused")).await;
    }
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        let refused = text(405, &format!("method {} not allowed; use GET, HEAD or OPTIONS", req.method));
        let refused = refused.with_header("Allow", "GET, HEAD, OPTIONS");
        return ex.reply(if stream_route { cors(refused) } else { refused }).await;
    }
    // Routes whose state is large are boxed: a connection's task is as large as its largest
    // state for its whole life, and an HTTP-FLV player served by the shard (the most numerous
    // connection with `--edge on`) should not carry the others'.
    match route {
        Route::Versions => ex.reply(versions()).await,
        Route::Abr if !ex.shard.config.transcode.enabled => ex.reply(abr::off()).await,
        Route::Abr => abr::serve(ex).await,
        Route::Static => static_files::serve(ex).await,
        Route::HlsById => Box::pin(hls::by_id(ex)).await,
        Route::Playlist => {
            if let Ok(key) = ex.stream_key()
                && let Some(next) = Box::pin(local_hls::playlist(ex, &key)).await
            {
                return next;
            }
            Box::pin(hls::playlist(ex)).await
        }
        Route::Live(Protocol::HttpTs) => match local_hls::segment(ex).await {
            Some(next) => next,
            None => live(ex, Protocol::HttpTs).await,
        },
        Route::Live(protocol) => live(ex, protocol).await,
    }
}

/// HTTP-FLV, HTTP-TS, HTTP-MP3 and HTTP-AAC: pick the stream's origin and forward (HTTP-FLV and
/// HTTP-TS with `--edge on`: served from the shard's pull of the stream, [`super::edge::play_flv`]
/// and [`super::local::ts`]; HTTP-FLV or HTTP-TS of a local stream: from its ring,
/// [`super::local`]).
async fn live(ex: &Exchange<'_>, protocol: Protocol) -> Next {
    let key = match ex.stream_key() {
        Ok(key) => key,
        Err(e) => return ex.reply(cors(text(400, &e.to_string()))).await,
    };
    let _admitted = match Box::pin(admit(ex, &key, protocol)).await {
        Ok(admitted) => admitted,
        Err(refused) => return ex.reply(refused).await,
    };
    if matches!(protocol, Protocol::HttpFlv | Protocol::HttpTs) && super::local::ready(ex.shard, &key) {
        return match protocol {
            Protocol::HttpTs => match Box::pin(play_ts(ex, &key)).await {
                Ok(next) => next,
                Err(codec) => {
                    let why =
                        format!("{key} carries {codec}; HTTP-TS here carries H.264 and AAC only: play it as .flv");
                    log::info!("{} play {key} from {} refused: {why}", protocol.name(), ex.peer);
                    ex.reply(cors(text(501, &why))).await
                }
            },
            _ => play_flv(ex, &key).await,
        };
    }
    let origin = match super::pick(ex.shard, &key).await {
        Ok(origin) => origin,
        Err(reason) => return no_origin(ex, &key, protocol.name(), &reason).await,
    };
    if ex.shard.config.edge.enabled && matches!(protocol, Protocol::HttpFlv | Protocol::HttpTs) {
        drop(origin);
        // The origin lets each query in itself, as it would a relayed player.
        let param = ex.req.query.as_deref().unwrap_or("");
        if let Err(denied) = Box::pin(super::edge::admit(ex.shard, &key, param)).await {
            log::warn!("{} play {key} from {} refused: {denied}", protocol.name(), ex.peer);
            let status = if matches!(denied, super::edge::upstream::Denied::Refused(_)) { 403 } else { 502 };
            return ex.reply(cors(text(status, &format!("{key}: {denied}")))).await;
        }
        if protocol == Protocol::HttpFlv {
            return play_flv(ex, &key).await;
        }
        let codec = match super::local::ts::known_uncarried(&key) {
            Some(codec) => codec,
            None => match Box::pin(play_ts(ex, &key)).await {
                Ok(next) => return next,
                Err(codec) => codec,
            },
        };
        // The origin muxes the codecs the edge cannot: this player is relayed to it.
        log::info!(
            "{} play {key} from {}: the stream carries {codec}; relayed to the origin",
            protocol.name(),
            ex.peer
        );
        return match super::pick(ex.shard, &key).await {
            Ok(origin) => Box::pin(forward(ex, &key, origin, protocol)).await,
            Err(reason) => no_origin(ex, &key, protocol.name(), &reason).await,
        };
    }
    Box::pin(forward(ex, &key, origin, protocol)).await
}

/// A play refused because the stream has no origin: logged and answered 503 with the reason.
async fn no_origin(ex: &Exchange<'_>, key: &StreamKey, what: &str, reason: &super::NoOrigin) -> Next {
    log::warn!("{what} play {key} from {} refused: {reason}", ex.peer);
    ex.reply(cors(text(503, &format!("no origin for {key}: {reason}")))).await
}

/// An HTTP-FLV player served by the shard from the stream's ring: a local stream's
/// ([`super::local`]) or, with `--edge on`, the shard's pull of it.
/// The body is chunked for an HTTP/1.1 client, as SRS sends it, so that it ends with the last
/// chunk when the stream ends (an HTTP/1.0 client gets it until the connection closes).
async fn play_flv(ex: &Exchange<'_>, key: &StreamKey) -> Next {
    use super::edge::player::Framing;
    let mut head = Vec::with_capacity(256);
    let headers = [("Content-Type".to_string(), b"video/x-flv".to_vec())];
    let framing = if ex.req.version >= 1 { Framing::Chunked } else { Framing::Raw };
    let chunked: &[(&str, &[u8])] = match framing {
        Framing::Chunked => &[("Cache-Control", b"no-cache"), ("Transfer-Encoding", b"chunked")],
        Framing::Raw => &[("Cache-Control", b"no-cache")],
    };
    write_head(&mut head, 200, "OK", &headers, chunked, Next::Close);
    let param = ex.req.query.clone().unwrap_or_default();
    super::edge::play_flv(ex.shard, ex.client, ex.peer, (key, param), head, framing).await;
    Next::Close
}

/// An HTTP-TS player of a local stream or, with `--edge on`, of the shard's pull, muxed from
/// the ring ([`super::local::ts`]); chunked for an HTTP/1.1 client as for HTTP-FLV. Unanswered
/// when the stream carries a codec the muxer cannot: that codec is the error.
async fn play_ts(ex: &Exchange<'_>, key: &StreamKey) -> Result<Next, &'static str> {
    let mut head = Vec::with_capacity(256);
    let headers = [("Content-Type".to_string(), b"video/MP2T".to_vec())];
    let chunked = ex.req.version >= 1;
    let extra: &[(&str, &[u8])] = if chunked {
        &[("Cache-Control", b"no-cache"), ("Transfer-Encoding", b"chunked")]
    } else {
        &[("Cache-Control", b"no-cache")]
    };
    write_head(&mut head, 200, "OK", &headers, extra, Next::Close);
    let param = ex.req.query.clone().unwrap_or_default();
    match super::local::ts::play(ex.shard, ex.client, ex.peer, (key, param), head, chunked).await {
        super::local::ts::Played::Served => Ok(Next::Close),
        super::local::ts::Played::Uncarried(codec) => Err(codec),
    }
}

/// Asks [`super::access`] whether the request may play `key`; a refusal is answered 403 with
/// the reason.
pub async fn admit(
    ex: &Exchange<'_>,
    key: &StreamKey,
    protocol: Protocol,
) -> Result<super::access::Admitted, Response> {
    let param = ex.req.query.as_deref().unwrap_or("");
    let ask = super::access::Ask { protocol, role: Role::Play, key, param, peer: ex.peer, tc_url: None };
    super::access::admit(ex.shard, &ask)
        .await
        .map_err(|refusal| cors(text(refusal.http_status(), &refusal.to_string())))
}

/// Sends the request to the stream's origin and reads the response head. A dial that is
/// refused or times out is reported (quarantine) and retried once on the origin picked
/// instead; the answer comes with the origin that gave it.
pub async fn ask_origin(
    ex: &Exchange<'_>,
    key: &StreamKey,
    origin: Arc<Origin>,
    playlist: bool,
) -> Result<(Arc<Origin>, origin::Answered), OriginError> {
    let (shard, req, peer) = (ex.shard, ex.req, ex.peer);
    let timeout = shard.config.http_origin_timeout;
    let ask = |origin: &Origin| {
        let addr = origin::http_addr(origin);
        async move { origin::request(addr?, req, &[], peer, playlist, timeout).await }
    };
    match ask(&origin).await {
        Err(e) if e.is_dial_failure() => {
            super::failed(shard, e.pick_failure());
            let Ok(next) = super::repick(shard, key, &origin).await else { return Err(e) };
            ask(&next).await.map(|answered| (next, answered))
        }
        answered => answered.map(|answered| (origin, answered)),
    }
}

/// Sends the request to the stream's origin and relays the answer: the origin's status and
/// end-to-end headers with CORS added, then the body, zero-copy with `--relay`. A body of known
/// length keeps the player's connection; a live body (chunked or until close) ends it.
async fn forward(ex: &Exchange<'_>, key: &StreamKey, origin: Arc<Origin>, protocol: Protocol) -> Next {
    let (shard, client, req) = (ex.shard, ex.client, ex.req);
    let (origin, mut answered) = match ask_origin(ex, key, origin, false).await {
        Ok(a) => a,
        Err(e) => return origin_failed(ex, key, protocol, &e).await,
    };
    let origin = &*origin;
    let length = match answered.head.body_length(&req.method) {
        Ok(length) => length,
        Err(e) => return origin_failed(ex, key, protocol, &OriginError::Bad(answered.addr, e.to_string())).await,
    };
    let keep = match length {
        BodyLength::Empty | BodyLength::Exact(_) => ex.keep,
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
    let ended = Ended { bytes: traffic.bytes_out.get(), status: answered.head.status, took: started.elapsed() };
    log_end(ex, key, origin, protocol, ended, outcome, keep)
}

/// What a forwarded request did, for its log line.
struct Ended {
    bytes: u64,
    status: u16,
    took: Duration,
}

/// Logs how a forwarded request ended and says what the connection does next.
fn log_end(
    ex: &Exchange<'_>,
    key: &StreamKey,
    origin: &Origin,
    protocol: Protocol,
    Ended { bytes, status, took }: Ended,
    outcome: std::io::Result<&str>,
    keep: Next,
) -> Next {
    let (name, peer, id) = (protocol.name(), ex.peer, &origin.id);
    match (outcome, protocol) {
        (Ok(end), Protocol::Hls) => {
            log::debug!("hls {} {key} from {peer} via origin {id}: {status}, {bytes} bytes, {end}", ex.req.path);
            keep
        }
        (Ok(end), _) => {
            log::info!(
                "{name} play {key} from {peer} via origin {id} ({status}) ended after {took:.1?}: {end}; {bytes} bytes out"
            );
            keep
        }
        (Err(e), _) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
            log::info!(
                "{name} play {key} from {peer} via origin {id} ({status}) ended after {took:.1?}: a peer reset the connection; {bytes} bytes out"
            );
            Next::Close
        }
        (Err(e), _) => {
            log::warn!("{name} play {key} from {peer} via origin {id} ({status}) failed after {took:.1?}: {e}");
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
async fn origin_failed(ex: &Exchange<'_>, key: &StreamKey, protocol: Protocol, e: &OriginError) -> Next {
    super::failed(ex.shard, e.pick_failure());
    log::warn!("{} {} {key} from {}: {e}", protocol.name(), ex.req.path, ex.peer);
    ex.reply(cors(text(e.status(), &e.to_string()))).await
}

/// The version body of the HTTP stream listener, in the shape SRS clients read.
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
        match crate::codec::http::parse_request(raw.as_bytes(), super::super::http::REQUEST_LIMITS).unwrap() {
            crate::codec::http::Status::Complete(r) => r,
            crate::codec::http::Status::Partial => panic!(),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(classify(&req("/live/a.flv?token=1")), Route::Live(Protocol::HttpFlv));
        assert_eq!(classify(&req("/live/a.ts")), Route::Live(Protocol::HttpTs));
        assert_eq!(classify(&req("/live/radio.mp3?token=1")), Route::Live(Protocol::HttpMp3));
        assert_eq!(classify(&req("/live/radio.aac")), Route::Live(Protocol::HttpAac));
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
}
