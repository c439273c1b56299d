//! TLS in front of a TCP service (RTMPS, HTTPS stream, HTTPS API): rustls with the `ring`
//! provider, driven sans-IO over the shard's glommio socket.
//!
//! A TLS listener serves the same protocol code as its plain twin. [`serve`] runs the
//! handshake (within [`HANDSHAKE_TIMEOUT`]), then hands the protocol an `AF_UNIX` socket pair
//! end in place of the client's socket, and pumps between the two in the same task:
//!
//! ```text
//!   client --TLS--> [tcp] --decrypt--> [pair end A] ==kernel==> [pair end B] --> protocol code
//!   client <--TLS-- [tcp] <--encrypt-- [pair end A] <==kernel== [pair end B] <-- (relay, splice)
//! ```
//!
//! The protocol code sees a stream socket it can `recv`, `send`, `splice` and shut down like
//! any client socket, so RTMP, HTTP-FLV/TS, HLS and WHIP/WHEP need no TLS code, and the relay
//! modes keep working behind it (splice from the origin into the pair). What TLS costs: the
//! pump copies every byte through user space once (the cipher needs it there), plus one kernel
//! copy through the pair; see the README for the figures. (Kernel TLS would let splice go on to
//! the client's socket, but the kernels this runs on do not all offer the `tls` ULP.)
//!
//! Ending: the client's end (close_notify, FIN, or a bad record) shuts down the pair's write
//! side, so the protocol code sees its client close; the protocol code closing its end makes
//! the pump send what is left, then close_notify, within [`CLOSE_TIMEOUT`]. The connection
//! task ends when both have. Buffers: one receive buffer of [`CIPHER_BUF`] and one plaintext
//! chunk of [`PLAIN_CHUNK`] per connection; rustls never holds more than one record's worth
//! unsent, because the pump flushes after every chunk.
//!
//! Certificates ([`Certs`], in `crate::util::certs`) come from `--tls-cert`/`--tls-key` (also used by gRPC over TLS,
//! `--grpc-tls`, on the control thread: `crate::control::grpc_listener`, with ALPN `h2`) and
//! are reloaded on SIGHUP:
//! each handshake takes the current configuration (one uncontended read lock, beside the
//! handshake's public-key work), so running sessions keep theirs and new ones get the new
//! certificate; a file that does not load leaves the old one in place.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use rustls::ServerConnection;

use super::{LocalFuture, Shard, relay, within};
pub use crate::util::certs::{CertError, Certs, HANDSHAKE_TIMEOUT};

/// After the protocol code closed, the rest and close_notify must reach the client within this.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Ciphertext read from the client at a time: one full TLS record and its header.
const CIPHER_BUF: usize = 16 * 1024 + 512;
/// Plaintext taken from the protocol code at a time: one TLS record's worth.
const PLAIN_CHUNK: usize = 16 * 1024;

/// What serves a connection once TLS is off it (the plain listener's service).
pub type Inner = fn(Rc<Shard>, TcpStream, SocketAddr) -> LocalFuture;

/// Serves one TLS connection: handshake, then `inner` over the decrypted stream (see the
/// module documentation).
pub fn serve(shard: Rc<Shard>, tcp: TcpStream, peer: SocketAddr, certs: Arc<Certs>, inner: Inner) -> LocalFuture {
    Box::pin(async move {
        if let (Some(conn), Ok(local)) = (super::conn::current(), tcp.local_addr()) {
            conn.set_reached(local);
        }
        let mut tls = match ServerConnection::new(certs.current()) {
            Ok(tls) => tls,
            Err(e) => return log::warn!("tls client {peer}: cannot start a TLS session: {e}"),
        };
        let early = match within(HANDSHAKE_TIMEOUT, handshake(&tcp, &mut tls)).await {
            Some(Ok(early)) => early,
            Some(Err(e)) => return log::debug!("tls client {peer}: handshake failed: {e}"),
            None => return log::debug!("tls client {peer}: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
        };
        let (ours, theirs) = match socket_pair() {
            Ok(pair) => pair,
            Err(e) => return log::warn!("tls client {peer}: cannot make a socket pair: {e}"),
        };
        // SAFETY: both descriptors are open stream sockets just made by socketpair(2) and owned
        // by nothing else; each glommio stream takes ownership of one and closes it on drop.
        let (plain, theirs) = unsafe { (TcpStream::from_raw_fd(ours), TcpStream::from_raw_fd(theirs)) };
        let session = inner(shard, theirs, peer);
        let tls = RefCell::new(tls);
        let pumped = pump(&tcp, &tls, &plain, early);
        let ((), result) = future::zip(session, pumped).await;
        if let Err(e) = result {
            log::debug!("tls client {peer}: {e}");
        }
    })
}

/// Makes a connected pair of non-blocking `AF_UNIX` stream sockets.
fn socket_pair() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0 as RawFd; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair writes two descriptors into the valid two-element array.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else; owning them
    // here closes both if anything below failed.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((a.into_raw_fd(), b.into_raw_fd()))
}

/// Runs the server side of the handshake; returns the plaintext the client sent right after
/// it (in the same segments as its last flight).
async fn handshake(tcp: &TcpStream, tls: &mut ServerConnection) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; CIPHER_BUF];
    let mut out = Vec::new();
    let mut early = Vec::new();
    while tls.is_handshaking() {
        take_output(tls, &mut out)?;
        if !out.is_empty() {
            relay::send_all(tcp, &out).await?;
            out.clear();
            continue;
        }
        let n = relay::recv(tcp, &mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed during the handshake"));
        }
        if let Err(e) = feed(tls, &buf[..n], &mut early) {
            // The alert rustls queued tells the client why.
            if take_output(tls, &mut out).is_ok() {
                let _ = relay::send_all(tcp, &out).await;
            }
            return Err(e);
        }
    }
    take_output(tls, &mut out)?;
    relay::send_all(tcp, &out).await?;
    Ok(early)
}

/// Appends what rustls has to send to `out`.
fn take_output(tls: &mut ServerConnection, out: &mut Vec<u8>) -> io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(out)?;
    }
    Ok(())
}

/// Hands rustls the ciphertext `data` and appends the plaintext it yields to `clear`; `true`
/// once the client has ended its side (close_notify).
fn feed(tls: &mut ServerConnection, mut data: &[u8], clear: &mut Vec<u8>) -> io::Result<bool> {
    let mut ended = false;
    while !data.is_empty() {
        tls.read_tls(&mut data)?;
        tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        ended |= take_plaintext(tls, clear)?;
    }
    Ok(ended)
}

/// Moves the plaintext rustls holds to `clear`; `true` once the client has ended its side.
fn take_plaintext(tls: &mut ServerConnection, clear: &mut Vec<u8>) -> io::Result<bool> {
    let mut reader = tls.reader();
    loop {
        let old = clear.len();
        clear.resize(old + PLAIN_CHUNK, 0);
        let read = reader.read(&mut clear[old..]);
        clear.truncate(old + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            // The client closed its TCP side without close_notify: the end of its data all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Pumps both ways until the protocol code has closed its end (and the client has the rest).
async fn pump(tcp: &TcpStream, tls: &RefCell<ServerConnection>, plain: &TcpStream, early: Vec<u8>) -> io::Result<()> {
    let (wake, woken) = local_channel::new_bounded(1);
    let up = async {
        let result = up(tcp, tls, plain, early, &wake).await;
        // The protocol code sees its client close; the pump goes on until it closes too.
        let _ = plain.shutdown(Shutdown::Write).await;
        if let Err(e) = result {
            log::debug!("tls: client side ended: {e}");
        }
        future::pending::<io::Result<()>>().await
    };
    future::or(down(tcp, tls, plain, &woken), up).await
}

/// Client to protocol code: decrypts what the client sends into the pair until it ends.
async fn up(
    tcp: &TcpStream,
    tls: &RefCell<ServerConnection>,
    plain: &TcpStream,
    mut clear: Vec<u8>,
    wake: &LocalSender<()>,
) -> io::Result<()> {
    let mut cipher = vec![0u8; CIPHER_BUF];
    loop {
        if !clear.is_empty() {
            relay::send_all(plain, &clear).await?;
            clear.clear();
        }
        let n = relay::recv(tcp, &mut cipher).await?;
        if n == 0 {
            return Ok(());
        }
        let fed = feed(&mut tls.borrow_mut(), &cipher[..n], &mut clear);
        if tls.borrow().wants_write() {
            let _ = wake.try_send(()); // an alert or a key update answer to send
        }
        if fed? {
            relay::send_all(plain, &clear).await?;
            return Ok(());
        }
    }
}

/// Protocol code to client: encrypts what the protocol code writes into the pair until it
/// closes its end, then sends close_notify.
async fn down(
    tcp: &TcpStream,
    tls: &RefCell<ServerConnection>,
    plain: &TcpStream,
    woken: &LocalReceiver<()>,
) -> io::Result<()> {
    let mut chunk = vec![0u8; PLAIN_CHUNK];
    let mut out = Vec::new();
    loop {
        flush(tcp, tls, &mut out).await?;
        let n = match try_recv(plain, &mut chunk)? {
            Some(n) => n,
            None => {
                let readable = async { plain.readable().await.map(|()| true) };
                let poked = async { Ok(woken.recv().await.is_none()) };
                future::or(readable, poked).await?;
                continue;
            }
        };
        if n == 0 {
            tls.borrow_mut().send_close_notify();
            let _ = within(CLOSE_TIMEOUT, flush(tcp, tls, &mut out)).await;
            let _ = tcp.shutdown(Shutdown::Write).await;
            return Ok(());
        }
        tls.borrow_mut().writer().write_all(&chunk[..n])?;
    }
}

/// Sends the client everything rustls has to send.
async fn flush(tcp: &TcpStream, tls: &RefCell<ServerConnection>, out: &mut Vec<u8>) -> io::Result<()> {
    take_output(&mut tls.borrow_mut(), out)?;
    if !out.is_empty() {
        relay::send_all(tcp, out).await?;
        out.clear();
    }
    Ok(())
}

/// One non-blocking receive: `None` when nothing is there now.
fn try_recv(stream: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into the valid, exclusively borrowed
        // `buf`; the descriptor is the stream's open socket.
        let n = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}
