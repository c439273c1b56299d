//! Redis mode against real peers: a `redis-server` (Debian's) started per test on a free port,
//! two streamgate instances sharing it, nginx-rtmp origins, ffmpeg/ffprobe publishing and
//! playing. What one proxy learns (an origin's heartbeat, a stream's pin, an HLS id) the other
//! uses; the keys are the SRS proxy's; Redis going away stops no running stream.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::http_peers::{NginxHls, get_full, publish_short_gop};
use common::peers::{Ffmpeg, Heartbeats, NginxRtmp, probe_h264_aac};
use common::redis_server::{RedisServer, health, metric};
use common::{Proxy, get, origin_body, register, wait_until};

fn start_proxy(redis: &RedisServer, prefix: Option<&str>) -> Proxy {
    redis.proxy(prefix, &[])
}

/// The captured SRS 7 heartbeat (bare ports) with this origin's ports.
fn srs_heartbeat(rtmp: u16, http: u16) -> String {
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/heartbeats/srs7-bare-ports.http"),
    )
    .unwrap();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_else(|| raw.split("\n\n").nth(1).unwrap());
    let mut json: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    json["ip"] = "127.0.0.1".into();
    json["rtmp"] = serde_json::json!([rtmp.to_string()]);
    json["http"] = serde_json::json!([http.to_string()]);
    json.to_string()
}

#[test]
fn two_proxies_share_origins_pins_and_hls_ids_in_the_srs_proxys_keys() {
    let redis = RedisServer::start();
    let origin = NginxHls::start_recording();
    let (a, b) = (start_proxy(&redis, Some("fleet")), start_proxy(&redis, Some("fleet")));
    // An SRS-format heartbeat to A only.
    assert_eq!(register(&a.api_addr(), &srs_heartbeat(origin.rtmp_port, origin.http_port)).status, 200);
    let server_key = "fleet:srs-proxy-server:vid-gy87v58-i2c42w71-16388";
    let record: serde_json::Value = serde_json::from_str(&redis.cli(&["GET", server_key])).expect("server key");
    assert_eq!((record["ip"].as_str(), record["server_id"].as_str()), (Some("127.0.0.1"), Some("vid-gy87v58")));
    assert_eq!(record["rtmp"], serde_json::json!([origin.rtmp_port.to_string()]));
    assert!(record["update_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{record}");
    let ttl: u64 = redis.cli(&["TTL", server_key]).parse().unwrap();
    assert!((290..=300).contains(&ttl), "the origin TTL, got {ttl}");
    assert_eq!(redis.cli(&["GET", "fleet:srs-proxy-all-servers"]), format!("[\"{server_key}\"]"));

    let mut publisher = publish_short_gop(&format!("rtmp://127.0.0.1:{}/live/rs", a.rtmp), 120);
    assert!(wait_until(Duration::from_secs(20), || origin.publishing("rs")), "publish via A: {}", publisher.describe());
    assert_eq!(redis.cli(&["GET", "fleet:srs-proxy-url:__defaultVhost__/live/rs"]), server_key);

    // B never got a heartbeat: RTMP and HTTP-FLV players of the stream find its origin in Redis.
    probe_h264_aac(&format!("rtmp://127.0.0.1:{}/live/rs", b.rtmp), Duration::from_secs(20)).unwrap();
    assert!(wait_until(Duration::from_secs(20), || origin.segments("rs") >= 2), "no HLS from nginx");
    probe_h264_aac(&format!("http://127.0.0.1:{}/live/rs.flv", b.http), Duration::from_secs(20)).unwrap();

    // HLS: the playlist through A, its segments alternately through B and A.
    let playlist = get_full(&a.http_addr(), "/live/rs.m3u8").unwrap();
    assert_eq!(playlist.status, 200);
    let segments: Vec<String> =
        playlist.text().lines().filter(|l| l.contains(".ts?spbhid=")).map(String::from).collect();
    assert!(segments.len() >= 2, "{}", playlist.text());
    let id = segments[0].split("spbhid=").nth(1).unwrap().to_string();
    let stored = redis.cli(&["GET", &format!("fleet:srs-proxy-spbhid:{id}")]);
    let want = format!(
        r#"{{"spbhid":"{id}","stream_url":"__defaultVhost__/live/rs","full_url":"http://__defaultVhost__/live/rs.m3u8"}}"#
    );
    assert_eq!(stored, want, "the SRS proxy's HLS record");
    assert_eq!(redis.cli(&["GET", "fleet:srs-proxy-hls:__defaultVhost__/live/rs"]), want);
    for (i, segment) in segments.iter().enumerate() {
        let proxy = if i % 2 == 0 { &b } else { &a };
        let got = get_full(&proxy.http_addr(), &format!("/live/{segment}")).unwrap();
        assert_eq!(got.status, 200, "segment {segment} via {}: {}", ["B", "A"][i % 2], got.text());
    }
    let playlist_b = get_full(&b.http_addr(), "/live/rs.m3u8").unwrap();
    assert!(playlist_b.text().contains(&format!("spbhid={id}")), "B uses the fleet's id: {}", playlist_b.text());
    assert_eq!(metric(&b, "streamgate_redis_up"), Some(1.0));
    let latency = metric(&b, "streamgate_redis_latency_seconds").unwrap();
    assert!(latency > 0.0 && latency < 1.0, "the last round trip to redis: {latency}");
    assert_eq!(metric(&b, "streamgate_redis_connects_total"), Some(1.0));
    assert!(publisher.running(), "{}", publisher.describe());
}

#[test]
fn failover_through_either_proxy_and_a_redis_outage() {
    let mut redis = RedisServer::start();
    let mut origins = [NginxRtmp::start(4096), NginxRtmp::start(4096)];
    let (a, b) = (start_proxy(&redis, None), start_proxy(&redis, None));
    let bodies = vec![origin_body("rf-a", "s", origins[0].rtmp_port), origin_body("rf-b", "s", origins[1].rtmp_port)];
    let _heartbeats = Heartbeats::start(&a.api_addr(), bodies, Duration::from_secs(1));
    assert!(wait_until(Duration::from_secs(10), || get(&b.api_addr(), "/api/v1/origins").json()["total"] == 2));

    let url = |p: &Proxy, s: &str| format!("rtmp://127.0.0.1:{}/live/{s}", p.rtmp);
    let on = |s: &str| origins.iter().position(|o| o.try_stat().is_ok() && o.publishing(s));
    let mut first = Ffmpeg::publish(&url(&a, "fx"), 120);
    assert!(wait_until(Duration::from_secs(15), || on("fx").is_some()), "{}", a.log_text());
    let dead = on("fx").unwrap();
    first.kill();
    origins[dead].kill();
    // Its heartbeats go on (a hung origin's may): the pin in Redis still names it.
    let t0 = Instant::now();
    let mut second = Ffmpeg::publish(&url(&b, "fx"), 120);
    let live = 1 - dead;
    let moved =
        wait_until(Duration::from_secs(10), || origins[live].try_stat().is_ok() && origins[live].publishing("fx"));
    assert!(moved, "publish via B did not move: {}", b.log_text());
    assert!(t0.elapsed() < Duration::from_secs(10));
    let live_key = format!("srs-proxy-server:rf-{}-s-1", ["a", "b"][live]);
    assert_eq!(redis.cli(&["GET", "srs-proxy-url:__defaultVhost__/live/fx"]), live_key, "the fleet's pin moved");
    second.kill();
    assert!(wait_until(Duration::from_secs(10), || !origins[live].publishing("fx")));
    // A still had the old pin locally: its next publish fails over too.
    let publisher = Ffmpeg::publish(&url(&a, "fx"), 120);
    assert!(wait_until(Duration::from_secs(10), || origins[live].publishing("fx")), "via A: {}", a.log_text());

    // Redis goes away mid-stream.
    let mut player = Ffmpeg::play(&url(&b, "fx"), 120);
    assert!(wait_until(Duration::from_secs(15), || player.frames() > 25), "player via B: {}", player.describe());
    redis.stop();
    assert!(wait_until(Duration::from_secs(5), || metric(&a, "streamgate_redis_up") == Some(0.0)));
    let (status, errors) = health(&a);
    assert_eq!(status, "degraded", "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("redis unavailable")), "{errors:?}");
    let before = player.frames();
    // A pin known here still serves a new player; a brand-new stream is refused with the reason.
    probe_h264_aac(&url(&a, "fx"), Duration::from_secs(20)).unwrap();
    let mut refused = Ffmpeg::publish(&url(&b, "brand-new"), 5);
    refused.wait_timeout(Duration::from_secs(20));
    assert!(!origins[live].publishing("brand-new"));
    assert!(b.log_text().contains("the shared registry (redis) is unavailable"), "{}", b.log_text());
    assert!(wait_until(Duration::from_secs(5), || player.frames() > before + 25), "the running stream stalled");
    assert!(origins[live].publishing("fx") && publisher_alive(publisher));

    // Redis comes back empty: each proxy writes back what it knows.
    redis.restart();
    assert!(wait_until(Duration::from_secs(15), || metric(&a, "streamgate_redis_up") == Some(1.0)));
    assert!(wait_until(Duration::from_secs(10), || redis.cli(&["GET", "srs-proxy-url:__defaultVhost__/live/fx"])
        == live_key));
    assert!(redis.cli(&["GET", "srs-proxy-all-servers"]).contains(&live_key));
    assert!(wait_until(Duration::from_secs(10), || health(&b).0 == "healthy"), "{:?}", health(&b));
}

fn publisher_alive(mut publisher: Ffmpeg) -> bool {
    publisher.running()
}

/// Records an SRS proxy wrote (the reference's shapes, one origin, one pin, one 7-digit HLS id)
/// are read by a streamgate that never heard a heartbeat.
#[test]
fn records_written_by_the_srs_proxy_are_read() {
    let redis = RedisServer::start();
    let origin = NginxRtmp::start(4096);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let update_at = streamgate::balance::srs_redis::rfc3339(UNIX_EPOCH + Duration::from_secs(now));
    let record = format!(
        r#"{{"ip":"127.0.0.1","device_id":"dev-x","server_id":"srv-abc","service_id":"svc-1","pid":"12345","rtmp":["{}"],"update_at":"{update_at}"}}"#,
        origin.rtmp_port
    );
    redis.cli(&["SET", "srs-proxy-server:srv-abc-svc-1-12345", &record, "EX", "300"]);
    redis.cli(&["SET", "srs-proxy-all-servers", r#"["srs-proxy-server:srv-abc-svc-1-12345"]"#]);
    redis.cli(&["SET", "srs-proxy-url:__defaultVhost__/live/fromsrs", "srs-proxy-server:srv-abc-svc-1-12345"]);
    let hls = r#"{"spbhid":"a1b2c3d","stream_url":"__defaultVhost__/live/fromsrs","full_url":"http://__defaultVhost__/live/fromsrs.m3u8"}"#;
    redis.cli(&["SET", "srs-proxy-spbhid:a1b2c3d", hls, "EX", "120"]);
    let proxy = start_proxy(&redis, None);
    assert!(wait_until(Duration::from_secs(10), || get(&proxy.api_addr(), "/api/v1/origins").json()["total"] == 1));
    let _publisher = Ffmpeg::publish(&format!("rtmp://127.0.0.1:{}/live/fromsrs", proxy.rtmp), 60);
    assert!(wait_until(Duration::from_secs(15), || origin.publishing("fromsrs")), "{}", proxy.log_text());
    // The SRS proxy's HLS id names the stream: a segment request with it reaches the origin
    // (which has no HTTP endpoint registered: 502 naming it, not 400 for an unknown id).
    let segment = get(&proxy.http_addr(), "/live/fromsrs-1.ts?spbhid=a1b2c3d");
    assert_eq!(segment.status, 502, "{}", segment.body);
    assert!(segment.body.contains("no HTTP endpoint"), "{}", segment.body);
    assert_eq!(get(&proxy.http_addr(), "/live/fromsrs-1.ts?spbhid=ffffff0").status, 400);
}

/// The pin script is atomic in Redis: sixteen clients racing to pin one new stream, each
/// proposing another origin, all get the same answer, and a pin whose origin key is gone (or
/// that the caller saw fail) moves to the caller's proposal.
#[test]
fn racing_pins_agree_and_dead_pins_move() {
    use streamgate::control::redis::PIN_SCRIPT;
    let redis = RedisServer::start();
    for i in 0..16 {
        redis.cli(&["SET", &format!("srs-proxy-server:o{i}"), "{}", "EX", "300"]);
    }
    let port = redis.port.to_string();
    let answers: Vec<String> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..16)
            .map(|i| {
                let port = port.clone();
                scope.spawn(move || {
                    let out = Command::new("redis-cli")
                        .args(["-p", &port, "--raw", "EVAL", PIN_SCRIPT, "1", "srs-proxy-url:v/live/race"])
                        .args([format!("srs-proxy-server:o{i}"), String::new()])
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let winner = redis.cli(&["GET", "srs-proxy-url:v/live/race"]);
    assert!(winner.starts_with("srs-proxy-server:o"), "{winner}");
    assert!(answers.iter().all(|a| *a == winner), "one origin for the stream: {answers:?}");
    let eval = |proposal: &str, failed: &str| {
        redis
            .cli(&["EVAL", PIN_SCRIPT, "1", "srs-proxy-url:v/live/race", proposal, failed])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let other = if winner.ends_with(":o0") { "srs-proxy-server:o1" } else { "srs-proxy-server:o0" };
    assert_eq!(eval(other, &winner), other, "a caller that saw the pinned origin fail moves the pin");
    redis.cli(&["DEL", other]);
    assert_eq!(eval(&winner, ""), winner, "a pin whose origin key expired moves");
    assert_eq!(eval("", ""), winner);
}

/// A WHIP publisher through A, to the aiortc origin: the ICE username its answer gave out is
/// in Redis, so a connectivity check carrying it that lands on B (a client whose NAT rebinding
/// the balancer sent to the other proxy) is routed by B, which never saw the offer: B opens a
/// session to the stream's origin and relays the check, and the origin's answer comes back
/// through B. The check carries no MESSAGE-INTEGRITY (only the ICE password can write it), so
/// the origin answers with an error: the publisher's own session is not disturbed.
#[test]
fn an_ice_username_given_out_through_one_proxy_is_routed_by_the_other() {
    use common::udp_peers::{AiortcOrigin, UdpProxy, origin_body_udp, stun_binding, whip_publish};
    let redis = RedisServer::start();
    let origin = AiortcOrigin::start(1);
    let flags = redis.flags(None);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (a, b) = (UdpProxy::start(&flags), UdpProxy::start(&flags));
    let site = origin.sites[0];
    a.register(&origin_body_udp("rtc-a", &[], &[site.api], &[site.rtc.to_string()]));

    let mut publisher = whip_publish(&a.rtc_url("whip", "ice"), 20);
    let connect = Duration::from_secs(30);
    let answer = publisher.wait_event("answer", connect).unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    let username = answer["username"].as_str().expect("the answer's ICE username").to_string();
    publisher.wait_event("connected", connect).unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    let record = redis.cli(&["GET", &format!("srs-proxy-ufrag:{username}")]);
    let want = format!(r#"{{"stream_url":"__defaultVhost__/live/ice","ufrag":"{username}"}}"#);
    assert_eq!(record, want, "the SRS proxy's ICE record, written by A");

    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    // An answer from B to a binding request with this transaction id, if one comes within `wait`.
    let ask = |user: &str, txid: [u8; 12], wait: Duration| {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            client.send_to(&stun_binding(user.as_bytes(), txid), b.webrtc_addr()).unwrap();
            while let Ok((n, from)) = client.recv_from(&mut buf) {
                if from == b.webrtc_addr() && n >= 20 && buf[8..20] == txid {
                    return Some(u16::from_be_bytes([buf[0], buf[1]]));
                }
            }
        }
        None
    };
    assert_eq!(ask("nobody:knows", [1; 12], Duration::from_secs(2)), None, "B answered an unknown username");
    let kind = ask(&username, [2; 12], Duration::from_secs(10));
    assert_eq!(kind, Some(0x0111), "a Binding error response from the origin through B\n{}", b.log());
    let opened = format!(
        "webrtc play __defaultVhost__/live/ice from {} via origin rtc-a-s-1: media session opened",
        client.local_addr().unwrap()
    );
    assert!(b.p.log_text().contains(&opened), "{}", b.log());
    assert!(publisher.event("error").is_none(), "{}", publisher.describe());
}
