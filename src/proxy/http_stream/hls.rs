//! HLS through the proxy with sticky segments.
//!
//! A playlist request (`*.m3u8` without `spbhid`) picks the stream's origin like any other
//! protocol and gets the stream's id from the control thread (one id per stream, the same on
//! every shard). The proxy fetches the playlist and rewrites every URI in it to carry
//! `spbhid=<id>` ([`crate::codec::m3u8`]): segments, `#EXT-X-MAP`/`#EXT-X-KEY` URIs and a master
//! playlist's variants. Any later request carrying that id (a segment, an init section, a
//! variant playlist, whatever its name) goes to the same stream's origin; a variant playlist
//! is rewritten again with the same id. An unknown id gets 400 naming it.
//!
//! The rewritten playlist gets a new `Content-Length`; validators and encodings that described
//! the origin's bytes are dropped (and the fetch asks for an unencoded, unconditional answer).
//! A non-2xx answer passes through unchanged (a player retries a playlist that is not there
//! yet).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use glommio::net::TcpStream;

use super::origin::{self, OriginError};
use super::{Next, cors, reply, text};
use crate::balance::StreamKey;
use crate::balance::stream_key::query_param;
use crate::codec::http::{self, Request, Response};
use crate::codec::m3u8;
use crate::control::bridge::{Protocol, Role};
use crate::shard::Shard;

/// The query parameter that carries the HLS id (the SRS proxy's name).
pub const ID_PARAM: &str = "spbhid";

/// Origin response headers that no longer describe a rewritten playlist.
const STALE_AFTER_REWRITE: [&str; 10] = [
    "content-length",
    "accept-ranges",
    "content-digest",
    "content-encoding",
    "content-md5",
    "content-range",
    "digest",
    "etag",
    "repr-digest",
    "transfer-encoding",
];

/// `*.m3u8` without an id: pick, fetch, rewrite.
pub async fn playlist(shard: &Rc<Shard>, client: &TcpStream, peer: SocketAddr, req: &Request, keep: Next) -> Next {
    let key = match StreamKey::from_http(req.header("host"), &req.path, req.query.as_deref()) {
        Ok(key) => key,
        Err(e) => return reply(client, req, cors(text(400, &e.to_string())), keep).await,
    };
    let claimed = match super::super::propose(shard, &key) {
        Ok(proposal) => {
            shard.link.claim_hls(&key, Some(proposal)).await.map_err(|e| super::super::claim_failed(shard, &e))
        }
        Err(reason) => Err(reason),
    };
    let (origin, id) = match claimed {
        Ok(claimed) => claimed,
        Err(reason) => {
            log::warn!("hls play {key} from {peer} refused: {reason}");
            return reply(client, req, cors(text(503, &format!("no origin for {key}: {reason}"))), keep).await;
        }
    };
    fetch_playlist(shard, client, peer, req, &key, &origin, &id, keep).await
}

/// A request carrying `spbhid`: the id's stream and origin serve it.
pub async fn by_id(shard: &Rc<Shard>, client: &TcpStream, peer: SocketAddr, req: &Request, keep: Next) -> Next {
    let id = query_param(req.query.as_deref(), ID_PARAM).unwrap_or_default();
    let resolved = match shard.link.resolve_hls(&id).await {
        Ok(resolved) => resolved,
        Err(e) => {
            let e = super::super::claim_failed(shard, &e);
            log::warn!("hls {} from {peer} refused: {e}", req.path);
            return reply(client, req, cors(text(503, &e)), keep).await;
        }
    };
    let Some((key, id, origin)) = resolved else {
        log::debug!("hls {} from {peer}: unknown {ID_PARAM} {id:?}", req.path);
        let message = format!("load stream by {ID_PARAM} {id}: unknown id (expired, or from another proxy)");
        return reply(client, req, cors(text(400, &message)), keep).await;
    };
    if req.path.ends_with(".m3u8") {
        fetch_playlist(shard, client, peer, req, &key, &origin, &id, keep).await
    } else {
        super::forward(shard, client, peer, req, &key, &origin, Protocol::Hls, keep).await
    }
}

#[allow(clippy::too_many_arguments)]
async fn fetch_playlist(
    shard: &Rc<Shard>,
    client: &TcpStream,
    peer: SocketAddr,
    req: &Request,
    key: &StreamKey,
    origin: &crate::balance::Origin,
    id: &str,
    keep: Next,
) -> Next {
    let session = shard.open_session(key, Protocol::Hls, Role::Play).await;
    let traffic = &session.traffic;
    let fetched = fetch(shard, req, peer, origin).await;
    let next = match fetched {
        Ok((status, headers, body)) => {
            let response = rewrite(status, &headers, body, id, key, &origin.id.0);
            traffic.bytes_out.set(response.body.len() as u64);
            log::debug!("hls {} {key} from {peer} via origin {}: {status}", req.path, origin.id);
            reply(client, req, response, keep).await
        }
        Err(e) => {
            super::super::failed(shard, e.pick_failure());
            log::warn!("hls {} {key} from {peer}: {e}", req.path);
            reply(client, req, cors(text(e.status(), &e.to_string())), keep).await
        }
    };
    drop(session);
    next
}

type Fetched = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

async fn fetch(
    shard: &Shard,
    req: &Request,
    peer: SocketAddr,
    origin: &crate::balance::Origin,
) -> Result<Fetched, OriginError> {
    let timeout = shard.config.http_origin_timeout;
    let addr = origin::http_addr(origin)?;
    let mut answered = origin::request(addr, req, &[], peer, true, timeout).await?;
    let method = if req.method == "HEAD" { "GET" } else { req.method.as_str() }; // see origin::encode_request
    let body = origin::read_body(&mut answered, method, Instant::now() + timeout).await?;
    Ok((answered.head.status, answered.head.headers, body))
}

/// The player's response: a 200 playlist rewritten (with fresh length and no stale validators),
/// anything else as the origin sent it; CORS on both.
fn rewrite(
    status: u16,
    headers: &[(String, Vec<u8>)],
    body: Vec<u8>,
    id: &str,
    key: &StreamKey,
    origin: &str,
) -> Response {
    let rewritten = if status == 200 {
        match m3u8::add_query_param(&body, ID_PARAM, id) {
            Ok(new) => Some(new),
            Err(e) => {
                log::warn!(
                    "hls {key}: origin {origin} answered a playlist request with something else ({e}); passed on as is"
                );
                None
            }
        }
    } else {
        None
    };
    let changed = rewritten.is_some();
    let body = rewritten.unwrap_or(body);
    let mut response = Response { status, headers: Vec::new(), body };
    for (name, value) in http::end_to_end(headers) {
        let lower = name.to_ascii_lowercase();
        if lower == "content-length" || lower == "server" || lower.starts_with("access-control-") {
            continue;
        }
        if changed && STALE_AFTER_REWRITE.contains(&lower.as_str()) {
            continue;
        }
        response.headers.push((name.clone(), String::from_utf8_lossy(value).into_owned()));
    }
    cors(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_playlists_lose_stale_validators() {
        let h = |n: &str, v: &str| (n.to_string(), v.as_bytes().to_vec());
        let headers = vec![
            h("Content-Type", "application/vnd.apple.mpegurl"),
            h("Content-Length", "40"),
            h("ETag", "\"abc\""),
            h("Last-Modified", "Sun, 22 Nov 2026 10:00:00 GMT"),
            h("Cache-Control", "no-cache"),
            h("Access-Control-Allow-Origin", "origin.example"),
        ];
        let key = StreamKey::from_url("rtmp://h/live/x").unwrap();
        let body = b"#EXTM3U\n#EXTINF:2.0,\nx-1.ts\n".to_vec();
        let r = rewrite(200, &headers, body.clone(), "ID", &key, "o");
        assert_eq!(r.body, b"#EXTM3U\n#EXTINF:2.0,\nx-1.ts?spbhid=ID\n");
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Content-Type",
                "Last-Modified",
                "Cache-Control",
                "Access-Control-Allow-Origin",
                "Access-Control-Allow-Headers",
                "Access-Control-Allow-Methods"
            ]
        );
        assert!(r.headers.contains(&("Access-Control-Allow-Origin".into(), "*".into())));
        let wire = String::from_utf8(r.encode(true)).unwrap();
        assert!(wire.contains(&format!("Content-Length: {}\r\n", r.body.len())), "{wire}");
        let missing = rewrite(404, &headers, b"not found".to_vec(), "ID", &key, "o");
        assert_eq!((missing.status, missing.body.as_slice()), (404, &b"not found"[..]));
        assert!(missing.headers.iter().any(|(n, _)| n == "ETag"), "an unchanged body keeps its validators");
    }
}
