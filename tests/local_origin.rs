//! The local origin (`--local-origin`) end to end with real peers: ffmpeg publishes to
//! streamgate with no origin registered; ffprobe and ffmpeg play the stream over RTMP and
//! HTTP-FLV from every shard; a second publisher is refused as SRS refuses it; players end when
//! the publisher leaves; an origin registered later takes new streams while a local one stays
//! local. Which origin serves what is read from nginx-rtmp's own stat page. HLS of a local
//! stream (remuxed, no origin, no ladder) plays with ffprobe and ffmpeg and ends with its
//! publisher; with `--transcode on` a local stream gets its ladder too.

mod common;

use std::time::Duration;

use common::peers::*;
use common::rtmp_client::{Handshake, RtmpClient};
use common::udp_peers;
use common::*;
use serde_json::Value;
use streamgate::control::grpc::proto::Empty;
use streamgate::control::grpc::proto::module_service_client::ModuleServiceClient;

/// Deadline for a publish to be served (the VM is slow and shared).
const PUBLISH_WAIT: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(25);

fn rtmp_url(p: &Proxy, stream: &str) -> String {
    format!("rtmp://127.0.0.1:{}/live/{stream}", p.rtmp)
}

fn flv_url(p: &Proxy, stream: &str) -> String {
    format!("http://127.0.0.1:{}/live/{stream}.flv", p.http)
}

/// ffmpeg publishing `stream` to the proxy for `seconds`, once the proxy serves it locally.
fn publish_local(p: &Proxy, stream: &str, seconds: u32) -> Ffmpeg {
    let mut publisher = Ffmpeg::publish(&rtmp_url(p, stream), seconds);
    let line = format!("rtmp publish __defaultVhost__/live/{stream} from");
    let served = || p.log_text().lines().any(|l| l.contains(&line) && l.contains("served locally"));
    if !wait_until(PUBLISH_WAIT, served) {
        panic!("{stream} was never served locally: {}\n{}", publisher.describe(), p.log_text());
    }
    publisher
}

/// What an RTMP player read until it was told the stream ended.
#[derive(Debug)]
struct PlayEnd {
    /// Audio and video messages.
    media: usize,
    /// StreamEOF came.
    eof: bool,
    /// The message stream of `NetStream.Play.UnpublishNotify`, once it came.
    notify: Option<u32>,
    stream_id: u32,
    /// Why it stopped reading before that, and the commands it saw.
    error: Option<String>,
    seen: Vec<String>,
}

/// Reads `client`'s play until `NetStream.Play.UnpublishNotify`, the connection's end or
/// `limit`.
fn read_until_unpublish_notify(mut client: RtmpClient, limit: Duration) -> PlayEnd {
    use streamgate::codec::rtmp::Command;
    use streamgate::codec::rtmp::message::{AUDIO, USER_CONTROL, UserControl, VIDEO, parse_user_control};
    let deadline = std::time::Instant::now() + limit;
    let mut end =
        PlayEnd { media: 0, eof: false, notify: None, stream_id: client.stream_id, error: None, seen: vec![] };
    while end.notify.is_none() {
        match client.read_message(deadline) {
            Ok(m) if m.type_id == AUDIO || m.type_id == VIDEO => end.media += 1,
            Ok(m) if m.type_id == USER_CONTROL => {
                end.eof |= matches!(parse_user_control(&m.payload), Ok(UserControl::StreamEof(_)));
            }
            Ok(m) => {
                let Ok(cmd) = Command::from_message(&m) else { continue };
                let code = cmd.args.iter().find_map(|a| a.get("code")?.as_str().map(str::to_string));
                if cmd.name == "onStatus" && code.as_deref() == Some("NetStream.Play.UnpublishNotify") {
                    end.notify = Some(m.stream_id);
                }
            }
            Err(e) => {
                end.error = Some(e.to_string());
                break;
            }
        }
    }
    end.seen = client.seen;
    end
}

/// Two shards, no origin: ten ffprobe and ten ffmpeg players, half RTMP and half HTTP-FLV, all
/// at once, so that some land on the shard that does not hold the publisher (the kernel hashes
/// each connection to a shard: all twenty on the publisher's has odds of 2^-20). Every probe
/// finds H.264 and AAC, every player decodes its frames cleanly, and the stream was forwarded
/// to the other shard.
#[test]
fn a_local_stream_plays_over_rtmp_and_http_flv_on_every_shard_with_no_origin() {
    let p = Proxy::start(&["--local-origin", "auto", "--shards", "2"]);
    let _publisher = publish_local(&p, "a", 60);
    let urls = [rtmp_url(&p, "a"), flv_url(&p, "a")];
    let probes = {
        let urls = urls.clone();
        in_parallel(10, move |i| probe_h264_aac(&urls[i % 2], PROBE_TIMEOUT))
    };
    for (i, probe) in probes.into_iter().enumerate() {
        if let Err(e) = probe {
            panic!("probe {i}: {e}\n{}", p.log_text());
        }
    }
    let played = {
        let urls = urls.clone();
        in_parallel(10, move |i| play_frames(&urls[i % 2], 50, Duration::from_secs(40)))
    };
    for (i, played) in played.into_iter().enumerate() {
        match played {
            Ok(played) if played.clean(50) => {}
            other => panic!("player {i} ({}): {other:?}\n{}", urls[i % 2], p.log_text()),
        }
    }
    let log = p.log_text();
    assert!(
        log.contains("local __defaultVhost__/live/a: players on shard"),
        "never forwarded to another shard:\n{log}"
    );
    assert!(log.contains("rtmp play") && log.contains("http_flv play"), "{log}");
}

/// One shard: a second publisher of the live local stream gets `NetStream.Publish.BadName`;
/// the publisher leaves and its RTMP and HTTP-FLV players end within seconds, cleanly: ffmpeg
/// over RTMP and HTTP-FLV exits 0 with no error, curl gets a chunked HTTP-FLV body that ends
/// with its last chunk, an RTMP client reads StreamEOF and `NetStream.Play.UnpublishNotify`;
/// the key is free again for a new publisher. (No HLS job: its RTMP play would be one more
/// player.)
#[test]
fn a_second_publisher_is_refused_and_players_end_when_the_publisher_leaves() {
    let p = Proxy::start(&["--local-origin", "auto", "--shards", "1", "--local-hls-jobs", "0"]);
    let mut publisher = publish_local(&p, "b", 60);

    let mut second = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = second.publish("b", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    assert_eq!(status.code, "NetStream.Publish.BadName", "{status:?}\n{}", p.log_text());
    assert_eq!(status.level, "error", "{status:?}");

    let mut players = [Ffmpeg::play(&rtmp_url(&p, "b"), 60), Ffmpeg::play(&flv_url(&p, "b"), 60)];
    // curl keeps the raw HTTP-FLV body: a chunked one must end with its last chunk, or curl
    // fails ("transfer closed with outstanding read data remaining", exit 18).
    let tmp = TempDir::new("local-flv-end");
    let (body, head) = (tmp.0.join("b.flv"), tmp.0.join("head.txt"));
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .arg(flv_url(&p, "b"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run curl");
    // An RTMP client that reads every message (on its own thread): it must be told the stream
    // ended.
    let mut client = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = client.play("b", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    assert_eq!(status.code, "NetStream.Play.Start", "{status:?}");
    let reader = std::thread::spawn(move || read_until_unpublish_notify(client, Duration::from_secs(90)));
    assert!(wait_until(Duration::from_secs(20), || players.iter().all(|f| f.frames() >= 25)), "{}", p.log_text());
    publisher.kill();
    let [rtmp, flv] = &mut players;
    for f in [&mut *rtmp, &mut *flv] {
        let status = f.wait_timeout(Duration::from_secs(10));
        assert!(status.is_some(), "a player still runs after the publisher left: {}\n{}", f.describe(), p.log_text());
    }
    // Both players end as at the end of a file: successfully, with no read error (no "Stream
    // ends prematurely" from HTTP-FLV: the chunked body ended with its last chunk).
    for (name, f) in [("RTMP", &mut *rtmp), ("HTTP-FLV", &mut *flv)] {
        let clean = f.try_status().is_some_and(|s| s.success()) && !f.stderr_text().contains("error");
        assert!(clean, "the {name} player did not end cleanly: {}\n{}", f.describe(), p.log_text());
        assert!(!f.stderr_text().contains("prematurely"), "{name}: {}", f.describe());
    }
    let curled = curl.wait_with_output().unwrap();
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    assert!(curled.status.success(), "curl: {:?} {}\n{head}", curled.status, String::from_utf8_lossy(&curled.stderr));
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let codecs = ffprobe_streams(body.to_str().unwrap(), PROBE_TIMEOUT).unwrap();
    assert!(codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"), "{codecs:?}");
    // The RTMP client got media, then StreamEOF and onStatus NetStream.Play.UnpublishNotify on
    // its play stream, as SRS sends them when the publisher leaves, before the connection
    // closed.
    let ended = reader.join().unwrap();
    assert!(ended.media > 50 && ended.eof, "{ended:?}\n{}", p.log_text());
    assert_eq!(ended.notify, Some(ended.stream_id), "{ended:?}\n{}", p.log_text());
    let log = p.log_text();
    assert!(log.contains("(local) ended after") && log.contains("its players end"), "{log}");
    let ended = log.lines().filter(|l| l.contains("play __defaultVhost__/live/b from") && l.contains("publisher left"));
    assert_eq!(ended.count(), 4, "every player's end logged with the reason:\n{log}");

    let _again = publish_local(&p, "b2", 10);
    let _back = Ffmpeg::publish(&rtmp_url(&p, "b"), 10);
    let served = || {
        let log = p.log_text();
        log.lines()
            .filter(|l| l.contains("rtmp publish __defaultVhost__/live/b from") && l.contains("served locally"))
            .count()
            >= 2
    };
    assert!(wait_until(PUBLISH_WAIT, served), "the key was not free again:\n{}", p.log_text());
}

/// `--local-origin auto`: a stream published with no origin is local; an origin registered
/// later takes new streams, while the local one stays local (and playable) until its publisher
/// leaves. `/api/v1/streams` (`local`) and GetRoutes (`source`, `status`) tell them apart.
#[test]
fn an_origin_registered_later_takes_new_streams_while_a_local_one_stays_local() {
    let p = Proxy::start(&["--local-origin", "auto", "--shards", "1"]);
    let _local = publish_local(&p, "c", 60);
    let origin = NginxRtmp::start(4096);
    assert_eq!(register(&p.api_addr(), &origin_body("o", "s", origin.rtmp_port)).status, 200);
    wait_proven(&p.api_addr(), &["o-s-1"]);
    let _relayed = Ffmpeg::publish(&rtmp_url(&p, "d"), 60);
    assert!(wait_until(PUBLISH_WAIT, || origin.publishing("d")), "d never reached the origin\n{}", p.log_text());
    if let Err(e) = probe_h264_aac(&rtmp_url(&p, "c"), PROBE_TIMEOUT) {
        panic!("the local stream stopped playing: {e}\n{}", p.log_text());
    }
    assert!(!origin.publishing("c"), "the local stream moved to the origin");

    // /api/v1/streams and GetRoutes tell the local stream from the relayed one.
    let local = |stream: &str| {
        let streams = get(&p.api_addr(), "/api/v1/streams").json();
        let key = format!("__defaultVhost__/live/{stream}");
        streams["streams"].as_array().and_then(|l| l.iter().find(|s| s["key"] == key).map(|s| s["local"].clone()))
    };
    assert!(wait_until(Duration::from_secs(5), || local("c") == Some(Value::Bool(true))), "c: {:?}", local("c"));
    assert_eq!(local("d"), Some(Value::Bool(false)));
    let routes = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let mut client = ModuleServiceClient::connect(format!("http://127.0.0.1:{}", p.grpc)).await.unwrap();
        client.get_routes(Empty {}).await.unwrap().into_inner().routes
    });
    let route = |stream: &str| routes.iter().find(|r| r.stream_key.ends_with(&format!("/live/{stream}"))).unwrap();
    assert_eq!(route("c").source, format!("rtmp://127.0.0.1:{}/live/c", p.rtmp), "{routes:?}");
    assert_eq!(route("c").status, "active", "{routes:?}");
    assert_eq!(route("d").source, format!("rtmp://127.0.0.1:{}/live/d", origin.rtmp_port), "{routes:?}");
}

fn hls_url(p: &Proxy, stream: &str) -> String {
    format!("http://127.0.0.1:{}/live/{stream}.m3u8", p.http)
}

/// The segment names of a playlist.
fn segments(playlist: &str) -> Vec<String> {
    playlist.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
}

/// HLS with no origin and the ladder off: the local stream's remux job writes MPEG-TS segments
/// that the shards serve at /live/g.m3u8 (on either shard); ffprobe finds both tracks, ffmpeg
/// decodes it cleanly, the H.264 is the publisher's own (x264's ultrafast Constrained Baseline,
/// copied, not re-encoded). When the publisher leaves the playlist ends (#EXT-X-ENDLIST), then
/// the folder goes after the grace and the playlist is no longer served.
#[test]
fn a_local_stream_plays_as_hls_remuxed_and_its_playlist_ends_with_the_publisher() {
    let tmp = TempDir::new("local-hls");
    let dir = tmp.0.join("hls");
    let dir_arg = dir.to_string_lossy().to_string();
    let flags = ["--local-origin", "auto", "--shards", "2", "--local-hls-dir", &dir_arg, "--transcode-grace", "2s"];
    let p = Proxy::start(&flags);
    let mut publisher = publish_local(&p, "g", 14);
    let playlist = || get(&p.http_addr(), "/live/g.m3u8");
    if !wait_until(Duration::from_secs(30), || segments(&playlist().body).len() >= 2) {
        panic!(
            "no playlist with two segments: {:?}
{}
{}",
            playlist(),
            publisher.describe(),
            p.log_text()
        );
    }
    let reply = playlist();
    assert_eq!(reply.header("content-type").as_deref(), Some("application/vnd.apple.mpegurl"));
    assert_eq!(reply.header("access-control-allow-origin").as_deref(), Some("*"));
    assert!(reply.body.contains("#EXT-X-TARGETDURATION:2"), "{}", reply.body);
    let first = &segments(&reply.body)[0];
    assert!(first.starts_with("g-") && first.ends_with(".ts"), "{first}");
    let segment = get(&p.http_addr(), &format!("/live/{first}"));
    assert_eq!((segment.status, segment.header("content-type").as_deref()), (200, Some("video/mp2t")));

    if let Err(e) = probe_h264_aac(&hls_url(&p, "g"), PROBE_TIMEOUT) {
        panic!(
            "{e}
{}",
            p.log_text()
        );
    }
    let mut cmd = std::process::Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v", "-show_entries", "stream=profile,width,height", "-of", "csv=p=0"]);
    cmd.arg(format!("http://127.0.0.1:{}/live/{first}", p.http));
    let probed = run_with_timeout(cmd, PROBE_TIMEOUT);
    // One line per program and per stream: all the same video track.
    let lines: Vec<&str> = probed.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty() && lines.iter().all(|l| *l == "Constrained Baseline,640,360"), "{probed:?}");
    match play_frames(&hls_url(&p, "g"), 50, Duration::from_secs(40)) {
        Ok(played) if played.clean(50) => {}
        other => panic!(
            "HLS player: {other:?}
{}",
            p.log_text()
        ),
    }

    assert!(publisher.wait_timeout(Duration::from_secs(30)).is_some(), "{}", publisher.describe());
    let ended = wait_until(Duration::from_secs(10), || playlist().body.contains("#EXT-X-ENDLIST"));
    assert!(
        ended,
        "the playlist did not end: {:?}
{}",
        playlist(),
        p.log_text()
    );
    let folder = dir.join("g");
    assert!(wait_until(Duration::from_secs(15), || !folder.exists()), "{} still there", folder.display());
    assert_ne!(playlist().status, 200, "served after the folder went");
    let log = p.log_text();
    assert!(log.contains("hls g: job started, remux (copy) from rtmp://127.0.0.1:"), "{log}");
}

/// `--play-secret`: the remux job signs the URL it plays the local stream with (so HLS is
/// written although every player needs a token), and the playlist asks for a token like any
/// play: refused without one (403), served with one.
#[test]
fn with_a_play_secret_the_hls_job_signs_itself_and_players_need_a_token() {
    let p = Proxy::start(&["--local-origin", "auto", "--play-secret", "s3cret"]);
    let _publisher = publish_local(&p, "k", 30);
    let key = streamgate::balance::StreamKey::from_url("rtmp://127.0.0.1/live/k").unwrap();
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = streamgate::proxy::access::signed::sign("s3cret", &key, expires);
    let signed = format!("/live/k.m3u8?token={token}&expires={expires}");
    let ready = || segments(&get(&p.http_addr(), &signed).body).len() >= 2;
    assert!(wait_until(Duration::from_secs(30), ready), "{:?}\n{}", get(&p.http_addr(), &signed), p.log_text());
    assert_eq!(get(&p.http_addr(), "/live/k.m3u8").status, 403);
    let log = p.log_text();
    assert!(log.contains("hls k: job started, remux (copy) from rtmp://127.0.0.1:"), "{log}");
    assert!(log.contains("token=...") && !log.contains(&token), "the job's token is not logged:\n{log}");
}

/// `--transcode on` with no origin: the local stream's ladder job plays it from streamgate
/// itself, so /streams/h/master.m3u8 plays (a 640x360 source: one 360p rung) and GetRoutes
/// names streamgate's own RTMP URL as the job's source; its HLS is served beside it.
#[test]
fn a_local_stream_gets_its_ladder_with_no_origin() {
    let tmp = TempDir::new("local-abr");
    let (abr, hls) = (tmp.0.join("abr").to_string_lossy().to_string(), tmp.0.join("hls").to_string_lossy().to_string());
    let flags = [
        "--local-origin",
        "auto",
        "--transcode",
        "on",
        "--transcode-dir",
        &abr,
        "--local-hls-dir",
        &hls,
        "--preset",
        "ultrafast",
    ];
    let p = Proxy::start(&flags);
    let mut publisher = publish_local(&p, "h", 40);
    let master = format!("http://127.0.0.1:{}/streams/h/master.m3u8", p.http);
    let rung = || get(&p.http_addr(), "/streams/h/media_0.m3u8").body.matches("#EXTINF").count();
    if !wait_until(Duration::from_secs(45), || rung() >= 2) {
        panic!(
            "no ladder: {}
{}",
            publisher.describe(),
            p.log_text()
        );
    }
    let mut cmd = std::process::Command::new("ffprobe");
    cmd.args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", &master]);
    let probed = run_with_timeout(cmd, PROBE_TIMEOUT);
    let mut lines: Vec<&str> =
        probed.stdout.lines().map(|l| l.trim_end_matches(',')).filter(|l| !l.is_empty()).collect();
    lines.sort();
    lines.dedup();
    assert_eq!(
        lines,
        ["aac", "h264,640,360"],
        "{probed:?}
{}",
        p.log_text()
    );
    if let Err(e) = probe_h264_aac(&hls_url(&p, "h"), PROBE_TIMEOUT) {
        panic!(
            "{e}
{}",
            p.log_text()
        );
    }
    let routes = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let mut client = ModuleServiceClient::connect(format!("http://127.0.0.1:{}", p.grpc)).await.unwrap();
        client.get_routes(Empty {}).await.unwrap().into_inner().routes
    });
    let [route] = routes.as_slice() else { panic!("one route expected: {routes:?}") };
    assert_eq!(route.source, format!("rtmp://127.0.0.1:{}/live/h", p.rtmp), "{route:?}");
    assert_eq!(route.profiles.len(), 1, "{route:?}");
    assert!(p.log_text().contains("transcode h: job started, x264 from rtmp://127.0.0.1:"), "{}", p.log_text());
    publisher.kill();
}

/// `--local-origin off`: with no origin a publisher is refused, as before.
#[test]
fn with_the_local_origin_off_a_publisher_needs_an_origin() {
    let p = Proxy::start(&["--local-origin", "off"]);
    let mut client = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = client.publish("e", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    assert_eq!(status.code, "NetStream.Publish.BadName", "{status:?}");
    assert!(!p.log_text().contains("served locally"), "{}", p.log_text());
}

/// `--local-origin on`: a publisher is served locally even with an origin alive to take it.
#[test]
fn with_the_local_origin_on_a_publisher_stays_local_despite_an_origin() {
    let p = Proxy::start(&["--local-origin", "on"]);
    let origin = NginxRtmp::start(4096);
    assert_eq!(register(&p.api_addr(), &origin_body("o", "s", origin.rtmp_port)).status, 200);
    wait_proven(&p.api_addr(), &["o-s-1"]);
    let _local = publish_local(&p, "f", 30);
    if let Err(e) = probe_h264_aac(&flv_url(&p, "f"), PROBE_TIMEOUT) {
        panic!("{e}\n{}", p.log_text());
    }
    assert!(!origin.publishing("f"), "the stream reached the origin");
}

/// How many players of a local stream on several shards: enough that some land on the shard
/// without the publisher (all on the publisher's shard has odds of 2^-8).
const SPREAD_PLAYERS: usize = 8;

/// HTTP-FLV players of `stream`, started at once, each decoding frames until it ends.
fn flv_players(p: &Proxy, stream: &str, n: usize) -> Vec<Ffmpeg> {
    (0..n).map(|_| Ffmpeg::play(&flv_url(p, stream), 60)).collect()
}

/// SIGTERM after a local publish that ended (two shards, players forwarded to the
/// other one, no HLS job): nothing of the local stream (its forward, the edge reporter it
/// started) keeps a shard or the control thread alive, so with nothing open the proxy exits
/// 0 at once, well within the grace time, rather than at `--force-quit-timeout` with 1.
#[test]
fn sigterm_after_a_local_publish_ended_exits_0_at_once() {
    let p = Proxy::start(&[
        "--local-origin",
        "auto",
        "--shards",
        "2",
        "--local-hls-jobs",
        "0",
        "--grace-quit-timeout",
        "4s",
        "--force-quit-timeout",
        "20s",
    ]);
    let mut publisher = publish_local(&p, "q", 6);
    let mut players = flv_players(&p, "q", SPREAD_PLAYERS);
    assert!(wait_until(Duration::from_secs(20), || players.iter().all(|f| f.frames() >= 10)), "{}", p.log_text());
    assert!(publisher.wait_timeout(Duration::from_secs(30)).is_some(), "{}", publisher.describe());
    for f in &mut players {
        assert!(f.wait_timeout(Duration::from_secs(10)).is_some(), "{}\n{}", f.describe(), p.log_text());
    }
    let log = p.log_text();
    assert!(log.contains("(local) ended after"), "{log}");
    assert!(log.contains("players on shard"), "never forwarded to the other shard:\n{log}");
    let (status, took, log) = p.stop();
    assert_eq!(status.code(), Some(0), "exited after {took:?}:\n{log}");
    assert!(took < Duration::from_secs(4), "nothing was open, yet it took {took:?}:\n{log}");
    assert!(log.contains("SIGTERM received") && log.contains("stopped"), "{log}");
}

/// SIGTERM while a local stream is live, with HTTP-FLV players on both shards and its HLS job:
/// the stream goes on through the grace time, then the publisher, players and the forward
/// are closed and the proxy exits 0 soon after it.
#[test]
fn sigterm_with_a_live_local_stream_drains_for_the_grace_time_and_exits_0() {
    let p = Proxy::start(&[
        "--local-origin",
        "auto",
        "--shards",
        "2",
        "--grace-quit-timeout",
        "3s",
        "--force-quit-timeout",
        "20s",
    ]);
    let mut publisher = publish_local(&p, "r", 120);
    let mut players = flv_players(&p, "r", SPREAD_PLAYERS);
    assert!(wait_until(Duration::from_secs(20), || players.iter().all(|f| f.frames() >= 10)), "{}", p.log_text());
    assert!(p.log_text().contains("players on shard"), "never forwarded to the other shard:\n{}", p.log_text());
    let before: Vec<u64> = players.iter().map(Ffmpeg::frames).collect();
    let waiter = std::thread::spawn(move || p.stop());
    std::thread::sleep(Duration::from_secs(2));
    for (f, before) in players.iter_mut().zip(before) {
        assert!(f.running() && f.frames() > before, "a player stopped during the grace time: {}", f.describe());
    }
    let (status, took, log) = waiter.join().unwrap();
    assert_eq!(status.code(), Some(0), "exited after {took:?}:\n{log}");
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(7), "exited after {took:?}:\n{log}");
    assert!(log.contains("still open when the shutdown's grace time ran out"), "{log}");
    assert!(publisher.wait_timeout(Duration::from_secs(10)).is_some(), "publisher held after exit");
    for f in &mut players {
        assert!(f.wait_timeout(Duration::from_secs(10)).is_some(), "player held after exit: {}", f.describe());
    }
}

/// The SRT URL publishing or playing `stream` through the proxy.
fn srt_url(p: &Proxy, stream: &str, mode: &str) -> String {
    format!("srt://127.0.0.1:{}?streamid=#!::r=live/{stream},m={mode}", p.srt)
}

/// An SRT publisher with no origin: ffmpeg
/// publishes MPEG-TS over SRT to the proxy; its ingest demuxes it into the stream's ring, so
/// ffprobe finds H.264 and AAC over RTMP and HTTP-FLV, and ffmpeg plays both cleanly on either
/// shard. A second SRT publisher of the live stream is refused (SRT_REJX_CONFLICT). When the
/// SRT publisher ends, the players end cleanly and so does the ingest.
#[test]
fn an_srt_publisher_is_served_locally_and_plays_over_rtmp_and_http_flv() {
    let p = Proxy::start(&["--local-origin", "auto", "--shards", "2", "--local-hls-jobs", "0"]);
    let mut publisher = udp_peers::publish_srt(&srt_url(&p, "t", "publish"), 16);
    let served = || {
        p.log_text()
            .lines()
            .any(|l| l.contains("rtmp publish __defaultVhost__/live/t from") && l.contains("served locally"))
    };
    assert!(wait_until(PUBLISH_WAIT, served), "never served locally: {}\n{}", publisher.log_text(), p.log_text());
    assert!(p.log_text().contains("srt publish __defaultVhost__/live/t from"), "{}", p.log_text());
    // The ingest's publish starts before its first key frame reaches the ring: probing then
    // may read only metadata; the players are probed once the stream carries video.
    let video = || {
        let streams = get(&p.api_addr(), "/api/v1/streams").json();
        let list = streams["streams"].as_array().cloned().unwrap_or_default();
        list.iter().any(|s| s["key"] == "__defaultVhost__/live/t" && s["media"]["video_frames"].as_u64() > Some(0))
    };
    assert!(wait_until(PUBLISH_WAIT, video), "no video published: {}", get(&p.api_addr(), "/api/v1/streams").body);
    let urls = [rtmp_url(&p, "t"), flv_url(&p, "t")];
    let probes = {
        let urls = urls.clone();
        in_parallel(4, move |i| probe_h264_aac(&urls[i % 2], PROBE_TIMEOUT))
    };
    for (i, probe) in probes.into_iter().enumerate() {
        if let Err(e) = probe {
            panic!("probe {i} ({}): {e}\n{}", urls[i % 2], p.log_text());
        }
    }
    let mut second = udp_peers::publish_srt(&srt_url(&p, "t", "publish"), 5);
    assert!(second.wait_timeout(Duration::from_secs(15)).is_some_and(|s| !s.success()), "{}", second.log_text());
    let refused = p.log_text().contains("srt publish __defaultVhost__/live/t from")
        && p.log_text().contains("refused: the stream is already published here (local)");
    assert!(refused, "{}", p.log_text());
    let mut players: Vec<Ffmpeg> = (0..4).map(|i| Ffmpeg::play(&urls[i % 2], 60)).collect();
    assert!(wait_until(Duration::from_secs(20), || players.iter().all(|f| f.frames() >= 25)), "{}", p.log_text());
    assert!(publisher.wait_timeout(Duration::from_secs(30)).is_some(), "{}", publisher.log_text());
    for f in &mut players {
        assert!(f.wait_timeout(Duration::from_secs(15)).is_some(), "{}\n{}", f.describe(), p.log_text());
        let clean = f.try_status().is_some_and(|s| s.success()) && !f.stderr_text().contains("error");
        assert!(clean, "a player did not end cleanly: {}\n{}", f.describe(), p.log_text());
        assert!(f.frames() >= 100, "{}", f.describe());
    }
    let log = p.log_text();
    assert!(log.contains("players on shard"), "never forwarded to the other shard:\n{log}");
    assert!(
        wait_until(Duration::from_secs(10), || p.log_text().contains("srt ingest __defaultVhost__/live/t: ")
            && p.log_text().contains("ended")),
        "{}",
        p.log_text()
    );
}

/// HTTP-TS of a local stream (`/live/u.ts`), muxed from the ring, on either shard: ffprobe
/// finds H.264 and AAC, ffmpeg decodes it with no error (no continuity or timestamp warning:
/// it runs at `-loglevel warning`), and when the publisher leaves the players end cleanly and
/// curl's chunked body is complete and is MPEG-TS from its first byte.
#[test]
fn a_local_stream_plays_as_http_ts_and_ends_cleanly() {
    let p = Proxy::start(&["--local-origin", "auto", "--shards", "2", "--local-hls-jobs", "0"]);
    let mut publisher = publish_local(&p, "u", 14);
    let ts = format!("http://127.0.0.1:{}/live/u.ts", p.http);
    let probes = {
        let ts = ts.clone();
        in_parallel(4, move |_| probe_h264_aac(&ts, PROBE_TIMEOUT))
    };
    for probe in probes {
        if let Err(e) = probe {
            panic!("{e}\n{}", p.log_text());
        }
    }
    let tmp = TempDir::new("local-ts");
    let body = tmp.0.join("u.ts");
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(&body)
        .arg(&ts)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut players: Vec<Ffmpeg> =
        (0..4).map(|_| Ffmpeg::spawn("ffmpeg-ts", &["-loglevel", "warning", "-i", &ts, "-f", "null", "-"])).collect();
    assert!(wait_until(Duration::from_secs(20), || players.iter().all(|f| f.frames() >= 50)), "{}", p.log_text());
    assert!(publisher.wait_timeout(Duration::from_secs(30)).is_some(), "{}", publisher.describe());
    for f in &mut players {
        assert!(f.wait_timeout(Duration::from_secs(15)).is_some(), "{}\n{}", f.describe(), p.log_text());
        let clean = f.try_status().is_some_and(|s| s.success()) && f.stderr_text().trim().is_empty();
        assert!(clean, "an HTTP-TS player did not end cleanly: {}\n{}", f.describe(), p.log_text());
    }
    let curled = curl.wait_with_output().unwrap();
    assert!(curled.status.success(), "curl: {:?} {}", curled.status, String::from_utf8_lossy(&curled.stderr));
    let bytes = std::fs::read(&body).unwrap();
    assert!(bytes.len() > 188 * 100 && bytes.len().is_multiple_of(188), "{} bytes", bytes.len());
    assert!(bytes.chunks(188).all(|packet| packet[0] == 0x47), "not 188-byte TS packets");
    let log = p.log_text();
    assert!(log.contains("http_ts play __defaultVhost__/live/u from") && log.contains("publisher left"), "{log}");
}

/// An HTTP-TS player of a local stream whose audio is MP3 (the muxer carries H.264 and AAC)
/// gets 501 naming the codec and pointing at `.flv`, not a TS with the audio missing; its
/// HTTP-FLV players are served.
#[test]
fn an_http_ts_player_of_a_local_stream_in_other_codecs_is_told_why() {
    let p = Proxy::start(&["--local-origin", "on", "--shards", "1", "--local-hls-jobs", "0"]);
    let mut args = common::http_peers::with_audio(common::http_peers::test_signal_args(30), "libmp3lame");
    args.extend(["-f".to_string(), "flv".to_string(), rtmp_url(&p, "v")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut publisher = Ffmpeg::spawn("ffmpeg-pub", &args);
    let served = || p.log_text().contains("served locally");
    assert!(wait_until(PUBLISH_WAIT, served), "{}\n{}", publisher.describe(), p.log_text());
    let codecs = ffprobe_streams(&flv_url(&p, "v"), PROBE_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert!(codecs.contains(&"mp3".to_string()), "{codecs:?}");
    let reply = get(&p.http_addr(), "/live/v.ts");
    assert_eq!(reply.status, 501, "{}\n{}", reply.body, p.log_text());
    assert!(reply.body.contains("carries mp3") && reply.body.contains(".flv"), "{}", reply.body);
}

/// SRT players (`m=request`) of a local stream: each is relayed to a player job that plays the
/// stream from streamgate's RTMP listener into MPEG-TS over SRT; ffprobe finds H.264 and AAC,
/// ffmpeg decodes it, and when the publisher leaves the job closes the session and the player
/// ends (exit 0: libsrt reports the sender's close as an I/O error, which ffmpeg takes as the
/// end).
#[test]
fn srt_players_of_a_local_stream_play_it_until_the_publisher_leaves() {
    let p = Proxy::start(&["--local-origin", "auto", "--shards", "2", "--local-hls-jobs", "0"]);
    let mut publisher = publish_local(&p, "v", 14);
    let url = srt_url(&p, "v", "request");
    if let Err(e) = probe_h264_aac(&url, PROBE_TIMEOUT) {
        panic!("{e}\n{}", p.log_text());
    }
    let mut players: Vec<_> = (0..2).map(|_| udp_peers::play_srt(&url)).collect();
    assert!(wait_until(Duration::from_secs(25), || players.iter().all(|f| f.frames() >= 50)), "{}", p.log_text());
    assert!(publisher.wait_timeout(Duration::from_secs(30)).is_some(), "{}", publisher.describe());
    for f in &mut players {
        let status = f.wait_timeout(Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()), "{:?} {}\n{}", status, f.log_text(), p.log_text());
    }
    let log = p.log_text();
    assert!(
        log.contains("srt play __defaultVhost__/live/v from") && log.contains("through a job on 127.0.0.1:"),
        "{log}"
    );
}

/// How an HTTP-FLV player of `stream` receives it for `window` once it has played a second:
/// the number of bursts (reads more than [`BURST_GAP`] after the previous one) and the bytes.
fn flv_bursts(p: &Proxy, stream: &str, window: Duration) -> (usize, usize) {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", p.http)).unwrap();
    let request = format!("GET /live/{stream}.flv HTTP/1.1\r\nHost: x\r\n\r\n");
    sock.write_all(request.as_bytes()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let start = std::time::Instant::now();
    let (mut bursts, mut bytes, mut last) = (0, 0, start);
    while start.elapsed() < Duration::from_secs(1) + window {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => panic!("reading the HTTP-FLV player: {e}"),
        };
        let now = std::time::Instant::now();
        if now.duration_since(start) >= Duration::from_secs(1) {
            bytes += n;
            bursts += usize::from(now.duration_since(last) > BURST_GAP);
        }
        last = now;
    }
    (bursts, bytes)
}

/// Reads closer than this belong to one burst.
const BURST_GAP: Duration = Duration::from_millis(10);

/// `--edge-merge-write`: a player's sends each carry the merge time's worth of the stream,
/// so it receives a few bursts a second instead of one per message (compared with the same
/// stream without it).
#[test]
fn merged_writes_send_a_players_stream_in_fewer_larger_bursts() {
    let window = Duration::from_secs(4);
    let mut seen = Vec::new();
    for merge in ["0s", "300ms"] {
        let p = Proxy::start(&["--local-origin", "on", "--shards", "1", "--edge-merge-write", merge]);
        let mut publisher = publish_local(&p, "mw", 20);
        let (bursts, bytes) = flv_bursts(&p, "mw", window);
        assert!(publisher.running(), "{}", publisher.describe());
        assert!(bytes > 20_000, "merge {merge}: {bytes} bytes in {window:?}\n{}", p.log_text());
        seen.push((merge, bursts, bytes));
    }
    let (plain, merged) = (seen[0].1, seen[1].1);
    // 300 ms merges: about 13 bursts in 4 s (a little more where a merge ends just after a
    // message came); every message apart: about one per frame (25 video frames a second).
    assert!(merged <= 20, "merged writes came in {merged} bursts: {seen:?}");
    assert!(plain >= 2 * merged, "without merging {plain} bursts, with it {merged}: {seen:?}");
    eprintln!("(merge, bursts, bytes) in {window:?}: {seen:?}");
}

/// An SRT publisher's stream is taken from its first moment: an RTMP publisher of the same
/// stream arriving while the SRT ingest job is still starting (probing the caller's MPEG-TS,
/// a second or more) is refused, and the SRT publisher's stream is the one that plays.
#[test]
fn an_rtmp_publisher_cannot_take_a_stream_whose_srt_ingest_is_starting() {
    let p = Proxy::start(&["--local-origin", "on", "--local-hls-jobs", "0"]);
    let mut srt = udp_peers::publish_srt(&srt_url(&p, "w", "publish"), 20);
    let accepted = || p.log_text().contains("srt publish __defaultVhost__/live/w from");
    assert!(wait_until(PUBLISH_WAIT, accepted), "{}\n{}", srt.log_text(), p.log_text());
    // At once: the ingest has not published yet.
    let mut rtmp = Ffmpeg::publish(&rtmp_url(&p, "w"), 10);
    assert!(rtmp.wait_timeout(Duration::from_secs(20)).is_some_and(|s| !s.success()), "{}", rtmp.describe());
    let log = p.log_text();
    let rtmp_refused = log.lines().any(|l| {
        l.contains("rtmp publish __defaultVhost__/live/w from")
            && (l.contains("refused: an SRT publisher's ingest of the stream is starting")
                || l.contains("refused: the stream is already published here"))
    });
    assert!(rtmp_refused, "{log}");
    let served = || {
        p.log_text()
            .lines()
            .any(|l| l.contains("rtmp publish __defaultVhost__/live/w from 127.0.0.1") && l.contains("served locally"))
    };
    assert!(wait_until(PUBLISH_WAIT, served), "the SRT ingest never published: {}", p.log_text());
    assert!(srt.running(), "{}", srt.log_text());
    let mut player = Ffmpeg::play(&rtmp_url(&p, "w"), 20);
    assert!(wait_until(Duration::from_secs(20), || player.frames() >= 25), "{}\n{}", player.describe(), p.log_text());
}
