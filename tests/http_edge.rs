//! The HTTP stream proxy against origins that misbehave in ways real servers rarely show on
//! demand: garbage and silent origins, chunked and oversized playlists, bodies that end early.
//! The fake origins here are plain threads on loopback that record every request head they get.
//! Real-peer tests (nginx-rtmp HLS, ffmpeg HTTP origins, ffprobe) are in tests/http_proxy.rs.
//! HTTP-FLV players here are relayed (`--edge off`): the edge (the default) answers them itself
//! (tests/edge.rs).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{HttpReply, Proxy, raw_http, read_reply, register};

type Handler = dyn Fn(&str) -> Vec<u8> + Send + Sync;

/// A fake HTTP origin: answers each request head with `handler(head)` and closes.
struct FakeOrigin {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl FakeOrigin {
    fn start(handler: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> FakeOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = heads.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (handler, seen) = (handler.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    seen.lock().unwrap().push(head.clone());
                    let _ = conn.write_all(&handler(&head));
                });
            }
        });
        FakeOrigin { port, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn register(&self, proxy: &Proxy, name: &str) {
        let body = format!(
            r#"{{"ip":"127.0.0.1","server":"{name}","service":"s","pid":"1","rtmp":["1"],"http":["{}"]}}"#,
            self.port
        );
        assert_eq!(register(&proxy.api_addr(), &body).status, 200);
    }
}

fn response(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n").into_bytes();
    for h in headers {
        out.extend_from_slice(format!("{h}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn request_line(head: &str) -> &str {
    head.lines().next().unwrap_or("")
}

fn get(proxy: &Proxy, target: &str) -> HttpReply {
    raw_http(
        &proxy.http_addr(),
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn broken_and_silent_origins_get_502_and_504() {
    let proxy = Proxy::start(&["--edge", "off", "--http-origin-timeout", "1s"]);
    let garbage = FakeOrigin::start(|_| b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec());
    garbage.register(&proxy, "garbage");
    let reply = get(&proxy, "/live/a.flv");
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(reply.body.contains("bad response"), "{}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin").as_deref(), Some("*"));

    let proxy = Proxy::start(&["--http-origin-timeout", "1s"]);
    let silent = FakeOrigin::start(|_| {
        std::thread::sleep(Duration::from_secs(5));
        Vec::new()
    });
    silent.register(&proxy, "silent");
    let t0 = Instant::now();
    let reply = get(&proxy, "/live/a.m3u8");
    assert_eq!(reply.status, 504, "{reply:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "answered after the origin timeout, not after the origin");
    assert!(proxy.log_text().contains("did not answer within"), "{}", proxy.log_text());
}

#[test]
fn chunked_playlists_are_rewritten_and_segments_keep_the_connection() {
    let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nx-1.ts?token=t\n#EXTINF:2.0,\nx-2.ts\n";
    let chunked = {
        let (a, b) = playlist.split_at(20);
        format!("{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n", a.len(), b.len())
    };
    let origin = FakeOrigin::start(move |head| {
        let line = request_line(head);
        if line.contains(".m3u8") {
            let headers = ["Transfer-Encoding: chunked", "Content-Type: application/vnd.apple.mpegurl", "ETag: \"e1\""];
            response("200 OK", &headers, chunked.as_bytes())
        } else if line.contains("x-1.ts") {
            response("200 OK", &["Content-Length: 5000", "Content-Type: video/mp2t"], &[b'1'; 5000])
        } else {
            response("200 OK", &["Content-Length: 3", "Content-Type: video/mp2t"], b"two")
        }
    });
    let proxy = Proxy::start(&[]);
    origin.register(&proxy, "o1");

    let mut conn = TcpStream::connect(proxy.http_addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let send = |conn: &mut TcpStream, target: &str| {
        let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n");
        conn.write_all(req.as_bytes()).unwrap();
        read_reply(conn)
    };
    let list = send(&mut conn, "/live/x.m3u8?hls_ctx=abc");
    assert_eq!(list.status, 200, "{list:?}");
    assert!(list.header("etag").is_none(), "a stale validator was passed on: {}", list.head);
    assert!(list.header("transfer-encoding").is_none());
    let id = list.body.split("spbhid=").nth(1).unwrap().split(['&', '\n']).next().unwrap().to_string();
    assert_eq!(
        list.body,
        format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nx-1.ts?spbhid={id}&token=t\n#EXTINF:2.0,\nx-2.ts?spbhid={id}\n"
        )
    );
    assert_eq!(list.header("content-length"), Some(list.body.len().to_string()));
    // Both segments on the same connection: a body of known length keeps it open.
    let one = send(&mut conn, &format!("/live/x-1.ts?spbhid={id}&token=t"));
    assert_eq!((one.status, one.body.len()), (200, 5000));
    let two = send(&mut conn, &format!("/live/x-2.ts?spbhid={id}"));
    assert_eq!((two.status, two.body.as_str()), (200, "two"));

    let heads = origin.heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert_eq!(request_line(&heads[0]), "GET /live/x.m3u8?hls_ctx=abc HTTP/1.1");
    assert!(heads[0].contains("Accept-Encoding: identity") && !heads[0].contains("gzip"), "{}", heads[0]);
    assert!(heads[0].contains("X-Forwarded-For: 127.0.0.1"), "{}", heads[0]);
    assert_eq!(request_line(&heads[1]), format!("GET /live/x-1.ts?spbhid={id}&token=t HTTP/1.1"));
    assert!(heads[1].contains("Accept-Encoding: gzip"), "segments keep the player's headers: {}", heads[1]);

    let again = get(&proxy, "/live/x.m3u8");
    assert!(again.body.contains(&format!("spbhid={id}")), "the id is stable: {}", again.body);
    let unknown = get(&proxy, "/live/x-1.ts?spbhid=0000000000000000");
    assert_eq!(unknown.status, 400);
    assert!(unknown.body.contains("spbhid 0000000000000000"), "{}", unknown.body);
}

#[test]
fn variants_and_segments_follow_the_id_not_their_names() {
    // Two origins; the variant and segment names would hash to any of them, the id must not.
    let master =
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhd/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\nsd/index.m3u8\n";
    let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nseg-1.m4s\n";
    let handler = move |head: &str| {
        let line = request_line(head);
        let body = if line.contains("/x.m3u8") {
            master
        } else if line.contains(".m3u8") {
            media
        } else {
            "media"
        };
        response("200 OK", &[&format!("Content-Length: {}", body.len())], body.as_bytes())
    };
    let (a, b) = (FakeOrigin::start(handler), FakeOrigin::start(handler));
    let proxy = Proxy::start(&[]);
    a.register(&proxy, "a");
    b.register(&proxy, "b");
    let top = get(&proxy, "/live/x.m3u8");
    assert_eq!(top.status, 200);
    let variant = top.body.lines().find(|l| l.starts_with("hd/")).unwrap().to_string();
    assert!(variant.starts_with("hd/index.m3u8?spbhid="), "{variant}");
    let inner = get(&proxy, &format!("/live/{variant}"));
    assert_eq!(inner.status, 200, "{inner:?}");
    let init = inner.body.split('"').nth(1).unwrap().to_string();
    let seg = inner.body.lines().last().unwrap().to_string();
    assert!(init.starts_with("init.mp4?spbhid=") && seg.starts_with("seg-1.m4s?spbhid="), "{}", inner.body);
    for target in [format!("/live/hd/{init}"), format!("/live/hd/{seg}")] {
        assert_eq!(get(&proxy, &target).body, "media");
    }
    let (ha, hb) = (a.heads(), b.heads());
    assert!(ha.len() == 4 && hb.is_empty() || hb.len() == 4 && ha.is_empty(), "split over origins: {ha:?} {hb:?}");
}

#[test]
fn oversized_playlists_bodies_that_end_early_and_http_1_0() {
    let origin = FakeOrigin::start(|head| {
        let line = request_line(head);
        if line.contains("big.m3u8") {
            let mut body = b"#EXTM3U\n".to_vec();
            body.resize(5 * 1024 * 1024, b'#');
            response("200 OK", &[], &body) // until close, past the 4 MiB cap
        } else if line.contains("short.ts") {
            response("200 OK", &["Content-Length: 100000"], b"only this")
        } else {
            let version = if line.ends_with("HTTP/1.0") { "1.0" } else { "1.1" };
            response("200 OK", &["Content-Length: 3"], version.as_bytes())
        }
    });
    let proxy = Proxy::start(&["--edge", "off"]);
    origin.register(&proxy, "o");
    let big = get(&proxy, "/live/big.m3u8");
    assert_eq!(big.status, 502, "{}", big.head);
    assert!(big.body.contains("larger than"), "{}", big.body);

    let list = get(&proxy, "/live/x.m3u8");
    let id = list.body.split("spbhid=").nth(1).map(str::trim).unwrap_or_default().to_string();
    // The origin promises 100000 bytes and closes after 9: the player sees the connection end.
    let mut conn = TcpStream::connect(proxy.http_addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET /live/short.ts?spbhid={id} HTTP/1.1\r\nHost: h\r\n\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    assert!(String::from_utf8_lossy(&got).ends_with("only this"), "{:?}", String::from_utf8_lossy(&got));
    assert!(proxy.log_text().contains("source ended after 0 of 99991 bytes"), "{}", proxy.log_text());

    let old = raw_http(&proxy.http_addr(), b"GET /live/v.flv HTTP/1.0\r\n\r\n");
    assert_eq!((old.status, old.body.as_str()), (200, "1.0"), "an HTTP/1.0 player is forwarded as HTTP/1.0");
    assert_eq!(old.header("connection").as_deref(), Some("close"));
}
