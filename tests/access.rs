//! Who may publish and play (signed URLs, SRS-style HTTP callbacks, sessions per stream) and
//! dead peers and per-client limits (connections per IP, TCP keepalive, the relay idle
//! timeout), with real peers: ffmpeg publishes and ffprobe plays through the proxy to
//! nginx-rtmp and over SRT to srt-live-transmit; curl plays HTTP-FLV; aiortc peers publish
//! (WHIP) and play (WHEP) through the proxy to an aiortc origin; a small callback server
//! started by the test answers the callbacks as an SRS hook server would; a hand-made SRT
//! caller reads the rejection codes on the wire. Bad input runs next to a healthy stream in the
//! same proxy, which must not notice.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::peers::*;
use common::rtmp_client::{Handshake, RtmpClient};
use common::udp_peers::{
    AiortcOrigin, SrtCaller, SrtRelayOrigin, UdpProxy, name_on, origin_body_udp, publish_srt, publish_srt_with,
    require, whep_play, whip_offer, whip_publish,
};
use common::*;
use serde_json::{Value, json};
use streamgate::balance::StreamKey;
use streamgate::proxy::access::signed::sign;

const WAIT: Duration = Duration::from_secs(20);

fn shards(p: &Proxy) -> Value {
    get(&p.api_addr(), "/api/v1/shards").json()
}

fn pick_failures(p: &Proxy, reason: &str) -> u64 {
    shards(p)["total"]["pick_failures"][reason].as_u64().unwrap_or(0)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// `token=..&expires=..` for `live/<stream>` with `secret`, valid for `secs` (negative: expired).
fn signed(secret: &str, stream: &str, secs: i64) -> String {
    let expires = (unix_now() as i64 + secs) as u64;
    let key = StreamKey::from_url(&format!("rtmp://h/live/{stream}")).unwrap();
    format!("token={}&expires={expires}", sign(secret, &key, expires))
}

/// Whether an ffmpeg publisher was refused: it exits with an error within `WAIT`.
fn refused(mut ffmpeg: Ffmpeg) -> bool {
    matches!(ffmpeg.wait_timeout(WAIT), Some(status) if !status.success())
}

fn curl_status(url: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// RTMP and HTTP (the SRT and WebRTC tests follow): publish and play each need their own
/// secret's token for their own stream, unexpired, in the stream name's query or the tcUrl's.
#[test]
fn signed_urls_gate_rtmp_and_http_publish_and_play() {
    let origin = NginxRtmp::start(4096);
    let p = Proxy::start(&["--publish-secret", "pub-s3cret", "--play-secret", "play-s3cret"]);
    let mut body: Value = serde_json::from_str(&origin_body_udp("signed", &[], &[], &[])).unwrap();
    body["rtmp"] = json!([origin.rtmp_port.to_string()]);
    assert_eq!(register(&p.api_addr(), &body.to_string()).status, 200);
    let url = |stream: &str, query: &str| format!("rtmp://127.0.0.1:{}/live/{stream}?{query}", p.rtmp);

    // A healthy publish with a valid publish token, played with a valid play token.
    let mut healthy = Ffmpeg::publish(&url("cam", &signed("pub-s3cret", "cam", 600)), 60);
    assert!(
        wait_until(WAIT, || origin.publishing("cam")),
        "signed publish refused: {}\n{}",
        healthy.describe(),
        p.log_text()
    );
    let codecs = ffprobe_streams(&url("cam", &signed("play-s3cret", "cam", 600)), WAIT)
        .unwrap_or_else(|e| panic!("signed play refused: {e}\n{}", p.log_text()));
    assert!(codecs.iter().any(|c| c == "h264"), "{codecs:?}");

    // Refused beside it: no token, an expired one, one for another stream, the play secret's
    // token to publish, and the tcUrl's query counts too.
    let before = pick_failures(&p, "denied");
    assert!(refused(Ffmpeg::publish(&url("x1", ""), 10)), "unsigned publish accepted");
    assert!(refused(Ffmpeg::publish(&url("x2", &signed("pub-s3cret", "x2", -5)), 10)), "expired publish accepted");
    assert!(refused(Ffmpeg::publish(&url("x3", &signed("pub-s3cret", "other", 600)), 10)), "wrong stream accepted");
    assert!(refused(Ffmpeg::publish(&url("x4", &signed("play-s3cret", "x4", 600)), 10)), "play secret published");
    assert!(ffprobe_streams(&url("cam", ""), Duration::from_secs(10)).is_err(), "unsigned play accepted");
    assert!(ffprobe_streams(&url("cam", &signed("pub-s3cret", "cam", 600)), Duration::from_secs(10)).is_err());
    let in_tc_url = format!("rtmp://127.0.0.1:{}/live?{}/cam", p.rtmp, signed("play-s3cret", "cam", 600));
    assert!(ffprobe_streams(&in_tc_url, WAIT).is_ok(), "a token in the tcUrl was not read\n{}", p.log_text());
    for stream in ["x1", "x2", "x3", "x4"] {
        assert!(!origin.publishing(stream), "{stream} reached the origin");
    }
    let log = p.log_text();
    for why in ["no signed URL", "expired at", "does not match"] {
        assert!(log.contains("refused: unauthorized: ") && log.contains(why), "no {why:?} line:\n{log}");
    }
    assert!(log.contains("; answered with an error onStatus, then close"), "{log}");

    // HTTP-FLV and HLS: 403 without a valid token, past the check with one (200: the edge
    // serves it from its pull of the origin's RTMP).
    let http = format!("http://127.0.0.1:{}", p.http);
    assert_eq!(curl_status(&format!("{http}/live/cam.flv")), 403);
    assert_eq!(curl_status(&format!("{http}/live/cam.m3u8?{}", signed("pub-s3cret", "cam", 600))), 403);
    assert_eq!(curl_status(&format!("{http}/live/cam.flv?{}", signed("play-s3cret", "cam", 600))), 200);

    assert!(wait_until(WAIT, || pick_failures(&p, "denied") >= before + 8), "{}", shards(&p));
    assert!(healthy.running(), "the healthy publisher noticed: {}", healthy.describe());
    assert!(origin.publishing("cam"));
}

/// Signed SRT stream ids with real peers: ffmpeg (libsrt) publishes with
/// `#!::r=live/NAME?token=..&expires=..,m=publish` through the proxy to srt-live-transmit (the
/// relay origin of tests/srt_proxy.rs, registered as `srt-in` and `srt-out`), and ffprobe plays
/// it back through the proxy with a play token, so every byte it reads crossed the proxy twice.
/// The `&` form goes as ffmpeg's `-srt_streamid` and ffprobe's `-streamid` options, since an
/// `&` would end `streamid=` in an `srt://` URL; in a URL the items are SRS's
/// (`#!::r=live/NAME?token=..,expires=..,m=request`), as the signed play writes them. Beside it an unsigned ffmpeg publish, an
/// unsigned ffprobe play and a play with the publish secret's token are refused (libsrt prints
/// no reason code, so the proxy's log line names the reason and the rejection, 1401; the wire
/// code is read by a hand-made caller in `srt_sessions_ask_the_callbacks_and_send_their_end`)
/// and reach no origin.
#[test]
fn signed_srt_stream_ids_with_ffmpeg_through_the_proxy() {
    require("ffprobe", "ffmpeg");
    const IN: &str = "srt-in-s-1";
    const OUT: &str = "srt-out-s-1";
    let srt_origin = SrtRelayOrigin::start();
    let p = UdpProxy::start(&["--publish-secret", "pub-s3cret", "--play-secret", "play-s3cret"]);
    p.register(&origin_body_udp("srt-in", &[srt_origin.input.to_string()], &[], &[]));
    p.register(&origin_body_udp("srt-out", &[srt_origin.output.to_string()], &[], &[]));
    let publish = name_on("__defaultVhost__", "pub", IN, &[IN, OUT]);
    let play = name_on("__defaultVhost__", "play", OUT, &[IN, OUT]);
    let bad = name_on("__defaultVhost__", "bad", IN, &[IN, OUT]);
    let url = format!("srt://127.0.0.1:{}", p.srt);
    let sid = |stream: &str, query: &str, mode: &str| format!("#!::r=live/{stream}{query},m={mode}");
    let key = |stream: &str| format!("__defaultVhost__/live/{stream}");
    let probe = |sid: &str, timeout: Duration| ffprobe_streams_with(&["-streamid", sid], &url, timeout);

    let signed_publish = sid(&publish, &format!("?{}", signed("pub-s3cret", &publish, 600)), "publish");
    let mut publisher = publish_srt_with(&["-srt_streamid", &signed_publish], &url, 40);
    assert!(
        wait_until(WAIT, || p.sessions(&key(&publish), "srt_publish") == 1),
        "the signed publish never became an SRT session: {}\n{}\n{}",
        publisher.describe(),
        srt_origin.log_text(),
        p.log()
    );

    // Refused beside it.
    let before = pick_failures(&p.p, "denied");
    let mut unsigned = publish_srt(&p.srt_url(&sid(&bad, "", "publish")), 6);
    let status = unsigned.wait_timeout(WAIT);
    assert!(status.is_some_and(|s| !s.success()), "an unsigned SRT publisher went on: {}", unsigned.describe());
    let unsigned_play = probe(&sid(&play, "", "request"), Duration::from_secs(10));
    assert!(unsigned_play.is_err(), "unsigned SRT play accepted: {unsigned_play:?}");
    let wrong = format!("?{}", signed("pub-s3cret", &play, 600));
    let wrong_secret = probe(&sid(&play, &wrong, "request"), Duration::from_secs(10));
    assert!(wrong_secret.is_err(), "an SRT play with the publish secret's token accepted: {wrong_secret:?}");
    let log = p.p.log_text();
    for (what, stream, why) in
        [("publish", &bad, "no signed URL"), ("play", &play, "no signed URL"), ("play", &play, "token= does not match")]
    {
        let line = format!("srt {what} {} from ", key(stream));
        let reason = format!("refused: unauthorized: {why}");
        assert!(
            log.lines()
                .any(|l| l.contains(&line) && l.contains(&reason) && l.ends_with("; answered with SRT rejection 1401")),
            "no {line:?}..{reason:?}..1401 line\n{log}"
        );
    }
    assert!(wait_until(WAIT, || pick_failures(&p.p, "denied") >= before + 3), "{}", shards(&p.p));
    assert_eq!(p.sessions(&key(&bad), "srt_publish"), 0, "{:?}", p.stream(&key(&bad)));
    assert_eq!(p.bytes(&key(&bad), "srt"), (0, 0), "the refused publisher's bytes went somewhere");

    // The signed play through the proxy: what ffmpeg published, back from the origin.
    let in_url = format!("?{}", signed("play-s3cret", &play, 600).replace('&', ","));
    let codecs = ffprobe_streams(&p.srt_url(&sid(&play, &in_url, "request")), WAIT).unwrap_or_else(|e| {
        panic!("signed SRT play: {e}\n{}\n{}\n{}", publisher.describe(), srt_origin.log_text(), p.log())
    });
    assert!(codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"), "{codecs:?}");
    assert!(
        wait_until(Duration::from_secs(5), || p.bytes(&key(&publish), "srt").0 > 100_000
            && p.bytes(&key(&play), "srt").1 > 20_000),
        "bytes: publish {:?}, play {:?}",
        p.bytes(&key(&publish), "srt"),
        p.bytes(&key(&play), "srt")
    );
    assert!(publisher.running(), "the signed publisher noticed the refusals: {}", publisher.describe());
}

/// Signed WHIP and WHEP with real WebRTC peers: an aiortc publisher posts its offer with a
/// publish token through the proxy to the aiortc origin (two sites, as tests/webrtc_proxy.rs)
/// and sends video; an aiortc player with a play token gets that video back through the proxy
/// and decodes it. Beside them an unsigned WHIP offer, an unsigned WHEP offer and a WHEP offer
/// with the publish secret's token get 403 whose body says why, and the origin never sees them.
#[test]
fn signed_whip_and_whep_with_aiortc() {
    const A: &str = "rtc-a-s-1";
    const B: &str = "rtc-b-s-1";
    let origin = AiortcOrigin::start(2);
    let p = UdpProxy::start(&["--publish-secret", "pub-s3cret", "--play-secret", "play-s3cret"]);
    let (a, b) = (origin.sites[0], origin.sites[1]);
    p.register(&origin_body_udp("rtc-a", &[], &[a.api], &[a.rtc.to_string()]));
    p.register(&origin_body_udp("rtc-b", &[], &[b.api], &[b.rtc.to_string()]));
    let publish = name_on("__defaultVhost__", "pub", A, &[A, B]);
    let play = name_on("__defaultVhost__", "play", B, &[A, B]);
    let url = |api: &str, stream: &str, query: &str| format!("{}{query}", p.rtc_url(api, stream));

    let mut publisher = whip_publish(&url("whip", &publish, &format!("&{}", signed("pub-s3cret", &publish, 600))), 30);
    let answer = publisher.wait_event("answer", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert_eq!(answer["status"], 201, "signed WHIP: {answer}\n{}", p.log());
    publisher.wait_event("connected", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert!(wait_until(WAIT, || origin.whip_frames() >= 30), "{}\n{}", publisher.describe(), p.log());

    // Refused beside it, before the origin is asked: the peer reports the 403 and its body.
    let before = pick_failures(&p.p, "denied");
    let wrong = format!("&{}", signed("pub-s3cret", &play, 600));
    for (what, mut peer, why) in [
        ("unsigned WHIP", whip_publish(&url("whip", "nosig", ""), 3), "unauthorized: no signed URL"),
        ("unsigned WHEP", whep_play(&url("whep", &play, ""), 3), "unauthorized: no signed URL"),
        (
            "WHEP with the publish token",
            whep_play(&url("whep", &play, &wrong), 3),
            "unauthorized: token= does not match",
        ),
    ] {
        let answer = peer.wait_event("answer", WAIT).unwrap_or_else(|e| panic!("{what}: {e}\n{}", p.log()));
        assert_eq!(answer["status"], 403, "{what}: {answer}");
        let body = answer["body"].as_str().unwrap_or_default();
        assert!(body.contains(why), "{what}: the 403 body does not say {why:?}: {answer}");
        assert!(peer.wait_exit(WAIT).is_some_and(|s| !s.success()), "{what}: {}", peer.describe());
    }
    assert!(wait_until(WAIT, || pick_failures(&p.p, "denied") >= before + 3), "{}", shards(&p.p));
    let log = p.p.log_text();
    assert!(log.contains("webrtc publish __defaultVhost__/live/nosig from "), "{log}");
    assert!(log.contains("refused: unauthorized: no signed URL") && log.contains("; answered with HTTP 403"), "{log}");

    // The signed player gets the publisher's video back through the proxy.
    let mut player = whep_play(&url("whep", &play, &format!("&{}", signed("play-s3cret", &play, 600))), 5);
    let answer = player.wait_event("answer", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert_eq!(answer["status"], 201, "signed WHEP: {answer}\n{}", p.log());
    player.wait_event("done", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert!(player.frames() >= 30, "the signed WHEP player decoded {} frames\n{}", player.frames(), player.describe());
    let posts = origin.stats()["requests"].as_array().unwrap().iter().filter(|r| r["method"] == "POST").count();
    assert_eq!(posts, 2, "only the signed offers reach the origin: {}", origin.stats());
    publisher.wait_event("done", Duration::from_secs(40)).unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert_eq!(
        publisher.event("deleted").map(|e| e["status"].clone()),
        Some(Value::from(200)),
        "{}",
        publisher.describe()
    );
}

/// A callback server as SRS's hook servers answer: allows streams whose name starts with
/// `ok`, never answers for `slow*` (nor end notices of `okslow*`), refuses the rest with code
/// 403. Keeps every body.
struct Hooks {
    port: u16,
    calls: Arc<Mutex<Vec<Value>>>,
}

impl Hooks {
    fn start() -> Hooks {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let kept = calls.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || answer(conn, &kept));
            }
        });
        Hooks { port, calls }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn calls(&self, action: &str, stream: &str) -> Vec<Value> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c["action"] == action && c["stream"] == stream).cloned().collect()
    }
}

fn answer(mut conn: TcpStream, kept: &Mutex<Vec<Value>>) {
    let Some((_, body)) = common::read_request(&mut conn) else { return };
    let body = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    kept.lock().unwrap().push(body.clone());
    let stream = body["stream"].as_str().unwrap_or("");
    let end_notice = matches!(body["action"].as_str(), Some("on_stop" | "on_unpublish"));
    if stream.starts_with("slow") || (end_notice && stream.starts_with("okslow")) {
        std::thread::sleep(Duration::from_secs(10));
        return;
    }
    let code = if stream.starts_with("ok") { 0 } else { 403 };
    let reply = json!({ "code": code }).to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
        reply.len()
    );
}

#[test]
fn callbacks_allow_refuse_time_out_and_hear_the_end() {
    let hooks = Hooks::start();
    let origin = NginxRtmp::start(4096);
    let p = Proxy::start(&[
        "--on-publish",
        &hooks.url("/api/v1/streams"),
        "--on-unpublish",
        &hooks.url("/api/v1/streams"),
        "--on-play",
        &hooks.url("/api/v1/sessions"),
        "--on-stop",
        &hooks.url("/api/v1/sessions"),
        "--callback-timeout",
        "1s",
    ]);
    assert_eq!(register(&p.api_addr(), &origin_body("hooks", "a", origin.rtmp_port)).status, 200);
    let url = |stream: &str| format!("rtmp://127.0.0.1:{}/live/{stream}", p.rtmp);

    let mut healthy = Ffmpeg::publish(&format!("{}?k=v", url("okhealthy")), 60);
    assert!(
        wait_until(WAIT, || origin.publishing("okhealthy")),
        "allowed publish: {}\n{}",
        healthy.describe(),
        p.log_text()
    );
    let on_publish = hooks.calls("on_publish", "okhealthy");
    assert_eq!(on_publish.len(), 1, "{on_publish:?}");
    let c = &on_publish[0];
    assert_eq!(
        (c["app"].as_str(), c["vhost"].as_str(), c["ip"].as_str()),
        (Some("live"), Some("__defaultVhost__"), Some("127.0.0.1"))
    );
    assert_eq!(c["param"], "?k=v", "{c}");
    assert!(c["tcUrl"].as_str().unwrap().starts_with("rtmp://127.0.0.1:"), "{c}");
    assert!(c["client_id"].as_str().is_some_and(|id| !id.is_empty()), "{c}");

    // Refused and timed out beside the healthy stream.
    let t0 = Instant::now();
    assert!(refused(Ffmpeg::publish(&url("badcam"), 10)), "a refused publish went on");
    assert!(refused(Ffmpeg::publish(&url("slowcam"), 10)), "a timed-out callback let a publish on");
    assert!(t0.elapsed() < WAIT, "refusals took {:?}", t0.elapsed());
    assert!(!origin.publishing("badcam") && !origin.publishing("slowcam"));
    // RTMP's own form of the refusal: an error onStatus with the reason, then close.
    let mut rtmp = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = rtmp.publish("badcam2", |_| Vec::new(), WAIT).unwrap();
    assert_eq!((status.level.as_str(), status.code.as_str()), ("error", "NetStream.Publish.BadName"), "{status:?}");
    assert!(status.description.contains("refused by the on_publish callback"), "{status:?}");
    let mut rtmp = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = rtmp.play("badplay", |_| Vec::new(), WAIT).unwrap();
    assert_eq!((status.level.as_str(), status.code.as_str()), ("error", "NetStream.Play.StreamNotFound"), "{status:?}");
    assert!(status.description.contains("refused by the on_play callback"), "{status:?}");
    let log = p.log_text();
    assert!(log.contains("refused by the on_publish callback: answered code 403"), "{log}");
    assert!(log.contains("the on_publish callback failed"), "{log}");
    assert_eq!(hooks.calls("on_unpublish", "badcam").len(), 0, "no end notice for a refused publish");

    // Play: allowed over RTMP, refused over HTTP-FLV (403), each asked with on_play.
    assert!(ffprobe_streams(&url("okhealthy"), WAIT).is_ok(), "{}", p.log_text());
    assert_eq!(curl_status(&format!("http://127.0.0.1:{}/live/nothere.flv", p.http)), 403);
    assert_eq!(hooks.calls("on_play", "nothere")[0]["protocol"], "http_flv");
    // The player's end is told with its own client id.
    let play = hooks.calls("on_play", "okhealthy")[0].clone();
    assert!(wait_until(WAIT, || !hooks.calls("on_stop", "okhealthy").is_empty()), "no on_stop");
    assert_eq!(hooks.calls("on_stop", "okhealthy")[0]["client_id"], play["client_id"]);

    // The publisher's end: on_unpublish with the on_publish's client id.
    assert!(healthy.running(), "the healthy publisher noticed: {}", healthy.describe());
    healthy.kill();
    assert!(wait_until(WAIT, || !hooks.calls("on_unpublish", "okhealthy").is_empty()), "no on_unpublish");
    assert_eq!(hooks.calls("on_unpublish", "okhealthy")[0]["client_id"], c["client_id"]);
    assert!(wait_until(WAIT, || pick_failures(&p, "denied") >= 5), "{}", shards(&p));
}

#[test]
fn sessions_per_stream_and_connections_per_ip_are_capped() {
    let origin = NginxRtmp::start(4096);
    let p = Proxy::start(&["--max-sessions-per-stream", "2", "--max-connections-per-ip", "rtmp=6"]);
    assert_eq!(register(&p.api_addr(), &origin_body("caps", "a", origin.rtmp_port)).status, 200);
    let url = |stream: &str| format!("rtmp://127.0.0.1:{}/live/{stream}", p.rtmp);

    let mut publisher = Ffmpeg::publish(&url("capped"), 60);
    assert!(wait_until(WAIT, || origin.publishing("capped")), "{}", publisher.describe());
    let mut player = Ffmpeg::play(&url("capped"), 60);
    assert!(wait_until(WAIT, || origin.players("capped") == 1), "{}", player.describe());
    // Third session of the stream: refused over RTMP and HTTP; other streams are not capped.
    assert!(ffprobe_streams(&url("capped"), Duration::from_secs(10)).is_err(), "a third session of the stream played");
    assert_eq!(curl_status(&format!("http://127.0.0.1:{}/live/capped.flv", p.http)), 403);
    assert!(p.log_text().contains("stream has 2 sessions already"), "{}", p.log_text());
    assert!(wait_until(WAIT, || pick_failures(&p, "stream_full") >= 2), "{}", shards(&p));
    // The slot comes back when a session ends.
    player.kill();
    assert!(
        wait_until(WAIT, || ffprobe_streams(&url("capped"), Duration::from_secs(10)).is_ok()),
        "slot never came back"
    );

    // Connections per IP: publisher + 5 idle sockets hold 6; the 7th is closed at once, the
    // HTTP listener is not limited, and a freed slot is taken again.
    let idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(("127.0.0.1", p.rtmp)).unwrap()).collect();
    assert!(wait_until(WAIT, || shards(&p)["total"]["open_by_listener"]["rtmp"] == 6), "{}", shards(&p));
    let mut seventh = TcpStream::connect(("127.0.0.1", p.rtmp)).unwrap();
    seventh.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(seventh.read(&mut b), Ok(0) | Err(_)), "the 7th connection was kept");
    assert!(wait_until(WAIT, || shards(&p)["total"]["refused"]["rtmp"] == 1), "{}", shards(&p));
    assert_eq!(get(&p.http_addr(), "/api/v1/versions").status, 200);
    drop(idle);
    assert!(wait_until(WAIT, || shards(&p)["total"]["open_by_listener"]["rtmp"] == 1));
    assert!(ffprobe_streams(&url("capped"), WAIT).is_ok(), "{}", p.log_text());
    assert!(publisher.running(), "the publisher noticed: {}", publisher.describe());
}

/// An HTTP-FLV origin that answers the head of a live body and then never sends a byte: the
/// misbehaviour a real origin does not show on demand.
fn silent_flv_origin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut conn in listener.incoming().flatten() {
            let mut b = [0u8; 4096];
            let _ = conn.read(&mut b);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nConnection: close\r\n\r\n");
            held.push(conn);
        }
    });
    port
}

/// `ss` lines of established TCP sockets whose address in `column` (2 local, 3 peer) has
/// `port`, with their timers.
fn sockets(column: usize, port: u16) -> Vec<String> {
    let out = Command::new("ss").args(["-tnoH", "state", "established"]).output().expect("run ss (iproute2)");
    let suffix = format!(":{port}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(column).is_some_and(|a| a.ends_with(&suffix)))
        .map(String::from)
        .collect()
}

#[test]
fn dead_peers_keepalive_probes_and_the_idle_timeout_closes_silent_sessions() {
    let origin = NginxRtmp::start(4096);
    let silent = silent_flv_origin();
    // The relay's timers (the edge, the default, has its own: `--edge-stall-timeout`).
    let relay = ["--edge", "off", "--relay-idle-timeout", "3s"];
    let p = Proxy::start(&[&relay[..], &["--tcp-keepalive-idle", "17s", "--tcp-keepalive-interval", "4s"]].concat());
    let body = common::http_peers::origin_body_http("dead", "a", origin.rtmp_port, silent);
    assert_eq!(register(&p.api_addr(), &body).status, 200);
    let url = format!("rtmp://127.0.0.1:{}/live/alive", p.rtmp);
    let mut publisher = Ffmpeg::publish(&url, 60);
    assert!(wait_until(WAIT, || origin.publishing("alive")), "{}", publisher.describe());

    // Keepalive is on for the client and the origin sides of the relay: ss shows the timer
    // (while no data is unacknowledged; else the retransmit timer shows, so sample a while).
    let client = (2, p.rtmp);
    let upstream = (3, origin.rtmp_port);
    for (column, port) in [client, upstream] {
        let mut seen = Vec::new();
        let shown = wait_until(Duration::from_secs(10), || {
            seen = sockets(column, port);
            seen.iter().any(|l| l.contains("timer:(keepalive"))
        });
        assert!(shown, "no keepalive on the proxy's sockets with port {port} in column {column}: {seen:?}");
    }

    // A player of a stream whose origin went silent: closed after 3 s, counted and logged.
    let mut player = TcpStream::connect(("127.0.0.1", p.http)).unwrap();
    player.write_all(b"GET /live/quiet.flv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    player.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let _ = player.read_to_end(&mut got);
    let took = t0.elapsed();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "closed after {took:?}");
    assert!(wait_until(WAIT, || shards(&p)["total"]["idle"]["http_stream"] == 1), "{}", shards(&p));
    assert!(p.log_text().contains("no byte either way for 3s"), "{}", p.log_text());

    // The live stream beside it moves bytes all along and is never idle.
    std::thread::sleep(Duration::from_secs(4));
    assert!(publisher.running() && origin.publishing("alive"), "{}", publisher.describe());
    assert_eq!(shards(&p)["total"]["idle"]["rtmp"], 0);
}

/// WebRTC sessions hear their end too: aiortc publishes with WHIP and plays with WHEP through
/// the proxy to the aiortc origin; on_publish / on_play are asked at the offer, and
/// on_unpublish / on_stop (with the same client id) come when the media session ends, not while
/// media flows. The clients' DELETE ends their media sessions at once: the notices come within
/// seconds although `--udp-idle-timeout` is a minute. An offer that never sends media ends after
/// `--webrtc-media-timeout` (2 s here) with its notice; one that deletes its resource before any
/// media ends then. A refused offer gets 403 and no end notice.
#[test]
fn webrtc_sessions_send_on_unpublish_and_on_stop_when_their_media_ends() {
    let hooks = Hooks::start();
    // Four sites (the aiortc origin serves one session per site), one per client below.
    let origin = AiortcOrigin::start(4);
    let streams = hooks.url("/api/v1/streams");
    let sessions = hooks.url("/api/v1/sessions");
    let proxy = UdpProxy::start(&[
        "--on-publish",
        &streams,
        "--on-unpublish",
        &streams,
        "--on-play",
        &sessions,
        "--on-stop",
        &sessions,
        "--udp-idle-timeout",
        "60s",
        "--webrtc-media-timeout",
        "2s",
    ]);
    let ids = ["rtc-a-s-1", "rtc-b-s-1", "rtc-c-s-1", "rtc-d-s-1"];
    for (id, site) in ["rtc-a", "rtc-b", "rtc-c", "rtc-d"].iter().zip(&origin.sites) {
        proxy.register(&origin_body_udp(id, &[], &[site.api], &[site.rtc.to_string()]));
    }
    let published = name_on("__defaultVhost__", "okpub", ids[0], &ids);
    let played = name_on("__defaultVhost__", "okplay", ids[1], &ids);
    let silent = name_on("__defaultVhost__", "oksilent", ids[2], &ids);
    let deleted = name_on("__defaultVhost__", "okdeleted", ids[3], &ids);
    let (published, played) = (published.as_str(), played.as_str());

    let mut publisher = whip_publish(&proxy.rtc_url("whip", published), 14);
    publisher.wait_event("connected", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(wait_until(WAIT, || origin.whip_frames() >= 30), "{}\n{}", publisher.describe(), proxy.log());
    let on_publish = hooks.calls("on_publish", published);
    assert_eq!(on_publish.len(), 1, "{on_publish:?}");
    assert_eq!(on_publish[0]["protocol"], "webrtc", "{on_publish:?}");

    let mut player = whep_play(&proxy.rtc_url("whep", played), 4);
    player.wait_event("connected", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let on_play = hooks.calls("on_play", played);
    assert_eq!(on_play.len(), 1, "{on_play:?}");
    assert!(hooks.calls("on_stop", played).is_empty(), "on_stop while the player plays");
    let delete = player.wait_event("deleted", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(delete["status"], 200, "{delete}");
    let asked = Instant::now();
    assert!(wait_until(WAIT, || !hooks.calls("on_stop", played).is_empty()), "no on_stop\n{}", proxy.log());
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(5), "on_stop {took:?} after the DELETE\n{}", proxy.log());
    player.wait_event("done", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(player.frames() >= 30, "the WHEP player decoded {} frames\n{}", player.frames(), player.describe());
    let on_stop = hooks.calls("on_stop", played);
    assert_eq!((on_stop.len(), &on_stop[0]["client_id"]), (1, &on_play[0]["client_id"]), "{on_stop:?}");

    // A refused offer beside the healthy publisher: 403, no end notice.
    let mut refused = whip_publish(&proxy.rtc_url("whip", "badrtc"), 3);
    let answer = refused.wait_event("answer", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(answer["status"], 403, "{answer}");

    // An offer that never sends a STUN check: its admission ends after the media timeout.
    let mut quiet = whip_offer(&proxy.rtc_url("whip", &silent), 8, None, None);
    let answer = quiet.wait_event("answer", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(answer["status"], 201, "{answer}");
    let answered = Instant::now();
    assert_eq!(hooks.calls("on_publish", &silent).len(), 1);
    assert!(wait_until(WAIT, || !hooks.calls("on_unpublish", &silent).is_empty()), "{}", proxy.log());
    let waited = answered.elapsed();
    let expected = Duration::from_millis(1500)..Duration::from_secs(5);
    assert!(expected.contains(&waited), "on_unpublish {waited:?} after an answer with no media\n{}", proxy.log());
    assert!(proxy.log().contains("no media session within 2s; ended"), "{}", proxy.log());

    // An offer deleted before any media: ended then (the media timeout is reset to 2 s, so the
    // log line tells which ended it).
    let mut gone = whip_offer(&proxy.rtc_url("whip", &deleted), 8, None, Some(0.5));
    let delete = gone.wait_event("deleted", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(delete["status"], 200, "{delete}");
    assert!(wait_until(WAIT, || !hooks.calls("on_unpublish", &deleted).is_empty()), "{}", proxy.log());
    assert!(proxy.log().contains(&format!("{deleted}: resource deleted before any media; ended")), "{}", proxy.log());

    assert!(hooks.calls("on_unpublish", published).is_empty(), "on_unpublish while the publisher publishes");
    publisher.wait_event("deleted", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let asked = Instant::now();
    assert!(
        wait_until(WAIT, || !hooks.calls("on_unpublish", published).is_empty()),
        "no on_unpublish\n{}",
        proxy.log()
    );
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(5), "on_unpublish {took:?} after the DELETE\n{}", proxy.log());
    let on_unpublish = hooks.calls("on_unpublish", published);
    assert_eq!(on_unpublish.len(), 1, "{on_unpublish:?}");
    assert_eq!(on_unpublish[0]["client_id"], on_publish[0]["client_id"]);
    assert_eq!(on_unpublish[0]["protocol"], "webrtc");
    let log = proxy.log();
    assert!(log.contains("media session opened"), "{log}");
    let closed = log.lines().filter(|l| l.contains("ended: the client deleted its resource")).count();
    assert_eq!(closed, 2, "the publisher's and the player's media sessions closed by their DELETE\n{log}");
    assert!(hooks.calls("on_unpublish", "badrtc").is_empty(), "an end notice for a refused offer");
}

/// `--webrtc-ice-sessions` bounds the control thread's table of ICE usernames: with 1, an aiortc
/// WHIP offer that sends its first STUN check 3 s late finds its session forgotten once another
/// offer was answered meanwhile (no media; the eviction is logged), while the same late offer
/// alone connects.
#[test]
fn the_ice_table_is_bounded_by_its_flag() {
    let origin = AiortcOrigin::start(2);
    let proxy = UdpProxy::start(&["--webrtc-ice-sessions", "1"]);
    let (a, b) = (origin.sites[0], origin.sites[1]);
    proxy.register(&origin_body_udp("rtc-a", &[], &[a.api], &[a.rtc.to_string()]));
    proxy.register(&origin_body_udp("rtc-b", &[], &[b.api], &[b.rtc.to_string()]));
    let ids = ["rtc-a-s-1", "rtc-b-s-1"];
    let late = name_on("__defaultVhost__", "late", ids[0], &ids);
    let prompt = name_on("__defaultVhost__", "prompt", ids[1], &ids);

    let mut forgotten = whip_offer(&proxy.rtc_url("whip", &late), 12, Some(3.0), None);
    forgotten.wait_event("answer", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let mut other = whip_publish(&proxy.rtc_url("whip", &prompt), 6);
    other.wait_event("connected", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(forgotten.wait_event("connected", WAIT).is_err(), "an evicted session connected\n{}", proxy.log());
    assert!(proxy.log().contains("ICE sessions remembered (--webrtc-ice-sessions)"), "{}", proxy.log());
    other.wait_event("done", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));

    let mut alone = whip_offer(&proxy.rtc_url("whip", &late), 6, Some(3.0), None);
    alone.wait_event("connected", WAIT).unwrap_or_else(|e| panic!("the late offer alone: {e}\n{}", proxy.log()));
}

/// `--local-max-streams` bounds the local streams: with 1, ffmpeg publishing one local stream
/// holds it, a second publisher of another stream is refused with an error status (logged), and
/// once the first leaves the second gets in.
#[test]
fn local_streams_are_bounded_by_their_flag() {
    let p = Proxy::start(&["--local-origin", "on", "--local-max-streams", "1", "--local-hls-jobs", "0"]);
    let served = |stream: &str| {
        let line = format!("rtmp publish __defaultVhost__/live/{stream} from");
        p.log_text().lines().filter(|l| l.contains(&line) && l.contains("served locally")).count()
    };
    let mut first = Ffmpeg::publish(&format!("rtmp://127.0.0.1:{}/live/one", p.rtmp), 60);
    assert!(wait_until(WAIT, || served("one") == 1), "{}\n{}", first.describe(), p.log_text());
    let mut second = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = second.publish("two", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    assert_eq!((status.level.as_str(), status.description.as_str()), ("error", "too many local streams"));
    assert!(p.log_text().contains("1 local streams live (--local-max-streams)"), "{}", p.log_text());
    assert!(first.running(), "the first publisher noticed");
    first.kill();
    let _again = Ffmpeg::publish(&format!("rtmp://127.0.0.1:{}/live/two", p.rtmp), 10);
    assert!(wait_until(WAIT, || served("two") == 1), "{}", p.log_text());
}

/// `--max-connections-per-ip` on the UDP listeners counts sessions per client IP across the
/// shards: with srt=1, ffmpeg publishing over SRT through the proxy to srt-live-transmit holds
/// the one session of 127.0.0.1, so a second SRT caller from there is rejected with 1402
/// (overload) and counted `refused`, and is let in once the publisher's session has ended;
/// with webrtc=1, an aiortc WHIP publisher holds it, and a WHEP player from the same IP gets
/// no media session (its STUN checks are dropped), while the publisher goes on.
#[test]
fn udp_sessions_per_ip_are_capped() {
    let srt_origin = SrtRelayOrigin::start();
    let p = UdpProxy::start(&["--max-connections-per-ip", "srt=1", "--udp-idle-timeout", "3s"]);
    p.register(&origin_body_udp("srt-in", &[srt_origin.input.to_string()], &[], &[]));
    let refused = |p: &UdpProxy, listener: &str| {
        let shards = get(&p.p.api_addr(), "/api/v1/shards").json();
        shards["total"]["refused"][listener].as_u64().unwrap_or(0)
    };
    let mut publisher = publish_srt(&p.srt_url("#!::r=live/capped,m=publish"), 60);
    let key = "__defaultVhost__/live/capped";
    assert!(wait_until(WAIT, || p.sessions(key, "srt_publish") == 1), "{}", p.log());
    let second =
        |id| SrtCaller::new(id).connect(p.srt_addr(), Some("#!::r=live/other,m=request"), Duration::from_secs(3));
    let (answer, _) = second(0x5353_0001).expect("no SRT answer");
    assert_eq!(answer.hs_type, 1000 + 1402, "{answer:?}\n{}", p.log());
    assert!(wait_until(WAIT, || refused(&p, "srt") == 1), "{}", p.log());
    assert!(p.log().contains("already holds 1 sessions (--max-connections-per-ip)"), "{}", p.log());
    assert!(publisher.running(), "the publisher noticed the refusal");
    publisher.kill();
    assert!(wait_until(WAIT, || p.sessions(key, "srt_publish") == 0), "{}", p.log());
    let answer = second(0x5353_0002).map(|(a, _)| a.hs_type);
    assert_ne!(answer, Some(1000 + 1402), "the slot did not come back\n{}", p.log());

    let rtc_origin = AiortcOrigin::start(2);
    let p = UdpProxy::start(&["--max-connections-per-ip", "webrtc=1"]);
    let (a, b) = (rtc_origin.sites[0], rtc_origin.sites[1]);
    p.register(&origin_body_udp("rtc-a", &[], &[a.api], &[a.rtc.to_string()]));
    p.register(&origin_body_udp("rtc-b", &[], &[b.api], &[b.rtc.to_string()]));
    let ids = ["rtc-a-s-1", "rtc-b-s-1"];
    let published = name_on("__defaultVhost__", "pub", ids[0], &ids);
    let played = name_on("__defaultVhost__", "play", ids[1], &ids);
    let mut whip = whip_publish(&p.rtc_url("whip", &published), 30);
    whip.wait_event("connected", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    let mut whep = whep_play(&p.rtc_url("whep", &played), 8);
    let answer = whep.wait_event("answer", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
    assert_eq!(answer["status"], 201, "signalling is not limited: {answer}");
    assert!(whep.wait_event("connected", Duration::from_secs(8)).is_err(), "a second session from the IP connected");
    assert!(wait_until(WAIT, || refused(&p, "webrtc") >= 1), "{}", p.log());
    let frames = rtc_origin.whip_frames();
    assert!(wait_until(WAIT, || rtc_origin.whip_frames() > frames + 25), "the publisher noticed\n{}", p.log());
}

/// SRT asks the callbacks too: ffmpeg publishes over SRT through the proxy to srt-live-transmit;
/// on_publish is asked before the origin is dialled (protocol `srt`), a refused caller gets
/// rejection 1401 (a hand-made caller reads it) and ffmpeg gives up, and on_unpublish comes when
/// the publisher ends (its SRT shutdown closes the session at once; `--udp-idle-timeout` is a
/// minute), with the on_publish's client id.
#[test]
fn srt_sessions_ask_the_callbacks_and_send_their_end() {
    let hooks = Hooks::start();
    let srt_origin = SrtRelayOrigin::start();
    let streams = hooks.url("/api/v1/streams");
    let p = UdpProxy::start(&["--on-publish", &streams, "--on-unpublish", &streams, "--udp-idle-timeout", "60s"]);
    p.register(&origin_body_udp("srt-in", &[srt_origin.input.to_string()], &[], &[]));

    let mut publisher = publish_srt(&p.srt_url("#!::r=live/oksrt?k=v,m=publish"), 6);
    let key = "__defaultVhost__/live/oksrt";
    assert!(wait_until(WAIT, || p.sessions(key, "srt_publish") == 1), "{}\n{}", publisher.describe(), p.log());
    let on_publish = hooks.calls("on_publish", "oksrt");
    assert_eq!(on_publish.len(), 1, "{on_publish:?}");
    assert_eq!((on_publish[0]["protocol"].as_str(), on_publish[0]["param"].as_str()), (Some("srt"), Some("?k=v")));

    // Refused beside it: the rejection a caller reads, and ffmpeg giving up.
    let caller = SrtCaller::new(0x5352_0001);
    let (answer, _) = caller
        .connect(p.srt_addr(), Some("#!::r=live/badsrt,m=publish"), Duration::from_secs(5))
        .expect("no SRT answer");
    assert_eq!(answer.hs_type, 1000 + 1401, "{answer:?}\n{}", p.log());
    let mut refused = publish_srt(&p.srt_url("#!::r=live/badsrt2,m=publish"), 6);
    let status = refused.wait_timeout(WAIT);
    assert!(status.is_some_and(|s| !s.success()), "a refused SRT publisher went on: {}", refused.describe());
    assert_eq!(hooks.calls("on_publish", "badsrt2").len(), 1);
    assert!(p.log().contains("refused by the on_publish callback"), "{}", p.log());

    assert!(hooks.calls("on_unpublish", "oksrt").is_empty(), "on_unpublish while the publisher publishes");
    let status = publisher.wait_timeout(WAIT);
    assert!(status.is_some_and(|s| s.success()), "{}", publisher.describe());
    let ended = Instant::now();
    assert!(wait_until(WAIT, || !hooks.calls("on_unpublish", "oksrt").is_empty()), "no on_unpublish\n{}", p.log());
    let took = ended.elapsed();
    assert!(took < Duration::from_secs(5), "on_unpublish {took:?} after the publisher ended\n{}", p.log());
    assert_eq!(hooks.calls("on_unpublish", "oksrt")[0]["client_id"], on_publish[0]["client_id"]);
    assert!(hooks.calls("on_unpublish", "badsrt").is_empty() && hooks.calls("on_unpublish", "badsrt2").is_empty());
}

/// End notices wait in a bounded queue (`--callback-max-notices`): with one callback in flight
/// and one notice waiting on one shard, five ffmpeg RTMP players of a stream whose on_stop the
/// callback server never answers end at once; at most three notices get a place (one posted,
/// one popped waiting for its turn, one queued), the others are dropped and logged, and a
/// dropped one never reaches the server.
#[test]
fn end_notices_wait_in_a_bounded_queue() {
    let hooks = Hooks::start();
    let origin = NginxRtmp::start(4096);
    let sessions = hooks.url("/api/v1/sessions");
    let p = Proxy::start(&[
        "--shards",
        "1",
        "--on-stop",
        &sessions,
        "--callback-max-in-flight",
        "1",
        "--callback-max-notices",
        "1",
        "--callback-timeout",
        "2s",
    ]);
    assert_eq!(register(&p.api_addr(), &origin_body("hooks", "a", origin.rtmp_port)).status, 200);
    let url = format!("rtmp://127.0.0.1:{}/live/okslow", p.rtmp);
    let mut publisher = Ffmpeg::publish(&url, 60);
    assert!(wait_until(WAIT, || origin.publishing("okslow")), "{}\n{}", publisher.describe(), p.log_text());
    let mut players: Vec<Ffmpeg> = (0..5).map(|_| Ffmpeg::play(&url, 60)).collect();
    assert!(wait_until(WAIT, || players.iter().all(|f| f.frames() >= 10)), "{}", p.log_text());
    for player in &mut players {
        player.kill();
    }
    let dropped = || p.log_text().matches("dropped, 1 notices waiting (--callback-max-notices)").count();
    let posted = || hooks.calls("on_stop", "okslow").len();
    // However the five ends interleave with the notifier task, at most three get a place.
    assert!(
        wait_until(WAIT, || posted() + dropped() == 5),
        "{} posted, {} dropped\n{}",
        posted(),
        dropped(),
        p.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    let (posted, dropped) = (posted(), dropped());
    assert_eq!(posted + dropped, 5, "a dropped notice was posted\n{}", p.log_text());
    assert!((1..=3).contains(&posted) && dropped >= 2, "{posted} posted, {dropped} dropped");
    assert!(publisher.running(), "the publisher noticed: {}", publisher.describe());
}

/// `--max-connections-per-ip` on the HTTP stream and HTTP API listeners: with http=2 and api=1,
/// connections past the limit are closed at accept and counted per listener, while curl still
/// gets its answer on the RTMP-free listeners once the held ones are let go.
#[test]
fn connections_per_ip_on_the_http_listeners() {
    let p = Proxy::start(&["--max-connections-per-ip", "http=2,api=1"]);
    let open = |listener: &str| shards(&p)["total"]["open_by_listener"][listener].as_u64().unwrap_or(0);
    let refused = |listener: &str| shards(&p)["total"]["refused"][listener].as_u64().unwrap_or(0);
    let closed_at_once = |port: u16| {
        let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        matches!(extra.read(&mut b), Ok(0) | Err(_))
    };
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(("127.0.0.1", p.http)).unwrap()).collect();
    assert!(wait_until(WAIT, || open("http_stream") == 2), "{}", shards(&p));
    assert!(closed_at_once(p.http), "a third HTTP connection was kept");
    assert!(wait_until(WAIT, || refused("http_stream") == 1), "{}", shards(&p));
    let api_held = TcpStream::connect(("127.0.0.1", p.http_api)).unwrap();
    assert!(wait_until(WAIT, || open("http_api") == 1), "{}", shards(&p));
    assert!(closed_at_once(p.http_api), "a second API connection was kept");
    assert!(wait_until(WAIT, || refused("http_api") == 1), "{}", shards(&p));
    assert!(p.log_text().contains("(--max-connections-per-ip)"), "{}", p.log_text());
    drop((held, api_held));
    assert!(wait_until(WAIT, || open("http_stream") == 0 && open("http_api") == 0), "{}", shards(&p));
    let versions = |port: u16| curl_status(&format!("http://127.0.0.1:{port}/api/v1/versions"));
    assert_eq!((versions(p.http), versions(p.http_api)), (200, 200), "{}", p.log_text());
}

/// An HLS player is one session with the callbacks: ffmpeg plays HLS through the proxy from an
/// nginx-rtmp origin for five seconds of video, refreshing its playlist several times, and
/// on_play is asked once; its first playlist is a one-variant master naming the same playlist
/// with its session token, which its refreshes carry. on_stop (with the same client id) comes
/// `--hls-session-timeout` after its last request, not per refresh. An origin's own master
/// playlist gets the token on its variants, whose requests keep the session alive. A refused
/// player gets 403.
#[test]
fn an_hls_player_is_one_session_for_the_callbacks() {
    let hooks = Hooks::start();
    let origin = common::http_peers::NginxHls::start();
    let sessions = hooks.url("/api/v1/sessions");
    let p = Proxy::start(&["--on-play", &sessions, "--on-stop", &sessions, "--hls-session-timeout", "3s"]);
    let body = common::http_peers::origin_body_http("hls-a", "s", origin.rtmp_port, origin.http_port);
    assert_eq!(register(&p.api_addr(), &body).status, 200);
    let url = format!("rtmp://127.0.0.1:{}/live/okhls", p.rtmp);
    let mut publisher = common::http_peers::publish_short_gop(&url, 60);
    assert!(wait_until(WAIT, || origin.segments("okhls") >= 3), "{}\n{}", publisher.describe(), p.log_text());

    let hls = format!("http://127.0.0.1:{}/live/okhls.m3u8", p.http);
    let played = play_frames(&hls, 150, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert!(played.frames >= 150, "{played:?}");
    let ended = Instant::now();
    let refreshes = origin.requested().iter().filter(|r| r.starts_with("/live/okhls.m3u8")).count();
    assert!(refreshes >= 4, "the player refreshed its playlist {refreshes} times: {:?}", origin.requested());
    let on_play = hooks.calls("on_play", "okhls");
    assert_eq!(on_play.len(), 1, "one player, {refreshes} playlist requests: {on_play:?}");
    assert_eq!(on_play[0]["protocol"], "hls", "{on_play:?}");
    assert!(wait_until(WAIT, || !hooks.calls("on_stop", "okhls").is_empty()), "no on_stop\n{}", p.log_text());
    let waited = ended.elapsed();
    assert!(waited >= Duration::from_secs(2), "on_stop {waited:?} after the player's last request");
    let on_stop = hooks.calls("on_stop", "okhls");
    assert_eq!((on_stop.len(), &on_stop[0]["client_id"]), (1, &on_play[0]["client_id"]), "{on_stop:?}");
    assert!(p.log_text().contains("no playlist request for 3s; session ended"), "{}", p.log_text());

    // What the session looks like: a master naming the same playlist with the token.
    let first = get(&p.http_addr(), "/live/okhls.m3u8?k=v");
    assert_eq!(first.status, 200, "{}", first.body);
    let variant = first.body.lines().find(|l| l.starts_with("okhls.m3u8?")).unwrap_or_else(|| panic!("{}", first.body));
    assert!(
        first.body.contains("#EXT-X-STREAM-INF:") && variant.starts_with("okhls.m3u8?k=v&spbhs="),
        "{}",
        first.body
    );
    let media = get(&p.http_addr(), &format!("/live/{variant}"));
    assert!(media.body.contains("#EXTINF") && media.body.contains("spbhid="), "{}", media.body);
    assert_eq!(hooks.calls("on_play", "okhls").len(), 2, "the variant request was asked again");

    // An origin's own master playlist keeps its variants, with the token added; requesting a
    // variant (which rides on spbhid) keeps the session alive.
    let dir = origin.hls_dir();
    std::fs::write(dir.join("okm.m3u8"), "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nokm-hi.m3u8\n").unwrap();
    std::fs::write(dir.join("okm-hi.m3u8"), "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nokm-hi-1.ts\n").unwrap();
    let master = get(&p.http_addr(), "/live/okm.m3u8");
    assert_eq!(master.status, 200, "{}", master.body);
    let variant =
        master.body.lines().find(|l| l.starts_with("okm-hi.m3u8?")).unwrap_or_else(|| panic!("{}", master.body));
    assert!(variant.contains("spbhid=") && variant.contains("spbhs="), "{}", master.body);
    for _ in 0..5 {
        let media = get(&p.http_addr(), &format!("/live/{variant}"));
        assert!(media.body.contains("okm-hi-1.ts?spbhid="), "{}", media.body);
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(hooks.calls("on_play", "okm").len(), 1);
    assert!(
        hooks.calls("on_stop", "okm").is_empty(),
        "the variant's requests did not keep the session\n{}",
        p.log_text()
    );
    assert!(wait_until(WAIT, || hooks.calls("on_stop", "okm").len() == 1), "no on_stop\n{}", p.log_text());

    assert_eq!(curl_status(&format!("http://127.0.0.1:{}/live/badhls.m3u8", p.http)), 403);
    assert!(hooks.calls("on_stop", "badhls").is_empty(), "an end notice for a refused player");
    assert!(publisher.running(), "the publisher noticed: {}", publisher.describe());
}

/// A local stream's HLS (no origin: streamgate's own remux job writes it) is one session per
/// player too: ffmpeg plays it for 100 frames through several playlist refreshes and on_play
/// (protocol hls) is asked once; on_stop follows `--hls-session-timeout` after its last request.
#[test]
fn a_local_hls_player_is_one_session_for_the_callbacks() {
    let hooks = Hooks::start();
    let sessions = hooks.url("/api/v1/sessions");
    let flags = ["--local-origin", "on", "--on-play", &sessions, "--on-stop", &sessions, "--hls-session-timeout", "3s"];
    let p = Proxy::start(&flags);
    let mut publisher = Ffmpeg::publish(&format!("rtmp://127.0.0.1:{}/live/oklocal", p.rtmp), 60);
    let hls_calls = |action: &str| hooks.calls(action, "oklocal").iter().filter(|c| c["protocol"] == "hls").count();
    let local = || p.log_text().contains("rtmp publish __defaultVhost__/live/oklocal from");
    assert!(wait_until(WAIT, local), "{}\n{}", publisher.describe(), p.log_text());
    // Until its first segment is written the local playlist is a 404 that asks nobody; then
    // the probe's own request opens a session.
    let asked = hls_calls("on_play");
    let ready = || get(&p.http_addr(), "/live/oklocal.m3u8").status == 200;
    assert!(wait_until(Duration::from_secs(30), ready), "{}\n{}", publisher.describe(), p.log_text());
    let before = hls_calls("on_play");
    assert_eq!(before, asked + 1, "{:?}", hooks.calls("on_play", "oklocal"));

    let hls = format!("http://127.0.0.1:{}/live/oklocal.m3u8", p.http);
    let played = play_frames(&hls, 100, Duration::from_secs(40)).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert!(played.frames >= 100, "{played:?}");
    assert_eq!(hls_calls("on_play"), before + 1, "{:?}", hooks.calls("on_play", "oklocal"));
    assert!(wait_until(WAIT, || hls_calls("on_stop") == before + 1), "{}", p.log_text());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(hls_calls("on_stop"), before + 1, "{}", p.log_text());
    assert!(publisher.running(), "the publisher noticed: {}", publisher.describe());
}

/// SIGTERM with live sessions still sends their end notices: ffmpeg publishes and plays over
/// RTMP through the proxy to nginx-rtmp; the proxy is stopped, the grace time (2 s) runs out
/// with both still live, the proxy ends them, and on_unpublish and on_stop reach the callback
/// server before it exits 0.
#[test]
fn sigterm_still_sends_the_end_notices() {
    let hooks = Hooks::start();
    let origin = NginxRtmp::start(4096);
    let streams = hooks.url("/api/v1/streams");
    let sessions = hooks.url("/api/v1/sessions");
    // Relayed (`--edge off`): with the edge, the shard also waits for the stream's pull to stop
    // (up to a quarter second), and the notices are usually posted before the flush has any
    // to wait for.
    let flags = ["--edge", "off", "--grace-quit-timeout", "2s", "--force-quit-timeout", "10s"];
    let p = Proxy::start(&[&flags[..], &["--on-unpublish", &streams, "--on-stop", &sessions]].concat());
    assert_eq!(register(&p.api_addr(), &origin_body("o", "s", origin.rtmp_port)).status, 200);
    let url = format!("rtmp://127.0.0.1:{}/live/okterm", p.rtmp);
    let mut publisher = Ffmpeg::publish(&url, 120);
    assert!(wait_until(WAIT, || origin.publishing("okterm")), "{}", p.log_text());
    let mut player = Ffmpeg::play(&url, 120);
    assert!(wait_until(WAIT, || player.frames() >= 10), "{}\n{}", player.describe(), p.log_text());
    let (status, took, log) = p.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(6), "exited after {took:?}\n{log}");
    assert_eq!(hooks.calls("on_unpublish", "okterm").len(), 1, "{log}");
    assert_eq!(hooks.calls("on_stop", "okterm").len(), 1, "{log}");
    assert!(log.contains("end notices before exiting"), "{log}");
    assert!(publisher.wait_timeout(WAIT).is_some() && player.wait_timeout(WAIT).is_some());
}

/// A local stream's own jobs (its HLS remux here) play it from streamgate's RTMP listener as
/// internal sessions, signed with the process's own secret: an `on_play` callback that refuses
/// every player of the stream does not stop the remux (it is never asked about it), while a
/// real RTMP player is asked and refused.
#[test]
fn a_local_streams_own_jobs_are_not_asked_of_the_callbacks() {
    let hooks = Hooks::start();
    let sessions = hooks.url("/api/v1/sessions");
    let dir = TempDir::new("jobs-hls");
    let hls_dir = dir.0.join("hls");
    let hls = hls_dir.to_string_lossy().to_string();
    let p = Proxy::start(&["--local-origin", "on", "--on-play", &sessions, "--local-hls-dir", &hls]);
    let mut publisher = Ffmpeg::publish(&format!("rtmp://127.0.0.1:{}/live/jobsonly", p.rtmp), 60);
    let playlist = hls_dir.join("jobsonly").join("index.m3u8");
    let segments = || std::fs::read_to_string(&playlist).is_ok_and(|t| t.contains("#EXTINF"));
    assert!(
        wait_until(Duration::from_secs(30), segments),
        "the remux job wrote no segment: {}\n{}",
        publisher.describe(),
        p.log_text()
    );
    assert!(hooks.calls("on_play", "jobsonly").is_empty(), "{:?}", hooks.calls("on_play", "jobsonly"));

    let url = format!("rtmp://127.0.0.1:{}/live/jobsonly", p.rtmp);
    assert!(ffprobe_streams(&url, Duration::from_secs(10)).is_err(), "the callback let a player in");
    let asked = hooks.calls("on_play", "jobsonly");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["protocol"], "rtmp", "{asked:?}");
    assert!(publisher.running(), "the publisher noticed: {}", publisher.describe());
}
