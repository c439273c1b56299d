//! A local RTMP publisher: after `publish` (identified by [`crate::proxy::rtmp::identify`]), the
//! shard answers `NetStream.Publish.Start` itself, decodes the publisher's chunk stream from
//! its first byte after C2 (the identify replay, then the socket) and pushes every audio, video
//! and metadata message into the stream's ring, until the publisher unpublishes or closes.
//!
//! The publisher's bytes also go through the media inspector (statistics) and the publish
//! limits, as a relayed publisher's do. Acknowledgements follow the publisher's window.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;
use glommio::net::TcpStream;

use super::Owned;
use super::forward::Fanout;
use crate::balance::StreamKey;
use crate::bridge::{Protocol, Role};
use crate::codec::rtmp::message::{self, AUDIO, COMMAND_AMF0, COMMAND_AMF3, DATA_AMF0, VIDEO, WINDOW_ACK_SIZE};
use crate::codec::rtmp::{ChunkDecoder, ChunkEncoder, ChunkError, Command};
use crate::proxy::edge::{self, Stream, ring::Frame};
use crate::proxy::rtmp::{identify, limits, refuse};
use crate::shard::Shard;
use crate::shard::relay::{recv, send_all};

/// How a local publish ended.
#[derive(Debug)]
enum End {
    /// `FCUnpublish`, `deleteStream` or `closeStream`.
    Unpublished,
    Closed,
}

/// Why a local publish failed.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused: {0}")]
    Limit(crate::transcode::limits::Refusal),
}

/// Serves the publisher of `key` on `client` locally; `replay` is every byte it sent after C2.
pub async fn serve(shard: &Rc<Shard>, client: &TcpStream, peer: SocketAddr, key: &StreamKey, replay: Vec<u8>) {
    let owned = match super::claim(key, shard.index, shard.config.local_max_streams) {
        Ok(owned) => owned,
        Err(super::Unclaimed::Live) => {
            let shard_now = super::owner(key).map_or_else(|| "?".to_string(), |o| o.shard.to_string());
            log::warn!(
                "rtmp publish {key} from {peer} refused: the stream is already published here (shard {shard_now})"
            );
            return refuse(client, Role::Publish, identify::CHUNK_SIZE, "stream already publishing").await;
        }
        Err(super::Unclaimed::Full(n)) => {
            log::warn!("rtmp publish {key} from {peer} refused: {n} local streams live (--local-max-streams)");
            return refuse(client, Role::Publish, identify::CHUNK_SIZE, "too many local streams").await;
        }
    };
    let Some(stream) = edge::open_local(shard, key) else {
        super::release(key, &owned);
        log::warn!("rtmp publish {key} from {peer} refused: the stream is already published on this shard");
        return refuse(client, Role::Publish, identify::CHUNK_SIZE, "stream already publishing").await;
    };
    let guard = Guard { key, owned, stream: stream.clone() };
    let session = shard.open_session_of(key, Protocol::Rtmp, Role::Publish, true).await;
    let traffic = session.traffic.clone();
    let started = Instant::now();
    let probe = shard.media.register(key, started);
    log::info!("rtmp publish {key} from {peer}: served locally (local origin) on shard {}", shard.index);
    let fanout = Rc::new(Fanout::default());
    let feed = Feed { stream: &stream, owned: &guard.owned, fanout: &fanout };
    let receive = receive(client, &feed, replay, &traffic.bytes_in, |b| probe.feed(b));
    let limit =
        async { Err(PublishError::Limit(limits::enforce(shard.config.limits, &probe, &traffic.bytes_in).await)) };
    let outcome = future::or(receive, limit).await;
    if let Err(PublishError::Limit(refusal)) = &outcome {
        refuse(client, Role::Publish, identify::CHUNK_SIZE, &refusal.to_string()).await;
    }
    drop(guard);
    drop(fanout);
    drop(probe);
    drop(session);
    let _ = client.shutdown(std::net::Shutdown::Both).await;
    let (took, bytes) = (started.elapsed(), traffic.bytes_in.get());
    match outcome {
        Ok(End::Unpublished) => log::info!(
            "rtmp publish {key} from {peer} (local) ended after {took:.1?}: the publisher unpublished; {bytes} bytes in; its players end"
        ),
        Ok(End::Closed) => log::info!(
            "rtmp publish {key} from {peer} (local) ended after {took:.1?}: the publisher closed; {bytes} bytes in; its players end"
        ),
        Err(e) => {
            log::warn!(
                "rtmp publish {key} from {peer} (local) ended after {took:.1?}: {e}; {bytes} bytes in; its players end"
            )
        }
    }
}

/// While it lives the stream is local and live; dropped, its players end and the key is free.
struct Guard<'a> {
    key: &'a StreamKey,
    owned: Arc<Owned>,
    stream: Rc<Stream>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        super::release(self.key, &self.owned);
        edge::streams().remove(&self.stream);
        self.stream.close(None);
    }
}

/// Where the publisher's messages go: the owner's ring and the other shards' forwards.
struct Feed<'a> {
    stream: &'a Rc<Stream>,
    owned: &'a Owned,
    fanout: &'a Rc<Fanout>,
}

impl Feed<'_> {
    fn push(&self, frame: Frame) {
        self.fanout.send(&frame);
        self.stream.push(frame);
    }
}

/// Answers the publish, then decodes the publisher's messages into `feed` until it ends.
async fn receive(
    client: &TcpStream,
    feed: &Feed<'_>,
    replay: Vec<u8>,
    bytes_in: &Cell<u64>,
    inspect: impl Fn(&[u8]),
) -> Result<End, PublishError> {
    let mut encoder = ChunkEncoder::new();
    encoder.set_chunk_size(identify::CHUNK_SIZE)?;
    let mut out = Vec::new();
    let start =
        message::on_status(identify::STREAM_ID, "status", "NetStream.Publish.Start", "Started publishing stream.");
    encoder.encode(&start, &mut out)?;
    send_all(client, &out).await?;
    let mut demux = Demux { decoder: ChunkDecoder::new(), window: None, received: 0, acked: 0 };
    bytes_in.set(replay.len() as u64);
    inspect(&replay);
    let mut input = replay;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(end) = demux.feed(&input, feed)? {
            return Ok(end);
        }
        feed.fanout.accept(feed.owned, feed.stream);
        if let Some(ack) = demux.ack() {
            out.clear();
            encoder.encode(&message::acknowledgement(ack), &mut out)?;
            send_all(client, &out).await?;
        }
        let n = recv(client, &mut buf).await?;
        if n == 0 {
            return Ok(End::Closed);
        }
        bytes_in.set(bytes_in.get() + n as u64);
        inspect(&buf[..n]);
        input.clear();
        input.extend_from_slice(&buf[..n]);
    }
}

/// The publisher's chunk stream, decoded.
struct Demux {
    decoder: ChunkDecoder,
    /// The publisher's window acknowledgement size, once it sent one.
    window: Option<u64>,
    received: u64,
    acked: u64,
}

impl Demux {
    /// Decodes `input`, pushing media and metadata into `feed`; `Some` once it unpublished.
    fn feed(&mut self, mut input: &[u8], feed: &Feed<'_>) -> Result<Option<End>, ChunkError> {
        self.received += input.len() as u64;
        while !input.is_empty() {
            let (used, msg) = self.decoder.decode(input)?;
            input = &input[used..];
            let Some(msg) = msg else { break };
            match msg.type_id {
                AUDIO | VIDEO | DATA_AMF0 => {
                    feed.push(Frame { type_id: msg.type_id, timestamp: msg.timestamp, payload: msg.payload.into() })
                }
                WINDOW_ACK_SIZE => {
                    self.window = message::parse_window_ack_size(&msg.payload).ok().map(|w| u64::from(w.max(1)))
                }
                COMMAND_AMF0 | COMMAND_AMF3 => {
                    let name = Command::from_message(&msg).map(|c| c.name).unwrap_or_default();
                    if matches!(name.as_str(), "FCUnpublish" | "deleteStream" | "closeStream") {
                        return Ok(Some(End::Unpublished));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// The sequence number to acknowledge, when the publisher's window is full.
    fn ack(&mut self) -> Option<u32> {
        let window = self.window?;
        if self.received - self.acked < window {
            return None;
        }
        self.acked = self.received;
        Some(self.received as u32)
    }
}
