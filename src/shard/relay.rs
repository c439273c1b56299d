//! Relaying an established stream's bytes between two sockets, one direction at a time, plus
//! the small readiness-based I/O helpers the RTMP session uses around it.
//!
//! Readiness comes from the shard's io_uring: `TcpStream::readable`/`writable` (a POLL_ADD,
//! added to the vendored glommio, see vendor/glommio/STREAMGATE-PATCH.md). No io-wq worker is
//! ever parked on an idle connection (IORING_OP_SPLICE would park one per idle socket), no
//! buffer is held while waiting, and everything takes `&TcpStream`, so both directions of a
//! session share its two sockets: two descriptors per session, no duplicates.
//!
//! Two relays behind one function, [`one_way`], chosen by `--relay`:
//!
//! - **copy**: recv into a buffer, send it all. The buffer is allocated with the first readable bytes (an idle direction has
//!   none) at 4 KiB and doubles, up to 64 KiB, each time a read fills it.
//! - **splice** (default): socket -> pipe -> socket with non-blocking `splice(2)` on the shard thread, so
//!   the bytes never enter user space; the pipe is made with the first readable bytes.
//!
//! [`one_way_inspect`] is the copy relay (the same loop) handing each chunk to an observer
//! after sending it: the upstream direction of RTMP publishers, whose bytes feed the media
//! inspector. Players and everything else use [`one_way`].
//!
//! Back-pressure: neither holds more than one pipe ([`PIPE_SIZE`]) or one buffer per direction.
//! A slow reader makes the relay stop reading from its source; the source's kernel buffers
//! then fill and TCP flow control pushes back to the sender (for a player, the origin: the
//! proxy's memory does not grow, and the origin applies its own policy for slow players).

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use glommio::net::TcpStream;

use crate::config::RelayMode;

/// Pipe capacity asked for with F_SETPIPE_SZ (the kernel default is 64 KiB).
pub const PIPE_SIZE: usize = 256 * 1024;
/// Largest buffer of the copy relay.
pub const COPY_BUFFER: usize = 64 * 1024;
/// First buffer of the copy relay: a direction that only ever carries small messages (a
/// player's acknowledgements) never grows past it.
const COPY_BUFFER_START: usize = 4 * 1024;

/// Acknowledges the peer's next segments at once (TCP_QUICKACK; the kernel clears it again by
/// itself). Used after each read while a session is set up: ffmpeg and nginx-rtmp leave Nagle
/// on, so a delayed ACK here would hold each of their small writes back by up to 40 ms.
pub fn quickack(stream: &TcpStream) {
    crate::util::quickack(stream.as_raw_fd());
}

/// Receives into `buf`, waiting on the ring while nothing is there; `Ok(0)` at end of stream.
pub async fn recv(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into the valid, exclusively borrowed
        // `buf`; the descriptor is the stream's open socket.
        let n = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => stream.readable().await?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// Sends all of `buf`, waiting on the ring while the socket is full.
pub async fn send_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        // SAFETY: send reads at most `buf.len()` bytes from the valid `buf`.
        let n = unsafe { libc::send(stream.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
        if n > 0 {
            buf = &buf[n as usize..];
            continue;
        }
        let e = if n == 0 { io::ErrorKind::WriteZero.into() } else { io::Error::last_os_error() };
        match e.kind() {
            io::ErrorKind::WouldBlock => stream.writable().await?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor with F_GETFL/F_SETFL has no memory effects.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Moves bytes from `src` to `dst` until `src` ends (returns the byte count) or either fails.
/// `counter` is increased as bytes go out. On a clean end of `src`, `dst`'s write side is shut
/// down so the peer sees the end too.
///
/// `batch` (`--relay-batch`, zero for none): once `src` has been drained, the relay waits this
/// long after it becomes readable again before moving its bytes, so that several small
/// messages (a live stream's audio and video frames) go out in one syscall and fewer, larger
/// segments. It delays those bytes by up to `batch`; a source that keeps its socket full (a
/// bulk transfer) is never delayed.
pub async fn one_way(
    mode: RelayMode,
    src: &TcpStream,
    dst: &TcpStream,
    counter: &Cell<u64>,
    batch: Duration,
) -> io::Result<u64> {
    let total = match mode {
        RelayMode::Splice => splice_loop(src, dst, counter, u64::MAX, batch).await?,
        RelayMode::Copy => copy_loop(src, dst, counter, u64::MAX, batch, |_| {}).await?,
    };
    let _ = dst.shutdown(std::net::Shutdown::Write).await;
    Ok(total)
}

/// [`one_way`] with the copy relay whatever `--relay` says, handing `observe` every chunk
/// right after it was sent on (the bytes pass through user space anyway). For RTMP
/// publishers, whose upstream bytes feed the media inspector.
pub async fn one_way_inspect(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &Cell<u64>,
    observe: impl FnMut(&[u8]),
) -> io::Result<u64> {
    let total = copy_loop(src, dst, counter, u64::MAX, Duration::ZERO, observe).await?;
    let _ = dst.shutdown(std::net::Shutdown::Write).await;
    Ok(total)
}

/// Moves exactly `len` bytes from `src` to `dst` (an HTTP body of known length), leaving both
/// open; `src` ending early is an `UnexpectedEof` error.
pub async fn forward_exact(
    mode: RelayMode,
    src: &TcpStream,
    dst: &TcpStream,
    len: u64,
    counter: &Cell<u64>,
) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let total = match mode {
        RelayMode::Splice => splice_loop(src, dst, counter, len, Duration::ZERO).await?,
        RelayMode::Copy => copy_loop(src, dst, counter, len, Duration::ZERO, |_| {}).await?,
    };
    if total < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("source ended after {total} of {len} bytes")));
    }
    Ok(())
}

/// Relays until `src` ends or `limit` bytes have moved; returns the byte count. `observe` sees
/// each chunk after it was sent.
async fn copy_loop(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &Cell<u64>,
    limit: u64,
    batch: Duration,
    mut observe: impl FnMut(&[u8]),
) -> io::Result<u64> {
    src.readable().await?;
    let mut buf = vec![0u8; COPY_BUFFER_START];
    let mut total = 0u64;
    let mut drained = false;
    loop {
        let want = usize::try_from(limit - total).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(total);
        }
        // The last read got less than it asked for: the socket is empty (TCP delivers what it
        // has), so wait for readiness instead of paying a recv that returns EAGAIN.
        if drained {
            src.readable().await?;
            if !batch.is_zero() {
                glommio::timer::sleep(batch).await;
            }
        }
        let n = recv(src, &mut buf[..want]).await?;
        drained = n < want;
        if n == 0 {
            return Ok(total);
        }
        send_all(dst, &buf[..n]).await?;
        total += n as u64;
        counter.set(counter.get() + n as u64);
        observe(&buf[..n]);
        if n == buf.len() && buf.len() < COPY_BUFFER {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// A pipe used as the splice buffer of one direction.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe now.
    len: usize,
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the valid two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created by pipe2 and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on our pipe; on failure the pipe keeps its default size.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        let capacity = if size > 0 { size as usize } else { 64 * 1024 };
        Ok(Pipe { read, write, len: 0, capacity })
    }
}

/// Outcome of one non-blocking splice(2).
enum Moved {
    Bytes(usize),
    End,
    WouldBlock,
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Moved> {
    let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
    // SAFETY: both descriptors are open for the duration of the call; null offsets mean
    // "current position", as splice(2) requires for sockets and pipes.
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    match n {
        0 => Ok(Moved::End),
        n if n > 0 => Ok(Moved::Bytes(n as usize)),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock { Ok(Moved::WouldBlock) } else { Err(e) }
        }
    }
}

/// Relays until `src` ends or `limit` bytes have moved; returns the byte count.
async fn splice_loop(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &Cell<u64>,
    limit: u64,
    batch: Duration,
) -> io::Result<u64> {
    // Wait for the first bytes before making the pipe: idle directions hold no pipe.
    src.readable().await?;
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    set_nonblocking(src_fd)?;
    set_nonblocking(dst_fd)?;
    let mut pipe = Pipe::new()?;
    let mut total = 0u64;
    // Bytes taken from `src` so far (some may still be in the pipe).
    let mut taken = 0u64;
    let mut src_done = false;
    // The last read from `src` got less than it asked for: the socket is probably empty, so
    // wait for readiness instead of paying a splice that returns EAGAIN.
    let mut src_drained = false;
    loop {
        if !src_done && pipe.len < pipe.capacity && !(src_drained && pipe.len > 0) {
            if src_drained {
                src_drained = false;
                src.readable().await?;
                if !batch.is_zero() {
                    glommio::timer::sleep(batch).await;
                }
            }
            let want = usize::try_from(limit - taken).unwrap_or(usize::MAX).min(pipe.capacity - pipe.len);
            match splice(src_fd, pipe.write.as_raw_fd(), want)? {
                Moved::Bytes(n) => {
                    pipe.len += n;
                    taken += n as u64;
                    src_drained = n < want;
                    src_done = taken == limit;
                }
                Moved::End => src_done = true,
                Moved::WouldBlock => src_drained = true,
            }
        }
        if pipe.len == 0 {
            if src_done {
                return Ok(total);
            }
            continue;
        }
        match splice(pipe.read.as_raw_fd(), dst_fd, pipe.len)? {
            Moved::Bytes(n) => {
                pipe.len -= n;
                total += n as u64;
                counter.set(counter.get() + n as u64);
            }
            Moved::End => return Err(io::ErrorKind::WriteZero.into()),
            Moved::WouldBlock => dst.writable().await?,
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
