//! Resource limits attacked on loopback, next to a healthy stream that must not notice: ffmpeg
//! publishes through the real binary to a real nginx-rtmp origin and ffmpeg plays it back
//! through the proxy, while idle gRPC connections pile up past `--grpc-max-connections`, the
//! process runs out of descriptors (its limit lowered from outside with prlimit), or clients
//! send bytes that would forge log lines. What is checked: the proxy's CPU (/proc), its
//! descriptors, the number of log lines, the System API's answers, and the stream.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::peers::*;
use common::procfs::{cpu_over, limit_descriptors, open_fds};
use common::rtmp_client::{Handshake, RtmpClient};
use common::udp_peers::SrtCaller;
use common::*;
use streamgate::control::grpc::proto::Empty;
use streamgate::control::grpc::proto::module_service_client::ModuleServiceClient;
use streamgate::util::backoff::SETTLE;

const PUBLISH_WAIT: Duration = Duration::from_secs(20);
const PLAY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the System API may take to answer while the proxy is under attack.
const API_QUICK: Duration = Duration::from_millis(500);

/// A proxy with one nginx-rtmp origin, ffmpeg publishing `stream` through it and ffmpeg playing
/// it back through it.
struct Healthy {
    proxy: Proxy,
    origin: NginxRtmp,
    publisher: Ffmpeg,
    player: Ffmpeg,
    stream: String,
    /// The proxy's SRT port.
    srt: u16,
}

impl Healthy {
    fn start(stream: &str, extra: &[&str]) -> Healthy {
        let origin = NginxRtmp::start(4096);
        let proxy = Proxy::start(extra);
        let srt = proxy.srt;
        assert_eq!(register(&proxy.api_addr(), &origin_body("one", "h", origin.rtmp_port)).status, 200);
        let url = format!("rtmp://127.0.0.1:{}/live/{stream}", proxy.rtmp);
        let mut publisher = Ffmpeg::publish(&url, 120);
        if !wait_until(PUBLISH_WAIT, || origin.publishing(stream)) {
            panic!("{stream} never published: {}\n{}", publisher.describe(), proxy.log_text());
        }
        let mut player = Ffmpeg::play(&url, 120);
        if !wait_until(PUBLISH_WAIT, || player.frames() >= 25) {
            panic!("the healthy player got no frames: {}\n{}", player.describe(), proxy.log_text());
        }
        Healthy { proxy, origin, publisher, player, stream: stream.to_string(), srt }
    }

    fn pid(&self) -> u32 {
        self.proxy.child.id()
    }

    /// The healthy stream still flows: the publisher runs and the player decodes 25 more frames
    /// (one second of video) within `within`.
    fn assert_flowing(&mut self, when: &str, within: Duration) {
        let before = self.player.frames();
        let flowing = wait_until(within, || self.player.frames() >= before + 25);
        assert!(
            flowing && self.publisher.running() && self.origin.publishing(&self.stream),
            "{when}: the healthy stream stalled ({before} -> {} frames)\npublisher: {}\nplayer: {}\n{}",
            self.player.frames(),
            self.publisher.describe(),
            self.player.describe(),
            self.proxy.log_text()
        );
    }

    /// A new stream publishes through the proxy and a new player plays 50 clean frames of it.
    fn assert_new_stream(&mut self, stream: &str) {
        let url = format!("rtmp://127.0.0.1:{}/live/{stream}", self.proxy.rtmp);
        let mut publisher = Ffmpeg::publish(&url, 30);
        assert!(
            wait_until(PUBLISH_WAIT, || self.origin.publishing(stream)),
            "{stream} never published: {}\n{}",
            publisher.describe(),
            self.proxy.log_text()
        );
        let played = play_frames(&url, 50, PLAY_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", self.proxy.log_text()));
        assert!(played.clean(50), "{played:?}");
    }
}

/// GET `path` on the System API: the status and how long the answer took.
fn timed_get(addr: &str, path: &str) -> (u16, Duration) {
    let t0 = Instant::now();
    let reply = get(addr, path);
    (reply.status, t0.elapsed())
}

fn assert_api_quick(proxy: &Proxy, when: &str) {
    for path in ["/api/v1/versions", "/api/v1/shards", "/api/v1/streams"] {
        let (status, took) = timed_get(&proxy.api_addr(), path);
        assert_eq!(status, 200, "{when}: {path}");
        assert!(took < API_QUICK, "{when}: {path} took {took:?}");
    }
}

/// Opens up to `n` TCP connections to `addr` that never send a byte.
fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let addr: SocketAddr = addr.parse().unwrap();
    (0..n).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()).collect()
}

/// Starts `n` non-blocking TCP connects to `addr` and keeps the sockets: those the kernel's
/// backlog takes complete, the others stay in SYN-SENT, retrying, as a flood's would.
fn connect_attempts(addr: SocketAddr, n: usize) -> Vec<OwnedFd> {
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
        sin_zero: [0; 8],
    };
    (0..n)
        .map(|_| {
            // SAFETY: socket(2) takes no pointers; the result is checked before use.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            // SAFETY: `fd` is a new socket owned by nothing else.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: connect(2) reads one sockaddr_in of the length given, which `sin` is.
            let rc = unsafe {
                libc::connect(fd, (&raw const sin).cast(), std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
            };
            let err = std::io::Error::last_os_error();
            assert!(rc == 0 || err.raw_os_error() == Some(libc::EINPROGRESS), "connect: {err}");
            owned
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// GetStatus over a new gRPC connection, within `timeout`.
fn grpc_status(port: u16, timeout: Duration) -> Result<String, String> {
    runtime().block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut client = ModuleServiceClient::new(channel);
        let status = client.get_status(Empty {}).await.map_err(|e| e.to_string())?.into_inner();
        Ok(status.module_name)
    })
}

/// Lines of `log` that contain `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// 16 idle gRPC clients fill a cap of 16 and 5000 more connect behind them: the proxy holds
/// 16 connections (the rest wait in the kernel's backlog or retry their SYN, costing it no
/// descriptor), closes each after the 3 s idle timeout, warns once that the cap was reached,
/// stays under 20% of a core, and the System API answers within 500 ms; the healthy stream
/// flows and a new player plays through meanwhile. Once the idle clients go, gRPC answers and
/// a new stream publishes and plays.
#[test]
fn idle_grpc_connections_past_the_cap_wait_in_the_backlog_and_time_out() {
    let mut live = Healthy::start("grpccap", &["--grpc-max-connections", "16", "--grpc-idle-timeout", "3s"]);
    let pid = live.pid();
    let fds_before = open_fds(pid);
    let grpc = format!("127.0.0.1:{}", live.proxy.grpc);

    let mut first = idle_connections(&grpc, 16);
    assert_eq!(first.len(), 16);
    let mut flood = connect_attempts(grpc.parse().unwrap(), 5000);
    std::thread::sleep(Duration::from_secs(1));
    let fds = open_fds(pid);
    assert!(fds <= fds_before + 16 + 4, "{fds} descriptors open, {fds_before} before 5016 idle gRPC clients");
    let cpu = cpu_over(pid, Duration::from_secs(3));
    eprintln!("5016 idle gRPC clients, cap 16: proxy CPU {cpu:?} over 3 s, {fds} descriptors ({fds_before} before)");
    assert!(cpu < Duration::from_millis(600), "the proxy used {cpu:?} of CPU in 3 s");
    assert_api_quick(&live.proxy, "with 5016 idle gRPC clients");
    live.assert_flowing("with 5016 idle gRPC clients", Duration::from_secs(5));
    let played = play_frames(&format!("rtmp://127.0.0.1:{}/live/{}", live.proxy.rtmp, live.stream), 50, PLAY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", live.proxy.log_text()));
    assert!(played.clean(50), "a new player meanwhile: {played:?}");

    // The first 16 were accepted and are closed once idle for 3 s (they connected about 10 s
    // ago by now, give or take the player above).
    for client in &mut first {
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let end = client.read_to_end(&mut got); // the server's SETTINGS, then the close
        assert!(
            end.as_ref().is_ok_and(|n| *n < 100) || end.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
            "an idle gRPC client was still connected: {end:?} after {got:?}"
        );
    }
    let open = open_fds(pid);
    assert!(open <= fds_before + 16 + 4, "{open} descriptors while the backlog refills the cap");
    let log = live.proxy.log_text();
    let warnings = lines_with(&log, "connections open, its cap");
    assert_eq!(warnings.len(), 1, "one warning for the cap, not one per refill: {warnings:#?}");
    assert!(warnings[0].contains(&format!("gRPC {grpc}: 16 connections open")), "{}", warnings[0]);

    flood.clear();
    first.clear();
    let answered = grpc_status(live.proxy.grpc, Duration::from_secs(20));
    assert_eq!(answered.as_deref(), Ok("rtmp-proxy"), "gRPC after the idle clients left\n{}", live.proxy.log_text());
    assert!(wait_until(Duration::from_secs(5), || open_fds(pid) <= fds_before + 4), "{} descriptors", open_fds(pid));
    live.assert_flowing("after", Duration::from_secs(5));
    live.assert_new_stream("grpccap-after");
}

/// The proxy's descriptor limit is lowered to what it holds plus 40 and idle HTTP clients take
/// the rest: each listener that hits EMFILE writes one warning (not one per failed accept)
/// and waits between tries, so the proxy stays under 10% of a core while the healthy stream,
/// already set up, keeps flowing. A System API request and a gRPC call made meanwhile wait in
/// their backlogs; once the idle clients go both are answered, each listener logs one line
/// saying it accepts again (once accepting has worked for SETTLE), and a new stream publishes
/// and plays.
#[test]
fn running_out_of_descriptors_backs_off_with_one_warning_per_listener() {
    let mut live = Healthy::start("emfile", &["--http-request-timeout", "60s"]);
    let pid = live.pid();
    let baseline = cpu_over(pid, Duration::from_secs(3));
    let fds_before = open_fds(pid);
    limit_descriptors(pid, fds_before + 40);

    let flood = idle_connections(&live.proxy.http_addr(), 300);
    assert!(flood.len() >= 100, "only {} idle clients connected", flood.len());
    let exhausted = wait_until(Duration::from_secs(5), || live.proxy.log_text().contains("Too many open files"));
    assert!(exhausted, "the proxy never ran out ({} descriptors)\n{}", open_fds(pid), live.proxy.log_text());
    let api = live.proxy.api_addr();
    let api_call = std::thread::spawn(move || timed_get(&api, "/api/v1/versions"));
    let grpc_port = live.proxy.grpc;
    let grpc_call = std::thread::spawn(move || grpc_status(grpc_port, Duration::from_secs(60)));
    std::thread::sleep(Duration::from_secs(1));
    let cpu = cpu_over(pid, Duration::from_secs(5));
    eprintln!(
        "out of descriptors ({} open, limit {}): proxy CPU {cpu:?} over 5 s ({baseline:?} over 3 s before)",
        open_fds(pid),
        fds_before + 40
    );
    assert!(cpu < Duration::from_millis(500), "the proxy used {cpu:?} of CPU in 5 s while out of descriptors");
    live.assert_flowing("out of descriptors", Duration::from_secs(5));

    let log = live.proxy.log_text();
    let emfile = lines_with(&log, "Too many open files");
    eprintln!("{emfile:#?}");
    assert!(!emfile.is_empty() && emfile.len() <= 8, "{emfile:#?}");
    let mut listeners: Vec<&str> = emfile
        .iter()
        .map(|l| {
            assert!(l.contains(" WARN ") && l.contains(" accept failed: Too many open files"), "{l}");
            l.split(": ").nth(1).and_then(|rest| rest.split(" accept failed").next()).unwrap_or(l)
        })
        .collect();
    let before_dedup = listeners.len();
    listeners.sort_unstable();
    listeners.dedup();
    assert_eq!(listeners.len(), before_dedup, "a listener warned twice in one episode: {emfile:#?}");
    for name in ["System API", "gRPC"] {
        assert!(listeners.iter().any(|l| l.starts_with(name)), "{name} never ran out: {listeners:?}");
    }
    assert!(listeners.iter().any(|l| l.starts_with("http_stream on shard")), "{listeners:?}");

    drop(flood);
    let (status, took) = api_call.join().unwrap();
    assert_eq!(status, 200, "the System API request made while out of descriptors (took {took:?})");
    let grpc = grpc_call.join().unwrap();
    assert_eq!(
        grpc.as_deref(),
        Ok("rtmp-proxy"),
        "the gRPC call made while out of descriptors\n{}",
        live.proxy.log_text()
    );
    // An episode ends at the first accept that works SETTLE after its last failure: poke every
    // listener that failed (20 HTTP connections reach both shards' listeners).
    std::thread::sleep(SETTLE + Duration::from_secs(1));
    for _ in 0..20 {
        assert_eq!(get(&live.proxy.http_addr(), "/").status, 404);
    }
    assert_eq!(grpc_status(live.proxy.grpc, Duration::from_secs(10)).as_deref(), Ok("rtmp-proxy"));
    let recovered = wait_until(Duration::from_secs(5), || {
        // Keep poking: a listener whose last failure came later than the others' ends its
        // episode only at an accept SETTLE after that failure.
        let _ = get(&live.proxy.api_addr(), "/api/v1/versions");
        for _ in 0..8 {
            let _ = get(&live.proxy.http_addr(), "/");
        }
        lines_with(&live.proxy.log_text(), "accepting again after").len() >= listeners.len()
    });
    let log = live.proxy.log_text();
    assert!(recovered, "not every listener said it accepts again:\n{log}");
    let again = lines_with(&log, "accepting again after");
    assert_eq!(again.len(), listeners.len(), "one line per episode: {again:#?}");
    for line in again {
        assert!(line.contains(" INFO ") && line.contains(" failed accepts over "), "{line}");
    }
    assert_api_quick(&live.proxy, "after");
    live.assert_flowing("after", Duration::from_secs(5));
    live.assert_new_stream("emfile-after");
}

/// Whether `line` starts the way every line the proxy writes does: a UTC timestamp and a level.
fn starts_like_a_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() > 30
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[10] == b'T'
        && b[23] == b'Z'
        && ["ERROR ", "WARN  ", "INFO  ", "DEBUG ", "TRACE "].iter().any(|l| line[25..].starts_with(l))
}

/// Stream names carrying a newline, a fake timestamp and level, a carriage return and an ANSI
/// escape, over HTTP (`%0a`, `%0d`, `%1b` in the path), RTMP (raw bytes in the stream name) and
/// SRT (raw bytes in the stream id), each logged by the proxy, forge no line: every line of the
/// log starts with the proxy's own timestamp and level, the log holds no raw CR or ESC, and the
/// forged text shows escaped. The healthy stream flows throughout.
#[test]
fn client_bytes_cannot_forge_log_lines() {
    let mut live = Healthy::start("forge", &[]);
    let fake = "2026-01-01T00:00:00.000Z ERROR main forged";

    let path = "/live/a%0a2026-01-01T00:00:00.000Z%20ERROR%20main%20forged-http%0d%1b[2K.flv";
    let reply = get(&live.proxy.http_addr(), path);
    assert_eq!(reply.status, 502, "the origin has no HTTP endpoint: {}", reply.body);

    let mut rtmp = RtmpClient::open(live.proxy.rtmp, Handshake::Simple).unwrap();
    let name = format!("b\n{fake}-rtmp\r\u{1b}[2K");
    let published = rtmp.publish(&name, |_| Vec::new(), Duration::from_secs(10));
    drop(rtmp);

    let caller = SrtCaller::new(0x0F0F_0001);
    let srt: SocketAddr = ([127, 0, 0, 1], live.srt).into();
    let sid = format!("#!::r=live/c\n{fake}-srt\r\u{1b}[2K,m=publish");
    let answer = caller.connect(srt, Some(&sid), Duration::from_secs(3));
    assert_eq!(answer.map(|(a, _)| a.hs_type), Some(1000 + 1404), "the origin has no SRT endpoint");

    let all_logged = wait_until(Duration::from_secs(10), || {
        let log = live.proxy.log_text();
        ["forged-http", "forged-rtmp", "forged-srt"].iter().all(|n| log.contains(n))
    });
    let log = live.proxy.log_text();
    assert!(all_logged, "publish {published:?}; not every forged name was logged:\n{log}");
    for line in log.lines() {
        // A forged line would start like a real one, but with the client's fake timestamp.
        assert!(!line.starts_with(&fake[..24]), "a forged line: {line:?}\n{log}");
        assert!(starts_like_a_log_line(line), "a line the proxy did not start: {line:?}\n{log}");
    }
    assert!(!log.contains('\r') && !log.contains('\u{1b}'), "raw CR or ESC in the log");
    for proto in ["http", "rtmp", "srt"] {
        let escaped = format!("\\n{fake}-{proto}");
        assert!(log.contains(&escaped), "{escaped} not in the log:\n{log}");
        assert!(log.contains(&format!("-{proto}\\r\\u001b[2K")), "{proto}: CR and ESC not escaped:\n{log}");
    }
    live.assert_flowing("after the forged names", Duration::from_secs(5));
    assert_api_quick(&live.proxy, "after the forged names");
}
