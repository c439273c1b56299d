//! Faults with real peers, each next to a healthy stream in the same proxy that must not
//! notice: an origin killed mid-stream, an origin that accepts and never answers, one that
//! resets after its first bytes, a player that stops reading (the proxy's memory stays flat),
//! 10,000 connections at once (none lost: past the cap they wait in the backlog), and SIGTERM
//! with live streams (they run through the grace time, new clients are refused, exit 0).
//!
//! Peers: nginx-rtmp origins, ffmpeg publishers and players, a hand-made RTMP player
//! (`common::rtmp_client`) that stops reading, and, for misbehaviour a real origin does not
//! show on demand, in-test TCP origins that never answer or reset.
//!
//! Covered elsewhere, not repeated here: running out of descriptors (`tests/limits.rs`, the
//! proxy's limit lowered with prlimit, clean refusal and recovery), a killed origin's stream
//! moving to another origin on the next publish (`tests/failover.rs`) and under edge players
//! (`tests/edge.rs`), panicking and frozen sessions (`tests/session_faults.rs`).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::peers::*;
use common::rtmp_client::{Handshake, RtmpClient};
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn shards(p: &Proxy) -> Value {
    get(&p.api_addr(), "/api/v1/shards").json()
}

fn open_rtmp(p: &Proxy) -> u64 {
    shards(p)["total"]["open_by_listener"]["rtmp"].as_u64().unwrap_or(u64::MAX)
}

fn key(stream: &str) -> String {
    format!("__defaultVhost__/live/{stream}")
}

/// A stream name the proxy's rendezvous hashing puts on `want` first and, among the rest, on
/// `then` (when given).
fn name_for(prefix: &str, ids: &[&str], want: &str, then: Option<&str>) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| {
            let k = key(n);
            let rest: Vec<&str> = ids.iter().copied().filter(|id| *id != want).collect();
            rendezvous_pick(&k, ids) == want && then.is_none_or(|t| rendezvous_pick(&k, &rest) == t)
        })
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Waits until `player` decodes more frames than now, within `within`.
fn still_playing(player: &Ffmpeg, within: Duration) -> bool {
    let before = player.frames();
    wait_until(within, || player.frames() > before)
}

#[test]
fn an_origin_killed_mid_stream_ends_only_its_sessions() {
    let mut doomed = NginxRtmp::start(4096);
    let alive = NginxRtmp::start(4096);
    // Relayed players (`--edge off`) end with their origin; the edge's move to another
    // (tests/edge.rs).
    let p = Proxy::start(&["--edge", "off"]);
    let api = p.api_addr();
    assert_eq!(register(&api, &origin_body("doomed", "s", doomed.rtmp_port)).status, 200);
    assert_eq!(register(&api, &origin_body("alive", "s", alive.rtmp_port)).status, 200);
    let ids = ["doomed-s-1", "alive-s-1"];
    wait_proven(&api, &ids);
    let (victim, healthy) = (name_for("v", &ids, ids[0], None), name_for("h", &ids, ids[1], None));
    let url = |s: &str| format!("rtmp://127.0.0.1:{}/live/{s}", p.rtmp);

    let mut pubs = [Ffmpeg::publish(&url(&victim), 90), Ffmpeg::publish(&url(&healthy), 90)];
    assert!(wait_until(WAIT, || doomed.publishing(&victim) && alive.publishing(&healthy)), "{}", p.log_text());
    let mut players = [Ffmpeg::play(&url(&victim), 90), Ffmpeg::play(&url(&healthy), 90)];
    assert!(wait_until(WAIT, || doomed.players(&victim) == 1 && alive.players(&healthy) == 1));
    assert!(still_playing(&players[0], WAIT) && still_playing(&players[1], WAIT));
    assert!(wait_until(WAIT, || open_rtmp(&p) == 4), "{}", shards(&p));

    doomed.kill();
    let t0 = Instant::now();
    // Both sessions of the killed origin end (their clients see the close) within seconds.
    assert!(pubs[0].wait_timeout(WAIT).is_some(), "the victim's publisher was held: {}", p.log_text());
    assert!(players[0].wait_timeout(WAIT).is_some(), "the victim's player was held: {}", p.log_text());
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    assert!(wait_until(WAIT, || open_rtmp(&p) == 2), "connections left open: {}", shards(&p));
    let streams = get(&api, "/api/v1/streams").json();
    let victim_stream = streams["streams"].as_array().unwrap().iter().find(|s| s["key"] == key(&victim)).cloned();
    let sessions = victim_stream.map(|s| s["sessions"].clone()).unwrap_or(Value::Null);
    assert!(
        wait_until(WAIT, || {
            let s = get(&api, "/api/v1/streams").json();
            let v = s["streams"].as_array().unwrap().iter().find(|s| s["key"] == key(&victim)).cloned();
            v.is_none_or(|v| v["sessions"].as_object().is_none_or(|m| m.values().all(|n| n == 0)))
        }),
        "sessions still counted: {sessions}"
    );
    let log = p.log_text();
    let ended: Vec<&str> = log.lines().filter(|l| l.contains(&key(&victim)) && l.contains("origin")).collect();
    assert!(ended.len() >= 2, "no log line for the victim's sessions:\n{log}");

    // The healthy stream never noticed.
    assert!(still_playing(&players[1], WAIT), "{}", players[1].describe());
    assert!(pubs[1].running() && players[1].running());
}

/// An origin for misbehaviour a real one does not show on demand: for each connection it
/// reads what comes, then never answers (`reply` `None`) or sends `reply` and resets the
/// connection (RST, linger 0). Connections are held by the thread until the test ends.
fn fake_origin(reply: Option<&'static [u8]>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            let mut conn: TcpStream = conn;
            let Some(reply) = reply else {
                held.push(conn);
                continue;
            };
            std::thread::spawn(move || {
                let mut b = [0u8; 4096];
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                if matches!(conn.read(&mut b), Ok(n) if n > 0) {
                    let _ = conn.write_all(reply);
                    std::thread::sleep(Duration::from_millis(100));
                    let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
                }
            });
        }
    });
    port
}

#[test]
fn origins_that_never_answer_or_reset_early_fail_only_their_sessions() {
    let real = NginxRtmp::start(4096);
    let (silent, silent_http) = (fake_origin(None), fake_origin(None));
    // S0 and the start of S1, then a reset; an HTTP head cut short, then a reset.
    let (reset, reset_http) =
        (fake_origin(Some(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3])), fake_origin(Some(b"HTTP/1.1 200 OK\r\nContent-Ty")));
    // Relayed HTTP players (`--edge off`) get the origin's failure as 504/502; an edge player
    // would wait while the pull tries the other origins (`--edge-stall-timeout`, tests/edge.rs).
    let p = Proxy::start(&["--edge", "off", "--rtmp-dial-timeout", "2s", "--http-origin-timeout", "2s"]);
    let api = p.api_addr();
    let body = |server: &str, rtmp: u16, http: u16| common::http_peers::origin_body_http(server, "s", rtmp, http);
    assert_eq!(register(&api, &body("real", real.rtmp_port, reset_http)).status, 200);
    assert_eq!(register(&api, &body("silent", silent, silent_http)).status, 200);
    assert_eq!(register(&api, &body("reset", reset, reset_http)).status, 200);
    let ids = ["real-s-1", "silent-s-1", "reset-s-1"];
    wait_proven(&api, &ids);
    let url = |s: &str| format!("rtmp://127.0.0.1:{}/live/{s}", p.rtmp);

    let healthy = name_for("h", &ids, "real-s-1", None);
    let _publisher = Ffmpeg::publish(&url(&healthy), 90);
    assert!(wait_until(WAIT, || real.publishing(&healthy)), "{}", p.log_text());
    let player = Ffmpeg::play(&url(&healthy), 90);
    assert!(still_playing(&player, WAIT), "{}", p.log_text());

    // HTTP: a silent origin is a 504 after --http-origin-timeout, a reset one a 502 at once.
    let http = format!("127.0.0.1:{}", p.http);
    let t0 = Instant::now();
    let quiet = get(&http, &format!("/live/{}.flv", name_for("q", &ids, "silent-s-1", None)));
    assert_eq!(quiet.status, 504, "{quiet:?}");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    let t0 = Instant::now();
    let cut = get(&http, &format!("/live/{}.flv", name_for("c", &ids, "reset-s-1", None)));
    assert_eq!(cut.status, 502, "{cut:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    // RTMP: an origin that resets during the handshake refuses the publisher at once.
    let mut refused = Ffmpeg::publish(&url(&name_for("r", &ids, "reset-s-1", Some("real-s-1"))), 10);
    let status = refused.wait_timeout(Duration::from_secs(10));
    assert!(status.is_some_and(|s| !s.success()), "a reset origin held the publisher: {}", p.log_text());
    // RTMP: an origin that accepts and never answers is given up after --rtmp-dial-timeout,
    // quarantined, and the publish lands on the next origin.
    let stuck = name_for("s", &ids, "silent-s-1", Some("real-s-1"));
    let t0 = Instant::now();
    let mut moved = Ffmpeg::publish(&url(&stuck), 30);
    assert!(wait_until(WAIT, || real.publishing(&stuck)), "{}\n{}", moved.describe(), p.log_text());
    assert!(t0.elapsed() < Duration::from_secs(12), "took {:?}", t0.elapsed());
    let log = p.log_text();
    assert!(log.contains("origin silent-s-1: a dial was refused or timed out"), "{log}");
    assert!(log.contains("retrying on origin real-s-1"), "{log}");
    assert!(moved.running());

    assert!(still_playing(&player, WAIT), "the healthy player noticed: {}", p.log_text());
}

#[test]
fn a_player_that_stops_reading_leaves_the_proxy_memory_flat() {
    let origin = NginxRtmp::start(4096);
    // The relay's back-pressure (`--edge off`): the edge instead holds up to `--edge-max-lag`
    // of the stream once, shared, then skips and closes such players (tests/edge.rs).
    let p = Proxy::start(&["--edge", "off"]);
    assert_eq!(register(&p.api_addr(), &origin_body("o", "s", origin.rtmp_port)).status, 200);
    let url = |s: &str| format!("rtmp://127.0.0.1:{}/live/{s}", p.rtmp);
    let _publisher = Ffmpeg::publish(&url("busy"), 90);
    assert!(wait_until(WAIT, || origin.publishing("busy")), "{}", p.log_text());
    let player = Ffmpeg::play(&url("busy"), 90);
    assert!(still_playing(&player, WAIT));

    // Three players that play, then never read again.
    let mut stuck = Vec::new();
    for _ in 0..3 {
        let mut client = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
        let status = client.play("busy", |_| vec![], Duration::from_secs(10)).unwrap();
        assert_eq!(status.code, "NetStream.Play.Start", "{status:?}");
        stuck.push(client);
    }
    std::thread::sleep(Duration::from_secs(5)); // their socket buffers fill
    let pid = p.child.id();
    let start = rss_kib(pid);
    let mut largest = start;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(1));
        largest = largest.max(rss_kib(pid));
    }
    // About 1 Mbit/s per stuck player for 20 s would be 2.5 MiB each if the proxy buffered it.
    assert!(largest < start + 2048, "RSS grew from {start} KiB to {largest} KiB");
    assert!(still_playing(&player, WAIT), "the healthy player noticed");
    assert_eq!(open_rtmp(&p), 5, "{}", shards(&p));
    drop(stuck);
    assert!(wait_until(WAIT, || open_rtmp(&p) == 2), "{}", shards(&p));
}

#[test]
fn ten_thousand_connections_at_once_are_all_served() {
    let origin = NginxRtmp::start(4096);
    let p = Proxy::start(&["--max-connections-per-shard", "1000"]);
    assert_eq!(register(&p.api_addr(), &origin_body("o", "s", origin.rtmp_port)).status, 200);
    let url = format!("rtmp://127.0.0.1:{}/live/calm", p.rtmp);
    let publisher = Ffmpeg::publish(&url, 120);
    assert!(wait_until(WAIT, || origin.publishing("calm")), "{}", p.log_text());
    let player = Ffmpeg::play(&url, 120);
    assert!(still_playing(&player, WAIT));

    const N: usize = 10_000;
    let addr = format!("127.0.0.1:{}", p.http);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let t0 = Instant::now();
    let answers: Vec<Result<u16, String>> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..N {
            let addr = addr.clone();
            tasks.spawn(async move {
                tokio::time::timeout(Duration::from_secs(120), versions(&addr))
                    .await
                    .map_err(|_| "timed out".to_string())?
            });
        }
        tasks.join_all().await
    });
    let took = t0.elapsed();
    let failed: Vec<&Result<u16, String>> = answers.iter().filter(|a| !matches!(a, Ok(200))).collect();
    assert!(
        failed.is_empty(),
        "{} of {N} not answered 200 (first: {:?}) in {took:?}\n{}",
        failed.len(),
        failed.first(),
        p.log_text()
    );
    let accepted = shards(&p)["total"]["accepted"]["http_stream"].as_u64().unwrap();
    assert!(
        wait_until(WAIT, || shards(&p)["total"]["accepted"]["http_stream"].as_u64() == Some(N as u64)),
        "accepted {accepted}"
    );
    assert!(p.log_text().contains("--max-connections-per-shard cap; new clients wait"), "the cap was never reached");
    assert!(still_playing(&player, WAIT), "the healthy player noticed");
    drop(publisher);
}

/// One `GET /api/v1/versions` on a new connection: the status.
async fn versions(addr: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET /api/v1/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("reply {text:?}"))
}

#[test]
fn sigterm_drains_live_streams_refuses_new_clients_and_exits_0() {
    let origin = NginxRtmp::start(4096);
    let p = Proxy::start(&["--grace-quit-timeout", "4s", "--force-quit-timeout", "15s"]);
    assert_eq!(register(&p.api_addr(), &origin_body("o", "s", origin.rtmp_port)).status, 200);
    let url = format!("rtmp://127.0.0.1:{}/live/draining", p.rtmp);
    let mut publisher = Ffmpeg::publish(&url, 120);
    assert!(wait_until(WAIT, || origin.publishing("draining")), "{}", p.log_text());
    let mut player = Ffmpeg::play(&url, 120);
    assert!(still_playing(&player, WAIT));

    let (rtmp, http) = (p.rtmp, p.http);
    let pid = p.child.id();
    let t0 = Instant::now();
    let waiter = std::thread::spawn(move || p.stop());
    // New clients are refused at once on every listener...
    assert!(
        wait_until(Duration::from_secs(2), || TcpStream::connect(("127.0.0.1", rtmp)).is_err()
            && TcpStream::connect(("127.0.0.1", http)).is_err()),
        "still accepting after SIGTERM"
    );
    // ...while the live stream goes on through the grace time...
    assert!(still_playing(&player, Duration::from_secs(2)), "the live stream stopped at once");
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_ok(), "exited before the grace time");
    // ...then it is closed and the proxy exits 0 soon after the grace time.
    let (status, took, log) = waiter.join().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(8), "exited after {took:?}:\n{log}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(log.contains("draining"), "{log}");
    assert!(publisher.wait_timeout(WAIT).is_some() && player.wait_timeout(WAIT).is_some(), "clients held after exit");
}
