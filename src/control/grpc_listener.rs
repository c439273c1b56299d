//! The gRPC listener's connections, handed to tonic as its incoming stream ([`incoming`]):
//!
//! - at most `--grpc-max-connections` open: a permit is taken *before* `accept`, so past the
//!   cap new clients wait in the kernel's backlog, holding no descriptor of ours (a warning
//!   when the cap is reached, at most one a minute: [`Gate`]);
//! - each closed after `--grpc-idle-timeout` without a byte in either direction
//!   ([`IdleConn`]): a client that connects and says nothing, a dead peer, or an HTTP/2
//!   connection with no traffic. The server sends no HTTP/2 pings of its own (their answers
//!   would make every live client look busy); a client that wants a quiet stream (a health
//!   `Watch`) kept open longer sends its own keepalive pings;
//! - `accept` failures backed off ([`AcceptBackoff`]): tonic's own `TcpIncoming` retries a
//!   failed accept at once, which spins a core when descriptors run out;
//! - with `--grpc-tls`, TLS (tokio-rustls, the certificate of `--tls-cert` as it is at the
//!   handshake, so SIGHUP reloads reach new connections): the handshake runs inside the
//!   connection's first read or write, in tonic's task for that connection, so a slow client
//!   holds up nobody else's accept; it must finish within [`HANDSHAKE_TIMEOUT`] (and the idle
//!   timeout). A plaintext client's bytes are not a ClientHello: rustls answers with an alert
//!   and the connection is closed.
//!
//! The stream never yields an error; tonic's per-connection tasks see a connection end with a
//! `TimedOut` read error when it has been idle too long, and close it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::sync::Arc;

use futures_lite::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::http_server::Gate;
use crate::util::backoff::AcceptBackoff;
use crate::util::certs::Certs;

/// A TLS client must finish its handshake within this long after it was accepted.
pub const HANDSHAKE_TIMEOUT: Duration = crate::util::certs::HANDSHAKE_TIMEOUT;

/// The bounds of the gRPC listener (`--grpc-max-connections`, `--grpc-idle-timeout`), and its
/// certificate when it serves TLS (`--grpc-tls`).
#[derive(Clone, Debug)]
pub struct GrpcLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub tls: Option<Arc<Certs>>,
}

struct Accepting {
    listener: TcpListener,
    limits: GrpcLimits,
    gate: Gate,
    backoff: AcceptBackoff,
}

/// tonic's incoming connections from `listener`, within `limits`.
pub fn incoming(listener: TcpListener, limits: GrpcLimits) -> impl Stream<Item = Result<IdleConn, Infallible>> {
    let name = match listener.local_addr() {
        Ok(addr) => format!("gRPC {addr}"),
        Err(_) => "gRPC".to_string(),
    };
    let state = Accepting {
        listener,
        gate: Gate::new(name.clone(), limits.max_connections),
        limits,
        backoff: AcceptBackoff::new(name),
    };
    futures_lite::stream::unfold(state, |mut st| async move {
        let permit = st.gate.acquire().await?;
        loop {
            let accepted = st.listener.accept().await;
            match st.backoff.check(accepted, std::time::Instant::now()) {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let tls = st.limits.tls.as_ref().map(|certs| certs.current_grpc());
                    let conn = IdleConn::new(stream, peer, permit, st.limits.idle_timeout, tls);
                    return Some((Ok(conn), st));
                }
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    })
}

/// An accepted gRPC connection: the socket (plain, or TLS once its handshake is done), its
/// permit (released when tonic drops it), and an idle deadline that reads fail with
/// `TimedOut` past.
pub struct IdleConn {
    io: Io,
    peer: SocketAddr,
    info: TcpConnectInfo,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    /// When a byte last moved either way.
    last: Instant,
    /// Fires at `last + idle_timeout` as it was when armed (or at the handshake deadline while
    /// a TLS handshake runs); re-armed lazily, so a busy connection costs one clock read per
    /// read or write and no timer update.
    timer: Pin<Box<Sleep>>,
}

/// The connection's byte stream.
enum Io {
    Plain(TcpStream),
    /// A TLS handshake under way, to be done by `deadline`.
    Handshake {
        accept: Box<tokio_rustls::Accept<TcpStream>>,
        deadline: Instant,
    },
    Tls(Box<TlsStream<TcpStream>>),
    /// The handshake failed: every read and write fails.
    Failed,
}

impl IdleConn {
    fn new(
        io: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        idle_timeout: Duration,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let info = io.connect_info();
        let last = Instant::now();
        let (io, first_deadline) = match tls {
            None => (Io::Plain(io), last + idle_timeout),
            Some(config) => {
                let deadline = last + HANDSHAKE_TIMEOUT.min(idle_timeout);
                (
                    Io::Handshake { accept: Box::new(tokio_rustls::TlsAcceptor::from(config).accept(io)), deadline },
                    deadline,
                )
            }
        };
        let timer = Box::pin(tokio::time::sleep_until(first_deadline));
        IdleConn { io, peer, info, _permit: permit, idle_timeout, last, timer }
    }

    fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// Ready with an error once nothing has moved for the idle timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.last + self.idle_timeout;
            if Instant::now() >= deadline {
                log::debug!("gRPC connection from {} closed: idle for {:?}", self.peer, self.idle_timeout);
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "gRPC connection idle"));
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    /// Drives a TLS handshake to its end; ready at once for a plain connection or a finished
    /// handshake. A failed or late handshake fails the connection (tonic then drops it).
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Io::Handshake { accept, deadline } = &mut self.io else {
            return match self.io {
                Io::Failed => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "TLS handshake failed"))),
                _ => Poll::Ready(Ok(())),
            };
        };
        let deadline = *deadline;
        match Pin::new(accept.as_mut()).poll(cx) {
            Poll::Ready(Ok(stream)) => {
                self.io = Io::Tls(Box::new(stream));
                self.touch();
                self.timer.as_mut().reset(self.last + self.idle_timeout);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                self.io = Io::Failed;
                log::debug!("gRPC connection from {}: TLS handshake failed: {e}", self.peer);
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                ready!(self.timer.as_mut().poll(cx));
                self.io = Io::Failed;
                log::debug!("gRPC connection from {}: no TLS handshake within {:?}", self.peer, deadline - self.last);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake in time")))
            }
        }
    }

    /// The stream to read and write, once any handshake is done (after `poll_handshake` said
    /// so, this is never the error).
    fn stream(&mut self) -> io::Result<Pin<&mut (dyn AsyncReadWrite + Unpin)>> {
        match &mut self.io {
            Io::Plain(s) => Ok(Pin::new(s)),
            Io::Tls(s) => Ok(Pin::new(s.as_mut())),
            Io::Handshake { .. } | Io::Failed => Err(io::Error::new(io::ErrorKind::NotConnected, "no TLS session")),
        }
    }
}

/// What tonic needs of a connection's byte stream.
trait AsyncReadWrite: AsyncRead + AsyncWrite {}
impl<T: AsyncRead + AsyncWrite> AsyncReadWrite for T {}

impl AsyncRead for IdleConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        let before = buf.filled().len();
        match this.stream()?.poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for IdleConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        let written = ready!(this.stream()?.poll_write(cx, data));
        if matches!(written, Ok(n) if n > 0) {
            this.touch();
        }
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        let written = ready!(this.stream()?.poll_write_vectored(cx, bufs));
        if matches!(written, Ok(n) if n > 0) {
            this.touch();
        }
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
            Io::Handshake { .. } | Io::Failed => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        this.stream()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.io {
            // Nothing was said over TLS: there is nothing to close politely.
            Io::Handshake { .. } | Io::Failed => Poll::Ready(Ok(())),
            _ => this.stream()?.poll_shutdown(cx),
        }
    }
}

impl Connected for IdleConn {
    type ConnectInfo = TcpConnectInfo;

    /// The socket's own addresses, as tonic's plain TCP listener would give them.
    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// Two connections at a cap of one: the second is not accepted until the first closes;
    /// a silent connection ends with TimedOut after the idle timeout, one that keeps talking
    /// does not.
    #[test]
    fn cap_and_idle_timeout() {
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let limits = GrpcLimits { max_connections: 1, idle_timeout: Duration::from_millis(300), tls: None };
            let mut conns = Box::pin(incoming(listener, limits));
            let mut a = TcpStream::connect(addr).await.unwrap();
            let _b = TcpStream::connect(addr).await.unwrap();
            let Some(Ok(mut first)) = conns.next().await else { panic!("no connection") };
            let second = tokio::time::timeout(Duration::from_millis(200), conns.next()).await;
            assert!(second.is_err(), "a second connection was accepted past the cap");

            // Talking keeps it open past the idle timeout.
            let mut buf = [0u8; 8];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                a.write_all(b"x").await.unwrap();
                assert_eq!(first.read(&mut buf).await.unwrap(), 1);
            }
            let t0 = Instant::now();
            let err = first.read(&mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "{took:?}");
            drop(first);
            let next = tokio::time::timeout(Duration::from_secs(2), conns.next()).await;
            assert!(matches!(next, Ok(Some(Ok(_)))), "the waiting client was not accepted once the first closed");
        });
    }
}
