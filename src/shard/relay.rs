//! Relaying an established stream's bytes between two sockets, one direction at a time.
//!
//! Two implementations behind one function, [`one_way`], chosen by `--relay`:
//!
//! - **splice**: socket -> pipe -> socket with non-blocking `splice(2)` called on the
//!   shard thread, so the bytes never enter user space. Readiness comes from glommio's ring:
//!   when the source has nothing, the relay awaits `peek` of one byte (an io_uring RECV with
//!   MSG_PEEK, served by the kernel's fast poll for sockets: no io-wq worker is parked on an
//!   idle connection, unlike IORING_OP_SPLICE, see stack-findings.md). When the destination is
//!   full, the relay moves the pipe's next byte through user space with glommio's `write`,
//!   which waits for POLLOUT on the ring; order is kept because that byte is simply the next
//!   one of the stream.
//! - **copy** (default, the cheaper one in the fan-out and idle benchmarks): read into a buffer,
//!   write it all out. The first wait reads into a small inline buffer (no heap for an idle
//!   direction); then the buffer starts at 4 KiB and doubles, up to 64 KiB, each time a read
//!   fills it.
//!
//! Back-pressure: neither holds more than one pipe ([`PIPE_SIZE`]) or one buffer per direction.
//! A slow reader makes the relay stop reading from its source; the source's kernel buffers
//! then fill and TCP flow control pushes back to the sender (for a player, the origin: the
//! proxy's memory does not grow, and the origin applies its own policy for slow players).
//!
//! Each direction owns a read half and a write half; [`split`] makes them from one socket by
//! duplicating its descriptor, so both directions can wait at the same time.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::config::RelayMode;

/// Pipe capacity asked for with F_SETPIPE_SZ (the kernel default is 64 KiB).
pub const PIPE_SIZE: usize = 256 * 1024;
/// Largest buffer of the copy relay.
pub const COPY_BUFFER: usize = 64 * 1024;
/// First buffer of the copy relay: a direction that only ever carries small messages (a
/// player's acknowledgements) never grows past it.
const COPY_BUFFER_START: usize = 4 * 1024;

/// Splits a socket into a read half and a write half (two descriptors of one socket), and
/// makes it non-blocking so splice(2) never blocks the shard.
pub fn split(stream: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let fd = stream.as_raw_fd();
    set_nonblocking(fd)?;
    // SAFETY: `fd` is an open socket owned by `stream`; dup returns a new descriptor or -1.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor of a connected TCP socket that nothing else owns.
    let writer = unsafe { TcpStream::from_raw_fd(dup) };
    Ok((stream, writer))
}

/// Acknowledges the peer's next segments at once (TCP_QUICKACK; the kernel clears it again by
/// itself). Used after each read while a session is set up: ffmpeg and nginx-rtmp leave Nagle
/// on, so a delayed ACK here would hold each of their small writes back by up to 40 ms.
pub fn quickack(stream: &TcpStream) {
    crate::util::quickack(stream.as_raw_fd());
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
pub async fn one_way(
    mode: RelayMode,
    src: &mut TcpStream,
    dst: &mut TcpStream,
    counter: &Cell<u64>,
) -> io::Result<u64> {
    let total = match mode {
        RelayMode::Splice => splice_loop(src, dst, counter).await?,
        RelayMode::Copy => copy_loop(src, dst, counter).await?,
    };
    let _ = dst.shutdown(std::net::Shutdown::Write).await;
    Ok(total)
}

async fn copy_loop(src: &mut TcpStream, dst: &mut TcpStream, counter: &Cell<u64>) -> io::Result<u64> {
    // Wait for the first bytes with a read into a small inline buffer: glommio's read waits on
    // the ring without allocating (its peek allocates a 4 KiB-aligned buffer per wait), so an
    // idle direction costs no heap at all.
    let mut first = [0u8; 512];
    let n = src.read(&mut first).await?;
    if n == 0 {
        return Ok(0);
    }
    dst.write_all(&first[..n]).await?;
    counter.set(counter.get() + n as u64);
    let mut buf = vec![0u8; COPY_BUFFER_START];
    let mut total = n as u64;
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        dst.write_all(&buf[..n]).await?;
        if n == buf.len() && buf.len() < COPY_BUFFER {
            buf.resize(buf.len() * 2, 0);
        }
        total += n as u64;
        counter.set(counter.get() + n as u64);
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

async fn splice_loop(src: &mut TcpStream, dst: &mut TcpStream, counter: &Cell<u64>) -> io::Result<u64> {
    let mut probe = [0u8; 1];
    // Wait for the first byte before making the pipe: idle connections hold no pipe.
    if src.peek(&mut probe).await? == 0 {
        return Ok(0);
    }
    let mut pipe = Pipe::new()?;
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut total = 0u64;
    let mut src_done = false;
    // The last read from `src` got less than it asked for: the socket is probably empty, so
    // wait for readiness instead of paying a splice that returns EAGAIN.
    let mut src_drained = false;
    loop {
        if !src_done && pipe.len < pipe.capacity && !(src_drained && pipe.len > 0) {
            if src_drained {
                src_drained = false;
                if src.peek(&mut probe).await? == 0 {
                    src_done = true;
                    continue;
                }
            }
            let want = pipe.capacity - pipe.len;
            match splice(src_fd, pipe.write.as_raw_fd(), want)? {
                Moved::Bytes(n) => {
                    pipe.len += n;
                    src_drained = n < want;
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
        let sent = match splice(pipe.read.as_raw_fd(), dst_fd, pipe.len)? {
            Moved::Bytes(n) => n,
            Moved::End => return Err(io::ErrorKind::WriteZero.into()),
            Moved::WouldBlock => push_one_byte(&pipe, dst).await?,
        };
        pipe.len -= sent;
        total += sent as u64;
        counter.set(counter.get() + sent as u64);
    }
}

/// The destination is full: move the pipe's next byte with glommio's `write`, which waits on
/// the ring until the socket is writable.
async fn push_one_byte(pipe: &Pipe, dst: &mut TcpStream) -> io::Result<usize> {
    let mut byte = [0u8; 1];
    // SAFETY: reads at most one byte into the valid one-byte buffer from our pipe.
    let n = unsafe { libc::read(pipe.read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
    if n != 1 {
        return Err(io::Error::other("splice relay: pipe unexpectedly empty"));
    }
    dst.write_all(&byte).await?;
    Ok(1)
}
