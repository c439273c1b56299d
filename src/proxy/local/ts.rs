//! HTTP-TS players of local streams, and of pulled ones with `--edge on` (`/APP/STREAM.ts`):
//! the stream's ring, read like an edge player's (from the last key frame, after the sequence
//! headers), muxed into MPEG-TS for this player ([`crate::codec::ts`]: H.264 and AAC; a
//! stream in other codecs is not served this way, [`Played::Uncarried`]) and written in batches of about
//! [`BATCH_BYTES`]. The body is chunked for an HTTP/1.1 client, so it ends with the last chunk
//! when the publisher leaves, as the HTTP-FLV players' does.
//!
//! A player more than `--edge-max-lag` behind skips to a key frame (what it passes over is
//! counted as dropped frames); one that takes nothing for `--edge-stall-timeout` is closed.
//! Each player muxes its own copy (the ring keeps RTMP and FLV forms only).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;

use crate::balance::StreamKey;
use crate::bridge::{Protocol, Role};
use crate::codec::ts::{self, TsMuxer};
use crate::proxy::edge::player::End;
use crate::proxy::edge::ring::{Cursor, Kind, Ring};
use crate::proxy::edge::{self, Membership};
use crate::shard::relay::{recv, send_all};
use crate::shard::{Shard, within};

/// About how many bytes of MPEG-TS one write carries.
pub const BATCH_BYTES: usize = 64 * 1024;

/// How an HTTP-TS player's play went.
pub enum Played {
    /// It was answered and served until either side ended it.
    Served,
    /// Nothing was sent: the stream carries a codec the muxer cannot (named); the caller
    /// answers the player (with `--edge on`, relays it to the origin, which muxes it itself).
    Uncarried(&'static str),
}

/// Serves an HTTP-TS player of `key` from the shard's ring of it (a local stream's, or with
/// `--edge on` the shard's pull, started if need be): `head` (the response head, chunked when
/// `chunked`), then the stream as MPEG-TS until either side ends it.
pub async fn play(
    shard: &Rc<Shard>,
    client: &TcpStream,
    peer: SocketAddr,
    (key, param): (&StreamKey, String),
    head: Vec<u8>,
    chunked: bool,
) -> Played {
    let member = edge::join(shard, key, peer, param);
    let started = Instant::now();
    if !edge::media_or_refusal(client, &member, Protocol::HttpTs, peer).await {
        return Played::Served;
    }
    if let Some(codec) = uncarried_codec(&member).await {
        return Played::Uncarried(codec);
    }
    let session = shard.open_session(key, Protocol::HttpTs, Role::Play).await;
    let dropped = Cell::new(0);
    let bytes_out = &session.traffic.bytes_out;
    let writer = write_loop(shard, client, &member, (head, chunked), bytes_out, &dropped);
    let gone = async {
        let mut sink = [0u8; 1024];
        while recv(client, &mut sink).await? > 0 {}
        Ok(End::PlayerClosed)
    };
    let ended = future::or(writer, gone).await;
    let _ = client.shutdown(std::net::Shutdown::Both).await;
    edge::log_end(Protocol::HttpTs.name(), key, peer, started, ended, bytes_out.get(), dropped.get());
    Played::Served
}

/// How long a player whose stream has shown only its metadata waits for a sequence header or
/// a key frame, which say its codecs.
const CODECS_WAIT: Duration = Duration::from_secs(2);

/// A codec of `member`'s stream that MPEG-TS here cannot carry ([`ts::uncarried`]), read from
/// its sequence headers and the frames from its last key frame on (at most 64).
async fn uncarried_codec(member: &Membership) -> Option<&'static str> {
    let stream = &member.stream;
    let codecs_shown = async {
        loop {
            let seq = {
                let ring = stream.ring.borrow();
                if ring.headers().any(|e| e.kind != Kind::Meta) || !ring.start().need_key {
                    return;
                }
                ring.head()
            };
            if stream.is_closed() {
                return;
            }
            stream.changed(member.id, seq).await;
        }
    };
    let _ = within(CODECS_WAIT, codecs_shown).await;
    uncarried_in(&stream.ring.borrow())
}

/// A codec of `ring`'s stream MPEG-TS here cannot carry, read from its sequence headers and the
/// frames from its last key frame on (at most 64).
fn uncarried_in(ring: &Ring) -> Option<&'static str> {
    let start = ring.start();
    let frames = (!start.need_key).then(|| ring.entries_from(start.seq).take(64));
    let mut messages = ring.headers().chain(frames.into_iter().flatten());
    messages.find_map(|e| ts::uncarried(e.frame.type_id, &e.frame.payload))
}

/// A codec MPEG-TS here cannot carry in this shard's pull of `key`, if the shard pulls it and
/// its codecs are known already: such a player is relayed at once, without joining the pull.
pub fn known_uncarried(key: &StreamKey) -> Option<&'static str> {
    let stream = edge::streams().get(key)?;
    uncarried_in(&stream.ring.borrow())
}

/// Appends `body` to `out`, as one chunk when `chunked`.
fn frame(out: &mut Vec<u8>, body: &[u8], chunked: bool) {
    if body.is_empty() {
        return;
    }
    if chunked {
        out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(body);
    }
}

/// The head, then the ring as MPEG-TS (see the module header).
async fn write_loop(
    shard: &Shard,
    client: &TcpStream,
    member: &Membership,
    (head, chunked): (Vec<u8>, bool),
    bytes_out: &Cell<u64>,
    dropped: &Cell<u64>,
) -> io::Result<End> {
    let (stream, config) = (&member.stream, &shard.config.edge);
    let mut mux = TsMuxer::default();
    let mut body = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut cursor = {
        let ring = stream.ring.borrow();
        for e in ring.headers() {
            mux.push(e.frame.type_id, e.frame.timestamp, &e.frame.payload, &mut body);
        }
        ring.start()
    };
    let mut out = head;
    loop {
        let closed = stream.is_closed();
        if !closed {
            let skipped = take(member, &mut cursor, &mut mux, &mut body, config.max_lag as u64);
            if skipped > 0 {
                dropped.set(dropped.get() + skipped);
                stream.dropped(member.id, skipped);
            }
        }
        frame(&mut out, &body, chunked);
        body.clear();
        if closed && chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        if !out.is_empty() {
            let Some(sent) = within(config.stall_timeout, send_all(client, &out)).await else {
                return Ok(End::Stalled(config.stall_timeout));
            };
            sent?;
            bytes_out.set(bytes_out.get() + out.len() as u64);
            out.clear();
        }
        if closed {
            return Ok(End::StreamEnded);
        }
        stream.changed(member.id, cursor.seq).await;
    }
}

/// Muxes the ring's entries from `cursor` on into `body`, up to about [`BATCH_BYTES`]; a
/// player behind by more than `max_lag` (or behind the ring) skips to a key frame first.
/// Returns the frames skipped.
fn take(member: &Membership, cursor: &mut Cursor, mux: &mut TsMuxer, body: &mut Vec<u8>, max_lag: u64) -> u64 {
    let ring = member.stream.ring.borrow();
    let lag = ring.lag(cursor.seq);
    member.stream.set_lag(member.id, lag.unwrap_or(ring.bytes() as u64));
    let mut skipped = 0;
    if lag.is_none_or(|lag| lag > max_lag) {
        let (next, passed) = ring.skip(cursor.seq);
        if next.seq != cursor.seq {
            *cursor = next;
            skipped = passed;
            for e in ring.headers() {
                mux.push(e.frame.type_id, e.frame.timestamp, &e.frame.payload, body);
            }
        }
    }
    for entry in ring.entries_from(cursor.seq) {
        if body.len() >= BATCH_BYTES {
            break;
        }
        cursor.seq += 1;
        if entry.kind.passes(&mut cursor.need_key) {
            mux.push(entry.frame.type_id, entry.frame.timestamp, &entry.frame.payload, body);
        }
    }
    skipped
}
