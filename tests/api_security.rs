//! The System API and gRPC under attack from loopback, each beside a healthy stream that must
//! not notice: ffmpeg publishes through the proxy to a real nginx-rtmp origin and a second
//! ffmpeg plays it back through the proxy, and after every attack the player must still be
//! getting frames. The attacks: oversized registrations and a registry too big to list in one
//! answer; registration floods of unproven origins and peers outside `--register-allow`; the
//! views, `/metrics` and gRPC with auth on; and bearer tokens written loosely.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::peers::*;
use common::*;
use serde_json::Value;
use streamgate::control::grpc::proto::Empty;
use streamgate::control::grpc::proto::module_service_client::ModuleServiceClient;

const PUBLISH_WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "t0k3n";
const AUTH_ON: [&str; 3] = ["--http-api-auth-enabled=on", "--http-api-auth-type=bearer", "--http-api-auth-token=t0k3n"];

/// A live stream through the proxy: nginx-rtmp origin, an ffmpeg publisher and an ffmpeg player.
struct Healthy {
    origin: NginxRtmp,
    publisher: Ffmpeg,
    player: Ffmpeg,
}

impl Healthy {
    /// Registers the origin (with `auth` as the Authorization header, if any) and starts both
    /// peers; returns once the player decodes frames.
    fn start(p: &Proxy, auth: Option<&str>) -> Healthy {
        let origin = NginxRtmp::start(4096);
        let body = origin_body("healthy", "h", origin.rtmp_port);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let reply = raw_http(&p.api_addr(), &request("POST", "/api/v1/srs/register", &headers, &body));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let url = format!("rtmp://127.0.0.1:{}/live/healthy", p.rtmp);
        let mut publisher = Ffmpeg::publish(&url, 150);
        if !wait_until(PUBLISH_WAIT, || origin.publishing("healthy")) {
            panic!("the healthy stream never published: {}\n{}", publisher.describe(), p.log_text());
        }
        let mut player = Ffmpeg::play(&url, 150);
        if !wait_until(PUBLISH_WAIT, || player.frames() > 25) {
            panic!("the healthy player got no frames: {}\n{}", player.describe(), p.log_text());
        }
        Healthy { origin, publisher, player }
    }

    /// The stream is still flowing: both peers run, and the player decodes another second.
    fn assert_flowing(&mut self, p: &mut Proxy, after: &str) {
        let before = self.player.frames();
        let moved = wait_until(Duration::from_secs(10), || self.player.frames() >= before + 25);
        assert!(
            moved && self.publisher.running() && self.player.running() && self.origin.publishing("healthy"),
            "the healthy stream noticed {after}: player {} -> {} frames\npublisher: {}\nplayer: {}\n{}",
            before,
            self.player.frames(),
            self.publisher.describe(),
            self.player.describe(),
            p.log_text()
        );
        assert!(p.child.try_wait().unwrap().is_none(), "the proxy exited:\n{}", p.log_text());
        assert!(!p.log_text().contains("panicked"), "{}", p.log_text());
    }
}

fn origin_id(p: &Proxy, device: &str, auth: Option<&str>) -> Option<Value> {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    let reply = raw_http(&p.api_addr(), &request("GET", "/api/v1/origins?limit=1000", &headers, ""));
    reply.json()["origins"].as_array().unwrap().iter().find(|o| o["device_id"] == device).cloned()
}

fn proven(p: &Proxy, device: &str, auth: Option<&str>) -> bool {
    origin_id(p, device, auth).is_some_and(|o| o["proven"] == true)
}

/// Registers every body over one keep-alive connection; the statuses in order.
fn register_many(api: &str, bodies: impl IntoIterator<Item = String>) -> Vec<u16> {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut statuses = Vec::new();
    for body in bodies {
        let req =
            format!("POST /api/v1/srs/register HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        s.write_all(req.as_bytes()).unwrap();
        statuses.push(read_reply(&mut s).status);
    }
    statuses
}

/// A registration of an origin nobody listens for (port 9 on loopback refuses the probe).
fn bogus(i: usize) -> String {
    format!(r#"{{"device_id":"bogus","ip":"127.0.0.1","server":"bogus{i}","service":"s","pid":"1","rtmp":["9"]}}"#)
}

/// The flags of a proxy that [`pin_over_http`] pins streams on.
const RELAY: [&str; 2] = ["--edge", "off"];

/// Creates a pin for `/live/<name>` through the HTTP stream listener (the claim comes before
/// the origin is dialed, so it pins even though the origin has no HTTP endpoint). The proxy
/// relays (`--edge off`, [`RELAY`]), so the answer comes at once: the edge would answer once
/// its pull of the stream gave up (`--edge-stall-timeout`).
fn pin_over_http(p: &Proxy, name: &str) {
    let req = format!("GET /live/{name}.flv HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let _ = raw_http(&p.http_addr(), req.as_bytes());
}

/// Follows `next` from `first` to the end; every page's entries, and the largest page body.
fn all_pages(p: &Proxy, first: &str, field: &str, auth: Option<&str>) -> (Vec<Value>, usize, Duration) {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    let (mut out, mut biggest, mut slowest) = (Vec::new(), 0, Duration::ZERO);
    let mut path = Some(first.to_string());
    while let Some(at) = path {
        let t0 = Instant::now();
        let reply = raw_http(&p.api_addr(), &request("GET", &at, &headers, ""));
        slowest = slowest.max(t0.elapsed());
        assert_eq!(reply.status, 200, "{at}: {}", reply.body);
        biggest = biggest.max(reply.body.len());
        let page = reply.json();
        out.extend(page[field].as_array().unwrap().iter().cloned());
        path = page["next"].as_str().map(str::to_string);
    }
    (out, biggest, slowest)
}

/// Registrations that each break one bound, with the reason the answer must give.
fn oversized_registrations() -> Vec<(String, &'static str)> {
    let long = |n: usize| "x".repeat(n);
    let ports = |n: usize| (0..n).map(|i| format!("\"{}\"", 1000 + i)).collect::<Vec<_>>().join(",");
    let base = |fields: &str| format!(r#"{{"ip":"127.0.0.1","server":"s","service":"v","pid":"1",{fields}}}"#);
    let huge = format!(
        r#"{{"ip":"127.0.0.1","server":"s","service":"v","pid":"1","rtmp":[{}]}}"#,
        vec!["\"1\""; 16_000].join(",")
    );
    assert!(huge.len() < 64 * 1024, "fits in a request body");
    vec![
        (huge, "rtmp has 16000 endpoints, over the limit of 16 per protocol"),
        (base(&format!(r#""rtmp":[{}]"#, ports(17))), "rtmp has 17 endpoints, over the limit of 16"),
        (
            base(&format!(r#""rtmp":[{}],"http":[{}],"srt":["1"]"#, ports(16), ports(16))),
            "33 endpoints in all lists together, over the limit of 32",
        ),
        (
            base(&format!(r#""rtmp":["{}"]"#, "0".repeat(65))),
            "an rtmp endpoint is 65 bytes long, over the limit of 64 bytes",
        ),
        (base(&format!(r#""rtmp":["1"],"rtc":["udp://{}"]"#, "1".repeat(60))), "an rtc endpoint is 66 bytes long"),
        (
            format!(r#"{{"ip":"127.0.0.1","server":"{}","service":"v","pid":"1","rtmp":["1"]}}"#, long(129)),
            "server is 129 bytes long, over the limit of 128 bytes",
        ),
        (
            format!(r#"{{"ip":"127.0.0.1","server":"s","service":"{}","pid":"1","rtmp":["1"]}}"#, long(200)),
            "service is 200 bytes long",
        ),
        (
            format!(r#"{{"ip":"127.0.0.1","server":"s","service":"v","pid":"{}","rtmp":["1"]}}"#, long(129)),
            "pid is 129 bytes long",
        ),
        (
            format!(
                r#"{{"device_id":"{}","ip":"127.0.0.1","server":"s","service":"v","pid":"1","rtmp":["1"]}}"#,
                long(129)
            ),
            "device_id is 129 bytes long",
        ),
        (
            format!(r#"{{"ip":"{}","server":"s","service":"v","pid":"1","rtmp":["1"]}}"#, long(65)),
            "ip is 65 bytes long, over the limit of 64 bytes",
        ),
    ]
}

/// The origin list in pages: `total`, the default and the biggest page, `next` links that
/// walk every origin once in id order, small and quick pages, 400 for a bad limit.
fn assert_origin_pages(p: &Proxy, total: usize) {
    let api = p.api_addr();
    let first = get(&api, "/api/v1/origins").json();
    assert_eq!(
        (first["total"].as_u64(), first["limit"].as_u64()),
        (Some(total as u64), Some(100)),
        "{}",
        first["total"]
    );
    assert_eq!(first["origins"].as_array().unwrap().len(), 100);
    assert!(first["next"].as_str().unwrap().starts_with("/api/v1/origins?limit=100&after="), "{}", first["next"]);
    let (all, biggest, slowest) = all_pages(p, "/api/v1/origins", "origins", None);
    let mut ids: Vec<&str> = all.iter().map(|o| o["id"].as_str().unwrap()).collect();
    let listed = ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "every origin once");
    assert_eq!(listed, ids, "in id order");
    eprintln!("origins: {} pages, biggest {biggest} bytes, slowest {slowest:?}", total.div_ceil(100));
    assert!(biggest < 256 * 1024 && slowest < Duration::from_secs(2), "{biggest} bytes, {slowest:?}");
    let big = get(&api, "/api/v1/origins?limit=100000").json();
    assert_eq!((big["limit"].as_u64(), big["origins"].as_array().unwrap().len()), (Some(1000), 1000), "capped");
    for bad in ["limit=0", "limit=ten", "limit=-5"] {
        let reply = get(&api, &format!("/api/v1/origins?{bad}"));
        assert_eq!(reply.status, 400, "{bad}");
        assert!(reply.json()["error"].as_str().unwrap().contains("from 1 to 1000"), "{}", reply.body);
    }
}

/// Item 1: bounded registrations and paged lists. Registrations over any bound get 400 naming
/// the field and the limit (the 16 000-endpoint body that once took RSS from 27 to 878 MB with
/// 1000 copies among them); then 1500 small origins and 150 streams are listed in pages of at
/// most 1000 entries with the total and a link to the next page, and `/api/v1/versions` stays
/// quick.
#[test]
fn registrations_are_bounded_and_lists_come_in_pages() {
    let mut p = Proxy::start(&RELAY);
    let mut healthy = Healthy::start(&p, None);
    let api = p.api_addr();
    for (body, want) in &oversized_registrations() {
        let reply = register(&api, body);
        assert_eq!(reply.status, 400, "{want}: {}", reply.body);
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(want), "want {want:?}, got {error:?}");
    }
    let origins = get(&api, "/api/v1/origins").json();
    assert_eq!(origins["total"], 1, "nothing over a bound was registered: {origins}");
    healthy.assert_flowing(&mut p, "the oversized registrations");

    // 1500 small origins: fine one by one, and listed in pages.
    let t0 = Instant::now();
    let statuses = register_many(&api, (0..1500).map(bogus));
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", statuses.iter().find(|s| **s != 200));
    eprintln!("1500 registrations took {:?}", t0.elapsed());
    for i in 0..150 {
        pin_over_http(&p, &format!("paged{i:03}"));
    }
    assert_origin_pages(&p, 1501);

    let (streams, _, _) = all_pages(&p, "/api/v1/streams?limit=40", "streams", None);
    let keys: Vec<&str> = streams.iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 151, "150 pinned streams and the healthy one: {keys:?}");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "in key order, each once");
    let healthy_entry = streams.iter().find(|s| s["key"] == "__defaultVhost__/live/healthy").unwrap();
    assert_eq!(healthy_entry["origin"], "healthy-h-1");
    // Among 1500 unproven origins, every new stream went to the proven one.
    for s in &streams {
        assert_eq!(s["origin"], "healthy-h-1", "{s}");
    }
    let default = get(&api, "/api/v1/streams").json();
    assert_eq!((default["total"].as_u64(), default["streams"].as_array().unwrap().len()), (Some(151), 100));

    let t0 = Instant::now();
    assert_eq!(get(&api, "/api/v1/versions").status, 200);
    assert!(t0.elapsed() < Duration::from_secs(1), "versions took {:?}", t0.elapsed());
    healthy.assert_flowing(&mut p, "1500 origins and paged lists");
}

/// Connects to `to` from the local address `source` (any address of this host reaches
/// loopback, and the proxy sees it as the peer).
fn connect_from(source: IpAddr, to: &str) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let socket = if source.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
        let socket = socket.unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(to.parse().unwrap()).await.unwrap().into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    })
}

fn register_from(source: IpAddr, api: &str, body: &str) -> HttpReply {
    let mut s = connect_from(source, api);
    s.write_all(&request("POST", "/api/v1/srs/register", &[], body)).unwrap();
    read_reply(&mut s)
}

/// A non-loopback IPv4 address of this host, if it has one (`hostname -I`).
fn non_loopback_ipv4() -> Option<IpAddr> {
    let out = std::process::Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback())
}

/// Item 2: registration is open only to loopback by default (said at startup), a flood of
/// unproven origins into a full table evicts unproven ones only (the proven origins stay, and
/// every new stream goes to them), a real origin that registers from another address during
/// the flood is proven and kept, a table full of proven origins refuses with 503, and peers
/// outside `--register-allow` get 403.
#[test]
fn floods_of_unproven_origins_never_displace_proven_ones() {
    let mut p = Proxy::start(&[&RELAY[..], &["--max-origins", "50"]].concat());
    assert!(p.log_text().contains("registration is open"), "{}", p.log_text());
    let mut healthy = Healthy::start(&p, None);
    assert!(wait_until(Duration::from_secs(10), || proven(&p, "healthy", None)), "{}", p.log_text());
    let spare = TcpListener::bind("127.0.0.1:0").unwrap();
    let spare_body = origin_body("spare", "s", spare.local_addr().unwrap().port());
    assert_eq!(register(&p.api_addr(), &spare_body).status, 200);
    assert!(wait_until(Duration::from_secs(10), || proven(&p, "spare", None)));

    let t0 = Instant::now();
    let statuses = register_many(&p.api_addr(), (0..2000).map(bogus));
    let took = t0.elapsed();
    assert!(statuses.iter().all(|s| *s == 200), "a full table of unproven origins makes room");
    eprintln!("2000 bogus registrations into a table of 50 took {took:?}");
    let origins = get(&p.api_addr(), "/api/v1/origins").json();
    assert_eq!(origins["total"], 50, "{}", origins["total"]);
    for device in ["healthy", "spare"] {
        assert!(proven(&p, device, None), "{device} lost: {origins}");
    }
    for i in 0..30 {
        pin_over_http(&p, &format!("after-flood{i}"));
    }
    let streams = get(&p.api_addr(), "/api/v1/streams?limit=1000").json();
    for s in streams["streams"].as_array().unwrap() {
        let origin = s["origin"].as_str().unwrap();
        assert!(origin == "healthy-h-1" || origin == "spare-s-1", "a new stream went to {origin}: {s}");
    }
    healthy.assert_flowing(&mut p, "2000 bogus registrations");

    // A real origin registering from another address while the flood goes on keeps its place
    // (the flood's own records are evicted first), is probed and stays.
    let late = TcpListener::bind("127.0.0.1:0").unwrap();
    let late_body = origin_body("late", "s", late.local_addr().unwrap().port());
    let flood_api = p.api_addr();
    let flood = std::thread::spawn(move || register_many(&flood_api, (2000..4000).map(bogus)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(register_from("127.0.0.2".parse().unwrap(), &p.api_addr(), &late_body).status, 200);
    assert!(wait_until(Duration::from_secs(10), || proven(&p, "late", None)), "{}", p.log_text());
    assert!(flood.join().unwrap().iter().all(|s| *s == 200));
    assert!(proven(&p, "late", None) && proven(&p, "spare", None) && proven(&p, "healthy", None));
    healthy.assert_flowing(&mut p, "a flood during a real origin's registration");

    // Peers outside the default (loopback) networks are refused with the reason.
    match non_loopback_ipv4() {
        Some(ip) => {
            let reply = register_from(ip, &p.api_addr(), &bogus(9999));
            assert_eq!(reply.status, 403, "{}", reply.body);
            let error = reply.json()["error"].as_str().unwrap().to_string();
            assert!(error.contains(&ip.to_string()) && error.contains("--register-allow"), "{error}");
            assert!(error.contains("127.0.0.0/8"), "{error}");
        }
        None => eprintln!("this host has no non-loopback IPv4 address: the default networks are checked below only"),
    }

    // A table of proven origins only: 503; peers outside an explicit list: 403.
    let mut q = Proxy::start(&["--max-origins", "2", "--register-allow", "127.0.0.1/32"]);
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut second_healthy = Healthy::start(&q, None);
    assert_eq!(register(&q.api_addr(), &origin_body("second", "s", second.local_addr().unwrap().port())).status, 200);
    assert!(wait_until(Duration::from_secs(10), || proven(&q, "second", None) && proven(&q, "healthy", None)));
    let reply = register(&q.api_addr(), &bogus(1));
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("registry full") && reply.body.contains("proven"), "{}", reply.body);
    assert_eq!(register(&q.api_addr(), &origin_body("second", "s", second.local_addr().unwrap().port())).status, 200);
    let reply = register_from("127.0.0.2".parse().unwrap(), &q.api_addr(), &bogus(2));
    assert_eq!(reply.status, 403, "{}", reply.body);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert_eq!(error, "registration from 127.0.0.2 is not allowed: not in --register-allow (127.0.0.1/32)");
    assert_eq!(get(&q.api_addr(), "/api/v1/origins").json()["total"], 2);
    second_healthy.assert_flowing(&mut q, "a full table and a refused peer");
    healthy.assert_flowing(&mut p, "the second proxy");
}

fn authed(p: &Proxy, path: &str, auth: Option<&str>) -> HttpReply {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    raw_http(&p.api_addr(), &request("GET", path, &headers, ""))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A ModuleService call with `authorization` metadata values.
fn grpc_status(p: &Proxy, auth: &[&str]) -> Result<i32, tonic::Status> {
    let url = format!("http://127.0.0.1:{}", p.grpc);
    runtime().block_on(async {
        let mut client = ModuleServiceClient::connect(url).await.unwrap();
        let mut req = tonic::Request::new(Empty {});
        for a in auth {
            req.metadata_mut().append("authorization", a.parse().unwrap());
        }
        client.get_status(req).await.map(|r| r.into_inner().active_streams)
    })
}

/// Lists services over reflection with `auth` metadata.
fn reflection_list(p: &Proxy, auth: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let url = format!("http://127.0.0.1:{}", p.grpc);
    runtime().block_on(async {
        let channel = tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut req = tonic::Request::new(futures_lite::stream::once(ask));
        if let Some(a) = auth {
            req.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        let mut answers = client.server_reflection_info(req).await?.into_inner();
        let answer = answers.message().await?.expect("an answer");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
        Ok(list.service.into_iter().map(|s| s.name).collect())
    })
}

fn grpc_health(p: &Proxy) -> tonic_health::pb::health_check_response::ServingStatus {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let url = format!("http://127.0.0.1:{}", p.grpc);
    runtime().block_on(async {
        let channel = tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap();
        let mut health = HealthClient::new(channel);
        health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status()
    })
}

/// Item 3: with auth on, the views, `/metrics` (which also takes `--metrics-token`) and gRPC
/// ModuleService and reflection need the token; `/api/v1/versions` and grpc.health.v1 stay open.
#[test]
fn auth_guards_the_views_metrics_and_grpc() {
    let mut flags = AUTH_ON.to_vec();
    flags.extend(["--metrics-token", "m3tr1cs"]);
    let mut p = Proxy::start(&flags);
    assert!(!p.log_text().contains("registration is open"), "{}", p.log_text());
    assert!(p.log_text().contains("registration needs the bearer token"), "{}", p.log_text());
    let good = format!("Bearer {TOKEN}");
    let mut healthy = Healthy::start(&p, Some(&good));
    for path in ["/api/v1/origins", "/api/v1/streams", "/api/v1/shards", "/api/v1/listeners", "/metrics"] {
        for bad in [None, Some("Bearer wrong"), Some(TOKEN)] {
            let reply = authed(&p, path, bad);
            assert_eq!(reply.status, 401, "{path} with {bad:?}: {}", reply.body);
            assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"), "{path}");
            assert!(reply.body.contains("Unauthorized"), "{}", reply.body);
        }
        let reply = authed(&p, path, Some(&good));
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let with_metrics_token = authed(&p, path, Some("Bearer m3tr1cs")).status;
        assert_eq!(with_metrics_token, if path == "/metrics" { 200 } else { 401 }, "{path} with the metrics token");
    }
    assert!(authed(&p, "/metrics", Some("Bearer m3tr1cs")).body.contains("streamgate_streams 1\n"));
    assert_eq!(authed(&p, "/api/v1/versions", None).status, 200, "versions stays open");
    let reply = register(&p.api_addr(), &bogus(1));
    assert_eq!(reply.status, 401, "register without the token: {}", reply.body);

    fn unauthenticated<T>(r: Result<T, tonic::Status>) -> Option<(tonic::Code, String)> {
        r.err().map(|s| (s.code(), s.message().to_string()))
    }
    let (code, message) = unauthenticated(grpc_status(&p, &[])).expect("refused without a token");
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(message.contains("no Authorization"), "{message}");
    let (code, _) = unauthenticated(grpc_status(&p, &["Bearer wrong"])).expect("refused with a wrong token");
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert_eq!(grpc_status(&p, &[&good]).unwrap(), 1, "the healthy stream is active");
    let (code, _) = unauthenticated(reflection_list(&p, None)).expect("reflection refused without a token");
    assert_eq!(code, tonic::Code::Unauthenticated);
    let mut services = reflection_list(&p, Some(&good)).unwrap();
    services.sort();
    assert_eq!(services, ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "marchproxy.ModuleService"]);
    use tonic_health::pb::health_check_response::ServingStatus;
    assert!(wait_until(Duration::from_secs(5), || grpc_health(&p) == ServingStatus::Serving), "health stays open");
    // The same with grpcio, a second, independent client.
    let python = python_with("grpc")
        .unwrap_or_else(|tried| panic!("no Python with grpcio ({tried}); scripts/test.sh installs it in target/py"));
    let mut cmd = std::process::Command::new(python);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/auth_check.py");
    cmd.args([script, &format!("127.0.0.1:{}", p.grpc), TOKEN]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(out.status.is_some_and(|s| s.success()) && out.stdout.ends_with("OK\n"), "{}{}", out.stdout, out.stderr);
    healthy.assert_flowing(&mut p, "unauthenticated views, metrics and gRPC calls");

    // The metrics token alone, with auth off: /metrics needs it, the rest is as before.
    let q = Proxy::start(&["--metrics-token", "m3tr1cs"]);
    assert_eq!(authed(&q, "/metrics", None).status, 401);
    assert_eq!(authed(&q, "/metrics", Some("Bearer m3tr1cs")).status, 200);
    assert_eq!(authed(&q, "/api/v1/origins", None).status, 200);
    assert!(grpc_status(&q, &[]).is_ok(), "gRPC follows the auth switch");
    healthy.assert_flowing(&mut p, "a second proxy");
}

/// Item 4: `Bearer` + one space + the token, nothing else; two Authorization headers are
/// refused whatever they hold, over HTTP and gRPC alike.
#[test]
fn bearer_tokens_are_read_strictly() {
    let mut p = Proxy::start(&AUTH_ON);
    let good = format!("Bearer {TOKEN}");
    let mut healthy = Healthy::start(&p, Some(&good));
    let api = p.api_addr();
    let send = |headers: &[(&str, &str)]| raw_http(&api, &request("POST", "/api/v1/srs/register", headers, &bogus(7)));
    for bad in ["Bearer  t0k3n", "Bearer t0k3n x", "Bearer\tt0k3n", "bearer t0k3n", "Bearer t0k3n\u{a0}", "Bearer"] {
        let reply = send(&[("Authorization", bad)]);
        assert_eq!(reply.status, 401, "{bad:?}: {}", reply.body);
        assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    // Control characters after the token: the HTTP parser refuses the request (400) or the
    // check does (401); either way nothing registers.
    for bad in ["Bearer t0k3n\u{b}", "Bearer t0k3n\u{c}", "Bearer t0k3n\u{0}"] {
        let reply = send(&[("Authorization", bad)]);
        assert!(matches!(reply.status, 400 | 401), "{bad:?}: {} {}", reply.status, reply.body);
    }
    let reply = send(&[("Authorization", "Bearer  t0k3n")]);
    assert!(reply.body.contains("one space"), "the reason says what is expected: {}", reply.body);
    for pair in [[good.as_str(), "Bearer wrong"], ["Bearer wrong", good.as_str()], [good.as_str(), good.as_str()]] {
        let reply = send(&[("Authorization", pair[0]), ("Authorization", pair[1])]);
        assert_eq!(reply.status, 400, "{pair:?}: {}", reply.body);
        assert!(reply.body.contains("2 Authorization headers"), "{}", reply.body);
        let headers = [("Authorization", pair[0]), ("authorization", pair[1])];
        let reply = raw_http(&api, &request("GET", "/api/v1/origins", &headers, ""));
        assert_eq!(reply.status, 400, "a view with {pair:?}");
    }
    assert_eq!(origin_id(&p, "bogus", Some(&good)), None, "none of these registered");
    // HTTP/1.1 drops whitespace at the end of a header line before the value (RFC 9110 §5.5).
    assert_eq!(send(&[("Authorization", "Bearer t0k3n ")]).status, 200);
    assert_eq!(send(&[("Authorization", &good)]).status, 200);

    // gRPC metadata keeps what was sent: a trailing space, two spaces or two values are refused.
    for bad in [&["Bearer t0k3n "][..], &["Bearer  t0k3n"], &[good.as_str(), good.as_str()]] {
        let status = grpc_status(&p, bad).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
    }
    assert!(grpc_status(&p, &[&good]).is_ok());
    healthy.assert_flowing(&mut p, "loosely written tokens");
}
