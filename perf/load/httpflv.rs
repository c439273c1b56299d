//! One HTTP-FLV player connection: TCP dial, `GET /APP/NAME.flv`, the response head (at most
//! [`HEAD_LIMITS`], within `--timeout`), then the body counted as FLV tags ([`TagReader`]).
//!
//! The body may be sent until close (nginx-http-flv, this generator's `origin-flv`), with a
//! `Content-Length`, or chunked (SRS); a body that ends is the server ending the stream. Reads
//! use the per-thread buffer of [`crate::conn`]; a connection keeps only its socket, the FLV
//! and chunk parsers' few bytes of state and its counts. A status other than 200 fails as
//! `http_status:CODE`; a head that does not parse, or a body that is not FLV, as `protocol`.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use streamgate::codec::http::{self, BodyLength, ChunkedDecoder, Limits, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::Ctx;
use crate::args::Target;
use crate::conn::{OpenGuard, dial, read_with};
use crate::flv::TagReader;
use crate::rtmp::io_failure;
use crate::stats::{Batch, Failure, Kind};

/// Bounds on the response head.
pub const HEAD_LIMITS: Limits = Limits { max_head: 16 * 1024, max_headers: 64 };

thread_local! {
    /// Decoded bytes of one read of a chunked body (never more than the read itself).
    static DECHUNKED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How the response body is framed.
#[derive(Debug)]
enum Body {
    /// Until the server closes.
    UntilClose,
    /// This many bytes are left.
    Exact(u64),
    /// Chunked transfer coding.
    Chunked(ChunkedDecoder),
}

/// A player past its response head.
pub struct FlvConn {
    stream: TcpStream,
    body: Body,
    tags: TagReader,
    /// Bytes read and tags completed since the last [`FlvConn::take`].
    batch: Batch,
    /// The body's end arrived (the stream ended).
    ended: bool,
    /// Re-arm TCP_QUICKACK after every read (`--quickack`, until [`FlvConn::streaming`]).
    quickack: bool,
    _guard: OpenGuard,
}

/// The request line and headers for stream `name` of `target`.
pub fn request(target: &Target, name: &str) -> String {
    format!(
        "GET /{}/{name}.flv HTTP/1.1\r\nHost: {}\r\nUser-Agent: streamgate-load\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n",
        target.app, target.authority
    )
}

impl FlvConn {
    /// A connection before its response head: body until close, nothing counted yet.
    fn new(stream: TcpStream, quickack: bool, guard: OpenGuard) -> FlvConn {
        FlvConn {
            stream,
            body: Body::UntilClose,
            tags: TagReader::default(),
            batch: Batch::default(),
            ended: false,
            quickack,
            _guard: guard,
        }
    }

    /// Dials `target`, asks for stream `name` and reads the response head; returns once a 200
    /// head arrived (what came with it is already counted).
    pub async fn open(ctx: &Arc<Ctx>, target: &Target, name: &str) -> Result<FlvConn, Failure> {
        let (mut stream, guard) = dial(ctx, target.addr).await?;
        let deadline = Instant::now() + ctx.args.step_timeout();
        stream.write_all(request(target, name).as_bytes()).await.map_err(|e| io_failure("write", &e))?;
        let mut conn = FlvConn::new(stream, ctx.args.quickack, guard);
        let mut head = Vec::new();
        loop {
            let read = read_with(
                &mut conn,
                |c| &mut c.stream,
                |c, data| {
                    c.received(data.len());
                    head.extend_from_slice(data);
                },
            );
            match timeout_at(deadline, read).await {
                Err(_) => return Err(Failure::new(Kind::Timeout, "no response head within --timeout")),
                Ok(Err(e)) => return Err(io_failure("read", &e)),
                Ok(Ok(None)) => return Err(Failure::new(Kind::ClosedEarly, "server closed before the response head")),
                Ok(Ok(Some(()))) => {}
            }
            if let Some(body_start) = conn.head(&head)? {
                conn.feed(head.get(body_start..).unwrap_or_default())?;
                return Ok(conn);
            }
        }
    }

    /// Parses the head read so far: `Some(where the body starts)` once it is complete and a
    /// 200 with a body.
    fn head(&mut self, head: &[u8]) -> Result<Option<usize>, Failure> {
        let resp = match http::parse_response(head, HEAD_LIMITS) {
            Ok(Status::Partial) => return Ok(None),
            Ok(Status::Complete(resp)) => resp,
            Err(e) => return Err(Failure::new(Kind::Protocol, format!("response head: {e}"))),
        };
        if resp.status != 200 {
            let detail = format!("HTTP {} {}", resp.status, resp.reason);
            return Err(Failure { kind: Kind::HttpStatus, code: resp.status.to_string(), detail });
        }
        self.body = match resp.body_length("GET") {
            Ok(BodyLength::UntilClose) => Body::UntilClose,
            Ok(BodyLength::Exact(n)) => Body::Exact(n),
            Ok(BodyLength::Empty) => Body::Exact(0),
            Ok(BodyLength::Chunked) => Body::Chunked(ChunkedDecoder::default()),
            Err(e) => return Err(Failure::new(Kind::Protocol, format!("response head: {e}"))),
        };
        self.ended = matches!(self.body, Body::Exact(0));
        Ok(Some(resp.head_len))
    }

    /// Counts `n` bytes read (and re-arms TCP_QUICKACK while asked to).
    fn received(&mut self, n: usize) {
        self.batch.bytes += n as u64;
        if self.quickack {
            streamgate::util::quickack(self.stream.as_raw_fd());
        }
    }

    /// Passes body bytes through the framing to the FLV parser.
    fn feed(&mut self, data: &[u8]) -> Result<(), Failure> {
        let flv = |e: String| Failure::new(Kind::Protocol, format!("FLV body: {e}"));
        if self.ended {
            return Ok(()); // bytes after the body's end are not the stream's
        }
        match &mut self.body {
            Body::UntilClose => self.tags.feed(data, &mut self.batch).map_err(flv),
            Body::Exact(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= n as u64;
                self.ended = *left == 0;
                self.tags.feed(data.get(..n).unwrap_or_default(), &mut self.batch).map_err(flv)
            }
            Body::Chunked(chunks) => DECHUNKED.with_borrow_mut(|out| {
                out.clear();
                let result = chunks.decode(data, out);
                self.ended = chunks.is_done();
                let fed = self.tags.feed(out, &mut self.batch).map_err(flv);
                if out.capacity() > 2 * crate::conn::READ_BUF {
                    *out = Vec::new(); // a large head leftover made it grow
                }
                result.map_err(|e| Failure::new(Kind::Protocol, format!("chunked body: {e}")))?;
                fed
            }),
        }
    }

    /// Reads once (waiting as long as it takes) and counts what arrived.
    pub async fn fill(&mut self) -> Result<(), Failure> {
        if self.ended {
            return Err(Failure::new(Kind::ClosedEarly, "the server ended the response body"));
        }
        let read = read_with(
            self,
            |c| &mut c.stream,
            |c, data| {
                c.received(data.len());
                c.feed(data)
            },
        );
        match read.await {
            Ok(Some(r)) => r,
            Ok(None) => Err(Failure::new(Kind::ClosedEarly, "server closed the connection")),
            Err(e) => Err(match e.kind() {
                io::ErrorKind::InvalidData => Failure::new(Kind::Protocol, format!("read: {e}")),
                _ => io_failure("read", &e),
            }),
        }
    }

    /// Marks the setup as over: stop re-arming TCP_QUICKACK.
    pub fn streaming(&mut self) {
        self.quickack = false;
    }

    /// Bytes and tags since the last call.
    pub fn take(&mut self) -> Batch {
        std::mem::take(&mut self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::{write_header, write_tag};
    use streamgate::codec::rtmp::message::{AUDIO, VIDEO};

    fn flv_body() -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out);
        write_tag(&mut out, VIDEO, 0, &[0x17, 0, 0, 0, 0, 1]);
        write_tag(&mut out, AUDIO, 0, &[0xAF, 0, 0x12, 0x10]);
        write_tag(&mut out, VIDEO, 40, &[0x17, 1, 0, 0, 0, 7, 7]);
        out
    }

    /// Runs `response` through head parsing and feeding in pieces of `split` bytes; returns
    /// the counts, whether the body ended, or the failure.
    fn play(response: &[u8], split: usize) -> Result<(Batch, bool), Failure> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let ctx = Arc::new(crate::Ctx::for_tests(&format!("http://{addr}/live")));
            let stream = TcpStream::connect(addr).await.unwrap();
            let mut conn = FlvConn::new(stream, false, OpenGuard::new(Arc::clone(&ctx)));
            let mut head = Vec::new();
            let mut parts = response.chunks(split);
            let start = loop {
                head.extend_from_slice(parts.next().expect("head incomplete"));
                if let Some(start) = conn.head(&head)? {
                    break start;
                }
            };
            conn.feed(&head[start..])?;
            for part in parts {
                conn.feed(part)?;
            }
            Ok((conn.take(), conn.ended))
        })
    }

    #[test]
    fn requests_name_the_stream_and_host() {
        let t = Target::parse("http://127.0.0.1:8080/live").unwrap();
        let req = request(&t, "s0");
        assert!(req.starts_with("GET /live/s0.flv HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n"));
    }

    #[test]
    fn bodies_until_close_with_length_and_chunked_count_the_same() {
        let body = flv_body();
        let until_close = [&b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\n\r\n"[..], &body].concat();
        let exact = [format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(), &body].concat();
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for piece in body.chunks(7) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        for (name, response, ends) in
            [("close", &until_close, false), ("length", &exact, true), ("chunked", &chunked, false)]
        {
            for split in [1, 5, 64, 4096] {
                let (batch, ended) = play(response, split).unwrap();
                let counts = (batch.messages, batch.video, batch.audio, batch.keyframes);
                assert_eq!(counts, (3, 2, 1, 2), "{name} split {split}");
                assert_eq!(ended, ends, "{name}");
            }
        }
        let mut done = chunked.clone();
        done.extend_from_slice(b"0\r\n\r\n");
        assert!(play(&done, 3).unwrap().1);
    }

    #[test]
    fn bad_answers_fail_by_kind() {
        let not_found = play(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 100).unwrap_err();
        assert_eq!((not_found.kind, not_found.code.as_str()), (Kind::HttpStatus, "404"));
        let garbage = play(b"RTMP\x03\x00\x00\r\n\r\n", 100).unwrap_err();
        assert_eq!(garbage.kind, Kind::Protocol);
        let not_flv = play(b"HTTP/1.1 200 OK\r\n\r\n<html>oops</html>", 100).unwrap_err();
        assert_eq!(not_flv.kind, Kind::Protocol);
        let bad_chunk = play(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 100).unwrap_err();
        assert_eq!(bad_chunk.kind, Kind::Protocol);
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b"X-Pad: 0123456789abcdef\r\n", 1000).flatten());
        assert_eq!(play(&huge, 4096).unwrap_err().kind, Kind::Protocol);
    }
}
