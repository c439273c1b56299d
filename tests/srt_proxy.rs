//! The SRT proxy end to end with real peers. The origin is `srt-live-transmit` relaying one
//! listener (where a publisher sends) to another (where a player reads), registered as two
//! origins: `srt-in` (its input port) and `srt-out` (its output port). Stream names are chosen
//! so that the publish lands on `srt-in` and the plays on `srt-out`; ffmpeg publishes through
//! the proxy and ffprobe/ffmpeg play through the proxy, so every byte a player reads crossed the
//! proxy twice (nothing comes out of the relay that did not go in). Rejections and bad input
//! use a hand-made SRT caller whose packets are written in `common::udp_peers`.

mod common;

use std::time::{Duration, Instant};

use common::http_peers::FfmpegProc;
use common::peers::ffprobe_streams;
use common::udp_peers::*;
use common::wait_until;

const IN: &str = "srt-in-s-1";
const OUT: &str = "srt-out-s-1";
const PROBE_TIMEOUT: Duration = Duration::from_secs(25);
/// libsrt's default connect timeout (SRTO_CONNTIMEO): what a caller waits for an answer.
const LIBSRT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn assert_video_and_audio(what: &str, codecs: &[String]) {
    assert!(
        codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"),
        "{what}: codecs {codecs:?}, want h264 and aac"
    );
}

/// The relay origin and a proxy that knows it as `srt-in` and `srt-out`.
fn relay_and_proxy() -> (SrtRelayOrigin, UdpProxy) {
    require("ffmpeg", "ffmpeg");
    require("ffprobe", "ffmpeg");
    let origin = SrtRelayOrigin::start();
    let proxy = UdpProxy::start(&[]);
    proxy.register(&origin_body_udp("srt-in", &[origin.input.to_string()], &[], &[]));
    // The SRS heartbeat form of an endpoint, to show it is understood for SRT too.
    proxy.register(&origin_body_udp("srt-out", &[format!("udp://0.0.0.0:{}", origin.output)], &[], &[]));
    (origin, proxy)
}

/// The harness alone: what ffmpeg publishes to the relay's input comes out of its output.
#[test]
fn the_relay_origin_works_without_the_proxy() {
    let origin = SrtRelayOrigin::start();
    let mut publisher = publish_srt(&format!("srt://127.0.0.1:{}", origin.input), 30);
    let codecs = ffprobe_streams(&format!("srt://127.0.0.1:{}", origin.output), PROBE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", publisher.describe(), origin.log_text()));
    assert_video_and_audio("direct", &codecs);
}

/// ffmpeg publishes with `#!::r=live/<pub>,m=publish`; ffprobe plays two other names with
/// `#!::h=example.com,r=live/<a>,m=request` and the plain `live/<b>`, both through the proxy,
/// and sees H.264 and AAC. The proxy's own accounts agree: the publish is an `srt_publish`
/// session of `__defaultVhost__/live/<pub>` on `srt-in`, the `h=` play is keyed under the vhost
/// `example.com`, and bytes went in for the publish and out for both plays.
#[test]
fn srt_publish_and_play_through_the_proxy_with_every_stream_id_form() {
    let (origin, proxy) = relay_and_proxy();
    let publish = name_on("__defaultVhost__", "pub", IN, &[IN, OUT]);
    let with_host = name_on("example.com", "h", OUT, &[IN, OUT]);
    let plain = name_on("__defaultVhost__", "plain", OUT, &[IN, OUT]);
    let pub_key = format!("__defaultVhost__/live/{publish}");
    let host_key = format!("example.com/live/{with_host}");
    let plain_key = format!("__defaultVhost__/live/{plain}");

    let mut publisher = publish_srt(&proxy.srt_url(&format!("#!::r=live/{publish},m=publish")), 40);
    assert!(
        wait_until(Duration::from_secs(15), || proxy.sessions(&pub_key, "srt_publish") == 1),
        "the publish never became an SRT session: {}\n{}",
        publisher.describe(),
        proxy.log()
    );
    let stream = proxy.stream(&pub_key).unwrap();
    assert_eq!(stream["origin"], IN, "{stream}");

    for (what, sid, key) in [
        ("h= form", format!("#!::h=example.com,r=live/{with_host},m=request"), &host_key),
        ("plain form", format!("live/{plain}"), &plain_key),
    ] {
        let codecs = ffprobe_streams(&proxy.srt_url(&sid), PROBE_TIMEOUT).unwrap_or_else(|e| {
            panic!("{what}: {e}\n{}\n{}\n{}", publisher.describe(), origin.log_text(), proxy.log())
        });
        assert_video_and_audio(what, &codecs);
        let stream = proxy.stream(key).unwrap_or_else(|| panic!("{what}: no stream {key}\n{}", proxy.log()));
        assert_eq!(stream["origin"], OUT, "{what}: {stream}");
    }
    assert!(publisher.running(), "the publisher stopped: {}", publisher.describe());

    // Counters reach the control thread once a second.
    let moved = wait_until(Duration::from_secs(5), || {
        proxy.bytes(&pub_key, "srt").0 > 100_000
            && proxy.bytes(&host_key, "srt").1 > 20_000
            && proxy.bytes(&plain_key, "srt").1 > 20_000
    });
    assert!(
        moved,
        "bytes: publish {:?}, h= play {:?}, plain play {:?}\n{}",
        proxy.bytes(&pub_key, "srt"),
        proxy.bytes(&host_key, "srt"),
        proxy.bytes(&plain_key, "srt"),
        proxy.log()
    );
}

/// Callers that cannot be served get an SRT rejection they can read, in time for libsrt's
/// default 3 s connect timeout: 1400 for a CONCLUSION without a stream id, with no `r=`, or
/// with a mode the proxy cannot route; 1404 for a stream with no origin, and for an origin that
/// never answers. A CONCLUSION with a cookie the proxy did not give gets nothing.
#[test]
fn srt_callers_get_rejections_they_can_read() {
    let proxy = UdpProxy::start(&[]);
    let to = proxy.srt_addr();
    let caller = SrtCaller::new(0x1111_0001);

    for (what, sid, reason) in [
        ("no stream id", None, 1400),
        ("no r=", Some("#!::m=publish"), 1400),
        ("m=bidirectional", Some("#!::r=live/x,m=bidirectional"), 1400),
        ("no origin registered", Some("#!::r=live/x,m=publish"), 1404),
    ] {
        let (answer, took) = caller.connect(to, sid, LIBSRT_CONNECT_TIMEOUT).unwrap_or_else(|| {
            panic!("{what}: no answer to the CONCLUSION within {LIBSRT_CONNECT_TIMEOUT:?}\n{}", proxy.log())
        });
        assert_eq!(answer.hs_type, 1000 + reason, "{what}: {answer:?}");
        assert_eq!(answer.socket_id, caller.socket_id, "{what}: {answer:?}");
        assert!(took < Duration::from_secs(1), "{what}: answered after {took:?}");
    }

    let cookie = caller.induction(to).unwrap();
    let forged = srt_conclusion(caller.socket_id, cookie ^ 0x5A5A_5A5A, Some("#!::r=live/x,m=publish"));
    assert_eq!(caller.ask(to, &forged, Duration::from_secs(1)), None, "a forged cookie was answered");

    // An origin whose SRT port is bound but silent.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    proxy.register(&origin_body_udp("silent", &[silent.local_addr().unwrap().port().to_string()], &[], &[]));
    let (answer, took) =
        caller.connect(to, Some("#!::r=live/quiet,m=request"), LIBSRT_CONNECT_TIMEOUT).unwrap_or_else(|| {
            panic!("no rejection within libsrt's {LIBSRT_CONNECT_TIMEOUT:?} connect timeout\n{}", proxy.log())
        });
    assert_eq!(answer.hs_type, 1000 + 1404, "{answer:?}");
    assert!(took < LIBSRT_CONNECT_TIMEOUT, "rejected after {took:?}");
    let mut buf = [0u8; 2048];
    silent.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (n, _) = silent.recv_from(&mut buf).expect("the proxy never tried the origin");
    let asked = parse_srt_handshake(&buf[..n]).expect("the proxy sent the origin something else than a handshake");
    assert_eq!(asked.hs_type, 1, "the proxy's first packet to the origin: {asked:?}");
    // The failed session is gone (shards report their tables once a second).
    assert!(
        wait_until(Duration::from_secs(3), || proxy.table("udp_tables", "srt_sessions") == 0),
        "{:?}",
        proxy.shards()
    );
    assert_eq!(proxy.table("udp_tables_peak", "srt_sessions"), 1, "only the silent origin's caller had a session");
}

/// A publisher (for `seconds`) and a player of one stream through the proxy's SRT port, once
/// the player has decoded a second of it.
fn healthy_stream(proxy: &UdpProxy, seconds: u32) -> (FfmpegProc, FfmpegProc) {
    let publish = name_on("__defaultVhost__", "pub", IN, &[IN, OUT]);
    let play = name_on("__defaultVhost__", "play", OUT, &[IN, OUT]);
    let mut publisher = publish_srt(&proxy.srt_url(&format!("#!::r=live/{publish},m=publish")), seconds);
    let mut player = play_srt(&proxy.srt_url(&format!("#!::r=live/{play},m=request")));
    assert!(
        wait_until(Duration::from_secs(20), || player.frames() >= 25),
        "the healthy player got {} frames\n{}\n{}\n{}",
        player.frames(),
        player.describe(),
        publisher.describe(),
        proxy.log()
    );
    (publisher, player)
}

/// A publisher and a player keep flowing through the proxy while its SRT port gets random
/// datagrams, truncated and malformed handshakes, CONCLUSIONs without a stream id, forged
/// cookies, data for unknown sockets, and 100 000 datagrams from 1000 sockets on distinct
/// ports; afterwards the proxy holds just the two healthy sessions and never held more.
#[test]
fn bad_srt_input_next_to_a_healthy_session() {
    let (origin, proxy) = relay_and_proxy();
    let (mut publisher, mut player) = healthy_stream(&proxy, 50);
    let to = proxy.srt_addr();

    // One caller: a CONCLUSION without a stream id is rejected, a forged one is ignored.
    let caller = SrtCaller::new(0x2222_0001);
    let (answer, _) =
        caller.connect(to, None, LIBSRT_CONNECT_TIMEOUT).expect("no answer to a CONCLUSION without stream id");
    assert_eq!(answer.hs_type, 2400, "{answer:?}");
    let forged = srt_conclusion(caller.socket_id, 0xDEAD_BEEF, Some("#!::r=live/x,m=publish"));
    assert_eq!(caller.ask(to, &forged, Duration::from_millis(600)), None);

    // Malformed handshakes and noise from one socket.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let induction = srt_induction(7);
    let mut bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        induction[..20].to_vec(),
        induction[..63].to_vec(),
        [&induction[..], &[0, 5, 0xFF, 0xFF]].concat(), // an extension block running past the end
        [&induction[..], &[0, 5]].concat(),             // a 2-byte tail
        srt_conclusion(9, 0, Some(&"x".repeat(2000))),  // cookie 0, huge stream id
        vec![0xFF; 1500],
        vec![0; 65_507],
    ];
    bad.extend((0..200).map(|i| noise(1 + (i * 37) % 1500, i as u64)));
    for d in &bad {
        let _ = junk.send_to(d, to);
    }

    // The flood: every socket on its own port; INDUCTIONs, CONCLUSIONs with made-up cookies,
    // data packets and noise.
    let flood = flood(to, 1000, 100, |i, n| match n % 4 {
        0 => srt_induction(i as u32),
        1 => srt_conclusion(i as u32, (i * 7919 + n) as u32 | 1, Some("#!::r=live/x,m=publish")),
        2 => {
            let mut data = noise(1316 + 16, (i * 1000 + n) as u64);
            data[0] &= 0x7F; // a data packet for some socket id
            data
        }
        _ => noise(1 + (i + n) % 200, (i * 31 + n) as u64),
    });
    assert!(flood.sent >= 99_000 && flood.ports == 1000, "{flood:?}");

    let before = player.frames();
    assert!(
        wait_until(Duration::from_secs(10), || player.frames() >= before + 50),
        "the healthy player stalled after the flood ({flood:?}): {} -> {} frames\n{}\n{}\n{}",
        before,
        player.frames(),
        player.describe(),
        origin.log_text(),
        proxy.log()
    );
    assert!(publisher.running(), "{}", publisher.describe());
    assert!(player.running(), "{}", player.describe());

    // Tables: the two healthy sessions now, and never more than the two plus the rejected or
    // refused callers' brief ones (none is kept: rejections happen before a session exists).
    assert!(
        wait_until(Duration::from_secs(3), || proxy.table("udp_tables", "srt_sessions") == 2),
        "{:?}",
        proxy.shards()
    );
    assert_eq!(proxy.table("udp_tables_peak", "srt_sessions"), 2, "{:?}", proxy.shards());
    let log = proxy.p.log_text();
    assert!(!log.contains("panicked"), "{log}");
    let t0 = Instant::now();
    let frames = player.frames();
    assert!(
        wait_until(Duration::from_secs(5), || player.frames() > frames),
        "stalled at the end after {:?}",
        t0.elapsed()
    );
}

/// 5000 CONCLUSIONs with a valid cookie and a 500-byte stream id the proxy refuses (no `r=`),
/// from 50 sockets, while a publisher and a player flow through the proxy: each caller gets its
/// 1400 rejection, but the log holds at most 5 such warnings per shard per 10 s, each cut to
/// a sane length, plus summary lines that account for every other refusal; the player keeps
/// decoding and the System API keeps answering quickly.
#[test]
fn refused_srt_handshakes_log_a_bounded_number_of_lines() {
    let (origin, proxy) = relay_and_proxy();
    let (mut publisher, mut player) = healthy_stream(&proxy, 60);
    let to = proxy.srt_addr();
    let bad_sid = format!("#!::m=publish,u={}", "\"x".repeat(250)); // no r=: refused with 1400
    let t0 = Instant::now();
    let refused: usize = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..50u32)
            .map(|i| {
                let bad_sid = &bad_sid;
                scope.spawn(move || {
                    let caller = SrtCaller::new(0x3333_0000 + i);
                    let cookie = caller.induction(to).unwrap();
                    let conclusion = srt_conclusion(caller.socket_id, cookie, Some(bad_sid));
                    (0..100)
                        .filter(|_| {
                            caller.ask(to, &conclusion, Duration::from_secs(2)).is_some_and(|a| a.hs_type == 2400)
                        })
                        .count()
                })
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).sum()
    });
    let took = t0.elapsed();
    assert!(refused >= 4990, "only {refused} of 5000 refusals came back");
    let before = player.frames();
    let api = proxy.p.api_addr();
    let t_api = Instant::now();
    assert_eq!(common::get(&api, "/api/v1/versions").status, 200);
    assert!(t_api.elapsed() < Duration::from_millis(500), "the System API took {:?}", t_api.elapsed());

    // The summaries of the last windows come once those are over (10 s, checked every second).
    let summaries = |log: &str| -> Vec<u64> {
        log.lines()
            .filter(|l| l.contains("srt caller refused (bad stream id): ... and "))
            .filter_map(|l| l.split(" and ").nth(1)?.split(' ').next()?.parse().ok())
            .collect()
    };
    let warned = |log: &str| log.lines().filter(|l| l.contains("refused: stream id")).count() as u64;
    let accounted = wait_until(Duration::from_secs(15), || {
        let log = proxy.p.log_text();
        warned(&log) + summaries(&log).iter().sum::<u64>() >= refused as u64
    });
    let log = proxy.p.log_text();
    let (lines, suppressed) = (warned(&log), summaries(&log));
    eprintln!(
        "{refused} refusals in {took:?}: {lines} warnings, summaries {suppressed:?}, {} log lines in all",
        log.lines().count()
    );
    assert!(accounted, "refusals not accounted for: {lines} lines + {suppressed:?}\n{log}");
    // 2 shards; the flood and the wait fit in three windows of 10 s.
    let windows = took.as_secs() / 10 + 3;
    assert!(lines <= 2 * 5 * windows, "{lines} warnings for {refused} refusals in {took:?}");
    assert!(suppressed.len() as u64 <= 2 * windows, "{suppressed:?}");
    assert!(log.lines().count() < 200, "{} log lines", log.lines().count());
    for line in log.lines().filter(|l| l.contains("refused: stream id")) {
        assert!(line.len() < 600, "{} characters: {line}", line.len());
        let cut = format!("…\" ({} bytes)", bad_sid.len());
        assert!(line.contains(&cut), "the stream id is cut and its size given: {line}");
    }

    assert!(
        wait_until(Duration::from_secs(10), || player.frames() >= before + 50),
        "the healthy player stalled: {} -> {} frames\n{}\n{}",
        before,
        player.frames(),
        player.describe(),
        origin.log_text()
    );
    assert!(publisher.running() && player.running(), "{}\n{}", publisher.describe(), player.describe());
}
