//! A small blocking RTMP client for the proxy tests, built on the crate's own sans-io codec
//! (`streamgate::codec::rtmp`): simple or digest ("complex") handshake like Flash/OBS/ffmpeg,
//! `connect`/`releaseStream`/`FCPublish`/`createStream`/`publish` or `play`, FLV tags sent as
//! RTMP messages paced in real time, and raw access to the socket for misbehaving clients.
//! Every read has a deadline and every write a timeout, so a test using it always ends.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use streamgate::codec::rtmp::amf0::{self, Amf0Value};
use streamgate::codec::rtmp::handshake::DigestSchema;
use streamgate::codec::rtmp::message::{self, UserControl};
use streamgate::codec::rtmp::{ChunkDecoder, ChunkEncoder, ClientHandshake, Command, Message};

use super::peers::run_with_timeout;

/// Chunk streams this client uses (as ffmpeg does: commands on 3, NetStream calls on 8).
pub const CONTROL_CSID: u32 = 2;
pub const COMMAND_CSID: u32 = 3;
pub const AUDIO_CSID: u32 = 4;
pub const DATA_CSID: u32 = 5;
pub const VIDEO_CSID: u32 = 6;
pub const STREAM_CSID: u32 = 8;

/// How long one write may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Deterministic pseudo-random bytes (no rand crate in the dev-dependencies).

/// xorshift64 bytes from `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Digest handshake, written from the Flash/librtmp/ffmpeg description, not from the proxy's code.

pub const FP_KEY: &[u8] = b"Genuine Adobe Flash Player 001";
pub const FMS_KEY: &[u8] = b"Genuine Adobe Flash Media Server 001";
pub const KEY_TAIL: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D,
    0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];
const PACKET: usize = 1536;

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac accepts any key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Offset of the 32-byte digest in a 1536-byte packet: the sum of the four bytes at 772
/// (schema 0) or 8 (schema 1), modulo 728, past those four bytes.
pub fn digest_pos(packet: &[u8], schema: DigestSchema) -> usize {
    let base = match schema {
        DigestSchema::Schema0 => 772,
        DigestSchema::Schema1 => 8,
    };
    let sum: usize = packet[base..base + 4].iter().map(|&b| b as usize).sum();
    sum % 728 + base + 4
}

/// HMAC-SHA256 of `packet` without its 32 digest bytes at `pos`.
fn packet_digest(key: &[u8], packet: &[u8], pos: usize) -> [u8; 32] {
    hmac_sha256(key, &[&packet[..pos], &packet[pos + 32..]])
}

/// A C1 as Flash Player 9.0.124.2 sends it: time 0, version 9.0.124.2, random, and the
/// HMAC (Flash Player key) of the rest at the schema's digest position. Returns C1 and its
/// digest.
pub fn digest_c1(schema: DigestSchema, seed: u64) -> (Vec<u8>, [u8; 32]) {
    let mut c1 = pseudo_random(PACKET, seed);
    c1[..4].copy_from_slice(&[0, 0, 0, 0]);
    c1[4..8].copy_from_slice(&[9, 0, 124, 2]);
    let pos = digest_pos(&c1, schema);
    let digest = packet_digest(FP_KEY, &c1, pos);
    c1[pos..pos + 32].copy_from_slice(&digest);
    (c1, digest)
}

/// What a digest-handshake client checked of the server's answer.
#[derive(Debug, Clone)]
pub struct DigestCheck {
    /// The schema under which S1 carries a valid FMS digest (ffmpeg tries 0, then 1).
    pub s1_schema: Option<DigestSchema>,
    /// Whether S2 ends in HMAC(HMAC(FMS key + tail, C1 digest), S2 body).
    pub s2_valid: bool,
    /// S1's version field.
    pub s1_version: [u8; 4],
}

// ---------------------------------------------------------------------------------------------
// FLV.

/// One FLV tag: type (8 audio, 9 video, 18 script), timestamp in ms, body.
#[derive(Debug, Clone)]
pub struct FlvTag {
    pub kind: u8,
    pub timestamp: u32,
    pub data: Vec<u8>,
}

/// Parses an FLV file: 9-byte header (its length field honoured), previous-tag-size 0, then
/// tags (type, 24-bit size, 24-bit timestamp + 8-bit extension, 3-byte stream id, body,
/// 4-byte previous tag size).
pub fn parse_flv(b: &[u8]) -> Result<Vec<FlvTag>, String> {
    if b.len() < 13 || &b[..3] != b"FLV" {
        return Err(format!("not an FLV file ({} bytes)", b.len()));
    }
    let header_len = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) as usize;
    let be24 = |s: &[u8]| (u32::from(s[0]) << 16) | (u32::from(s[1]) << 8) | u32::from(s[2]);
    let mut pos = header_len + 4;
    let mut tags = Vec::new();
    while pos + 11 <= b.len() {
        let kind = b[pos] & 0x1F;
        let size = be24(&b[pos + 1..pos + 4]) as usize;
        let timestamp = be24(&b[pos + 4..pos + 7]) | (u32::from(b[pos + 7]) << 24);
        let start = pos + 11;
        let end = start + size;
        if end > b.len() {
            return Err(format!("tag at {pos} declares {size} bytes, file has {}", b.len() - start));
        }
        tags.push(FlvTag { kind, timestamp, data: b[start..end].to_vec() });
        pos = end + 4;
    }
    if tags.is_empty() {
        return Err("FLV file has no tags".into());
    }
    Ok(tags)
}

/// Encodes `seconds` of 320x240 25 fps H.264 (GOP 25) + AAC with ffmpeg into `dir/file.flv`
/// and returns its tags.
pub fn make_flv(dir: &Path, seconds: u32) -> Vec<FlvTag> {
    let file = dir.join("file.flv");
    let mut cmd = Process::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .args(["-t", &seconds.to_string(), "-f", "flv"])
        .arg(&file);
    let o = run_with_timeout(cmd, Duration::from_secs(120));
    assert!(o.status.is_some_and(|s| s.success()), "ffmpeg could not make the test FLV: {o:?}");
    let tags = parse_flv(&std::fs::read(&file).unwrap()).unwrap();
    assert!(tags.iter().any(|t| t.kind == 9) && tags.iter().any(|t| t.kind == 8), "FLV lacks audio or video");
    tags
}

/// The RTMP message for an FLV tag on message stream `stream_id`: audio (8) on csid 4, video
/// (9) on csid 6, script data (18) as `@setDataFrame` + the tag body on csid 5.
pub fn tag_message(tag: &FlvTag, stream_id: u32, timestamp: u32) -> Message {
    let (csid, payload) = match tag.kind {
        8 => (AUDIO_CSID, tag.data.clone()),
        9 => (VIDEO_CSID, tag.data.clone()),
        _ => {
            let mut p = Vec::new();
            amf0::encode(&Amf0Value::string("@setDataFrame"), &mut p);
            p.extend_from_slice(&tag.data);
            (DATA_CSID, p)
        }
    };
    Message { csid, timestamp, type_id: tag.kind, stream_id, payload }
}

// ---------------------------------------------------------------------------------------------
// Raw socket helpers for misbehaving clients.

pub fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    s.set_write_timeout(Some(WRITE_TIMEOUT)).unwrap();
    let _ = s.set_nodelay(true);
    s
}

/// Reads (and discards) until the peer closes the connection (read returns 0 or an error
/// other than a timeout); returns how long that took, or an error once `timeout` passes.
pub fn wait_closed(sock: &mut TcpStream, timeout: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return Err(format!("still open after {timeout:?} ({got} bytes received meanwhile)"));
        }
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match sock.read(&mut buf) {
            Ok(0) => return Ok(t0.elapsed()),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(t0.elapsed()),
        }
    }
}

/// Runs a simple client handshake on `sock`; returns the bytes received after S2.
pub fn simple_handshake(sock: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, String> {
    let mut hs = ClientHandshake::new(0, &pseudo_random(1528, 7)).map_err(|e| e.to_string())?;
    sock.write_all(hs.c0c1()).map_err(|e| format!("write C0+C1: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no S0+S1+S2 within {timeout:?}"));
        }
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        let n = match sock.read(&mut buf) {
            Ok(0) => return Err("closed during the handshake".into()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(format!("handshake read: {e}")),
        };
        let p = hs.feed(&buf[..n]).map_err(|e| format!("handshake: {e}"))?;
        if !p.output.is_empty() {
            sock.write_all(&p.output).map_err(|e| format!("write C2: {e}"))?;
        }
        if p.done {
            return Ok(buf[p.consumed..n].to_vec());
        }
    }
}

fn read_exact_by(sock: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("only {got} of {} bytes before the deadline", buf.len()));
        }
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match sock.read(&mut buf[got..]) {
            Ok(0) => return Err(format!("closed after {got} of {} bytes", buf.len())),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(())
}

/// Digest handshake as Flash Player / ffmpeg do it: C1 signed with the Flash Player key under
/// `schema`; S1 checked for an FMS digest (schema 0 first, then 1), S2 checked against the C1
/// digest; C2 signed with a key derived from S1's digest.
///
/// With `pipelined`, C0+C1 go out in three pieces (1, 700 and 836 bytes, 50 ms apart) and C2
/// is not written but returned, for the caller to send in one write with its `connect`.
pub fn digest_handshake(
    sock: &mut TcpStream,
    schema: DigestSchema,
    pipelined: bool,
    timeout: Duration,
) -> Result<(DigestCheck, Vec<u8>), String> {
    let (c1, c1_digest) = digest_c1(schema, 0xD16E57);
    let c0c1 = [&[3u8][..], &c1].concat();
    if pipelined {
        for piece in [&c0c1[..1], &c0c1[1..701], &c0c1[701..]] {
            sock.write_all(piece).map_err(|e| format!("write C0+C1 piece: {e}"))?;
            std::thread::sleep(Duration::from_millis(50));
        }
    } else {
        sock.write_all(&c0c1).map_err(|e| format!("write C0+C1: {e}"))?;
    }
    let mut answer = vec![0u8; 1 + 2 * PACKET];
    read_exact_by(sock, &mut answer, Instant::now() + timeout).map_err(|e| format!("S0+S1+S2: {e}"))?;
    if answer[0] != 3 {
        return Err(format!("S0 is {}, not 3", answer[0]));
    }
    let (s1, s2) = (&answer[1..1 + PACKET], &answer[1 + PACKET..]);
    let s1_schema = [DigestSchema::Schema0, DigestSchema::Schema1].into_iter().find(|&sc| {
        let pos = digest_pos(s1, sc);
        s1[pos..pos + 32] == packet_digest(FMS_KEY, s1, pos)
    });
    let fms_full = [FMS_KEY, &KEY_TAIL[..]].concat();
    let s2_key = hmac_sha256(&fms_full, &[&c1_digest]);
    let s2_valid = s2[PACKET - 32..] == hmac_sha256(&s2_key, &[&s2[..PACKET - 32]]);
    // C2: random body, then HMAC keyed by HMAC(Flash Player key + tail, S1 digest).
    let mut c2 = pseudo_random(PACKET, 0xC2);
    if let Some(sc) = s1_schema {
        let pos = digest_pos(s1, sc);
        let fp_full = [FP_KEY, &KEY_TAIL[..]].concat();
        let key = hmac_sha256(&fp_full, &[&s1[pos..pos + 32]]);
        let sig = hmac_sha256(&key, &[&c2[..PACKET - 32]]);
        c2[PACKET - 32..].copy_from_slice(&sig);
    } else {
        c2.copy_from_slice(s1);
    }
    let check = DigestCheck { s1_schema, s2_valid, s1_version: [s1[4], s1[5], s1[6], s1[7]] };
    if pipelined {
        return Ok((check, c2));
    }
    sock.write_all(&c2).map_err(|e| format!("write C2: {e}"))?;
    Ok((check, Vec::new()))
}

// ---------------------------------------------------------------------------------------------
// The client.

/// Which handshake the client runs.
#[derive(Debug, Clone, Copy)]
pub enum Handshake {
    Simple,
    Digest(DigestSchema),
    /// Digest handshake with C0+C1 written in pieces and C2 in the same write as `connect`.
    DigestPipelined(DigestSchema),
}

/// An `onStatus` (or `_error`) the client got.
#[derive(Debug, Clone)]
pub struct Status {
    pub command: String,
    pub level: String,
    pub code: String,
    pub description: String,
}

impl Status {
    fn of(cmd: &Command) -> Status {
        let info = cmd.args.iter().find(|a| a.get("code").is_some());
        let text = |k: &str| info.and_then(|i| i.get(k)).and_then(Amf0Value::as_str).unwrap_or_default().to_string();
        Status { command: cmd.name.clone(), level: text("level"), code: text("code"), description: text("description") }
    }
}

/// Why a read ended without a message.
#[derive(Debug)]
pub enum ReadEnd {
    Timeout,
    Closed,
    Failed(String),
}

impl std::fmt::Display for ReadEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadEnd::Timeout => f.write_str("timed out"),
            ReadEnd::Closed => f.write_str("connection closed"),
            ReadEnd::Failed(e) => f.write_str(e),
        }
    }
}

pub struct RtmpClient {
    pub sock: TcpStream,
    pub port: u16,
    pub app: String,
    pub tc_url: String,
    pub enc: ChunkEncoder,
    pub dec: ChunkDecoder,
    buf: Vec<u8>,
    next_tx: f64,
    /// The message stream id from `createStream`.
    pub stream_id: u32,
    /// The digest handshake's checks, when that handshake was used.
    pub digest: Option<DigestCheck>,
    /// Bytes to put in front of the next write (a pipelined C2).
    pending: Vec<u8>,
    /// Commands and statuses received, one line each (for assertion messages).
    pub seen: Vec<String>,
    /// Bytes received (for acknowledgements) and the peer's window.
    received: u64,
    acked: u64,
    window: u64,
}

impl RtmpClient {
    /// Connects to 127.0.0.1:`port` and runs the handshake; app `live`.
    pub fn open(port: u16, handshake: Handshake) -> Result<RtmpClient, String> {
        let mut sock = tcp(port);
        let timeout = Duration::from_secs(10);
        let (rest, digest, pending) = match handshake {
            Handshake::Simple => (simple_handshake(&mut sock, timeout)?, None, Vec::new()),
            Handshake::Digest(schema) | Handshake::DigestPipelined(schema) => {
                let pipelined = matches!(handshake, Handshake::DigestPipelined(_));
                let (check, c2) = digest_handshake(&mut sock, schema, pipelined, timeout)?;
                (Vec::new(), Some(check), c2)
            }
        };
        Ok(RtmpClient {
            sock,
            port,
            app: "live".into(),
            tc_url: format!("rtmp://127.0.0.1:{port}/live"),
            enc: ChunkEncoder::new(),
            dec: ChunkDecoder::new(),
            buf: rest,
            next_tx: 0.0,
            stream_id: 0,
            digest,
            pending,
            seen: Vec::new(),
            received: 0,
            acked: 0,
            window: 0,
        })
    }

    /// Encodes `msgs` and writes them with one write call.
    pub fn send_all(&mut self, msgs: &[Message]) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.pending);
        for m in msgs {
            self.enc.encode(m, &mut out).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        self.sock.write_all(&out)
    }

    pub fn send(&mut self, msg: &Message) -> io::Result<()> {
        self.send_all(std::slice::from_ref(msg))
    }

    /// Sends SetChunkSize and switches the encoder to it.
    pub fn set_chunk_size(&mut self, size: u32) -> io::Result<()> {
        self.send(&message::set_chunk_size(size))
    }

    /// A command message with the next transaction id; returns it and the id.
    pub fn command(
        &mut self,
        csid: u32,
        stream_id: u32,
        name: &str,
        object: Amf0Value,
        args: Vec<Amf0Value>,
    ) -> (Message, f64) {
        self.next_tx += 1.0;
        (Command::new(name, self.next_tx, object, args).to_message(csid, stream_id), self.next_tx)
    }

    /// Sends a command; returns its transaction id.
    pub fn call(&mut self, name: &str, object: Amf0Value, args: Vec<Amf0Value>) -> Result<f64, String> {
        let (msg, tx) = self.command(COMMAND_CSID, 0, name, object, args);
        self.send(&msg).map_err(|e| format!("send {name}: {e}"))?;
        Ok(tx)
    }

    /// Reads the next message, answering pings and acknowledging the peer's window.
    pub fn read_message(&mut self, deadline: Instant) -> Result<Message, ReadEnd> {
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            if !self.buf.is_empty() {
                let (used, msg) =
                    self.dec.decode(&self.buf).map_err(|e| ReadEnd::Failed(format!("chunk stream: {e}")))?;
                self.buf.drain(..used);
                if let Some(m) = msg {
                    self.on_control(&m);
                    return Ok(m);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadEnd::Timeout);
            }
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.sock.read(&mut tmp) {
                Ok(0) => return Err(ReadEnd::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    self.received += n as u64;
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
                    return Err(ReadEnd::Closed);
                }
                Err(e) => return Err(ReadEnd::Failed(format!("read: {e}"))),
            }
        }
    }

    fn on_control(&mut self, m: &Message) {
        match m.type_id {
            message::WINDOW_ACK_SIZE => {
                if let Ok(w) = message::parse_window_ack_size(&m.payload) {
                    self.window = u64::from(w);
                }
            }
            message::USER_CONTROL => {
                if let Ok(UserControl::PingRequest(t)) = message::parse_user_control(&m.payload) {
                    let _ = self.send(&message::ping_response(t));
                }
            }
            message::COMMAND_AMF0 | message::COMMAND_AMF3 => {
                if let Ok(cmd) = Command::from_message(m) {
                    let st = Status::of(&cmd);
                    self.seen.push(format!("{} tx {} {} {}", cmd.name, cmd.transaction_id, st.code, st.description));
                }
            }
            _ => {}
        }
        if self.window > 0 && self.received - self.acked >= self.window / 2 {
            self.acked = self.received;
            let _ = self.send(&message::acknowledgement(self.received as u32));
        }
    }

    /// Reads until a command for which `pick` is true.
    pub fn wait_command(
        &mut self,
        deadline: Instant,
        what: &str,
        mut pick: impl FnMut(&Command) -> bool,
    ) -> Result<Command, String> {
        loop {
            let m =
                self.read_message(deadline).map_err(|e| format!("waiting for {what}: {e}; seen {:?}", self.seen))?;
            if m.type_id != message::COMMAND_AMF0 && m.type_id != message::COMMAND_AMF3 {
                continue;
            }
            if let Ok(cmd) = Command::from_message(&m)
                && pick(&cmd)
            {
                return Ok(cmd);
            }
        }
    }

    /// The `connect` command object a publisher like OBS/ffmpeg sends.
    pub fn connect_object(&self) -> Amf0Value {
        Amf0Value::object([
            ("app", Amf0Value::string(self.app.clone())),
            ("type", Amf0Value::string("nonprivate")),
            ("flashVer", Amf0Value::string("FMLE/3.0 (compatible; streamgate-test)")),
            ("tcUrl", Amf0Value::string(self.tc_url.clone())),
        ])
    }

    /// `connect`; waits for its `_result` (the proxy's).
    pub fn connect(&mut self, deadline: Instant) -> Result<(), String> {
        let tx = self.call("connect", self.connect_object(), vec![])?;
        let cmd = self.wait_command(deadline, "the connect result", |c| {
            (c.name == "_result" || c.name == "_error") && c.transaction_id == tx
        })?;
        if cmd.name == "_error" {
            return Err(format!("connect refused: {:?}", Status::of(&cmd)));
        }
        Ok(())
    }

    /// `createStream`; waits for its `_result` and keeps the stream id.
    pub fn create_stream(&mut self, deadline: Instant) -> Result<u32, String> {
        let tx = self.call("createStream", Amf0Value::Null, vec![])?;
        let cmd = self.wait_command(deadline, "the createStream result", |c| {
            (c.name == "_result" || c.name == "_error") && c.transaction_id == tx
        })?;
        let id = cmd.args.first().and_then(Amf0Value::as_f64);
        match (cmd.name.as_str(), id) {
            ("_result", Some(id)) => {
                self.stream_id = id as u32;
                Ok(self.stream_id)
            }
            _ => Err(format!("createStream answered {cmd:?}")),
        }
    }

    /// Waits for an `onStatus` whose code is `want` or whose level is `error`, or an `_error`
    /// answering transaction `tx`.
    pub fn wait_status(&mut self, deadline: Instant, want: &str, tx: f64) -> Result<Status, String> {
        let cmd = self.wait_command(deadline, want, |c| {
            let st = Status::of(c);
            (c.name == "onStatus" && (st.code == want || st.level == "error"))
                || (c.name == "_error" && c.transaction_id == tx)
        })?;
        Ok(Status::of(&cmd))
    }

    /// connect, releaseStream, FCPublish, createStream, then `publish(name, "live")` followed
    /// in the same write by what `after` builds (the stream id is known by then); returns the
    /// first `NetStream.Publish.Start` or error status.
    pub fn publish(
        &mut self,
        name: &str,
        after: impl FnOnce(&mut RtmpClient) -> Vec<Message>,
        timeout: Duration,
    ) -> Result<Status, String> {
        let deadline = Instant::now() + timeout;
        self.connect(deadline)?;
        self.call("releaseStream", Amf0Value::Null, vec![Amf0Value::string(name)])?;
        self.call("FCPublish", Amf0Value::Null, vec![Amf0Value::string(name)])?;
        let sid = self.create_stream(deadline)?;
        let args = vec![Amf0Value::string(name), Amf0Value::string("live")];
        let (publish, tx) = self.command(STREAM_CSID, sid, "publish", Amf0Value::Null, args);
        let mut msgs = vec![publish];
        msgs.extend(after(self));
        self.send_all(&msgs).map_err(|e| format!("send publish: {e}"))?;
        self.wait_status(deadline, "NetStream.Publish.Start", tx)
    }

    /// connect, createStream, then `play(name, -2000)` followed in the same write by what
    /// `after` builds; returns the first `NetStream.Play.Start` or error status.
    pub fn play(
        &mut self,
        name: &str,
        after: impl FnOnce(&mut RtmpClient) -> Vec<Message>,
        timeout: Duration,
    ) -> Result<Status, String> {
        let deadline = Instant::now() + timeout;
        self.connect(deadline)?;
        let sid = self.create_stream(deadline)?;
        let args = vec![Amf0Value::string(name), Amf0Value::Number(-2000.0)];
        let (play, tx) = self.command(STREAM_CSID, sid, "play", Amf0Value::Null, args);
        let mut msgs = vec![play];
        msgs.extend(after(self));
        self.send_all(&msgs).map_err(|e| format!("send play: {e}"))?;
        self.wait_status(deadline, "NetStream.Play.Start", tx)
    }

    /// Reads until `until`; counts video and audio messages with a body. The `String` says
    /// why reading ended before `until`, if it did.
    pub fn count_media(&mut self, until: Instant) -> (usize, usize, Option<String>) {
        let (mut video, mut audio) = (0, 0);
        loop {
            match self.read_message(until) {
                Ok(m) if m.type_id == message::VIDEO && !m.payload.is_empty() => video += 1,
                Ok(m) if m.type_id == message::AUDIO && !m.payload.is_empty() => audio += 1,
                Ok(_) => {}
                Err(ReadEnd::Timeout) => return (video, audio, None),
                Err(e) => return (video, audio, Some(e.to_string())),
            }
        }
    }

    /// Reads whatever has arrived without waiting; `Err` when the peer closed the connection,
    /// broke the chunk stream, or sent an `onStatus` of level error (an `_error` answering
    /// some extra call is not fatal).
    pub fn drain(&mut self) -> Result<(), String> {
        loop {
            match self.read_message(Instant::now() + Duration::from_millis(1)) {
                Ok(m) if m.type_id == message::COMMAND_AMF0 || m.type_id == message::COMMAND_AMF3 => {
                    if let Ok(cmd) = Command::from_message(&m) {
                        let st = Status::of(&cmd);
                        if cmd.name == "onStatus" && st.level == "error" {
                            return Err(format!("got {st:?}"));
                        }
                    }
                }
                Ok(_) => {}
                Err(ReadEnd::Timeout) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Sends `tags` as RTMP messages on the publish stream, paced in real time, looping the
    /// file (script tag only the first time, timestamps continued) until `stop` is set or
    /// `max` has passed. Before tag number `i` (counting across loops) `hook(self, i)` may send
    /// anything (SetChunkSize, extra commands). `sent` counts tags sent. `Err` when a write
    /// fails or the peer closes the connection or says error.
    pub fn stream_tags(
        &mut self,
        tags: &[FlvTag],
        stop: &AtomicBool,
        sent: &AtomicUsize,
        max: Duration,
        mut hook: impl FnMut(&mut RtmpClient, usize) -> io::Result<()>,
    ) -> Result<usize, String> {
        let t0 = Instant::now();
        let span = tags.iter().map(|t| t.timestamp).max().unwrap_or(0) + 40;
        let mut i = 0usize;
        for round in 0u32.. {
            for tag in tags {
                if round > 0 && tag.kind == 18 {
                    continue;
                }
                if stop.load(Ordering::SeqCst) || t0.elapsed() >= max {
                    return Ok(i);
                }
                let ts = tag.timestamp + round * span;
                let due = t0 + Duration::from_millis(u64::from(ts));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                hook(self, i).map_err(|e| format!("hook before tag {i}: {e}"))?;
                let msg = tag_message(tag, self.stream_id, ts);
                self.send(&msg).map_err(|e| format!("send tag {i} (ts {ts}): {e}"))?;
                i += 1;
                sent.store(i, Ordering::SeqCst);
                if i.is_multiple_of(16) {
                    self.drain().map_err(|e| format!("after tag {i}: {e}; seen {:?}", self.seen))?;
                }
            }
        }
        Ok(i)
    }
}

/// A user control SetBufferLength for `stream_id` (what players send).
pub fn set_buffer_length(stream_id: u32, ms: u32) -> Message {
    let mut payload = vec![0, 3];
    payload.extend_from_slice(&stream_id.to_be_bytes());
    payload.extend_from_slice(&ms.to_be_bytes());
    Message { csid: CONTROL_CSID, timestamp: 0, type_id: message::USER_CONTROL, stream_id: 0, payload }
}

/// An `@setDataFrame("onMetaData", {...})` data message.
pub fn set_data_frame(stream_id: u32, props: &[(&str, f64)]) -> Message {
    let mut payload = Vec::new();
    amf0::encode(&Amf0Value::string("@setDataFrame"), &mut payload);
    amf0::encode(&Amf0Value::string("onMetaData"), &mut payload);
    let array = Amf0Value::EcmaArray(props.iter().map(|(k, v)| (k.to_string(), Amf0Value::Number(*v))).collect());
    amf0::encode(&array, &mut payload);
    Message { csid: DATA_CSID, timestamp: 0, type_id: message::DATA_AMF0, stream_id, payload }
}
