//! Redis mode in a fleet, against real peers (a `redis-server` per test, nginx-rtmp origins,
//! ffmpeg): an established stream's players and HLS segments ask neither Redis nor the control
//! thread, a pin another proxy moved reaches a proxy that already held the stream, and a Redis
//! that stops answering without disconnecting (`SIGSTOP`) is seen as down at once and stays
//! down until it answers again, while the running stream and the streams pinned here go on; a
//! password and a database other than 0 are used, and an unregistration reaches every proxy.

mod common;

use std::time::{Duration, Instant};

use common::http_peers::{NginxHls, get_full, publish_short_gop};
use common::peers::{Ffmpeg, Heartbeats, NginxRtmp, ffprobe_many, probe_h264_aac};
use common::redis_server::{RedisServer, health, metric};
use common::{Proxy, get, origin_body, register, wait_until};
use serde_json::Value;

fn rtmp_url(proxy: &Proxy, stream: &str) -> String {
    format!("rtmp://127.0.0.1:{}/live/{stream}", proxy.rtmp)
}

/// The origin `/api/v1/streams` shows `stream` pinned to.
fn pinned_to(proxy: &Proxy, stream: &str) -> Option<String> {
    let streams = get(&proxy.api_addr(), "/api/v1/streams").json();
    let key = format!("__defaultVhost__/live/{stream}");
    let found = streams["streams"].as_array()?.iter().find(|s| s["key"] == key.as_str())?.clone();
    found["origin"].as_str().map(String::from)
}

/// Each shard's `control_asks` (`GET /api/v1/shards`) from reports sent after `since`.
fn control_asks(proxy: &Proxy, since: Instant) -> Vec<Value> {
    let mut shards = Vec::new();
    let reported = wait_until(Duration::from_secs(5), || {
        shards = get(&proxy.api_addr(), "/api/v1/shards").json()["shards"].as_array().cloned().unwrap_or_default();
        let age = since.elapsed().as_secs_f64() - 0.05;
        !shards.is_empty() && shards.iter().all(|s| s["report_age_seconds"].as_f64().is_some_and(|a| a < age))
    });
    assert!(reported, "no fresh shard reports: {shards:?}");
    shards.iter().map(|s| s["control_asks"].clone()).collect()
}

fn asked(shards: &[Value], kind: &str) -> u64 {
    shards.iter().map(|s| s[kind].as_u64().unwrap()).sum()
}

/// Shards answer an established stream's new players and its HLS playlist and segment requests
/// from their own snapshot (the pins and HLS ids the control thread pushes): B, which learned
/// the stream's pin and HLS id through Redis for its first player and first playlist, asks its
/// control thread nothing more for 4 RTMP and 4 HTTP-FLV players and 4 playlist and 8 segment
/// requests (`control_asks` per shard in `/api/v1/shards` and `/metrics`).
#[test]
fn an_established_streams_players_and_segments_ask_the_control_thread_nothing() {
    let redis = RedisServer::start();
    let origin = NginxHls::start_recording();
    let (a, b) = (redis.proxy(None, &[]), redis.proxy(None, &[]));
    let body = format!(
        r#"{{"device_id":"hls","ip":"127.0.0.1","server":"hls","service":"s","pid":"1","rtmp":["{}"],"http":["{}"]}}"#,
        origin.rtmp_port, origin.http_port
    );
    assert_eq!(register(&a.api_addr(), &body).status, 200);
    let _publisher = publish_short_gop(&rtmp_url(&a, "ca"), 60);
    assert!(wait_until(Duration::from_secs(20), || origin.segments("ca") >= 2), "no HLS from nginx");

    probe_h264_aac(&rtmp_url(&b, "ca"), Duration::from_secs(20)).unwrap();
    let playlist = get_full(&b.http_addr(), "/live/ca.m3u8").unwrap();
    assert_eq!(playlist.status, 200, "{}", playlist.text());
    let before = control_asks(&b, Instant::now());
    assert_eq!((asked(&before, "claim"), asked(&before, "hls_claim")), (1, 1), "B's first player and playlist ask");

    let flv = format!("http://127.0.0.1:{}/live/ca.flv", b.http);
    for url in [rtmp_url(&b, "ca"), flv] {
        for probe in ffprobe_many(&url, 4, Duration::from_secs(20)) {
            probe.unwrap_or_else(|e| panic!("{url}: {e}\n{}", b.log_text()));
        }
    }
    let segments: Vec<String> =
        playlist.text().lines().filter(|l| l.contains(".ts?spbhid=")).map(String::from).collect();
    assert!(segments.len() >= 2, "{}", playlist.text());
    for _ in 0..4 {
        assert_eq!(get_full(&b.http_addr(), "/live/ca.m3u8").unwrap().status, 200);
    }
    for segment in segments.iter().cycle().take(8) {
        let got = get_full(&b.http_addr(), &format!("/live/{segment}")).unwrap();
        assert_eq!(got.status, 200, "{segment}: {}", got.text());
    }
    let after = control_asks(&b, Instant::now());
    assert_eq!(before, after, "the shards asked the control thread for an established stream");
    let claims = metric(&b, "streamgate_control_asks_total{shard=\"0\",kind=\"claim\"}").unwrap();
    assert_eq!(claims, before[0]["claim"].as_u64().unwrap() as f64);
}

/// A pins a stream; then the fleet's pin moves (as another proxy's failover, or another proxy's
/// pin kept over A's at a write-back, would move it: here `redis-cli SET`). A's next player of
/// the stream goes to the fleet's origin within seconds, though A never had to ask Redis about
/// the stream again; A's running publisher stays where it is.
#[test]
fn a_pin_the_fleet_moved_is_adopted_by_the_proxy_that_held_it() {
    let redis = RedisServer::start();
    let origins = [NginxRtmp::start(4096), NginxRtmp::start(4096)];
    let a = redis.proxy(None, &[]);
    let bodies = vec![origin_body("pm-a", "s", origins[0].rtmp_port), origin_body("pm-b", "s", origins[1].rtmp_port)];
    let _heartbeats = Heartbeats::start(&a.api_addr(), bodies, Duration::from_secs(1));
    assert!(wait_until(Duration::from_secs(10), || get(&a.api_addr(), "/api/v1/origins").json()["total"] == 2));

    let publisher = Ffmpeg::publish(&rtmp_url(&a, "pm"), 60);
    let on = |s: &str| origins.iter().position(|o| o.publishing(s));
    assert!(wait_until(Duration::from_secs(15), || on("pm").is_some()), "{}", a.log_text());
    let (old, new) = (on("pm").unwrap(), 1 - on("pm").unwrap());
    let ids = ["pm-a-s-1", "pm-b-s-1"];
    assert_eq!(redis.cli(&["GET", "srs-proxy-url:__defaultVhost__/live/pm"]), format!("srs-proxy-server:{}", ids[old]));

    redis.cli(&["SET", "srs-proxy-url:__defaultVhost__/live/pm", &format!("srs-proxy-server:{}", ids[new])]);
    let t0 = Instant::now();
    let adopted = wait_until(Duration::from_secs(5), || pinned_to(&a, "pm").as_deref() == Some(ids[new]));
    assert!(adopted, "A still pins pm to {:?}\n{}", pinned_to(&a, "pm"), a.log_text());
    let moved = format!("stream __defaultVhost__/live/pm: the fleet pinned it to origin {}", ids[new]);
    assert!(a.log_text().contains(&moved), "{}", a.log_text());
    let _player = Ffmpeg::play(&rtmp_url(&a, "pm"), 30);
    let landed = wait_until(Duration::from_secs(10), || origins[new].players("pm") == 1);
    assert!(landed, "the next player via A did not reach the fleet's origin\n{}", a.log_text());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(origins[old].players("pm"), 0);
    assert!(origins[old].publishing("pm") && publisher_running(publisher), "the live publisher stays on its origin");
}

fn publisher_running(mut publisher: Ffmpeg) -> bool {
    publisher.running()
}

/// Redis stops answering without closing its connections (`SIGSTOP`): within seconds
/// `streamgate_redis_up` is 0 and stays 0 (no reconnection counts as up before Redis has
/// answered), HealthCheck says degraded, the running stream goes on, a new player of the stream
/// pinned here is served, a brand-new stream is refused at once with the reason. `SIGCONT`:
/// up and healthy again within seconds.
#[test]
fn a_hung_redis_is_down_until_it_answers_and_pinned_streams_go_on() {
    let redis = RedisServer::start();
    let origin = NginxRtmp::start(4096);
    let a = redis.proxy(None, &[]);
    let _heartbeats =
        Heartbeats::start(&a.api_addr(), vec![origin_body("hung", "s", origin.rtmp_port)], Duration::from_secs(1));
    assert!(wait_until(Duration::from_secs(10), || get(&a.api_addr(), "/api/v1/origins").json()["total"] == 1));
    let publisher = Ffmpeg::publish(&rtmp_url(&a, "hs"), 60);
    assert!(wait_until(Duration::from_secs(15), || origin.publishing("hs")), "{}", a.log_text());
    let mut player = Ffmpeg::play(&rtmp_url(&a, "hs"), 60);
    assert!(wait_until(Duration::from_secs(15), || player.frames() > 25), "{}", player.describe());
    let connects = metric(&a, "streamgate_redis_connects_total").unwrap();

    redis.pause();
    let t0 = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || metric(&a, "streamgate_redis_up") == Some(0.0)), "{}", a.log_text());
    let down_after = t0.elapsed();
    // Reconnections are tried (the kernel accepts them for the stopped server) but none counts.
    let stays_down = !wait_until(Duration::from_secs(4), || metric(&a, "streamgate_redis_up") != Some(0.0));
    assert!(stays_down, "redis counted up while it answers nothing\n{}", a.log_text());
    assert_eq!(metric(&a, "streamgate_redis_connects_total"), Some(connects), "{}", a.log_text());
    let (status, errors) = health(&a);
    assert_eq!(status, "degraded", "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("redis unavailable")), "{errors:?}");

    let before = player.frames();
    probe_h264_aac(&rtmp_url(&a, "hs"), Duration::from_secs(20)).unwrap();
    let t1 = Instant::now();
    let mut refused = Ffmpeg::publish(&rtmp_url(&a, "brand-new"), 5);
    assert!(refused.wait_timeout(Duration::from_secs(10)).is_some_and(|s| !s.success()), "{}", refused.describe());
    assert!(t1.elapsed() < Duration::from_secs(5), "refused after {:?}", t1.elapsed());
    assert!(!origin.publishing("brand-new"));
    assert!(a.log_text().contains("the shared registry (redis) is unavailable"), "{}", a.log_text());
    assert!(wait_until(Duration::from_secs(5), || player.frames() > before + 25), "the running stream stalled");

    redis.resume();
    assert!(wait_until(Duration::from_secs(10), || metric(&a, "streamgate_redis_up") == Some(1.0)), "{}", a.log_text());
    assert!(wait_until(Duration::from_secs(5), || health(&a).0 == "healthy"), "{:?}", health(&a));
    assert_eq!(metric(&a, "streamgate_redis_connects_total"), Some(connects + 1.0));
    assert!(origin.publishing("hs") && publisher_running(publisher) && player.running());
    eprintln!("redis seen down {down_after:?} after SIGSTOP");
}

/// A Redis with `--requirepass`, used on database 3 (`PROXY_REDIS_PASSWORD`, `PROXY_REDIS_DB`
/// from the environment): both proxies connect and write there, not in database 0; a proxy
/// with a wrong password is down with the reason. An origin registered through A and then
/// unregistered through A leaves B within seconds (its key is deleted; B's sync sees it gone).
#[test]
fn password_and_database_from_the_environment_and_an_unregistration_reaches_the_fleet() {
    let redis = RedisServer::start_with_password(Some("s3cret pass"));
    let flags = redis.flags(None);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let env = [("PROXY_REDIS_PASSWORD", "s3cret pass"), ("PROXY_REDIS_DB", "3")];
    let (a, b) = (Proxy::start_with(&flags, &env), Proxy::start_with(&flags, &env));
    let wrong = Proxy::start_with(&flags, &[("PROXY_REDIS_PASSWORD", "wrong"), ("PROXY_REDIS_DB", "3")]);
    let origin = NginxRtmp::start(4096);
    assert_eq!(register(&a.api_addr(), &origin_body("un", "s", origin.rtmp_port)).status, 200);
    let origins = |p: &Proxy| get(&p.api_addr(), "/api/v1/origins").json()["total"].as_u64();
    assert!(wait_until(Duration::from_secs(5), || origins(&b) == Some(1)), "{}", b.log_text());
    assert!(redis.cli_db(3, &["GET", "srs-proxy-server:un-s-1"]).contains("\"server_id\":\"un\""));
    assert_eq!(redis.cli_db(0, &["DBSIZE"]), "0", "nothing written to database 0");
    let _publisher = Ffmpeg::publish(&rtmp_url(&b, "db"), 30);
    assert!(wait_until(Duration::from_secs(15), || origin.publishing("db")), "{}", b.log_text());
    assert_eq!(redis.cli_db(3, &["GET", "srs-proxy-url:__defaultVhost__/live/db"]), "srs-proxy-server:un-s-1");
    assert_eq!(metric(&a, "streamgate_redis_up"), Some(1.0));
    assert_eq!(metric(&wrong, "streamgate_redis_up"), Some(0.0));
    // (Unhealthy, not just degraded: it knows no origin either, as it cannot read the fleet's.)
    let (status, errors) = health(&wrong);
    assert_eq!(status, "unhealthy", "{errors:?}");
    let refused = |e: &String| e.contains("redis unavailable") && e.contains("Password authentication failed");
    assert!(errors.iter().any(refused), "{errors:?}");

    let unregister = common::request(
        "POST",
        "/api/v1/srs/unregister",
        &[("Content-Type", "application/json")],
        r#"{"id":"un-s-1"}"#,
    );
    let reply = common::raw_http(&a.api_addr(), &unregister);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(origins(&a), Some(0));
    assert_eq!(redis.cli_db(3, &["EXISTS", "srs-proxy-server:un-s-1"]), "0");
    assert_eq!(redis.cli_db(3, &["GET", "srs-proxy-all-servers"]), "[]");
    let t0 = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || origins(&b) == Some(0)), "{}", b.log_text());
    assert!(b.log_text().contains("origin un-s-1 left the fleet (its redis key is gone)"), "{}", b.log_text());
    eprintln!("the unregistration reached B after {:?}", t0.elapsed());
}
