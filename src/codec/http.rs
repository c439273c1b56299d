//! HTTP/1.x request heads and responses, sans-io, on httparse.
//!
//! [`parse_request`] turns the bytes read so far into a [`Status`]: `Partial` until the blank
//! line arrives, then an owned [`Request`] and the length of the head, so the caller knows
//! where the body starts. Limits are part of the call ([`Limits`]): a head longer than
//! `max_head` or with more than `max_headers` headers is an error the caller answers with 431,
//! never a growing buffer. Responses are written by [`Response::encode`].

use std::fmt::Write as _;

/// Maximum number of headers httparse is given room for.
pub const MAX_HEADERS_CAP: usize = 128;

/// Bounds on a request head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest head (request line + headers + blank line) in bytes.
    pub max_head: usize,
    /// Most headers (at most [`MAX_HEADERS_CAP`]).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head: 16 * 1024, max_headers: 64 }
    }
}

/// A parse result that may need more bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Status<T> {
    Complete(T),
    Partial,
}

/// Why a request head was refused; [`HttpError::status`] gives the answer to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("request head longer than {0} bytes")]
    HeadTooLarge(usize),
    #[error("more than {0} request headers")]
    TooManyHeaders(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("malformed request target {0:?}")]
    BadTarget(String),
}

impl HttpError {
    /// The response status for this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge(_) | HttpError::TooManyHeaders(_) => 431,
            HttpError::Malformed(_) | HttpError::BadTarget(_) => 400,
        }
    }
}

/// An owned request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, still percent-encoded, without the query.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Length of the head in bytes, blank line included: the body starts here.
    pub head_len: usize,
}

impl Request {
    /// The first value of header `name` (case-insensitive), as text if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Whether the header's comma-separated values contain `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection stays open after this exchange.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            0 => self.header_has_token("connection", "keep-alive"),
            _ => !self.header_has_token("connection", "close"),
        }
    }

    /// The declared body length: `Ok(None)` for none, an error for a bad or chunked length.
    pub fn content_length(&self) -> Result<Option<u64>, BodyError> {
        if self.header("transfer-encoding").is_some() {
            return Err(BodyError::Chunked);
        }
        let mut lengths = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        let Some((_, first)) = lengths.next() else {
            return Ok(None);
        };
        if lengths.any(|(_, v)| v != first) {
            return Err(BodyError::BadLength);
        }
        let text = std::str::from_utf8(first).map_err(|_| BodyError::BadLength)?.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BodyError::BadLength);
        }
        text.parse().map(Some).map_err(|_| BodyError::BadLength)
    }
}

/// Why a request body cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("chunked request bodies are not accepted; send Content-Length")]
    Chunked,
    #[error("invalid Content-Length")]
    BadLength,
}

/// Parses a request head from the start of `buf`.
pub fn parse_request(buf: &[u8], limits: Limits) -> Result<Status<Request>, HttpError> {
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut headers[..max_headers]);
    let window = &buf[..buf.len().min(limits.max_head)];
    match req.parse(window) {
        Ok(httparse::Status::Complete(head_len)) => Ok(Status::Complete(own(&req, head_len)?)),
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head => Err(HttpError::HeadTooLarge(limits.max_head)),
        Ok(httparse::Status::Partial) => Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders(max_headers)),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

fn own(req: &httparse::Request<'_, '_>, head_len: usize) -> Result<Request, HttpError> {
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed("incomplete request line".into()));
    };
    if !target.starts_with('/') && target != "*" {
        return Err(HttpError::BadTarget(target.into()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let headers = req.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();
    Ok(Request { method: method.into(), path, query, version, headers, head_len })
}

/// Headers that describe one hop, never forwarded by a proxy (RFC 9110 §7.6.1), besides those
/// a `Connection` header names.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The end-to-end headers of a message: everything but [`HOP_BY_HOP`] and the headers its
/// `Connection` header nominates.
pub fn end_to_end(headers: &[(String, Vec<u8>)]) -> impl Iterator<Item = &(String, Vec<u8>)> {
    let nominated: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    headers.iter().filter(move |(n, _)| {
        let lower = n.to_ascii_lowercase();
        !HOP_BY_HOP.contains(&lower.as_str()) && !nominated.contains(&lower)
    })
}

/// The first value of header `name` (case-insensitive) in a header list, as trimmed text.
pub fn header_value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::trim)
}

/// An owned response head, as read from an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Length of the head in bytes, blank line included: the body starts here.
    pub head_len: usize,
}

/// How a response body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body at all (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Exact(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes the connection.
    UntilClose,
}

impl ResponseHead {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// How the body that follows this head ends, given the request method; an error for a
    /// conflicting or invalid `Content-Length`.
    pub fn body_length(&self, request_method: &str) -> Result<BodyLength, BodyError> {
        if request_method.eq_ignore_ascii_case("HEAD") || matches!(self.status, 100..=199 | 204 | 304) {
            return Ok(BodyLength::Empty);
        }
        if let Some(te) = self.header("transfer-encoding") {
            let last = te.rsplit(',').next().unwrap_or("").trim();
            return Ok(if last.eq_ignore_ascii_case("chunked") { BodyLength::Chunked } else { BodyLength::UntilClose });
        }
        let mut lengths = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        let Some((_, first)) = lengths.next() else {
            return Ok(BodyLength::UntilClose);
        };
        if lengths.any(|(_, v)| v != first) {
            return Err(BodyError::BadLength);
        }
        let text = std::str::from_utf8(first).map_err(|_| BodyError::BadLength)?.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BodyError::BadLength);
        }
        text.parse().map(BodyLength::Exact).map_err(|_| BodyError::BadLength)
    }
}

/// Parses a response head from the start of `buf`, within `limits`.
pub fn parse_response(buf: &[u8], limits: Limits) -> Result<Status<ResponseHead>, HttpError> {
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let mut resp = httparse::Response::new(&mut headers[..max_headers]);
    let window = &buf[..buf.len().min(limits.max_head)];
    match resp.parse(window) {
        Ok(httparse::Status::Complete(head_len)) => {
            let (Some(version), Some(status)) = (resp.version, resp.code) else {
                return Err(HttpError::Malformed("incomplete status line".into()));
            };
            let headers = resp.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();
            let reason = resp.reason.unwrap_or("").to_string();
            Ok(Status::Complete(ResponseHead { status, reason, version, headers, head_len }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head => Err(HttpError::HeadTooLarge(limits.max_head)),
        Ok(httparse::Status::Partial) => Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders(max_headers)),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

/// Writes a status line and headers, then the blank line.
pub fn write_head<'a>(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) {
    let reason = if reason.is_empty() { self::reason(status) } else { reason };
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Decodes a chunked body (RFC 9112 §7.1) incrementally; trailers are read and dropped.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl ChunkedDecoder {
    /// Feeds `input`, appending decoded data to `out`; returns how many bytes of `input` were
    /// used. Once [`ChunkedDecoder::is_done`], the rest of `input` is not part of the body.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        let mut at = 0;
        while at < input.len() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Data(left) => {
                    let n = (input.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[at..at + n]);
                    at += n;
                    let left = left - n as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let Some(line) = self.take_line(input, &mut at)? else {
                        continue;
                    };
                    self.state = match self.state {
                        ChunkState::Size => match parse_chunk_size(&line)? {
                            0 => ChunkState::Trailer,
                            n => ChunkState::Data(n),
                        },
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => {
                            return Err(HttpError::Malformed("chunk data longer than its size".into()));
                        }
                        _ if line.is_empty() => ChunkState::Done,
                        _ => ChunkState::Trailer,
                    };
                }
                ChunkState::Done => {}
            }
        }
        Ok(at)
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Collects one CRLF- (or LF-) terminated line; `None` while it is incomplete.
    fn take_line(&mut self, input: &[u8], at: &mut usize) -> Result<Option<Vec<u8>>, HttpError> {
        let rest = &input[*at..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                self.line.extend_from_slice(&rest[..end]);
                *at += end + 1;
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                Ok(Some(std::mem::take(&mut self.line)))
            }
            None => {
                self.line.extend_from_slice(rest);
                *at = input.len();
                if self.line.len() > MAX_CHUNK_LINE {
                    return Err(HttpError::Malformed("chunk line too long".into()));
                }
                Ok(None)
            }
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(b"");
    let text = std::str::from_utf8(digits).unwrap_or("").trim();
    if text.is_empty() || text.len() > 15 {
        return Err(HttpError::Malformed(format!("bad chunk size {:?}", String::from_utf8_lossy(line))));
    }
    u64::from_str_radix(text, 16)
        .map_err(|_| HttpError::Malformed(format!("bad chunk size {:?}", String::from_utf8_lossy(line))))
}

/// A response to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body and its content type.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response { status, headers: vec![("Content-Type".into(), content_type.into())], body: body.into() }
    }

    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The bytes on the wire: status line, headers, `Content-Length`, `Connection`, body.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let _ = write!(head, "Content-Length: {}\r\nConnection: {connection}\r\n\r\n", self.body.len());
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        416 => "Range Not Satisfiable",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Status<Request>, HttpError> {
        parse_request(s, Limits::default())
    }

    fn complete(s: &[u8]) -> Request {
        match parse(s).unwrap() {
            Status::Complete(r) => r,
            Status::Partial => panic!("partial"),
        }
    }

    #[test]
    fn srs_heartbeat_head() {
        let raw =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/heartbeats/srs7-bare-ports.http")).unwrap();
        let r = complete(&raw);
        assert_eq!((r.method.as_str(), r.path.as_str(), r.version), ("POST", "/api/v1/srs/register", 1));
        assert_eq!(r.header("user-agent"), Some("SRS/7.0.18(Hang)"));
        assert_eq!(r.content_length(), Ok(Some(208)));
        assert_eq!(raw.len() - r.head_len, 208);
        assert!(r.keep_alive());
    }

    #[test]
    fn partial_until_the_blank_line() {
        let full = b"GET /live/a.flv?token=1 HTTP/1.0\r\nHost: x:1\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(Status::Partial), "cut at {cut}");
        }
        let r = complete(full);
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/live/a.flv", Some("token=1")));
        assert!(!r.keep_alive(), "HTTP/1.0 closes unless asked");
        assert_eq!(r.content_length(), Ok(None));
    }

    #[test]
    fn limits_and_garbage() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 20_000));
        assert_eq!(parse(&big), Err(HttpError::HeadTooLarge(16 * 1024)));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend(format!("H{i}: v\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(parse(&many).unwrap_err().status(), 431);
        assert_eq!(parse(b"GET /\r\n\r\n").unwrap_err().status(), 400, "no version");
        assert_eq!(parse(b"\x16\x03\x01garbage\r\n\r\n").unwrap_err().status(), 400);
        assert!(matches!(parse(b"GET http://x/ HTTP/1.1\r\n\r\n"), Err(HttpError::BadTarget(_))));
    }

    #[test]
    fn body_lengths() {
        let r = complete(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(r.content_length(), Err(BodyError::Chunked));
        let r = complete(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(r.content_length(), Err(BodyError::BadLength));
        let r = complete(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert_eq!(r.content_length(), Err(BodyError::BadLength));
        let r = complete(b"POST / HTTP/1.1\r\nConnection: Keep-Alive, Upgrade\r\nContent-Length: 99999999999\r\n\r\n");
        assert_eq!(r.content_length(), Ok(Some(99_999_999_999)));
        assert!(r.keep_alive());
    }

    #[test]
    fn response_heads_and_body_lengths() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\nab";
        for cut in 0..raw.len() - 2 {
            assert_eq!(parse_response(&raw[..cut], Limits::default()), Ok(Status::Partial), "cut at {cut}");
        }
        let Ok(Status::Complete(head)) = parse_response(raw, Limits::default()) else { panic!() };
        assert_eq!((head.status, head.reason.as_str(), head.head_len), (200, "OK", raw.len() - 2));
        assert_eq!(head.body_length("GET"), Ok(BodyLength::Chunked));
        assert_eq!(head.body_length("HEAD"), Ok(BodyLength::Empty));
        let len = |h: &str| {
            let Ok(Status::Complete(head)) = parse_response(h.as_bytes(), Limits::default()) else { panic!("{h}") };
            head.body_length("GET")
        };
        assert_eq!(len("HTTP/1.0 200 OK\r\n\r\n"), Ok(BodyLength::UntilClose));
        assert_eq!(len("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"), Ok(BodyLength::Exact(12)));
        assert_eq!(len("HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n"), Ok(BodyLength::Empty));
        assert_eq!(len("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), Err(BodyError::BadLength));
        assert_eq!(len("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), Ok(BodyLength::UntilClose));
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n", Limits::default()).is_err());
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 20_000));
        assert_eq!(parse_response(&big, Limits::default()), Err(HttpError::HeadTooLarge(16 * 1024)));
    }

    #[test]
    fn end_to_end_headers_drop_hop_by_hop_and_nominated() {
        let h = |n: &str, v: &str| (n.to_string(), v.as_bytes().to_vec());
        let headers = vec![
            h("Content-Type", "text/plain"),
            h("Connection", "close, X-Hop"),
            h("x-hop", "1"),
            h("Keep-Alive", "timeout=5"),
            h("Transfer-Encoding", "chunked"),
            h("Cache-Control", "no-cache"),
        ];
        let names: Vec<&str> = end_to_end(&headers).map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Content-Type", "Cache-Control"]);
        assert_eq!(header_value(&headers, "CACHE-control"), Some("no-cache"));
    }

    #[test]
    fn chunked_bodies_decode_at_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for cut in 0..wire.len() {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let a = d.decode(&wire[..cut], &mut out).unwrap();
            assert_eq!(a, cut.min(wire.len() - 4), "everything up to the end of the body is consumed");
            let b = d.decode(&wire[a..], &mut out).unwrap();
            assert!(d.is_done());
            assert_eq!(out, b"hello, world");
            assert_eq!(&wire[a + b..], b"NEXT", "cut at {cut}");
        }
        let bad = |w: &[u8]| ChunkedDecoder::default().decode(w, &mut Vec::new()).is_err();
        assert!(bad(b"zz\r\n"));
        assert!(bad(b"2\r\nabc\r\n"));
        assert!(bad(b"ffffffffffffffffff\r\n"));
        assert!(bad(&[b'1'; 5000]));
    }

    #[test]
    fn response_encoding() {
        let wire = Response::new(200, "text/plain", "hi").with_header("X-A", "1").encode(false);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
    }
}
