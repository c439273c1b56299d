//! The WebRTC proxy end to end with real peers: aiortc clients (WHIP publisher, WHEP player)
//! and an aiortc WHIP/WHEP origin (`tests/webrtc/peer.py`), so real ICE, DTLS and SRTP cross
//! the proxy's UDP port. The origin has two sites, registered as the origins `rtc-a` and
//! `rtc-b`, each with its own HTTP API port and WebRTC UDP port; the WHIP stream is named to
//! land on `rtc-a` and the WHEP stream on `rtc-b`, and the origin relays the newest WHIP
//! publisher's video to its WHEP players, so every frame a player counts was sent by the
//! publisher through the proxy and came back through it.
//!
//! The origin cannot reach a client directly (it points the offer's candidates at a socket it
//! never reads, see peer.py), so ICE can only succeed through the proxy; the tests check it
//! anyway from both ends' nominated pairs.

mod common;

use std::time::{Duration, Instant};

use common::udp_peers::*;
use common::wait_until;
use serde_json::Value;

const A: &str = "rtc-a-s-1";
const B: &str = "rtc-b-s-1";
const CONNECT: Duration = Duration::from_secs(30);

/// The origin and a proxy that knows its two sites (`rtc` written the SRS heartbeat way for one,
/// as a bare port for the other).
fn origin_and_proxy() -> (AiortcOrigin, UdpProxy) {
    origin_and_proxy_with(&[])
}

fn origin_and_proxy_with(flags: &[&str]) -> (AiortcOrigin, UdpProxy) {
    let origin = AiortcOrigin::start(2);
    let proxy = UdpProxy::start(flags);
    let (a, b) = (origin.sites[0], origin.sites[1]);
    proxy.register(&origin_body_udp("rtc-a", &[], &[a.api], &[format!("udp://0.0.0.0:{}", a.rtc)]));
    proxy.register(&origin_body_udp("rtc-b", &[], &[b.api], &[b.rtc.to_string()]));
    (origin, proxy)
}

/// Checks a client's answer event: 201 with `application/sdp`, a `Location` on the proxy (a
/// path, no origin host), and host candidates naming the proxy's WebRTC port only.
fn check_answer(what: &str, answer: &Value, proxy: &UdpProxy, origin: &AiortcOrigin, api: &str) {
    assert_eq!(answer["status"], 201, "{what}: {answer}");
    assert_eq!(answer["content_type"], "application/sdp", "{what}: {answer}");
    let location = answer["location"].as_str().unwrap_or_else(|| panic!("{what}: no Location: {answer}"));
    assert!(
        location.starts_with(&format!("/rtc/v1/{api}/?")),
        "{what}: Location {location:?} is not a path on the proxy"
    );
    let candidates: Vec<&str> = answer["candidates"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(!candidates.is_empty(), "{what}: no candidates in the answer: {answer}");
    for c in &candidates {
        assert!(
            c.contains(&format!(" 127.0.0.1 {} typ host", proxy.webrtc)),
            "{what}: candidate {c:?} does not name the proxy"
        );
        for site in &origin.sites {
            assert!(!c.contains(&format!(" {} typ", site.rtc)), "{what}: candidate {c:?} names an origin port");
        }
    }
}

/// The client's nominated pair: (local, remote).
fn pair(connected: &Value) -> (String, String) {
    (connected["local"].as_str().unwrap_or("").to_string(), connected["remote"].as_str().unwrap_or("").to_string())
}

/// The harness alone: an aiortc publisher straight to the origin, whose WHEP player then gets
/// its frames.
#[test]
fn the_aiortc_peers_work_without_the_proxy() {
    let origin = AiortcOrigin::start(2);
    let (a, b) = (origin.sites[0], origin.sites[1]);
    let mut publisher = whip_publish(&format!("http://127.0.0.1:{}/rtc/v1/whip/?app=live&stream=d", a.api), 20);
    publisher.wait_event("connected", CONNECT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wait_until(Duration::from_secs(15), || origin.whip_frames() >= 30),
        "{}\n{}",
        origin.stats(),
        publisher.describe()
    );
    let mut player = whep_play(&format!("http://127.0.0.1:{}/rtc/v1/whep/?app=live&stream=d", b.api), 4);
    player.wait_event("done", CONNECT).unwrap_or_else(|e| panic!("{e}"));
    assert!(player.frames() >= 30, "direct WHEP got {} frames: {}", player.frames(), player.describe());
}

/// WHIP from one aiortc client through the proxy to the aiortc origin, WHEP from a second
/// client through the proxy: the answers name the proxy (candidates, Location), both ICE
/// sessions are nominated on the proxy's address at the client and on a proxy socket at the
/// origin (never the client's own), frames arrive at the origin and at the player, the
/// proxy counts the sessions and bytes, and WHIP DELETE through the Location reaches the
/// origin.
#[test]
fn whip_and_whep_through_the_proxy_with_aiortc() {
    let (origin, proxy) = origin_and_proxy();
    let publish = name_on("__defaultVhost__", "pub", A, &[A, B]);
    let play = name_on("__defaultVhost__", "play", B, &[A, B]);

    let mut publisher = whip_publish(&proxy.rtc_url("whip", &publish), 14);
    let answer = publisher.wait_event("answer", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    check_answer("whip", &answer, &proxy, &origin, "whip");
    let connected = publisher.wait_event("connected", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let (pub_local, pub_remote) = pair(&connected);
    assert_eq!(pub_remote, format!("127.0.0.1:{}", proxy.webrtc), "the publisher's nominated pair: {connected}");
    assert!(
        wait_until(Duration::from_secs(15), || origin.whip_frames() >= 60),
        "the origin decoded {} WHIP frames\n{}\n{}",
        origin.whip_frames(),
        publisher.describe(),
        proxy.log()
    );

    let mut player = whep_play(&proxy.rtc_url("whep", &play), 5);
    let answer = player.wait_event("answer", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    check_answer("whep", &answer, &proxy, &origin, "whep");
    let connected = player.wait_event("connected", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let (play_local, play_remote) = pair(&connected);
    assert_eq!(play_remote, format!("127.0.0.1:{}", proxy.webrtc), "the player's nominated pair: {connected}");
    player.wait_event("done", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(
        player.frames() >= 60,
        "the WHEP player decoded {} frames\n{}\n{}",
        player.frames(),
        player.describe(),
        proxy.log()
    );
    assert_eq!(player.event("deleted").map(|e| e["status"].clone()), Some(Value::from(200)), "{}", player.describe());

    // What the origin saw: each session's peer is a proxy socket, not the client itself.
    let stats = origin.stats();
    let sessions = stats["sessions"].as_array().unwrap();
    let whip = sessions.iter().find(|s| s["whip"] == true && s["site"] == 0).unwrap_or_else(|| panic!("{stats}"));
    let whep = sessions.iter().find(|s| s["whip"] == false && s["site"] == 1).unwrap_or_else(|| panic!("{stats}"));
    for (what, s, client) in [("whip", whip, &pub_local), ("whep", whep, &play_local)] {
        let (local, remote) = (s["pair"][0].as_str().unwrap_or(""), s["pair"][1].as_str().unwrap_or(""));
        let site = &origin.sites[s["site"].as_u64().unwrap() as usize];
        assert_eq!(local, format!("127.0.0.1:{}", site.rtc), "{what}: the origin's ICE socket: {s}");
        assert!(
            remote.starts_with("127.0.0.1:") && remote != client,
            "{what}: the origin talks to {remote}, the client is {client}"
        );
        assert_ne!(remote, format!("127.0.0.1:{}", stats["sink"]), "{what}: {s}");
    }
    let requests = stats["requests"].as_array().unwrap();
    let posts: Vec<&Value> = requests.iter().filter(|r| r["method"] == "POST").collect();
    assert_eq!(posts.len(), 2, "{requests:?}");
    assert!(posts.iter().all(|r| r["content_type"] == "application/sdp"), "Content-Type not forwarded: {requests:?}");

    let pub_key = format!("__defaultVhost__/live/{publish}");
    let play_key = format!("__defaultVhost__/live/{play}");
    assert_eq!(proxy.stream(&pub_key).unwrap()["origin"], A);
    assert_eq!(proxy.stream(&play_key).unwrap()["origin"], B);
    assert_eq!(proxy.sessions(&pub_key, "webrtc_publish"), 1, "{:?}", proxy.stream(&pub_key));
    assert!(
        wait_until(Duration::from_secs(3), || proxy.bytes(&pub_key, "webrtc").0 > 10_000
            && proxy.bytes(&play_key, "webrtc").1 > 5_000),
        "publish {:?}, play {:?}",
        proxy.bytes(&pub_key, "webrtc"),
        proxy.bytes(&play_key, "webrtc")
    );

    // WHIP DELETE through the proxy reaches the origin's resource.
    publisher.wait_event("done", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(
        publisher.event("deleted").map(|e| e["status"].clone()),
        Some(Value::from(200)),
        "{}",
        publisher.describe()
    );
    let requests = origin.stats()["requests"].as_array().unwrap().clone();
    let deleted = requests.iter().filter(|r| r["method"] == "DELETE" && r["site"] == 0).count();
    assert_eq!(deleted, 1, "{requests:?}");
}

/// While a WHIP publisher and a WHEP player run through the proxy, its WebRTC port gets STUN
/// with a wrong length, the largest STUN binding request UDP carries (a 65 480-byte USERNAME),
/// binding requests with unknown usernames, random datagrams and DTLS/RTP look-alikes from
/// unknown addresses, and 100 000 datagrams from 1000 sockets on distinct ports. The player
/// keeps decoding frames, nothing answers the junk, and every table stays within its bound.
#[test]
fn bad_webrtc_input_next_to_a_healthy_session() {
    let (origin, proxy) = origin_and_proxy();
    let publish = name_on("__defaultVhost__", "pub", A, &[A, B]);
    let play = name_on("__defaultVhost__", "play", B, &[A, B]);
    let mut publisher = whip_publish(&proxy.rtc_url("whip", &publish), 30);
    publisher.wait_event("connected", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(wait_until(Duration::from_secs(15), || origin.whip_frames() >= 30), "{}", publisher.describe());
    let mut player = whep_play(&proxy.rtc_url("whep", &play), 18);
    player.wait_event("connected", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(wait_until(Duration::from_secs(10), || player.frames() >= 30), "{}", player.describe());

    let to = proxy.webrtc_addr();
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bad: Vec<Vec<u8>> = Vec::new();
    let good = stun_binding(b"abcd:efgh", [7; 12]);
    for delta in [-8i32, -4, -1, 1, 4, 100, 1000] {
        let mut m = good.clone();
        let len = (u16::from_be_bytes([m[2], m[3]]) as i32 + delta).clamp(0, 65_535) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        bad.push(m); // message length that does not match the datagram
    }
    let mut truncated = good.clone();
    truncated.truncate(22);
    bad.push(truncated); // attribute header cut
    let mut attr_too_long = good.clone();
    attr_too_long[22..24].copy_from_slice(&60_000u16.to_be_bytes());
    bad.push(attr_too_long); // attribute length past the end
    // A 64 KiB USERNAME cannot be sent: an IPv4 UDP payload is at most 65 507 bytes (and a
    // STUN length field at most 65 535). The largest well-padded one: 20 + 4 + 65 480 bytes.
    let huge = stun_binding(&vec![b'u'; 65_480], [9; 12]);
    assert_eq!(huge.len(), 65_504);
    bad.push(huge.clone());
    bad.push(stun_binding(&[0xFF; 600], [3; 12])); // not UTF-8
    bad.push(stun_binding(b"nope:nope", [4; 12]));
    bad.push([&[0x16, 0xFE, 0xFD][..], &noise(200, 1)].concat()); // DTLS-looking
    bad.push([&[0x80, 0x60][..], &noise(1200, 2)].concat()); // RTP-looking
    bad.extend((0..200).map(|i| noise(1 + (i * 53) % 1400, 100 + i as u64)));
    bad.push(vec![0; 65_507]);
    for d in &bad {
        junk.send_to(d, to).unwrap_or_else(|e| panic!("send {} bytes: {e}", d.len()));
    }

    let flood = flood(to, 1000, 100, |i, n| match n % 3 {
        0 => stun_binding(format!("f{i}x{n}:spoof{i}").as_bytes(), [(i % 251) as u8; 12]),
        1 => noise(1 + (i + n) % 300, (i * 101 + n) as u64),
        _ => [&[0x80, 0x6F][..], &noise(160, (i * 7 + n) as u64)].concat(),
    });
    assert!(flood.sent >= 99_000 && flood.ports == 1000, "{flood:?}");

    // Nothing answered the junk.
    junk.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = vec![0u8; 65_536];
    assert!(junk.recv_from(&mut buf).is_err(), "the proxy answered junk");

    let before = player.frames();
    assert!(
        wait_until(Duration::from_secs(10), || player.frames() >= before + 60),
        "the healthy player stalled after the flood ({flood:?}): {before} -> {} frames\n{}\n{}",
        player.frames(),
        player.describe(),
        proxy.log()
    );
    assert!(
        player.try_status().is_none() && publisher.try_status().is_none(),
        "{}\n{}",
        player.describe(),
        publisher.describe()
    );

    // Bounds: the 2 healthy sessions with their one address each now and at every moment;
    // lookups never past 64 per shard and unknown usernames never past 4096 per shard.
    assert!(
        wait_until(Duration::from_secs(3), || proxy.table("udp_tables", "webrtc_sessions") == 2),
        "{:?}",
        proxy.shards()
    );
    assert_eq!(proxy.table("udp_tables_peak", "webrtc_sessions"), 2, "{:?}", proxy.shards());
    assert_eq!(proxy.table("udp_tables_peak", "webrtc_addresses"), 2, "{:?}", proxy.shards());
    assert!(proxy.table_peak("webrtc_lookups") <= 64, "{:?}", proxy.shards());
    let unknown = proxy.table_peak("webrtc_unknown_usernames");
    assert!((1..=4096).contains(&unknown), "unknown usernames peak {unknown}: {:?}", proxy.shards());
    let log = proxy.p.log_text();
    assert!(!log.contains("panicked"), "{log}");

    player.wait_event("done", CONNECT).unwrap_or_else(|e| panic!("{e}"));
    assert!(player.frames() >= before + 150, "{}", player.describe());
    let _ = publisher.wait_exit(Duration::from_secs(1));
}

/// A spoofed connectivity check: the player's own USERNAME from another address, without the
/// MESSAGE-INTEGRITY only the holder of the ICE password can write. The session stays with the
/// player: the spoofer gets at most the origin's STUN error answers to its own requests, never
/// media, and the player keeps decoding. One shard, so the spoofer's datagrams reach the shard
/// that holds the player's session (with more, the kernel may hash them to another shard, which
/// opens a session of its own that the origin never authenticates).
#[test]
fn a_spoofed_check_does_not_take_the_session() {
    let (origin, proxy) = origin_and_proxy_with(&["--shards", "1"]);
    let publish = name_on("__defaultVhost__", "pub", A, &[A, B]);
    let play = name_on("__defaultVhost__", "play", B, &[A, B]);
    let mut publisher = whip_publish(&proxy.rtc_url("whip", &publish), 20);
    publisher.wait_event("connected", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(wait_until(Duration::from_secs(15), || origin.whip_frames() >= 30), "{}", publisher.describe());
    let mut player = whep_play(&proxy.rtc_url("whep", &play), 12);
    player.wait_event("connected", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(wait_until(Duration::from_secs(10), || player.frames() >= 30), "{}", player.describe());
    let to = proxy.webrtc_addr();
    let mut buf = vec![0u8; 65_536];

    // A spoofed connectivity check: the player's own USERNAME from another address, without
    // the MESSAGE-INTEGRITY only the holder of the ICE password can write. The session stays
    // with the player: the spoofer gets at most the origin's STUN error answer to its own
    // requests, never media, and the player keeps decoding.
    let username = player.event("answer").unwrap()["username"].as_str().unwrap().to_string();
    let spoofer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    spoofer.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let (before, t0) = (player.frames(), Instant::now());
    let mut got: Vec<Vec<u8>> = Vec::new();
    for i in 0u8.. {
        if t0.elapsed() >= Duration::from_secs(2) {
            break;
        }
        let _ = spoofer.send_to(&stun_binding(username.as_bytes(), [i; 12]), to);
        while let Ok((n, _)) = spoofer.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    assert!(!got.is_empty(), "the origin's answers to the spoofer's checks did not come back to it\n{}", proxy.log());
    let not_stun_errors =
        got.iter().filter(|d| d.len() < 20 || d[..2] != [0x01, 0x11] || d[4..8] != [0x21, 0x12, 0xA4, 0x42]);
    assert_eq!(
        not_stun_errors.count(),
        0,
        "the spoofer of {username:?} received {} datagrams, not all STUN error responses\n{}",
        got.len(),
        proxy.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || player.frames() >= before + 60),
        "the player stalled while its USERNAME was spoofed: {before} -> {}\n{}",
        player.frames(),
        proxy.log()
    );

    assert_eq!(proxy.table("udp_tables", "webrtc_addresses"), 2, "the spoofer joined a session: {:?}", proxy.shards());
    player.wait_event("done", CONNECT).unwrap_or_else(|e| panic!("{e}"));
}
