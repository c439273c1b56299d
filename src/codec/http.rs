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
    fn response_encoding() {
        let wire = Response::new(200, "text/plain", "hi").with_header("X-A", "1").encode(false);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
    }
}
