use std::collections::HashMap;

use super::*;
use crate::codec::rtmp::header::EXTENDED_TIMESTAMP;
use crate::codec::rtmp::{ChunkDecoder, ChunkEncoder};

/// xorshift64*: deterministic test input without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The sender's side of one chunk stream, as an encoder that compresses headers keeps it.
#[derive(Clone, Copy, Default)]
struct Last {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
}

/// A sender that compresses headers as nginx-rtmp and librtmp do (fmt 1 for a new length or
/// type, fmt 2 for a new delta, fmt 3 for the same again), so that leaving a message out
/// breaks the next one on its chunk stream unless the filter rewrites it.
struct Compressor {
    chunk_size: usize,
    last: HashMap<u32, Last>,
}

impl Compressor {
    fn new() -> Self {
        Compressor { chunk_size: DEFAULT_CHUNK_SIZE as usize, last: HashMap::new() }
    }

    /// The first header of `m`, and the chunk stream state it leaves.
    fn first_header(&self, m: &Message) -> (ChunkHeader, Last) {
        let length = m.payload.len() as u32;
        let full = |m: &Message| {
            let h = ChunkHeader::full(m.csid, m.timestamp, length, m.type_id, m.stream_id);
            let last = Last {
                timestamp: m.timestamp,
                delta: m.timestamp,
                length,
                type_id: m.type_id,
                stream_id: m.stream_id,
                extended: h.extended,
            };
            (h, last)
        };
        let Some(last) = self.last.get(&m.csid).copied() else { return full(m) };
        if last.stream_id != m.stream_id || m.timestamp < last.timestamp {
            return full(m);
        }
        let delta = m.timestamp - last.timestamp;
        let extended = delta >= EXTENDED_TIMESTAMP;
        let h = |fmt| ChunkHeader {
            fmt,
            csid: m.csid,
            ts_field: delta,
            extended,
            length,
            type_id: m.type_id,
            stream_id: 0,
        };
        let next = Last { timestamp: m.timestamp, delta, length, type_id: m.type_id, stream_id: m.stream_id, extended };
        if last.length != length || last.type_id != m.type_id {
            (h(1), next)
        } else if last.delta != delta || extended || last.extended {
            (h(2), next)
        } else {
            (ChunkHeader { extended: false, ts_field: 0, ..h(3) }, next)
        }
    }

    /// `m`'s chunks, each a header and its payload piece.
    fn chunks(&mut self, m: &Message) -> Vec<Vec<u8>> {
        let (first, last) = self.first_header(m);
        self.last.insert(m.csid, last);
        let cont = ChunkHeader { fmt: 3, extended: last.extended, ts_field: last.delta, ..first };
        let mut out = Vec::new();
        let pieces: Vec<&[u8]> =
            if m.payload.is_empty() { vec![&[][..]] } else { m.payload.chunks(self.chunk_size).collect() };
        for (i, piece) in pieces.into_iter().enumerate() {
            let mut c = Vec::new();
            if i == 0 { first } else { cont }.write(&mut c);
            c.extend_from_slice(piece);
            out.push(c);
        }
        out
    }

    /// The wire bytes of `msgs`, in order except that a message right after one of several
    /// chunks on another chunk stream may go inside it (after its first chunk), as senders
    /// interleave chunk streams; `rng` picks where. The outer message's later chunks are cut
    /// in the chunk size in force after the inner one (which may be a SetChunkSize).
    fn encode(&mut self, msgs: &[Message], rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < msgs.len() {
            let m = &msgs[i];
            let size_at_start = self.chunk_size;
            let chunks = self.chunks(m);
            out.extend(&chunks[0]);
            let inner = msgs.get(i + 1).filter(|next| chunks.len() > 1 && next.csid != m.csid && rng.chance(30));
            if let Some(next) = inner {
                for c in self.chunks(next) {
                    out.extend(c);
                }
                self.apply(next);
                let sent = m.payload.len().min(size_at_start);
                let cont = self.cont_header(m);
                for piece in m.payload[sent..].chunks(self.chunk_size) {
                    cont.write(&mut out);
                    out.extend_from_slice(piece);
                }
                i += 1;
            } else {
                chunks[1..].iter().for_each(|c| out.extend(c));
            }
            self.apply(m);
            i += 1;
        }
        out
    }

    fn cont_header(&self, m: &Message) -> ChunkHeader {
        let last = self.last[&m.csid];
        ChunkHeader {
            fmt: 3,
            csid: m.csid,
            ts_field: last.delta,
            extended: last.extended,
            length: 0,
            type_id: 0,
            stream_id: 0,
        }
    }

    /// A SetChunkSize takes effect for the chunks after it.
    fn apply(&mut self, m: &Message) {
        if m.type_id == message::SET_CHUNK_SIZE {
            self.chunk_size = message::parse_set_chunk_size(&m.payload).unwrap() as usize;
        }
    }
}

/// First payload byte of a command the tests' judge leaves out.
const DROP: u8 = 0xDD;

fn command(csid: u32, timestamp: u32, stream_id: u32, len: usize, drop: bool) -> Message {
    let mut payload: Vec<u8> = (0..len).map(|i| (i * 13 + csid as usize) as u8).collect();
    if let Some(first) = payload.first_mut() {
        *first = if drop { DROP } else { 2 };
    }
    Message { csid, timestamp, type_id: message::COMMAND_AMF0, stream_id, payload }
}

fn media(csid: u32, type_id: u8, timestamp: u32, len: usize) -> Message {
    let payload = (0..len).map(|i| (i * 7 + timestamp as usize) as u8).collect();
    Message { csid, timestamp, type_id, stream_id: 1, payload }
}

fn left_out(m: &Message) -> bool {
    m.type_id == message::COMMAND_AMF0 && m.payload.first() == Some(&DROP)
}

fn head(m: &Message) -> Head {
    Head { csid: m.csid, timestamp: m.timestamp, type_id: m.type_id, stream_id: m.stream_id }
}

/// What the proxy wrote to the client before the origin's stream, as identify writes it.
fn proxy_messages() -> Vec<Message> {
    vec![
        message::window_ack_size(2_500_000),
        message::set_peer_bandwidth(2_500_000, message::BandwidthLimit::Dynamic),
        message::set_chunk_size(60_000),
        message::connect_result(1.0, 0.0),
        message::create_stream_result(2.0, 1),
    ]
}

/// A filter whose receiver read [`proxy_messages`].
fn seeded_filter() -> ChunkFilter {
    let mut f = ChunkFilter::new(60_000, 16 * 1024 * 1024, 64);
    for m in proxy_messages() {
        f.wrote(&head(&m), m.payload.len() as u32).unwrap();
    }
    f
}

/// The client: it read [`proxy_messages`], then decodes `wire`.
fn client(wire: &[u8]) -> (Vec<Message>, u32) {
    try_client(wire).unwrap_or_else(|e| panic!("the client cannot read the output: {e}"))
}

fn try_client(wire: &[u8]) -> Result<(Vec<Message>, u32), ChunkError> {
    let mut told = Vec::new();
    let mut enc = ChunkEncoder::new();
    for m in proxy_messages() {
        enc.encode(&m, &mut told).unwrap();
    }
    let mut dec = ChunkDecoder::new();
    assert_eq!(dec.decode_all(&told).unwrap().len(), proxy_messages().len());
    let got = dec.decode_all(wire)?;
    Ok((got.into_iter().map(|(m, _)| m).collect(), dec.chunk_size()))
}

/// A sender's stream as origins write one: commands on chunk streams 3 and 5 (some to be
/// left out, of lengths that repeat so that fmt 2/3 headers lean on them), audio and video
/// with growing timestamps (now and then past the 24-bit field), chunk size changes to random
/// sizes from 1 byte up.
fn random_stream(rng: &mut Rng) -> Vec<Message> {
    let mut msgs = Vec::new();
    let (mut audio, mut video) = (0u32, 0u32);
    let lengths = [29usize, 29, 40, 200, 1];
    for _ in 0..10 + rng.below(70) {
        let m = match rng.below(10) {
            0..=3 => {
                let csid = if rng.chance(70) { 3 } else { 5 };
                let len = lengths[rng.below(lengths.len() as u64) as usize];
                let ts = if rng.chance(80) { 0 } else { rng.below(1000) as u32 };
                command(csid, ts, u32::from(csid == 5), len, rng.chance(40))
            }
            4..=5 => {
                audio += if rng.chance(90) { 23 } else { rng.below(0x0100_0000) as u32 };
                media(6, message::AUDIO, audio, if rng.chance(70) { 200 } else { rng.below(600) as usize })
            }
            6..=8 => {
                video += if rng.chance(90) { 40 } else { rng.below(0x0100_0000) as u32 };
                media(7, message::VIDEO, video, rng.below(9000) as usize)
            }
            _ => {
                let sizes = [1u32, 7, 128, 1000, 4096, 60_000];
                let size = if rng.chance(70) { sizes[rng.below(6) as usize] } else { 1 + rng.below(70_000) as u32 };
                message::set_chunk_size(size)
            }
        };
        msgs.push(m);
    }
    msgs
}

/// The heart of it: whatever the sender's chunk sizes, header compression and interleaving,
/// and whichever messages are left out, the client reads every other message exactly as the
/// sender wrote it; and from any point where the filter says it is in step, the sender's bytes
/// may follow verbatim.
#[test]
fn the_receiver_reads_every_message_passed_on_as_sent_whatever_was_left_out() {
    let (mut switched, mut rewritten) = (0, 0);
    for seed in 1..=400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let msgs = random_stream(&mut rng);
        let wire = Compressor::new().encode(&msgs, &mut rng);
        let sent = ChunkDecoder::new().decode_all(&wire).unwrap();
        assert_eq!(sent.len(), msgs.len(), "seed {seed}: the test sender's stream reads back whole");
        let mut f = seeded_filter();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut verbatim_from = None;
        while pos < wire.len() {
            let end = (pos + 1 + rng.below(300) as usize).min(wire.len());
            let used = f.feed(&wire[pos..end], |m| Decision { forward: !left_out(m), stop: true }).unwrap();
            pos += used;
            out.extend(f.output());
            assert!(f.held() <= 4 * wire.len(), "seed {seed}: held {} bytes", f.held());
            if f.in_step() && rng.chance(20) {
                verbatim_from = Some(pos);
                break;
            }
        }
        let chunk_size = f.receiver_chunk_size();
        if let Some(from) = verbatim_from {
            switched += 1;
            out.extend_from_slice(&wire[from..]);
        }
        // Past the switch everything reaches the client, as the sender wrote it.
        let filtered = |end: u64| verbatim_from.is_none_or(|from| end <= from as u64);
        let want: Vec<Message> = sent
            .iter()
            .filter(|(m, end)| !(filtered(*end) && left_out(m)) && m.type_id != message::SET_CHUNK_SIZE)
            .map(|(m, _)| m.clone())
            .collect();
        let (got, client_size) = client(&out);
        let got: Vec<Message> = got.into_iter().filter(|m| m.type_id != message::SET_CHUNK_SIZE).collect();
        assert_eq!(got.len(), want.len(), "seed {seed}: messages read");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "seed {seed}: message {i}");
        }
        if verbatim_from.is_none() {
            assert_eq!(client_size, chunk_size, "seed {seed}: the filter knows the client's chunk size");
        }
        // Not the sender's bytes less the left-out ones: something was rewritten.
        if out.len() != wire.len() && sent.iter().any(|(m, _)| left_out(m)) {
            rewritten += 1;
        }
    }
    assert!(switched > 40, "the switch to verbatim was exercised ({switched} runs)");
    assert!(rewritten > 100, "rewriting was exercised ({rewritten} runs)");
}

#[test]
fn a_message_leaning_on_a_left_out_one_goes_out_with_a_full_header() {
    // The second command's fmt 3 header repeats the first's length, type and delta.
    let msgs = [command(3, 0, 0, 40, true), command(3, 0, 0, 40, false)];
    let mut c = Compressor::new();
    let first: Vec<u8> = c.chunks(&msgs[0]).concat();
    let second: Vec<u8> = c.chunks(&msgs[1]).concat();
    assert_eq!(second[0] >> 6, 3, "compressed as origins compress it");
    // Leaving out the first message's bytes alone misleads the client: its chunk stream 3
    // holds the proxy's 29-byte `_result`.
    let naive = try_client(&second).map(|(got, _)| got);
    assert!(naive.as_ref().map_or(true, |got| got.first() != Some(&msgs[1])), "{naive:?}");

    let mut f = seeded_filter();
    let wire = [first, second].concat();
    assert_eq!(f.feed(&wire, |m| Decision { forward: !left_out(m), stop: false }).unwrap(), wire.len());
    let out = f.output();
    assert_eq!(out[0], 3, "a fmt 0 header on chunk stream 3");
    assert_eq!(client(&out).0, vec![msgs[1].clone()]);
}

#[test]
fn in_step_once_the_sender_starts_over_on_a_chunk_stream_it_left_out() {
    let mut f = seeded_filter();
    let mut c = Compressor::new();
    let announce = c.chunks(&message::set_chunk_size(60_000)).concat();
    c.apply(&message::set_chunk_size(60_000));
    let keep = |_: &Message| Decision { forward: true, stop: false };
    f.feed(&announce, keep).unwrap();
    assert!(f.in_step(), "the same chunk size, nothing left out");
    let dropped = c.chunks(&command(3, 0, 0, 50, true)).concat();
    f.feed(&dropped, |m| Decision { forward: !left_out(m), stop: false }).unwrap();
    assert!(!f.in_step(), "chunk stream 3 of the client is not the sender's");
    let half = c.chunks(&command(3, 0, 0, 51, false)).concat();
    f.feed(&half[..5], keep).unwrap();
    assert!(!f.in_step(), "inside a header");
    f.feed(&half[5..], keep).unwrap();
    assert!(f.in_step(), "fmt 1 with the same stream id and timestamp: rewritten, the client is in step");
    assert_eq!(client(&f.output()).0.len(), 2);
}

#[test]
fn an_abort_drops_what_was_held_of_its_message() {
    let mut f = seeded_filter();
    let mut c = Compressor::new();
    let video = media(7, message::VIDEO, 40, 300);
    let chunks = c.chunks(&video);
    let mut wire = chunks[0].clone();
    let mut abort = message::set_chunk_size(0);
    abort.type_id = message::ABORT;
    abort.payload = 7u32.to_be_bytes().to_vec();
    wire.extend(c.chunks(&abort).concat());
    let again = media(7, message::VIDEO, 80, 10);
    wire.extend(c.chunks(&again).concat());
    f.feed(&wire, |_| Decision { forward: true, stop: false }).unwrap();
    assert_eq!(f.held(), 0);
    assert_eq!(client(&f.output()).0, vec![again]);
}

#[test]
fn a_message_over_the_limit_is_an_error() {
    let mut f = ChunkFilter::new(60_000, 1000, 64);
    let wire = Compressor::new().chunks(&media(6, message::VIDEO, 0, 1001)).concat();
    let e = f.feed(&wire, |_| Decision { forward: true, stop: false }).unwrap_err();
    assert!(matches!(e, ChunkError::MessageTooLarge { length: 1001, limit: 1000, .. }), "{e}");
}
