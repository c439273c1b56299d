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
//!   failed accept at once, which spins a core when descriptors run out.
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

use futures_lite::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::http_server::Gate;
use crate::util::backoff::AcceptBackoff;

/// The bounds of the gRPC listener (`--grpc-max-connections`, `--grpc-idle-timeout`).
#[derive(Clone, Copy, Debug)]
pub struct GrpcLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
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
        limits,
        gate: Gate::new(name.clone(), limits.max_connections),
        backoff: AcceptBackoff::new(name),
    };
    futures_lite::stream::unfold(state, |mut st| async move {
        let permit = st.gate.acquire().await?;
        loop {
            let accepted = st.listener.accept().await;
            match st.backoff.check(accepted, std::time::Instant::now()) {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = IdleConn::new(stream, peer, permit, st.limits.idle_timeout);
                    return Some((Ok(conn), st));
                }
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    })
}

/// An accepted gRPC connection: the socket, its permit (released when tonic drops it), and an
/// idle deadline that reads fail with `TimedOut` past.
pub struct IdleConn {
    io: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    /// When a byte last moved either way.
    last: Instant,
    /// Fires at `last + idle_timeout` as it was when armed; re-armed lazily, so a busy
    /// connection costs one clock read per read or write and no timer update.
    timer: Pin<Box<Sleep>>,
}

impl IdleConn {
    fn new(io: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        let last = Instant::now();
        let timer = Box::pin(tokio::time::sleep_until(last + idle_timeout));
        IdleConn { io, peer, _permit: permit, idle_timeout, last, timer }
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
}

impl AsyncRead for IdleConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
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
        let written = ready!(Pin::new(&mut this.io).poll_write(cx, data));
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
        let written = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs));
        if matches!(written, Ok(n) if n > 0) {
            this.touch();
        }
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for IdleConn {
    type ConnectInfo = TcpConnectInfo;

    /// The socket's own addresses, as tonic's plain TCP listener would give them.
    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
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
            let limits = GrpcLimits { max_connections: 1, idle_timeout: Duration::from_millis(300) };
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
