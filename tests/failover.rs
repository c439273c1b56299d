//! Failover in seconds, memory mode, with real peers: two nginx-rtmp origins registered with one
//! proxy, ffmpeg publishing through it. The stream's origin is killed (SIGKILL, its port then
//! refuses); the next publish through the proxy must land on the other origin at once (the
//! refused dial puts the dead origin in quarantine and the session is retried on the other),
//! although the dead origin's registration is still fresh (heartbeats every second, TTL 300 s).
//! Then the System API: draining an origin keeps its stream's pin but sends new streams
//! elsewhere, and an unregistered origin leaves at once.

mod common;

use std::time::Duration;

use common::peers::{Ffmpeg, Heartbeats, NginxRtmp};
use common::{Proxy, get, origin_body, raw_http, request, wait_until};

fn post(addr: &str, path: &str, body: &str) -> common::HttpReply {
    raw_http(addr, &request("POST", path, &[("Content-Type", "application/json")], body))
}

/// Publishes `stream` through the proxy until one of `origins` has it; the index of that one.
fn publish_lands(proxy: &Proxy, origins: &[&NginxRtmp], stream: &str, within: Duration) -> (Ffmpeg, Option<usize>) {
    let url = format!("rtmp://127.0.0.1:{}/live/{stream}", proxy.rtmp);
    let ffmpeg = Ffmpeg::publish(&url, 60);
    let mut landed = None;
    wait_until(within, || {
        landed = origins.iter().position(|o| o.try_stat().is_ok() && o.publishing(stream));
        landed.is_some()
    });
    (ffmpeg, landed)
}

#[test]
fn a_killed_origins_stream_moves_to_the_other_origin_on_the_next_publish() {
    let mut origins = [NginxRtmp::start(4096), NginxRtmp::start(4096)];
    let proxy = Proxy::start(&["--rtmp-dial-timeout", "2s"]);
    let bodies = vec![origin_body("fo-a", "s", origins[0].rtmp_port), origin_body("fo-b", "s", origins[1].rtmp_port)];
    let _heartbeats = Heartbeats::start(&proxy.api_addr(), bodies, Duration::from_secs(1));
    let api = proxy.api_addr();
    assert!(wait_until(Duration::from_secs(10), || get(&api, "/api/v1/origins").json()["total"] == 2));

    let refs: Vec<&NginxRtmp> = origins.iter().collect();
    let (mut first, landed) = publish_lands(&proxy, &refs, "fo", Duration::from_secs(15));
    let first_origin = landed.unwrap_or_else(|| panic!("the publish reached no origin:\n{}", proxy.log_text()));
    first.kill();
    origins[first_origin].kill();

    // Straight away, with the dead origin's heartbeats still coming (as a hung origin's might).
    let refs: Vec<&NginxRtmp> =
        origins.iter().enumerate().filter(|(i, _)| *i != first_origin).map(|(_, o)| o).collect();
    let t0 = std::time::Instant::now();
    let (mut second, landed) = publish_lands(&proxy, &refs, "fo", Duration::from_secs(15));
    assert!(landed.is_some(), "the second publish did not reach the live origin:\n{}", proxy.log_text());
    assert!(t0.elapsed() < Duration::from_secs(10), "failover took {:?}", t0.elapsed());
    let log = proxy.log_text();
    assert!(log.contains("a dial was refused or timed out"), "{log}");
    assert!(log.contains("retrying on origin fo-"), "{log}");
    let dead_id = format!("fo-{}-s-1", ["a", "b"][first_origin]);
    let listed = get(&api, "/api/v1/origins").json();
    let dead = listed["origins"].as_array().unwrap().iter().find(|o| o["id"] == dead_id).unwrap().clone();
    assert!(dead["quarantined_seconds"].as_f64().is_some_and(|s| s > 0.0), "{dead}");
    assert!(second.running(), "the republished stream runs: {}", second.describe());
}

#[test]
fn draining_keeps_pins_and_unregistering_leaves_at_once() {
    let origins = [NginxRtmp::start(4096), NginxRtmp::start(4096)];
    let proxy = Proxy::start(&[]);
    let api = proxy.api_addr();
    for (i, server) in ["dr-a", "dr-b"].iter().enumerate() {
        assert_eq!(common::register(&api, &origin_body(server, "s", origins[i].rtmp_port)).status, 200);
    }
    let refs: Vec<&NginxRtmp> = origins.iter().collect();
    let (_live, landed) = publish_lands(&proxy, &refs, "kept", Duration::from_secs(15));
    let home = landed.unwrap_or_else(|| panic!("the publish reached an origin: {}", proxy.log_text()));
    let (home_id, other_id) = [("dr-a-s-1", "dr-b-s-1"), ("dr-b-s-1", "dr-a-s-1")][home];

    let drained = post(&api, "/api/v1/origins/drain", &format!(r#"{{"id":"{home_id}","draining":true}}"#));
    assert_eq!(drained.status, 200, "{}", drained.body);
    // The pinned stream's players still go to its origin; every new stream goes to the other.
    let player = Ffmpeg::play(&format!("rtmp://127.0.0.1:{}/live/kept", proxy.rtmp), 30);
    assert!(wait_until(Duration::from_secs(15), || origins[home].players("kept") > 0), "player not on the home origin");
    drop(player);
    for i in 0..4 {
        let stream = format!("new{i}");
        let (_p, landed) = publish_lands(&proxy, &refs, &stream, Duration::from_secs(15));
        assert_eq!(landed, Some(1 - home), "{stream} went to the draining origin");
    }
    let streams = get(&api, "/api/v1/streams").json();
    let kept =
        streams["streams"].as_array().unwrap().iter().find(|s| s["key"] == "__defaultVhost__/live/kept").unwrap();
    assert_eq!(kept["origin"], home_id);

    let gone = post(&api, "/api/v1/srs/unregister", &format!(r#"{{"id":"{home_id}"}}"#));
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert_eq!(post(&api, "/api/v1/srs/unregister", &format!(r#"{{"id":"{home_id}"}}"#)).status, 404);
    let listed = get(&api, "/api/v1/origins").json();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["origins"][0]["id"], other_id);
    assert_eq!(post(&api, "/api/v1/srs/unregister", "{}").status, 400);
}

/// HTTP players and WebRTC signalling move too: origin `dead` is proven (its RTMP port accepts)
/// but its HTTP and API ports refuse; each stream that hashes to it is served by the other
/// origin, an nginx serving files, on its first request. A quarantine of 1 s lets every
/// request dial `dead` first.
#[test]
fn http_requests_move_off_an_origin_that_refuses() {
    use common::http_peers::{NginxHls, get_full};
    use common::peers::rendezvous_pick;
    let names: Vec<String> = (0..1000)
        .map(|i| format!("s{i}"))
        .filter(|s| rendezvous_pick(&format!("__defaultVhost__/live/{s}"), &["dead-s-1", "alive-s-1"]) == "dead-s-1")
        .take(3)
        .collect();
    let (hls, flv, whip) = (&names[0], &names[1], &names[2]);
    let live = NginxHls::start();
    let playlist = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{hls}-1.ts\n");
    std::fs::write(live.hls_dir().join(format!("{hls}.m3u8")), playlist).unwrap();
    std::fs::write(live.hls_dir().join(format!("{flv}.flv")), b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00").unwrap();
    let rtmp = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // accepts probes, nothing else
    let closed = common::ClosedPort::new();
    // Players relayed (`--edge off`), as this is about HTTP requests to origins; the edge's
    // pull moves in tests/edge.rs.
    let proxy = Proxy::start(&["--origin-quarantine", "1s", "--edge", "off"]);
    let api = proxy.api_addr();
    let body = |server: &str, rtmp: u16, http: u16| {
        format!(
            r#"{{"ip":"127.0.0.1","server":"{server}","service":"s","pid":"1","rtmp":["{rtmp}"],"http":["{http}"],"api":["{http}"]}}"#
        )
    };
    assert_eq!(common::register(&api, &body("dead", rtmp.local_addr().unwrap().port(), closed.port)).status, 200);
    assert_eq!(common::register(&api, &body("alive", live.rtmp_port, live.http_port)).status, 200);
    let origins = || get(&api, "/api/v1/origins").json()["origins"].as_array().unwrap().clone();
    assert!(wait_until(Duration::from_secs(10), || origins().iter().all(|o| o["proven"] == true)), "both proven");
    let unquarantined = || origins().iter().all(|o| o["quarantined_seconds"].is_null());

    let got = get_full(&proxy.http_addr(), &format!("/live/{hls}.m3u8")).unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.text().contains(&format!("{hls}-1.ts?spbhid=")), "{}", got.text());
    assert!(wait_until(Duration::from_secs(5), unquarantined));
    let got = get_full(&proxy.http_addr(), &format!("/live/{flv}.flv")).unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(wait_until(Duration::from_secs(5), unquarantined));
    let offer = common::request("POST", &format!("/rtc/v1/whip/?app=live&stream={whip}"), &[], "v=0\r\n");
    let answer = common::raw_http(&format!("127.0.0.1:{}", proxy.http_api), &offer);
    assert_ne!(answer.status, 502, "the offer reached the live origin (nginx answers it): {}", answer.body);
    let log = proxy.log_text();
    for stream in &names {
        let line = format!(
            "stream __defaultVhost__/live/{stream}: origin dead-s-1 failed a dial; retrying on origin alive-s-1"
        );
        assert!(log.contains(&line), "{line}\n{log}");
    }
}
