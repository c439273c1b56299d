//! RTMP handshake state machines for both sides (sans-io).
//!
//! [`ServerHandshake`] answers C0+C1 with S0+S1+S2, using the "complex"
//! (digest) handshake when C1 carries a valid Flash Player digest and the
//! plain echo handshake otherwise. [`ClientHandshake`] performs the simple
//! handshake towards an origin server. Both report exactly how many input
//! bytes they consumed; bytes after the last handshake packet belong to the
//! chunk stream and are left to the caller.
#![deny(clippy::indexing_slicing)]

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// Random bytes the caller must supply to either side.
pub const RANDOM_LEN: usize = 1528;
/// The only protocol version accepted in C0/S0.
pub const RTMP_VERSION: u8 = 3;
/// Version byte requesting RTMPE (encrypted), which is rejected.
pub const RTMPE_VERSION: u8 = 6;

const C0C1_LEN: usize = 1 + HANDSHAKE_SIZE;
const DIGEST_LEN: usize = 32;
/// Bytes of S2 before its trailing digest.
const S2_BODY_LEN: usize = HANDSHAKE_SIZE - DIGEST_LEN;
/// Version field advertised in a complex S1 (any value with a first byte >= 3).
const SERVER_VERSION: [u8; 4] = [0x0D, 0x0E, 0x0A, 0x0D];
const FP_KEY_TEXT: &[u8] = b"Genuine Adobe Flash Player 001";
const FMS_KEY_TEXT: &[u8] = b"Genuine Adobe Flash Media Server 001";
const KEY_TAIL: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D,
    0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];

/// Errors from either handshake side.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peer asked for a protocol version other than 3.
    #[error("unsupported RTMP version {version} (only 3 is supported)")]
    UnsupportedVersion {
        /// The received version byte.
        version: u8,
    },
    /// The peer asked for RTMPE (version 6).
    #[error("encrypted RTMPE handshake (version {version}) is not supported")]
    EncryptedNotSupported {
        /// The received version byte.
        version: u8,
    },
    /// The caller supplied fewer random bytes than needed.
    #[error("{got} random bytes supplied, at least {need} needed")]
    NotEnoughRandom {
        /// Bytes required.
        need: usize,
        /// Bytes supplied.
        got: usize,
    },
}

/// Result of feeding bytes to a handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeProgress {
    /// How many bytes of the input were consumed; the rest is not handshake data.
    pub consumed: usize,
    /// Bytes to send to the peer now (may be empty).
    pub output: Vec<u8>,
    /// Whether the handshake is complete.
    pub done: bool,
}

/// Where the digest sits in a complex handshake packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestSchema {
    /// Key block first, digest block second (digest offset read at byte 772).
    Schema0,
    /// Digest block first, key block second (digest offset read at byte 8).
    Schema1,
}

impl DigestSchema {
    /// Offset of the 32-byte digest inside a 1536-byte packet. Always
    /// leaves room for the digest (at most 1503 for schema 0, 739 for 1).
    pub fn digest_offset(self, packet: &[u8]) -> usize {
        let base = match self {
            DigestSchema::Schema0 => 772,
            DigestSchema::Schema1 => 8,
        };
        let field = packet.get(base..base + 4).unwrap_or_default();
        let sum: usize = field.iter().map(|&b| usize::from(b)).sum();
        sum % 728 + base + 4
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; DIGEST_LEN];
    };
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().into()
}

/// HMAC of `packet` without the 32 bytes at `offset`.
fn packet_digest(key: &[u8], packet: &[u8], offset: usize) -> [u8; DIGEST_LEN] {
    let before = packet.get(..offset).unwrap_or_default();
    let after = packet.get(offset + DIGEST_LEN..).unwrap_or_default();
    hmac_sha256(key, &[before, after])
}

fn full_key(text: &[u8]) -> Vec<u8> {
    [text, &KEY_TAIL[..]].concat()
}

/// Finds a valid Flash Player digest in C1; returns its schema and value.
pub fn find_client_digest(c1: &[u8]) -> Option<(DigestSchema, [u8; DIGEST_LEN])> {
    if c1.len() != HANDSHAKE_SIZE {
        return None;
    }
    [DigestSchema::Schema0, DigestSchema::Schema1].into_iter().find_map(|schema| {
        let offset = schema.digest_offset(c1);
        let expected = packet_digest(FP_KEY_TEXT, c1, offset);
        let found = c1.get(offset..offset + DIGEST_LEN)?;
        (found == expected).then_some((schema, expected))
    })
}

fn check_random(random: &[u8]) -> Result<(), HandshakeError> {
    if random.len() < RANDOM_LEN {
        return Err(HandshakeError::NotEnoughRandom { need: RANDOM_LEN, got: random.len() });
    }
    Ok(())
}

fn check_version(version: Option<&u8>) -> Result<(), HandshakeError> {
    match version.copied() {
        None | Some(RTMP_VERSION) => Ok(()),
        Some(RTMPE_VERSION) => Err(HandshakeError::EncryptedNotSupported { version: RTMPE_VERSION }),
        Some(version) => Err(HandshakeError::UnsupportedVersion { version }),
    }
}

/// Moves up to `target - buf.len()` bytes from `input` into `buf`.
fn fill(buf: &mut Vec<u8>, target: usize, input: &[u8]) -> usize {
    let n = target.saturating_sub(buf.len()).min(input.len());
    buf.extend_from_slice(input.get(..n).unwrap_or_default());
    n
}

/// A 1536-byte packet: 4-byte time, 4-byte version/zero field, random tail.
fn plain_packet(epoch: u32, version: [u8; 4], random: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HANDSHAKE_SIZE);
    packet.extend_from_slice(&epoch.to_be_bytes());
    packet.extend_from_slice(&version);
    packet.extend_from_slice(random.get(..RANDOM_LEN).unwrap_or_default());
    packet.resize(HANDSHAKE_SIZE, 0);
    packet
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    First,
    Second,
    Done,
}

/// Shared two-packet reader: a 1537-byte version+packet, then a 1536-byte packet.
#[derive(Debug)]
struct PacketReader {
    stage: Stage,
    buf: Vec<u8>,
}

impl PacketReader {
    fn new() -> Self {
        PacketReader { stage: Stage::First, buf: Vec::new() }
    }

    /// Buffers input; calls `respond` with the first packet (version byte
    /// included, already checked) when it completes.
    fn feed(
        &mut self,
        input: &[u8],
        respond: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Result<HandshakeProgress, HandshakeError> {
        let mut progress = HandshakeProgress::default();
        if self.stage == Stage::First {
            progress.consumed = fill(&mut self.buf, C0C1_LEN, input);
            check_version(self.buf.first())?;
            if self.buf.len() < C0C1_LEN {
                return Ok(progress);
            }
            progress.output = respond(&self.buf);
            self.buf.clear();
            self.stage = Stage::Second;
        }
        if self.stage == Stage::Second {
            let rest = input.get(progress.consumed..).unwrap_or_default();
            progress.consumed += fill(&mut self.buf, HANDSHAKE_SIZE, rest);
            if self.buf.len() == HANDSHAKE_SIZE {
                self.buf = Vec::new();
                self.stage = Stage::Done;
            }
        }
        progress.done = self.stage == Stage::Done;
        Ok(progress)
    }
}

/// Server side of the handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    epoch: u32,
    random: Vec<u8>,
    reader: PacketReader,
    schema: Option<DigestSchema>,
}

impl ServerHandshake {
    /// `epoch` becomes S1's time field; `random` (at least 1528 bytes) fills S1/S2.
    pub fn new(epoch: u32, random: &[u8]) -> Result<Self, HandshakeError> {
        check_random(random)?;
        let random = random.get(..RANDOM_LEN).unwrap_or_default().to_vec();
        Ok(ServerHandshake { epoch, random, reader: PacketReader::new(), schema: None })
    }

    /// Whether C2 has been received.
    pub fn is_done(&self) -> bool {
        self.reader.stage == Stage::Done
    }

    /// Digest schema of the client's C1, once known (`None`: simple handshake).
    pub fn client_schema(&self) -> Option<DigestSchema> {
        self.schema
    }

    /// Feeds received bytes. Returns S0+S1+S2 in `output` once C0+C1 are
    /// complete, and `done` once C2 is; never consumes bytes past C2.
    /// A C0 version other than 3 is an error as soon as its byte arrives.
    pub fn feed(&mut self, input: &[u8]) -> Result<HandshakeProgress, HandshakeError> {
        let (epoch, random, schema) = (self.epoch, &self.random, &mut self.schema);
        self.reader.feed(input, |c0c1| {
            let c1 = c0c1.get(1..).unwrap_or_default();
            let (s1s2, found) = server_response(epoch, random, c1);
            *schema = found;
            [&[RTMP_VERSION][..], &s1s2].concat()
        })
    }
}

/// S1+S2 for `c1`: complex when C1 has a valid digest, else simple.
fn server_response(epoch: u32, random: &[u8], c1: &[u8]) -> (Vec<u8>, Option<DigestSchema>) {
    match find_client_digest(c1) {
        Some((schema, digest)) => {
            let s1 = complex_s1(epoch, random, schema);
            (s1.into_iter().chain(complex_s2(random, &digest)).collect(), Some(schema))
        }
        None => ([plain_packet(epoch, [0; 4], random).as_slice(), c1].concat(), None),
    }
}

fn complex_s1(epoch: u32, random: &[u8], schema: DigestSchema) -> Vec<u8> {
    let mut s1 = plain_packet(epoch, SERVER_VERSION, random);
    let offset = schema.digest_offset(&s1);
    let digest = packet_digest(FMS_KEY_TEXT, &s1, offset);
    if let Some(slot) = s1.get_mut(offset..offset + DIGEST_LEN) {
        slot.copy_from_slice(&digest);
    }
    s1
}

/// S2: a body (the random bytes reversed), then HMAC(body) keyed by
/// HMAC(FMS full key, C1 digest).
fn complex_s2(random: &[u8], client_digest: &[u8]) -> Vec<u8> {
    let mut s2: Vec<u8> = random.iter().rev().copied().take(S2_BODY_LEN).collect();
    s2.resize(S2_BODY_LEN, 0);
    let key = hmac_sha256(&full_key(FMS_KEY_TEXT), &[client_digest]);
    let digest = hmac_sha256(&key, &[&s2]);
    s2.extend_from_slice(&digest);
    s2
}

/// Client side of the (simple) handshake, for dialing an origin server.
#[derive(Debug)]
pub struct ClientHandshake {
    c0c1: Vec<u8>,
    reader: PacketReader,
}

impl ClientHandshake {
    /// `epoch` becomes C1's time field; `random` (at least 1528 bytes) fills C1.
    pub fn new(epoch: u32, random: &[u8]) -> Result<Self, HandshakeError> {
        check_random(random)?;
        let c0c1 = [&[RTMP_VERSION][..], &plain_packet(epoch, [0; 4], random)].concat();
        Ok(ClientHandshake { c0c1, reader: PacketReader::new() })
    }

    /// C0+C1, to be sent before feeding any server bytes.
    pub fn c0c1(&self) -> &[u8] {
        &self.c0c1
    }

    /// Whether S2 has been received.
    pub fn is_done(&self) -> bool {
        self.reader.stage == Stage::Done
    }

    /// Feeds received bytes. Returns C2 (the echo of S1) in `output` once
    /// S0+S1 are complete, and `done` once S2 is; never consumes past S2.
    pub fn feed(&mut self, input: &[u8]) -> Result<HandshakeProgress, HandshakeError> {
        self.reader.feed(input, |s0s1| s0s1.get(1..).unwrap_or_default().to_vec())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const FP_KEY: &[u8] = b"Genuine Adobe Flash Player 001";
    const FMS_KEY: &[u8] = b"Genuine Adobe Flash Media Server 001";
    const TAIL_HEX: &str = "f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae";

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        parts.iter().for_each(|p| m.update(p));
        m.finalize().into_bytes().to_vec()
    }

    /// Digest offset computed independently: offset field at 8 or 772.
    fn offset_at(packet: &[u8], field: usize) -> usize {
        let sum: u32 = packet[field..field + 4].iter().map(|&b| u32::from(b)).sum();
        (sum % 728) as usize + field + 4
    }

    fn signed_c1(field: usize) -> Vec<u8> {
        let mut c1 = bytes(HANDSHAKE_SIZE, 77 + field as u64);
        c1[4..8].copy_from_slice(&[9, 0, 124, 2]);
        let off = offset_at(&c1, field);
        let digest = mac(FP_KEY, &[&c1[..off], &c1[off + 32..]]);
        c1[off..off + 32].copy_from_slice(&digest);
        c1
    }

    fn c0c1(c1: &[u8]) -> Vec<u8> {
        [&[3u8][..], c1].concat()
    }

    #[test]
    fn simple_handshake_echoes_c1_in_fragments() {
        let random = bytes(RANDOM_LEN, 5);
        let mut server = ServerHandshake::new(0x0102_0304, &random).unwrap();
        let c1 = [&[0, 0, 0, 9, 0, 0, 0, 0][..], &bytes(RANDOM_LEN, 6)].concat();
        let input = c0c1(&c1);
        let mut output = Vec::new();
        for piece in input.chunks(100) {
            let p = server.feed(piece).unwrap();
            assert_eq!((p.consumed, p.done), (piece.len(), false));
            output.extend(p.output);
        }
        assert_eq!(output.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(output[0], 3);
        assert_eq!(&output[1..9], &[1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(&output[9..1537], &random[..]);
        assert_eq!(&output[1537..], &c1[..]);
        assert_eq!(server.client_schema(), None);
        let tail = [&output[1..1537], &b"chunkdata"[..]].concat();
        let p = server.feed(&tail).unwrap();
        assert_eq!((p.consumed, p.done, p.output.is_empty()), (HANDSHAKE_SIZE, true, true));
        assert_eq!(&tail[p.consumed..], b"chunkdata");
        assert_eq!(server.feed(b"more").unwrap().consumed, 0);
    }

    fn check_complex_answer(field: usize, schema: DigestSchema) {
        let c1 = signed_c1(field);
        let client_digest = c1[offset_at(&c1, field)..][..32].to_vec();
        let mut server = ServerHandshake::new(7, &bytes(RANDOM_LEN, 9)).unwrap();
        let p = server.feed(&c0c1(&c1)).unwrap();
        assert_eq!(server.client_schema(), Some(schema));
        let (s1, s2) = (&p.output[1..1537], &p.output[1537..]);
        assert_ne!(s1[4], 0, "complex S1 must carry a non-zero version");
        let off = offset_at(s1, field);
        assert_eq!(&s1[off..off + 32], &mac(FMS_KEY, &[&s1[..off], &s1[off + 32..]])[..]);
        let tail: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&TAIL_HEX[2 * i..2 * i + 2], 16).unwrap()).collect();
        let key = mac(&[FMS_KEY, &tail].concat(), &[&client_digest]);
        assert_eq!(&s2[1504..], &mac(&key, &[&s2[..1504]])[..]);
    }

    #[test]
    fn complex_schema0_detected_and_answered() {
        check_complex_answer(772, DigestSchema::Schema0);
    }

    #[test]
    fn complex_schema1_detected_and_answered() {
        check_complex_answer(8, DigestSchema::Schema1);
    }

    #[test]
    fn corrupted_digest_falls_back_to_simple() {
        let mut c1 = signed_c1(8);
        let off = offset_at(&c1, 8);
        c1[off] ^= 1;
        let mut server = ServerHandshake::new(0, &bytes(RANDOM_LEN, 1)).unwrap();
        let p = server.feed(&c0c1(&c1)).unwrap();
        assert_eq!(server.client_schema(), None);
        assert_eq!(&p.output[1537..], &c1[..]);
    }

    #[test]
    fn bad_versions_rejected() {
        let random = bytes(RANDOM_LEN, 2);
        let err = ServerHandshake::new(0, &random).unwrap().feed(&[6]).unwrap_err();
        assert_eq!(err, HandshakeError::EncryptedNotSupported { version: 6 });
        for v in [0u8, 1, 4, 0x0F, 0xFF] {
            let err = ServerHandshake::new(0, &random).unwrap().feed(&[v, 0, 0]).unwrap_err();
            assert_eq!(err, HandshakeError::UnsupportedVersion { version: v });
        }
        let err = ClientHandshake::new(0, &random).unwrap().feed(&[6]).unwrap_err();
        assert_eq!(err, HandshakeError::EncryptedNotSupported { version: 6 });
        let short = ServerHandshake::new(0, &random[..100]).unwrap_err();
        assert_eq!(short, HandshakeError::NotEnoughRandom { need: RANDOM_LEN, got: 100 });
        assert!(ClientHandshake::new(0, &[]).is_err());
    }

    fn run_pair(step: usize) {
        let mut client = ClientHandshake::new(42, &bytes(RANDOM_LEN, 3)).unwrap();
        let mut server = ServerHandshake::new(99, &bytes(RANDOM_LEN, 4)).unwrap();
        let c0c1 = client.c0c1().to_vec();
        assert_eq!((c0c1.len(), c0c1[0], &c0c1[1..9]), (1537, 3, &[0, 0, 0, 42, 0, 0, 0, 0][..]));
        let mut to_client = Vec::new();
        for piece in c0c1.chunks(step) {
            to_client.extend(server.feed(piece).unwrap().output);
        }
        to_client.extend_from_slice(b"\x02server-chunks");
        let (mut to_server, mut pos) = (Vec::new(), 0usize);
        while !client.is_done() {
            let end = pos.saturating_add(step).min(to_client.len());
            let p = client.feed(&to_client[pos..end]).unwrap();
            to_server.extend(p.output);
            pos += p.consumed;
        }
        assert_eq!(&to_client[pos..], b"\x02server-chunks");
        assert_eq!(&to_server[..], &to_client[1..1537], "C2 echoes S1");
        to_server.extend_from_slice(b"\x03client-chunks");
        let p = server.feed(&to_server).unwrap();
        assert!(p.done && server.is_done());
        assert_eq!(&to_server[p.consumed..], b"\x03client-chunks");
    }

    #[test]
    fn client_and_server_complete_in_memory() {
        run_pair(usize::MAX);
        run_pair(1);
        run_pair(1000);
    }
}
