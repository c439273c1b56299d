//! Redis mode when the fleet and Redis misbehave, against real peers (a `redis-server` per test,
//! nginx-rtmp origins, ffmpeg): a pin another proxy moved reaches a proxy that already held the
//! stream, and a Redis that stops answering without disconnecting (`SIGSTOP`) is seen as down
//! at once and stays down until it answers again, while the running stream and the streams
//! pinned here go on.

mod common;

use std::time::{Duration, Instant};

use common::peers::{Ffmpeg, Heartbeats, NginxRtmp, probe_h264_aac};
use common::redis_server::{RedisServer, health, metric};
use common::{Proxy, get, origin_body, wait_until};

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
    assert_eq!(metric(&a, "streamgate_redis_connects_total"), Some(1.0));

    redis.pause();
    let t0 = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || metric(&a, "streamgate_redis_up") == Some(0.0)), "{}", a.log_text());
    let down_after = t0.elapsed();
    // Reconnections are tried (the kernel accepts them for the stopped server) but none counts.
    let stays_down = !wait_until(Duration::from_secs(4), || metric(&a, "streamgate_redis_up") != Some(0.0));
    assert!(stays_down, "redis counted up while it answers nothing\n{}", a.log_text());
    assert_eq!(metric(&a, "streamgate_redis_connects_total"), Some(1.0), "{}", a.log_text());
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
    assert_eq!(metric(&a, "streamgate_redis_connects_total"), Some(2.0));
    assert!(origin.publishing("hs") && publisher_running(publisher) && player.running());
    eprintln!("redis seen down {down_after:?} after SIGSTOP");
}
