//! The origin side of one HTTP request: dial the origin's HTTP endpoint, send the player's
//! request (method, path, query and end-to-end headers), read the response head, and for
//! playlists the whole body.
//!
//! One origin connection per player request (`Connection: close` upstream): live bodies are
//! endless and segments are rare next to them, so pooling would save little.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;

use crate::balance::Origin;
use crate::balance::endpoint::first_tcp;
use crate::codec::http::{self, BodyLength, ChunkedDecoder, Limits, Request, ResponseHead, Status};
use crate::shard::relay;

/// Limits on an origin's response head (origins are trusted more than players, not blindly).
const ORIGIN_HEAD_LIMITS: Limits = Limits { max_head: 64 * 1024, max_headers: 128 };
/// Largest playlist the proxy reads to rewrite.
pub const MAX_PLAYLIST: usize = 4 * 1024 * 1024;

/// Request headers a playlist fetch does not forward: the rewritten body matches neither the
/// origin's validators nor its encodings.
const PLAYLIST_DROPPED: [&str; 6] =
    ["accept-encoding", "if-none-match", "if-modified-since", "if-range", "range", "if-match"];

/// Why an origin could not answer; each maps to the player's status.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origin {0} has no HTTP endpoint")]
    NoEndpoint(String),
    #[error("origin {addr} unreachable: {source}")]
    Dial { addr: SocketAddr, source: std::io::Error },
    #[error("origin {0} did not accept the connection within {1:?}")]
    DialTimeout(SocketAddr, Duration),
    #[error("origin {0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("origin {0} closed the connection before its response head")]
    Closed(SocketAddr),
    #[error("origin {0} sent a bad response: {1}")]
    Bad(SocketAddr, String),
    #[error("origin {0} sent a playlist larger than {MAX_PLAYLIST} bytes")]
    TooLarge(SocketAddr),
    #[error("origin {0} i/o: {1}")]
    Io(SocketAddr, std::io::Error),
}

impl OriginError {
    /// How the shard counts it: a missing endpoint, else an origin that failed.
    pub fn pick_failure(&self) -> crate::bridge::PickFailure {
        use crate::bridge::PickFailure;
        match self {
            OriginError::NoEndpoint(_) => PickFailure::NoEndpoint,
            _ => PickFailure::DialFailed,
        }
    }

    /// The status the player gets: 504 for a timeout, else 502.
    pub fn status(&self) -> u16 {
        match self {
            OriginError::Timeout(..) | OriginError::DialTimeout(..) => 504,
            _ => 502,
        }
    }

    /// Whether the origin could not be reached at all (refused, or no answer to the connect):
    /// the session moves to another origin.
    pub fn is_dial_failure(&self) -> bool {
        matches!(self, OriginError::Dial { .. } | OriginError::DialTimeout(..))
    }
}

/// The origin's HTTP address.
pub fn http_addr(origin: &Origin) -> Result<SocketAddr, OriginError> {
    let reg = &origin.registration;
    let endpoint = first_tcp(&reg.http).ok_or_else(|| OriginError::NoEndpoint(origin.id.0.clone()))?;
    Ok(SocketAddr::new(reg.ip, endpoint.port))
}

/// A connected origin whose response head has been read.
pub struct Answered {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    pub head: ResponseHead,
    /// Bytes read past the head: the start of the body.
    pub rest: Vec<u8>,
}

/// Sends `req` (and its `body`, whose length its `Content-Length` gives) to the origin at
/// `addr` and reads the response head, all within `timeout` (the dial, then the head, each get
/// the whole timeout). `playlist` asks for an unencoded, unconditional answer.
pub async fn request(
    addr: SocketAddr,
    req: &Request,
    body: &[u8],
    peer: SocketAddr,
    playlist: bool,
    timeout: Duration,
) -> Result<Answered, OriginError> {
    let stream = match TcpStream::connect_timeout(addr, timeout).await {
        Ok(s) => s,
        Err(e) => {
            let e = std::io::Error::from(e);
            if e.kind() == std::io::ErrorKind::TimedOut {
                return Err(OriginError::DialTimeout(addr, timeout));
            }
            return Err(OriginError::Dial { addr, source: e });
        }
    };
    let _ = stream.set_nodelay(true);
    crate::shard::conn::keepalive(std::os::fd::AsRawFd::as_raw_fd(&stream));
    let mut wire = encode_request(req, addr, peer, playlist);
    wire.extend_from_slice(body);
    let deadline = Instant::now() + timeout;
    within(deadline, addr, relay::send_all(&stream, &wire)).await?.map_err(|e| OriginError::Io(addr, e))?;
    let mut buf = Vec::new();
    loop {
        let old = buf.len();
        buf.resize(old + 8192, 0);
        let n = within(deadline, addr, relay::recv(&stream, &mut buf[old..])).await?;
        let n = n.map_err(|e| OriginError::Io(addr, e))?;
        buf.truncate(old + n);
        if n == 0 {
            return Err(OriginError::Closed(addr));
        }
        match http::parse_response(&buf, ORIGIN_HEAD_LIMITS) {
            Ok(Status::Partial) => continue,
            Ok(Status::Complete(head)) => {
                let rest = buf.split_off(head.head_len);
                return Ok(Answered { stream, addr, head, rest });
            }
            Err(e) => return Err(OriginError::Bad(addr, e.to_string())),
        }
    }
}

/// Reads the whole body of an answered request (a playlist, an SDP answer; at most
/// [`MAX_PLAYLIST`] bytes) by `deadline`.
pub async fn read_body(answered: &mut Answered, method: &str, deadline: Instant) -> Result<Vec<u8>, OriginError> {
    let addr = answered.addr;
    let length = answered.head.body_length(method).map_err(|e| OriginError::Bad(addr, e.to_string()))?;
    let mut raw = std::mem::take(&mut answered.rest);
    let mut body = Vec::new();
    let mut chunked = ChunkedDecoder::default();
    let mut used = 0;
    loop {
        let done = match length {
            BodyLength::Empty => return Ok(Vec::new()),
            BodyLength::Exact(n) if n > MAX_PLAYLIST as u64 => return Err(OriginError::TooLarge(addr)),
            BodyLength::Exact(n) => raw.len() as u64 >= n,
            BodyLength::Chunked => {
                used += chunked.decode(&raw[used..], &mut body).map_err(|e| OriginError::Bad(addr, e.to_string()))?;
                chunked.is_done()
            }
            BodyLength::UntilClose => false,
        };
        if done {
            break;
        }
        if raw.len() > MAX_PLAYLIST + 64 * 1024 || body.len() > MAX_PLAYLIST {
            return Err(OriginError::TooLarge(addr));
        }
        let old = raw.len();
        raw.resize(old + 16 * 1024, 0);
        let n = within(deadline, addr, relay::recv(&answered.stream, &mut raw[old..])).await?;
        let n = n.map_err(|e| OriginError::Io(addr, e))?;
        raw.truncate(old + n);
        if n == 0 {
            match length {
                BodyLength::UntilClose => break,
                _ => return Err(OriginError::Bad(addr, "body ended early".into())),
            }
        }
    }
    Ok(match length {
        BodyLength::Exact(n) => {
            raw.truncate(n as usize);
            raw
        }
        BodyLength::Chunked => body,
        _ => raw,
    })
}

async fn within<T>(deadline: Instant, addr: SocketAddr, f: impl Future<Output = T>) -> Result<T, OriginError> {
    let left = deadline.saturating_duration_since(Instant::now());
    crate::shard::within(left, f).await.ok_or(OriginError::Timeout(addr, left))
}

/// The request line and headers sent upstream: the player's method, path, query and HTTP
/// version (so an HTTP/1.0 player never gets a chunked body), its end-to-end headers, its
/// address appended to `X-Forwarded-For`, and `Connection: close`.
fn encode_request(req: &Request, addr: SocketAddr, peer: SocketAddr, playlist: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    // A playlist is always fetched whole: the player's HEAD gets the rewritten length.
    let method = if playlist && req.method == "HEAD" { "GET" } else { req.method.as_str() };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.as_bytes());
    if let Some(q) = &req.query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(if req.version == 0 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
    let mut forwarded_for = None;
    let mut has_host = false;
    for (name, value) in http::end_to_end(&req.headers) {
        let lower = name.to_ascii_lowercase();
        if lower == "x-forwarded-for" {
            forwarded_for = Some(value.as_slice());
            continue;
        }
        if playlist && PLAYLIST_DROPPED.contains(&lower.as_str()) {
            continue;
        }
        has_host |= lower == "host";
        push_header(&mut out, name, value);
    }
    if !has_host {
        push_header(&mut out, "Host", addr.to_string().as_bytes());
    }
    let xff = match forwarded_for {
        Some(prior) => format!("{}, {}", String::from_utf8_lossy(prior), peer.ip()),
        None => peer.ip().to_string(),
    };
    push_header(&mut out, "X-Forwarded-For", xff.as_bytes());
    if playlist {
        push_header(&mut out, "Accept-Encoding", b"identity");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_request_keeps_query_and_end_to_end_headers() {
        let raw = b"GET /live/a.flv?token=1&x=%20 HTTP/1.1\r\nHost: example.com:18080\r\nUser-Agent: ffprobe\r\n\
Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Forwarded-For: 10.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n";
        let Ok(Status::Complete(req)) = http::parse_request(raw, Limits::default()) else { panic!() };
        let addr: SocketAddr = "10.1.1.1:8080".parse().unwrap();
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let live = String::from_utf8(encode_request(&req, addr, peer, false)).unwrap();
        assert_eq!(
            live,
            "GET /live/a.flv?token=1&x=%20 HTTP/1.1\r\nHost: example.com:18080\r\nUser-Agent: ffprobe\r\n\
Accept-Encoding: gzip\r\nX-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nConnection: close\r\n\r\n"
        );
        let playlist = String::from_utf8(encode_request(&req, addr, peer, true)).unwrap();
        assert!(playlist.contains("Accept-Encoding: identity\r\n") && !playlist.contains("gzip"), "{playlist}");
        let Ok(Status::Complete(old)) = http::parse_request(b"GET /a.ts HTTP/1.0\r\n\r\n", Limits::default()) else {
            panic!()
        };
        let wire = String::from_utf8(encode_request(&old, addr, peer, false)).unwrap();
        assert!(wire.starts_with("GET /a.ts HTTP/1.0\r\nHost: 10.1.1.1:8080\r\n"), "{wire}");
    }
}
