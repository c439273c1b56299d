//! Chunk sizes and answers as SRS clients need them. The proxy answers `connect` as an SRS
//! origin does (WindowAckSize, SetPeerBandwidth, SetChunkSize 60000, then the `_result`), and
//! the origin's own answers to the replayed `connect` and `createStream` never reach the
//! client, so a client that reads each message from a single chunk and fails on an answer it
//! is not waiting for (tests/common/single_chunk.rs, modelled on the go-oryx-lib client of
//! SRS's tools) connects, publishes and plays through it, relayed, from the edge and from the
//! local origin; and the
//! origin's stream reaches clients in the chunk size it is written in, also from an origin
//! that never announces one. Real peers: nginx-rtmp as origin, ffprobe and rtmpdump as
//! players; the origin that never announces a chunk size is a fake, because no installed
//! origin writes a message over 128 bytes without announcing a chunk size first.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::peers::*;
use common::rtmp_client::*;
use common::single_chunk::SingleChunkClient;
use common::*;
use streamgate::codec::rtmp::message::{self, COMMAND_AMF0, DATA_AMF0};
use streamgate::codec::rtmp::{ChunkDecoder, ChunkEncoder, Command, Message};

/// Deadline for a client's whole connect..publish/play exchange.
const STATUS_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline for a stream to show up as publishing on an origin (the VM is slow and shared).
const PUBLISH_WAIT: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What an SRS origin sends in answer to `connect`, in its order.
const SRS_CONNECT_ANSWER: [&str; 4] =
    ["WindowAckSize 2500000", "SetPeerBandwidth 2500000 2", "SetChunkSize 60000", "_result 1"];

fn diag(p: &Proxy, origin: &NginxRtmp) -> String {
    format!("--- proxy log:\n{}\n--- nginx error.log:\n{}", p.log_text(), origin.error_log())
}

/// No origin is needed to see the proxy's own answers: the connect answer in SRS's order, the
/// `createStream` result and a refusal longer than 128 bytes, each read from a single chunk.
#[test]
fn connect_is_answered_as_srs_does_with_one_chunk_per_message() {
    let p = Proxy::start(&[]);
    let mut client = SingleChunkClient::open(p.rtmp).unwrap();
    // The refusal names the stream key: a long name makes it longer than one 128-byte chunk.
    let name = format!("nobody-{}", "x".repeat(120));
    let status = client.start(p.rtmp, &name, false, STATUS_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert_eq!(client.received[..4], SRS_CONNECT_ANSWER, "{:?}", client.received);
    assert_eq!(client.received[4], "_result 2", "the createStream result: {:?}", client.received);
    let (level, code, description) = status;
    assert_eq!((level.as_str(), code.as_str()), ("error", "NetStream.Play.StreamNotFound"), "{description}");
    assert!(description.contains("no origin") && description.len() > 128, "{description:?}");
    assert_eq!(client.chunk_sizes, [60_000], "the proxy announced its chunk size once");
}

/// The single-chunk client (strict: no answer it is not waiting for) against nginx-rtmp with
/// SRS's chunk size (60000) directly, then through the proxy: it publishes an FLV file's tags,
/// ffprobe sees them through the proxy, and a second single-chunk client plays them, relayed,
/// then a third through another proxy's edge. The publisher's read chunk size never changes
/// after the proxy's announcement; the relayed player follows the origin's own SetChunkSize
/// (the origin announces it before any message that needs it, so nothing else is announced).
#[test]
fn single_chunk_clients_publish_and_play_through_the_proxy() {
    let origin = NginxRtmp::start(60_000);
    let dir = TempDir::new("single-chunk");
    let tags = make_flv(&dir.0, 8);

    // The harness: straight to nginx, every message of the publish exchange fits one chunk.
    let mut direct = SingleChunkClient::open(origin.rtmp_port).unwrap();
    let status = direct.start(origin.rtmp_port, "direct", true, STATUS_TIMEOUT);
    assert!(status.as_ref().is_ok_and(|s| s.1 == "NetStream.Publish.Start"), "{status:?}\n{}", origin.error_log());
    drop(direct);

    // Relayed players (`--edge off`); the edge's below.
    let p = Proxy::start(&["--log-level", "debug", "--edge", "off"]);
    assert_eq!(register(&p.api_addr(), &origin_body("srs-like", "sc", origin.rtmp_port)).status, 200);
    let mut publisher = SingleChunkClient::open(p.rtmp).unwrap();
    let status =
        publisher.start(p.rtmp, "sc", true, STATUS_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", diag(&p, &origin)));
    assert_eq!(status.1, "NetStream.Publish.Start", "{status:?}");
    assert_eq!(publisher.received[..4], SRS_CONNECT_ANSWER, "{:?}", publisher.received);
    assert_eq!(publisher.chunk_sizes, [60_000], "a publisher is never told another chunk size");
    let sending = std::thread::spawn(move || publisher.publish_tags(&tags, Duration::from_secs(8)));
    assert!(wait_until(PUBLISH_WAIT, || origin.publishing("sc")), "{}", diag(&p, &origin));

    let url = format!("rtmp://127.0.0.1:{}/live/sc", p.rtmp);
    probe_h264_aac(&url, PROBE_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", diag(&p, &origin)));

    let mut player = SingleChunkClient::open(p.rtmp).unwrap();
    let status =
        player.start(p.rtmp, "sc", false, STATUS_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", diag(&p, &origin)));
    assert_eq!(status.1, "NetStream.Play.Start", "{status:?}");
    assert_eq!(player.received[..4], SRS_CONNECT_ANSWER, "{:?}", player.received);
    let (video, audio, ended) = player.count_media(Instant::now() + Duration::from_secs(2));
    assert!(
        video > 0 && audio > 0 && ended.is_none(),
        "{video} video, {audio} audio, ended: {ended:?}; {:?}",
        player.received
    );
    assert_eq!(player.chunk_sizes, [60_000, 60_000], "the proxy's, the origin's");
    let results: Vec<&String> = player.received.iter().filter(|r| r.starts_with("_result")).collect();
    assert_eq!(results, ["_result 1", "_result 2"], "the proxy's answers only: {:?}", player.received);
    // ffprobe (which also sends FCSubscribe) and the player were in step with nginx-rtmp at the
    // start: the relay took the origin's stream verbatim (spliceable) from there.
    let verbatim = p.log_text().matches("relaying its stream verbatim").count();
    assert_eq!(verbatim, 2, "{}", p.log_text());

    // The edge answers its players itself; the same strict client plays from it.
    let edge = Proxy::start(&["--edge", "on"]);
    assert_eq!(register(&edge.api_addr(), &origin_body("srs-like", "sc", origin.rtmp_port)).status, 200);
    let mut player = SingleChunkClient::open(edge.rtmp).unwrap();
    let status = player
        .start(edge.rtmp, "sc", false, STATUS_TIMEOUT)
        .unwrap_or_else(|e| panic!("edge: {e}\n{}", edge.log_text()));
    assert_eq!(status.1, "NetStream.Play.Start", "{status:?}");
    let (video, audio, ended) = player.count_media(Instant::now() + Duration::from_secs(2));
    assert!(video > 0 && audio > 0 && ended.is_none(), "edge: {video} video, {audio} audio, ended: {ended:?}");

    let sent = sending.join().unwrap().unwrap_or_else(|e| panic!("publisher: {e}\n{}", diag(&p, &origin)));
    assert!(sent > 100, "{sent} tags sent");
}

/// A local stream (no origin): the strict single-chunk client publishes and plays it; the
/// proxy's answers are the only ones, each awaited.
#[test]
fn single_chunk_clients_publish_and_play_a_local_stream() {
    let dir = TempDir::new("single-chunk-local");
    let tags = make_flv(&dir.0, 6);
    let p = Proxy::start(&["--local-origin", "on", "--local-hls-jobs", "0"]);
    let mut publisher = SingleChunkClient::open(p.rtmp).unwrap();
    let status =
        publisher.start(p.rtmp, "local", true, STATUS_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert_eq!(status.1, "NetStream.Publish.Start", "{status:?}");
    let sending = std::thread::spawn(move || publisher.publish_tags(&tags, Duration::from_secs(6)));
    std::thread::sleep(Duration::from_millis(500));
    let mut player = SingleChunkClient::open(p.rtmp).unwrap();
    let status =
        player.start(p.rtmp, "local", false, STATUS_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert_eq!(status.1, "NetStream.Play.Start", "{status:?}");
    let (video, audio, ended) = player.count_media(Instant::now() + Duration::from_secs(2));
    assert!(video > 0 && audio > 0 && ended.is_none(), "{video} video, {audio} audio, ended: {ended:?}");
    let sent = sending.join().unwrap().unwrap_or_else(|e| panic!("publisher: {e}\n{}", p.log_text()));
    assert!(sent > 50, "{sent} tags sent");
}

// ---------------------------------------------------------------------------------------------
// An origin that never announces its chunk size.

/// An RTMP origin that never sends SetChunkSize: it writes every message in 128-byte chunks,
/// the RTMP default, including a connect `_result` and statuses longer than that (legal RTMP).
/// Each connection that plays gets `tags` at once, then the origin closes it.
struct UnannouncedChunkSizeOrigin {
    port: u16,
    plays: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accepting: Option<JoinHandle<()>>,
}

impl UnannouncedChunkSizeOrigin {
    fn start(tags: Vec<FlvTag>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (plays, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (p, s) = (plays.clone(), stop.clone());
        let tags = Arc::new(tags);
        let accepting = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (tags, plays) = (tags.clone(), p.clone());
                        std::thread::spawn(move || serve_unannounced(conn, &tags, &plays));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        UnannouncedChunkSizeOrigin { port, plays, stop, accepting: Some(accepting) }
    }
}

impl Drop for UnannouncedChunkSizeOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accepting.take() {
            let _ = h.join();
        }
    }
}

/// One connection: simple handshake, answers to `connect`, `createStream` and `play` in
/// 128-byte chunks, then the tags, then close. `plays` counts the `play` commands.
fn serve_unannounced(mut s: TcpStream, tags: &[FlvTag], plays: &AtomicUsize) -> Result<(), String> {
    let err = |e: std::io::Error| e.to_string();
    s.set_nonblocking(false).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(err)?;
    let mut c0c1 = vec![0u8; 1537];
    s.read_exact(&mut c0c1).map_err(err)?;
    let s0s1s2 = [&[3u8][..], &pseudo_random(1536, 9), &c0c1[1..]].concat();
    s.write_all(&s0s1s2).map_err(err)?;
    let mut c2 = vec![0u8; 1536];
    s.read_exact(&mut c2).map_err(err)?;
    let (mut dec, mut enc) = (ChunkDecoder::new(), ChunkEncoder::new());
    let mut buf = vec![0u8; 16 * 1024];
    let long = "Playing a stream written in chunks of 128 bytes, the RTMP default, never announced. ";
    loop {
        let n = s.read(&mut buf).map_err(err)?;
        if n == 0 {
            return Err("closed before play".into());
        }
        let mut out = Vec::new();
        for (m, _) in dec.decode_all(&buf[..n]).map_err(|e| e.to_string())? {
            let Ok(cmd) = Command::from_message(&m) else { continue };
            let answers = match (m.type_id, cmd.name.as_str()) {
                (COMMAND_AMF0, "connect") => {
                    vec![message::window_ack_size(2_500_000), message::connect_result(cmd.transaction_id, 0.0)]
                }
                (COMMAND_AMF0, "createStream") => vec![message::create_stream_result(cmd.transaction_id, 1)],
                (COMMAND_AMF0, "play") => {
                    plays.fetch_add(1, Ordering::SeqCst);
                    let mut msgs = vec![
                        message::stream_begin(1),
                        message::on_status(1, "status", "NetStream.Play.Reset", &long.repeat(2)),
                        message::on_status(1, "status", "NetStream.Play.Start", &long.repeat(2)),
                    ];
                    msgs.extend(tags.iter().map(played_tag));
                    for msg in &msgs {
                        enc.encode(msg, &mut out).map_err(|e| e.to_string())?;
                    }
                    s.write_all(&out).map_err(err)?;
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    let _ = std::io::copy(&mut s, &mut std::io::sink());
                    return Ok(());
                }
                _ => vec![],
            };
            for msg in &answers {
                enc.encode(msg, &mut out).map_err(|e| e.to_string())?;
            }
        }
        s.write_all(&out).map_err(err)?;
    }
}

/// An FLV tag as an origin sends it to a player on stream 1 (metadata without
/// `@setDataFrame`).
fn played_tag(tag: &FlvTag) -> Message {
    match tag.kind {
        18 => Message { csid: DATA_CSID, timestamp: 0, type_id: DATA_AMF0, stream_id: 1, payload: tag.data.clone() },
        _ => tag_message(tag, 1, tag.timestamp),
    }
}

/// ffprobe, rtmpdump (librtmp) and our own client play through the proxy from an origin that
/// writes its answers, statuses and media in 128-byte chunks and never says so: the proxy's
/// SetChunkSize(128) in front of the first of the origin's messages that spans chunks makes
/// them read it as it was written (they were told 60000 before).
#[test]
fn an_origin_that_never_announces_its_chunk_size_plays_through_the_proxy() {
    let dir = TempDir::new("unannounced");
    let origin = UnannouncedChunkSizeOrigin::start(make_flv(&dir.0, 3));
    // Relayed players: the relay follows the origin's chunking (an edge re-chunks anyway).
    let p = Proxy::start(&["--edge", "off"]);
    assert_eq!(register(&p.api_addr(), &origin_body("unannounced", "u", origin.port)).status, 200);
    let url = format!("rtmp://127.0.0.1:{}/live/u", p.rtmp);

    probe_h264_aac(&url, PROBE_TIMEOUT).unwrap_or_else(|e| panic!("ffprobe: {e}\n{}", p.log_text()));

    let flv = dir.0.join("rtmpdump.flv");
    let mut cmd = std::process::Command::new("rtmpdump");
    cmd.args(["-r", &url, "--live", "-o"]).arg(&flv);
    let outcome = run_with_timeout(cmd, Duration::from_secs(20));
    let saved = parse_flv(&std::fs::read(&flv).unwrap_or_default());
    let kinds = |k: u8| saved.as_ref().map_or(0, |t| t.iter().filter(|t| t.kind == k).count());
    let count = saved.as_ref().map(Vec::len);
    assert!(kinds(9) > 10 && kinds(8) > 10, "rtmpdump saved {count:?} tags; {}\n{}", outcome.stderr, p.log_text());

    let mut player = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = player.play("u", |_| vec![], STATUS_TIMEOUT);
    assert!(status.as_ref().is_ok_and(|s| s.description.len() > 128), "{status:?}; {:?}", player.seen);
    let (video, audio, ended) = player.count_media(Instant::now() + Duration::from_secs(10));
    assert!(video > 10 && audio > 10, "{video} video, {audio} audio, ended: {ended:?}");
    assert_eq!(ended.as_deref(), Some("connection closed"), "the origin's close, not a broken chunk stream");
    assert_eq!(player.dec.chunk_size(), 128);
    assert!(origin.plays.load(Ordering::SeqCst) >= 3, "ffprobe, rtmpdump and our player reached the origin");
}
