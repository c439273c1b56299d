//! Adaptive-bitrate transcoding and the publish limits, with real peers: ffmpeg
//! publishes through the real binary to a real nginx-rtmp origin; ffprobe reads the ladder over
//! the proxy's HTTP stream listener; the tonic client asks GetRoutes; the project's RTMP client
//! publishes with chosen metadata to see the exact refusal status.
//!
//! Kept small for 2 cores: a 1280x720 25 fps source with a 2 s GOP for about 12 s, encoded with
//! `--preset ultrafast`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::*;
use common::rtmp_client::{Handshake, RtmpClient, set_data_frame};
use common::*;
use streamgate::control::grpc::proto::Empty;
use streamgate::control::grpc::proto::module_service_client::ModuleServiceClient;

const LADDER_WAIT: Duration = Duration::from_secs(45);

/// Publishes a `size` 25 fps H.264 + AAC test signal for `seconds` (2 s GOP), with `extra`
/// encoder options.
fn publish(url: &str, size: &str, seconds: u32, extra: &[&str]) -> Ffmpeg {
    let video = format!("testsrc=size={size}:rate=25");
    let t = seconds.to_string();
    let mut args =
        vec!["-re", "-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100"];
    args.extend(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "50", "-pix_fmt", "yuv420p"]);
    args.extend(extra);
    args.extend(["-c:a", "aac", "-b:a", "64k", "-t", &t, "-f", "flv", url]);
    Ffmpeg::spawn("ffmpeg-pub", &args)
}

/// ffprobe's `codec,width,height` lines for `url`.
fn probe(url: &str) -> Result<Vec<String>, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-rw_timeout", "5000000", "-show_entries", "stream=codec_name,width,height"]);
    cmd.args(["-of", "csv=p=0", url]);
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    match out.status {
        Some(s) if s.success() => {
            let mut lines: Vec<String> = out.stdout.lines().map(|l| l.trim_end_matches(',').to_string()).collect();
            lines.retain(|l| !l.is_empty());
            lines.sort();
            lines.dedup();
            Ok(lines)
        }
        _ => Err(format!("ffprobe {url}: {:?} {}", out.status, out.stderr)),
    }
}

/// The `#EXTINF` durations of a playlist.
fn extinf(playlist: &str) -> Vec<String> {
    playlist.lines().filter_map(|l| l.strip_prefix("#EXTINF:")).map(str::to_string).collect()
}

struct Ladder {
    proxy: Proxy,
    origin: NginxRtmp,
    publisher: Ffmpeg,
    dir: PathBuf,
    _tmp: TempDir,
}

impl Ladder {
    fn start(stream: &str, seconds: u32) -> Ladder {
        let tmp = TempDir::new("abr");
        let dir = tmp.0.join("out");
        let origin = NginxRtmp::start(4096);
        let dir_arg = dir.to_string_lossy().to_string();
        let flags =
            ["--transcode", "on", "--transcode-dir", &dir_arg, "--transcode-grace", "2s", "--preset", "ultrafast"];
        let proxy = Proxy::start(&flags);
        assert_eq!(register(&proxy.api_addr(), &origin_body("one", "t", origin.rtmp_port)).status, 200);
        let url = format!("rtmp://127.0.0.1:{}/live/{stream}", proxy.rtmp);
        let publisher = publish(&url, "1280x720", seconds, &[]);
        Ladder { proxy, origin, publisher, dir, _tmp: tmp }
    }

    fn get(&self, path: &str) -> HttpReply {
        get(&self.proxy.http_addr(), path)
    }

    fn diag(&mut self) -> String {
        format!("publisher: {}\nproxy log:\n{}", self.publisher.describe(), self.proxy.log_text())
    }
}

#[test]
fn ladder_as_hls_and_dash_aligned_then_removed() {
    let mut live = Ladder::start("cam", 14);
    let http = live.proxy.http_addr();
    let ready = wait_until(LADDER_WAIT, || {
        (0..3).all(|i| extinf(&live.get(&format!("/streams/cam/media_{i}.m3u8")).body).len() >= 2)
    });
    if !ready {
        panic!("no ladder with two segments per rung: {}", live.diag());
    }

    // GetRoutes while the job runs: the profiles and the encoder.
    let grpc = format!("http://127.0.0.1:{}", live.proxy.grpc);
    let routes = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let mut client = ModuleServiceClient::connect(grpc).await.unwrap();
        client.get_routes(Empty {}).await.unwrap().into_inner().routes
    });
    let [route] = routes.as_slice() else { panic!("one route expected: {routes:?}") };
    assert_eq!(route.encoder, "x264", "{route:?}");
    let profiles: Vec<(&str, &str, i32, i32, &str)> = route
        .profiles
        .iter()
        .map(|p| (p.name.as_str(), p.codec.as_str(), p.bitrate, p.resolution, p.status.as_str()))
        .collect();
    assert_eq!(
        profiles,
        [
            ("720p", "h264", 3000, 720, "encoding"),
            ("480p", "h264", 1500, 480, "encoding"),
            ("360p", "h264", 800, 360, "encoding")
        ]
    );

    // HLS: the master lists 720p, 480p and 360p (never an upscaled 1080p), with CORS.
    let master = live.get("/streams/cam/master.m3u8");
    assert_eq!(master.status, 200, "{}", master.body);
    assert_eq!(master.header("access-control-allow-origin").as_deref(), Some("*"));
    for size in ["1280x720", "854x480", "640x360"] {
        assert!(master.body.contains(&format!("RESOLUTION={size}")), "{size} missing:\n{}", master.body);
    }
    assert!(!master.body.contains("1920x1080"), "{}", master.body);
    let streams = probe(&format!("http://{http}/streams/cam/master.m3u8")).unwrap();
    for want in ["aac", "h264,1280,720", "h264,854,480", "h264,640,360"] {
        assert!(streams.iter().any(|s| s == want), "ffprobe of the master: {streams:?} lacks {want}");
    }
    for (i, want) in ["h264,1280,720", "h264,854,480", "h264,640,360"].iter().enumerate() {
        assert_eq!(probe(&format!("http://{http}/streams/cam/media_{i}.m3u8")).unwrap(), [*want]);
    }

    // DASH: one representation per rung plus the audio, over the same segments.
    let mpd = live.get("/streams/cam/dash/manifest.mpd");
    assert_eq!(mpd.status, 200);
    assert_eq!(mpd.header("content-type").as_deref(), Some("application/dash+xml"));
    assert_eq!(mpd.body.matches("mimeType=\"video/mp4\"").count(), 3, "{}", mpd.body);
    assert_eq!(mpd.body.matches("mimeType=\"audio/mp4\"").count(), 1, "{}", mpd.body);
    let dash = probe(&format!("http://{http}/streams/cam/dash/manifest.mpd")).unwrap();
    assert_eq!(dash, ["aac", "h264,1280,720", "h264,640,360", "h264,854,480"]);
    let segment = live.get("/streams/cam/dash/chunk-stream0-00001.m4s");
    assert_eq!((segment.status, live.get("/streams/cam/chunk-stream0-00001.m4s").status), (200, 200));

    // Aligned: every rung's segments have the same durations, on the same boundaries. The muxer
    // rewrites the playlists one after the other, so a read may fall between two rewrites: read
    // until one set is consistent (misaligned rungs never are).
    let mut lists: Vec<Vec<String>> = Vec::new();
    let aligned = wait_until(Duration::from_secs(10), || {
        lists = (0..3).map(|i| extinf(&live.get(&format!("/streams/cam/media_{i}.m3u8")).body)).collect();
        lists[0].len() >= 3 && lists.iter().all(|l| *l == lists[0])
    });
    assert!(aligned, "segment durations differ across rungs: {lists:?}");
    let publisher_done = live.publisher.wait_timeout(Duration::from_secs(30)).is_some_and(|s| s.success());
    assert!(publisher_done, "{}", live.diag());
    let cam = live.dir.join("cam");
    let api = get(&live.proxy.api_addr(), "/api/v1/streams").json();
    eprintln!("{api}");

    // Gone after the publisher left and the grace period (2 s).
    let t0 = Instant::now();
    assert!(wait_until(Duration::from_secs(15), || !cam.exists()), "{} still there: {}", cam.display(), live.diag());
    eprintln!("folder removed {:?} after the publisher ended", t0.elapsed());
    assert_eq!(live.get("/streams/cam/master.m3u8").status, 404);
    let log = live.proxy.log_text();
    assert!(log.contains("transcode cam: job started, x264"), "{log}");
    drop(live.origin);
}

#[test]
fn a_stream_without_video_stops_its_job_only() {
    let tmp = TempDir::new("abr");
    let dir = tmp.0.join("out").to_string_lossy().to_string();
    let origin = NginxRtmp::start(4096);
    let proxy = Proxy::start(&["--transcode", "on", "--transcode-dir", &dir, "--preset", "ultrafast"]);
    assert_eq!(register(&proxy.api_addr(), &origin_body("one", "t", origin.rtmp_port)).status, 200);
    let url = format!("rtmp://127.0.0.1:{}/live/radio", proxy.rtmp);
    let args = [
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-c:a",
        "aac",
        "-t",
        "30",
        "-f",
        "flv",
        &url,
    ];
    let mut radio = Ffmpeg::spawn("ffmpeg-pub", &args);
    let failed = wait_until(Duration::from_secs(40), || {
        let api = get(&proxy.api_addr(), "/api/v1/streams").json();
        api["streams"][0]["transcode"]["status"] == "error"
    });
    assert!(failed, "the job should fail: {}\n{}", radio.describe(), proxy.log_text());
    let api = get(&proxy.api_addr(), "/api/v1/streams").json();
    assert_eq!(api["streams"][0]["transcode"]["problem"], "the stream has no video track", "{api}");
    // The relay goes on, and the proxy says it is degraded while the stream is published.
    assert!(radio.running() && origin.publishing("radio"), "{}", radio.describe());
    let health = get(&proxy.api_addr(), "/metrics").body;
    assert!(health.contains("streamgate_health{level=\"degraded\"} 1"), "{health}");
    assert!(health.contains("streamgate_transcode_failed{stream=\"__defaultVhost__/live/radio\",encoder=\"x264\"} 1"));
    radio.kill();
}

/// Publishes `name` with the project's RTMP client and metadata `props`; returns the first
/// error status the proxy sends (after the origin's start), or what happened instead.
fn refused_status(port: u16, name: &str, props: &'static [(&'static str, f64)]) -> Result<String, String> {
    let mut client = RtmpClient::open(port, Handshake::Simple)?;
    let started = client.publish(name, |c| vec![set_data_frame(c.stream_id, props)], Duration::from_secs(10))?;
    if started.level == "error" {
        return Ok(format!("{} {}", started.code, started.description));
    }
    let status = client.wait_status(Instant::now() + Duration::from_secs(10), "never", -1.0)?;
    Ok(format!("{} {}", status.code, status.description))
}

#[test]
fn publish_limits_refuse_with_the_limit_named() {
    let origin = NginxRtmp::start(4096);
    let env = [("RTMP_MAX_RESOLUTION", "720p"), ("RTMP_MAX_BITRATE", "2"), ("RTMP_MAX_STREAMS", "1")];
    let proxy = Proxy::start_with(&[], &env);
    assert_eq!(register(&proxy.api_addr(), &origin_body("one", "l", origin.rtmp_port)).status, 200);

    // 1920x1080 over RTMP_MAX_RESOLUTION=720p: ffmpeg is cut off, the client reads why.
    let url = |s: &str| format!("rtmp://127.0.0.1:{}/live/{s}", proxy.rtmp);
    let mut big = publish(&url("big"), "1920x1080", 20, &[]);
    assert!(big.wait_timeout(Duration::from_secs(20)).is_some_and(|s| !s.success()), "{}", big.describe());
    let status = refused_status(proxy.rtmp, "big2", &[("width", 1920.0), ("height", 1080.0)]).unwrap();
    assert_eq!(status, "NetStream.Publish.BadName RTMP_MAX_RESOLUTION: 1080p is over the limit of 720p");

    // Over RTMP_MAX_BITRATE=2 (Mbit/s) by its metadata.
    let mut fat = publish(&url("fat"), "640x360", 20, &["-b:v", "4000k", "-maxrate", "4000k", "-bufsize", "4000k"]);
    assert!(fat.wait_timeout(Duration::from_secs(20)).is_some_and(|s| !s.success()), "{}", fat.describe());
    let status = refused_status(proxy.rtmp, "fat2", &[("videodatarate", 4000.0), ("audiodatarate", 128.0)]).unwrap();
    assert!(status.starts_with("NetStream.Publish.BadName RTMP_MAX_BITRATE: 4.13 Mbit/s"), "{status}");

    // RTMP_MAX_STREAMS=1: a second publisher while one runs.
    let mut one = publish(&url("one"), "640x360", 30, &[]);
    assert!(wait_until(Duration::from_secs(20), || origin.publishing("one")), "{}", one.describe());
    let status = refused_status(proxy.rtmp, "two", &[]).unwrap();
    assert_eq!(status, "NetStream.Publish.BadName RTMP_MAX_STREAMS: 1 streams are published already");
    assert!(one.running() && origin.publishing("one"), "the first stream goes on: {}", one.describe());

    let metrics = get(&proxy.api_addr(), "/metrics").body;
    for (limit, n) in [("max_resolution", 2), ("max_bitrate", 2), ("max_streams", 1)] {
        let line = format!("streamgate_publish_refused_total{{limit=\"{limit}\"}} {n}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    let log = proxy.log_text();
    assert!(log.contains("rtmp publish __defaultVhost__/live/two from"), "{log}");
    one.kill();
}

#[test]
fn a_named_encoder_that_does_not_open_stops_startup() {
    // h264_vaapi never opens with the system-memory frames the jobs feed, GPU or not.
    let dir = TempDir::new("encoder");
    let out =
        run_with_timeout(proxy_command(&dir, &["--transcode", "on", "--encoder", "vaapi"]), Duration::from_secs(20));
    assert!(out.status.is_some_and(|s| !s.success()), "{:?}\n{}", out.status, out.stderr);
    assert!(out.stderr.contains("--encoder h264_vaapi: does not open"), "{}", out.stderr);
}
