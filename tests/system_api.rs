//! The System API against the real binary: captured SRS heartbeats, the protocol's curl
//! example, TTL expiry, bearer auth (the views need the token too when auth is on; the
//! security tests with a live stream beside them are in tests/api_security.rs), and bad requests that must each get their own answer
//! while the proxy keeps serving good ones.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// The curl example of the origin registration protocol's documentation, byte for byte.
const CURL_EXAMPLE: &str = include_str!("data/register/curl-example.json");

fn origin_ids(p: &Proxy) -> Vec<String> {
    let reply = get(&p.api_addr(), "/api/v1/origins");
    assert_eq!(reply.status, 200);
    reply.json()["origins"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn captured_heartbeats_and_the_curl_example_register() {
    let p = Proxy::start(&[]);
    let pid = p.child.id().to_string();
    for (name, raw) in heartbeat_fixtures() {
        // Sent byte for byte as SRS sent it, keep-alive included.
        let reply = raw_http(&p.api_addr(), &raw);
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        assert_eq!(reply.header("content-type").as_deref(), Some("application/json"));
        assert_eq!(reply.json(), serde_json::json!({"code": 0, "pid": pid}), "{name}");
    }
    let reply = raw_http(
        &p.api_addr(),
        &request("POST", "/api/v1/srs/register", &[("Connection", "Close"), ("User-Agent", "curl")], CURL_EXAMPLE),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let origins = get(&p.api_addr(), "/api/v1/origins").json();
    let list = origins["origins"].as_array().unwrap();
    assert_eq!(list.len(), 4, "{origins}");
    let summ = list.iter().find(|o| o["device_id"] == "origin1-summ").unwrap();
    assert_eq!(summ["ip"], "192.0.2.2");
    assert_eq!(summ["alive"], true);
    assert_eq!(summ["endpoints"]["rtc"], serde_json::json!(["udp://0.0.0.0:18001"]));
    let lo = list.iter().find(|o| o["device_id"] == "origin1-lo").unwrap();
    assert_eq!(lo["endpoints"]["rtmp"], serde_json::json!(["127.0.0.1:19351"]));
    assert!(lo["heartbeat_age_seconds"].as_f64().unwrap() < 5.0);
    let curl = list.iter().find(|o| o["id"] == "vid-46p14mm-z2s3w865-42583").unwrap();
    assert_eq!(curl["device_id"], "origin2");
    assert!(p.log_text().contains("origin registered from 127.0.0.1"), "{}", p.log_text());
}

#[test]
fn reregistering_refreshes_and_a_new_service_is_a_new_origin() {
    let p = Proxy::start(&[]);
    assert_eq!(register(&p.api_addr(), &origin_body("a", "s1", 1935)).status, 200);
    assert_eq!(register(&p.api_addr(), &origin_body("a", "s1", 1936)).status, 200);
    assert_eq!(origin_ids(&p), ["a-s1-1"]);
    let o = get(&p.api_addr(), "/api/v1/origins").json();
    assert_eq!(o["origins"][0]["endpoints"]["rtmp"], serde_json::json!(["1936"]), "the new endpoints replace the old");
    assert_eq!(register(&p.api_addr(), &origin_body("a", "s2", 1935)).status, 200);
    assert_eq!(origin_ids(&p), ["a-s1-1", "a-s2-1"]);
}

#[test]
fn an_origin_unheard_for_the_ttl_is_dead() {
    let p = Proxy::start(&["--origin-ttl", "1s"]);
    register(&p.api_addr(), &origin_body("a", "s1", 1935));
    let alive = || get(&p.api_addr(), "/api/v1/origins").json()["origins"][0]["alive"].as_bool().unwrap();
    assert!(alive());
    assert!(wait_until(Duration::from_secs(3), || !alive()), "still alive after the TTL");
    assert!(wait_until(Duration::from_secs(3), || p.log_text().contains("is dead: no heartbeat for 1s")));
    register(&p.api_addr(), &origin_body("a", "s1", 1935));
    assert!(alive(), "a heartbeat brings it back");
}

#[test]
fn bearer_auth_on_register() {
    let p = Proxy::start(&["--http-api-auth-enabled=on", "--http-api-auth-type=bearer", "--http-api-auth-token=t0k3n"]);
    let body = origin_body("a", "s", 1935);
    let send = |auth: Option<&str>| {
        let mut headers = vec![];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        raw_http(&p.api_addr(), &request("POST", "/api/v1/srs/register", &headers, &body))
    };
    for bad in [None, Some("Bearer wrong"), Some("Bearer t0k3"), Some("Basic t0k3n"), Some("t0k3n")] {
        let reply = send(bad);
        assert_eq!(reply.status, 401, "{bad:?}");
        assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    // With auth on the origin list needs the token too.
    assert_eq!(get(&p.api_addr(), "/api/v1/origins").status, 401);
    let origins = || {
        let req = request("GET", "/api/v1/origins", &[("Authorization", "Bearer t0k3n")], "");
        let list = raw_http(&p.api_addr(), &req).json()["origins"].as_array().unwrap().clone();
        list.iter().map(|o| o["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert!(origins().is_empty(), "nothing registered without the token");
    assert_eq!(get(&p.api_addr(), "/api/v1/versions").status, 200, "versions stays open");
    assert_eq!(send(Some("Bearer t0k3n")).status, 200);
    assert_eq!(origins(), ["a-s-1"]);

    let open = Proxy::start(&[]);
    assert_eq!(register(&open.api_addr(), &body).status, 200, "auth is off by default");
}

#[test]
fn bad_requests_get_their_own_answer_and_the_proxy_keeps_serving() {
    let p = Proxy::start(&["--http-request-timeout", "1s"]);
    let api = p.api_addr();
    let field_cases = [
        ("", 400, "empty ip"),
        ("not json", 400, "parse body"),
        ("{\"ip\":", 400, "parse body"),
        (r#"{"server":"s","service":"v","pid":"1","rtmp":["1"]}"#, 400, "empty ip"),
        (r#"{"ip":"127.0.0.1","service":"v","pid":"1","rtmp":["1"]}"#, 400, "empty server"),
        (r#"{"ip":"127.0.0.1","server":"s","pid":"1","rtmp":["1"]}"#, 400, "empty service"),
        (r#"{"ip":"127.0.0.1","server":"s","service":"v","rtmp":["1"]}"#, 400, "empty pid"),
        (r#"{"ip":"127.0.0.1","server":"s","service":"v","pid":"1"}"#, 400, "empty rtmp"),
        (r#"{"ip":"127.0.0.1","server":"s","service":"v","pid":"1","rtmp":[]}"#, 400, "empty rtmp"),
        (r#"{"ip":"127.0.0.1","server":"s","service":"v","pid":42583,"rtmp":["1"]}"#, 400, "invalid type: integer"),
        (r#"{"ip":"127.0.0.1","server":"s","service":"v","pid":"1","rtmp":[1935]}"#, 400, "invalid type: integer"),
        (r#"{"ip":"not-an-ip","server":"s","service":"v","pid":"1","rtmp":["1"]}"#, 400, "not an IP address"),
        (
            r#"{"ip":"127.0.0.1","server":"s","service":"v","pid":"1","rtmp":["tcp://x:1"]}"#,
            400,
            "invalid rtmp endpoint",
        ),
    ];
    for (body, status, text) in field_cases {
        let reply = register(&api, body);
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert_eq!(reply.header("content-type").as_deref(), Some("application/json"));
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(text), "{body}: {error}");
    }

    // 10 MB body: refused from its Content-Length, before it is read.
    let mut s = TcpStream::connect(&api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /api/v1/srs/register HTTP/1.1\r\nContent-Length: 10485760\r\n\r\n").unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..160 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let reply = read_reply(&mut s);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.body.contains("over the limit"));

    // A body that never finishes: 408 after the request timeout.
    let mut s = TcpStream::connect(&api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /api/v1/srs/register HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"ip\":").unwrap();
    let reply = read_reply(&mut s);
    assert_eq!(reply.status, 408, "{}", reply.body);

    // Headers sent one byte at a time, slower than the deadline: 408.
    let mut s = TcpStream::connect(&api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = std::time::Instant::now();
    for b in b"POST /api/v1/srs/register HTTP/1.1\r\n" {
        if s.write_all(&[*b]).is_err() || t0.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.starts_with("HTTP/1.1 408"), "{rest:?}");

    let chunked = b"POST /api/v1/srs/register HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(raw_http(&api, chunked).status, 411);
    assert_eq!(raw_http(&api, b"GET /api/v1/versions\r\n\r\n").status, 400);
    let mut huge = b"GET /api/v1/versions HTTP/1.1\r\nX: ".to_vec();
    huge.extend(vec![b'a'; 64 * 1024]);
    assert_eq!(raw_http(&api, &huge).status, 431);
    assert_eq!(get(&api, "/api/v1/srs/register").status, 405);
    assert_eq!(get(&api, "/nope").status, 404);

    assert!(origin_ids(&p).is_empty(), "no bad request registered anything");
    assert_eq!(register(&api, &origin_body("good", "s", 1935)).status, 200);
    assert_eq!(origin_ids(&p), ["good-s-1"]);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let p = Proxy::start(&[]);
    let mut s = TcpStream::connect(p.api_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (_, raw) in heartbeat_fixtures() {
        s.write_all(&raw).unwrap();
        let reply = read_reply(&mut s);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection").as_deref(), Some("keep-alive"));
    }
    assert_eq!(origin_ids(&p).len(), 3);
}

#[test]
fn versions_and_streams() {
    let p = Proxy::start(&[]);
    let v = get(&p.api_addr(), "/api/v1/versions").json();
    assert_eq!(v["signature"], "streamgate");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let s = get(&p.api_addr(), "/api/v1/streams").json();
    assert_eq!(s, serde_json::json!({"code": 0, "total": 0, "limit": 100, "next": null, "streams": []}));
}
