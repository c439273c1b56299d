//! What the proxy does when a session's task panics or stops being woken, beside a healthy
//! stream that must not notice. The faults are injected by the debug binary
//! (`STREAMGATE_FAULT`, see `src/shard/fault.rs`): a panic right before a session's relay
//! starts, or a task that never polls its sockets again (as a lost wake-up leaves it). The
//! peers are real: ffmpeg publishes and plays through the proxy to nginx-rtmp, and ffmpeg
//! serves HTTP-FLV.

mod common;

use std::time::{Duration, Instant};

use common::http_peers::{FfmpegHttpOrigin, origin_body_http};
use common::peers::*;
use common::*;
use serde_json::Value;
use streamgate::control::grpc::proto::Empty;
use streamgate::control::grpc::proto::module_service_client::ModuleServiceClient;

const WAIT: Duration = Duration::from_secs(20);

fn total(p: &Proxy, what: &str, listener: &str) -> u64 {
    let shards = get(&p.api_addr(), "/api/v1/shards").json();
    shards["total"][what][listener].as_u64().unwrap_or_else(|| panic!("no total.{what}.{listener} in {shards}"))
}

fn sessions(p: &Proxy, stream: &str, kind: &str) -> u64 {
    let streams = get(&p.api_addr(), "/api/v1/streams").json();
    let key = format!("__defaultVhost__/live/{stream}");
    let found = streams["streams"].as_array().and_then(|a| a.iter().find(|s| s["key"] == key).cloned());
    found.and_then(|s: Value| s["sessions"][kind].as_u64()).unwrap_or(0)
}

fn health(p: &Proxy) -> (String, Vec<String>) {
    let grpc = format!("http://127.0.0.1:{}", p.grpc);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = ModuleServiceClient::connect(grpc).await.unwrap();
        let h = client.health_check(Empty {}).await.unwrap().into_inner();
        (h.status, h.errors)
    })
}

/// The sum over shards of `/metrics`'s `family` samples for `listener`.
fn metric_total(p: &Proxy, family: &str, listener: &str) -> f64 {
    let text = get(&p.api_addr(), "/metrics").body;
    let label = format!("listener=\"{listener}\"");
    let samples = text.lines().filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&label));
    samples.filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Lines of the proxy log that mention `needle`.
fn lines_with(p: &Proxy, needle: &str) -> Vec<String> {
    p.log_text().lines().filter(|l| l.contains(needle)).map(String::from).collect()
}

#[test]
fn a_panicking_or_frozen_session_is_closed_counted_logged_and_reported() {
    let origin = NginxRtmp::start(4096);
    let flv_origin = FfmpegHttpOrigin::start("flv", "/live/boomflv.flv", 60);
    let p =
        Proxy::start_with(&["--stall-timeout", "2s"], &[("STREAMGATE_FAULT", "panic:boom,freeze:stuck,panic:boomflv")]);
    let body = origin_body_http("faults", "a", origin.rtmp_port, flv_origin.port);
    assert_eq!(register(&p.api_addr(), &body).status, 200);
    let url = |stream: &str| format!("rtmp://127.0.0.1:{}/live/{stream}", p.rtmp);
    let diag = |p: &Proxy| format!("proxy log:\n{}\norigin streams: {:?}", p.log_text(), origin.streams());

    // The healthy stream, published and played through the proxy all along.
    let mut healthy = Ffmpeg::publish(&url("healthy"), 90);
    assert!(wait_until(WAIT, || origin.publishing("healthy")), "{}\n{}", healthy.describe(), diag(&p));
    let mut player = Ffmpeg::play(&url("healthy"), 90);
    assert!(wait_until(WAIT, || player.frames() > 25), "{}\n{}", player.describe(), diag(&p));
    let (status, problems) = health(&p);
    assert_eq!(status, "healthy", "{problems:?}");

    // 1. A publisher's session panics: the publisher is disconnected, the origin lets the
    //    stream name go, the panic is counted, logged once with the stream, and degrades health.
    let mut boom = Ffmpeg::publish(&url("boom"), 30);
    assert!(
        boom.wait_timeout(WAIT).is_some(),
        "the publisher of the panicked session is still connected: {}",
        diag(&p)
    );
    assert!(wait_until(WAIT, || total(&p, "panicked", "rtmp") == 1), "{}", diag(&p));
    let logged = lines_with(&p, "panic");
    assert_eq!(logged.len(), 1, "one line about the panic: {logged:#?}");
    assert!(logged[0].contains("rtmp publish __defaultVhost__/live/boom") && logged[0].contains("fault injected"));
    assert!(logged[0].contains("fault.rs:"), "the panic's place: {}", logged[0]);
    assert!(
        wait_until(WAIT, || !origin.publishing("boom") && sessions(&p, "boom", "rtmp_publish") == 0),
        "{}",
        diag(&p)
    );
    let (status, problems) = health(&p);
    assert_eq!(status, "degraded", "{problems:?}");
    assert!(problems.iter().any(|e| e.contains("after a panic")), "{problems:?}");
    assert_eq!(metric_total(&p, "streamgate_connections_panicked_total", "rtmp"), 1.0);
    assert_eq!(metric_total(&p, "streamgate_connections_stalled_total", "rtmp"), 0.0);
    // The fault fires once: the stream publishes again (the origin has let the name go).
    let mut again = Ffmpeg::publish(&url("boom"), 30);
    assert!(wait_until(WAIT, || origin.publishing("boom")), "republish: {}\n{}", again.describe(), diag(&p));
    again.kill();

    // 2. An HTTP-FLV player's session panics the same way.
    let flv_url = format!("http://127.0.0.1:{}/live/boomflv.flv", p.http);
    let mut flv = Ffmpeg::play(&flv_url, 20);
    assert!(flv.wait_timeout(WAIT).is_some(), "the HTTP-FLV player is still connected: {}", diag(&p));
    assert!(wait_until(WAIT, || total(&p, "panicked", "http_stream") == 1), "{}", diag(&p));
    assert_eq!(metric_total(&p, "streamgate_connections_panicked_total", "http_stream"), 1.0);
    assert_eq!(
        lines_with(&p, "http_flv play __defaultVhost__/live/boomflv").iter().filter(|l| l.contains("panic")).count(),
        1
    );

    // 3. A publisher's session freezes: while its publisher is connected it is left alone
    //    (idle is not stalled); once the publisher hangs up, the shard ends it within
    //    --stall-timeout and a sweep.
    let mut stuck = Ffmpeg::publish(&url("stuck"), 60);
    assert!(wait_until(WAIT, || sessions(&p, "stuck", "rtmp_publish") == 1), "{}", diag(&p));
    std::thread::sleep(Duration::from_secs(5));
    assert!(stuck.running(), "{}", stuck.describe());
    assert_eq!(total(&p, "stalled", "rtmp"), 0, "an idle session with its peers there is not stalled");
    stuck.kill();
    let killed = Instant::now();
    assert!(wait_until(WAIT, || total(&p, "stalled", "rtmp") == 1), "{}", diag(&p));
    assert!(killed.elapsed() < Duration::from_secs(8), "ended after {:?}", killed.elapsed());
    assert_eq!(metric_total(&p, "streamgate_connections_stalled_total", "rtmp"), 1.0);
    assert!(
        wait_until(WAIT, || sessions(&p, "stuck", "rtmp_publish") == 0 && !origin.publishing("stuck")),
        "{}",
        diag(&p)
    );
    let logged = lines_with(&p, "live/stuck");
    assert_eq!(logged.iter().filter(|l| l.contains("moved no byte")).count(), 1, "{logged:#?}");
    let (_, problems) = health(&p);
    assert!(problems.iter().any(|e| e.contains("ended as stalled")), "{problems:?}");

    // The healthy stream never noticed.
    let before = player.frames();
    std::thread::sleep(Duration::from_secs(3));
    assert!(player.frames() > before + 25, "the healthy player stalled: {}\n{}", player.describe(), diag(&p));
    assert!(healthy.running() && player.running(), "{}\n{}", healthy.describe(), player.describe());
    assert_eq!(sessions(&p, "healthy", "rtmp_play"), 1);

    // Nothing is left open: once the healthy peers leave, SIGTERM drains at once.
    healthy.kill();
    player.kill();
    assert!(wait_until(WAIT, || total(&p, "open_by_listener", "rtmp") == 0), "{}", diag(&p));
    let (exit, took, log) = p.stop();
    assert!(exit.success() && took < Duration::from_secs(5), "exit {exit:?} after {took:?}:\n{log}");
}
