//! HLS through the proxy with sticky segments.
//!
//! A playlist request (`*.m3u8` without `spbhid`) picks the stream's origin like any other
//! protocol and gets the stream's id (one id per stream, the same on every shard and, in redis
//! mode, on every proxy of the fleet): both from the shard's snapshot once the stream has them,
//! else from the control thread. A segment request resolves its id from the snapshot the same
//! way, so an established stream's segments never wait for the control thread. The proxy fetches the playlist and rewrites every URI in it to carry
//! `spbhid=<id>` ([`crate::codec::m3u8`]): segments, `#EXT-X-MAP`/`#EXT-X-KEY` URIs and a master
//! playlist's variants. Any later request carrying that id (a segment, an init section, a
//! variant playlist, whatever its name) goes to the same stream's origin; a variant playlist
//! is rewritten again with the same id. An unknown id gets 400 naming it.
//!
//! Access ([`crate::proxy::access`]) is asked for a playlist without an id; requests that carry
//! the id ride on it (the id names the stream, not the player). With `--on-play`, `--on-stop`
//! or `--max-sessions-per-stream`, a player is asked once and then holds a session
//! ([`super::hls_sessions`]) that its playlist refreshes keep alive.
//!
//! The rewritten playlist gets a new `Content-Length`; validators and encodings that described
//! the origin's bytes are dropped (and the fetch asks for an unencoded, unconditional answer).
//! A non-2xx answer passes through unchanged (a player retries a playlist that is not there
//! yet).

use std::sync::Arc;
use std::time::Instant;

use crate::balance::stream_key::query_param;
use crate::balance::{Origin, StreamKey};
use crate::bridge::{Protocol, Role};
use crate::codec::http::Response;
use crate::codec::m3u8;
use crate::proxy::http::origin::{self, OriginError};
use crate::proxy::http::{Exchange, Next, cors, passed_on, text};
use crate::shard::Shard;

use super::hls_sessions::{self as sessions, NotKept};

/// The query parameter that carries the HLS id (the name SRS players already pass through).
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
pub async fn playlist(ex: &Exchange<'_>) -> Next {
    let shard = ex.shard;
    let key = match ex.stream_key() {
        Ok(key) => key,
        Err(e) => return ex.reply(cors(text(400, &e.to_string()))).await,
    };
    let token = query_param(ex.req.query.as_deref(), sessions::PARAM);
    let alive = token.as_deref().is_some_and(|t| sessions::touch(t, &key));
    let admitted = match alive {
        true => None,
        false => match super::admit(ex, &key, Protocol::Hls).await {
            Ok(admitted) => Some(admitted),
            Err(refused) => return ex.reply(refused).await,
        },
    };
    let (origin, id) = match claim(shard, &key).await {
        Ok(claimed) => claimed,
        Err(reason) => return super::no_origin(ex, &key, "hls", &reason).await,
    };
    let Some(admitted) = admitted.filter(|_| sessions::wanted(shard)) else {
        return fetch_playlist(ex, &key, origin, &id, None).await; // held (if at all) for this fetch only
    };
    match token {
        // A session that timed out (or another proxy's): admitted again under its token.
        Some(token) => match sessions::open(shard, Some(token), &key, admitted) {
            Ok(_) | Err(NotKept::Taken(_)) => fetch_playlist(ex, &key, origin, &id, None).await,
            Err(NotKept::Full(_)) => ex.reply(cors(text(503, "too many HLS sessions"))).await,
        },
        None => fetch_playlist(ex, &key, origin, &id, Some(admitted)).await,
    }
}

/// The stream's origin and HLS id: from this shard's snapshot when it has both, else from the
/// control thread.
async fn claim(shard: &Shard, key: &StreamKey) -> Result<(Arc<Origin>, Arc<str>), crate::proxy::NoOrigin> {
    {
        let snapshot = shard.link.snapshots.borrow();
        if let (Some(origin), Some(id)) = (snapshot.pinned(key, Instant::now()), snapshot.hls_ids.get(key)) {
            return Ok((origin.clone(), id.clone()));
        }
    }
    let proposal = crate::proxy::propose(shard, key);
    shard.counters.asked(crate::bridge::ControlAsk::HlsClaim);
    shard.link.claim_hls(key, proposal, None).await.map_err(|e| crate::proxy::claim_failed(shard, e))
}

/// The stream and origin of an HLS id: from this shard's snapshot when it has both, else from
/// the control thread (which, in redis mode, also asks Redis for ids other proxies gave out).
async fn resolve(
    shard: &Shard,
    id: &str,
) -> Result<Option<(StreamKey, Arc<str>, Arc<Origin>)>, crate::bridge::ClaimError> {
    if let Some((key, id, origin)) = shard.link.snapshots.borrow().hls_by_id(id, Instant::now()) {
        return Ok(Some((key.clone(), id.clone(), origin.clone())));
    }
    shard.counters.asked(crate::bridge::ControlAsk::HlsResolve);
    shard.link.resolve_hls(id).await
}

/// A request carrying `spbhid`: the id's stream and origin serve it.
pub async fn by_id(ex: &Exchange<'_>) -> Next {
    let (req, peer) = (ex.req, ex.peer);
    let id = query_param(req.query.as_deref(), ID_PARAM).unwrap_or_default();
    let resolved = match resolve(ex.shard, &id).await {
        Ok(resolved) => resolved,
        Err(e) => {
            let e = crate::proxy::claim_failed(ex.shard, e);
            log::warn!("hls {} from {peer} refused: {e}", req.path);
            return ex.reply(cors(text(503, &e.to_string()))).await;
        }
    };
    let Some((key, id, origin)) = resolved else {
        log::debug!("hls {} from {peer}: unknown {ID_PARAM} {id:?}", req.path);
        let message = format!("load stream by {ID_PARAM} {id}: unknown id (expired, or from another proxy)");
        return ex.reply(cors(text(400, &message))).await;
    };
    if req.path.ends_with(".m3u8") {
        if let Some(token) = query_param(req.query.as_deref(), sessions::PARAM) {
            sessions::touch(&token, &key); // a variant of a master playlist keeps its session alive
        }
        fetch_playlist(ex, &key, origin, &id, None).await
    } else {
        super::forward(ex, &key, origin, Protocol::Hls).await
    }
}

/// Fetches a playlist from the stream's origin and answers it rewritten, as one HLS session.
/// With `new` (a new player's first playlist, admitted), the session's token goes into what it
/// gets: a one-variant master playlist naming this one (a media playlist's refreshes then carry
/// it), or the origin's master playlist with the token on its variants.
async fn fetch_playlist(
    ex: &Exchange<'_>,
    key: &StreamKey,
    origin: Arc<Origin>,
    id: &str,
    new: Option<crate::proxy::access::Admitted>,
) -> Next {
    let (shard, req, peer) = (ex.shard, ex.req, ex.peer);
    let session = shard.open_session(key, Protocol::Hls, Role::Play).await;
    let next = match fetch(ex, key, origin).await {
        Ok((origin, (status, headers, body))) => {
            let master = new.is_some() && sessions::is_master(&body);
            let mut response = rewrite(status, &headers, body, id, key, &origin.id.0);
            let mut what = status.to_string();
            if let Some(admitted) = new.filter(|_| status == 200) {
                let Ok(token) = sessions::open(shard, None, key, admitted) else {
                    return ex.reply(cors(text(503, "too many HLS sessions"))).await;
                };
                if master {
                    if let Ok(body) = m3u8::add_query_param(&response.body, sessions::PARAM, &token) {
                        response.body = body;
                    }
                } else {
                    let name = req.path.rsplit('/').next().unwrap_or_default();
                    let wrapper = sessions::wrapper(name, req.query.as_deref(), &token);
                    response = cors(Response::new(200, "application/vnd.apple.mpegurl", wrapper));
                }
                what = "new session".to_string();
            }
            session.traffic.bytes_out.set(response.body.len() as u64);
            log::debug!("hls {} {key} from {peer} via origin {}: {what}", req.path, origin.id);
            ex.reply(response).await
        }
        Err(e) => {
            crate::proxy::failed(shard, e.pick_failure());
            log::warn!("hls {} {key} from {peer}: {e}", req.path);
            ex.reply(cors(text(e.status(), &e.to_string()))).await
        }
    };
    drop(session);
    next
}

type Fetched = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

async fn fetch(ex: &Exchange<'_>, key: &StreamKey, origin: Arc<Origin>) -> Result<(Arc<Origin>, Fetched), OriginError> {
    let (req, timeout) = (ex.req, ex.shard.config.http_origin_timeout);
    let (origin, mut answered) = super::ask_origin(ex, key, origin, true).await?;
    let method = if req.method == "HEAD" { "GET" } else { req.method.as_str() }; // see origin::encode_request
    let body = origin::read_body(&mut answered, method, Instant::now() + timeout).await?;
    Ok((origin, (answered.head.status, answered.head.headers, body)))
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
    let mut response = passed_on(status, headers, rewritten.unwrap_or(body));
    if changed {
        response.headers.retain(|(name, _)| !STALE_AFTER_REWRITE.contains(&name.to_ascii_lowercase().as_str()));
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
