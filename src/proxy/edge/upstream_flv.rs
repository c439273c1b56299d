//! The origin pull over HTTP-FLV (`--edge-pull http-flv`, for origins that serve streams only
//! over HTTP-FLV; with `auto`, the default, for an origin whose RTMP endpoint refuses
//! connections): `GET /<app>/<stream>.flv`, then every FLV tag of the body becomes a
//! message for the ring, as an RTMP pull's messages do ([`super::upstream`] runs both the same
//! way: failover, timestamps, linger).

use std::net::SocketAddr;

use super::Stream;
use super::upstream::{Denied, PullError, Timeline};
use crate::balance::stream_key::DEFAULT_VHOST;
use crate::balance::{Origin, StreamKey};
use crate::codec::flv::TagReader;
use crate::codec::http::{BodyLength, ChunkedDecoder, Request};
use crate::codec::rtmp::Message;
use crate::proxy::PickFailure;
use crate::proxy::http::origin::{self, OriginError};
use crate::shard::relay::recv;
use crate::shard::{Shard, within};

/// The request for `key` with `param` (a player's query) at the origin.
fn request(key: &StreamKey, param: &str) -> Request {
    let (vhost, path) = key.as_str().split_once('/').unwrap_or((DEFAULT_VHOST, key.as_str()));
    let mut headers = vec![("User-Agent".to_string(), b"streamgate edge".to_vec())];
    if vhost != DEFAULT_VHOST {
        headers.push(("Host".to_string(), vhost.as_bytes().to_vec()));
    }
    // The query of the player that started the pull goes with it (its token, say).
    let query = Some(param.to_string()).filter(|q| !q.is_empty());
    Request { method: "GET".into(), path: format!("/{path}.flv"), query, version: 1, headers, head_len: 0 }
}

/// [`super::upstream::origin_admits`] for an origin pulled over HTTP-FLV: a GET of the stream
/// with the player's query, answered 200 (the connection is then dropped).
pub async fn origin_admits(shard: &Shard, key: &StreamKey, origin: &Origin, param: &str) -> Result<(), Denied> {
    let failed = |e: OriginError| Denied::Failed(format!("origin {}: {e}", origin.id));
    let addr = origin::http_addr(origin).map_err(failed)?;
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let timeout = shard.config.http_origin_timeout;
    let answered = origin::request(addr, &request(key, param), &[], local, false, timeout).await.map_err(failed)?;
    match answered.head.status {
        200 => Ok(()),
        status @ 400..=499 => Err(Denied::Refused(format!("origin {} answered HTTP {status}", origin.id))),
        status => Err(Denied::Failed(format!("origin {} answered HTTP {status}", origin.id))),
    }
}

/// One pull of `stream` from `origin`'s HTTP endpoint until it fails or ends.
pub async fn pull(shard: &Shard, stream: &Stream, origin: &Origin, timeline: &mut Timeline) -> Result<(), PullError> {
    let addr = origin::http_addr(origin).map_err(|e| failed(shard, e))?;
    let timeout = shard.config.http_origin_timeout;
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let answered = origin::request(addr, &request(&stream.key, &stream.param), &[], local, false, timeout)
        .await
        .map_err(|e| failed(shard, e))?;
    if answered.head.status != 200 {
        crate::proxy::failed(shard, PickFailure::Refused);
        // 401 and 403 refuse the query the pull carries; anything else may be the origin's.
        if matches!(answered.head.status, 401 | 403) {
            return Err(PullError::HttpRefused(answered.head.status));
        }
        let code = format!("HTTP {}", answered.head.status);
        return Err(PullError::Http(code));
    }
    let mut chunked = match answered.head.body_length("GET") {
        Ok(BodyLength::Chunked) => Some(ChunkedDecoder::default()),
        Ok(BodyLength::UntilClose) => None,
        _ => return Err(PullError::Http("a live FLV body must be chunked or last until close".into())),
    };
    stream.begin_pull(origin);
    log::info!("edge {} on shard {}: pulling from origin {} ({addr}, HTTP-FLV)", stream.key, shard.index, origin.id);
    timeline.restart();
    let _pulling = super::upstream::Pulling::new(stream);
    let mut reader = TagReader::default();
    let mut body = Vec::new();
    let mut input = answered.rest;
    let mut buf = vec![0u8; 64 * 1024];
    let silence = shard.config.edge.stall_timeout;
    loop {
        match &mut chunked {
            Some(decoder) => {
                body.clear();
                decoder.decode(&input, &mut body).map_err(|e| PullError::Http(e.to_string()))?;
                reader.feed(&body);
                if decoder.is_done() {
                    return Ok(());
                }
            }
            None => reader.feed(&input),
        }
        while let Some(tag) = reader.next_tag().map_err(|e| PullError::Http(e.to_string()))? {
            let msg =
                Message { csid: 0, timestamp: tag.timestamp, type_id: tag.tag_type, stream_id: 0, payload: tag.data };
            if let Some(frame) = timeline.map(msg, std::time::Instant::now()) {
                stream.push(frame);
            }
        }
        let n = match within(silence, recv(&answered.stream, &mut buf)).await {
            Some(read) => read.map_err(|e| PullError::Http(e.to_string()))?,
            None => return Err(PullError::Silent(silence)),
        };
        if n == 0 {
            return Ok(());
        }
        input.clear();
        input.extend_from_slice(&buf[..n]);
    }
}

/// Counts a failed request by its reason.
fn failed(shard: &Shard, e: OriginError) -> PullError {
    crate::proxy::failed(shard, e.pick_failure());
    PullError::Http(e.to_string())
}
