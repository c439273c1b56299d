//! A test peer that reads each RTMP message from a single chunk, as the go-oryx-lib client
//! (SRS's regression tools and load generator use it) does: it follows SetChunkSize, but a
//! message longer than its read chunk size ends it (go-oryx-lib hands the partial message,
//! nil, to its SetChunkSize check and crashes). Here that is an error naming the message.
//! Like go-oryx-lib it also refuses a chunk stream whose first chunk is not a full (fmt 0)
//! header, fmt 1 on chunk stream 2 excepted, and a `_result` or `_error` whose transaction it
//! is not waiting for (go-oryx-lib's "No matched request for id"): an answer to a command the
//! proxy answered itself and then replayed to the origin must not reach it twice.
//!
//! The chunk reader is written from the RTMP specification, independent of the crate's
//! decoder; commands are built and parsed with the crate's AMF0 code, and written in 128-byte
//! chunks by its encoder (go-oryx-lib never changes the chunk size it writes in). It sends no
//! acknowledgements, as go-oryx-lib does not. Every read has a deadline.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use streamgate::codec::rtmp::amf0::Amf0Value;
use streamgate::codec::rtmp::message::{self, AUDIO, COMMAND_AMF0, SET_CHUNK_SIZE, VIDEO};
use streamgate::codec::rtmp::{ChunkEncoder, Command, Message};

use super::rtmp_client::{COMMAND_CSID, FlvTag, STREAM_CSID, simple_handshake, tag_message, tcp};

/// A chunk stream's header state: what the next fmt 1/2/3 chunk leaves out.
#[derive(Debug, Clone, Copy, Default)]
struct Header {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum End {
    Timeout,
    Closed,
    /// A message that needs more than one chunk, or a broken chunk stream.
    Broken(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Timeout => f.write_str("timed out"),
            End::Closed => f.write_str("connection closed"),
            End::Broken(why) => f.write_str(why),
        }
    }
}

pub struct SingleChunkClient {
    pub sock: TcpStream,
    buf: Vec<u8>,
    /// The chunk size it reads with (the last SetChunkSize it got).
    pub chunk_size: u32,
    streams: HashMap<u32, Header>,
    enc: ChunkEncoder,
    next_tx: f64,
    /// Transactions sent and not answered yet.
    pending: Vec<f64>,
    /// The message stream id from `createStream`.
    pub stream_id: u32,
    /// Every message received but audio and video, one line each ([`describe`]), for ordering
    /// checks and assertion messages.
    pub received: Vec<String>,
    /// The sizes of every SetChunkSize received, in order.
    pub chunk_sizes: Vec<u32>,
}

impl SingleChunkClient {
    /// Connects to 127.0.0.1:`port` and runs the simple handshake.
    pub fn open(port: u16) -> Result<SingleChunkClient, String> {
        let mut sock = tcp(port);
        let buf = simple_handshake(&mut sock, Duration::from_secs(10))?;
        Ok(SingleChunkClient {
            sock,
            buf,
            chunk_size: 128,
            streams: HashMap::new(),
            enc: ChunkEncoder::new(),
            next_tx: 0.0,
            pending: Vec::new(),
            stream_id: 0,
            received: Vec::new(),
            chunk_sizes: Vec::new(),
        })
    }

    /// Reads until at least `n` bytes are buffered.
    fn fill(&mut self, n: usize, deadline: Instant) -> Result<(), End> {
        let mut tmp = [0u8; 16 * 1024];
        while self.buf.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.sock.read(&mut tmp) {
                Ok(0) => return Err(End::Closed),
                Ok(k) => self.buf.extend_from_slice(&tmp[..k]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(End::Closed),
                Err(e) => return Err(End::Broken(format!("read: {e}"))),
            }
        }
        Ok(())
    }

    /// The next `n` bytes of the stream.
    fn take(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, End> {
        self.fill(n, deadline)?;
        Ok(self.buf.drain(..n).collect())
    }

    fn be(&mut self, n: usize, deadline: Instant) -> Result<u32, End> {
        Ok(self.take(n, deadline)?.iter().fold(0, |v, &b| (v << 8) | u32::from(b)))
    }

    /// Reads one chunk and returns it as a whole message: its header must declare a length
    /// that fits the read chunk size.
    pub fn read_message(&mut self, deadline: Instant) -> Result<Message, End> {
        let first = self.take(1, deadline)?[0];
        let fmt = first >> 6;
        let csid = match u32::from(first & 0x3F) {
            0 => 64 + self.be(1, deadline)?,
            1 => {
                let b = self.take(2, deadline)?;
                64 + u32::from(b[0]) + 256 * u32::from(b[1])
            }
            id => id,
        };
        let fresh = !self.streams.contains_key(&csid);
        if fresh && fmt != 0 && !(csid == 2 && fmt == 1) {
            return Err(End::Broken(format!("chunk stream {csid} starts with a fmt {fmt} header")));
        }
        let mut h = self.streams.get(&csid).copied().unwrap_or_default();
        self.read_header(&mut h, fmt, deadline)?;
        if h.length > self.chunk_size {
            return Err(End::Broken(format!(
                "a message of {} bytes (type {}) on chunk stream {csid} does not fit one chunk of {} bytes",
                h.length, h.type_id, self.chunk_size
            )));
        }
        let payload = self.take(h.length as usize, deadline)?;
        self.streams.insert(csid, h);
        let msg = Message { csid, timestamp: h.timestamp, type_id: h.type_id, stream_id: h.stream_id, payload };
        if msg.type_id != AUDIO && msg.type_id != VIDEO {
            self.received.push(describe(&msg));
        }
        if msg.type_id == COMMAND_AMF0
            && let Ok(cmd) = Command::from_message(&msg)
            && (cmd.name == "_result" || cmd.name == "_error")
        {
            let Some(i) = self.pending.iter().position(|&t| t == cmd.transaction_id) else {
                return Err(End::Broken(format!(
                    "{} for transaction {} it is not waiting for (pending: {:?})",
                    cmd.name, cmd.transaction_id, self.pending
                )));
            };
            self.pending.remove(i);
        }
        if msg.type_id == SET_CHUNK_SIZE && msg.payload.len() == 4 {
            self.chunk_size = u32::from_be_bytes(msg.payload[..4].try_into().unwrap()) & 0x7FFF_FFFF;
            self.chunk_sizes.push(self.chunk_size);
        }
        Ok(msg)
    }

    /// Applies a chunk's message header (fmt 0..3) to its chunk stream's state.
    fn read_header(&mut self, h: &mut Header, fmt: u8, deadline: Instant) -> Result<(), End> {
        if fmt == 3 {
            let delta = if h.extended { self.be(4, deadline)? } else { h.delta };
            h.timestamp = h.timestamp.wrapping_add(delta);
            return Ok(());
        }
        let field = self.be(3, deadline)?;
        if fmt <= 1 {
            h.length = self.be(3, deadline)?;
            h.type_id = self.take(1, deadline)?[0];
        }
        if fmt == 0 {
            let sid = self.take(4, deadline)?;
            h.stream_id = u32::from_le_bytes(sid[..4].try_into().unwrap());
        }
        h.extended = field == 0xFF_FFFF;
        let value = if h.extended { self.be(4, deadline)? } else { field };
        h.delta = value;
        h.timestamp = if fmt == 0 { value } else { h.timestamp.wrapping_add(value) };
        Ok(())
    }

    /// Sends `msgs` in one write.
    pub fn send_all(&mut self, msgs: &[Message]) -> io::Result<()> {
        let mut out = Vec::new();
        for m in msgs {
            self.enc.encode(m, &mut out).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        self.sock.write_all(&out)
    }

    /// Sends a command on `csid` and message stream `stream_id`; returns its transaction id.
    fn call(
        &mut self,
        csid: u32,
        stream_id: u32,
        name: &str,
        object: Amf0Value,
        args: Vec<Amf0Value>,
    ) -> Result<f64, String> {
        self.next_tx += 1.0;
        let msg = Command::new(name, self.next_tx, object, args).to_message(csid, stream_id);
        self.send_all(&[msg]).map_err(|e| format!("send {name}: {e}"))?;
        self.pending.push(self.next_tx);
        Ok(self.next_tx)
    }

    /// Reads until a command for which `pick` is true; what it read meanwhile stays in
    /// [`SingleChunkClient::received`].
    pub fn wait_command(
        &mut self,
        deadline: Instant,
        mut pick: impl FnMut(&Command) -> bool,
    ) -> Result<Command, String> {
        loop {
            let m = self.read_message(deadline).map_err(|e| format!("{e}; received {:?}", self.received))?;
            if m.type_id != COMMAND_AMF0 {
                continue;
            }
            if let Ok(cmd) = Command::from_message(&m)
                && pick(&cmd)
            {
                return Ok(cmd);
            }
        }
    }

    /// Waits for `_result` or `_error` answering `tx`.
    fn wait_result(&mut self, deadline: Instant, tx: f64) -> Result<Command, String> {
        let cmd =
            self.wait_command(deadline, |c| (c.name == "_result" || c.name == "_error") && c.transaction_id == tx)?;
        if cmd.name == "_error" {
            return Err(format!("answered with _error: {cmd:?}"));
        }
        Ok(cmd)
    }

    /// `connect` to app `live`: the command object has the tcUrl (all go-oryx-lib sends; SRS
    /// reads the app from it) and the app (nginx-rtmp needs it).
    pub fn connect(&mut self, port: u16, deadline: Instant) -> Result<(), String> {
        let tc_url = Amf0Value::string(format!("rtmp://127.0.0.1:{port}/live"));
        let object = Amf0Value::object([("app", Amf0Value::string("live")), ("tcUrl", tc_url)]);
        let tx = self.call(COMMAND_CSID, 0, "connect", object, vec![])?;
        self.wait_result(deadline, tx).map(|_| ())
    }

    /// `createStream`; keeps the stream id.
    pub fn create_stream(&mut self, deadline: Instant) -> Result<u32, String> {
        let tx = self.call(COMMAND_CSID, 0, "createStream", Amf0Value::Null, vec![])?;
        let cmd = self.wait_result(deadline, tx)?;
        let id = cmd.args.first().and_then(Amf0Value::as_f64).ok_or(format!("no stream id in {cmd:?}"))?;
        self.stream_id = id as u32;
        Ok(self.stream_id)
    }

    /// connect, createStream, then `publish` or `play` of `name`; returns the first `onStatus`
    /// that is the start (`NetStream.Publish.Start` / `NetStream.Play.Start`) or an error:
    /// (level, code, description).
    pub fn start(
        &mut self,
        port: u16,
        name: &str,
        publish: bool,
        timeout: Duration,
    ) -> Result<(String, String, String), String> {
        let deadline = Instant::now() + timeout;
        self.connect(port, deadline)?;
        let sid = self.create_stream(deadline)?;
        let (command, want, args) = if publish {
            ("publish", "NetStream.Publish.Start", vec![Amf0Value::string(name), Amf0Value::string("live")])
        } else {
            ("play", "NetStream.Play.Start", vec![Amf0Value::string(name)])
        };
        self.call(STREAM_CSID, sid, command, Amf0Value::Null, args)?;
        let text = |c: &Command, k: &str| {
            let info = c.args.iter().find(|a| a.get("code").is_some());
            info.and_then(|i| i.get(k)).and_then(Amf0Value::as_str).unwrap_or_default().to_string()
        };
        let cmd = self.wait_command(deadline, |c| {
            c.name == "onStatus" && (text(c, "code") == want || text(c, "level") == "error")
        })?;
        Ok((text(&cmd, "level"), text(&cmd, "code"), text(&cmd, "description")))
    }

    /// Sends `tags` on the publish stream, paced in real time, for up to `max`; `Err` when a
    /// write fails.
    pub fn publish_tags(&mut self, tags: &[FlvTag], max: Duration) -> Result<usize, String> {
        let t0 = Instant::now();
        for (i, tag) in tags.iter().enumerate() {
            let due = t0 + Duration::from_millis(u64::from(tag.timestamp));
            if due > t0 + max {
                return Ok(i);
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let msg = tag_message(tag, self.stream_id, tag.timestamp);
            self.send_all(&[msg]).map_err(|e| format!("send tag {i}: {e}"))?;
        }
        Ok(tags.len())
    }

    /// Reads until `until`; counts video and audio messages with a body. The `End` says why
    /// reading stopped early, if it did.
    pub fn count_media(&mut self, until: Instant) -> (usize, usize, Option<End>) {
        let (mut video, mut audio) = (0, 0);
        loop {
            match self.read_message(until) {
                Ok(m) if m.type_id == VIDEO && !m.payload.is_empty() => video += 1,
                Ok(m) if m.type_id == AUDIO && !m.payload.is_empty() => audio += 1,
                Ok(_) => {}
                Err(End::Timeout) => return (video, audio, None),
                Err(e) => return (video, audio, Some(e)),
            }
        }
    }
}

/// One line for a received message: `WindowAckSize 2500000`, `SetPeerBandwidth 2500000 2`,
/// `SetChunkSize 60000`, `_result 1` (command and transaction id), `onStatus
/// NetStream.Play.Start`, or the type id and length of anything else (`type 9, 1234 bytes`).
pub fn describe(m: &Message) -> String {
    let be = |b: &[u8]| b.iter().take(4).fold(0u32, |v, &x| (v << 8) | u32::from(x));
    match m.type_id {
        message::WINDOW_ACK_SIZE => format!("WindowAckSize {}", be(&m.payload)),
        message::SET_PEER_BANDWIDTH => {
            format!("SetPeerBandwidth {} {}", be(&m.payload), m.payload.get(4).copied().unwrap_or(255))
        }
        SET_CHUNK_SIZE => format!("SetChunkSize {}", be(&m.payload)),
        COMMAND_AMF0 => match Command::from_message(m) {
            Ok(c) if c.name == "onStatus" => {
                let info = c.args.iter().find(|a| a.get("code").is_some());
                format!("onStatus {}", info.and_then(|i| i.get("code")).and_then(Amf0Value::as_str).unwrap_or("?"))
            }
            Ok(c) => format!("{} {}", c.name, c.transaction_id),
            Err(e) => format!("bad command: {e}"),
        },
        t => format!("type {t}, {} bytes", m.payload.len()),
    }
}
