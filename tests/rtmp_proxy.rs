//! The RTMP proxy end to end with real peers: ffmpeg publishes and ffprobe/ffmpeg play through
//! the real binary to real nginx-rtmp origins on loopback. Where each stream landed is read
//! from the origins' own stat pages, so nothing here trusts the proxy's word for it.

mod common;

use std::time::{Duration, Instant};

use common::peers::*;
use common::*;
use serde_json::Value;

/// Deadline for a stream to show up as publishing on an origin (the VM is slow and shared).
const PUBLISH_WAIT: Duration = Duration::from_secs(20);
/// Wall-clock limit for one ffprobe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(25);
/// How long a client may take to notice that its connection was closed.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

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

/// Sessions of `key` with this protocol and role (`rtmp_publish`, `rtmp_play`); 0 when none.
fn sessions(p: &Proxy, key: &str, kind: &str) -> u64 {
    stream_entry(p, key).and_then(|s| s["sessions"][kind].as_u64()).unwrap_or(0)
}

fn origin_alive(p: &Proxy, id: &str) -> Option<bool> {
    let origins = get(&p.api_addr(), "/api/v1/origins").json();
    origins["origins"].as_array()?.iter().find(|o| o["id"] == id)?["alive"].as_bool()
}

/// Waits until `stream` is publishing on `origin`; fails with the publisher's stderr and the
/// proxy log otherwise.
fn wait_publishing(p: &Proxy, origin: &NginxRtmp, stream: &str, publisher: &mut Ffmpeg) {
    if !wait_until(PUBLISH_WAIT, || origin.publishing(stream)) {
        panic!(
            "{stream} never published on the origin through the proxy; publisher: {}\n{}",
            publisher.describe(),
            diag(p, &[origin])
        );
    }
}

/// Waits until `stream` is publishing on one of `origins` and returns its index.
fn wait_publishing_any(p: &Proxy, origins: &[&NginxRtmp], stream: &str, publisher: &mut Ffmpeg) -> usize {
    let mut home = None;
    wait_until(PUBLISH_WAIT, || {
        home = origins.iter().position(|o| o.publishing(stream));
        home.is_some()
    });
    home.unwrap_or_else(|| {
        panic!(
            "{stream} never published on any origin through the proxy; publisher: {}\n{}",
            publisher.describe(),
            diag(p, origins)
        )
    })
}

#[test]
fn stat_xml_parses() {
    let xml = r#"<?xml version="1.0" encoding="utf-8" ?>
<rtmp><nginx_version>1.22.1</nginx_version><server><application><name>live</name><live>
<stream><name>a</name><time>3612</time><bytes_in>127256</bytes_in>
<client><id>2</id><address>127.0.0.1</address><flashver>LNX 9,0,124,2</flashver><active/></client>
<client><id>1</id><address>127.0.0.1</address><flashver>FMLE/3.0 (compatible; Lavf59.27</flashver><publishing/><active/></client>
<meta><video><width>640</width><codec>H264</codec></video><audio><codec>AAC</codec></audio></meta>
<nclients>2</nclients><publishing/><active/></stream>
<stream><name>idle</name><time>10</time>
<client><id>3</id><address>127.0.0.1</address><flashver>LNX 9,0,124,2</flashver></client>
<nclients>1</nclients></stream>
<nclients>3</nclients></live></application></server></rtmp>"#;
    assert_eq!(
        parse_stat(xml),
        [
            StatStream { app: "live".into(), name: "a".into(), publishing: true, players: 1, nclients: 2 },
            StatStream { app: "live".into(), name: "idle".into(), publishing: false, players: 1, nclients: 1 },
        ]
    );
    assert!(parse_stat("<rtmp><server><application><name>live</name><live><nclients>0</nclients></live></application></server></rtmp>").is_empty());
}

/// The peers themselves, without the proxy: publish straight to nginx-rtmp, probe and play
/// straight from it, see it in stat, and see a crash close its clients.
#[test]
fn nginx_harness_works() {
    let mut origin = NginxRtmp::start(4096);
    let url = origin.url("direct");
    let mut publisher = Ffmpeg::publish(&url, 30);
    assert!(
        wait_until(PUBLISH_WAIT, || origin.publishing("direct")),
        "publisher: {}\nnginx: {}",
        publisher.describe(),
        origin.error_log()
    );
    assert_eq!(origin.players("direct"), 0);
    probe_h264_aac(&url, PROBE_TIMEOUT).unwrap();
    let played = play_frames(&url, 50, Duration::from_secs(30)).unwrap();
    assert!(played.clean(50), "{played:?}");

    let mut player = Ffmpeg::play(&url, 60);
    assert!(wait_until(Duration::from_secs(15), || origin.players("direct") == 1), "{}", origin.stat());
    assert!(wait_until(Duration::from_secs(15), || player.frames() > 0), "{}", player.describe());
    assert!(origin.publishing("direct"));
    assert!(origin.stream("nothing").is_none());

    origin.kill();
    assert!(publisher.wait_timeout(CLOSE_WAIT).is_some(), "publisher survived the origin's crash");
    assert!(player.wait_timeout(CLOSE_WAIT).is_some(), "player survived the origin's crash");
    assert!(origin.try_stat().is_err(), "stat still answers after kill");
}

fn publish_and_play(relay: &str) {
    publish_and_play_with(relay, &[]);
}

fn publish_and_play_with(relay: &str, extra: &[&str]) {
    let origin = NginxRtmp::start(4096);
    // The players are relayed too (the edge, on by default, serves them in tests/edge.rs).
    let mut args = vec!["--relay", relay, "--edge", "off"];
    args.extend_from_slice(extra);
    let p = Proxy::start(&args);
    assert_eq!(register(&p.api_addr(), &origin_body("one", relay, origin.rtmp_port)).status, 200);
    let url = proxy_url(&p, "a");

    let mut publisher = Ffmpeg::publish(&url, 20);
    wait_publishing(&p, &origin, "a", &mut publisher);
    if let Err(e) = probe_h264_aac(&url, PROBE_TIMEOUT) {
        panic!("{relay}: {e}\n{}", diag(&p, &[&origin]));
    }

    let entry = stream_entry(&p, &key("a")).unwrap_or_else(|| panic!("no stream entry\n{}", diag(&p, &[&origin])));
    assert_eq!(entry["origin"], origin_id("one", relay), "{entry}");
    assert_eq!(entry["sessions"]["rtmp_publish"], 1, "{entry}");

    // A player that decodes 3 s of video: nginx counts it, the proxy counts it, every frame
    // decodes.
    let mut player = Ffmpeg::play_frames(&url, 75);
    assert!(
        wait_until(Duration::from_secs(15), || origin.players("a") >= 1),
        "player never reached the origin: {}\n{}",
        player.describe(),
        diag(&p, &[&origin])
    );
    assert!(
        wait_until(Duration::from_secs(10), || sessions(&p, &key("a"), "rtmp_play") >= 1),
        "no rtmp_play session: {:?}",
        stream_entry(&p, &key("a"))
    );
    let status = player.wait_timeout(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "player: {}\n{}", player.describe(), diag(&p, &[&origin]));
    assert!(player.frames() >= 75 && player.stderr_text().trim().is_empty(), "{}", player.describe());

    // The publisher's whole run went through, its end included.
    let status = publisher.wait_timeout(Duration::from_secs(40));
    assert!(status.is_some_and(|s| s.success()), "publisher: {}\n{}", publisher.describe(), diag(&p, &[&origin]));
    assert!(wait_until(Duration::from_secs(10), || !origin.publishing("a")), "{}", origin.stat());
    assert!(
        wait_until(Duration::from_secs(10), || sessions(&p, &key("a"), "rtmp_publish") == 0),
        "publish session still counted after the publisher left: {:?}",
        stream_entry(&p, &key("a"))
    );
}

#[test]
fn publish_and_play_through_the_proxy_relay_splice() {
    publish_and_play("splice");
}

#[test]
fn publish_and_play_through_the_proxy_relay_copy() {
    publish_and_play("copy");
}

/// With `--relay-batch` the player's bytes wait up to 20 ms and still all arrive and decode.
#[test]
fn publish_and_play_through_the_proxy_with_a_relay_batch() {
    publish_and_play_with("splice", &["--relay-batch", "20ms"]);
    publish_and_play_with("copy", &["--relay-batch", "20ms"]);
}

#[test]
fn players_stick_to_the_publishers_origin() {
    let origins = [NginxRtmp::start(4096), NginxRtmp::start(4096)];
    let o: Vec<&NginxRtmp> = origins.iter().collect();
    let p = Proxy::start(&["--shards", "2"]);
    let ids = [origin_id("sticky-a", "s"), origin_id("sticky-b", "s")];
    for (server, origin) in ["sticky-a", "sticky-b"].iter().zip(&origins) {
        assert_eq!(register(&p.api_addr(), &origin_body(server, "s", origin.rtmp_port)).status, 200);
    }
    let watches = [StatWatch::new(origins[0].http_port, "x"), StatWatch::new(origins[1].http_port, "x")];
    let url = proxy_url(&p, "x");
    let mut publisher = Ffmpeg::publish(&url, 60);
    let home = wait_publishing_any(&p, &o, "x", &mut publisher);
    let other = 1 - home;

    let results = ffprobe_many(&url, 8, Duration::from_secs(40));
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(codecs) => assert!(
                codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"),
                "player {i}: {codecs:?}"
            ),
            Err(e) => panic!("player {i}: {e}\n{}", diag(&p, &o)),
        }
    }
    assert!(publisher.running(), "publisher: {}", publisher.describe());
    assert!(origins[home].publishing("x"));
    assert!(origins[other].stream("x").is_none(), "{}", origins[other].stat());
    assert!(!watches[other].ever_seen(), "x appeared on the other origin at some point\n{}", diag(&p, &o));
    assert!(watches[home].ever_seen());
    let entry = stream_entry(&p, &key("x")).unwrap();
    assert_eq!(entry["origin"], ids[home].as_str(), "{entry}");
    assert_eq!(entry["sessions"]["rtmp_publish"], 1, "{entry}");
}

#[test]
fn eight_streams_spread_over_two_origins() {
    let streams: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    // Origin names whose rendezvous scores give each origin at least two of the eight keys
    // (deterministic: the first candidate pair that does).
    let (na, nb) = (0..100)
        .map(|i| (format!("spread{i}a"), format!("spread{i}b")))
        .find(|(a, b)| {
            let (ia, ib) = (origin_id(a, "s"), origin_id(b, "s"));
            let on_a = streams.iter().filter(|s| rendezvous_pick(&key(s), &[&ia, &ib]) == ia).count();
            (2..=6).contains(&on_a)
        })
        .unwrap();
    let origins = [NginxRtmp::start(4096), NginxRtmp::start(4096)];
    let o: Vec<&NginxRtmp> = origins.iter().collect();
    let p = Proxy::start(&[]);
    let ids = [origin_id(&na, "s"), origin_id(&nb, "s")];
    for (server, origin) in [&na, &nb].iter().zip(&origins) {
        assert_eq!(register(&p.api_addr(), &origin_body(server, "s", origin.rtmp_port)).status, 200);
    }
    wait_proven(&p.api_addr(), &[&ids[0], &ids[1]]);
    let mut publishers: Vec<Ffmpeg> = streams.iter().map(|s| Ffmpeg::publish(&proxy_url(&p, s), 60)).collect();

    let mut homes = vec![None; streams.len()];
    let all = wait_until(Duration::from_secs(30), || {
        for (i, s) in streams.iter().enumerate() {
            if homes[i].is_none() {
                homes[i] = origins.iter().position(|o| o.publishing(s));
            }
        }
        homes.iter().all(Option::is_some)
    });
    if !all {
        let missing: Vec<String> = streams
            .iter()
            .zip(&homes)
            .zip(publishers.iter_mut())
            .filter(|((_, h), _)| h.is_none())
            .map(|((s, _), f)| format!("{s}: {}", f.describe()))
            .collect();
        panic!("not every stream published: {missing:#?}\n{}", diag(&p, &o));
    }
    let homes: Vec<usize> = homes.into_iter().map(Option::unwrap).collect();
    for (s, &h) in streams.iter().zip(&homes) {
        assert!(origins[1 - h].stream(s).is_none(), "{s} is on both origins");
        let entry = stream_entry(&p, &key(s)).unwrap_or_else(|| panic!("no entry for {s}"));
        assert_eq!(entry["origin"], ids[h].as_str(), "{entry}");
    }
    let on_first = homes.iter().filter(|&&h| h == 0).count();
    assert!((1..streams.len()).contains(&on_first), "all eight streams on one origin: {homes:?}\n{}", diag(&p, &o));

    let urls: Vec<String> = streams.iter().map(|s| proxy_url(&p, s)).collect();
    let results = in_parallel(urls.len(), move |i| probe_h264_aac(&urls[i], Duration::from_secs(40)));
    for (s, r) in streams.iter().zip(results) {
        if let Err(e) = r {
            panic!("{s}: {e}\n{}", diag(&p, &o));
        }
    }
    for (s, f) in streams.iter().zip(publishers.iter_mut()) {
        assert!(f.running(), "{s}: publisher {}", f.describe());
    }
}

#[test]
fn origins_with_small_and_large_chunk_sizes_play() {
    let setups: Vec<(u32, NginxRtmp, Proxy)> = [4096, 60000]
        .into_iter()
        .map(|size| {
            let origin = NginxRtmp::start(size);
            let p = Proxy::start(&[]);
            assert_eq!(
                register(&p.api_addr(), &origin_body("chunky", &size.to_string(), origin.rtmp_port)).status,
                200
            );
            (size, origin, p)
        })
        .collect();
    let mut publishers: Vec<Ffmpeg> = setups.iter().map(|(_, _, p)| Ffmpeg::publish(&proxy_url(p, "c"), 60)).collect();
    for ((size, origin, p), publisher) in setups.iter().zip(publishers.iter_mut()) {
        assert!(origin.stat().contains("<name>live</name>"), "chunk_size {size}");
        wait_publishing(p, origin, "c", publisher);
    }
    for ((size, origin, p), publisher) in setups.iter().zip(publishers.iter_mut()) {
        if let Err(e) = probe_h264_aac(&proxy_url(p, "c"), PROBE_TIMEOUT) {
            panic!("chunk_size {size}: {e}\n{}", diag(p, &[origin]));
        }
        match play_frames(&proxy_url(p, "c"), 75, Duration::from_secs(30)) {
            Ok(played) => assert!(played.clean(75), "chunk_size {size}: {played:?}\n{}", diag(p, &[origin])),
            Err(e) => panic!("chunk_size {size}: {e}\n{}", diag(p, &[origin])),
        }
        assert!(publisher.running(), "chunk_size {size}: publisher {}", publisher.describe());
    }
}

#[test]
fn no_origin_fails_fast_and_says_why() {
    let p = Proxy::start(&[]);
    let t0 = Instant::now();
    let mut publisher = Ffmpeg::publish(&proxy_url(&p, "nobody"), 30);
    let status = publisher.wait_timeout(Duration::from_secs(6));
    assert!(status.is_some_and(|s| !s.success()), "publisher: {} after {:?}", publisher.describe(), t0.elapsed());
    let has_line =
        |k: &str| p.log_text().lines().any(|l| l.contains(k) && l.to_ascii_lowercase().contains("no origin"));
    assert!(
        wait_until(Duration::from_secs(5), || has_line(&key("nobody"))),
        "no log line names {} and \"no origin\":\n{}",
        key("nobody"),
        p.log_text()
    );

    // A player (no read timeout of its own) is refused as fast.
    let mut player = Ffmpeg::play(&proxy_url(&p, "nobody-plays"), 10);
    let status = player.wait_timeout(Duration::from_secs(6));
    assert!(status.is_some_and(|s| !s.success()), "player: {}", player.describe());
    assert!(wait_until(Duration::from_secs(5), || has_line(&key("nobody-plays"))), "{}", p.log_text());
}

#[test]
fn a_crashed_origin_closes_its_clients_and_the_stream_moves() {
    let mut origins = vec![NginxRtmp::start(4096), NginxRtmp::start(4096)];
    // Relayed players end with their origin; the edge's keep playing from another
    // (tests/edge.rs, killing_the_origin_moves_the_pull_and_players_keep_playing).
    let p = Proxy::start(&["--edge", "off", "--origin-ttl", "2s"]);
    let names = ["crash-a", "crash-b"];
    let ids: Vec<String> = names.iter().map(|n| origin_id(n, "s")).collect();
    let bodies = names.iter().zip(&origins).map(|(n, o)| origin_body(n, "s", o.rtmp_port)).collect();
    let heartbeats = Heartbeats::start(&p.api_addr(), bodies, Duration::from_millis(500));
    assert!(
        wait_until(Duration::from_secs(10), || ids.iter().all(|id| origin_alive(&p, id) == Some(true))),
        "{}",
        get(&p.api_addr(), "/api/v1/origins").body
    );

    let url = proxy_url(&p, "k");
    let mut publisher = Ffmpeg::publish(&url, 60);
    let home = {
        let o: Vec<&NginxRtmp> = origins.iter().collect();
        wait_publishing_any(&p, &o, "k", &mut publisher)
    };
    let survivor = 1 - home;
    let mut player = Ffmpeg::play(&url, 120);
    assert!(
        wait_until(Duration::from_secs(15), || origins[home].players("k") >= 1 && player.frames() > 0),
        "player: {}\n{}",
        player.describe(),
        diag(&p, &[&origins[0], &origins[1]])
    );

    heartbeats.stop(home);
    origins[home].kill();
    let t0 = Instant::now();
    let publisher_exit = publisher.wait_timeout(CLOSE_WAIT);
    let player_exit = player.wait_timeout(CLOSE_WAIT.saturating_sub(t0.elapsed()));
    assert!(
        publisher_exit.is_some(),
        "publisher still connected {:?} after its origin died: {}\n{}",
        t0.elapsed(),
        publisher.describe(),
        diag(&p, &[&origins[survivor]])
    );
    assert!(
        player_exit.is_some(),
        "player still connected {:?} after its origin died: {}\n{}",
        t0.elapsed(),
        player.describe(),
        diag(&p, &[&origins[survivor]])
    );

    // Once the TTL has passed the dead origin is dead, and k publishes to the survivor.
    assert!(
        wait_until(Duration::from_secs(10), || origin_alive(&p, &ids[home]) == Some(false)),
        "{}",
        get(&p.api_addr(), "/api/v1/origins").body
    );
    assert_eq!(origin_alive(&p, &ids[survivor]), Some(true));
    let mut again = Ffmpeg::publish(&url, 60);
    wait_publishing(&p, &origins[survivor], "k", &mut again);
    let entry = stream_entry(&p, &key("k")).unwrap();
    assert_eq!(entry["origin"], ids[survivor].as_str(), "{entry}");
    assert!(again.running(), "{}", again.describe());
    drop(heartbeats);
}

/// librtmp (the RTMP library inside OBS), through rtmpdump, is a second, independent client:
/// it plays the stream through the proxy and what it saved decodes as h264 and aac.
#[test]
fn rtmpdump_plays_through_the_proxy() {
    let origin = NginxRtmp::start(4096);
    let p = Proxy::start(&[]);
    assert_eq!(register(&p.api_addr(), &origin_body("one", "rd", origin.rtmp_port)).status, 200);
    let url = proxy_url(&p, "librtmp");
    let mut publisher = Ffmpeg::publish(&url, 20);
    wait_publishing(&p, &origin, "librtmp", &mut publisher);
    let dir = TempDir::new("rtmpdump");
    let flv = dir.0.join("out.flv");
    let mut cmd = std::process::Command::new("rtmpdump");
    // A live play never ends by itself: let it record for 6 s, then it is killed.
    cmd.args(["-r", &url, "--live", "-o"]).arg(&flv);
    let outcome = run_with_timeout(cmd, Duration::from_secs(6));
    let size = std::fs::metadata(&flv).map(|m| m.len()).unwrap_or(0);
    assert!(size > 50_000, "rtmpdump saved {size} bytes: {}", outcome.stderr);
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0"])
        .arg(&flv)
        .output()
        .unwrap();
    let codecs = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs:?} {}", outcome.stderr);
}

/// Descriptors of `pid` that are pipes, and its threads named like io_uring's io-wq workers.
fn pipes_and_io_workers(pid: u32) -> (usize, Vec<String>) {
    let pipes = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("pipe:"))
                .count()
        })
        .unwrap_or(0);
    let workers = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .map(|comm| comm.trim().to_string())
                .filter(|comm| comm.starts_with("iou-wrk"))
                .collect()
        })
        .unwrap_or_default();
    (pipes, workers)
}

/// The splice relay moves a live session's bytes through pipes (zero-copy) and, waiting on
/// io_uring readiness, parks no io-wq kernel thread; the copy relay makes no pipe.
#[test]
fn splice_relay_uses_pipes_and_no_io_wq_threads() {
    for (relay, wants_pipes) in [("splice", true), ("copy", false)] {
        let origin = NginxRtmp::start(4096);
        let p = Proxy::start(&["--relay", relay, "--edge", "off"]);
        let (baseline, _) = pipes_and_io_workers(p.child.id());
        assert_eq!(register(&p.api_addr(), &origin_body("zc", relay, origin.rtmp_port)).status, 200);
        let url = proxy_url(&p, "zc");
        let mut publisher = Ffmpeg::publish(&url, 20);
        wait_publishing(&p, &origin, "zc", &mut publisher);
        let mut player = Ffmpeg::play(&url, 15);
        assert!(wait_until(Duration::from_secs(15), || origin.players("zc") >= 1), "{}", player.describe());
        // Sample while media flows: the pipes exist while their direction relays.
        let mut seen_pipes = 0;
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            let (pipes, workers) = pipes_and_io_workers(p.child.id());
            assert!(workers.is_empty(), "{relay}: io-wq workers {workers:?}");
            seen_pipes = seen_pipes.max(pipes);
            std::thread::sleep(Duration::from_millis(100));
        }
        // Pipes the process has anyway (the runtime's own) are not the relay's.
        if wants_pipes {
            assert!(seen_pipes >= baseline + 2, "{relay}: no relay pipe ({seen_pipes}, baseline {baseline})");
        } else {
            assert_eq!(seen_pipes, baseline, "{relay}: pipes while relaying");
        }
        player.kill();
        publisher.kill();
    }
}
