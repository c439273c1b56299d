//! The origin's stream on its way to the client, from the first byte after the origin's S2:
//! how the proxy passes it on while it waits for the origin to confirm, and after.
//!
//! The client read the proxy's own answers in chunks of [`super::identify::CHUNK_SIZE`], which
//! the proxy announced; the origin writes its stream in chunks of 128 bytes (the RTMP default)
//! until it announces a size of its own. Each role gets that stream in a way that keeps what
//! the client reads consistent with how it was written, by construction:
//!
//! - A player ([`Handover::verbatim`]) gets the origin's stream verbatim, cut only at message
//!   boundaries while the proxy reads it, behind one SetChunkSize(128) from the proxy in the
//!   same write as the stream's first bytes. From then on the client reads the stream in the
//!   chunk size it is written in and follows the origin's own SetChunkSize messages. An
//!   origin's first message on every chunk stream is a full (fmt 0) header, so the client
//!   decodes the stream exactly as the origin encoded it, and the relay can splice it.
//! - A publisher ([`Handover::reframe`]) gets the origin's messages re-chunked by the proxy in
//!   the size it announced, for the whole session; the origin's SetChunkSize and Abort
//!   messages are applied by the proxy's decoder and not passed on, so the publisher's read
//!   chunk size never changes again. It must not: publishers such as ffmpeg answer every
//!   SetChunkSize they get with their own and write in that size from then on, and nginx-rtmp
//!   misreads a publisher's stream right behind a SetChunkSize that shrinks it. This direction
//!   carries only the origin's answers, acknowledgements and pings (the media goes the other
//!   way, verbatim), so re-chunking it costs nothing that matters.
//!
//! Bounds: a player's bytes not yet forwarded are bounded by the caller (the confirmation's
//! byte limit), a publisher's by [`MAX_DOWNSTREAM_MESSAGE`], the largest message the decoder
//! takes from the origin.

use std::cell::Cell;
use std::io;

use glommio::net::TcpStream;

use crate::bridge::Role;
use crate::codec::rtmp::chunk::{DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CHUNK_STREAMS};
use crate::codec::rtmp::message::{self, ABORT, SET_CHUNK_SIZE};
use crate::codec::rtmp::{ChunkDecoder, ChunkEncoder, ChunkError, Message};
use crate::shard::relay::{recv, send_all};

/// Largest message a publisher's origin may send it (the origin's statuses and controls are a
/// few hundred bytes).
pub const MAX_DOWNSTREAM_MESSAGE: u32 = 1024 * 1024;

/// The origin's stream as the proxy reads it before the relay takes over.
pub struct Handover {
    decoder: ChunkDecoder,
    pass: Pass,
    /// The client's read chunk size: the one the proxy announced until the origin's stream
    /// starts; for a player, then the origin's as of the last message forwarded.
    client_chunk_size: u32,
}

/// How the origin's bytes reach the client.
enum Pass {
    /// Raw bytes from stream offset `forwarded` on, not yet sent; `boundary` is the end of the
    /// last complete message decoded; `started` once the first bytes went out.
    Verbatim { pending: Vec<u8>, forwarded: u64, boundary: u64, started: bool },
    /// Messages re-encoded into `out`, not yet sent.
    Reframe { encoder: ChunkEncoder, out: Vec<u8> },
}

impl Handover {
    /// How `role`'s client gets the origin's stream, after the proxy announced `announced`.
    pub fn for_role(role: Role, announced: u32) -> Self {
        match role {
            Role::Play => Self::verbatim(announced),
            Role::Publish => Self::reframe(announced),
        }
    }

    /// The origin's stream verbatim, behind a SetChunkSize(128).
    pub fn verbatim(announced: u32) -> Self {
        let pass = Pass::Verbatim { pending: Vec::new(), forwarded: 0, boundary: 0, started: false };
        Handover { decoder: ChunkDecoder::new(), pass, client_chunk_size: announced }
    }

    /// The origin's messages re-chunked in `announced` bytes, its chunk size changes kept back.
    pub fn reframe(announced: u32) -> Self {
        let mut encoder = ChunkEncoder::new();
        // Out of range only if `announced` is; the proxy's answers were written in it already.
        let _ = encoder.set_chunk_size(announced);
        let decoder = ChunkDecoder::with_limits(MAX_DOWNSTREAM_MESSAGE, DEFAULT_MAX_CHUNK_STREAMS);
        let pass = Pass::Reframe { encoder, out: Vec::new() };
        Handover { decoder, pass, client_chunk_size: announced }
    }

    /// The chunk size the client reads its next message with (what a refusal is written in).
    pub fn client_chunk_size(&self) -> u32 {
        self.client_chunk_size
    }

    /// Origin bytes held that are not ready to go out (part of a message).
    pub fn held(&self) -> usize {
        match &self.pass {
            Pass::Verbatim { pending, forwarded, boundary, .. } => pending.len() - (boundary - forwarded) as usize,
            Pass::Reframe { .. } => 0,
        }
    }

    /// Decodes `input`, the next bytes of the origin's stream, until `stop` says so of a
    /// message or the input ends; returns how many bytes of `input` were decoded. What the
    /// decoded messages make ready goes out with [`Handover::flush`].
    pub fn take(&mut self, input: &[u8], mut stop: impl FnMut(&Message) -> bool) -> Result<usize, ChunkError> {
        if let Pass::Verbatim { pending, .. } = &mut self.pass {
            pending.extend_from_slice(input);
        }
        let mut pos = 0;
        while pos < input.len() {
            let (used, msg) = self.decoder.decode(&input[pos..])?;
            pos += used;
            let Some(msg) = msg else { break };
            match &mut self.pass {
                Pass::Verbatim { boundary, .. } => *boundary = self.decoder.consumed(),
                Pass::Reframe { encoder, out } => {
                    if msg.type_id != SET_CHUNK_SIZE && msg.type_id != ABORT {
                        encoder.encode(&msg, out)?;
                    }
                }
            }
            if stop(&msg) {
                break;
            }
        }
        Ok(pos)
    }

    /// Takes what [`Handover::take`] made ready to go out: whole messages, for a player the
    /// first of them behind the proxy's SetChunkSize(128).
    pub fn ready(&mut self) -> Result<Vec<u8>, ChunkError> {
        match &mut self.pass {
            Pass::Verbatim { pending, forwarded, boundary, started } => {
                let end = (*boundary - *forwarded) as usize;
                if end == 0 {
                    return Ok(Vec::new());
                }
                let rest = pending.split_off(end);
                let mut out = std::mem::replace(pending, rest);
                if !*started {
                    out = with_default_chunk_size(&out)?;
                    *started = true;
                }
                *forwarded = *boundary;
                self.client_chunk_size = self.decoder.chunk_size();
                Ok(out)
            }
            Pass::Reframe { out, .. } => Ok(std::mem::take(out)),
        }
    }

    /// Sends the client what [`Handover::take`] made ready; returns how many bytes went out.
    pub async fn flush(&mut self, client: &TcpStream) -> io::Result<u64> {
        let out = self.ready().map_err(io::Error::other)?;
        if !out.is_empty() {
            send_all(client, &out).await?;
        }
        Ok(out.len() as u64)
    }

    /// After the confirmation: the origin bytes read but not passed on yet, `undecoded` being
    /// the end of the last read that [`Handover::take`] did not decode. A player's are raw
    /// bytes to send as they are; a publisher's are for [`Handover::reframe_until_closed`].
    pub fn rest(&mut self, undecoded: &[u8]) -> Vec<u8> {
        match &mut self.pass {
            Pass::Verbatim { pending, .. } => std::mem::take(pending),
            Pass::Reframe { .. } => undecoded.to_vec(),
        }
    }

    /// A publisher's downstream after the confirmation: `rest`, then everything the origin
    /// sends, re-chunked, until the origin closes (the client's write side is then shut down,
    /// as the relay does). `counter` grows with the bytes sent.
    pub async fn reframe_until_closed(
        mut self,
        origin: &TcpStream,
        client: &TcpStream,
        rest: Vec<u8>,
        counter: &Cell<u64>,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 4096];
        let mut input = rest;
        loop {
            let used = self.take(&input, |_| false).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            debug_assert_eq!(used, input.len(), "take without a stop decodes all of its input");
            counter.set(counter.get() + self.flush(client).await?);
            let n = recv(origin, &mut buf).await?;
            if n == 0 {
                let _ = client.shutdown(std::net::Shutdown::Write).await;
                return Ok(());
            }
            input.clear();
            input.extend_from_slice(&buf[..n]);
        }
    }
}

/// `bytes` (the start of the origin's stream) behind a SetChunkSize to the RTMP default, the
/// size that stream is written in until the origin announces another.
fn with_default_chunk_size(bytes: &[u8]) -> Result<Vec<u8>, ChunkError> {
    let mut out = Vec::with_capacity(16 + bytes.len());
    // A 4-byte message fits one chunk at any chunk size: a fresh encoder writes it.
    ChunkEncoder::new().encode(&message::set_chunk_size(DEFAULT_CHUNK_SIZE), &mut out)?;
    out.extend_from_slice(bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::rtmp::Command;
    use crate::codec::rtmp::amf0::Amf0Value;

    /// An origin's stream as nginx-rtmp and SRS start it: WindowAckSize, then a `_result` over
    /// 128 bytes in 128-byte chunks, then SetChunkSize(4096) and a 3000-byte video message.
    fn origin_stream() -> (Vec<u8>, Vec<Message>) {
        let long = Amf0Value::string("x".repeat(200));
        let result = Command::new("_result", 1.0, Amf0Value::Null, vec![long]).to_message(3, 0);
        let video = Message { csid: 6, timestamp: 40, type_id: message::VIDEO, stream_id: 1, payload: vec![7; 3000] };
        let msgs = vec![message::window_ack_size(2_500_000), result, message::set_chunk_size(4096), video];
        let mut bytes = Vec::new();
        let mut enc = ChunkEncoder::new();
        for m in &msgs {
            enc.encode(m, &mut bytes).unwrap();
        }
        (bytes, msgs)
    }

    /// What a client that was told `announced` decodes from `wire`.
    fn client_reads(announced: u32, wire: &[u8]) -> Vec<Message> {
        let mut dec = ChunkDecoder::new();
        dec.set_chunk_size(announced).unwrap();
        dec.decode_all(wire).unwrap().into_iter().map(|(m, _)| m).collect()
    }

    fn drain(h: &mut Handover) -> Vec<u8> {
        h.ready().unwrap()
    }

    #[test]
    fn a_player_reads_the_origin_stream_as_written_after_the_announcement() {
        let (wire, msgs) = origin_stream();
        let mut h = Handover::verbatim(60_000);
        let mut sent = Vec::new();
        for piece in wire.chunks(100) {
            assert_eq!(h.take(piece, |_| false).unwrap(), piece.len());
            sent.extend(drain(&mut h));
        }
        assert_eq!(h.held(), 0);
        assert_eq!(h.client_chunk_size(), 4096);
        let got = client_reads(60_000, &sent);
        assert_eq!(got[0], message::set_chunk_size(128), "the announcement comes first");
        assert_eq!(got[1..], msgs[..], "then the origin's messages, as written");
        // Without the announcement the client misreads the 128-byte chunks.
        let mut dec = ChunkDecoder::new();
        dec.set_chunk_size(60_000).unwrap();
        let misread = dec.decode_all(&wire).map(|v| v.into_iter().map(|(m, _)| m).collect::<Vec<_>>());
        assert!(misread.map_or(true, |m| m != msgs), "the test stream must need the announcement");
    }

    #[test]
    fn a_publisher_reads_every_message_but_the_chunk_size_changes_in_the_announced_size() {
        let (wire, msgs) = origin_stream();
        let mut h = Handover::reframe(60_000);
        let mut sent = Vec::new();
        for piece in wire.chunks(100) {
            h.take(piece, |_| false).unwrap();
            sent.extend(drain(&mut h));
        }
        let want: Vec<Message> = msgs.into_iter().filter(|m| m.type_id != SET_CHUNK_SIZE).collect();
        assert_eq!(client_reads(60_000, &sent), want);
        assert_eq!(h.client_chunk_size(), 60_000, "the publisher's read chunk size never changes");
        // Every message fits one chunk of the announced size: one chunk header each.
        assert_eq!(sent.len(), want.iter().map(|m| 12 + m.payload.len()).sum::<usize>());
    }

    #[test]
    fn take_stops_after_the_picked_message_and_rest_keeps_what_follows() {
        let (wire, _) = origin_stream();
        for role in [Role::Play, Role::Publish] {
            let mut h = Handover::for_role(role, 60_000);
            let used = h.take(&wire, |m| m.type_id == message::COMMAND_AMF0).unwrap();
            assert!(used < wire.len(), "{role:?}: stopped at the _result");
            let sent = drain(&mut h);
            let rest = h.rest(&wire[used..]);
            let mut all = client_reads(60_000, &sent);
            match role {
                // Raw: the rest continues the forwarded stream.
                Role::Play => all = client_reads(60_000, &[sent, rest].concat()),
                // To be decoded: the same handover takes it.
                Role::Publish => {
                    h.take(&rest, |_| false).unwrap();
                    all.extend(client_reads(60_000, &drain(&mut h)));
                }
            }
            let types: Vec<u8> = all.iter().map(|m| m.type_id).collect();
            let want = match role {
                Role::Play => vec![SET_CHUNK_SIZE, message::WINDOW_ACK_SIZE, message::COMMAND_AMF0, SET_CHUNK_SIZE],
                Role::Publish => vec![message::WINDOW_ACK_SIZE, message::COMMAND_AMF0, message::VIDEO],
            };
            assert_eq!(types[..want.len()], want[..], "{role:?}");
        }
    }

    #[test]
    fn a_publishers_origin_may_not_send_an_oversized_message() {
        let mut h = Handover::reframe(60_000);
        let big = Message { csid: 6, timestamp: 0, type_id: 9, stream_id: 1, payload: vec![0; 2 * 1024 * 1024] };
        let mut wire = Vec::new();
        ChunkEncoder::new().encode(&big, &mut wire).unwrap();
        assert!(matches!(h.take(&wire, |_| false), Err(ChunkError::MessageTooLarge { .. })));
    }
}
