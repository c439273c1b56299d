//! `streamgate-load origin-flv`: an HTTP-FLV origin for benchmarks, fanning one FLV file out,
//! paced in real time, to any number of players (Debian has no server that does; nginx-rtmp
//! serves no HTTP-FLV, `ffmpeg -listen 1` one client).
//!
//! - Every `GET /ANY/PATH.flv` (query ignored) gets the same live stream: a `200` head, the FLV
//!   header, `onMetaData` and the sequence headers at once, in one write (with TCP_NODELAY,
//!   so no delayed ACK sits between the head and the first media), stamped with the stream's
//!   current time; then the stream from its next keyframe, until the player closes. The body
//!   is sent until close (no chunking), as nginx-http-flv does for HTTP/1.0 and 1.1 alike.
//! - One pacer task sends each tag when its time comes (the file loops with increasing
//!   timestamps, like a paced publisher); the tags due together form one [`Chunk`], built
//!   once and shared by every player through a broadcast ring of `--max-lag-chunks`. A player
//!   that falls that far behind, or whose socket takes no bytes for [`STALL`], is dropped (as
//!   nginx-rtmp drops slow players): memory stays bounded whatever the players do. A player
//!   that closes is noticed at once (its socket is read, and what it sends dropped).
//! - `GET /stats`: JSON counters (players now and in all, dropped, bytes sent, the pacer's
//!   worst lateness since the previous `/stats`, this process's CPU), so a benchmark can tell
//!   whether the origin kept up.
//! - One thread (a current-thread tokio runtime), like nginx with one worker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use streamgate::codec::http::{self, Limits, Response, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

use crate::flv::{self, Flv, Tag};

/// A player whose socket takes no bytes for this long is dropped.
const STALL: Duration = Duration::from_secs(10);
/// Bounds on a request head.
const REQUEST_LIMITS: Limits = Limits { max_head: 16 * 1024, max_headers: 64 };
/// Tags the pacer sends back to back, when late, before it lets the players' tasks run.
const CATCH_UP_TAGS: usize = 64;
/// Lateness from which a tag counts in `late_tags`.
const LATE: Duration = Duration::from_millis(10);

/// HTTP-FLV origin for benchmarks: serves one FLV file, paced in real time and looped, to any
/// number of players at GET /ANY/NAME.flv (each joins at the next keyframe, after the FLV
/// header, metadata and sequence headers); GET /stats answers JSON counters.
#[derive(Debug, Parser)]
#[command(name = "streamgate-load origin-flv", version, about, long_about)]
pub struct OriginArgs {
    /// Address to listen on; with port 0 the kernel picks one, and the `serving ... on ADDR`
    /// line on stderr says which.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// FLV file to serve (held in memory); it needs audio or video besides sequence headers.
    #[arg(long, value_name = "PATH")]
    pub flv: PathBuf,

    /// Most players served at once; more get 503.
    #[arg(long, default_value_t = 20_000)]
    pub max_clients: usize,

    /// Chunks (one per pacing step: the tags due together, about one per tag) a player may
    /// fall behind before it is dropped; the ring holding them is shared by all players.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(16..=65_536))]
    pub max_lag_chunks: u32,

    /// Seconds a client has to send its whole request head.
    #[arg(long, default_value_t = 10.0)]
    pub request_timeout: f64,

    /// Seconds between stats lines on stderr; 0 for none.
    #[arg(long, default_value_t = 0.0)]
    pub report_every: f64,
}

/// Tags due together, as FLV bytes, shared by every player.
#[derive(Debug)]
struct Chunk {
    data: Vec<u8>,
    /// Starts with a video keyframe: a new player's first chunk.
    key: bool,
}

/// Counters (atomics: the `/stats` handler and the report line read them).
#[derive(Debug, Default)]
struct Counters {
    clients: AtomicUsize,
    clients_total: AtomicU64,
    dropped_lagging: AtomicU64,
    dropped_stalled: AtomicU64,
    refused_full: AtomicU64,
    bad_requests: AtomicU64,
    bytes_sent: AtomicU64,
    chunks: AtomicU64,
    late_tags: AtomicU64,
    /// Worst lateness of a tag since the last `/stats`, in microseconds.
    late_max_us: AtomicU64,
}

/// What every task shares.
struct Origin {
    args: OriginArgs,
    flv: Flv,
    /// Indexes into `flv.tags`: metadata and sequence headers (sent on join), and the rest.
    headers: Vec<usize>,
    media: Vec<usize>,
    tx: broadcast::Sender<Arc<Chunk>>,
    /// The stream's current time in ms (timestamp of the last tag sent).
    now_ts: AtomicU64,
    counters: Counters,
}

/// Runs the origin until killed.
pub fn main(args: OriginArgs) -> ExitCode {
    let origin = match prepare(args) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("streamgate-load origin-flv: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamgate-load origin-flv: cannot build runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(origin)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamgate-load origin-flv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn prepare(args: OriginArgs) -> Result<Origin, String> {
    if !(args.request_timeout.is_finite() && args.request_timeout > 0.0) {
        return Err("--request-timeout must be a positive number of seconds".to_owned());
    }
    if !(args.report_every.is_finite() && args.report_every >= 0.0) {
        return Err("--report-every must be 0 or a positive number of seconds".to_owned());
    }
    let flv = flv::load(&args.flv)?;
    let (headers, media) = split_headers(&flv.tags);
    if media.is_empty() {
        return Err(format!("--flv {}: no audio or video besides sequence headers", args.flv.display()));
    }
    let (tx, _) = broadcast::channel(args.max_lag_chunks as usize);
    let counters = Counters::default();
    Ok(Origin { args, flv, headers, media, tx, now_ts: AtomicU64::new(0), counters })
}

/// Splits the tags into what a joining player gets first (the first metadata tag and the
/// first sequence header of each type) and the rest (later metadata and sequence headers
/// dropped: the stream does not change codecs).
fn split_headers(tags: &[Tag]) -> (Vec<usize>, Vec<usize>) {
    let (mut headers, mut media) = (Vec::new(), Vec::new());
    for (i, tag) in tags.iter().enumerate() {
        let header = tag.type_id == streamgate::codec::rtmp::message::DATA_AMF0 || tag.is_sequence_header();
        if !header {
            media.push(i);
        } else if !headers.iter().any(|&h: &usize| tags.get(h).is_some_and(|t| t.type_id == tag.type_id)) {
            headers.push(i);
        }
    }
    (headers, media)
}

/// Listens on `--listen` (port 0: a port the kernel picks) and serves until killed. The
/// line on stderr names the address bound, so whoever started it learns the port.
async fn serve(origin: Arc<Origin>) -> Result<(), String> {
    let listen = origin.args.listen;
    let listener = TcpListener::bind(listen).await.map_err(|e| format!("listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("listen on {listen}: {e}"))?;
    let f = &origin.flv;
    let mbit = f.media_bytes as f64 * 8.0 / (f.loop_ms as f64 / 1000.0) / 1e6;
    eprintln!(
        "origin-flv: serving /*/*.flv on {bound} from {} ({} tags, {:.1} s per lap, {mbit:.2} Mbit/s)",
        origin.args.flv.display(),
        f.tags.len(),
        f.loop_ms as f64 / 1e3
    );
    run(origin, listener).await
}

/// Paces the stream and serves the players `listener` accepts, until killed.
async fn run(origin: Arc<Origin>, listener: TcpListener) -> Result<(), String> {
    tokio::spawn(pace(Arc::clone(&origin)));
    if origin.args.report_every > 0.0 {
        tokio::spawn(report(Arc::clone(&origin)));
    }
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(client(Arc::clone(&origin), stream));
            }
            // Out of descriptors or similar: wait for players to leave instead of spinning.
            Err(_) => sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Sends the file's tags when their time comes, in laps with increasing timestamps.
async fn pace(origin: Arc<Origin>) {
    let (flv, tx, c) = (&origin.flv, &origin.tx, &origin.counters);
    let start = Instant::now();
    let (mut out, mut key, mut behind) = (Vec::new(), false, 0usize);
    for lap in 0u64.. {
        let offset = lap.saturating_mul(flv.loop_ms);
        for tag in origin.media.iter().filter_map(|&i| flv.tags.get(i)) {
            let ts = offset.saturating_add(tag.ts);
            let due = start + Duration::from_millis(ts);
            if due > Instant::now() {
                send(tx, c, &mut out, key);
                sleep_until(due).await;
                behind = 0;
            } else {
                behind += 1;
                if behind >= CATCH_UP_TAGS {
                    send(tx, c, &mut out, key);
                    tokio::task::yield_now().await;
                    behind = 0;
                }
            }
            let late = Instant::now().saturating_duration_since(due);
            c.late_max_us.fetch_max(u64::try_from(late.as_micros()).unwrap_or(u64::MAX), Relaxed);
            if late >= LATE {
                c.late_tags.fetch_add(1, Relaxed);
            }
            if tag.is_keyframe() {
                send(tx, c, &mut out, key);
            }
            if out.is_empty() {
                key = tag.is_keyframe();
            }
            if tx.receiver_count() > 0 {
                flv::write_tag(&mut out, tag.type_id, ts as u32, tag.flv_data()); // FLV time wraps at 2^32 ms
            }
            origin.now_ts.store(ts, Relaxed);
        }
    }
}

/// Hands the tags collected in `out` to every player as one chunk.
fn send(tx: &broadcast::Sender<Arc<Chunk>>, c: &Counters, out: &mut Vec<u8>, key: bool) {
    if out.is_empty() {
        return;
    }
    let data = std::mem::replace(out, Vec::with_capacity(out.capacity()));
    let _ = tx.send(Arc::new(Chunk { data, key })); // fails only without players
    c.chunks.fetch_add(1, Relaxed);
}

/// One connection: a request, its answer, and for a stream the stream until it ends.
async fn client(origin: Arc<Origin>, mut stream: TcpStream) {
    let c = &origin.counters;
    let req = match read_request(&origin, &mut stream).await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(reply) => {
            c.bad_requests.fetch_add(1, Relaxed);
            let _ = stream.write_all(&reply.encode(false)).await;
            return;
        }
    };
    let (get, head) = (req.method == "GET", req.method == "HEAD");
    let reply = match req.path.as_str() {
        _ if !get && !head => Response::new(405, "text/plain", "GET or HEAD\n").with_header("Allow", "GET, HEAD"),
        "/stats" => Response::json(200, &stats(&origin)),
        path if path.ends_with(".flv") => return play(&origin, stream, head).await,
        _ => Response::new(404, "text/plain", "not found: this origin serves /ANY/NAME.flv and /stats\n"),
    };
    let mut bytes = reply.encode(false);
    if head {
        bytes.truncate(bytes.len() - reply.body.len());
    }
    let _ = stream.write_all(&bytes).await;
}

/// Reads one request head within `--request-timeout`; `Ok(None)` if the client left first.
async fn read_request(origin: &Origin, stream: &mut TcpStream) -> Result<Option<http::Request>, Response> {
    let deadline = Instant::now() + Duration::from_secs_f64(origin.args.request_timeout);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(Response::new(408, "text/plain", "request head too slow\n")),
            Ok(Ok(0) | Err(_)) => return Ok(None),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        match http::parse_request(&buf, REQUEST_LIMITS) {
            Ok(Status::Complete(req)) => return Ok(Some(req)),
            Ok(Status::Partial) => {}
            Err(e) => return Err(Response::new(e.status(), "text/plain", format!("{e}\n"))),
        }
    }
}

/// Streams to one player until it leaves, falls too far behind or stalls.
async fn play(origin: &Origin, mut stream: TcpStream, head_only: bool) {
    let c = &origin.counters;
    if c.clients.load(Relaxed) >= origin.args.max_clients {
        c.refused_full.fetch_add(1, Relaxed);
        let _ = stream.write_all(&Response::new(503, "text/plain", "too many players\n").encode(false)).await;
        return;
    }
    let _client = ClientGuard::new(c);
    let mut rx = origin.tx.subscribe(); // before the preamble's time is taken: no tag is missed
    let mut out =
        b"HTTP/1.1 200 OK\r\nServer: streamgate-load\r\nContent-Type: video/x-flv\r\nCache-Control: no-cache\r\n\
                    Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n"
            .to_vec();
    if !head_only {
        preamble(origin, &mut out);
    }
    if !write(c, &mut stream, &out).await || head_only {
        return;
    }
    drop(out);
    let mut joined = false;
    loop {
        // Waiting for the next chunk, also notice a player that left: without this, one that
        // closes before its first keyframe would hold its socket until that keyframe.
        let next = tokio::select! {
            next = rx.recv() => next,
            () = closed(&mut stream) => return,
        };
        let chunk = match next {
            Ok(chunk) => chunk,
            Err(RecvError::Lagged(_)) => {
                c.dropped_lagging.fetch_add(1, Relaxed);
                return;
            }
            Err(RecvError::Closed) => return,
        };
        joined |= chunk.key;
        if joined && !write(c, &mut stream, &chunk.data).await {
            return;
        }
    }
}

/// Returns once the player closed its side (or the socket failed); what it sends is dropped.
async fn closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 256];
    while let Ok(1..) = stream.read(&mut sink).await {}
}

/// The FLV header, then metadata and sequence headers stamped with the stream's time now.
fn preamble(origin: &Origin, out: &mut Vec<u8>) {
    flv::write_header(out);
    let ts = origin.now_ts.load(Relaxed) as u32;
    for tag in origin.headers.iter().filter_map(|&i| origin.flv.tags.get(i)) {
        flv::write_tag(out, tag.type_id, ts, tag.flv_data());
    }
}

/// Writes `bytes` within [`STALL`]; false when the player is gone or stalled.
async fn write(c: &Counters, stream: &mut TcpStream, bytes: &[u8]) -> bool {
    match timeout(STALL, stream.write_all(bytes)).await {
        Ok(Ok(())) => {
            c.bytes_sent.fetch_add(bytes.len() as u64, Relaxed);
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            c.dropped_stalled.fetch_add(1, Relaxed);
            false
        }
    }
}

/// Counts a player as served while it lives.
struct ClientGuard<'a>(&'a Counters);

impl<'a> ClientGuard<'a> {
    fn new(c: &'a Counters) -> Self {
        c.clients.fetch_add(1, Relaxed);
        c.clients_total.fetch_add(1, Relaxed);
        ClientGuard(c)
    }
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Relaxed);
    }
}

/// The `/stats` body; reading it restarts `late_max_ms`.
fn stats(origin: &Origin) -> serde_json::Value {
    let c = &origin.counters;
    let cpu = crate::cpu::usage();
    json!({
        "clients": c.clients.load(Relaxed),
        "clients_total": c.clients_total.load(Relaxed),
        "dropped_lagging": c.dropped_lagging.load(Relaxed),
        "dropped_stalled": c.dropped_stalled.load(Relaxed),
        "refused_full": c.refused_full.load(Relaxed),
        "bad_requests": c.bad_requests.load(Relaxed),
        "bytes_sent": c.bytes_sent.load(Relaxed),
        "chunks": c.chunks.load(Relaxed),
        "late_tags": c.late_tags.load(Relaxed),
        "late_max_ms": c.late_max_us.swap(0, Relaxed) as f64 / 1000.0,
        "stream_ms": origin.now_ts.load(Relaxed),
        "cpu_seconds": cpu.total_s(),
        "max_rss_kib": cpu.max_rss_kib,
    })
}

/// One stats line per `--report-every` on stderr.
async fn report(origin: Arc<Origin>) {
    let every = Duration::from_secs_f64(origin.args.report_every);
    let c = &origin.counters;
    let mut last = (c.bytes_sent.load(Relaxed), crate::cpu::usage().total_s());
    loop {
        sleep(every).await;
        let now = (c.bytes_sent.load(Relaxed), crate::cpu::usage().total_s());
        eprintln!(
            "origin-flv: {} players, {:.1} Mbit/s out, {:.0}% of a core, dropped {} lagging {} stalled, {} tags late",
            c.clients.load(Relaxed),
            now.0.saturating_sub(last.0) as f64 * 8.0 / every.as_secs_f64() / 1e6,
            (now.1 - last.1) / every.as_secs_f64() * 100.0,
            c.dropped_lagging.load(Relaxed),
            c.dropped_stalled.load(Relaxed),
            c.late_tags.load(Relaxed),
        );
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Target;
    use crate::httpflv::FlvConn;
    use streamgate::codec::rtmp::message::{AUDIO, DATA_AMF0, VIDEO};

    /// Two seconds of 25 fps video (a keyframe each second) and 50 fps audio, with headers.
    fn file(dir: &std::path::Path) -> PathBuf {
        let mut out = Vec::new();
        flv::write_header(&mut out);
        flv::write_tag(&mut out, DATA_AMF0, 0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09");
        flv::write_tag(&mut out, VIDEO, 0, &[0x17, 0, 0, 0, 0, 1, 0x64]);
        flv::write_tag(&mut out, AUDIO, 0, &[0xAF, 0, 0x12, 0x10]);
        for ms in (0..2000u32).step_by(20) {
            if ms % 40 == 0 {
                let frame = if ms % 1000 == 0 { 0x17 } else { 0x27 };
                flv::write_tag(&mut out, VIDEO, ms, &[frame, 1, 0, 0, 0, 0xAB, 0xCD]);
            }
            flv::write_tag(&mut out, AUDIO, ms, &[0xAF, 1, 0x21]);
        }
        let path = dir.join("test.flv");
        std::fs::write(&path, out).unwrap();
        path
    }

    #[test]
    fn headers_are_split_from_media() {
        let dir = std::env::temp_dir().join(format!("origin-flv-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flv = flv::load(&file(&dir)).unwrap();
        let (headers, media) = split_headers(&flv.tags);
        assert_eq!(headers, [0, 1, 2]);
        assert_eq!(media.len(), flv.tags.len() - 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Players join, get the preamble at once and media from a keyframe on; /stats answers;
    /// other paths get 404 and garbage 400.
    #[test]
    fn players_get_headers_first_then_the_paced_stream() {
        let dir = std::env::temp_dir().join(format!("origin-flv-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flv = file(&dir);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let args = OriginArgs::parse_from([
                "origin-flv",
                "--listen",
                "127.0.0.1:0",
                "--flv",
                flv.to_str().unwrap(),
                "--max-clients",
                "2",
            ]);
            let origin = Arc::new(prepare(args).unwrap());
            let listener = TcpListener::bind(origin.args.listen).await.unwrap();
            let listen = listener.local_addr().unwrap();
            tokio::spawn(run(Arc::clone(&origin), listener));
            sleep(Duration::from_millis(300)).await; // the stream is mid-GOP
            let ctx = Arc::new(crate::Ctx::for_tests(&format!("http://{listen}/live")));
            let target = Target::parse(&format!("http://{listen}/live")).unwrap();
            let mut a = FlvConn::open(&ctx, &target, "a").await.unwrap();
            let _b = FlvConn::open(&ctx, &target, "b").await.unwrap();
            let full = FlvConn::open(&ctx, &target, "c").await.err().unwrap();
            assert_eq!(full.code, "503");
            // The preamble: metadata, then both sequence headers, before any frame.
            let mut batch = a.take();
            while batch.messages < 3 {
                a.fill().await.unwrap();
                let more = a.take();
                batch.messages += more.messages;
                batch.keyframes += more.keyframes;
                batch.audio += more.audio;
                batch.video += more.video;
            }
            assert_eq!((batch.messages, batch.video, batch.audio, batch.keyframes), (3, 1, 1, 1));
            // Then the stream, from the keyframe at 1 s: about 0.7 s later.
            let t0 = Instant::now();
            let mut keyframes = 0;
            while keyframes < 2 {
                a.fill().await.unwrap();
                let more = a.take();
                if keyframes == 0 && more.media() > 0 {
                    assert_eq!(more.keyframes, 1, "the first frame is a keyframe");
                    assert!(t0.elapsed() > Duration::from_millis(400), "{:?}", t0.elapsed());
                }
                keyframes += more.keyframes;
            }
            let body = get(listen, "GET /stats HTTP/1.1\r\n\r\n").await;
            assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
            let json: serde_json::Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!((json["clients"].as_u64(), json["refused_full"].as_u64()), (Some(2), Some(1)));
            assert!(json["bytes_sent"].as_u64().unwrap() > 0);
            assert!(get(listen, "GET /other HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
            assert!(get(listen, "\x16\x03\x01\x00\r\n\r\n").await.starts_with("HTTP/1.1 400"));
        });
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}
