//! RTMP proxy edge cases with a hand-made client (tests/common/rtmp_client.rs, built on the
//! crate's sans-io codec): a publisher changing its chunk size mid-stream, origins writing with
//! chunk sizes 60000 and 128, extra commands around publish/play, the digest handshake,
//! malformed connections, and the error statuses the proxy itself sends. Every test starts its
//! own nginx-rtmp origin(s) and proxy on free loopback ports; everything is stopped on drop and
//! every wait is bounded.

mod common;

use std::io;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::peers::*;
use common::rtmp_client::*;
use common::*;
use streamgate::codec::rtmp::amf0::Amf0Value;
use streamgate::codec::rtmp::handshake::DigestSchema;
use streamgate::codec::rtmp::{ChunkEncoder, Command, Message};

/// Deadline for a stream to show up as publishing on an origin (the VM is slow and shared).
const PUBLISH_WAIT: Duration = Duration::from_secs(20);
/// Wall-clock limit for one ffprobe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for the client's whole connect..publish/play exchange.
const STATUS_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a refused or misbehaving client may wait to see its connection closed.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Upper bound on any client publisher thread.
const MAX_PUBLISH: Duration = Duration::from_secs(120);

fn key(stream: &str) -> String {
    format!("__defaultVhost__/live/{stream}")
}

/// The proxy's log and every origin's streams, for assertion messages.
fn diag(p: &Proxy, origins: &[&NginxRtmp]) -> String {
    let mut out = format!("--- proxy log:\n{}", p.log_text());
    for o in origins {
        let streams = o.try_stat().map(|x| format!("{:?}", parse_stat(&x)));
        out.push_str(&format!("\n--- origin :{} streams: {streams:?}\n--- nginx error.log tail:\n", o.rtmp_port));
        let log = o.error_log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        out.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    out
}

/// The proxy process is still running and nothing in it panicked.
fn assert_proxy_healthy(p: &mut Proxy) {
    let status = p.child.try_wait().unwrap();
    assert!(status.is_none(), "the proxy exited ({status:?}):\n{}", p.log_text());
    assert!(!p.log_text().contains("panicked"), "the proxy log has a panic:\n{}", p.log_text());
}

/// An origin (nginx-rtmp with `chunk_size`) and a proxy with it registered.
fn origin_and_proxy(chunk_size: u32, proxy_flags: &[&str]) -> (NginxRtmp, Proxy) {
    let origin = NginxRtmp::start(chunk_size);
    let p = Proxy::start(proxy_flags);
    let reply = register(&p.api_addr(), &origin_body("edge", &chunk_size.to_string(), origin.rtmp_port));
    assert_eq!(reply.status, 200, "register: {}", reply.body);
    (origin, p)
}

fn wait_publishing(p: &Proxy, origin: &NginxRtmp, stream: &str, what: &str) {
    if !wait_until(PUBLISH_WAIT, || origin.publishing(stream)) {
        panic!("{stream} never published on the origin through the proxy ({what})\n{}", diag(p, &[origin]));
    }
}

/// One of our clients publishing FLV tags from a thread until stopped.
struct Publisher {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    handle: Option<JoinHandle<Result<usize, String>>>,
}

impl Publisher {
    /// Opens a client, publishes `name` (with `after` in the publish write), and once
    /// `NetStream.Publish.Start` arrived streams `tags` with `hook` from a thread.
    fn start(
        port: u16,
        handshake: Handshake,
        name: &str,
        after: impl FnOnce(&mut RtmpClient) -> Vec<Message>,
        tags: Vec<FlvTag>,
        hook: impl FnMut(&mut RtmpClient, usize) -> io::Result<()> + Send + 'static,
    ) -> Result<Publisher, String> {
        let mut client = RtmpClient::open(port, handshake)?;
        let status = client.publish(name, after, STATUS_TIMEOUT)?;
        if status.code != "NetStream.Publish.Start" {
            return Err(format!("publish {name} answered {status:?}; seen {:?}", client.seen));
        }
        Ok(Self::stream(client, tags, hook))
    }

    fn stream(
        mut client: RtmpClient,
        tags: Vec<FlvTag>,
        hook: impl FnMut(&mut RtmpClient, usize) -> io::Result<()> + Send + 'static,
    ) -> Publisher {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (st, se) = (stop.clone(), sent.clone());
        let handle = std::thread::spawn(move || client.stream_tags(&tags, &st, &se, MAX_PUBLISH, hook));
        Publisher { stop, sent, handle: Some(handle) }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Whether the thread still streams (it ends early only on an error).
    fn running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Waits until `n` tags were sent; false if the thread ended or `timeout` passed first.
    fn wait_sent(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.sent() >= n || !self.running()) && self.sent() >= n
    }

    /// Stops it; the tag count, or why it stopped early.
    fn finish(mut self) -> Result<usize, String> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap_or_else(|_| Err("publisher thread panicked".into()))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// `ffmpeg -i url -t seconds -f null -` at `-loglevel error`: exit status, stderr and the
/// number of video frames decoded.
fn ffmpeg_decode(url: &str, seconds: u32) -> (Outcome, u64) {
    let dir = TempDir::new("decode");
    let progress = dir.0.join("progress.txt");
    let mut cmd = Process::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-progress"]).arg(&progress).args([
        "-rw_timeout",
        "5000000",
        "-i",
        url,
        "-t",
        &seconds.to_string(),
        "-f",
        "null",
        "-",
    ]);
    let o = run_with_timeout(cmd, Duration::from_secs(40));
    let frames = std::fs::read_to_string(&progress)
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("frame="))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (o, frames)
}

/// Error lines of the RTMP/FLV demuxing side in ffmpeg's stderr (`[rtmp @ ...]`,
/// `[flv @ ...]`, `[live_flv @ ...]`, `[in#0/flv @ ...]`, or a line naming the URL).
fn demuxer_errors(stderr: &str, url: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("[rtmp")
                || l.starts_with("[flv")
                || l.starts_with("[live_flv")
                || l.starts_with("[in#")
                || l.contains(url)
        })
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------

/// Chunk size changes of the publisher: (before tag number, new size).
const CHUNK_PLAN: [(usize, u32); 5] = [(40, 4096), (150, 60000), (260, 128), (370, 777), (480, 4096)];

/// The publisher hook that follows [`CHUNK_PLAN`] and records each change in `changes`.
///
/// After a change to a smaller size it pauses 0.5 s: nginx-rtmp 1.2 mishandles bytes that it
/// read in the same `recv` right behind a shrinking SetChunkSize (`ngx_rtmp_recv` moves the
/// leftover into a buffer of the new, smaller size), and drops the publisher with "RTMP in
/// chunk stream too big", with or without a proxy in between (seen publishing straight to
/// nginx without the pause).
fn chunk_size_hook(
    changes: Arc<Mutex<Vec<(usize, u32)>>>,
) -> impl FnMut(&mut RtmpClient, usize) -> io::Result<()> + Send + 'static {
    move |c: &mut RtmpClient, i: usize| {
        if let Some(&(_, size)) = CHUNK_PLAN.iter().find(|(at, _)| *at == i) {
            let shrink = size < c.enc.chunk_size();
            c.set_chunk_size(size)?;
            changes.lock().unwrap().push((i, size));
            if shrink {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Ok(())
    }
}

/// The harness without the proxy: our client publishes straight to nginx-rtmp with every
/// chunk size change of [`CHUNK_PLAN`], and nginx keeps the stream. If this fails, the proxied
/// variant below says nothing about the proxy.
#[test]
fn client_chunk_size_changes_direct_to_origin() {
    let origin = NginxRtmp::start(4096);
    let dir = TempDir::new("edge-flv");
    let tags = make_flv(&dir.0, 6);
    let changes = Arc::new(Mutex::new(Vec::new()));
    let publisher = Publisher::start(
        origin.rtmp_port,
        Handshake::Simple,
        "direct",
        |_| vec![],
        tags,
        chunk_size_hook(changes.clone()),
    )
    .unwrap_or_else(|e| panic!("publish straight to nginx: {e}\n{}", origin.error_log()));
    assert!(wait_until(PUBLISH_WAIT, || origin.publishing("direct")), "{}", origin.error_log());
    if !publisher.wait_sent(520, Duration::from_secs(40)) {
        let at = publisher.sent();
        panic!("publisher stopped at tag {at}: {:?}\n{}", publisher.finish(), origin.error_log());
    }
    assert_eq!(*changes.lock().unwrap(), CHUNK_PLAN.to_vec());
    assert!(origin.publishing("direct"), "{}", origin.error_log());
    publisher.finish().unwrap_or_else(|e| panic!("{e}\n{}", origin.error_log()));
}

/// A publisher that changes its chunk size several times after media started (128 ->
/// 4096 -> 60000 -> 128 -> 777 -> 4096): the proxy relays the client's chunk stream verbatim
/// after `publish`, so the origin keeps decoding it, and ffprobe and ffmpeg through the proxy
/// see H.264 + AAC and decode without demuxer errors.
#[test]
fn client_set_chunk_size_after_media_started() {
    let (origin, mut p) = origin_and_proxy(4096, &[]);
    let dir = TempDir::new("edge-flv");
    let tags = make_flv(&dir.0, 6);
    let changes = Arc::new(Mutex::new(Vec::new()));
    let hook = chunk_size_hook(changes.clone());
    let publisher = Publisher::start(p.rtmp, Handshake::Simple, "cs", |_| vec![], tags, hook)
        .unwrap_or_else(|e| panic!("publish: {e}\n{}", diag(&p, &[&origin])));
    wait_publishing(&p, &origin, "cs", "client publisher");
    let url = proxy_url(&p, "cs");

    // Probe once the first change (at tag 40) is behind.
    assert!(
        publisher.wait_sent(60, Duration::from_secs(20)),
        "publisher stalled at {}\n{}",
        publisher.sent(),
        diag(&p, &[&origin])
    );
    if let Err(e) = probe_h264_aac(&url, PROBE_TIMEOUT) {
        panic!("probe after SetChunkSize(4096): {e}\n{}", diag(&p, &[&origin]));
    }

    // Decode 2 s while the sizes keep changing.
    let (o, frames) = ffmpeg_decode(&url, 2);
    assert!(o.status.is_some_and(|s| s.success()), "ffmpeg decode through the proxy: {o:?}\n{}", diag(&p, &[&origin]));
    let errors = demuxer_errors(&o.stderr, &url);
    assert!(errors.is_empty(), "demuxer errors: {errors:#?}\nfull stderr: {}", o.stderr);
    assert!(frames >= 25, "only {frames} frames decoded in 2 s; stderr: {}", o.stderr);

    // Every change made, the stream still up on the origin and playable through the proxy.
    assert!(
        publisher.wait_sent(520, Duration::from_secs(40)),
        "publisher stopped at tag {} (running: {})\n{}",
        publisher.sent(),
        publisher.running(),
        diag(&p, &[&origin])
    );
    assert_eq!(*changes.lock().unwrap(), CHUNK_PLAN.to_vec());
    assert!(origin.publishing("cs"), "{}", diag(&p, &[&origin]));
    if let Err(e) = probe_h264_aac(&url, PROBE_TIMEOUT) {
        panic!("probe after all chunk size changes: {e}\n{}", diag(&p, &[&origin]));
    }
    let (o, frames) = ffmpeg_decode(&url, 2);
    assert!(o.status.is_some_and(|s| s.success()) && frames >= 25, "second decode ({frames} frames): {o:?}");
    assert!(demuxer_errors(&o.stderr, &url).is_empty(), "second decode: {}", o.stderr);
    match publisher.finish() {
        Ok(n) => assert!(n >= 520, "{n} tags"),
        Err(e) => panic!("publisher: {e}\n{}", diag(&p, &[&origin])),
    }
    assert_proxy_healthy(&mut p);
}

/// Origins that write with chunk size 60000 and 128: players get the origin's stream verbatim
/// behind the proxy's SetChunkSize(128), a publisher the origin's messages re-chunked in the
/// proxy's 60000, so ffmpeg publishes (it answers every SetChunkSize it gets with its own: told
/// 128 after 60000, it shrank its stream right before its media and nginx-rtmp with
/// `chunk_size 128` misread it) and ffprobe, ffmpeg and our own client play through it.
#[test]
fn origin_chunk_size_60000_and_128() {
    let mut setups: Vec<(u32, NginxRtmp, Proxy)> = [60000, 128]
        .into_iter()
        .map(|size| {
            // Relayed players: the origin's own chunk stream reaches them.
            let (origin, p) = origin_and_proxy(size, &["--edge", "off"]);
            (size, origin, p)
        })
        .collect();
    let mut publishers: Vec<Ffmpeg> = setups.iter().map(|(_, _, p)| Ffmpeg::publish(&proxy_url(p, "oc"), 60)).collect();
    for ((size, origin, p), publisher) in setups.iter().zip(publishers.iter_mut()) {
        if !wait_until(PUBLISH_WAIT, || origin.publishing("oc")) {
            panic!("chunk_size {size}: never published; {}\n{}", publisher.describe(), diag(p, &[origin]));
        }
    }
    for ((size, origin, p), publisher) in setups.iter().zip(publishers.iter_mut()) {
        let url = proxy_url(p, "oc");
        if let Err(e) = probe_h264_aac(&url, PROBE_TIMEOUT) {
            panic!("chunk_size {size}: {e}\n{}", diag(p, &[origin]));
        }
        match play_frames(&url, 50, Duration::from_secs(40)) {
            Ok(played) => assert!(played.clean(50), "chunk_size {size}: {played:?}\n{}", diag(p, &[origin])),
            Err(e) => panic!("chunk_size {size}: {e}\n{}", diag(p, &[origin])),
        }
        let mut player = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
        let status = player.play("oc", |_| vec![], STATUS_TIMEOUT);
        assert!(
            status.as_ref().is_ok_and(|s| s.code == "NetStream.Play.Start"),
            "chunk_size {size}: our player got {status:?}\n{}",
            diag(p, &[origin])
        );
        let (video, audio, ended) = player.count_media(Instant::now() + Duration::from_secs(4));
        assert!(
            video > 0 && audio > 0 && ended.is_none(),
            "chunk_size {size}: our player got {video} video, {audio} audio messages, ended: {ended:?}; read chunk size {}",
            player.dec.chunk_size()
        );
        assert_eq!(player.dec.chunk_size(), *size, "the origin's SetChunkSize reached our player");
        assert!(publisher.running(), "chunk_size {size}: publisher {}", publisher.describe());
    }
    for (_, _, p) in setups.iter_mut() {
        assert_proxy_healthy(p);
    }
}

/// Extra commands around publish and play reach the origin without breaking anything:
/// `@setDataFrame` and the codec headers in the same write as `publish`; after media started an unknown call with a
/// transaction id, another `@setDataFrame` and a SetBufferLength; a player that sends
/// `_checkbw` and SetBufferLength in the same write as `play`.
#[test]
fn extra_commands_after_publish_and_play() {
    let (origin, mut p) = origin_and_proxy(4096, &[]);
    let dir = TempDir::new("edge-flv");
    let tags = make_flv(&dir.0, 6);
    let extras_sent = Arc::new(AtomicUsize::new(0));
    let count = extras_sent.clone();
    let hook = move |c: &mut RtmpClient, i: usize| {
        match i {
            30 => {
                let (m, _) = c.command(
                    COMMAND_CSID,
                    0,
                    "streamgateTestUnpublish",
                    Amf0Value::Null,
                    vec![Amf0Value::string("ex")],
                );
                c.send(&m)?;
            }
            45 => c.send(&set_data_frame(c.stream_id, &[("width", 320.0), ("height", 240.0), ("framerate", 25.0)]))?,
            60 => c.send(&set_buffer_length(c.stream_id, 1000))?,
            _ => return Ok(()),
        }
        count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    };
    // Metadata and the codec headers go out in the same write as `publish`, before the origin
    // confirmed it (as encoders that do not wait for NetStream.Publish.Start do).
    let headers: Vec<FlvTag> = ["video", "audio"]
        .iter()
        .map(|kind| tags.iter().find(|t| t.kind == if *kind == "video" { 9 } else { 8 }).unwrap().clone())
        .collect();
    let after_publish = move |c: &mut RtmpClient| {
        let mut msgs = vec![set_data_frame(c.stream_id, &[("width", 320.0), ("height", 240.0)])];
        msgs.extend(headers.iter().map(|t| tag_message(t, c.stream_id, 0)));
        msgs
    };
    let publisher = Publisher::start(p.rtmp, Handshake::Simple, "ex", after_publish, tags, hook)
        .unwrap_or_else(|e| panic!("publish: {e}\n{}", diag(&p, &[&origin])));
    wait_publishing(&p, &origin, "ex", "client publisher");
    assert!(
        publisher.wait_sent(100, Duration::from_secs(30)),
        "publisher stopped at {}\n{}",
        publisher.sent(),
        diag(&p, &[&origin])
    );
    assert_eq!(extras_sent.load(Ordering::SeqCst), 3);

    let url = proxy_url(&p, "ex");
    if let Err(e) = probe_h264_aac(&url, PROBE_TIMEOUT) {
        panic!("probe after the extra commands: {e}\n{}", diag(&p, &[&origin]));
    }

    let mut player = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = player.play(
        "ex",
        |c| {
            let (checkbw, _) = c.command(COMMAND_CSID, 0, "_checkbw", Amf0Value::Null, vec![]);
            vec![checkbw, set_buffer_length(c.stream_id, 3000)]
        },
        STATUS_TIMEOUT,
    );
    assert!(
        status.as_ref().is_ok_and(|s| s.code == "NetStream.Play.Start"),
        "player got {status:?}; seen {:?}\n{}",
        player.seen,
        diag(&p, &[&origin])
    );
    let (video, audio, ended) = player.count_media(Instant::now() + Duration::from_secs(5));
    assert!(
        video > 0 && ended.is_none(),
        "player got {video} video and {audio} audio messages in 5 s, ended: {ended:?}\n{}",
        diag(&p, &[&origin])
    );
    assert!(wait_until(Duration::from_secs(5), || origin.players("ex") >= 1), "{}", diag(&p, &[&origin]));

    assert!(publisher.running() && origin.publishing("ex"), "{}", diag(&p, &[&origin]));
    if let Err(e) = publisher.finish() {
        panic!("publisher: {e}\n{}", diag(&p, &[&origin]));
    }
    assert_proxy_healthy(&mut p);
}

/// Clients with a Flash Player digest in C1 (schema 0 and schema 1) get a digest answer (S1
/// signed with the FMS key, S2 keyed by their C1 digest) and publish through the proxy; one
/// of them writes C0+C1 in pieces and C2 in the same write as its `connect`.
#[test]
fn digest_handshake_client_publishes() {
    let (origin, mut p) = origin_and_proxy(4096, &[]);
    let dir = TempDir::new("edge-flv");
    let tags = make_flv(&dir.0, 6);
    let mut publishers = Vec::new();
    let clients = [
        ("dg0", Handshake::Digest(DigestSchema::Schema0)),
        ("dg1", Handshake::Digest(DigestSchema::Schema1)),
        ("dgpipe", Handshake::DigestPipelined(DigestSchema::Schema0)),
    ];
    for (name, handshake) in clients {
        let mut client =
            RtmpClient::open(p.rtmp, handshake).unwrap_or_else(|e| panic!("{name}: handshake: {e}\n{}", p.log_text()));
        let check = client.digest.clone().unwrap();
        assert!(check.s1_schema.is_some(), "{name}: S1 has no valid FMS digest: {check:?}");
        assert!(check.s2_valid, "{name}: S2 is not signed for our C1 digest: {check:?}");
        assert!(check.s1_version[0] >= 3, "{name}: S1 version {:?} says no digest handshake", check.s1_version);
        let status = client
            .publish(name, |_| vec![], STATUS_TIMEOUT)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", diag(&p, &[&origin])));
        assert_eq!(status.code, "NetStream.Publish.Start", "{name}: {status:?}");
        publishers.push((name, Publisher::stream(client, tags.clone(), |_, _| Ok(()))));
    }
    for (name, _) in &publishers {
        wait_publishing(&p, &origin, name, "digest client");
    }
    for (name, publisher) in &publishers {
        if let Err(e) = probe_h264_aac(&proxy_url(&p, name), PROBE_TIMEOUT) {
            panic!("{name}: {e}\n{}", diag(&p, &[&origin]));
        }
        assert!(publisher.running(), "{name}");
    }
    for (name, publisher) in publishers {
        if let Err(e) = publisher.finish() {
            panic!("{name}: {e}");
        }
    }
    assert_proxy_healthy(&mut p);
}

/// The misbehaving connections, each with what the proxy's debug log should say about it.
const BAD_CLIENTS: [(&str, &str); 9] = [
    ("rtmpe", "handshake: encrypted RTMPE"),
    ("version0-garbage", "handshake: unsupported RTMP version 0"),
    ("truncated-c1", "closed the connection before publish or play"),
    ("random-after-handshake", "chunk stream: "),
    ("100MB-message", "chunk stream: message length 16777215 on chunk stream 3 exceeds limit"),
    ("1MB-before-publish", "sent more than 1048576 bytes before publish or play"),
    ("silent", "no publish or play within 10s"),
    ("silent-after-handshake", "no publish or play within 10s"),
    ("publish-before-connect", "publish before connect"),
];

/// One misbehaving connection (see [`BAD_CLIENTS`]); returns its local port and how long the
/// proxy took to close it after the client was done misbehaving.
fn misbehave(port: u16, case: &str) -> Result<(u16, Duration), String> {
    use std::io::Write;
    let mut s = tcp(port);
    let local = s.local_addr().unwrap().port();
    let hs = |s: &mut std::net::TcpStream| simple_handshake(s, Duration::from_secs(10)).map(|_| ());
    let mut close_wait = CLOSE_WAIT;
    match case {
        "rtmpe" => {
            let _ = s.write_all(&[&[6u8][..], &pseudo_random(1536, 1)].concat());
        }
        "version0-garbage" => {
            let _ = s.write_all(&[&[0u8][..], &pseudo_random(3000, 2)].concat());
        }
        "truncated-c1" => {
            let _ = s.write_all(&[&[3u8][..], &pseudo_random(700, 3)].concat());
            s.shutdown(std::net::Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
        }
        "random-after-handshake" => {
            hs(&mut s)?;
            let junk = pseudo_random((1 << 20) + 64 * 1024, 4);
            for piece in junk.chunks(16 * 1024) {
                if s.write_all(piece).is_err() {
                    break; // closed already
                }
            }
        }
        "100MB-message" => {
            hs(&mut s)?;
            // fmt 0 on csid 3: timestamp 0, length 0xFFFFFF (the most 24 bits can declare;
            // a 100 MB length cannot be written in a chunk header), type 20, stream 0.
            let mut bytes = vec![0x03, 0, 0, 0, 0xFF, 0xFF, 0xFF, 20, 0, 0, 0, 0];
            bytes.extend_from_slice(&pseudo_random(128, 5));
            let _ = s.write_all(&bytes);
        }
        "1MB-before-publish" => {
            // Well-formed audio messages of 60 KB each, 1.2 MB in all, and never a publish.
            hs(&mut s)?;
            let mut enc = ChunkEncoder::new();
            let mut out = Vec::new();
            enc.encode(&streamgate::codec::rtmp::message::set_chunk_size(4096), &mut out).unwrap();
            for i in 0..20 {
                let m = Message {
                    csid: AUDIO_CSID,
                    timestamp: i * 20,
                    type_id: 8,
                    stream_id: 1,
                    payload: pseudo_random(60_000, 6 + u64::from(i)),
                };
                enc.encode(&m, &mut out).unwrap();
            }
            for piece in out.chunks(16 * 1024) {
                if s.write_all(piece).is_err() {
                    break;
                }
            }
        }
        "silent" => close_wait = Duration::from_secs(16),
        "silent-after-handshake" => {
            hs(&mut s)?;
            close_wait = Duration::from_secs(16);
        }
        "publish-before-connect" => {
            hs(&mut s)?;
            let args = vec![Amf0Value::string("early"), Amf0Value::string("live")];
            let publish = Command::new("publish", 1.0, Amf0Value::Null, args).to_message(STREAM_CSID, 1);
            let mut out = Vec::new();
            ChunkEncoder::new().encode(&publish, &mut out).unwrap();
            let _ = s.write_all(&out);
        }
        other => panic!("unknown case {other}"),
    }
    wait_closed(&mut s, close_wait).map(|took| (local, took))
}

/// Malformed connections are closed, each on its own and for its own reason, while a healthy
/// ffmpeg publisher and player carry on through the same proxy.
#[test]
fn malformed_handshakes_close_only_that_connection() {
    let (origin, mut p) = origin_and_proxy(4096, &["--log-level", "debug"]);
    let url = proxy_url(&p, "healthy");
    let mut publisher = Ffmpeg::publish(&url, 90);
    if !wait_until(PUBLISH_WAIT, || origin.publishing("healthy")) {
        panic!("healthy publisher never published: {}\n{}", publisher.describe(), diag(&p, &[&origin]));
    }
    let mut player = Ffmpeg::play(&url, 80);
    assert!(
        wait_until(Duration::from_secs(20), || player.frames() > 0),
        "healthy player got no frames: {}\n{}",
        player.describe(),
        diag(&p, &[&origin])
    );

    let port = p.rtmp;
    let results = in_parallel(BAD_CLIENTS.len(), move |i| misbehave(port, BAD_CLIENTS[i].0));
    let frames_before = player.frames();
    for ((case, reason), r) in BAD_CLIENTS.iter().zip(&results) {
        let (local, took) = r.as_ref().unwrap_or_else(|e| panic!("{case}: {e}\n{}", p.log_text()));
        if case.starts_with("silent") {
            let window = Duration::from_secs(8)..=Duration::from_secs(15);
            assert!(window.contains(took), "{case}: closed after {took:?}, expected at the 10 s identify timeout");
        } else {
            assert!(*took <= CLOSE_WAIT, "{case}: {took:?}");
        }
        // The proxy's own account of this connection (logged at debug when it drops it).
        let tag = format!("rtmp client 127.0.0.1:{local}: ");
        let line = |log: &str| log.lines().find(|l| l.contains(&tag)).map(str::to_string);
        wait_until(Duration::from_secs(5), || line(&p.log_text()).is_some());
        match line(&p.log_text()) {
            Some(l) => assert!(l.contains(reason), "{case}: the proxy dropped it saying {l:?}, want {reason:?}"),
            None => panic!("{case}: no log line for 127.0.0.1:{local}\n{}", p.log_text()),
        }
    }

    // The proxy is still there; the healthy pair never noticed.
    assert_proxy_healthy(&mut p);
    assert!(publisher.running(), "healthy publisher: {}", publisher.describe());
    assert!(player.running(), "healthy player: {}", player.describe());
    assert!(
        wait_until(Duration::from_secs(10), || player.frames() > frames_before),
        "healthy player stuck at {frames_before} frames: {}",
        player.describe()
    );
    assert!(origin.publishing("healthy"), "{}", diag(&p, &[&origin]));
    if let Err(e) = probe_h264_aac(&url, PROBE_TIMEOUT) {
        panic!("a new player after the malformed connections: {e}\n{}", diag(&p, &[&origin]));
    }
    assert_proxy_healthy(&mut p);
}

fn refused(p: &Proxy, stream: &str, play: bool) -> (Status, RtmpClient) {
    let mut client = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = if play {
        client.play(stream, |_| vec![], STATUS_TIMEOUT)
    } else {
        client.publish(stream, |_| vec![], STATUS_TIMEOUT)
    };
    let status = status.unwrap_or_else(|e| panic!("{stream}: no status: {e}\n{}", p.log_text()));
    (status, client)
}

/// Lines of the proxy log that name `key` (waits up to 5 s for at least one).
fn log_lines(p: &Proxy, key: &str) -> Vec<String> {
    let lines = || p.log_text().lines().filter(|l| l.contains(key)).map(str::to_string).collect::<Vec<_>>();
    wait_until(Duration::from_secs(5), || !lines().is_empty());
    lines()
}

#[test]
fn no_origin_gets_rtmp_error_status() {
    let mut p = Proxy::start(&[]);
    let (st, mut client) = refused(&p, "lonely", false);
    assert_eq!((st.command.as_str(), st.level.as_str()), ("onStatus", "error"), "{st:?}");
    assert_eq!(st.code, "NetStream.Publish.BadName", "{st:?}");
    assert!(st.description.to_ascii_lowercase().contains("no origin"), "{st:?}");
    wait_closed(&mut client.sock, CLOSE_WAIT).unwrap_or_else(|e| panic!("refused publisher: {e}"));

    let (st, mut client) = refused(&p, "lonely-player", true);
    assert_eq!((st.command.as_str(), st.level.as_str()), ("onStatus", "error"), "{st:?}");
    assert_eq!(st.code, "NetStream.Play.StreamNotFound", "{st:?}");
    assert!(st.description.to_ascii_lowercase().contains("no origin"), "{st:?}");
    wait_closed(&mut client.sock, CLOSE_WAIT).unwrap_or_else(|e| panic!("refused player: {e}"));

    for stream in ["lonely", "lonely-player"] {
        // "lonely" is a prefix of "lonely-player": match the key followed by a space.
        let lines = log_lines(&p, &format!("{} ", key(stream)));
        assert_eq!(lines.len(), 1, "{stream}: want one log line, got {lines:#?}\n{}", p.log_text());
        assert!(lines[0].to_ascii_lowercase().contains("no origin"), "{lines:?}");
    }
    assert_proxy_healthy(&mut p);
}

#[test]
fn unreachable_origin_gets_rtmp_error_status() {
    // The relay's refusal (the edge's: tests/edge.rs).
    let mut p = Proxy::start(&["--edge", "off"]);
    let closed = ClosedPort::new();
    let dead = closed.port;
    assert_eq!(register(&p.api_addr(), &origin_body("dead", "s", dead)).status, 200);
    let t0 = Instant::now();
    let (st, mut client) = refused(&p, "void", false);
    assert_eq!((st.command.as_str(), st.level.as_str()), ("onStatus", "error"), "{st:?}");
    assert_eq!(st.code, "NetStream.Publish.BadName", "{st:?}");
    assert!(st.description.contains("could not connect to origin"), "{st:?}");
    assert!(st.description.contains(&format!("127.0.0.1:{dead}")), "{st:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "refusal took {:?}", t0.elapsed());
    wait_closed(&mut client.sock, CLOSE_WAIT).unwrap_or_else(|e| panic!("refused publisher: {e}"));

    let (st, mut client) = refused(&p, "void-player", true);
    assert_eq!((st.level.as_str(), st.code.as_str()), ("error", "NetStream.Play.StreamNotFound"), "{st:?}");
    assert!(st.description.contains("could not connect to origin"), "{st:?}");
    wait_closed(&mut client.sock, CLOSE_WAIT).unwrap_or_else(|e| panic!("refused player: {e}"));

    for stream in ["void", "void-player"] {
        let lines = log_lines(&p, &format!("{} ", key(stream)));
        let why: Vec<&String> = lines.iter().filter(|l| l.contains("could not connect to origin")).collect();
        assert_eq!(why.len(), 1, "{stream}: want one log line with the reason, got {lines:#?}\n{}", p.log_text());
    }
    assert_proxy_healthy(&mut p);
}
