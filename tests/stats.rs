//! Statistics end to end with real peers: ffmpeg publishes a 640x360 25 fps H.264 + AAC test
//! signal through the real binary to a real nginx-rtmp origin, and the System API shows what
//! the proxy read from the publisher's messages (`/api/v1/streams` media) and what each shard
//! counted (`/api/v1/shards`).

mod common;

use std::time::Duration;

use common::peers::*;
use common::*;
use serde_json::Value;

const KEY: &str = "__defaultVhost__/live/stats";

fn media(p: &Proxy) -> Option<Value> {
    let streams = get(&p.api_addr(), "/api/v1/streams").json();
    let entry = streams["streams"].as_array()?.iter().find(|s| s["key"] == KEY)?.clone();
    entry.get("media").filter(|m| !m.is_null()).cloned()
}

fn shards(p: &Proxy) -> Value {
    let reply = get(&p.api_addr(), "/api/v1/shards");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// Sum over shards of `field.name` (e.g. `accepted.rtmp`).
fn sum(shards: &Value, field: &str, name: &str) -> u64 {
    shards["shards"].as_array().unwrap().iter().map(|s| s[field][name].as_u64().unwrap()).sum()
}

#[test]
fn publisher_media_and_shard_counters() {
    let origin = NginxRtmp::start(4096);
    let p = Proxy::start(&["--shards", "2"]);
    assert_eq!(register(&p.api_addr(), &origin_body("stats", "s", origin.rtmp_port)).status, 200);

    // Both shards report within a couple of seconds, with every counter at zero.
    assert!(
        wait_until(Duration::from_secs(10), || shards(&p)["shards"]
            .as_array()
            .is_some_and(|l| l.len() == 2 && l.iter().all(|s| s["report_age_seconds"].is_number()))),
        "{}",
        shards(&p)
    );
    let before = shards(&p);
    assert_eq!(before["total"]["accepted"]["rtmp"], 0, "{before}");
    assert_eq!(before["total"]["pick_failures"]["no_origin"], 0, "{before}");

    let url = format!("rtmp://127.0.0.1:{}/live/stats", p.rtmp);
    let mut publisher = Ffmpeg::publish(&url, 14);
    assert!(
        wait_until(Duration::from_secs(20), || origin.publishing("stats")),
        "never published: {}\n{}",
        publisher.describe(),
        p.log_text()
    );

    // What the proxy read from ffmpeg's messages.
    let mut m = Value::Null;
    let ready = wait_until(Duration::from_secs(10), || {
        m = media(&p).unwrap_or(Value::Null);
        m["height"] == 360 && m["fps"].as_f64().is_some_and(|f| f > 0.0)
    });
    assert!(ready, "media never complete: {m}\n{}", p.log_text());
    assert_eq!((m["width"].as_u64(), m["height"].as_u64()), (Some(640), Some(360)), "{m}");
    assert_eq!((m["video_codec"].as_str(), m["audio_codec"].as_str()), (Some("h264"), Some("aac")), "{m}");
    assert_eq!(m["meta_fps"], 25.0, "{m}");
    assert_eq!(m["publishing"], true, "{m}");
    assert_eq!(m["dropped_frames"], 0, "{m}");
    assert_eq!(m["audio_sample_rate"], 44100, "{m}");
    assert!(m["encoder"].as_str().is_some_and(|e| e.starts_with("Lavf")), "{m}");

    // Frames count up at about 25 a second (ffmpeg -re paces them), key frames every 2 s.
    let first = m["video_frames"].as_u64().unwrap();
    let mut rates = Vec::new();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1000));
        rates.push(media(&p).unwrap()["fps"].as_f64().unwrap());
    }
    let m = media(&p).unwrap();
    let later = m["video_frames"].as_u64().unwrap();
    assert!(later >= first + 50, "frames {first} -> {later} in 4 s: {m}");
    assert!(m["keyframes"].as_u64().unwrap() >= 2, "{m}");
    assert!(m["audio_frames"].as_u64().unwrap() > later, "AAC at 44.1 kHz has 43 frames a second: {m}");
    rates.sort_by(f64::total_cmp);
    let median = (rates[1] + rates[2]) / 2.0;
    assert!((20.0..=30.0).contains(&median), "fps readings {rates:?}: {m}");

    // Per-shard counters: the publisher's connection is accepted and open on one shard.
    let during = shards(&p);
    assert_eq!(sum(&during, "accepted", "rtmp"), 1, "{during}");
    assert_eq!(sum(&during, "open_by_listener", "rtmp"), 1, "{during}");
    assert_eq!(during["total"]["open_by_listener"]["rtmp"], 1, "{during}");
    assert!(during["total"]["open"].as_u64().unwrap() >= 1, "{during}");
    assert!(during["bytes_by_protocol"]["rtmp"]["bytes_in"].as_u64().unwrap() > 100_000, "{during}");

    // An HTTP request on the stream listener counts there, and closes.
    let reply = get(&p.http_addr(), "/api/v1/versions");
    assert_eq!(reply.status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = shards(&p);
            sum(&s, "accepted", "http_stream") == 1 && sum(&s, "open_by_listener", "http_stream") == 0
        }),
        "{}",
        shards(&p)
    );

    // The publisher ends: media stays, no longer publishing; its connection is closed.
    let status = publisher.wait_timeout(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "publisher: {}", publisher.describe());
    assert!(
        wait_until(Duration::from_secs(10), || media(&p).is_some_and(|m| m["publishing"] == false)),
        "{:?}",
        media(&p)
    );
    let m = media(&p).unwrap();
    assert_eq!(m["fps"], 0.0, "{m}");
    assert!((320..=360).contains(&m["video_frames"].as_u64().unwrap()), "14 s at 25 fps: {m}");
    assert!(wait_until(Duration::from_secs(5), || shards(&p)["total"]["open"] == 0), "{}", shards(&p));
    assert_eq!(shards(&p)["total"]["accepted"]["rtmp"], 1);
}

/// A stream with no alive origin is refused and counted, by reason. Relayed players
/// (`--edge off`): an edge pull retries a failed dial every half second while its players wait
/// (`--edge-stall-timeout`), each retry a dial counted.
#[test]
fn pick_failures_are_counted() {
    let p = Proxy::start(&["--edge", "off"]);
    let url = format!("rtmp://127.0.0.1:{}/live/nowhere", p.rtmp);
    assert!(ffprobe_streams(&url, Duration::from_secs(20)).is_err());
    // A registered origin whose RTMP port nobody listens on: the dial fails.
    let gone = ClosedPort::new();
    assert_eq!(register(&p.api_addr(), &origin_body("gone", "s", gone.port)).status, 200);
    assert!(ffprobe_streams(&url, Duration::from_secs(20)).is_err());
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = shards(&p);
            s["total"]["pick_failures"]["no_origin"] == 1 && s["total"]["pick_failures"]["dial_failed"] == 1
        }),
        "{}",
        shards(&p)
    );
    let s = shards(&p);
    assert_eq!(s["total"]["accepted"]["rtmp"], 2, "{s}");
    assert_eq!(s["total"]["pick_failures"]["refused"], 0, "{s}");
}
