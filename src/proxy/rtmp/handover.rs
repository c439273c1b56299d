//! The origin's stream on its way to the client, from the first byte after the origin's S2:
//! how the proxy passes it on while it waits for the origin to confirm, and after.
//!
//! The proxy answered the client's `connect`, `createStream` and other calls itself
//! ([`super::identify::Told`]) and then replayed them to the origin, which answers them again:
//! those `_result`/`_error` answers are left out, whichever role, since the client is not
//! waiting for them (strict clients such as go-oryx-lib, used by SRS's regression tools, fail
//! on a `_result` whose transaction is not pending). Each answer is left out once; an answer to
//! a transaction the proxy did not answer (a call the client made after `play`, say) passes.
//!
//! - A player ([`Handover::filtered`]) gets the origin's stream through a
//!   [`ChunkFilter`]: its chunks as written wherever the client reads them alike, a message
//!   whose chunk stream lost a left-out message to a full (fmt 0) header, the origin's chunk
//!   sizes passed on (announced first where the client's differs). Once the client's chunk
//!   streams and chunk size are in step with the origin's, at a message boundary
//!   ([`Handover::relay_until_in_step`]), the relay takes the origin's bytes verbatim (and can
//!   splice them); until then the filter passes them on, as long as the session lasts if it
//!   must.
//! - A publisher ([`Handover::reframe`]) gets the origin's messages re-chunked by the proxy in
//!   the size it announced, for the whole session; the origin's SetChunkSize and Abort
//!   messages are applied by the proxy's decoder and not passed on, so the publisher's read
//!   chunk size never changes again. It must not: publishers such as ffmpeg answer every
//!   SetChunkSize they get with their own and write in that size from then on, and nginx-rtmp
//!   misreads a publisher's stream right behind a SetChunkSize that shrinks it. This direction
//!   carries only the origin's answers, acknowledgements and pings (the media goes the other
//!   way, verbatim), so re-chunking it costs nothing that matters.
//!
//! Bounds: what the proxy holds of the origin's stream (incomplete messages) is bounded by the
//! caller while it waits for the confirmation ([`Handover::held`]), and by the largest message
//! the decoder or filter takes from the origin ([`MAX_PLAYER_MESSAGE`],
//! [`MAX_DOWNSTREAM_MESSAGE`]) over at most [`DEFAULT_MAX_CHUNK_STREAMS`] chunk streams after it.

use std::cell::Cell;
use std::io;

use glommio::net::TcpStream;

use super::identify::Told;
use crate::bridge::Role;
use crate::codec::rtmp::chunk::DEFAULT_MAX_CHUNK_STREAMS;
use crate::codec::rtmp::filter::{ChunkFilter, Decision};
use crate::codec::rtmp::message::{ABORT, COMMAND_AMF0, COMMAND_AMF3, SET_CHUNK_SIZE};
use crate::codec::rtmp::{ChunkDecoder, ChunkEncoder, ChunkError, Command, Message};
use crate::shard::relay::{recv, send_all};

/// Largest message a publisher's origin may send it (the origin's statuses and controls are a
/// few hundred bytes).
pub const MAX_DOWNSTREAM_MESSAGE: u32 = 1024 * 1024;
/// Largest message a player's origin may send it while the filter passes its stream on (a key
/// frame; the chunk decoder's default limit).
pub const MAX_PLAYER_MESSAGE: u32 = 16 * 1024 * 1024;

/// The origin's stream as the proxy reads it before the relay takes over.
pub struct Handover {
    pass: Pass,
    /// Transactions the proxy answered itself whose origin answer has not come yet.
    answered: Vec<f64>,
}

/// How the origin's bytes reach the client.
enum Pass {
    /// Through the filter.
    Filter(Box<ChunkFilter>),
    /// Messages re-encoded in `chunk_size` into `out`, not yet sent.
    Reframe { decoder: ChunkDecoder, encoder: ChunkEncoder, out: Vec<u8>, chunk_size: u32 },
}

/// Why the relay of a player's stream could not take the origin's bytes verbatim.
fn invalid(e: ChunkError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Handover {
    /// How `role`'s client gets the origin's stream, after the proxy told it `told`.
    pub fn for_role(role: Role, told: Told) -> Result<Self, ChunkError> {
        match role {
            Role::Play => Self::filtered(told),
            Role::Publish => Ok(Self::reframe(told)),
        }
    }

    /// The origin's stream through a [`ChunkFilter`] whose client read `told`.
    pub fn filtered(told: Told) -> Result<Self, ChunkError> {
        let mut filter = ChunkFilter::new(told.chunk_size, MAX_PLAYER_MESSAGE, DEFAULT_MAX_CHUNK_STREAMS);
        for (head, length) in &told.heads {
            filter.wrote(head, *length)?;
        }
        Ok(Handover { pass: Pass::Filter(Box::new(filter)), answered: told.answered })
    }

    /// The origin's messages re-chunked in the size `told` announced, its chunk size changes
    /// kept back.
    pub fn reframe(told: Told) -> Self {
        let mut encoder = ChunkEncoder::new();
        // Out of range only if the announced size is; the proxy's answers were written in it.
        let _ = encoder.set_chunk_size(told.chunk_size);
        let decoder = ChunkDecoder::with_limits(MAX_DOWNSTREAM_MESSAGE, DEFAULT_MAX_CHUNK_STREAMS);
        let pass = Pass::Reframe { decoder, encoder, out: Vec::new(), chunk_size: told.chunk_size };
        Handover { pass, answered: told.answered }
    }

    /// The chunk size the client reads its next message with (what a refusal is written in).
    pub fn client_chunk_size(&self) -> u32 {
        match &self.pass {
            Pass::Filter(filter) => filter.receiver_chunk_size(),
            Pass::Reframe { chunk_size, .. } => *chunk_size,
        }
    }

    /// Origin bytes held that are not ready to go out (parts of messages).
    pub fn held(&self) -> usize {
        match &self.pass {
            Pass::Filter(filter) => filter.held(),
            Pass::Reframe { .. } => 0,
        }
    }

    /// Whether the origin's bytes from here on may go to the client verbatim (a player's).
    pub fn in_step(&self) -> bool {
        match &self.pass {
            Pass::Filter(filter) => filter.in_step(),
            Pass::Reframe { .. } => false,
        }
    }

    /// Decodes `input`, the next bytes of the origin's stream, until `stop` says so of a
    /// message (told whether it was left out) or the input ends; returns how many bytes of
    /// `input` were decoded. What the decoded messages make ready goes out with
    /// [`Handover::flush`].
    pub fn take(&mut self, input: &[u8], mut stop: impl FnMut(&Message, bool) -> bool) -> Result<usize, ChunkError> {
        let Handover { pass, answered } = self;
        match pass {
            Pass::Filter(filter) => filter.feed(input, |msg| {
                let left_out = answers_ours(answered, msg);
                Decision { forward: !left_out, stop: stop(msg, left_out) }
            }),
            Pass::Reframe { decoder, encoder, out, .. } => {
                let mut pos = 0;
                while let Some(rest) = input.get(pos..).filter(|r| !r.is_empty()) {
                    let (used, msg) = decoder.decode(rest)?;
                    pos += used;
                    let Some(msg) = msg else { break };
                    let left_out = answers_ours(answered, &msg);
                    if !left_out && msg.type_id != SET_CHUNK_SIZE && msg.type_id != ABORT {
                        encoder.encode(&msg, out)?;
                    }
                    if stop(&msg, left_out) {
                        break;
                    }
                }
                Ok(pos)
            }
        }
    }

    /// Takes what [`Handover::take`] made ready to go out (whole messages).
    pub fn ready(&mut self) -> Vec<u8> {
        match &mut self.pass {
            Pass::Filter(filter) => filter.output(),
            Pass::Reframe { out, .. } => std::mem::take(out),
        }
    }

    /// Sends the client what [`Handover::take`] made ready; returns how many bytes went out.
    pub async fn flush(&mut self, client: &TcpStream) -> io::Result<u64> {
        let out = self.ready();
        if !out.is_empty() {
            send_all(client, &out).await?;
        }
        Ok(out.len() as u64)
    }

    /// A player's downstream after the confirmation: `rest` (the origin's bytes read and not
    /// decoded yet), then what the origin sends, through the filter until the client is in
    /// step with the origin. Returns the origin's bytes read past that point, to be relayed
    /// verbatim with all that follows; `None` once the origin closed (the client's write side
    /// is then shut down, as the relay does). `counter` grows with the bytes sent.
    pub async fn relay_until_in_step(
        &mut self,
        origin: &TcpStream,
        client: &TcpStream,
        rest: Vec<u8>,
        counter: &Cell<u64>,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut input = rest;
        let mut pos = 0;
        loop {
            counter.set(counter.get() + self.flush(client).await?);
            if self.in_step() {
                input.drain(..pos);
                return Ok(Some(input));
            }
            if pos == input.len() {
                // Everything read was taken: the next read goes straight into the same buffer.
                input.resize(16 * 1024, 0);
                let n = recv(origin, &mut input).await?;
                if n == 0 {
                    let _ = client.shutdown(std::net::Shutdown::Write).await;
                    return Ok(None);
                }
                input.truncate(n);
                pos = 0;
            }
            // One message at a time: the switch comes at the first boundary in step.
            pos += self.take(&input[pos..], |_, _| true).map_err(invalid)?;
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
            let used = self.take(&input, |_, _| false).map_err(invalid)?;
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

/// Whether `msg` is the origin's answer (`_result` or `_error`) to a transaction the proxy
/// answered already, one of `answered`; each is left out once.
fn answers_ours(answered: &mut Vec<f64>, msg: &Message) -> bool {
    if answered.is_empty() || (msg.type_id != COMMAND_AMF0 && msg.type_id != COMMAND_AMF3) {
        return false;
    }
    let Ok(cmd) = Command::from_message(msg) else { return false };
    if cmd.name != "_result" && cmd.name != "_error" {
        return false;
    }
    let Some(i) = answered.iter().position(|&t| t == cmd.transaction_id) else { return false };
    answered.swap_remove(i);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::rtmp::amf0::Amf0Value;
    use crate::codec::rtmp::chunk::Head;
    use crate::codec::rtmp::message;

    /// What the proxy told a client (as identify writes it), answering transactions 1 and 2.
    fn told() -> (Told, Vec<u8>) {
        let msgs = [
            message::window_ack_size(2_500_000),
            message::set_peer_bandwidth(2_500_000, message::BandwidthLimit::Dynamic),
            message::set_chunk_size(60_000),
            message::connect_result(1.0, 0.0),
            message::create_stream_result(2.0, 1),
        ];
        let mut bytes = Vec::new();
        let mut enc = ChunkEncoder::new();
        let mut told = Told { chunk_size: 60_000, answered: vec![1.0, 2.0], ..Told::default() };
        for m in &msgs {
            enc.encode(m, &mut bytes).unwrap();
            let head = Head { csid: m.csid, timestamp: m.timestamp, type_id: m.type_id, stream_id: m.stream_id };
            told.heads.push((head, m.payload.len() as u32));
        }
        (told, bytes)
    }

    /// An origin's stream as nginx-rtmp starts it after the replayed `connect`, `createStream`
    /// and `play`: WindowAckSize, SetPeerBandwidth, SetChunkSize(4096), the answers to
    /// transactions 1 and 2 on chunk stream 3, onStatus, a video message.
    fn origin_stream() -> (Vec<u8>, Vec<Message>) {
        let long = Amf0Value::string("x".repeat(200));
        let connect = Command::new("_result", 1.0, Amf0Value::Null, vec![long]).to_message(3, 0);
        let start = message::on_status(1, "status", "NetStream.Play.Start", "go");
        let video = Message { csid: 6, timestamp: 40, type_id: message::VIDEO, stream_id: 1, payload: vec![7; 3000] };
        let msgs = vec![
            message::window_ack_size(5_000_000),
            message::set_peer_bandwidth(5_000_000, message::BandwidthLimit::Dynamic),
            connect,
            message::set_chunk_size(4096),
            message::create_stream_result(2.0, 1),
            start,
            video,
        ];
        let mut bytes = Vec::new();
        let mut enc = ChunkEncoder::new();
        for m in &msgs {
            enc.encode(m, &mut bytes).unwrap();
        }
        (bytes, msgs)
    }

    /// What a client that read `told` decodes from `wire`.
    fn client_reads(told: &[u8], wire: &[u8]) -> Vec<Message> {
        let mut dec = ChunkDecoder::new();
        dec.decode_all(told).unwrap();
        dec.decode_all(wire).unwrap().into_iter().map(|(m, _)| m).collect()
    }

    fn is_result(m: &Message) -> bool {
        Command::from_message(m).is_ok_and(|c| c.name == "_result")
    }

    fn take_all(h: &mut Handover, wire: &[u8], piece: usize) -> (Vec<u8>, Vec<Message>) {
        let (mut sent, mut left_out) = (Vec::new(), Vec::new());
        for piece in wire.chunks(piece) {
            let used = h
                .take(piece, |m, dropped| {
                    if dropped {
                        left_out.push(m.clone());
                    }
                    false
                })
                .unwrap();
            assert_eq!(used, piece.len(), "take without a stop decodes all of its input");
            sent.extend(h.ready());
        }
        (sent, left_out)
    }

    #[test]
    fn a_player_reads_the_origin_stream_less_its_answers_to_the_proxys_transactions() {
        let (wire, msgs) = origin_stream();
        let (told, told_bytes) = told();
        let mut h = Handover::for_role(Role::Play, told).unwrap();
        let (sent, left_out) = take_all(&mut h, &wire, 100);
        let results: Vec<Message> = msgs.iter().filter(|m| is_result(m)).cloned().collect();
        assert_eq!(left_out, results);
        assert_eq!(h.held(), 0);
        assert_eq!(h.client_chunk_size(), 4096);
        let want: Vec<Message> = msgs.iter().filter(|m| !is_result(m)).cloned().collect();
        assert_eq!(client_reads(&told_bytes, &sent), want);
        // Chunk stream 3 ended on a 29-byte `_result` on both sides.
        assert!(h.in_step(), "the client's chunk streams are the origin's: the relay may splice");
    }

    #[test]
    fn a_player_is_in_step_once_the_origin_restarts_the_chunk_stream_whose_answer_was_left_out() {
        let (told, told_bytes) = told();
        let mut h = Handover::for_role(Role::Play, told).unwrap();
        let bw_done = Command::new("onBWDone", 0.0, Amf0Value::Null, vec![]).to_message(3, 0);
        let later = Command::new("onFCSubscribe", 0.0, Amf0Value::Null, vec![]).to_message(3, 0);
        // As SRS starts it: onBWDone between the answers, on chunk stream 3.
        let first = [message::set_chunk_size(60_000), message::connect_result(1.0, 0.0), bw_done.clone()];
        let second =
            [message::create_stream_result(2.0, 1), message::on_status(1, "status", "NetStream.Play.Start", "")];
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        first.iter().chain(&second).for_each(|m| enc.encode(m, &mut wire).unwrap());
        let (mut sent, _) = take_all(&mut h, &wire, 7);
        assert!(!h.in_step(), "the client's chunk stream 3 ended on onBWDone, the origin's on a _result");
        let mut more = Vec::new();
        enc.encode(&later, &mut more).unwrap();
        sent.extend(take_all(&mut h, &more, 1000).0);
        assert!(h.in_step());
        let got = client_reads(&told_bytes, &sent);
        let names: Vec<String> = got.iter().filter_map(|m| Command::from_message(m).ok()).map(|c| c.name).collect();
        assert_eq!(names, ["onBWDone", "onStatus", "onFCSubscribe"]);
    }

    #[test]
    fn each_answer_is_left_out_once_and_others_pass() {
        let (told, told_bytes) = told();
        let mut h = Handover::for_role(Role::Play, told).unwrap();
        let msgs = [message::call_result(1.0), message::call_result(1.0), message::call_result(5.0)];
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        msgs.iter().for_each(|m| enc.encode(m, &mut wire).unwrap());
        let (sent, left_out) = take_all(&mut h, &wire, 1000);
        assert_eq!(left_out.len(), 1);
        let txns: Vec<f64> =
            client_reads(&told_bytes, &sent).iter().map(|m| Command::from_message(m).unwrap().transaction_id).collect();
        assert_eq!(txns, [1.0, 5.0]);
    }

    #[test]
    fn a_publisher_reads_every_message_but_the_answers_and_chunk_size_changes_in_the_announced_size() {
        let (wire, msgs) = origin_stream();
        let (told, told_bytes) = told();
        let mut h = Handover::for_role(Role::Publish, told).unwrap();
        let (sent, left_out) = take_all(&mut h, &wire, 100);
        assert_eq!(left_out.len(), 2);
        let want: Vec<Message> = msgs.into_iter().filter(|m| m.type_id != SET_CHUNK_SIZE && !is_result(m)).collect();
        assert_eq!(client_reads(&told_bytes, &sent), want);
        assert_eq!(h.client_chunk_size(), 60_000, "the publisher's read chunk size never changes");
        // Every message fits one chunk of the announced size: one chunk header each.
        assert_eq!(sent.len(), want.iter().map(|m| 12 + m.payload.len()).sum::<usize>());
    }

    #[test]
    fn take_stops_after_the_picked_message() {
        let (wire, _) = origin_stream();
        for role in [Role::Play, Role::Publish] {
            let mut h = Handover::for_role(role, told().0).unwrap();
            let used = h.take(&wire, |m, _| m.type_id == message::COMMAND_AMF0 && !is_result(m)).unwrap();
            assert!(used < wire.len(), "{role:?}: stopped at the onStatus");
            let mut dec = ChunkDecoder::new();
            let rest = dec.decode_all(&wire).unwrap().into_iter().find(|(m, _)| !is_result(m) && m.csid == 5);
            assert_eq!(rest.map(|(_, end)| end), Some(used as u64), "{role:?}: right after it");
        }
    }

    #[test]
    fn a_publishers_origin_may_not_send_an_oversized_message() {
        let mut h = Handover::for_role(Role::Publish, told().0).unwrap();
        let big = Message { csid: 6, timestamp: 0, type_id: 9, stream_id: 1, payload: vec![0; 2 * 1024 * 1024] };
        let mut wire = Vec::new();
        ChunkEncoder::new().encode(&big, &mut wire).unwrap();
        assert!(matches!(h.take(&wire, |_, _| false), Err(ChunkError::MessageTooLarge { .. })));
    }
}
