//! Long runs through the real binary with real peers: a publisher and players carrying more
//! than 200,000 messages each, with each relay (splice and copy), through the edge (`--edge
//! on`: players served from one origin pull's ring) and from a local stream (`--local-origin
//! on`: the publisher feeds the ring itself), over RTMP and HTTP-FLV (and, from the local
//! stream, HTTP-TS, SRT through a player job, and HLS from the remux job); the rings stay within
//! their bound.
//!
//! A high frame rate keeps it short: the source has 2,000 frames a second (two per FLV
//! millisecond), and the publisher and the HTTP-FLV origin are streamgate-load's paced sender,
//! which writes each millisecond's tags when they are due: about 1,000 separate writes a second,
//! so every session's task wakes about 1,000 times a second (ffmpeg's `-re` wakes every 10 ms
//! and writes its frames in bursts, far fewer wake-ups). nginx-rtmp is the RTMP origin; ffmpeg
//! and rtmpdump play. Streams used to die after about 32,000 wake-ups (a readiness wait kept one
//! more task reference per wake-up of the session's other direction).
//!
//! Each run checks, every few seconds, that every player's count (ffmpeg's frame count;
//! rtmpdump's media seconds) is still growing, and at the end that the proxy's resident memory
//! and descriptor count are what they were once the sessions had started.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http_peers::{FfmpegProc, origin_body_http};
use common::peers::NginxRtmp;
use common::*;

/// Video frames a second of the source (each one RTMP message / FLV tag).
const FPS: u32 = 2_000;
/// How long the publisher sends.
const RUN: Duration = Duration::from_secs(112);
/// What every session must carry (video frames; audio comes on top).
const MESSAGES: u64 = 200_000;
/// How often the counts, memory and descriptors are read.
const SAMPLE: Duration = Duration::from_secs(4);
/// Counts read before this are the warm-up (sessions starting, buffers growing to size).
const WARM_UP: Duration = Duration::from_secs(16);
/// `--edge-cache-bytes` of the edge and local runs.
const RING_BOUND: u64 = 4 << 20;
/// Sessions through the proxy: the publisher, two RTMP players, one HTTP-FLV player (and, from
/// a local stream, an HTTP-TS player and an SRT player).
const SESSIONS: usize = 4;
const LOCAL_SESSIONS: usize = SESSIONS + 2;
/// Largest growth of the proxy's resident memory allowed after the warm-up.
const RSS_SLACK_KB: u64 = 8 * 1024;

/// Ten seconds of 96x64 H.264 at [`FPS`] (one keyframe a second) with 8 kHz AAC, as FLV:
/// the publishers loop it with `-c copy`, so no encoder runs during the test.
fn source(dir: &Path) -> PathBuf {
    let path = dir.join("source.flv");
    let rate = format!("testsrc=size=96x64:rate={FPS}");
    let gop = FPS.to_string();
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", &rate])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=8000", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-tune", "zerolatency", "-g", &gop, "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "16k"])
        .args(["-t", "10", "-f", "flv"])
        .arg(&path)
        .output()
        .expect("run ffmpeg (apt-get install ffmpeg)");
    assert!(out.status.success(), "encoding the source failed: {}", String::from_utf8_lossy(&out.stderr));
    path
}

const LOAD: &str = env!("CARGO_BIN_EXE_streamgate-load");

/// A child process with stderr in a file of its own temp dir, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Proc {
    fn spawn(tag: &str, program: &str, args: &[&str]) -> Proc {
        let dir = TempDir::new(tag);
        let log = dir.0.join("stderr.log");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        Proc { child, log, _dir: dir }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// The log, with progress lines (`\r`) split, last `n` lines.
    fn tail(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).to_string();
        let lines: Vec<&str> = text.split(['\r', '\n']).filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// streamgate-load publishing `source`, paced, to `rtmp://HOST:PORT/live/<stream>0` for [`RUN`].
fn publisher(rtmp_port: u16, stream: &str, source: &Path) -> Proc {
    let url = format!("rtmp://127.0.0.1:{rtmp_port}/live");
    let secs = RUN.as_secs().to_string();
    let src = source.to_string_lossy();
    let args = ["--url", &url, "--publishers", "1", "--stream-prefix", stream, "--flv", &src, "--paced"];
    Proc::spawn("load-pub", LOAD, &[&args[..], &["--duration", &secs, "--report-every", "10"]].concat())
}

/// streamgate-load's HTTP-FLV origin serving `source`, paced, on a port it binds itself (port
/// 0), read from its `serving /*/*.flv on 127.0.0.1:PORT` line.
fn http_origin(source: &Path) -> (Proc, u16) {
    let src = source.to_string_lossy();
    let mut proc = Proc::spawn("origin-flv", LOAD, &["origin-flv", "--listen", "127.0.0.1:0", "--flv", &src]);
    let bound = |log: &Path| -> Option<u16> {
        let text = std::fs::read_to_string(log).ok()?;
        let addr = text.split_once("serving /*/*.flv on ")?.1.split_whitespace().next()?;
        addr.rsplit(':').next()?.parse().ok()
    };
    let mut port = None;
    wait_until(Duration::from_secs(15), || {
        port = bound(&proc.log);
        port.is_some() || !proc.running()
    });
    let port = port.unwrap_or_else(|| panic!("streamgate-load origin-flv never listened: {}", proc.tail(5)));
    (proc, port)
}

/// ffmpeg playing `url` without decoding into the FLV muxer (which, unlike the null muxer,
/// takes the source's equal timestamps), to /dev/null, until killed or the stream ends.
fn ffmpeg_player(tag: &str, url: &str) -> FfmpegProc {
    FfmpegProc::spawn(tag, "error", &["-i", url, "-c", "copy", "-f", "flv", "-y", "/dev/null"])
}

/// rtmpdump (librtmp) playing `url` to /dev/null.
fn rtmpdump(url: &str) -> Proc {
    Proc::spawn("rtmpdump", "rtmpdump", &["--live", "-r", url, "-o", "/dev/null"])
}

/// Media milliseconds rtmpdump received so far (its last `... kB / S sec` progress line).
fn rtmpdump_ms(p: &Proc) -> u64 {
    p.tail(3)
        .lines()
        .filter_map(|l| l.split(" kB / ").nth(1)?.split(" sec").next()?.trim().parse::<f64>().ok())
        .next_back()
        .map_or(0, |s| (s * 1000.0) as u64)
}

/// Video frames the proxy's media inspector counted on the publisher's session.
fn inspected_frames(p: &Proxy, key: &str) -> u64 {
    let reply = get(&p.api_addr(), "/api/v1/streams");
    let streams = reply.json();
    let stream = streams["streams"].as_array().and_then(|a| a.iter().find(|s| s["key"] == key).cloned());
    stream.and_then(|s| s["media"]["video_frames"].as_u64()).unwrap_or(0)
}

/// The largest memory any shard's stream rings hold (`streamgate_edge_cache_bytes`).
fn ring_bytes(p: &Proxy) -> u64 {
    let text = get(&p.api_addr(), "/metrics").body;
    let values = text.lines().filter(|l| l.starts_with("streamgate_edge_cache_bytes{"));
    values.filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).fold(0.0, f64::max) as u64
}

/// The proxy's resident memory (kB) and open descriptors.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

/// One reading of every count.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    publisher: u64,
    rtmp_player: u64,
    rtmpdump_ms: u64,
    flv_player: u64,
    /// A local stream's HTTP-TS and SRT players (0 on other routes).
    ts_player: u64,
    srt_player: u64,
    rss_kb: u64,
    fds: usize,
    ring_bytes: u64,
}

/// The path the players' bytes take through the proxy.
#[derive(Clone, Copy, PartialEq)]
enum Route {
    /// A relayed session per player (`--relay splice` or `copy`, `--edge off`).
    Relay(&'static str),
    /// `--edge on` without merged writes: one origin pull per shard, players served from its
    /// ring.
    Edge,
    /// `--local-origin on`: the proxy is the origin; the publisher feeds the ring itself.
    Local,
}

fn long_run(path: Route) {
    let (mode, args): (&str, &[&str]) = match path {
        // The splice run without batching (a wake-up per origin write, the most there can be);
        // the copy run with the default 20 ms batches.
        Route::Relay("splice") => ("splice", &["--relay", "splice", "--edge", "off", "--relay-batch", "0s"]),
        Route::Relay(_) => ("copy", &["--relay", "copy", "--edge", "off"]),
        // A ring holds up to `--edge-cache-bytes` (entries and their wire forms), and at this
        // message rate the default 16 MiB fills only after about 20 s per ring: a smaller bound
        // fills within the warm-up, so what is measured after it is the steady state.
        // Without merged writes (on by default, 40 ms): the local run covers them.
        Route::Edge => (
            "edge",
            &["--edge", "on", "--edge-cache-bytes", "4MiB", "--edge-max-lag", "1MiB", "--edge-merge-write", "0s"],
        ),
        // With the HLS remux job (an in-process libavformat player of the stream: it used to
        // leak every packet it skipped, about 0.35 MB/s at this rate).
        // Its players also use merged writes (the edge run covers the same player code without).
        Route::Local => (
            "local",
            &[
                "--local-origin",
                "on",
                "--edge-cache-bytes",
                "4MiB",
                "--edge-max-lag",
                "1MiB",
                "--edge-merge-write",
                "50ms",
            ],
        ),
    };
    let dir = TempDir::new(&format!("long-{mode}"));
    let source = source(&dir.0);
    let origin = NginxRtmp::start(4096);
    let (mut flv_origin, http_port) = http_origin(&source);
    let p = Proxy::start(args);
    let reply = register(&p.api_addr(), &origin_body_http("long", mode, origin.rtmp_port, http_port));
    assert_eq!(reply.status, 200, "{}", reply.body);

    let prefix = format!("long-{mode}-");
    let stream = format!("{prefix}0");
    let key = format!("__defaultVhost__/live/{stream}");
    let mut publisher = publisher(p.rtmp, &prefix, &source);
    let published = wait_until(Duration::from_secs(20), || match path {
        Route::Local => inspected_frames(&p, &key) > 0,
        _ => origin.publishing(&stream),
    });
    assert!(published, "{stream} never published: {}\n{}", publisher.tail(20), p.log_text());
    let rtmp_url = format!("rtmp://127.0.0.1:{}/live/{stream}", p.rtmp);
    let mut rtmp_player = ffmpeg_player("ffmpeg-rtmp-play", &rtmp_url);
    let dump = rtmpdump(&rtmp_url);
    let flv_url = format!("http://127.0.0.1:{}/live/{stream}.flv", p.http);
    let mut flv_player = ffmpeg_player("ffmpeg-flv-play", &flv_url);
    // A local stream also plays as HTTP-TS (muxed on the shard) and over SRT (a player job that
    // plays it from the RTMP listener into MPEG-TS over SRT).
    let mut local_players = (path == Route::Local).then(|| {
        let ts_url = format!("http://127.0.0.1:{}/live/{stream}.ts", p.http);
        let srt_url = format!("srt://127.0.0.1:{}?streamid=#!::r=live/{stream},m=request", p.srt);
        (ffmpeg_player("ffmpeg-ts-play", &ts_url), ffmpeg_player("ffmpeg-srt-play", &srt_url))
    });
    let local_frames = |players: &Option<(FfmpegProc, FfmpegProc)>| match players {
        Some((ts, srt)) => (ts.frames(), srt.frames()),
        None => (0, 0),
    };

    let pid = p.child.id();
    let t0 = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    // A local stream's HLS remux job runs beside the players.
    let (http, playlist) = (format!("127.0.0.1:{}", p.http), format!("/live/{stream}.m3u8"));
    let mut hls_readings = 0;
    while publisher.running() && t0.elapsed() < RUN + Duration::from_secs(30) {
        std::thread::sleep(SAMPLE);
        let (rss_kb, fds) = rss_and_fds(pid);
        let (ts_player, srt_player) = local_frames(&local_players);
        samples.push(Sample {
            at: t0.elapsed(),
            publisher: inspected_frames(&p, &key),
            rtmp_player: rtmp_player.frames(),
            rtmpdump_ms: rtmpdump_ms(&dump),
            flv_player: flv_player.frames(),
            ts_player,
            srt_player,
            rss_kb,
            fds,
            ring_bytes: ring_bytes(&p),
        });
        if path == Route::Local && get(&http, &playlist).body.contains("#EXTINF") {
            hls_readings += 1;
        }
    }
    let last = samples.last().copied().unwrap_or_else(|| panic!("no readings: {}", publisher.tail(20)));
    let rows: Vec<String> = samples.iter().map(|s| format!("{s:?}")).collect();
    let log = p.log_text();
    let local_report = match &mut local_players {
        Some((ts, srt)) => format!("ts player: {}\nsrt player: {}\n", ts.describe(), srt.describe()),
        None => String::new(),
    };
    let report = format!(
        "{mode}: samples:\n{}\npublisher: {}\nrtmp player: {}\nrtmpdump: {}\nflv player: {}\n{local_report}flv origin: {}\nproxy log tail:\n{}",
        rows.join("\n"),
        publisher.tail(20),
        rtmp_player.describe(),
        dump.tail(5),
        flv_player.describe(),
        flv_origin.tail(5),
        log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(flv_origin.running(), "{report}");
    if path == Route::Local {
        assert!(hls_readings * 2 >= samples.len(), "an HLS playlist at {hls_readings} of the readings: {report}");
    }

    // Every count grows from each reading to the next until the publisher stops.
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at >= WARM_UP).collect();
    assert!(steady.len() >= 10, "too few readings: {report}");
    for pair in steady.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.at >= RUN - SAMPLE {
            break; // the publisher is about to end
        }
        let mut grew = vec![
            ("publisher (frames the proxy inspected)", a.publisher, b.publisher),
            ("ffmpeg RTMP player", a.rtmp_player, b.rtmp_player),
            ("rtmpdump", a.rtmpdump_ms, b.rtmpdump_ms),
            ("ffmpeg HTTP-FLV player", a.flv_player, b.flv_player),
        ];
        if path == Route::Local {
            grew.push(("ffmpeg HTTP-TS player", a.ts_player, b.ts_player));
            grew.push(("ffmpeg SRT player", a.srt_player, b.srt_player));
        }
        for (who, before, after) in grew {
            assert!(after > before, "{who} stopped growing between {:?} and {:?}: {report}", a.at, b.at);
        }
    }
    let dumped_frames = last.rtmpdump_ms * u64::from(FPS) / 1000;
    let mut carried = vec![
        // The stream's statistics end with its publisher: its most, not its last reading.
        ("publisher", samples.iter().map(|s| s.publisher).max().unwrap_or(0)),
        ("ffmpeg RTMP player", last.rtmp_player),
        ("rtmpdump", dumped_frames),
        ("ffmpeg HTTP-FLV player", last.flv_player),
    ];
    if path == Route::Local {
        carried.push(("ffmpeg HTTP-TS player", last.ts_player));
        carried.push(("ffmpeg SRT player", last.srt_player));
    }
    for (who, count) in carried {
        assert!(count >= MESSAGES, "{who} carried {count} video frames, fewer than {MESSAGES}: {report}");
    }

    // Memory and descriptors: flat once the sessions run. A splice relay makes its pipe (two
    // descriptors) when its direction first carries bytes, which for a quiet direction (a
    // player's acknowledgements) may come late: at most one such pipe per session.
    let base = steady[0];
    let peak = steady.iter().map(|s| s.rss_kb).max().unwrap();
    assert!(peak <= base.rss_kb + RSS_SLACK_KB, "RSS grew from {} to {peak} kB: {report}", base.rss_kb);
    if matches!(path, Route::Edge | Route::Local) {
        // The rings fill to their bound and stay there (one stream: one ring per shard). The
        // bound holds when a message arrives; the wire forms the players write before the next
        // one come on top until it does.
        let most = samples.iter().map(|s| s.ring_bytes).max().unwrap_or(0);
        let bound = RING_BOUND + (64 << 10);
        assert!(most > RING_BOUND / 2 && most <= bound, "a ring held {most} bytes, bound {bound}: {report}");
    }
    let most_fds = steady.iter().map(|s| s.fds).max().unwrap();
    let sessions = if path == Route::Local { LOCAL_SESSIONS } else { SESSIONS };
    assert!(most_fds <= base.fds + 2 * sessions, "descriptors grew from {} to {most_fds}: {report}", base.fds);
    assert!(!log.contains("panicked"), "{report}");
    eprintln!(
        "{mode}: {} frames published, {} played over RTMP, {:.1} s by rtmpdump, {} over HTTP-FLV, {} over HTTP-TS, {} over SRT; RSS {} -> {} kB (peak {peak}), {} -> {} descriptors",
        last.publisher,
        last.rtmp_player,
        last.rtmpdump_ms as f64 / 1000.0,
        last.flv_player,
        last.ts_player,
        last.srt_player,
        base.rss_kb,
        last.rss_kb,
        base.fds,
        last.fds,
    );
}

#[test]
fn the_splice_relay_carries_two_hundred_thousand_messages_per_session() {
    long_run(Route::Relay("splice"));
}

#[test]
fn the_copy_relay_carries_two_hundred_thousand_messages_per_session() {
    long_run(Route::Relay("copy"));
}

#[test]
fn the_edge_carries_two_hundred_thousand_messages_per_player() {
    long_run(Route::Edge);
}

// The local stream's ring on the publisher's shard and its copy on the other.
#[test]
fn a_local_stream_carries_two_hundred_thousand_messages_per_player() {
    long_run(Route::Local);
}
