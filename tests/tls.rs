//! TLS listeners end to end with real peers: ffmpeg publishing and playing over rtmps:// to a
//! real nginx-rtmp origin, curl fetching HTTP-FLV over https://, aiortc doing WHIP and WHEP
//! through the HTTPS API, grpcio over gRPC TLS (`--grpc-tls`), certificates reloaded on SIGHUP
//! (and a bad file on reload kept out), and junk on the TLS ports next to a healthy TLS player. Certificates are made by the test
//! with the openssl CLI (self-signed, for `localhost`, 127.0.0.1 and 127.0.0.2).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http_peers::{FfmpegHttpOrigin, origin_body_http};
use common::peers::*;
use common::udp_peers::*;
use common::*;

const PUBLISH_WAIT: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(25);
const CONNECT: Duration = Duration::from_secs(30);

/// A proxy with every TLS listener on (port 0) and `cert`, plus `extra` flags.
struct TlsProxy {
    p: Proxy,
    rtmps: u16,
    https: u16,
    https_api: u16,
}

/// Every TLS listener on 127.0.0.1 port 0 unless `extra` names it, `cert`, debug logs, `extra`.
fn tls_flags<'a>(cert: &'a Cert, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = Vec::new();
    for flag in ["--rtmps-server", "--https-server", "--https-api"] {
        if !extra.contains(&flag) {
            flags.extend([flag, "127.0.0.1:0"]);
        }
    }
    flags.extend([
        "--tls-cert",
        cert.cert.to_str().unwrap(),
        "--tls-key",
        cert.key.to_str().unwrap(),
        "--log-level",
        "debug",
    ]);
    flags.extend_from_slice(extra);
    flags
}

impl TlsProxy {
    fn start(cert: &Cert, extra: &[&str]) -> TlsProxy {
        TlsProxy::from(Proxy::start(&tls_flags(cert, extra)))
    }

    fn from(p: Proxy) -> TlsProxy {
        let line = wait_started(&p.log);
        let port = |name: &str| started_port(&line, name).unwrap_or_else(|| panic!("no {name} port in {line}"));
        let (rtmps, https, https_api) = (port("RTMPS"), port("HTTPS stream"), port("HTTPS API"));
        TlsProxy { p, rtmps, https, https_api }
    }

    fn rtmps_url(&self, stream: &str) -> String {
        format!("rtmps://127.0.0.1:{}/live/{stream}", self.rtmps)
    }
}

/// The subject CN of the certificate a new TLS connection to `port` gets.
fn served_cn(port: u16) -> String {
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    s_client.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let _ = s_client.wait();
    out.lines()
        .find_map(|l| l.trim().strip_prefix("subject=").map(|s| s.trim().trim_start_matches("CN = ").to_string()))
        .map(|s| s.trim_start_matches("CN=").trim().to_string())
        .unwrap_or_else(|| format!("no certificate: {out}"))
}

/// ffmpeg publishes over rtmps:// through the proxy to nginx-rtmp; ffprobe and an ffmpeg player
/// over rtmps:// get H.264 and AAC and every frame decodes; a plain RTMP player gets the same
/// stream; the TLS sessions are counted like plain ones.
fn rtmps_publish_and_play(relay: &str) {
    let dir = TempDir::new("tls-rtmps");
    let cert = make_cert(&dir.0, "streamgate-test");
    let origin = NginxRtmp::start(4096);
    let p = TlsProxy::start(&cert, &["--relay", relay, "--edge", "off"]);
    assert_eq!(register(&p.p.api_addr(), &origin_body("one", relay, origin.rtmp_port)).status, 200);
    let url = p.rtmps_url("a");
    let mut publisher = Ffmpeg::publish(&url, 20);
    assert!(
        wait_until(PUBLISH_WAIT, || origin.publishing("a")),
        "{relay}: never published over rtmps: {}\n{}",
        publisher.describe(),
        p.p.log_text()
    );
    probe_h264_aac(&url, PROBE_TIMEOUT).unwrap_or_else(|e| panic!("{relay}: rtmps probe: {e}\n{}", p.p.log_text()));
    let played = play_frames(&url, 50, Duration::from_secs(30)).unwrap();
    assert!(played.clean(50), "{relay}: rtmps player: {played:?}\n{}", p.p.log_text());
    let plain = format!("rtmp://127.0.0.1:{}/live/a", p.p.rtmp);
    probe_h264_aac(&plain, PROBE_TIMEOUT).unwrap_or_else(|e| panic!("{relay}: plain probe: {e}"));
    let streams = get(&p.p.api_addr(), "/api/v1/streams").json();
    let entry = streams["streams"].as_array().unwrap().iter().find(|s| s["key"] == "__defaultVhost__/live/a").cloned();
    assert_eq!(entry.as_ref().map(|e| e["sessions"]["rtmp_publish"].clone()), Some(1.into()), "{streams}");
    let status = publisher.wait_timeout(Duration::from_secs(40));
    assert!(status.is_some_and(|s| s.success()), "{relay}: publisher: {}\n{}", publisher.describe(), p.p.log_text());
    let log = p.p.log_text();
    assert!(log.contains("rtmp publish __defaultVhost__/live/a from 127.0.0.1:"), "{log}");
}

#[test]
fn rtmps_publish_and_play_with_ffmpeg_relay_splice() {
    rtmps_publish_and_play("splice");
}

#[test]
fn rtmps_publish_and_play_with_ffmpeg_relay_copy() {
    rtmps_publish_and_play("copy");
}

/// curl fetches a live HTTP-FLV stream over https:// (verifying the test's certificate) from an
/// ffmpeg origin that ends after 3 s: the whole body arrives, ends properly, and ffprobe finds
/// H.264 and AAC in it; `/api/v1/versions` answers over HTTPS too.
#[test]
fn https_flv_with_curl() {
    let dir = TempDir::new("tls-https");
    let cert = make_cert(&dir.0, "streamgate-test");
    let origin = FfmpegHttpOrigin::start("flv", "/live/x.flv", 3);
    let p = TlsProxy::start(&cert, &[]);
    let no_rtmp = ClosedPort::new();
    assert_eq!(register(&p.p.api_addr(), &origin_body_http("ff", "s", no_rtmp.port, origin.port)).status, 200);
    let out = dir.0.join("x.flv");
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&cert.cert)
        .arg("-o")
        .arg(&out)
        .args(["-D", "-", &format!("https://localhost:{}/live/x.flv?token=tls", p.https)])
        .output()
        .expect("run curl");
    let head = String::from_utf8_lossy(&curl.stdout).to_string();
    assert!(curl.status.success(), "curl: {} {head}\n{}", String::from_utf8_lossy(&curl.stderr), p.p.log_text());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = std::fs::read(&out).unwrap();
    assert!(body.starts_with(b"FLV\x01") && body.len() > 20_000, "{} bytes: {head}", body.len());
    let codecs = ffprobe_streams(out.to_str().unwrap(), PROBE_TIMEOUT).unwrap();
    assert!(codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"), "{codecs:?}");
    assert_eq!(origin.requested(), ["/live/x.flv?token=tls"]);

    let versions = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&cert.cert)
        .arg(format!("https://localhost:{}/api/v1/versions", p.https))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&versions.stdout);
    assert!(versions.status.success() && text.contains("\"signature\":\"streamgate\""), "{text}");
}

/// aiortc publishes with WHIP and plays with WHEP through the HTTPS API (verifying the test's
/// certificate): the answers' host candidates name the proxy's WebRTC port at the address the
/// client reached over TLS (127.0.0.2, where the HTTPS API and WebRTC listen), frames flow both ways
/// through the proxy, and WHIP/WHEP DELETE through the https Location reach the origin.
#[test]
fn whip_and_whep_over_https_with_aiortc() {
    let dir = TempDir::new("tls-whip");
    let cert = make_cert(&dir.0, "streamgate-test");
    let origin = AiortcOrigin::start(2);
    let proxy = UdpProxy::start(&tls_flags(&cert, &["--https-api", "127.0.0.2:0", "--webrtc-server", "127.0.0.2:0"]));
    let https_api = started_port(&wait_started(&proxy.p.log), "HTTPS API").unwrap();
    let (a, b) = (origin.sites[0], origin.sites[1]);
    proxy.register(&origin_body_udp("rtc-a", &[], &[a.api], &[a.rtc.to_string()]));
    proxy.register(&origin_body_udp("rtc-b", &[], &[b.api], &[b.rtc.to_string()]));
    let (ida, idb) = ("rtc-a-s-1", "rtc-b-s-1");
    let publish = name_on("__defaultVhost__", "pub", ida, &[ida, idb]);
    let play = name_on("__defaultVhost__", "play", idb, &[ida, idb]);
    let url = |api: &str, stream: &str| format!("https://127.0.0.2:{https_api}/rtc/v1/{api}/?app=live&stream={stream}");
    let ca = cert.cert.to_str().unwrap();

    let client = |mode: &str, url: &str, seconds: &str| {
        PyPeer::spawn(&format!("{mode}-tls"), &[mode, "--url", url, "--seconds", seconds, "--cafile", ca])
    };
    let mut publisher = client("publish", &url("whip", &publish), "14");
    let answer = publisher.wait_event("answer", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert_eq!(answer["status"], 201, "{answer}");
    let candidates = answer["candidates"].as_array().unwrap();
    assert!(!candidates.is_empty(), "{answer}");
    for c in candidates {
        let c = c.as_str().unwrap();
        assert!(c.contains(&format!(" 127.0.0.2 {} typ host", proxy.webrtc)), "candidate {c:?} is not the proxy's");
    }
    publisher.wait_event("connected", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(
        wait_until(Duration::from_secs(15), || origin.whip_frames() >= 60),
        "the origin decoded {} WHIP frames\n{}\n{}",
        origin.whip_frames(),
        publisher.describe(),
        proxy.log()
    );
    let mut player = client("play", &url("whep", &play), "5");
    player.wait_event("connected", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    player.wait_event("done", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(player.frames() >= 60, "the WHEP player decoded {} frames\n{}", player.frames(), player.describe());
    assert_eq!(player.event("deleted").map(|e| e["status"].clone()), Some(200.into()), "{}", player.describe());
    publisher.wait_event("done", CONNECT).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let deleted = publisher.event("deleted").unwrap_or_else(|| panic!("{}", publisher.describe()));
    assert_eq!(deleted["status"], 200, "{deleted}");
    assert!(deleted["url"].as_str().unwrap().starts_with("https://"), "{deleted}");
}

/// SIGHUP reloads the certificate: new connections get the new one; a certificate file that
/// does not parse, and a key that is not the certificate's, are logged and the one in use is
/// kept; a connection made before the reload goes on with its session.
#[test]
fn sighup_reloads_the_certificate_and_keeps_it_on_a_bad_file() {
    let dir = TempDir::new("tls-reload");
    let first = make_cert(&dir.0, "first");
    let live = Cert { cert: dir.0.join("live.crt"), key: dir.0.join("live.key") };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let p = TlsProxy::start(&live, &[]);
    assert_eq!(served_cn(p.https), "first");

    // A keep-alive HTTPS connection made before the reload.
    let mut held = KeepAlive::open(p.https, &live.cert);
    assert!(held.versions().contains("streamgate"));

    let second = make_cert(&dir.0, "second");
    std::fs::copy(&second.cert, &live.cert).unwrap();
    std::fs::copy(&second.key, &live.key).unwrap();
    hup(&p.p, 1);
    assert!(p.p.log_text().contains("TLS certificate reloaded from"), "{}", p.p.log_text());
    assert_eq!(served_cn(p.https), "second");
    assert_eq!(served_cn(p.rtmps), "second");
    assert!(held.versions().contains("streamgate"), "the connection made before the reload broke");

    std::fs::write(&live.cert, "not a certificate\n").unwrap();
    hup(&p.p, 2);
    let log = p.p.log_text();
    assert!(log.contains("cannot load --tls-cert") && log.contains("keep the certificate they had"), "{log}");
    assert_eq!(served_cn(p.https), "second");

    let third = make_cert(&dir.0, "third");
    std::fs::copy(&third.cert, &live.cert).unwrap(); // the key is still the second's
    hup(&p.p, 3);
    assert!(p.p.log_text().contains("is not a usable certificate"), "{}", p.p.log_text());
    assert_eq!(served_cn(p.https), "second");
    assert!(held.versions().contains("streamgate"));
}

/// Sends SIGHUP and waits for its `n`th log line.
fn hup(p: &Proxy, n: usize) {
    signal(p.child.id(), "HUP");
    let seen = || p.log_text().matches("SIGHUP received").count() >= n;
    assert!(wait_until(Duration::from_secs(5), seen), "no reload logged: {}", p.log_text());
}

/// One HTTPS keep-alive connection, through `openssl s_client` (a real TLS client).
struct KeepAlive {
    child: std::process::Child,
    out: std::sync::mpsc::Receiver<String>,
    port: u16,
}

impl KeepAlive {
    fn open(port: u16, ca: &Path) -> KeepAlive {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-connect", &format!("127.0.0.1:{port}")])
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, out) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_string());
            }
        });
        KeepAlive { child, out, port }
    }

    /// GET /api/v1/versions on the held connection; the body (or what came before a timeout).
    fn versions(&mut self) -> String {
        let req = format!("GET /api/v1/versions HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
        let stdin = self.child.stdin.as_mut().unwrap();
        if stdin.write_all(req.as_bytes()).and_then(|()| stdin.flush()).is_err() {
            return "the connection is gone".into();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = String::new();
        while !got.contains("\"signature\"") {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(text) => got.push_str(&text),
                Err(_) => break,
            }
        }
        got
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// While an ffmpeg player plays over rtmps://, the TLS ports get junk: a plain RTMP handshake
/// and plain HTTP on the TLS ports, random bytes, a ClientHello cut short, and a client that
/// connects and says nothing. Each bad client is closed (the junk ones at once, with an alert
/// where TLS can say why); the player decodes every frame.
#[test]
fn bad_tls_input_next_to_a_healthy_rtmps_player() {
    let dir = TempDir::new("tls-bad");
    let cert = make_cert(&dir.0, "streamgate-test");
    let origin = NginxRtmp::start(4096);
    let p = TlsProxy::start(&cert, &[]);
    assert_eq!(register(&p.p.api_addr(), &origin_body("one", "s", origin.rtmp_port)).status, 200);
    let url = p.rtmps_url("healthy");
    let mut publisher = Ffmpeg::publish(&url, 40);
    assert!(wait_until(PUBLISH_WAIT, || origin.publishing("healthy")), "{}", publisher.describe());
    let mut player = Ffmpeg::play_frames(&url, 400);
    assert!(wait_until(Duration::from_secs(15), || player.frames() > 0), "{}", player.describe());

    let silent: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(("127.0.0.1", p.rtmps)).unwrap()).collect();
    let mut rtmp_c0c1 = vec![3u8];
    rtmp_c0c1.extend(std::iter::repeat_n(0u8, 1536));
    let mut random = vec![0u8; 8192];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in &mut random {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // A TLS 1.2 record header announcing a 512-byte ClientHello, then only part of it.
    let cut_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    let junk: [(&str, u16, &[u8]); 4] = [
        ("plain RTMP", p.rtmps, &rtmp_c0c1),
        ("plain HTTP", p.https, b"GET /api/v1/versions HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("random bytes", p.https_api, &random),
        ("plain HTTP", p.https_api, b"POST /rtc/v1/whip/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
    ];
    for (what, port, bytes) in junk {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let mut reply = Vec::new();
        let t0 = Instant::now();
        let read = s.read_to_end(&mut reply);
        let closed = match &read {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "{what} on {port}: not closed: {read:?} after {:?}", t0.elapsed());
        assert!(t0.elapsed() < Duration::from_secs(4), "{what}: took {:?} to close", t0.elapsed());
        assert!(reply.is_empty() || reply[0] == 0x15, "{what}: answered {reply:?} (not a TLS alert)");
    }
    let mut cut = TcpStream::connect(("127.0.0.1", p.rtmps)).unwrap();
    cut.write_all(&cut_hello).unwrap();

    let status = player.wait_timeout(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "player: {}\n{}", player.describe(), p.p.log_text());
    assert!(player.frames() >= 400 && player.stderr_text().trim().is_empty(), "{}", player.describe());
    // The cut-short ClientHello and the silent clients are closed after the handshake timeout.
    cut.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut rest = Vec::new();
    assert!(cut.read_to_end(&mut rest).is_ok(), "the cut-short handshake was never closed");
    drop(silent);
    let log = p.p.log_text();
    assert!(log.contains("no TLS handshake within 10s"), "{log}");
    assert!(log.contains("handshake failed"), "{log}");
    drop(publisher);
}

/// A TLS listener without its files, or with a file that does not load, stops startup naming
/// the flag.
#[test]
fn tls_flags_are_checked_at_startup() {
    let dir = TempDir::new("tls-flags");
    let run = |args: &[&str]| {
        let mut cmd = proxy_command(&dir, args);
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = run(&["--rtmps-server", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert") && err.contains("STREAMGATE_TLS_CERT"), "{err}");

    let missing = dir.0.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let (code, err) = run(&["--https-server", "127.0.0.1:0", "--tls-cert", missing, "--tls-key", missing]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("startup failed: cannot load --tls-cert") && err.contains("missing.pem"), "{err}");
}

/// gRPC over TLS (`--grpc-tls`) with grpcio, the C-core client: a TLS channel trusting the
/// test's certificate gets health and GetStatus; a plaintext channel, and a raw HTTP/2 preface
/// in plaintext, are refused on the same port; SIGHUP reloads the certificate for new gRPC
/// connections (the old one is then untrusted, the new one trusted).
#[test]
fn grpc_over_tls_with_grpcio_refuses_plaintext_and_reloads_on_sighup() {
    let python = python_with("grpc")
        .unwrap_or_else(|tried| panic!("no Python with grpcio ({tried}); scripts/test.sh installs it in target/py"));
    let dir = TempDir::new("grpc-tls");
    let first = make_cert(&dir.0, "first");
    let live = Cert { cert: dir.0.join("live.crt"), key: dir.0.join("live.key") };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let (cert, key) = (live.cert.to_str().unwrap(), live.key.to_str().unwrap());
    let flags =
        ["--grpc-tls", "--tls-cert", cert, "--tls-key", key, "--grpc-idle-timeout", "3s", "--log-level", "debug"];
    let p = Proxy::start(&flags);
    let line = wait_started(&p.log);
    assert!(line.contains(&format!("; gRPC 127.0.0.1:{} (TLS);", p.grpc)), "{line}");
    let addr = format!("127.0.0.1:{}", p.grpc);
    let check = |ca: &Path, mode: &str| {
        let mut cmd = Command::new(&python);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/tls_check.py")).arg(&addr).arg(ca).arg(mode);
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        let text = format!("{}{}", out.stdout, out.stderr);
        eprintln!("tls_check.py {} {mode}:\n{text}", ca.display());
        assert!(out.status.is_some_and(|s| s.success()), "tls_check.py {mode}: {text}\n{}", p.log_text());
    };
    check(&first.cert, "trusted");
    assert_eq!(served_cn(p.grpc), "first");

    // The HTTP/2 preface in plaintext: no HTTP/2 SETTINGS back, only a TLS alert, then the close.
    let mut raw = TcpStream::connect(&addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    let mut back = Vec::new();
    let read = raw.read_to_end(&mut back);
    assert!(read.is_ok() || back.is_empty(), "the plaintext connection was not closed: {read:?}");
    assert!(back.is_empty() || back[0] == 0x15, "not a TLS alert: {back:02x?}");
    assert!(wait_until(Duration::from_secs(5), || p.log_text().contains("TLS handshake failed")), "{}", p.log_text());

    // A client that connects and never says hello is closed at the idle timeout (shorter than
    // the handshake timeout here), holding its connection slot no longer.
    let mut silent = TcpStream::connect(&addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let closed = silent.read(&mut [0u8; 64]);
    let took = t0.elapsed();
    assert!(matches!(closed, Ok(0)) || closed.is_err(), "{closed:?}");
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(8), "closed after {took:?}");
    let logged = || p.log_text().contains("no TLS handshake within 3s");
    assert!(wait_until(Duration::from_secs(5), logged), "{}", p.log_text());

    let second = make_cert(&dir.0, "second");
    std::fs::copy(&second.cert, &live.cert).unwrap();
    std::fs::copy(&second.key, &live.key).unwrap();
    hup(&p, 1);
    assert!(p.log_text().contains("TLS certificate reloaded from"), "{}", p.log_text());
    assert_eq!(served_cn(p.grpc), "second");
    check(&second.cert, "trusted");
    check(&first.cert, "untrusted");
}
