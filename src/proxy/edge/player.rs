//! One player of an edge stream: its opening bytes, then everything it is behind by, written
//! from the ring's shared buffers with vectored sends.
//!
//! - RTMP ([`rtmp_prelude`]): after `play`, the proxy's own answers as SRS sends them:
//!   StreamBegin, `onStatus` `NetStream.Play.Reset` and `NetStream.Play.Start`,
//!   `|RtmpSampleAccess`; the client already reads chunks of [`super::ring::CHUNK_SIZE`].
//! - HTTP-FLV: the response head (the HTTP server writes it) and the FLV header. For an HTTP/1.1
//!   client the body is chunked, as SRS sends it ([`Framing::Chunked`]), so when the stream ends
//!   it ends with the last chunk and players such as ffmpeg and curl see a complete response.
//!
//! Then the stream's metadata and sequence headers, then the ring from its last keyframe. When
//! the stream ends (no origin could serve it, or a local publisher left), what is pending still
//! goes out and an RTMP player gets StreamEOF and `NetStream.Play.UnpublishNotify`
//! ([`rtmp_epilogue`]), as SRS ends a play.
//!
//! Slow players: the socket's send buffer is set to [`SNDBUF`] so a slow player's backlog shows
//! in the ring, not in the kernel. A player more than `--edge-max-lag` behind skips to a
//! keyframe (what it passes over is counted as dropped frames); one that takes no byte for
//! `--edge-stall-timeout` while it has bytes to take is closed.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::net::TcpStream;

use super::Membership;
use super::ring::{Batch, CHUNK_SIZE, Cursor, Ring, STREAM_ID, Wire};
use crate::codec::rtmp::amf0::{self, Amf0Value};
use crate::codec::rtmp::client::DATA_CSID;
use crate::codec::rtmp::message::{self, DATA_AMF0};
use crate::codec::rtmp::{ChunkEncoder, Message};
use crate::config::EdgeConfig;
use crate::shard::within;

/// Most bytes one player takes from the ring at a time (references, not copies).
pub const BATCH_BYTES: usize = 64 * 1024;
/// A player's socket send buffer.
pub const SNDBUF: usize = 128 * 1024;
/// Most buffers in one vectored send.
const MAX_IOV: usize = 64;
/// Room for buffers a player keeps once it has sent everything it took: a player that keeps
/// up takes a message or two at a time, and the room a start or a skip needed (up to
/// [`BATCH_BYTES`] of references at once) is given back.
const KEEP_BUFS: usize = 8;
/// While a player's socket is full, how often its lag is checked.
const LAG_CHECK: Duration = Duration::from_millis(250);

/// How a player's session ended.
#[derive(Debug)]
pub enum End {
    PlayerClosed,
    /// No origin could serve the stream within `--edge-stall-timeout`, or a local stream's
    /// publisher left.
    StreamEnded,
    /// It took no byte for this long.
    Stalled(Duration),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PlayerClosed => f.write_str("the player closed"),
            End::StreamEnded => f.write_str("the stream ended (no origin could serve it, or its local publisher left)"),
            End::Stalled(after) => write!(f, "the player took nothing for {after:?}; disconnected"),
        }
    }
}

/// What the proxy sends an RTMP player after its `play` of `name`, before the media.
pub fn rtmp_prelude(name: &str) -> Vec<u8> {
    let access = [Amf0Value::string("|RtmpSampleAccess"), Amf0Value::Boolean(true), Amf0Value::Boolean(true)];
    let messages = [
        message::stream_begin(STREAM_ID),
        message::on_status(STREAM_ID, "status", "NetStream.Play.Reset", &format!("Playing and resetting {name}.")),
        message::on_status(STREAM_ID, "status", "NetStream.Play.Start", &format!("Started playing {name}.")),
        Message {
            csid: DATA_CSID,
            timestamp: 0,
            type_id: DATA_AMF0,
            stream_id: STREAM_ID,
            payload: amf0::encode_all(&access),
        },
    ];
    encode(&messages)
}

/// `messages` as RTMP chunks at [`CHUNK_SIZE`], from a fresh chunk stream state.
fn encode(messages: &[Message]) -> Vec<u8> {
    let mut encoder = ChunkEncoder::new();
    let mut out = Vec::new();
    // CHUNK_SIZE is in range and these messages are valid: encoding cannot fail.
    let _ = encoder.set_chunk_size(CHUNK_SIZE);
    for msg in messages {
        let _ = encoder.encode(msg, &mut out);
    }
    out
}

/// What an RTMP player gets when its stream ended, as SRS sends it when the publisher leaves:
/// StreamEOF and `onStatus` `NetStream.Play.UnpublishNotify` (players such as ffmpeg then end
/// as at the end of a file).
pub fn rtmp_epilogue() -> Vec<u8> {
    let messages = [
        message::stream_eof(STREAM_ID),
        message::on_status(STREAM_ID, "status", "NetStream.Play.UnpublishNotify", "The stream ended."),
    ];
    encode(&messages)
}

/// Serves the player on `client` from `member`'s stream: `prelude`, then the stream in
/// `wire`'s form framed as `framing` says, until the player closes, stalls or the stream
/// ends. `bytes_out` grows with every byte sent.
pub async fn serve(
    client: &TcpStream,
    member: &Membership,
    config: &EdgeConfig,
    (wire, framing): (Wire, Framing),
    prelude: Prelude,
    bytes_out: &Cell<u64>,
    dropped: &Cell<u64>,
) -> io::Result<End> {
    set_sndbuf(client, SNDBUF);
    let writer = write_loop(client, member, config, (wire, framing), prelude, bytes_out, dropped);
    let gone = async {
        discard_until_closed(client).await?;
        Ok(End::PlayerClosed)
    };
    future::or(writer, gone).await
}

/// Most bytes one discarding `recv` drops.
const DISCARD: usize = 64 * 1024;

/// Waits until the player closes its side, dropping what it sends meanwhile (an RTMP player's
/// acknowledgements and pings): with `MSG_TRUNC` the kernel discards TCP data instead of
/// copying it out (tcp(7)), so no player keeps a buffer for it.
async fn discard_until_closed(client: &TcpStream) -> io::Result<()> {
    loop {
        // SAFETY: with MSG_TRUNC on a TCP socket the kernel discards up to DISCARD bytes and
        // writes nothing to the (null) buffer; the descriptor is the client's open socket.
        let n = unsafe {
            libc::recv(client.as_raw_fd(), std::ptr::null_mut(), DISCARD, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
        };
        if n == 0 {
            return Ok(());
        }
        if n > 0 {
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => client.readable().await?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// Limits the socket's send buffer (the kernel doubles the value for its own bookkeeping).
fn set_sndbuf(client: &TcpStream, bytes: usize) {
    let value = bytes as libc::c_int;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from the valid `value`; the
    // descriptor is the client's open socket.
    unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// How a player's bytes are framed: as they are (RTMP; HTTP-FLV to an HTTP/1.0 client, whose
/// body ends with the connection), or in HTTP/1.1 chunks ending with the last, empty chunk, so
/// that an HTTP-FLV player can tell the stream ended from a connection that broke (ffmpeg
/// reports "Stream ends prematurely" for a body of unknown length that ends; SRS chunks its
/// HTTP-FLV too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Raw,
    Chunked,
}

/// The chunk that ends a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// One buffer to send.
struct Piece {
    bytes: Bytes,
    /// It carries a media frame (dropping it drops a frame).
    frame: bool,
    /// It ends its group: what must go out whole once its first byte went (one buffer when
    /// raw; a chunk's size line, data and CRLF when chunked).
    last: bool,
}

/// Bytes taken from the ring, not yet sent; the front group may be partly sent.
struct Pending {
    bufs: VecDeque<Piece>,
    /// Bytes of the front already sent.
    offset: usize,
    /// Some of the front group went out already (it must be finished).
    started: bool,
    framing: Framing,
}

impl Pending {
    fn new(framing: Framing) -> Self {
        Pending { bufs: VecDeque::new(), offset: 0, started: false, framing }
    }

    fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Whether what went out so far ends at a boundary where the body's last chunk may follow
    /// (no group partly sent), for a chunked body.
    fn between_chunks(&self) -> bool {
        self.framing == Framing::Chunked && !self.started && self.offset == 0
    }

    /// Queues `batch` (as one chunk when chunked).
    fn extend(&mut self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let len: usize = batch.iter().map(|(b, _)| b.len()).sum();
        match self.framing {
            Framing::Chunked if len == 0 => {} // a chunk of 0 would end the body
            Framing::Raw => {
                self.bufs.extend(batch.into_iter().map(|(bytes, frame)| Piece { bytes, frame, last: true }))
            }
            Framing::Chunked => {
                let size = Bytes::from(format!("{len:x}\r\n").into_bytes());
                self.bufs.push_back(Piece { bytes: size, frame: false, last: false });
                self.bufs.extend(batch.into_iter().map(|(bytes, frame)| Piece { bytes, frame, last: false }));
                self.bufs.push_back(Piece { bytes: Bytes::from_static(b"\r\n"), frame: false, last: true });
            }
        }
    }

    /// Queues what `cursor` is behind by in `ring`, up to about [`BATCH_BYTES`] (as one chunk
    /// when chunked), and advances it; straight into the queue, with no batch of its own.
    fn take(&mut self, ring: &Ring, cursor: &mut Cursor, wire: Wire) {
        let bufs = &mut self.bufs;
        match self.framing {
            Framing::Raw => {
                ring.read(cursor, wire, BATCH_BYTES, |bytes, frame| bufs.push_back(Piece { bytes, frame, last: true }))
            }
            Framing::Chunked => {
                // The chunk's size line goes first, written once the size is known.
                let at = bufs.len();
                bufs.push_back(Piece { bytes: Bytes::new(), frame: false, last: false });
                let mut len = 0;
                ring.read(cursor, wire, BATCH_BYTES, |bytes, frame| {
                    len += bytes.len();
                    bufs.push_back(Piece { bytes, frame, last: false });
                });
                if len == 0 {
                    bufs.truncate(at); // a chunk of 0 would end the body
                    return;
                }
                bufs[at].bytes = Bytes::from(format!("{len:x}\r\n").into_bytes());
                bufs.push_back(Piece { bytes: Bytes::from_static(b"\r\n"), frame: false, last: true });
            }
        }
    }

    /// Queues `bytes` (not media: a prelude or an epilogue).
    fn push(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.extend(vec![(Bytes::from(bytes), false)]);
    }

    /// Queues the end of the body: the last chunk when chunked.
    fn finish(&mut self) {
        if self.framing == Framing::Chunked {
            self.bufs.push_back(Piece { bytes: Bytes::from_static(LAST_CHUNK), frame: false, last: true });
        }
    }

    /// Drops what has not started going out (a group partly sent is kept whole); returns how
    /// many frames that was.
    fn drop_unsent(&mut self) -> u64 {
        let keep = if self.started || self.offset > 0 {
            self.bufs.iter().position(|p| p.last).map_or(self.bufs.len(), |i| i + 1)
        } else {
            0
        };
        let dropped = self.bufs.drain(keep.min(self.bufs.len())..).filter(|p| p.frame).count();
        dropped as u64
    }

    /// One vectored send of as much as fits; `Ok(0)` when the socket is full.
    fn send(&mut self, client: &TcpStream) -> io::Result<usize> {
        let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOV];
        let mut count = 0;
        for (i, piece) in self.bufs.iter().take(MAX_IOV).enumerate() {
            let buf = &piece.bytes;
            let part = if i == 0 { &buf[self.offset..] } else { &buf[..] };
            iov[i] = libc::iovec { iov_base: part.as_ptr() as *mut libc::c_void, iov_len: part.len() };
            count = i + 1;
        }
        // SAFETY: a zeroed msghdr is valid (no name, no control data); its iovecs point into
        // `self.bufs`, which is not touched until sendmsg returns, and sendmsg only reads them.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = count as _;
            libc::sendmsg(client.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if sent < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.consume(sent as usize);
        Ok(sent as usize)
    }

    fn consume(&mut self, mut n: usize) {
        while let Some(front) = self.bufs.front() {
            let left = front.bytes.len() - self.offset;
            if n < left {
                self.offset += n;
                self.started |= n > 0;
                return;
            }
            n -= left;
            self.offset = 0;
            self.started = !front.last;
            self.bufs.pop_front();
        }
        // Everything went out (a partly sent buffer returned above).
        if self.bufs.capacity() > KEEP_BUFS {
            self.bufs.shrink_to(KEEP_BUFS);
        }
    }
}

/// What a player gets before the stream: `head` as it is (an HTTP response head), then `body`
/// (RTMP play answers, the FLV header) framed as the rest of the stream.
#[derive(Debug, Default)]
pub struct Prelude {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

/// Writes the prelude, the headers and the ring to the player (see the module header).
async fn write_loop(
    client: &TcpStream,
    member: &Membership,
    config: &EdgeConfig,
    (wire, framing): (Wire, Framing),
    prelude: Prelude,
    bytes_out: &Cell<u64>,
    dropped: &Cell<u64>,
) -> io::Result<End> {
    let stream = &member.stream;
    let (max_lag, stall, merge) = (config.max_lag as u64, config.stall_timeout, config.merge_write);
    let mut pending = Pending::new(framing);
    if !prelude.head.is_empty() {
        pending.bufs.push_back(Piece { bytes: Bytes::from(prelude.head), frame: false, last: true });
    }
    pending.push(prelude.body);
    let mut cursor = {
        let ring = stream.ring.borrow();
        pending.extend(ring.headers().map(|e| (e.wire(wire).clone(), false)).collect());
        ring.start()
    };
    let mut progress = Instant::now();
    let mut last_send = progress;
    // An operator's disconnect or the shutdown ends a chunked body with its last chunk when the
    // body is between chunks then (a browser's player sees the end, not a broken stream).
    let conn = crate::shard::conn::current().filter(|_| framing == Framing::Chunked);
    let farewell = |pending: &Pending| {
        if let Some(conn) = &conn {
            conn.set_farewell(pending.between_chunks().then_some(LAST_CHUNK));
        }
    };
    loop {
        if stream.is_closed() {
            if wire == Wire::Rtmp {
                pending.push(rtmp_epilogue());
            }
            pending.finish();
            if let Some(conn) = &conn {
                conn.set_farewell(None); // the last chunk is queued
            }
            flush(client, &mut pending, bytes_out, stall).await?;
            return Ok(End::StreamEnded);
        }
        let skipped = check_lag(member, &mut cursor, &mut pending, wire, max_lag);
        if skipped > 0 {
            dropped.set(dropped.get() + skipped);
            stream.dropped(member.id, skipped);
        }
        if pending.is_empty() {
            pending.take(&stream.ring.borrow(), &mut cursor, wire);
        }
        if pending.is_empty() {
            // Merged writes: what comes within `merge` of the last send goes out with it.
            if !merge.is_zero() && !super::merge::is_due(last_send + merge) {
                super::merge::until(last_send + merge).await;
                continue;
            }
            stream.changed(member.id, cursor.seq).await;
            progress = Instant::now();
            continue;
        }
        let sent = pending.send(client)?;
        if sent > 0 {
            bytes_out.set(bytes_out.get() + sent as u64);
            farewell(&pending);
            progress = Instant::now();
            last_send = progress;
            continue;
        }
        if progress.elapsed() >= stall {
            return Ok(End::Stalled(stall));
        }
        let _ = within(LAG_CHECK, client.writable()).await.transpose()?;
    }
}

/// Sends what is pending (the stream ended), giving up after `stall` without progress.
async fn flush(client: &TcpStream, pending: &mut Pending, bytes_out: &Cell<u64>, stall: Duration) -> io::Result<()> {
    let mut progress = Instant::now();
    while !pending.is_empty() && progress.elapsed() < stall {
        let sent = pending.send(client)?;
        if sent > 0 {
            bytes_out.set(bytes_out.get() + sent as u64);
            progress = Instant::now();
        } else {
            let _ = within(LAG_CHECK, client.writable()).await.transpose()?;
        }
    }
    Ok(())
}

/// A player too far behind skips to a keyframe: what it had not started sending is dropped,
/// and the headers go again in case they changed meanwhile. Returns the frames dropped.
fn check_lag(member: &Membership, cursor: &mut Cursor, pending: &mut Pending, wire: Wire, max_lag: u64) -> u64 {
    let ring = member.stream.ring.borrow();
    let lag = ring.lag(cursor.seq);
    member.stream.set_lag(member.id, lag.unwrap_or(ring.bytes() as u64));
    if lag.is_some_and(|lag| lag <= max_lag) {
        return 0;
    }
    let (next, passed) = ring.skip(cursor.seq);
    if next.seq == cursor.seq {
        return 0; // its next entry is the keyframe to skip to (a large one just arrived)
    }
    *cursor = next;
    let dropped = passed + pending.drop_unsent();
    pending.extend(ring.headers().map(|e| (e.wire(wire).clone(), false)).collect());
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::rtmp::ChunkDecoder;
    use crate::codec::rtmp::client::{Answer, answer};

    #[test]
    fn an_rtmp_player_is_told_the_play_started_as_srs_tells_it() {
        let mut dec = ChunkDecoder::new();
        dec.set_chunk_size(CHUNK_SIZE).unwrap();
        let msgs: Vec<_> = dec.decode_all(&rtmp_prelude("cam")).unwrap().into_iter().map(|(m, _)| m).collect();
        assert_eq!(msgs[0], message::stream_begin(STREAM_ID));
        assert_eq!(answer(&msgs[1]), Answer::Status("NetStream.Play.Reset".into()));
        assert_eq!(answer(&msgs[2]), Answer::Status("NetStream.Play.Start".into()));
        assert_eq!(msgs[2].stream_id, STREAM_ID);
        let access = amf0::decode_all(&msgs[3].payload).unwrap();
        assert_eq!(access[0].as_str(), Some("|RtmpSampleAccess"));
        assert_eq!(msgs[3].type_id, DATA_AMF0);
    }

    #[test]
    fn an_rtmp_player_is_told_the_stream_ended_as_srs_tells_it() {
        let mut dec = ChunkDecoder::new();
        dec.set_chunk_size(CHUNK_SIZE).unwrap();
        let msgs: Vec<_> = dec.decode_all(&rtmp_epilogue()).unwrap().into_iter().map(|(m, _)| m).collect();
        assert_eq!(msgs[0], message::stream_eof(STREAM_ID));
        assert_eq!(answer(&msgs[1]), Answer::Status("NetStream.Play.UnpublishNotify".into()));
        assert_eq!(msgs[1].stream_id, STREAM_ID);
    }

    /// Everything pending, as it would go out.
    fn wire_bytes(p: &Pending) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, piece) in p.bufs.iter().enumerate() {
            out.extend_from_slice(&piece.bytes[if i == 0 { p.offset } else { 0 }..]);
        }
        out
    }

    #[test]
    fn chunked_pending_bytes_are_whole_chunks_and_end_with_the_last_chunk() {
        let mut p = Pending::new(Framing::Chunked);
        p.bufs.push_back(Piece { bytes: Bytes::from_static(b"HEAD\r\n\r\n"), frame: false, last: true });
        p.push(b"FLV".to_vec());
        p.extend(vec![(Bytes::from_static(b"0123456789abcdef"), true), (Bytes::from_static(b"xy"), true)]);
        assert_eq!(wire_bytes(&p), b"HEAD\r\n\r\n3\r\nFLV\r\n12\r\n0123456789abcdefxy\r\n");
        // Part of the second chunk's data went: dropping keeps that chunk whole.
        p.consume(b"HEAD\r\n\r\n3\r\nFLV\r\n12\r\n0123".len());
        p.extend(vec![(Bytes::from_static(b"zz"), true)]);
        assert_eq!(p.drop_unsent(), 1, "only the chunk not started is dropped");
        assert_eq!(wire_bytes(&p), b"456789abcdefxy\r\n");
        // Its size line only went: still started, still kept whole.
        let mut q = Pending::new(Framing::Chunked);
        q.extend(vec![(Bytes::from_static(b"abc"), true)]);
        q.consume(3);
        assert!(!q.between_chunks(), "a chunk's size line went: the last chunk may not follow");
        assert_eq!(q.drop_unsent(), 0);
        assert_eq!(wire_bytes(&q), b"abc\r\n");
        q.consume(5);
        assert!(q.is_empty() && !q.started);
        assert!(q.between_chunks(), "the chunk went whole");
        assert!(!Pending::new(Framing::Raw).between_chunks(), "a raw body has no chunks");
        q.finish();
        assert_eq!(wire_bytes(&q), b"0\r\n\r\n");
    }

    #[test]
    fn pending_bytes_go_out_in_order_and_unsent_frames_can_be_dropped() {
        let mut p = Pending::new(Framing::Raw);
        p.extend(vec![
            (Bytes::from_static(b"abc"), true),
            (Bytes::from_static(b"de"), true),
            (Bytes::from_static(b"f"), false),
        ]);
        p.consume(2);
        assert_eq!(p.offset, 2);
        assert_eq!(p.drop_unsent(), 1, "the partly sent front stays; one frame and one header go");
        assert_eq!(p.bufs.len(), 1);
        p.consume(1);
        assert!(p.is_empty());
    }

    #[test]
    fn a_player_gives_back_the_room_a_large_batch_took_once_it_went_out() {
        let mut p = Pending::new(Framing::Raw);
        p.extend((0..200).map(|_| (Bytes::from_static(b"0123456789"), true)).collect());
        assert!(p.bufs.capacity() >= 200);
        p.consume(1_000);
        assert_eq!(p.bufs.len(), 100, "half sent: the room stays while some is pending");
        assert!(p.bufs.capacity() >= 200);
        p.consume(1_000);
        assert!(p.is_empty());
        assert!(p.bufs.capacity() <= KEEP_BUFS, "capacity {} kept", p.bufs.capacity());
    }
}
