//! The local origin (`--local-origin`) end to end with real peers: ffmpeg publishes to
//! streamgate with no origin registered; ffprobe and ffmpeg play the stream over RTMP and
//! HTTP-FLV from every shard; a second publisher is refused as SRS refuses it; players end when
//! the publisher leaves; an origin registered later takes new streams while a local one stays
//! local. Which origin serves what is read from nginx-rtmp's own stat page.

mod common;

use std::time::Duration;

use common::peers::*;
use common::rtmp_client::{Handshake, RtmpClient};
use common::*;
use serde_json::Value;
use streamgate::control::grpc::proto::Empty;
use streamgate::control::grpc::proto::module_service_client::ModuleServiceClient;

/// Deadline for a publish to be served (the VM is slow and shared).
const PUBLISH_WAIT: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(25);

fn rtmp_url(p: &Proxy, stream: &str) -> String {
    format!("rtmp://127.0.0.1:{}/live/{stream}", p.rtmp)
}

fn flv_url(p: &Proxy, stream: &str) -> String {
    format!("http://127.0.0.1:{}/live/{stream}.flv", p.http)
}

/// ffmpeg publishing `stream` to the proxy for `seconds`, once the proxy serves it locally.
fn publish_local(p: &Proxy, stream: &str, seconds: u32) -> Ffmpeg {
    let mut publisher = Ffmpeg::publish(&rtmp_url(p, stream), seconds);
    let line = format!("rtmp publish __defaultVhost__/live/{stream} from");
    let served = || p.log_text().lines().any(|l| l.contains(&line) && l.contains("served locally"));
    if !wait_until(PUBLISH_WAIT, served) {
        panic!("{stream} was never served locally: {}\n{}", publisher.describe(), p.log_text());
    }
    publisher
}

/// Two shards, no origin: ten ffprobe and ten ffmpeg players, half RTMP and half HTTP-FLV, all
/// at once, so that some land on the shard that does not hold the publisher (the kernel hashes
/// each connection to a shard: all twenty on the publisher's has odds of 2^-20). Every probe
/// finds H.264 and AAC, every player decodes its frames cleanly, and the stream was forwarded
/// to the other shard.
#[test]
fn a_local_stream_plays_over_rtmp_and_http_flv_on_every_shard_with_no_origin() {
    let p = Proxy::start(&["--local-origin", "auto", "--shards", "2"]);
    let _publisher = publish_local(&p, "a", 60);
    let urls = [rtmp_url(&p, "a"), flv_url(&p, "a")];
    let probes = {
        let urls = urls.clone();
        in_parallel(10, move |i| probe_h264_aac(&urls[i % 2], PROBE_TIMEOUT))
    };
    for (i, probe) in probes.into_iter().enumerate() {
        if let Err(e) = probe {
            panic!("probe {i}: {e}\n{}", p.log_text());
        }
    }
    let played = {
        let urls = urls.clone();
        in_parallel(10, move |i| play_frames(&urls[i % 2], 50, Duration::from_secs(40)))
    };
    for (i, played) in played.into_iter().enumerate() {
        match played {
            Ok(played) if played.clean(50) => {}
            other => panic!("player {i} ({}): {other:?}\n{}", urls[i % 2], p.log_text()),
        }
    }
    let log = p.log_text();
    assert!(
        log.contains("local __defaultVhost__/live/a: players on shard"),
        "never forwarded to another shard:\n{log}"
    );
    assert!(log.contains("rtmp play") && log.contains("http_flv play"), "{log}");
}

/// One shard: a second publisher of the live local stream gets `NetStream.Publish.BadName`;
/// the publisher leaves and its RTMP and HTTP-FLV players end within seconds, and the key is
/// free again for a new publisher.
#[test]
fn a_second_publisher_is_refused_and_players_end_when_the_publisher_leaves() {
    let p = Proxy::start(&["--local-origin", "auto", "--shards", "1"]);
    let mut publisher = publish_local(&p, "b", 60);

    let mut second = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = second.publish("b", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    assert_eq!(status.code, "NetStream.Publish.BadName", "{status:?}\n{}", p.log_text());
    assert_eq!(status.level, "error", "{status:?}");

    let mut players = [Ffmpeg::play(&rtmp_url(&p, "b"), 60), Ffmpeg::play(&flv_url(&p, "b"), 60)];
    assert!(wait_until(Duration::from_secs(20), || players.iter().all(|f| f.frames() >= 25)), "{}", p.log_text());
    publisher.kill();
    for f in &mut players {
        let status = f.wait_timeout(Duration::from_secs(10));
        assert!(status.is_some(), "a player still runs after the publisher left: {}\n{}", f.describe(), p.log_text());
    }
    let log = p.log_text();
    assert!(log.contains("(local) ended after") && log.contains("its players end"), "{log}");
    let ended = log.lines().filter(|l| l.contains("play __defaultVhost__/live/b from") && l.contains("publisher left"));
    assert_eq!(ended.count(), 2, "both players' ends logged with the reason:\n{log}");

    let _again = publish_local(&p, "b2", 10);
    let _back = Ffmpeg::publish(&rtmp_url(&p, "b"), 10);
    let served = || {
        let log = p.log_text();
        log.lines()
            .filter(|l| l.contains("rtmp publish __defaultVhost__/live/b from") && l.contains("served locally"))
            .count()
            >= 2
    };
    assert!(wait_until(PUBLISH_WAIT, served), "the key was not free again:\n{}", p.log_text());
}

/// `--local-origin auto`: a stream published with no origin is local; an origin registered
/// later takes new streams, while the local one stays local (and playable) until its publisher
/// leaves. `/api/v1/streams` (`local`) and GetRoutes (`source`, `status`) tell them apart.
#[test]
fn an_origin_registered_later_takes_new_streams_while_a_local_one_stays_local() {
    let p = Proxy::start(&["--local-origin", "auto", "--shards", "1"]);
    let _local = publish_local(&p, "c", 60);
    let origin = NginxRtmp::start(4096);
    assert_eq!(register(&p.api_addr(), &origin_body("o", "s", origin.rtmp_port)).status, 200);
    wait_proven(&p.api_addr(), &["o-s-1"]);
    let _relayed = Ffmpeg::publish(&rtmp_url(&p, "d"), 60);
    assert!(wait_until(PUBLISH_WAIT, || origin.publishing("d")), "d never reached the origin\n{}", p.log_text());
    if let Err(e) = probe_h264_aac(&rtmp_url(&p, "c"), PROBE_TIMEOUT) {
        panic!("the local stream stopped playing: {e}\n{}", p.log_text());
    }
    assert!(!origin.publishing("c"), "the local stream moved to the origin");

    // /api/v1/streams and GetRoutes tell the local stream from the relayed one.
    let local = |stream: &str| {
        let streams = get(&p.api_addr(), "/api/v1/streams").json();
        let key = format!("__defaultVhost__/live/{stream}");
        streams["streams"].as_array().and_then(|l| l.iter().find(|s| s["key"] == key).map(|s| s["local"].clone()))
    };
    assert!(wait_until(Duration::from_secs(5), || local("c") == Some(Value::Bool(true))), "c: {:?}", local("c"));
    assert_eq!(local("d"), Some(Value::Bool(false)));
    let routes = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let mut client = ModuleServiceClient::connect(format!("http://127.0.0.1:{}", p.grpc)).await.unwrap();
        client.get_routes(Empty {}).await.unwrap().into_inner().routes
    });
    let route = |stream: &str| routes.iter().find(|r| r.stream_key.ends_with(&format!("/live/{stream}"))).unwrap();
    assert_eq!(route("c").source, format!("rtmp://127.0.0.1:{}/live/c", p.rtmp), "{routes:?}");
    assert_eq!(route("c").status, "active", "{routes:?}");
    assert_eq!(route("d").source, format!("rtmp://127.0.0.1:{}/live/d", origin.rtmp_port), "{routes:?}");
}

/// `--local-origin off`: with no origin a publisher is refused, as before.
#[test]
fn with_the_local_origin_off_a_publisher_needs_an_origin() {
    let p = Proxy::start(&["--local-origin", "off"]);
    let mut client = RtmpClient::open(p.rtmp, Handshake::Simple).unwrap();
    let status = client.publish("e", |_| Vec::new(), Duration::from_secs(10)).unwrap();
    assert_eq!(status.code, "NetStream.Publish.BadName", "{status:?}");
    assert!(!p.log_text().contains("served locally"), "{}", p.log_text());
}

/// `--local-origin on`: a publisher is served locally even with an origin alive to take it.
#[test]
fn with_the_local_origin_on_a_publisher_stays_local_despite_an_origin() {
    let p = Proxy::start(&["--local-origin", "on"]);
    let origin = NginxRtmp::start(4096);
    assert_eq!(register(&p.api_addr(), &origin_body("o", "s", origin.rtmp_port)).status, 200);
    wait_proven(&p.api_addr(), &["o-s-1"]);
    let _local = publish_local(&p, "f", 30);
    if let Err(e) = probe_h264_aac(&flv_url(&p, "f"), PROBE_TIMEOUT) {
        panic!("{e}\n{}", p.log_text());
    }
    assert!(!origin.publishing("f"), "the stream reached the origin");
}
