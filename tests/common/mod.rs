//! Helpers shared by the integration tests: start the real `streamgate` binary on free
//! loopback ports in its own temp dir, talk raw HTTP to it, stop it by pid.
#![allow(dead_code)]

pub mod http_peers;
pub mod peers;
pub mod procfs;
pub mod redis_server;
pub mod rtmp_client;
pub mod single_chunk;
pub mod udp_peers;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_streamgate");

/// Ports a process takes its peer ports from, one block after another: 128 each.
const PEER_BLOCK: u32 = 128;

/// The range peer ports come from: the larger of the two stretches of unprivileged ports that
/// the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`) leaves out, the lower
/// one from half its lower bound up (ports far below it are where services tend to listen).
fn peer_range() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = text.split_whitespace().filter_map(|n| n.parse::<u32>().ok());
    let (low, high) = (bounds.next().unwrap_or(32768), bounds.next().unwrap_or(60999));
    let below = ((low / 2).max(1024), low.max(1024));
    let above = ((high + 1).min(65536), 65536);
    let (start, end) = if below.1 - below.0 >= above.1 - above.0 { below } else { above };
    assert!(end - start >= PEER_BLOCK, "no room for peer ports outside the ephemeral range {low}-{high}");
    (start, end - start)
}

/// A port on 127.0.0.1, free for TCP and UDP, for a peer that cannot bind port 0 and say which
/// port it got: a child process (nginx, redis-server, ffmpeg, srt-live-transmit) that is told
/// its port. It comes from outside the kernel's ephemeral range ([`peer_range`]), so no port-0
/// bind (the proxy's listeners and origin sockets, any client's source port) can take it before
/// the peer binds it; from a block of its own for this process (chosen by pid, so test binaries
/// running at once start far apart, one after another within a binary); checked with a bind,
/// and never handed out twice by this process.
pub fn peer_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (start, len) = peer_range();
    let first = std::process::id() % (len / PEER_BLOCK) * PEER_BLOCK;
    for _ in 0..len {
        let port = (start + (first + NEXT.fetch_add(1, Ordering::Relaxed)) % len) as u16;
        let free = |port| {
            TcpListener::bind(("127.0.0.1", port)).is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        };
        if free(port) {
            return port;
        }
    }
    panic!("no free peer port in {start}..{}", start + len);
}

/// A TCP port on 127.0.0.1 where nothing listens and nothing can start listening while this
/// lives (a socket holds it, bound and never listening): connecting is refused. For origins that
/// must be unreachable.
pub struct ClosedPort {
    _socket: socket2::Socket,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        ClosedPort { _socket: socket, port }
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("streamgate-{tag}-{}-{n}", std::process::id()));
        // A dead process with this pid may have left it behind.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running proxy. Killed on drop if still running. Every listener the test did not name
/// binds port 0; the ports are read from the startup line, so no two tests race for one.
pub struct Proxy {
    pub child: Child,
    pub rtmp: u16,
    pub api: u16,
    /// The HTTP stream listener (HTTP-FLV, HTTP-TS, HLS, static files).
    pub http: u16,
    /// The HTTP API listener (WHIP/WHEP).
    pub http_api: u16,
    /// The WebRTC and SRT UDP listeners.
    pub webrtc: u16,
    pub srt: u16,
    /// The gRPC listener (ModuleService, health, reflection).
    pub grpc: u16,
    pub log: PathBuf,
    _dir: TempDir,
}

/// Every listener's flag, and its name in the startup line.
pub const LISTENERS: [(&str, &str); 7] = [
    ("--rtmp-server", "RTMP"),
    ("--http-server", "HTTP stream"),
    ("--http-api", "HTTP API"),
    ("--webrtc-server", "WebRTC"),
    ("--srt-server", "SRT"),
    ("--system-api", "System API"),
    ("--grpc", "gRPC"),
];

/// The command line of a proxy in `dir`: `extra`, and port 0 on loopback for every listener
/// `extra` does not name; `--transcode off` unless `extra` names `--transcode` (a job per
/// published stream would make every test pay for transcoding); `--local-origin off` unless
/// named; local streams' HLS in `dir` (removed with it: a killed proxy cleans nothing up) unless
/// `--local-hls-dir` is named; no `PROXY_*`/`STREAMGATE_*`/
/// `RTMP_*` variables inherited.
pub fn proxy_command(dir: &TempDir, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(&dir.0);
    for (flag, _) in LISTENERS {
        if !extra.contains(&flag) {
            cmd.args([flag, "127.0.0.1:0"]);
        }
    }
    if !extra.contains(&"--transcode") {
        cmd.args(["--transcode", "off"]);
    }
    // The relay tests expect a publisher with no origin (yet) refused: the local origin
    // (tests/local_origin.rs names the flag) is off unless named.
    if !extra.contains(&"--local-origin") {
        cmd.args(["--local-origin", "off"]);
    }
    if !extra.contains(&"--local-hls-dir") {
        cmd.arg("--local-hls-dir").arg(dir.0.join("local-hls"));
    }
    cmd.args(extra).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("PROXY_") || k.starts_with("STREAMGATE_") || k.starts_with("RTMP_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The port the startup line gives `name` (`...; RTMP 127.0.0.1:41235; ...`).
pub fn started_port(line: &str, name: &str) -> Option<u16> {
    let at = line.find(&format!("; {name} "))? + name.len() + 3;
    let addr = line[at..].split([';', ' ']).next()?;
    addr.rsplit(':').next()?.parse().ok()
}

impl Proxy {
    /// Starts the proxy with `extra` flags and waits until it has started.
    pub fn start(extra: &[&str]) -> Proxy {
        Self::start_with(extra, &[])
    }

    pub fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Proxy {
        let dir = TempDir::new("proxy");
        let log = dir.0.join("streamgate.log");
        let mut cmd = proxy_command(&dir, extra);
        cmd.envs(env.iter().copied()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("start streamgate");
        let line = wait_started(&log);
        let port = |name: &str| started_port(&line, name).unwrap_or_else(|| panic!("no {name} port in {line}"));
        Proxy {
            child,
            rtmp: port("RTMP"),
            api: port("System API"),
            http: port("HTTP stream"),
            http_api: port("HTTP API"),
            webrtc: port("WebRTC"),
            srt: port("SRT"),
            grpc: port("gRPC"),
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.api)
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    /// Sends SIGTERM and waits for the exit status; returns it, the time it took and the log.
    pub fn stop(mut self) -> (ExitStatus, Duration, String) {
        let t0 = Instant::now();
        signal(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        (status, t0.elapsed(), self.log_text())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the proxy's startup line in its log and returns it.
pub fn wait_started(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(" started: ")) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "streamgate did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal by name with kill(1).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

/// An HTTP response, parsed just enough for the tests.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends raw bytes and reads one response (the server closes or sends Content-Length bytes).
pub fn raw_http(addr: &str, request: &[u8]) -> HttpReply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    read_reply(&mut s)
}

/// Reads one HTTP request from a client (its head and `Content-Length` bytes of body), as a
/// test's own little server sees it: `(head, body)`, `None` if the client ended or failed first.
pub fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..at]).to_string();
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0usize);
        if buf.len() >= at + 4 + length {
            return Some((head, buf[at + 4..at + 4 + length].to_vec()));
        }
    }
}

pub fn read_reply(s: &mut TcpStream) -> HttpReply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(reply) = try_parse(&buf) {
            return reply;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    try_parse(&buf).unwrap_or_else(|| panic!("no complete HTTP response: {:?}", String::from_utf8_lossy(&buf)))
}

fn try_parse(buf: &[u8]) -> Option<HttpReply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let body = buf.get(end + 4..end + 4 + len)?;
    Some(HttpReply { status, head, body: String::from_utf8_lossy(body).to_string() })
}

/// A request with a body.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    req.into_bytes()
}

pub fn get(addr: &str, path: &str) -> HttpReply {
    raw_http(addr, &request("GET", path, &[], ""))
}

pub fn register(addr: &str, body: &str) -> HttpReply {
    raw_http(addr, &request("POST", "/api/v1/srs/register", &[("Content-Type", "application/json")], body))
}

/// Waits until every origin in `ids` is proven (the proxy reached its RTMP address): new
/// streams prefer proven origins, so a test that expects the rendezvous hash to choose among
/// several must let their probes finish first.
pub fn wait_proven(api: &str, ids: &[&str]) {
    let proven = || {
        let origins = get(api, "/api/v1/origins").json();
        let list = origins["origins"].as_array().cloned().unwrap_or_default();
        ids.iter().all(|id| list.iter().any(|o| o["id"] == *id && o["proven"] == true))
    };
    assert!(
        wait_until(Duration::from_secs(10), proven),
        "origins {ids:?} never proven: {}",
        get(api, "/api/v1/origins").body
    );
    // The control thread publishes the shards' snapshot as it proves an origin (not at the
    // next snapshot interval), so once the API says proven, every shard sees it too.
}

/// The captured SRS heartbeat requests shipped in tests/data/heartbeats.
pub fn heartbeat_fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/heartbeats");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// A registration body for a test origin.
pub fn origin_body(server: &str, service: &str, rtmp_port: u16) -> String {
    format!(
        r#"{{"device_id":"{server}","ip":"127.0.0.1","server":"{server}","service":"{service}","pid":"1","rtmp":["{rtmp_port}"]}}"#
    )
}

/// The first Python that can import `modules` (`"a, b"`): `$STREAMGATE_TEST_PYTHON`, else
/// `target/py/bin/python` (the venv scripts/test.sh makes), else `python3`; or what each said.
pub fn python_with(modules: &str) -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("STREAMGATE_TEST_PYTHON").map(PathBuf::from).into_iter().collect();
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/python"));
    candidates.push(PathBuf::from("python3"));
    let mut tried = Vec::new();
    for candidate in candidates {
        match Command::new(&candidate).args(["-c", &format!("import {modules}")]).output() {
            Ok(o) if o.status.success() => return Ok(candidate),
            Ok(o) => tried.push(format!(
                "{}: {}",
                candidate.display(),
                String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("failed")
            )),
            Err(e) => tried.push(format!("{}: {e}", candidate.display())),
        }
    }
    Err(tried.join("; "))
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// A self-signed certificate and its key (P-256), named `name` (its subject CN), for `localhost`,
/// 127.0.0.1 and 127.0.0.2, made with the openssl CLI in `dir`.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_cert(dir: &Path, name: &str) -> Cert {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:127.0.0.2"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    Cert { cert, key }
}
