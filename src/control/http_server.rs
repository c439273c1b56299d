//! A small HTTP/1.1 server for the control thread's APIs, on tokio, with the limits a public
//! port needs: a bounded number of connections (taken before `accept`), a deadline for the
//! whole request head (a client sending one byte a second gets 408), a body size cap (413
//! before reading it), a body deadline, and an idle keep-alive timeout. Handlers get a parsed
//! request and its body and return a [`Response`]; nothing they do can see a partial request.
//!
//! At the connection cap ([`Gate`]) the server waits for a connection to close (clients wait
//! in the kernel's backlog) and warns, at most once a minute. When `accept` fails for lack of
//! descriptors or kernel memory it backs off, 100 ms growing to 1 s, with one warning per
//! episode ([`AcceptBackoff`]), instead of retrying at once.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};

use crate::codec::http::{self, BodyError, Limits, Request, Response, Status};
use crate::logging::throttle::LogThrottle;
use crate::util::backoff::AcceptBackoff;

/// Bounds of one server.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    pub head: Limits,
    pub max_body: usize,
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// What log lines call this server.
    pub name: &'static str,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            head: Limits::default(),
            max_body: 64 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            name: "HTTP server",
        }
    }
}

/// A JSON error body `{"code":<status>,"error":"<reason>"}`.
pub fn error_response(status: u16, reason: &str) -> Response {
    Response::json(status, &serde_json::json!({ "code": status, "error": reason }))
}

/// Accepts connections until the task is dropped; each runs on the current `LocalSet`.
pub async fn serve<H, F>(listener: TcpListener, limits: ServerLimits, handler: H)
where
    H: Fn(Request, Vec<u8>, SocketAddr) -> F + 'static,
    F: Future<Output = Response> + 'static,
{
    let handler = Rc::new(handler);
    let name = match listener.local_addr() {
        Ok(addr) => format!("{} {addr}", limits.name),
        Err(_) => limits.name.to_string(),
    };
    let mut backoff = AcceptBackoff::new(name.clone());
    let mut gate = Gate::new(name, limits.max_connections);
    loop {
        let Some(permit) = gate.acquire().await else {
            return;
        };
        let accepted = listener.accept().await;
        let (stream, peer) = match backoff.check(accepted, std::time::Instant::now()) {
            Ok(conn) => conn,
            Err(wait) => {
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::task::spawn_local(async move {
            let _permit = permit;
            if let Err(e) = connection(stream, peer, limits, &*handler).await {
                log::debug!("http connection from {peer}: {e}");
            }
        });
    }
}

/// The connection cap of a control-thread server: a permit is taken before each `accept`, so
/// past the cap clients wait in the kernel's backlog holding no descriptor of ours. Reaching
/// the cap is logged once, then at most once per [`CAP_WARNING_INTERVAL`] with how many more
/// times it was reached (a flood of idle clients refills the server each time one closes).
pub struct Gate {
    permits: Arc<Semaphore>,
    cap: usize,
    name: String,
    saturated: bool,
    warnings: LogThrottle<()>,
}

/// The least time between two "cap reached" warnings of one server.
pub const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl Gate {
    pub fn new(name: impl Into<String>, cap: usize) -> Gate {
        Gate {
            permits: Arc::new(Semaphore::new(cap)),
            cap,
            name: name.into(),
            saturated: false,
            warnings: LogThrottle::new(1, CAP_WARNING_INTERVAL),
        }
    }

    /// A permit for one connection; waits while `cap` are open. `None` never happens in
    /// practice (the semaphore is never closed).
    pub async fn acquire(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            self.saturated = false;
            return Some(permit);
        }
        if !std::mem::replace(&mut self.saturated, true) {
            let admit = self.warnings.admit((), std::time::Instant::now());
            if admit.write {
                let again = admit
                    .summary
                    .map(|s| format!(" (reached {} more times in the last {} s)", s.suppressed, s.over.as_secs()))
                    .unwrap_or_default();
                log::warn!(
                    "{}: {} connections open, its cap; new clients wait in the backlog{again}",
                    self.name,
                    self.cap
                );
            }
        }
        self.permits.clone().acquire_owned().await.ok()
    }
}

/// How one exchange ended early.
enum Early {
    Closed,
    Respond(Response),
}

async fn connection<H, F>(
    mut stream: TcpStream,
    peer: SocketAddr,
    limits: ServerLimits,
    handler: &H,
) -> std::io::Result<()>
where
    H: Fn(Request, Vec<u8>, SocketAddr) -> F,
    F: Future<Output = Response>,
{
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    loop {
        let (req, body) = match read_request(&mut stream, &mut buf, &limits).await? {
            Ok(exchange) => exchange,
            Err(Early::Closed) => return Ok(()),
            Err(Early::Respond(resp)) => {
                log::debug!("http request from {peer} refused: {}", String::from_utf8_lossy(&resp.body));
                stream.write_all(&resp.encode(false)).await?;
                return Ok(());
            }
        };
        let keep_alive = req.keep_alive();
        let resp = handler(req, body, peer).await;
        stream.write_all(&resp.encode(keep_alive)).await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limits: &ServerLimits,
) -> std::io::Result<Result<(Request, Vec<u8>), Early>> {
    let mut head_deadline = (!buf.is_empty()).then(|| Instant::now() + limits.head_timeout);
    let req = loop {
        match http::parse_request(buf, limits.head) {
            Ok(Status::Complete(req)) => break req,
            Ok(Status::Partial) => {}
            Err(e) => {
                return Ok(Err(Early::Respond(error_response(e.status(), &e.to_string()))));
            }
        }
        let deadline = head_deadline.unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        match timeout_at(deadline, read_some(stream, buf, limits.head.max_head)).await {
            Ok(Ok(0)) => return Ok(Err(Early::Closed)),
            Ok(Ok(_)) => head_deadline = head_deadline.or(Some(Instant::now() + limits.head_timeout)),
            Ok(Err(e)) => return Err(e),
            Err(_) if head_deadline.is_none() => return Ok(Err(Early::Closed)),
            Err(_) => {
                return Ok(Err(Early::Respond(error_response(408, "request head not received in time"))));
            }
        }
    };
    let body_len = match req.content_length() {
        Ok(len) => len.unwrap_or(0),
        Err(e @ BodyError::Chunked) => {
            return Ok(Err(Early::Respond(error_response(411, &e.to_string()))));
        }
        Err(e) => return Ok(Err(Early::Respond(error_response(400, &e.to_string())))),
    };
    if body_len > limits.max_body as u64 {
        let reason = format!("request body of {body_len} bytes is over the limit of {} bytes", limits.max_body);
        return Ok(Err(Early::Respond(error_response(413, &reason))));
    }
    let end = req.head_len + body_len as usize;
    let deadline = Instant::now() + limits.body_timeout;
    while buf.len() < end {
        match timeout_at(deadline, read_some(stream, buf, end - buf.len())).await {
            Ok(Ok(0)) => return Ok(Err(Early::Closed)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Ok(Err(Early::Respond(error_response(408, "request body not received in time"))));
            }
        }
    }
    let body = buf[req.head_len..end].to_vec();
    buf.drain(..end);
    Ok(Ok((req, body)))
}

/// Reads at most `max` more bytes onto the end of `buf`.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let want = max.clamp(1, chunk.len());
    let n = stream.read(&mut chunk[..want]).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}
