//! The HTTP stream proxy end to end with real peers: HLS from nginx-rtmp origins that serve
//! their own playlists and segments over HTTP, HTTP-FLV and HTTP-TS from ffmpeg listening as a
//! one-client HTTP server, played with ffprobe/ffmpeg through the real binary. What reached an
//! origin is read from the origin's own logs (nginx's access log, ffmpeg's trace of the
//! request it served), so nothing here trusts the proxy's word for it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http_peers::*;
use common::peers::*;
use common::*;
use serde_json::Value;

/// Deadline for HLS segments to show up on an origin (the VM is slow and shared).
const PUBLISH_WAIT: Duration = Duration::from_secs(20);
/// Wall-clock limit for one ffprobe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(25);

const CORS: [&str; 3] = ["access-control-allow-origin", "access-control-allow-headers", "access-control-allow-methods"];

fn key(stream: &str) -> String {
    format!("__defaultVhost__/live/{stream}")
}

fn origin_id(server: &str, service: &str) -> String {
    format!("{server}-{service}-1")
}

/// The proxy's `/api/v1/streams` entry for `key`.
fn stream_entry(p: &Proxy, key: &str) -> Option<Value> {
    let reply = get(&p.api_addr(), "/api/v1/streams");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["streams"].as_array()?.iter().find(|s| s["key"] == key).cloned()
}

/// ffprobe's codec names for `url`, sending `headers` (each `Name: value`) with the request.
fn probe_with_headers(url: &str, headers: &[&str]) -> Result<Vec<String>, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-rw_timeout", "5000000"]);
    if !headers.is_empty() {
        cmd.arg("-headers").arg(headers.iter().map(|h| format!("{h}\r\n")).collect::<String>());
    }
    cmd.args(["-show_entries", "stream=codec_name", "-of", "csv=p=0", url]);
    let o = run_with_timeout(cmd, PROBE_TIMEOUT);
    match o.status {
        Some(s) if s.success() => {
            Ok(o.stdout.lines().map(|l| l.trim().trim_end_matches(',').to_string()).filter(|l| !l.is_empty()).collect())
        }
        s => Err(format!("ffprobe {url}: status {s:?} (None: killed at the deadline); stderr: {:?}", o.stderr)),
    }
}

fn assert_h264_aac(what: &str, codecs: &[String]) {
    assert!(
        codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"),
        "{what}: codecs {codecs:?}, want h264 and aac"
    );
}

fn assert_cors(what: &str, head: &str, header: impl Fn(&str) -> Option<String>) {
    for h in CORS {
        assert_eq!(header(h).as_deref(), Some("*"), "{what}: {h} missing or not *; head:\n{head}");
    }
}

/// The proxy log for assertion messages.
fn plog(p: &Proxy) -> String {
    format!("--- proxy log:\n{}", p.log_text())
}

/// The harnesses themselves, without the proxy: nginx-rtmp writes HLS and serves it (ffprobe
/// plays it, the access log shows it), and ffmpeg serves HTTP-FLV and HTTP-TS to one client
/// and logs the request line (query included) and headers it got.
#[test]
fn harnesses_work_without_the_proxy() {
    let hls = NginxHls::start();
    let mut publisher = publish_short_gop(&hls.rtmp_url("h"), 30);
    assert!(
        wait_until(PUBLISH_WAIT, || hls.segments("h") >= 2),
        "no HLS playlist: {}\n{}",
        publisher.describe(),
        hls.error_log()
    );
    probe_h264_aac(&hls.hls_url("h"), PROBE_TIMEOUT).unwrap();
    let requested = hls.requested();
    assert!(requested.iter().any(|r| r == "/live/h.m3u8"), "{requested:?}");
    assert!(requested.iter().any(|r| r.starts_with("/live/h-") && r.ends_with(".ts")), "{requested:?}");
    assert!(publisher.running(), "{}", publisher.describe());

    for (format, path) in [("flv", "/live/o.flv"), ("mpegts", "/live/o.ts")] {
        let mut origin = FfmpegHttpOrigin::start(format, path, 30);
        assert!(!origin.contacted());
        let codecs = probe_with_headers(&format!("{}?token=abc", origin.url()), &["X-Streamgate-Test: direct"])
            .unwrap_or_else(|e| panic!("{e}\n{}", origin.proc.describe()));
        assert_h264_aac(format, &codecs);
        assert_eq!(origin.requested(), [format!("{path}?token=abc")]);
        let head = origin.request_head();
        assert_eq!(head[0], format!("GET {path}?token=abc HTTP/1.1"), "{head:?}");
        assert!(head.iter().any(|h| h == "X-Streamgate-Test: direct"), "{head:?}");
    }
}

/// Two HLS origins; ffmpeg publishes through the proxy's RTMP port, which pins the stream to
/// one. Players fetch the playlist through the proxy: every segment URI carries the same
/// `spbhid`, segment requests reach the publishing origin only, keep-alive carries several
/// requests, and an unknown `spbhid` is refused.
#[test]
fn hls_plays_through_the_proxy_from_the_publishing_origin() {
    let origins = [NginxHls::start(), NginxHls::start()];
    let p = Proxy::start(&[]);
    for (server, o) in ["hls-a", "hls-b"].iter().zip(&origins) {
        let reply = register(&p.api_addr(), &origin_body_http(server, "s", o.rtmp_port, o.http_port));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let mut publisher = publish_short_gop(&format!("rtmp://127.0.0.1:{}/live/x", p.rtmp), 50);
    let mut home = None;
    wait_until(PUBLISH_WAIT, || {
        home = origins.iter().position(|o| o.segments("x") >= 3);
        home.is_some()
    });
    let home = home.unwrap_or_else(|| {
        panic!("no HLS playlist on either origin: {}\n{}", publisher.describe(), plog(&p));
    });
    let (origin, other) = (&origins[home], &origins[1 - home]);
    let ids = [origin_id("hls-a", "s"), origin_id("hls-b", "s")];

    let url = format!("http://{}/live/x.m3u8", p.http_addr());
    probe_h264_aac(&url, PROBE_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", plog(&p)));
    // Four seconds of video: the player goes through several segments and playlist refreshes.
    let played = play_frames(&url, 100, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}\n{}", plog(&p)));
    assert!(played.frames >= 100, "{played:?}");

    // The origin's own access log: the playlist, and segments asked for with the proxy's id.
    let requested = origin.requested();
    assert!(requested.iter().any(|r| r == "/live/x.m3u8"), "{requested:?}");
    let segments: Vec<&String> = requested.iter().filter(|r| r.contains(".ts")).collect();
    assert!(segments.len() >= 3, "fewer than 3 segment requests reached the origin: {requested:?}");
    assert!(
        segments.iter().all(|r| r.starts_with("/live/x-") && r.contains(".ts?spbhid=")),
        "a segment request without spbhid: {segments:?}"
    );
    assert!(other.requested().is_empty(), "the other origin was asked: {:?}", other.requested());

    // The playlist through the proxy: every segment URI rewritten, a correct Content-Length,
    // the origin's Content-Type, CORS, and the same id twice.
    let mut ids_seen = Vec::new();
    let mut last_segment = String::new();
    for _ in 0..2 {
        let r = get_full(&p.http_addr(), "/live/x.m3u8").unwrap();
        assert_eq!(r.status, 200, "{}\n{}", r.head, plog(&p));
        let text = r.text();
        assert_eq!(r.header("content-length"), Some(r.body.len().to_string()), "{}\n{text}", r.head);
        assert_eq!(r.header("content-type").as_deref(), Some("application/vnd.apple.mpegurl"), "{}", r.head);
        assert_cors("playlist", &r.head, |h| r.header(h));
        assert!(text.starts_with("#EXTM3U"), "{text}");
        let uris: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        assert!(!uris.is_empty(), "{text}");
        for uri in &uris {
            let (file, query) = uri.split_once('?').unwrap_or_else(|| panic!("no query on {uri}:\n{text}"));
            assert!(file.starts_with("x-") && file.ends_with(".ts"), "{uri}");
            let id = query.strip_prefix("spbhid=").unwrap_or_else(|| panic!("spbhid not first on {uri}"));
            assert!(!id.is_empty() && !id.contains('&'), "{uri}");
            ids_seen.push(id.to_string());
        }
        last_segment = uris.last().unwrap().to_string();
    }
    // Players such as ffmpeg ask for the playlist with `Range: bytes=0-`; the rewritten
    // playlist must not come back with the origin's byte range for the shorter original.
    let ranged = http_full(
        &p.http_addr(),
        format!("GET /live/x.m3u8 HTTP/1.1\r\nHost: {}\r\nRange: bytes=0-\r\nConnection: close\r\n\r\n", p.http_addr())
            .as_bytes(),
        usize::MAX,
    )
    .unwrap();
    assert!(ranged.status == 200 || ranged.status == 206, "{}", ranged.head);
    assert_eq!(ranged.header("content-length"), Some(ranged.body.len().to_string()), "{}", ranged.head);
    if let Some(range) = ranged.header("content-range") {
        assert!(range.ends_with(&format!("/{}", ranged.body.len())), "stale Content-Range: {}", ranged.head);
    }
    assert!(ranged.text().contains(".ts?spbhid="), "{}", ranged.text());
    ids_seen.dedup();
    assert_eq!(ids_seen.len(), 1, "spbhid changed between lines or fetches: {ids_seen:?}");
    let spbhid = &ids_seen[0];
    assert!(
        segments.iter().all(|r| r.ends_with(&format!("?spbhid={spbhid}"))),
        "the players' segment requests carried another id than {spbhid}: {segments:?}"
    );

    // Keep-alive: playlist, segment, playlist on one connection.
    let mut s = TcpStream::connect(p.http_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for path in ["/live/x.m3u8".to_string(), format!("/live/{last_segment}"), "/live/x.m3u8".to_string()] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", p.http_addr()).as_bytes()).unwrap();
        let r =
            read_full_reply(&mut s, usize::MAX).unwrap_or_else(|e| panic!("{path} on a kept-alive connection: {e}"));
        assert_eq!(r.status, 200, "{path}: {}\n{}", r.head, plog(&p));
        if path.contains(".ts") {
            assert!(r.body.len() >= 188 && r.body.len().is_multiple_of(188) && r.body[0] == 0x47, "{path}: not TS");
            assert_cors("segment", &r.head, |h| r.header(h));
        }
    }
    let segment_path = format!("/live/{}", last_segment.split('?').next().unwrap());
    assert!(
        origin.requested().iter().any(|r| *r == format!("{segment_path}?spbhid={spbhid}")),
        "{segment_path} did not reach the origin with its id: {:?}",
        origin.requested()
    );
    assert!(other.requested().is_empty(), "the other origin was asked: {:?}", other.requested());

    // A variant-playlist style request with the id, and a stream named only by its query,
    // both go to the publishing origin (nginx has no /live/other.m3u8, so whatever it answers
    // there, its access log shows where the request went).
    let r = get_full(&p.http_addr(), &format!("/live/x.m3u8?spbhid={spbhid}")).unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.head, plog(&p));
    assert!(
        origin.requested().iter().any(|r| *r == format!("/live/x.m3u8?spbhid={spbhid}")),
        "{:?}",
        origin.requested()
    );
    let by_query = "/live/other.m3u8?app=live&stream=x";
    let r = get_full(&p.http_addr(), by_query).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || origin.requested().iter().any(|r| r == by_query)),
        "{by_query} (answered {}) did not reach the origin of live/x: {:?}\n{}",
        r.status,
        origin.requested(),
        plog(&p)
    );
    assert!(other.requested().is_empty(), "the other origin was asked: {:?}", other.requested());

    let r = get_full(&p.http_addr(), "/live/x-0.ts?spbhid=nonexistent").unwrap();
    assert_eq!(r.status, 400, "{}\n{}", r.head, r.text());
    assert!(r.text().contains("spbhid") && r.text().contains("nonexistent"), "{:?}", r.text());

    let entry = stream_entry(&p, &key("x")).unwrap_or_else(|| panic!("no stream entry\n{}", plog(&p)));
    assert_eq!(entry["origin"], ids[home].as_str(), "{entry}");
    assert!(publisher.running(), "{}", publisher.describe());
}

const MASTER: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",DEFAULT=YES,URI=\"aud.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.42e00a,mp4a.40.2\",AUDIO=\"aud\"
m-hi.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=200000,AUDIO=\"aud\"
sub/m-lo.m3u8?bw=1
";

const MASTER_REWRITTEN: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",DEFAULT=YES,URI=\"aud.m3u8?spbhid=ID\"
#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.42e00a,mp4a.40.2\",AUDIO=\"aud\"
m-hi.m3u8?spbhid=ID
#EXT-X-STREAM-INF:BANDWIDTH=200000,AUDIO=\"aud\"
sub/m-lo.m3u8?spbhid=ID&bw=1
";

const MEDIA: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\",IV=0x00000000000000000000000000000001
#EXTINF:2.000,
m-hi-1.ts?a=b
#EXTINF:2.000,
m-hi-2.ts
#EXTINF:2.000,
https://cdn.example.com/live/abs.ts
";

const MEDIA_REWRITTEN: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-MAP:URI=\"init.mp4?spbhid=ID\"
#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin?spbhid=ID\",IV=0x00000000000000000000000000000001
#EXTINF:2.000,
m-hi-1.ts?spbhid=ID&a=b
#EXTINF:2.000,
m-hi-2.ts?spbhid=ID
#EXTINF:2.000,
https://cdn.example.com/live/abs.ts
";

/// A master playlist and its variants served as files by two nginx origins: through the proxy,
/// every relative URI (variant lines, `URI="..."` of tags, segments with a query of their own)
/// gets `spbhid=ID` as its first query parameter and absolute URIs are left alone; requests
/// carrying the id go to the master's origin even where their own stream key would pick the
/// other origin.
#[test]
fn hls_rewrites_every_relative_uri_and_routes_by_spbhid() {
    // Origin names for which the master's key and its variant's and segment's own keys pick
    // different origins, so that routing by spbhid shows.
    let (na, nb) = (0..500)
        .map(|i| (format!("rw{i}a"), format!("rw{i}b")))
        .find(|(a, b)| {
            let (ia, ib) = (origin_id(a, "s"), origin_id(b, "s"));
            let pick = |s: &str| rendezvous_pick(&key(s), &[&ia, &ib]) == ia;
            pick("m") && !pick("m-hi") && !pick("m-hi-1") && !pick("sub/m-lo")
        })
        .expect("no origin names split the keys");
    let origins = [NginxHls::start(), NginxHls::start()];
    let segment: Vec<u8> =
        (0..10).flat_map(|i| [&[0x47u8, 0x40, 0x11, 0x10 | i][..], &[0xffu8; 184][..]].concat()).collect();
    for o in &origins {
        let dir = o.hls_dir();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("m.m3u8"), MASTER).unwrap();
        std::fs::write(dir.join("m-hi.m3u8"), MEDIA).unwrap();
        std::fs::write(dir.join("sub/m-lo.m3u8"), MEDIA.replace("m-hi-", "m-lo-")).unwrap();
        std::fs::write(dir.join("m-hi-1.ts"), &segment).unwrap();
    }
    let p = Proxy::start(&[]);
    for (server, o) in [&na, &nb].iter().zip(&origins) {
        let reply = register(&p.api_addr(), &origin_body_http(server, "s", o.rtmp_port, o.http_port));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    wait_proven(&p.api_addr(), &[&origin_id(&na, "s"), &origin_id(&nb, "s")]);
    let http = p.http_addr();
    let (a, b) = (&origins[0], &origins[1]);

    let master = get_full(&http, "/live/m.m3u8").unwrap();
    assert_eq!(master.status, 200, "{}\n{}", master.head, plog(&p));
    assert_eq!(a.requested(), ["/live/m.m3u8"], "the master's key picks {na}\n{}", plog(&p));
    let text = master.text();
    let id = text.split("spbhid=").nth(1).and_then(|t| t.split(['&', '"', '\n']).next()).unwrap_or_else(|| {
        panic!("no spbhid in the master playlist:\n{text}");
    });
    assert_eq!(text, MASTER_REWRITTEN.replace("=ID", &format!("={id}")));
    assert_eq!(master.header("content-length"), Some(master.body.len().to_string()), "{}", master.head);

    let variant = format!("/live/m-hi.m3u8?spbhid={id}");
    let media = get_full(&http, &variant).unwrap();
    assert_eq!(media.status, 200, "{variant}: {}\n{}", media.head, plog(&p));
    assert_eq!(media.text(), MEDIA_REWRITTEN.replace("=ID", &format!("={id}")), "{variant}");
    assert_eq!(media.header("content-length"), Some(media.body.len().to_string()), "{}", media.head);

    let low = format!("/live/sub/m-lo.m3u8?spbhid={id}&bw=1");
    let r = get_full(&http, &low).unwrap();
    assert_eq!(r.status, 200, "{low}: {}", r.head);
    assert_eq!(r.text(), MEDIA_REWRITTEN.replace("m-hi-", "m-lo-").replace("=ID", &format!("={id}")), "{low}");

    let seg = format!("/live/m-hi-1.ts?spbhid={id}&a=b");
    let r = get_full(&http, &seg).unwrap();
    assert_eq!(r.status, 200, "{seg}: {}", r.head);
    assert!(r.body == segment, "{seg}: {} bytes, not the origin's file", r.body.len());
    assert_cors(&seg, &r.head, |h| r.header(h));

    assert_eq!(a.requested(), ["/live/m.m3u8", variant.as_str(), low.as_str(), seg.as_str()]);
    assert!(b.requested().is_empty(), "requests with the master's id reached the other origin: {:?}", b.requested());

    // Without the id, the variant is a stream of its own, on the other origin.
    assert_eq!(get_full(&http, "/live/m-hi.m3u8").unwrap().status, 200);
    assert_eq!(b.requested(), ["/live/m-hi.m3u8"], "{}", plog(&p));
}

/// A proxy and a one-client ffmpeg HTTP origin (`flv` or `mpegts` at `path`) registered with
/// it (its RTMP port is one nobody listens on; only HTTP is used here).
fn ffmpeg_origin_behind_proxy(format: &str, path: &str, seconds: u32, extra: &[&str]) -> (FfmpegHttpOrigin, Proxy) {
    let origin = FfmpegHttpOrigin::start(format, path, seconds);
    let p = Proxy::start(extra);
    let no_rtmp = ClosedPort::new();
    let reply = register(&p.api_addr(), &origin_body_http("ff", "s", no_rtmp.port, origin.port));
    assert_eq!(reply.status, 200, "{}", reply.body);
    (origin, p)
}

/// HTTP-FLV or HTTP-TS relayed (`--edge off`) through the proxy from an ffmpeg origin: ffprobe
/// sees H.264 and AAC, the origin got the path with its query and the client's own header; a
/// raw client gets the origin's status and Content-Type, CORS, and a body that starts as the
/// format does. (The edge, the default, answers players itself: `tests/edge.rs`.)
fn live_http_stream(format: &str, path: &str, check_body: impl Fn(&[u8]) -> Result<(), String>) {
    const RELAY: &[&str] = &["--edge", "off"];
    // ffprobe, with a query and a header of its own.
    let (mut origin, p) = ffmpeg_origin_behind_proxy(format, path, 30, RELAY);
    let url = format!("http://{}{path}?token=abc", p.http_addr());
    let codecs = probe_with_headers(&url, &["X-Streamgate-Test: through-the-proxy"])
        .unwrap_or_else(|e| panic!("{e}\norigin: {}\n{}", origin.proc.describe(), plog(&p)));
    assert_h264_aac(format, &codecs);
    assert_eq!(origin.requested(), [format!("{path}?token=abc")], "{}", plog(&p));
    let head = origin.request_head();
    assert_eq!(head[0], format!("GET {path}?token=abc HTTP/1.1"), "{head:?}");
    assert!(head.iter().any(|h| h == "X-Streamgate-Test: through-the-proxy"), "header not forwarded: {head:?}");
    assert!(head.iter().any(|h| h.starts_with("User-Agent: Lavf")), "User-Agent not forwarded: {head:?}");
    drop(p);

    // A raw client: the head as the proxy sends it, and the first 64 KiB of the body.
    let (origin, p) = ffmpeg_origin_behind_proxy(format, path, 30, RELAY);
    let r = http_full(
        &p.http_addr(),
        format!("GET {path}?token=raw HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", p.http_addr()).as_bytes(),
        64 * 1024,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", plog(&p)));
    assert_eq!(r.status, 200, "{}\n{}", r.head, plog(&p));
    // What ffmpeg's HTTP server answers (it logs it too: "HTTP reply header: ...").
    assert_eq!(r.header("content-type").as_deref(), Some("application/octet-stream"), "{}", r.head);
    assert_cors(format, &r.head, |h| r.header(h));
    if let Err(e) = check_body(&r.body) {
        panic!(
            "{e}; head:\n{}\nfirst raw bytes: {:?}",
            r.head,
            String::from_utf8_lossy(&r.raw_body[..r.raw_body.len().min(64)])
        );
    }
    assert_eq!(origin.requested(), [format!("{path}?token=raw")]);
    drop((origin, p));

    // An origin that ends after 3 s: the client gets the whole body, properly ended, and the
    // proxy closes the connection.
    let (mut origin, p) = ffmpeg_origin_behind_proxy(format, path, 3, RELAY);
    let mut s = TcpStream::connect(p.http_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", p.http_addr()).as_bytes())
        .unwrap();
    let t0 = Instant::now();
    let mut all = Vec::new();
    let read = s.read_to_end(&mut all);
    assert!(read.is_ok(), "the proxy did not close after the origin's end: {read:?} after {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let status = origin.proc.wait_timeout(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "origin: {}", origin.proc.describe());
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("no head");
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    let raw = &all[end + 4..];
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk_bytes(raw).unwrap_or_else(|| panic!("chunked body not properly ended ({} bytes):\n{head}", raw.len()))
    } else {
        raw.to_vec()
    };
    check_body(&body).unwrap_or_else(|e| panic!("{e}\n{head}"));
    assert!(body.len() > 20_000, "only {} bytes for 3 s of video", body.len());
}

#[test]
fn http_flv_plays_through_the_proxy_with_query_and_headers() {
    live_http_stream("flv", "/live/x.flv", |b| {
        if b.len() >= 13 && b.starts_with(b"FLV\x01") {
            Ok(())
        } else {
            Err("body does not start with an FLV header".into())
        }
    });
}

#[test]
fn http_ts_plays_through_the_proxy_with_query_and_headers() {
    live_http_stream("mpegts", "/live/y.ts", |b| {
        if b.len() >= 188 * 8 && (0..8).all(|i| b[i * 188] == 0x47) {
            Ok(())
        } else {
            Err("body is not 188-byte TS packets from its first byte".into())
        }
    });
}

/// HTTP-MP3 and HTTP-AAC, the audio-only live streams SRS's `http_remux` serves, go to the
/// stream's origin as `.flv` does: from an ffmpeg origin serving MP3 or ADTS with SRS's
/// Content-Type, a raw player gets the origin's status and Content-Type, CORS, and a body that
/// starts as the format does and that ffprobe reads as mp3 / aac; the origin got the path with
/// its query; while it plays, the RTMP key of `live/radio` counts an `http_mp3_play` /
/// `http_aac_play` session on that origin; its end is logged as an HTTP-FLV play's is.
#[test]
fn http_mp3_and_aac_play_through_the_proxy() {
    let formats = [("mp3", "mp3", "libmp3lame", "audio/mpeg"), ("aac", "adts", "aac", "audio/x-aac")];
    for (ext, format, codec, content_type) in formats {
        let path = format!("/live/radio.{ext}");
        let origin = FfmpegHttpOrigin::start_audio(format, codec, content_type, &path, 30);
        let p = Proxy::start(&[]);
        let no_rtmp = ClosedPort::new();
        let reply = register(&p.api_addr(), &origin_body_http("ff", "s", no_rtmp.port, origin.port));
        assert_eq!(reply.status, 200, "{}", reply.body);

        let mut s = TcpStream::connect(p.http_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let request = format!("GET {path}?token=abc HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", p.http_addr());
        s.write_all(request.as_bytes()).unwrap();
        let r = read_full_reply(&mut s, 16 * 1024).unwrap_or_else(|e| panic!("{ext}: {e}\n{}", plog(&p)));
        assert_eq!(r.status, 200, "{ext}: {}\n{}", r.head, plog(&p));
        assert_eq!(r.header("content-type").as_deref(), Some(content_type), "{ext}: {}", r.head);
        assert_cors(ext, &r.head, |h| r.header(h));
        let b = &r.body;
        let starts_right = match ext {
            "mp3" => b.starts_with(b"ID3") || (b.len() > 1 && b[0] == 0xFF && b[1] & 0xE0 == 0xE0),
            _ => b.len() > 1 && b[0] == 0xFF && b[1] & 0xF6 == 0xF0, // ADTS sync word, layer 0
        };
        assert!(starts_right, "{ext}: body starts {:02x?}", &b[..b.len().min(8)]);
        let file = TempDir::new("audio");
        let saved = file.0.join(format!("radio.{ext}"));
        std::fs::write(&saved, b).unwrap();
        let codecs = probe_with_headers(saved.to_str().unwrap(), &[]).unwrap();
        assert_eq!(codecs, [ext], "{ext}: ffprobe read {codecs:?} from what the proxy sent");
        assert_eq!(origin.requested(), [format!("{path}?token=abc")], "{}", plog(&p));

        let k = key("radio");
        let sessions = |p: &Proxy| stream_entry(p, &k).and_then(|e| e["sessions"][format!("http_{ext}_play")].as_u64());
        assert!(
            wait_until(Duration::from_secs(10), || sessions(&p) == Some(1)),
            "{ext}: no session under {k}: {:?}\n{}",
            stream_entry(&p, &k),
            plog(&p)
        );
        assert_eq!(stream_entry(&p, &k).unwrap()["origin"], origin_id("ff", "s"));
        drop(s);
        let ended = format!("http_{ext} play {k} from ");
        let logged = || p.log_text().lines().any(|l| l.contains(&ended) && l.contains("via origin ff-s-1"));
        assert!(wait_until(Duration::from_secs(10), logged), "{ext}: no line with {ended:?}\n{}", plog(&p));
    }
}

/// Errors and the proxy's own answers: no origin (503), an origin nobody answers for (502),
/// CORS preflights that reach no origin, the versions API, static files and `..` paths.
#[test]
fn errors_cors_versions_and_static_files() {
    // No origin at all.
    let p = Proxy::start(&[]);
    let http = p.http_addr();
    for path in ["/live/x.flv", "/live/x.ts", "/live/x.m3u8"] {
        let r = get_full(&http, path).unwrap();
        assert_eq!(r.status, 503, "{path}: {}\n{}", r.head, r.text());
        let text = r.text();
        assert!(!text.trim().is_empty() && !text.trim().contains('\n'), "{path}: not a one-line reason: {text:?}");
        assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{path}: {}", r.head);
    }
    assert_eq!(get_full(&http, "/hello.txt").unwrap().status, 404, "no --static-files");

    let v = get_full(&http, "/api/v1/versions").unwrap();
    assert_eq!(v.status, 200, "{}", v.head);
    let json: Value = serde_json::from_slice(&v.body).unwrap_or_else(|e| panic!("{e}: {}", v.text()));
    assert_eq!(json["code"], 0, "{json}");
    assert_eq!(json["pid"], p.child.id().to_string(), "{json}");
    let d = &json["data"];
    let (major, minor, revision) = (d["major"].as_u64(), d["minor"].as_u64(), d["revision"].as_u64());
    assert!(major.is_some() && minor.is_some() && revision.is_some(), "{json}");
    assert_eq!(
        d["version"].as_str(),
        Some(format!("{}.{}.{}", major.unwrap(), minor.unwrap(), revision.unwrap()).as_str()),
        "{json}"
    );
    drop(p);

    // An origin whose HTTP port is a listener held here: preflights never reach it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let origin_port = listener.local_addr().unwrap().port();
    let statics = TempDir::new("static");
    std::fs::write(statics.0.join("hello.txt"), "hello static\n").unwrap();
    std::fs::create_dir(statics.0.join("players")).unwrap();
    std::fs::write(statics.0.join("players/play.html"), "<html><body>player</body></html>").unwrap();
    let static_dir = statics.0.to_string_lossy().to_string();
    let p = Proxy::start(&["--static-files", &static_dir]);
    let http = p.http_addr();
    let no_rtmp = ClosedPort::new();
    let reply = register(&p.api_addr(), &origin_body_http("quiet", "s", no_rtmp.port, origin_port));
    assert_eq!(reply.status, 200, "{}", reply.body);

    for path in ["/live/x.flv", "/live/x.ts", "/live/x.m3u8", "/live/x-1.ts?spbhid=abc", "/players/play.html"] {
        let req = format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: {http}\r\nOrigin: http://example.com\r\n\
             Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
        );
        let r = http_full(&http, req.as_bytes(), usize::MAX).unwrap();
        assert_eq!(r.status, 200, "OPTIONS {path}: {}\n{}", r.head, r.text());
        assert_cors(&format!("OPTIONS {path}"), &r.head, |h| r.header(h));
        assert!(r.body.is_empty(), "OPTIONS {path}: body {:?}", r.text());
    }
    std::thread::sleep(Duration::from_millis(300));
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a preflight reached the origin: {other:?}\n{}", plog(&p)),
    }

    // Static files.
    let r = get_full(&http, "/hello.txt").unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "hello static\n");
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{}", r.head);
    let r = get_full(&http, "/players/play.html").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "<html><body>player</body></html>"), "{}", r.head);
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/html")), "{}", r.head);
    let mut s = TcpStream::connect(&http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("HEAD /hello.txt HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or_else(|| panic!("HEAD: {all:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "HEAD: {head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 13"), "HEAD: {head}");
    assert!(body.is_empty(), "HEAD sent a body: {body:?}");
    assert_eq!(get_full(&http, "/missing.txt").unwrap().status, 404);
    for path in ["/../etc/passwd", "/players/../../etc/passwd"] {
        let r = get_full(&http, path).unwrap();
        assert_eq!(r.status, 400, "{path}: {}\n{}", r.head, r.text());
    }
    let r = get_full(&http, "/%2e%2e/%2e%2e/etc/passwd").unwrap();
    assert!(!r.text().contains("root:"), "an encoded .. path escaped the static dir: {}", r.head);

    // The origin stops listening: its streams get 502.
    drop(listener);
    let r = get_full(&http, "/live/x.flv").unwrap();
    assert_eq!(r.status, 502, "{}\n{}\n{}", r.head, r.text(), plog(&p));
}

/// Sends `request` (the write may fail once the server gives up on it) and reads what comes
/// back: `Ok("<status>")` when a whole response came, `Ok("closed")` when the connection closed
/// without one; `Err` when the server neither answered nor closed in 10 s.
fn send_bad(addr: &str, request: &[u8]) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if let Err(e) = s.write_all(request)
        && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    {
        return Err(format!("write of {} bytes stalled for 10 s: the server neither reads nor closes", request.len()));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                // A whole response (head and Content-Length body) is an answer, whether the
                // server then closes or keeps the connection.
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    let len = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok());
                    if got.len() >= end + 4 + len.unwrap_or(usize::MAX) {
                        break;
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("no answer and no close in 10 s; got {:?}", String::from_utf8_lossy(&got)));
            }
            Err(_) => break, // reset: closed
        }
    }
    if got.is_empty() {
        return Ok("closed".into());
    }
    let text = String::from_utf8_lossy(&got);
    Ok(text.split_whitespace().nth(1).unwrap_or("?").to_string())
}

/// Sends a request head one byte a second and reads between bytes; returns what came back and
/// when the server closed.
fn slow_head(addr: &str) -> Result<(String, Duration), String> {
    let request = b"GET /api/v1/versions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes\r\n\r\n";
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    loop {
        if got.is_empty() && sent < request.len() {
            let _ = s.write_all(&request[sent..sent + 1]);
            sent += 1;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return Err(format!("still open after 20 s and {sent} bytes; got {:?}", String::from_utf8_lossy(&got)));
        }
    }
    Ok((String::from_utf8_lossy(&got).to_string(), t0.elapsed()))
}

/// 2000 connections that each make one request and then sit idle, kept open past the request
/// timeout; then a sample of them is used again. Returns the problems found.
fn idle_keep_alive(addr: &str, n: usize) -> Result<String, String> {
    let request = format!("GET /api/v1/versions HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connect #{i}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).map_err(|e| format!("write #{i}: {e}"))?;
        let r = read_full_reply(&mut s, usize::MAX).map_err(|e| format!("#{i}: {e}"))?;
        if r.status != 200 {
            return Err(format!("#{i}: {}", r.head));
        }
        socks.push(s);
    }
    // Idle past the 2 s request timeout: kept-alive connections wait for the idle timeout.
    std::thread::sleep(Duration::from_secs(4));
    for (i, s) in socks.iter_mut().enumerate().step_by(n / 20) {
        s.write_all(request.as_bytes()).map_err(|e| format!("second request on #{i}: {e}"))?;
        let r = read_full_reply(s, usize::MAX).map_err(|e| format!("second request on idle #{i}: {e}"))?;
        if r.status != 200 {
            return Err(format!("second request on idle #{i}: {}", r.head));
        }
    }
    Ok(format!("{n} idle keep-alive connections"))
}

/// A healthy HTTP-FLV player decodes 10 s of video through the proxy while, in parallel,
/// other clients send oversized heads, too many headers, broken request lines, `..` paths, a
/// head one byte a second, and 2000 idle keep-alive connections. Each gets its error (or is
/// closed), nothing hangs, and the player gets every frame.
#[test]
fn bad_input_does_not_hurt_a_healthy_player() {
    let (origin, p) = ffmpeg_origin_behind_proxy("flv", "/live/h.flv", 40, &["--http-request-timeout", "2s"]);
    let http = p.http_addr();
    let url = format!("http://{http}/live/h.flv");
    let player = std::thread::spawn(move || play_frames(&url, 250, Duration::from_secs(40)));
    assert!(wait_until(Duration::from_secs(15), || origin.contacted()), "the player never reached the origin");

    let mut big = b"GET /api/v1/versions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    big.extend(vec![b'a'; 1 << 20]);
    big.extend_from_slice(b"\r\n\r\n");
    let headers = |n: usize| {
        let mut r = b"GET /api/v1/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
        for i in 0..n {
            r.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        r.extend_from_slice(b"\r\n");
        r
    };
    let (many, hundred) = (headers(10_000), headers(100));
    assert!(hundred.len() < 16 * 1024);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("1 MB header", big, &["431", "closed"]),
        ("10,000 headers", many, &["431", "closed"]),
        ("100 headers in 2 KB", hundred, &["431"]),
        ("no HTTP version", b"GET /api/v1/versions\r\n\r\n".to_vec(), &["400"]),
        ("a .. segment", b"GET /../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(), &["400"]),
        ("a .. segment in a stream path", b"GET /live/../x.flv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(), &["400"]),
    ];
    let t0 = Instant::now();
    let bad: Vec<_> = cases
        .into_iter()
        .map(|(what, req, want)| {
            let addr = http.clone();
            std::thread::spawn(move || (what, want, send_bad(&addr, &req)))
        })
        .collect();
    let slow = {
        let addr = http.clone();
        std::thread::spawn(move || slow_head(&addr))
    };
    let idle = {
        let addr = http.clone();
        std::thread::spawn(move || idle_keep_alive(&addr, 2000))
    };

    for h in bad {
        let (what, want, got) = h.join().unwrap();
        eprintln!("{what}: {got:?}");
        match got {
            Ok(status) => assert!(want.contains(&status.as_str()), "{what}: got {status}, want one of {want:?}"),
            Err(e) => panic!("{what}: {e}\n{}", plog(&p)),
        }
    }
    let (text, closed_after) = slow.join().unwrap().unwrap_or_else(|e| panic!("slow head: {e}"));
    assert!(text.starts_with("HTTP/1.1 408"), "slow head got {text:?}");
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(6),
        "slow head closed after {closed_after:?}, want about the 2 s request timeout"
    );
    idle.join().unwrap().unwrap_or_else(|e| panic!("idle keep-alive: {e}\n{}", plog(&p)));
    eprintln!("bad input done in {:?}", t0.elapsed());

    let v = get_full(&http, "/api/v1/versions").unwrap();
    assert_eq!(v.status, 200, "{}", v.head);
    let played = player.join().unwrap().unwrap_or_else(|e| panic!("healthy player: {e}\n{}", plog(&p)));
    assert!(played.clean(250), "healthy player: {played:?}\n{}", plog(&p));
    assert_eq!(origin.requested(), ["/live/h.flv"], "only the player reached the origin");
}

/// While an HTTP-FLV player plays, `/api/v1/streams` counts one `http_flv_play` session and
/// the bytes sent to it grow; the session goes when the player does.
#[test]
fn http_flv_sessions_and_bytes_are_counted() {
    let (origin, p) = ffmpeg_origin_behind_proxy("flv", "/live/acct.flv", 30, &[]);
    let mut player = Ffmpeg::play(&format!("http://{}/live/acct.flv", p.http_addr()), 20);
    let k = key("acct");
    let flv_play = |p: &Proxy| stream_entry(p, &k).and_then(|e| e["sessions"]["http_flv_play"].as_u64()).unwrap_or(0);
    let bytes_out = |p: &Proxy| {
        stream_entry(p, &k).and_then(|e| e["bytes_by_protocol"]["http_flv"]["bytes_out"].as_u64()).unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(15), || flv_play(&p) == 1),
        "no http_flv_play session: {:?}\nplayer: {}\n{}",
        stream_entry(&p, &k),
        player.describe(),
        plog(&p)
    );
    assert!(wait_until(Duration::from_secs(10), || player.frames() > 0), "{}", player.describe());
    assert!(wait_until(Duration::from_secs(5), || bytes_out(&p) > 0), "{:?}", stream_entry(&p, &k));
    let first = bytes_out(&p);
    std::thread::sleep(Duration::from_millis(1500));
    let entry = stream_entry(&p, &k).unwrap();
    let second = entry["bytes_by_protocol"]["http_flv"]["bytes_out"].as_u64().unwrap_or(0);
    assert!(second > first, "bytes_out did not grow: {first} then {second}: {entry}");
    assert_eq!(entry["sessions"]["http_flv_play"], 1, "{entry}");
    assert_eq!(entry["origin"], origin_id("ff", "s"), "{entry}");
    assert!(origin.contacted());

    player.kill();
    assert!(
        wait_until(Duration::from_secs(10), || flv_play(&p) == 0),
        "http_flv_play still counted after the player left: {:?}",
        stream_entry(&p, &k)
    );
    // The proxy hung up on the origin too: ffmpeg's one client left, so it exits.
    let mut origin = origin;
    assert!(
        origin.proc.wait_timeout(Duration::from_secs(10)).is_some(),
        "origin still serving: {}",
        origin.proc.describe()
    );
}

/// A kept-alive connection outlives the request timeout while it idles between requests, and
/// is closed once it has idled for `--http-idle-timeout`.
#[test]
fn idle_keep_alive_connections_last_the_idle_timeout() {
    let p = Proxy::start(&["--http-request-timeout", "2s", "--http-idle-timeout", "6s"]);
    let http = p.http_addr();
    let mut s = TcpStream::connect(&http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let request = format!("GET /api/v1/versions HTTP/1.1\r\nHost: {http}\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_full_reply(&mut s, usize::MAX).unwrap().status, 200);
    std::thread::sleep(Duration::from_secs(4));
    s.write_all(request.as_bytes()).unwrap();
    let r = read_full_reply(&mut s, usize::MAX).unwrap_or_else(|e| panic!("closed before the idle timeout: {e}"));
    assert_eq!(r.status, 200);
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let read = s.read_to_end(&mut rest);
    let idled = t0.elapsed();
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {:?}", String::from_utf8_lossy(&rest));
    assert!(
        idled >= Duration::from_secs(5) && idled < Duration::from_secs(9),
        "closed after {idled:?} idle, want about 6 s"
    );
}

/// A client that connects and never sends a byte has not finished its head within the request
/// timeout either: it is answered 408 (or just closed) then, not held for the idle timeout
/// meant for kept-alive connections between requests.
#[test]
fn a_silent_new_connection_gets_the_request_timeout() {
    let p = Proxy::start(&["--http-request-timeout", "2s", "--http-idle-timeout", "20s"]);
    let mut s = TcpStream::connect(p.http_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let read = s.read_to_end(&mut got);
    let closed_after = t0.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{read:?} {text:?}");
    assert!(
        closed_after < Duration::from_secs(5),
        "a connection that sent nothing was held {closed_after:?} ({read:?}), want about the 2 s request timeout"
    );
}
