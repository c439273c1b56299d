//! The edge (`--edge on`) end to end with real peers: ffmpeg publishes through the proxy (a 1:1
//! relay) to a real nginx-rtmp origin; ffmpeg, ffprobe, rtmpdump and the tests' own RTMP client
//! play through the edge. How many connections the origin serves is read from its own stat
//! page, never from the proxy.

mod common;

use std::time::{Duration, Instant};

use common::http_peers;
use common::peers::*;
use common::rtmp_client::{Handshake, ReadEnd, RtmpClient};
use common::*;
use serde_json::Value;
use streamgate::codec::rtmp::message;

/// Deadline for a stream to show up as publishing on an origin (the VM is slow and shared).
const PUBLISH_WAIT: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(25);

/// The `edge` object of `stream`'s entry in `/api/v1/streams` (null when there is none).
fn stream_edge(p: &Proxy, stream: &str) -> Value {
    let reply = get(&p.api_addr(), "/api/v1/streams");
    let key = format!("__defaultVhost__/live/{stream}");
    let streams = reply.json()["streams"].as_array().cloned().unwrap_or_default();
    streams.iter().find(|s| s["key"] == key).map_or(Value::Null, |s| s["edge"].clone())
}

/// A proxy with the edge on and one registered nginx-rtmp origin, `stream` published to it
/// through the proxy for `seconds`.
fn edge_with_stream(extra: &[&str], stream: &str, seconds: u32) -> (NginxRtmp, Proxy, Ffmpeg) {
    let origin = NginxRtmp::start(4096);
    let mut args = vec!["--edge", "on"];
    args.extend_from_slice(extra);
    let p = Proxy::start(&args);
    assert_eq!(register(&p.api_addr(), &origin_body("one", "edge", origin.rtmp_port)).status, 200);
    let mut publisher = Ffmpeg::publish(&proxy_url(&p, stream), seconds);
    if !wait_until(PUBLISH_WAIT, || origin.publishing(stream)) {
        panic!("{stream} never published: {}\n{}", publisher.describe(), diag(&p, &[&origin]));
    }
    (origin, p, publisher)
}

/// While `players` run (at most 40 s): the most play connections the origin served for
/// `stream`, and the stream's `edge` object when it counted the most players.
fn watch_players(players: &mut [Ffmpeg], origin: &NginxRtmp, p: &Proxy, stream: &str) -> (usize, Value) {
    let (mut most, mut edge) = (0, Value::Null);
    let deadline = Instant::now() + Duration::from_secs(40);
    while players.iter_mut().any(|f| f.running()) && Instant::now() < deadline {
        most = most.max(origin.players(stream));
        let now = stream_edge(p, stream);
        if now["players"].as_u64() > edge["players"].as_u64() {
            edge = now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    (most, edge)
}

/// Whether a video message is a keyframe (FLV frame type 1), sequence headers included.
fn keyframe(m: &streamgate::codec::rtmp::Message) -> bool {
    m.type_id == message::VIDEO && m.payload.first().is_some_and(|b| b >> 4 == 1)
}

/// Eight ffmpeg players of one stream through a two-shard edge, four over RTMP and four over
/// HTTP-FLV: every one decodes its frames cleanly, ffprobe finds both tracks over both
/// protocols, rtmpdump (librtmp) records a file that decodes, and the origin never serves more
/// play connections than there are shards.
#[test]
fn players_of_a_stream_share_one_origin_pull_per_shard() {
    let (origin, p, _publisher) = edge_with_stream(&["--shards", "2"], "a", 40);
    let url = proxy_url(&p, "a");
    let flv = format!("http://127.0.0.1:{}/live/a.flv", p.http);
    for url in [&url, &flv] {
        if let Err(e) = probe_h264_aac(url, PROBE_TIMEOUT) {
            panic!("{e}\n{}", diag(&p, &[&origin]));
        }
    }
    let mut players: Vec<_> = (0..8).map(|i| Ffmpeg::play_frames(if i % 2 == 0 { &url } else { &flv }, 100)).collect();
    let (most, edge) = watch_players(&mut players, &origin, &p, "a");
    // The proxy's own account agrees: pulls per shard, players, a GOP in the cache.
    assert!((1..=2).contains(&edge["pulls"].as_u64().unwrap_or(0)), "{edge}");
    assert!(edge["players"].as_u64().unwrap_or(0) >= 4, "{edge}");
    assert!(edge["cache_bytes"].as_u64().unwrap_or(0) > 10_000, "{edge}");
    // Per shard at most one pull connected (a shard may have started another if its first
    // lingered out between the probes and the players).
    let shards = get(&p.api_addr(), "/api/v1/shards").json();
    for shard in shards["shards"].as_array().unwrap() {
        assert!(shard["edge"]["pulls"].as_u64() <= Some(1), "{shards}");
    }
    let metrics = get(&p.api_addr(), "/metrics").body;
    assert!(metrics.contains("streamgate_edge_pulls{shard=\"0\"}"), "{metrics}");
    for f in &mut players {
        let ok = f.try_status().is_some_and(|s| s.success()) && f.frames() >= 100 && f.stderr_text().trim().is_empty();
        assert!(ok, "player: {}\n{}", f.describe(), diag(&p, &[&origin]));
    }
    assert!((1..=2).contains(&most), "the origin served {most} players for 2 shards\n{}", diag(&p, &[&origin]));

    let dir = TempDir::new("rtmpdump");
    let saved = dir.0.join("out.flv");
    let mut cmd = std::process::Command::new("rtmpdump");
    cmd.args(["-r", &url, "--live", "-o"]).arg(&saved);
    let outcome = run_with_timeout(cmd, Duration::from_secs(5));
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0"])
        .arg(&saved)
        .output()
        .unwrap();
    let codecs = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(codecs.contains("h264") && codecs.contains("aac"), "rtmpdump: {codecs:?} {}", outcome.stderr);
    let log = p.log_text();
    assert!(log.contains("rtmp play") && log.contains("http_flv play") && log.contains("via the edge"), "{log}");
}

/// Fifty players of one stream through a two-shard edge (streamgate-load's players, half over
/// RTMP and half over HTTP-FLV, all at once): every one is still open at the end with media at
/// the source's frame rate and no error, and the origin's own statistics never show more play
/// connections than there are shards.
#[test]
fn fifty_players_are_served_by_one_pull_per_shard() {
    let (origin, p, _publisher) = edge_with_stream(&["--shards", "2"], "fifty", 40);
    // ffmpeg's test source (tests/common) runs at 25 frames a second.
    if let Err(e) = probe_h264_aac(&proxy_url(&p, "fifty"), PROBE_TIMEOUT) {
        panic!("{e}\n{}", diag(&p, &[&origin]));
    }
    let load = env!("CARGO_BIN_EXE_streamgate-load");
    let run = |url: String| {
        std::process::Command::new(load)
            .args(["--url", &url, "--players", "25", "--play-stream", "fifty", "--ramp-per-sec", "100"])
            .args(["--duration", "12", "--report-every", "60", "--json"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("streamgate-load")
    };
    let rtmp = run(format!("rtmp://127.0.0.1:{}/live", p.rtmp));
    let flv = run(format!("http://127.0.0.1:{}/live", p.http));
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        most = most.max(origin.players("fifty"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let edge = stream_edge(&p, "fifty");
    for (what, child) in [("RTMP", rtmp), ("HTTP-FLV", flv)] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summary: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: no summary ({e}): {stderr}\n{}", diag(&p, &[&origin])));
        let num = |k: &str| summary[k].as_f64().unwrap_or(-1.0);
        let fps = summary["video_fps_per_player"].as_f64().unwrap_or(0.0);
        let ok = num("open_at_end") == 25.0
            && num("players_without_media_at_end") == 0.0
            && num("errors_total") == 0.0
            && fps > 15.0;
        assert!(ok, "{what} players: {summary}\n{stderr}\n{}", diag(&p, &[&origin]));
    }
    assert!(edge["players"].as_u64().unwrap_or(0) >= 50, "{edge}");
    assert!((1..=2).contains(&most), "the origin served {most} players for 2 shards\n{}", diag(&p, &[&origin]));
}

/// With a player already pulling the stream, a new player gets the cached GOP at once: its
/// first video frame is a keyframe and arrives within 100 ms of its play being answered. Then
/// GStreamer's rtmp2src plays the same stream through the edge.
#[test]
fn a_late_player_starts_at_a_keyframe_at_once() {
    let (origin, p, _publisher) = edge_with_stream(&["--shards", "1"], "late", 30);
    let mut first = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    first.play("late", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    let (video, audio, end) = first.count_media(Instant::now() + Duration::from_secs(3));
    assert!(video > 20 && audio > 20 && end.is_none(), "{video} {audio} {end:?}\n{}", diag(&p, &[&origin]));

    let mut late = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    late.play("late", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    let answered = Instant::now();
    let deadline = answered + Duration::from_secs(5);
    let frame = loop {
        match late.read_message(deadline) {
            // The sequence header (AVC packet type 0) comes first; then the first frame.
            Ok(m) if m.type_id == message::VIDEO && m.payload.get(1) == Some(&1) => break m,
            Ok(_) => {}
            Err(e) => panic!("no video frame: {e}\n{}", diag(&p, &[&origin])),
        }
    };
    let took = answered.elapsed();
    assert!(keyframe(&frame), "the first frame is not a keyframe: {:?}", &frame.payload[..2]);
    assert!(took < Duration::from_millis(100), "first keyframe after {took:?}");
    assert_eq!(origin.players("late"), 1, "one pull for both players on one shard");

    // GStreamer's RTMP client (rtmp2src) records 5 s through the edge; the file decodes.
    let dir = TempDir::new("gst");
    let saved = dir.0.join("gst.flv");
    let mut cmd = std::process::Command::new("gst-launch-1.0");
    let location = format!("location={}", proxy_url(&p, "late"));
    let sink = format!("location={}", saved.display());
    cmd.args(["-q", "rtmp2src", &location, "!", "filesink", &sink]);
    let outcome = run_with_timeout(cmd, Duration::from_secs(5));
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0"])
        .arg(&saved)
        .output()
        .expect("ffprobe");
    let codecs = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(codecs.contains("h264") && codecs.contains("aac"), "gstreamer: {codecs:?} {}", outcome.stderr);
}

/// A player that stops reading falls behind: it skips to a keyframe (its dropped frames are
/// logged), then is disconnected after --edge-stall-timeout, while another player of the same
/// stream keeps decoding at the stream's rate.
#[test]
fn a_player_that_stops_reading_is_skipped_then_disconnected() {
    let extra = ["--shards", "1", "--edge-max-lag", "128KiB", "--edge-stall-timeout", "5s"];
    let (origin, p, _publisher) = edge_with_stream(&extra, "slow", 40);
    let mut stuck = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    stuck.play("slow", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    let url = proxy_url(&p, "slow");
    let started = Instant::now();
    // 10 s of 25 fps video while `stuck` reads nothing.
    let mut healthy = Ffmpeg::play_frames(&url, 250);
    // Before its disconnect the API names the stuck player among those furthest behind: its
    // address, how far behind it is and the frames it skipped.
    let stuck_peer = stuck.sock.local_addr().unwrap().to_string();
    let named = wait_until(Duration::from_secs(20), || {
        let behind = stream_edge(&p, "slow")["players_behind"].as_array().cloned().unwrap_or_default();
        behind.iter().any(|b| {
            b["peer"] == stuck_peer.as_str()
                && b["shard"] == 0
                && b["lag_bytes"].as_u64() > Some(0)
                && b["dropped_frames"].as_u64() > Some(0)
        })
    });
    assert!(named, "the stuck player {stuck_peer} is not among players_behind: {}", stream_edge(&p, "slow"));
    let disconnected = wait_until(Duration::from_secs(30), || p.log_text().contains("took nothing for 5s"));
    assert!(disconnected, "the stuck player was never disconnected\n{}", diag(&p, &[&origin]));
    let line = p.log_text().lines().find(|l| l.contains("took nothing for 5s")).unwrap_or_default().to_string();
    let dropped: u64 =
        line.rsplit_once(" frames dropped").and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(dropped > 0, "no frames skipped before the disconnect: {line}");
    let counted = wait_until(Duration::from_secs(5), || {
        let metrics = get(&p.api_addr(), "/metrics").body;
        metrics
            .lines()
            .any(|l| l.starts_with("streamgate_edge_dropped_frames_total{shard=\"0\"}") && !l.ends_with(" 0"))
    });
    assert!(counted, "dropped frames not in /metrics");
    let reported =
        wait_until(Duration::from_secs(5), || stream_edge(&p, "slow")["dropped_frames"].as_u64() >= Some(dropped));
    assert!(reported, "{}", stream_edge(&p, "slow"));
    let status = healthy.wait_timeout(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()) && healthy.frames() >= 250, "{}", healthy.describe());
    let took = started.elapsed();
    // 10 s of frames in real time; a player held back by the stuck one would take the stall
    // timeout on top, every time the stuck one blocks (the margin is for a busy machine).
    assert!(took < Duration::from_secs(22), "250 frames took {took:?}: the healthy player was held back");
    let log = p.log_text();
    let healthy_end = log.lines().find(|l| l.contains("the player closed")).unwrap_or_default();
    assert!(healthy_end.ends_with(" 0 frames dropped"), "the healthy player dropped frames: {log}");
    // The stuck player's socket ends once what the kernel holds for it is read.
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match stuck.read_message(deadline) {
            Err(ReadEnd::Closed) => {
                closed = true;
                break;
            }
            Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(closed, "the stuck player's connection is still open");
}

/// The origin the proxy has `stream` pinned to, from `/api/v1/streams`.
fn pinned_origin(p: &Proxy, stream: &str) -> Option<String> {
    let reply = get(&p.api_addr(), "/api/v1/streams");
    let key = format!("__defaultVhost__/live/{stream}");
    let streams = reply.json()["streams"].as_array()?.clone();
    streams.iter().find(|s| s["key"] == key)?["origin"].as_str().map(str::to_string)
}

/// The stream's origin is killed mid-stream while a second origin has the stream too: the pull
/// moves there, and the player, still connected, gets video again within a few seconds with
/// timestamps that keep going forward.
#[test]
fn killing_the_origin_moves_the_pull_and_players_keep_playing() {
    let mut origins = [NginxRtmp::start(4096), NginxRtmp::start(4096)];
    let p = Proxy::start(&["--edge", "on", "--shards", "1"]);
    let ids = ["one-fo-1", "two-fo-1"];
    for (o, server) in origins.iter().zip(["one", "two"]) {
        assert_eq!(register(&p.api_addr(), &origin_body(server, "fo", o.rtmp_port)).status, 200);
    }
    // The stream is published on both origins directly (as an origin cluster would have it).
    let _publishers: Vec<_> = origins.iter().map(|o| Ffmpeg::publish(&o.url("fo"), 40)).collect();
    assert!(wait_until(PUBLISH_WAIT, || origins.iter().all(|o| o.publishing("fo"))), "{}", diag(&p, &[]));
    let mut player = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    player.play("fo", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    let mut last_video = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(m) = player.read_message(deadline) {
        if m.type_id == message::VIDEO {
            last_video = m.timestamp;
        }
    }
    assert!(last_video > 0, "no video before the kill\n{}", diag(&p, &[&origins[0], &origins[1]]));
    let home = pinned_origin(&p, "fo").expect("the stream is pinned");
    let index = ids.iter().position(|id| *id == home).unwrap_or_else(|| panic!("pinned to {home}"));
    origins[index].kill();
    let killed = Instant::now();

    // Whatever was in flight arrives; then, after a pause, video from the other origin: the
    // first coded frame after a gap of 300 ms or more.
    let deadline = killed + Duration::from_secs(10);
    let mut resumed = None;
    let mut first_after = None;
    let mut last_arrival = Instant::now();
    let mut gap = false;
    while resumed.is_none() {
        match player.read_message(deadline) {
            Ok(m) if m.type_id == message::VIDEO => {
                gap |= last_arrival.elapsed() >= Duration::from_millis(300);
                last_arrival = Instant::now();
                if gap && m.payload.get(1) == Some(&1) {
                    resumed = Some(killed.elapsed());
                    first_after = Some(m);
                } else if !gap {
                    last_video = m.timestamp;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("player after the kill: {e}\n{}", diag(&p, &[&origins[1 - index]])),
        }
    }
    assert!(resumed.is_some_and(|after| after < Duration::from_secs(8)), "resumed after {resumed:?}");
    let first = first_after.unwrap();
    assert!(first.timestamp > last_video, "timestamps went back: {} after {last_video}", first.timestamp);
    assert!(keyframe(&first), "resumed on a non-keyframe");
    let (video, _, end) = player.count_media(Instant::now() + Duration::from_secs(2));
    assert!(video > 20 && end.is_none(), "{video} {end:?}");
    let log = p.log_text();
    assert!(log.contains(&format!("pulling from origin {}", ids[1 - index])), "{log}");
    assert_eq!(pinned_origin(&p, "fo").as_deref(), Some(ids[1 - index]));
}

/// An origin that serves only HTTP-FLV, and only to one client (ffmpeg `-listen 1`): with the
/// default flags (the edge on, `--edge-pull auto`) the edge finds its RTMP endpoint refusing
/// connections, pulls it with one GET and serves RTMP and HTTP-FLV players from that pull.
#[test]
fn an_http_flv_only_origin_is_pulled_once_for_every_player() {
    let origin = http_peers::FfmpegHttpOrigin::start("flv", "/live/h.flv", 40);
    let p = Proxy::start(&["--shards", "1"]);
    // Registrations need an RTMP endpoint: a port nobody listens on.
    let closed = ClosedPort::new();
    let body = http_peers::origin_body_http("flv", "h", closed.port, origin.port);
    let reply = register(&p.api_addr(), &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The players' query (their token, say) goes to the origin with the pull.
    let flv = format!("http://127.0.0.1:{}/live/h.flv?token=xyz", p.http);
    let rtmp = format!("{}?token=xyz", proxy_url(&p, "h"));
    let mut players: Vec<_> = [&flv, &flv, &rtmp].iter().map(|url| Ffmpeg::play_frames(url, 100)).collect();
    for f in &mut players {
        let status = f.wait_timeout(Duration::from_secs(40));
        let ok = status.is_some_and(|s| s.success()) && f.frames() >= 100 && f.stderr_text().trim().is_empty();
        assert!(ok, "player: {}\n--- proxy log:\n{}", f.describe(), p.log_text());
    }
    assert_eq!(origin.requested(), ["/live/h.flv?token=xyz"], "one GET for all three players");
    let log = p.log_text();
    assert!(log.contains("refuses RTMP connections") && log.contains("HTTP-FLV)"), "{log}");
}

/// An HTTP-TS player of a stream in a codec the edge's muxer cannot carry (MP3 audio here; it
/// muxes H.264 and AAC) is relayed to the origin, which muxes the stream itself: ffprobe sees
/// H.264 and MP3 in the TS it gets through the proxy (the edge would give it video alone), and
/// the origin's HTTP endpoint got the request. RTMP players of the stream stay on the edge.
#[test]
fn an_http_ts_player_of_a_stream_the_edge_cannot_mux_is_relayed_to_the_origin() {
    let nginx = NginxRtmp::start(4096);
    let ts_origin = http_peers::FfmpegHttpOrigin::start_with_audio("libmp3lame", "mpegts", "/live/m.ts", 60);
    let p = Proxy::start(&["--shards", "1"]);
    let body = http_peers::origin_body_http("mp3", "m", nginx.rtmp_port, ts_origin.port);
    assert_eq!(register(&p.api_addr(), &body).status, 200);
    let mut publish = http_peers::with_audio(http_peers::test_signal_args(60), "libmp3lame");
    publish.extend(["-f".to_string(), "flv".to_string(), proxy_url(&p, "m")]);
    let publish: Vec<&str> = publish.iter().map(String::as_str).collect();
    let mut publisher = Ffmpeg::spawn("ffmpeg-pub", &publish);
    if !wait_until(PUBLISH_WAIT, || nginx.publishing("m")) {
        panic!("m never published: {}\n{}", publisher.describe(), diag(&p, &[&nginx]));
    }
    let rtmp = ffprobe_streams(&proxy_url(&p, "m"), PROBE_TIMEOUT);
    let rtmp = rtmp.unwrap_or_else(|e| panic!("{e}\n{}", diag(&p, &[&nginx])));
    assert!(rtmp.contains(&"h264".to_string()) && rtmp.contains(&"mp3".to_string()), "RTMP: {rtmp:?}");
    let ts = ffprobe_streams(&format!("http://{}/live/m.ts", p.http_addr()), PROBE_TIMEOUT);
    let ts = ts.unwrap_or_else(|e| panic!("{e}\n{}", diag(&p, &[&nginx])));
    assert!(ts.contains(&"h264".to_string()) && ts.contains(&"mp3".to_string()), "HTTP-TS: {ts:?}\n{}", p.log_text());
    assert_eq!(ts_origin.requested(), ["/live/m.ts"]);
    let log = p.log_text();
    assert!(log.contains("the stream carries mp3; relayed to the origin"), "{log}");
}

/// The query of the player whose play starts the pull (its token, say) goes to the origin with
/// the pull's play, where an origin's `on_play` hook reads it (nginx-rtmp logs it).
#[test]
fn the_first_players_query_goes_to_the_origin_with_the_pull() {
    let (origin, p, _publisher) = edge_with_stream(&[], "q", 30);
    let url = format!("{}?token=abc", proxy_url(&p, "q"));
    if let Err(e) = probe_h264_aac(&url, PROBE_TIMEOUT) {
        panic!("{e}\n{}", diag(&p, &[&origin]));
    }
    let log = origin.error_log();
    assert!(log.contains("play: name='q' args='token=abc'"), "{}", diag(&p, &[&origin]));
}

/// An HTTP player of a stream the origin does not have is answered 502 once the pull gives up
/// (`--edge-stall-timeout`), over HTTP-FLV and HTTP-TS, not 200 with an empty body; nginx-rtmp
/// answers the pull's play of it (`|RtmpSampleAccess`) and then sends nothing.
#[test]
fn an_http_player_of_a_stream_no_origin_has_gets_502() {
    let origin = NginxRtmp::start(4096);
    let p = Proxy::start(&["--edge", "on", "--edge-stall-timeout", "2s"]);
    assert_eq!(register(&p.api_addr(), &origin_body("one", "edge", origin.rtmp_port)).status, 200);
    for path in ["/live/none.flv", "/live/none.ts"] {
        let started = Instant::now();
        let reply = get(&p.http_addr(), path);
        assert_eq!(reply.status, 502, "{path}: {}\n{}", reply.body, p.log_text());
        assert!(reply.body.contains("no origin served the stream"), "{}", reply.body);
        assert!(started.elapsed() < Duration::from_secs(20), "{path} took {:?}", started.elapsed());
    }
    let log = p.log_text();
    assert!(log.contains("http_flv play __defaultVhost__/live/none from") && log.contains("502"), "{log}");
}

/// A player of a stream whose only origin cannot be reached is refused at once with the
/// reason, as a relayed one is (not answered `Play.Start` or 200 and left waiting): RTMP with an
/// error `onStatus` `NetStream.Play.StreamNotFound` naming the failed dial, HTTP-FLV with 502.
#[test]
fn players_of_a_stream_no_origin_can_serve_are_refused_with_the_reason() {
    for http in [false, true] {
        let p = Proxy::start(&["--shards", "1"]);
        let closed = ClosedPort::new();
        assert_eq!(register(&p.api_addr(), &origin_body("dead", "s", closed.port)).status, 200);
        let t0 = Instant::now();
        let (status, why) = if http {
            let reply = get(&p.http_addr(), "/live/gone.flv");
            (reply.status.to_string(), reply.body)
        } else {
            let mut client = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
            let st = client.play("gone", |_| vec![], Duration::from_secs(15));
            let st = st.unwrap_or_else(|e| panic!("no status: {e}\n{}", p.log_text()));
            (format!("{} {}", st.level, st.code), st.description)
        };
        let want = if http { "502" } else { "error NetStream.Play.StreamNotFound" };
        assert_eq!(status, want, "{why}\n{}", p.log_text());
        assert!(why.contains("no origin served the stream: could not connect to origin"), "{why}");
        assert!(t0.elapsed() < Duration::from_secs(5), "refused after {:?}", t0.elapsed());
    }
}

/// An `on_play` hook for nginx-rtmp: allows a play whose request carries `token=good`, answers
/// 403 to any other; returns its port and every request it saw.
fn token_hook() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (head, body) = read_request(&mut conn).unwrap_or_default();
            let text = format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body));
            let status = if text.contains("token=good") { "200 OK" } else { "403 Forbidden" };
            kept.lock().unwrap().push(text);
            let _ = conn
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    (port, seen)
}

/// An origin that checks every player's token (nginx-rtmp `on_play`) checks them through the
/// edge too: a player whose query differs from the one the shard's pull carries is let in only
/// if the origin lets a play with its own query in, over RTMP and HTTP-FLV.
#[test]
fn the_origin_checks_every_players_query_through_the_edge() {
    let (hook, seen) = token_hook();
    let origin = NginxRtmp::start_with(4096, &format!("on_play http://127.0.0.1:{hook}/on_play;"));
    let p = Proxy::start(&["--edge", "on", "--shards", "1"]);
    assert_eq!(register(&p.api_addr(), &origin_body("one", "edge", origin.rtmp_port)).status, 200);
    let _publisher = Ffmpeg::publish(&origin.url("g"), 40);
    assert!(wait_until(PUBLISH_WAIT, || origin.publishing("g")), "{}", diag(&p, &[&origin]));
    let url = |query: &str| format!("{}?{query}", proxy_url(&p, "g"));

    probe_h264_aac(&url("token=good1"), PROBE_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", diag(&p, &[&origin])));
    // While the shard pulls g with token=good1: another token is asked of the origin.
    assert!(ffprobe_streams(&url("token=bad"), Duration::from_secs(15)).is_err(), "a refused token played");
    probe_h264_aac(&url("token=good2"), PROBE_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", diag(&p, &[&origin])));
    let flv = |query: &str| format!("/live/g.flv?{query}");
    assert_eq!(get(&p.http_addr(), &flv("token=bad")).status, 403, "{}", p.log_text());
    let log = p.log_text();
    assert!(log.contains("rtmp play __defaultVhost__/live/g from") && log.contains("refused: origin"), "{log}");
    assert_eq!(log.matches("first player, pulling from the origin").count(), 1, "one pull: {log}");
    let asked = seen.lock().unwrap().iter().filter(|r| r.contains("token=bad")).count();
    assert!(asked >= 2, "the origin was asked about token=bad {asked} times");
    // A first player the origin refuses: its pull ends at once, its players with it, and the
    // origin is not reported as failing (no quarantine), so g's players never noticed.
    let started = Instant::now();
    assert!(ffprobe_streams(&format!("{}?token=bad", proxy_url(&p, "h")), Duration::from_secs(20)).is_err());
    assert!(started.elapsed() < Duration::from_secs(8), "refused after {:?}", started.elapsed());
    let origins = get(&p.api_addr(), "/api/v1/origins").json();
    assert!(origins["origins"][0]["quarantined_seconds"].is_null(), "{origins}");
    assert!(
        p.log_text().contains("refused the pull: the origin closed the play before starting it"),
        "{}",
        p.log_text()
    );
}

/// HTTP-TS players through a two-shard edge: muxed from the shard's pull (one per shard, as
/// for RTMP and HTTP-FLV), ffprobe finds both tracks and ffmpeg players decode their frames
/// with no error while the origin never serves more play connections than there are shards.
#[test]
fn http_ts_players_are_served_from_the_pull() {
    let (origin, p, _publisher) = edge_with_stream(&["--shards", "2"], "t", 40);
    let ts = format!("http://127.0.0.1:{}/live/t.ts", p.http);
    if let Err(e) = probe_h264_aac(&ts, PROBE_TIMEOUT) {
        panic!("{e}\n{}", diag(&p, &[&origin]));
    }
    let mut players: Vec<_> = (0..6).map(|_| Ffmpeg::play_frames(&ts, 100)).collect();
    let (most, edge) = watch_players(&mut players, &origin, &p, "t");
    assert!(edge["players"].as_u64().unwrap_or(0) >= 3, "{edge}");
    for f in &mut players {
        let ok = f.try_status().is_some_and(|s| s.success()) && f.frames() >= 100 && f.stderr_text().trim().is_empty();
        assert!(ok, "player: {}\n{}", f.describe(), diag(&p, &[&origin]));
    }
    assert!((1..=2).contains(&most), "the origin served {most} players for 2 shards\n{}", diag(&p, &[&origin]));
    let log = p.log_text();
    assert!(log.contains("http_ts play __defaultVhost__/live/t from") && log.contains("via the edge"), "{log}");
}
