//! The origin side: dial, client handshake, replay the client's bytes, then forward the
//! origin's answers until it confirms `NetStream.Publish.Start` / `NetStream.Play.Start`.
//!
//! Consistency of the switch to relaying, by construction:
//! - client -> origin: the origin receives the client's own chunk stream from its first byte
//!   after C2 ([`super::identify::Identified::replay`]), so its decoder state equals the
//!   client's encoder state at every byte, whatever chunk sizes or header compression the
//!   client uses, before or after the switch.
//! - origin -> client: the origin's stream is forwarded to the client verbatim from its first
//!   byte, cut only at message boundaries while the proxy still reads it. The proxy's own
//!   messages came earlier, at chunk size 128 (the RTMP default the origin also starts from),
//!   and an origin's first message on every chunk stream is a full (fmt 0) header, so the
//!   client decodes the origin's stream exactly as the origin encoded it.
//! - The client therefore also sees the origin's own answers to `connect` and `createStream`
//!   after the proxy's; their transaction ids are no longer pending in the client, and RTMP
//!   clients (ffmpeg, librtmp/OBS) ignore results they are not waiting for.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::bridge::Role;
use crate::codec::rtmp::amf0::Amf0Value;
use crate::codec::rtmp::message::{COMMAND_AMF0, COMMAND_AMF3};
use crate::codec::rtmp::{ChunkDecoder, ChunkError, ClientHandshake, Command, HandshakeError, Message};
use crate::shard::relay::{quickack, recv, send_all};

/// Most bytes the origin may send before confirming (its answers are small; a play may
/// already carry metadata and the first media messages).
const MAX_CONFIRM_BYTES: usize = 4 * 1024 * 1024;

/// Why the origin did not take the stream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to origin {addr}: {source}")]
    Dial { addr: SocketAddr, source: std::io::Error },
    #[error("origin {addr} did not accept the connection within {timeout:?}")]
    DialTimeout { addr: SocketAddr, timeout: Duration },
    #[error("origin handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("origin chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("origin closed the connection before {0}")]
    Closed(&'static str),
    #[error("origin refused: {code} ({description})")]
    Refused { code: String, description: String },
    #[error("origin sent more than {MAX_CONFIRM_BYTES} bytes without {0}")]
    TooMuch(&'static str),
    #[error("origin i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A dialed origin whose handshake is done but for C2, which the caller sends together with
/// its first bytes (one write instead of two).
pub struct Connected {
    pub stream: TcpStream,
    pub c2: Vec<u8>,
    /// What the origin sent after S2.
    pub first: Vec<u8>,
}

/// Dials the origin within `timeout` and runs the client handshake up to C2.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connected, UpstreamError> {
    let mut origin = match TcpStream::connect_timeout(addr, timeout).await {
        Ok(s) => s,
        Err(e) => {
            let e = std::io::Error::from(e);
            if e.kind() == std::io::ErrorKind::TimedOut {
                return Err(UpstreamError::DialTimeout { addr, timeout });
            }
            return Err(UpstreamError::Dial { addr, source: e });
        }
    };
    let _ = origin.set_nodelay(true);
    let mut random = vec![0u8; crate::codec::rtmp::handshake::RANDOM_LEN];
    crate::util::fill_random(&mut random);
    let mut hs = ClientHandshake::new(0, &random)?;
    origin.write_all(hs.c0c1()).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = origin.read(&mut buf).await?;
        quickack(&origin);
        if n == 0 {
            return Err(UpstreamError::Closed("the handshake"));
        }
        let progress = hs.feed(&buf[..n])?;
        if progress.done {
            let first = buf[progress.consumed..n].to_vec();
            return Ok(Connected { stream: origin, c2: progress.output, first });
        }
        if !progress.output.is_empty() {
            origin.write_all(&progress.output).await?;
        }
    }
}

/// What the proxy has forwarded of the origin's stream.
pub struct Forwarded {
    /// Bytes of the origin's stream already sent to the client.
    pub sent: u64,
    /// Bytes read from the origin past its confirmation, not yet sent to the client.
    pub rest: Vec<u8>,
}

/// The status code that confirms `role`.
fn start_code(role: Role) -> &'static str {
    match role {
        Role::Publish => "NetStream.Publish.Start",
        Role::Play => "NetStream.Play.Start",
    }
}

/// Reads the origin's stream (starting with `first`, the bytes after its S2), forwards it to
/// the client up to the last complete message of each read (one write per read), and returns
/// once the origin confirmed `role`. On error,
/// `decoder` tells the caller the client's current read chunk size (what was forwarded).
pub async fn confirm(
    origin: &TcpStream,
    client: &TcpStream,
    first: Vec<u8>,
    role: Role,
    decoder: &mut ChunkDecoder,
) -> Result<Forwarded, UpstreamError> {
    let want = start_code(role);
    let mut pending = Vec::new(); // bytes not yet forwarded; they start at `forwarded`
    let mut forwarded = decoder.consumed();
    let mut buf = vec![0u8; 16 * 1024];
    let mut chunk: &[u8] = &first;
    loop {
        pending.extend_from_slice(chunk);
        let mut pos = 0;
        let mut verdict_seen = Verdict::Other;
        let mut boundary = forwarded;
        while pos < chunk.len() {
            let (used, msg) = decoder.decode(&chunk[pos..])?;
            pos += used;
            let Some(msg) = msg else { break };
            boundary = decoder.consumed();
            verdict_seen = verdict(&msg, want);
            if !matches!(verdict_seen, Verdict::Other) {
                break;
            }
        }
        let end = (boundary - forwarded) as usize;
        if end > 0 {
            send_all(client, &pending[..end]).await?;
            pending.drain(..end);
            forwarded = boundary;
        }
        match verdict_seen {
            Verdict::Confirmed => return Ok(Forwarded { sent: forwarded, rest: pending }),
            Verdict::Refused { code, description } => return Err(UpstreamError::Refused { code, description }),
            Verdict::Other => {}
        }
        if pending.len() > MAX_CONFIRM_BYTES {
            return Err(UpstreamError::TooMuch(want));
        }
        let n = recv(origin, &mut buf).await?;
        quickack(origin);
        if n == 0 {
            return Err(UpstreamError::Closed(want));
        }
        chunk = &buf[..n];
    }
}

enum Verdict {
    Confirmed,
    Refused { code: String, description: String },
    Other,
}

/// Reads an origin message: the awaited start status, an error status or `_error`, or other.
fn verdict(msg: &Message, want: &str) -> Verdict {
    if msg.type_id != COMMAND_AMF0 && msg.type_id != COMMAND_AMF3 {
        return Verdict::Other;
    }
    let Ok(cmd) = Command::from_message(msg) else { return Verdict::Other };
    let info = cmd.args.iter().find(|a| a.get("code").is_some());
    let text = |k: &str| info.and_then(|i| i.get(k)).and_then(Amf0Value::as_str).unwrap_or_default().to_string();
    let (code, level) = (text("code"), text("level"));
    match cmd.name.as_str() {
        "onStatus" if code == want => Verdict::Confirmed,
        "onStatus" if level == "error" => Verdict::Refused { code, description: text("description") },
        "_error" => Verdict::Refused { code, description: text("description") },
        _ => Verdict::Other,
    }
}
