//! The origin side: dial, client handshake, replay the client's bytes, then pass the origin's
//! answers on until it confirms `NetStream.Publish.Start` / `NetStream.Play.Start`.
//!
//! Consistency of the switch to relaying, by construction:
//! - client -> origin: the origin receives the client's own chunk stream from its first byte
//!   after C2 ([`super::identify::Identified::replay`]), so its decoder state equals the
//!   client's encoder state at every byte, whatever chunk sizes or header compression the
//!   client uses, before or after the switch.
//! - origin -> client: the origin's answers to the replayed commands the proxy answered
//!   itself are left out; a player gets the rest of the origin's stream as written wherever
//!   its chunk streams allow (rewritten where a left-out message leaves them apart) until it is
//!   in step, then verbatim; a publisher gets the origin's messages re-chunked in the size the
//!   proxy announced ([`super::handover`] says why each).

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::handover::Handover;
use crate::bridge::Role;
use crate::codec::rtmp::amf0::Amf0Value;
use crate::codec::rtmp::message::{COMMAND_AMF0, COMMAND_AMF3};
use crate::codec::rtmp::{ChunkError, ClientHandshake, Command, HandshakeError, Message};
use crate::shard::relay::{quickack, recv};

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
    #[error("origin {addr} accepted the connection but did not complete the handshake within {timeout:?}")]
    HandshakeTimeout { addr: SocketAddr, timeout: Duration },
    #[error("origin handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("origin chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("origin closed the connection before {0}")]
    Closed(&'static str),
    /// `relayed`: the refusal (an error status) reached the client; an `_error` answering a
    /// command the proxy had answered did not.
    #[error("origin refused: {code} ({description})")]
    Refused { code: String, description: String, relayed: bool },
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

/// Dials the origin within `timeout` and runs the client handshake up to C2 within `timeout`
/// again (an origin that accepts and never answers, such as a frozen process whose kernel
/// still accepts, must not hold the client forever).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connected, UpstreamError> {
    let origin = match TcpStream::connect_timeout(addr, timeout).await {
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
    // Every origin socket, the relay's and the edge pull's: a vanished origin is found.
    crate::shard::conn::keepalive(std::os::fd::AsRawFd::as_raw_fd(&origin));
    crate::shard::within(timeout, handshake(origin))
        .await
        .unwrap_or(Err(UpstreamError::HandshakeTimeout { addr, timeout }))
}

async fn handshake(mut origin: TcpStream) -> Result<Connected, UpstreamError> {
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

/// What the proxy has passed on of the origin's stream.
pub struct Forwarded {
    /// Bytes sent to the client.
    pub sent: u64,
    /// Bytes read from the origin past the confirming message, not decoded yet.
    pub rest: Vec<u8>,
}

/// The status code that confirms `role`.
fn start_code(role: Role) -> &'static str {
    match role {
        Role::Publish => "NetStream.Publish.Start",
        Role::Play => "NetStream.Play.Start",
    }
}

/// Reads the origin's stream (starting with `first`, the bytes after its S2) and passes it to
/// the client as `handover` says, one write per read, until the origin confirmed `role`. On
/// error, `handover` tells the caller the client's current read chunk size.
pub async fn confirm(
    origin: &TcpStream,
    client: &TcpStream,
    first: Vec<u8>,
    role: Role,
    handover: &mut Handover,
) -> Result<Forwarded, UpstreamError> {
    let want = start_code(role);
    let mut sent = 0;
    let mut buf = vec![0u8; 16 * 1024];
    let mut input: &[u8] = &first;
    loop {
        let mut seen = Verdict::Other;
        let mut relayed = true;
        let used = handover.take(input, |msg, left_out| {
            seen = verdict(msg, want);
            relayed = !left_out;
            !matches!(seen, Verdict::Other)
        })?;
        sent += handover.flush(client).await?;
        match seen {
            Verdict::Confirmed => return Ok(Forwarded { sent, rest: input.get(used..).unwrap_or_default().to_vec() }),
            Verdict::Refused { code, description } => {
                return Err(UpstreamError::Refused { code, description, relayed });
            }
            Verdict::Other => {}
        }
        if handover.held() > MAX_CONFIRM_BYTES {
            return Err(UpstreamError::TooMuch(want));
        }
        let n = recv(origin, &mut buf).await?;
        quickack(origin);
        if n == 0 {
            return Err(UpstreamError::Closed(want));
        }
        input = &buf[..n];
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
