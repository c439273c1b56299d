//! One RTMP client connection: TCP dial, simple handshake, the `connect` / `createStream` /
//! `publish` / `play` exchange, and reading messages with bounded buffers. The dial and the
//! read helper serve HTTP-FLV players ([`crate::httpflv`]) too.
//!
//! Reads go through one 64 KiB buffer per worker thread: runtimes are current-thread and the
//! buffer is only borrowed inside one poll of the socket (read plus decoding), never across an
//! `.await`. An idle connection therefore holds its socket, its [`ChunkDecoder`] (bounded by
//! `--max-message-size` and 64 chunk streams) and a few small vectors, and waits in the
//! reactor without polling. The connection answers the server's PingRequest and sends
//! Acknowledgements per the server's WindowAckSize itself; the server's results for
//! transactions it is not waiting for (the proxy forwards the origin's own) are ignored.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use streamgate::codec::rtmp::amf0::Amf0Value;
use streamgate::codec::rtmp::handshake::RANDOM_LEN;
use streamgate::codec::rtmp::message::{self, COMMAND_AMF0, COMMAND_AMF3, COMMAND_CSID, UserControl};
use streamgate::codec::rtmp::{ChunkDecoder, ChunkEncoder, ClientHandshake, Command, Message};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::Ctx;
use crate::args::Target;
use crate::rtmp::{self, is_media};
use crate::stats::{Failure, Kind};

/// Size of the per-thread read buffer.
pub const READ_BUF: usize = 64 * 1024;
/// Inbox capacity kept between reads.
const INBOX_KEEP: usize = 32;
/// Chunk streams the decoder tracks at most.
const MAX_CHUNK_STREAMS: usize = 64;

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

/// Dials `addr` within `--timeout` (TCP_NODELAY on); the guard counts the connection as open
/// while it lives.
pub async fn dial(ctx: &Arc<Ctx>, addr: SocketAddr) -> Result<(TcpStream, OpenGuard), Failure> {
    let step = ctx.args.step_timeout();
    let stream = match timeout(step, TcpStream::connect(addr)).await {
        Err(_) => return Err(Failure::new(Kind::ConnectTimeout, format!("connect {addr}: no answer in {step:?}"))),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Failure::new(Kind::ConnectRefused, format!("connect {addr}: {e}")));
        }
        Ok(Err(e)) => return Err(Failure::new(Kind::ConnectError, format!("connect {addr}: {e}"))),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok((stream, OpenGuard::new(Arc::clone(ctx))))
}

/// Waits for the socket `stream(s)` returns, reads once into the thread's buffer and runs `f`
/// on `s` and the bytes; `None` at end of stream. Reading through `poll_read` lets tokio clear
/// the readiness after a short read, so each arrival costs one `recv` instead of a second one
/// that would only say EAGAIN. The buffer is borrowed only within one poll, never across an
/// `.await`, so one per thread serves every connection.
pub async fn read_with<S, R>(
    s: &mut S,
    stream: fn(&mut S) -> &mut TcpStream,
    mut f: impl FnMut(&mut S, &[u8]) -> R,
) -> io::Result<Option<R>> {
    std::future::poll_fn(|cx| {
        BUF.with_borrow_mut(|buf| {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(stream(s)).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Ok(None)),
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(f(s, rb.filled())))),
            }
        })
    })
    .await
}

/// Counts the connection as open while it lives.
pub struct OpenGuard(Arc<Ctx>);

impl OpenGuard {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        ctx.stats.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.stats.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenGuard(ctx)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.stats.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connected RTMP client.
pub struct Conn {
    stream: TcpStream,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    inbox: VecDeque<Message>,
    out: Vec<u8>,
    rx_total: u64,
    rx_unreported: u64,
    tx_total: u64,
    ack_window: u64,
    acked: u64,
    step: Duration,
    /// Re-arm TCP_QUICKACK after every read (`--quickack`, until [`Conn::streaming`]).
    quickack: bool,
    guard: OpenGuard,
}

impl Conn {
    /// Dials `target` and runs the handshake, each within `--timeout`.
    pub async fn open(ctx: &Arc<Ctx>, target: &Target) -> Result<Conn, Failure> {
        let (stream, guard) = dial(ctx, target.addr).await?;
        let step = ctx.args.step_timeout();
        let mut conn = Conn {
            stream,
            decoder: ChunkDecoder::with_limits(ctx.args.max_message_size, MAX_CHUNK_STREAMS),
            encoder: ChunkEncoder::new(),
            inbox: VecDeque::new(),
            out: Vec::new(),
            rx_total: 0,
            rx_unreported: 0,
            tx_total: 0,
            ack_window: 0,
            acked: 0,
            step,
            quickack: ctx.args.quickack,
            guard,
        };
        match timeout(step, conn.handshake()).await {
            Ok(r) => r.map(|()| conn),
            Err(_) => Err(Failure::new(Kind::Handshake, format!("handshake not done in {step:?}"))),
        }
    }

    async fn handshake(&mut self) -> Result<(), Failure> {
        let hs_err = |e: &dyn std::fmt::Display| Failure::new(Kind::Handshake, format!("handshake: {e}"));
        let mut random = vec![0u8; RANDOM_LEN];
        streamgate::util::fill_random(&mut random);
        let mut hs = ClientHandshake::new(0, &random).map_err(|e| hs_err(&e))?;
        self.stream.write_all(hs.c0c1()).await.map_err(|e| hs_err(&e))?;
        loop {
            let step = self.read_with(|c, data| {
                let p = hs.feed(data).map_err(|e| hs_err(&e))?;
                if p.done {
                    c.decode(data.get(p.consumed..).unwrap_or_default())?;
                }
                Ok::<_, Failure>((p.output, p.done))
            });
            let (c2, done) = match step.await {
                Ok(Some(r)) => r?,
                Ok(None) => return Err(hs_err(&"server closed the connection")),
                Err(e) => return Err(hs_err(&e)),
            };
            if !c2.is_empty() {
                self.stream.write_all(&c2).await.map_err(|e| hs_err(&e))?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Reads once (see [`read_with`]), counts the bytes and runs `f` on them; `None` at end of
    /// stream.
    async fn read_with<R>(&mut self, mut f: impl FnMut(&mut Self, &[u8]) -> R) -> io::Result<Option<R>> {
        read_with(
            self,
            |c| &mut c.stream,
            |c, data| {
                c.rx_total += data.len() as u64;
                c.rx_unreported += data.len() as u64;
                if c.quickack {
                    streamgate::util::quickack(c.stream.as_raw_fd());
                }
                f(c, data)
            },
        )
        .await
    }

    /// Decodes `data` into the inbox, answering control messages.
    fn decode(&mut self, mut data: &[u8]) -> Result<(), Failure> {
        while !data.is_empty() {
            let (used, msg) = self.decoder.decode(data).map_err(|e| Failure::new(Kind::Protocol, e.to_string()))?;
            data = data.get(used..).unwrap_or_default();
            match msg {
                Some(m) => self.on_message(m)?,
                None => break,
            }
        }
        if self.ack_window > 0 && self.rx_total - self.acked >= self.ack_window {
            self.acked = self.rx_total;
            self.send(&message::acknowledgement(self.rx_total as u32))?;
        }
        Ok(())
    }

    fn on_message(&mut self, m: Message) -> Result<(), Failure> {
        match m.type_id {
            message::WINDOW_ACK_SIZE => {
                self.ack_window = message::parse_window_ack_size(&m.payload).map_or(0, u64::from);
            }
            message::USER_CONTROL => {
                if let Ok(UserControl::PingRequest(ts)) = message::parse_user_control(&m.payload) {
                    self.send(&message::ping_response(ts))?;
                }
            }
            message::SET_CHUNK_SIZE | message::ABORT | message::ACKNOWLEDGEMENT | message::SET_PEER_BANDWIDTH => {}
            _ => self.inbox.push_back(m),
        }
        Ok(())
    }

    /// Reads once (waiting as long as it takes), decodes, and sends any answers due.
    pub async fn fill(&mut self) -> Result<(), Failure> {
        match self.read_with(Self::decode).await {
            Ok(Some(r)) => r?,
            Ok(None) => return Err(Failure::new(Kind::ClosedEarly, "server closed the connection")),
            Err(e) => return Err(rtmp::io_failure("read", &e)),
        }
        self.flush().await
    }

    /// Next decoded message, reading until `deadline` if the inbox is empty.
    pub async fn next(&mut self, deadline: Instant, what: &str) -> Result<Message, Failure> {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Ok(m);
            }
            match timeout_at(deadline, self.fill()).await {
                Ok(Ok(())) => {}
                Ok(Err(mut f)) => {
                    f.detail = format!("{} (waiting for {what})", f.detail);
                    return Err(f);
                }
                Err(_) => return Err(Failure::new(Kind::Timeout, format!("no {what} within {:?}", self.step))),
            }
        }
    }

    /// Marks the setup as over: stop re-arming TCP_QUICKACK (it costs a syscall per read).
    pub fn streaming(&mut self) {
        self.quickack = false;
    }

    /// Takes the next decoded message without reading; once the inbox is empty, gives back
    /// the room a burst of small messages made it grow to.
    pub fn pop(&mut self) -> Option<Message> {
        let msg = self.inbox.pop_front();
        if msg.is_none() && self.inbox.capacity() > INBOX_KEEP {
            self.inbox.shrink_to(INBOX_KEEP);
        }
        msg
    }

    /// Bytes read since the last call.
    pub fn take_rx(&mut self) -> u64 {
        std::mem::take(&mut self.rx_unreported)
    }

    /// Bytes written so far.
    pub fn tx_bytes(&self) -> u64 {
        self.tx_total
    }

    /// Queues `msg`.
    pub fn send(&mut self, msg: &Message) -> Result<(), Failure> {
        self.encoder.encode(msg, &mut self.out).map_err(|e| Failure::new(Kind::Protocol, format!("encode: {e}")))
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Failure> {
        if self.out.is_empty() {
            return Ok(());
        }
        let sent = self.out.len() as u64;
        self.stream.write_all(&self.out).await.map_err(|e| rtmp::io_failure("write", &e))?;
        self.out.clear();
        self.tx_total += sent;
        Ok(())
    }

    /// Sends `connect` for the target's app and waits for its `_result`.
    pub async fn connect(&mut self, target: &Target) -> Result<(), Failure> {
        self.send(&rtmp::connect(target).to_message(COMMAND_CSID, 0))?;
        self.flush().await?;
        self.result(1.0, "connect _result").await.map(drop)
    }

    /// Sends `createStream` and returns the message stream id from its `_result`.
    pub async fn create_stream(&mut self) -> Result<u32, Failure> {
        self.send(&Command::new("createStream", 2.0, Amf0Value::Null, vec![]).to_message(COMMAND_CSID, 0))?;
        self.flush().await?;
        let cmd = self.result(2.0, "createStream _result").await?;
        let id = cmd.args.first().and_then(Amf0Value::as_f64).unwrap_or(1.0);
        Ok(if id.is_finite() && id >= 0.0 && id <= f64::from(u32::MAX) { id as u32 } else { 1 })
    }

    /// Waits for the `_result` of transaction `txid`; an `_error` for it fails.
    async fn result(&mut self, txid: f64, what: &str) -> Result<Command, Failure> {
        let deadline = Instant::now() + self.step;
        loop {
            let msg = self.next(deadline, what).await?;
            let Some(cmd) = parse_command(&msg)? else { continue };
            match cmd.name.as_str() {
                "_result" if cmd.transaction_id == txid => return Ok(cmd),
                "_error" if cmd.transaction_id == txid => return Err(rtmp::status_failure(&cmd)),
                _ => {}
            }
        }
    }

    /// Waits for the `onStatus` with code `want`; an error-level status or `_error` fails. An
    /// audio/video message before it counts as started (it is left in the inbox).
    pub async fn status(&mut self, want: &str) -> Result<(), Failure> {
        let deadline = Instant::now() + self.step;
        loop {
            let msg = self.next(deadline, want).await?;
            if is_media(msg.type_id) {
                self.inbox.push_front(msg);
                return Ok(());
            }
            let Some(cmd) = parse_command(&msg)? else { continue };
            let code = rtmp::status_field(&cmd, "code");
            if cmd.name == "onStatus" && code == Some(want) {
                return Ok(());
            }
            if cmd.name == "_error" || (cmd.name == "onStatus" && rtmp::status_field(&cmd, "level") == Some("error")) {
                return Err(rtmp::status_failure(&cmd));
            }
        }
    }

    /// The socket, the encoder (with its chunk size) and the open-connection guard, for
    /// publishers that then write on their own.
    pub fn into_parts(self) -> (TcpStream, ChunkEncoder, OpenGuard) {
        (self.stream, self.encoder, self.guard)
    }
}

/// The command a message carries, `None` for other messages.
fn parse_command(msg: &Message) -> Result<Option<Command>, Failure> {
    if msg.type_id != COMMAND_AMF0 && msg.type_id != COMMAND_AMF3 {
        return Ok(None);
    }
    Command::from_message(msg).map(Some).map_err(|e| Failure::new(Kind::Protocol, format!("command: {e}")))
}
