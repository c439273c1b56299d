//! Real UDP peers for the SRT and WebRTC proxy tests, all on loopback:
//! - SRT: `srt-live-transmit` (Debian's srt-tools) as an origin that relays what a publisher
//!   sends to one listener port to the player on another, ffmpeg/ffprobe (libsrt) as publisher
//!   and players, and a hand-made SRT caller whose INDUCTION and CONCLUSION are written here
//!   byte by byte (not with the proxy's codec) for rejections and bad input;
//! - WebRTC: aiortc (PyPI) as WHIP publisher, WHEP player and WHIP/WHEP origin
//!   (`tests/webrtc/peer.py`), and hand-made STUN binding requests;
//! - a flood of datagrams from many sockets, each bound to its own port.
//!
//! Every process runs in its own temp dir and is killed by pid on drop. A missing tool is a
//! test failure that says what to install, never a skip.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http_peers::{FfmpegProc, test_signal_args};
use super::peers::rendezvous_pick;
use super::procfs::{Transport, holds_port};
use super::{Proxy, TempDir, get, peer_port, wait_until};

/// The aiortc that scripts/test.sh installs into `target/py`.
pub const AIORTC: &str = "aiortc==1.16.0";

/// Panics with what to install when `tool` is not on PATH.
pub fn require(tool: &str, package: &str) {
    let found =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    assert!(found, "{tool} is not installed: apt-get install {package} (scripts/test.sh installs it)");
}

/// The Python that imports aiortc ([`super::python_with`]); panics with the install command if
/// none does.
pub fn python() -> &'static Path {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(|| super::python_with("aiortc, aioice, av")) {
        Ok(path) => path,
        Err(tried) => panic!(
            "no Python with aiortc ({tried}); install it: python3 -m venv target/py && \
             target/py/bin/pip install {AIORTC} (scripts/test.sh does this)"
        ),
    }
}

// ------------------------------------------------------------------------------------ proxy

/// A proxy whose SRT, WebRTC and HTTP API (WHIP/WHEP) ports are known.
pub struct UdpProxy {
    pub p: Proxy,
    pub srt: u16,
    pub webrtc: u16,
    pub http_api: u16,
}

impl UdpProxy {
    pub fn start(extra: &[&str]) -> UdpProxy {
        let p = Proxy::start(extra);
        let (srt, webrtc, http_api) = (p.srt, p.webrtc, p.http_api);
        UdpProxy { p, srt, webrtc, http_api }
    }

    pub fn srt_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.srt).into()
    }

    pub fn webrtc_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.webrtc).into()
    }

    /// `srt://127.0.0.1:<srt>?streamid=<sid>`.
    pub fn srt_url(&self, sid: &str) -> String {
        format!("srt://127.0.0.1:{}?streamid={sid}", self.srt)
    }

    /// `http://127.0.0.1:<http_api>/rtc/v1/<api>/?app=live&stream=<stream>`.
    pub fn rtc_url(&self, api: &str, stream: &str) -> String {
        format!("http://127.0.0.1:{}/rtc/v1/{api}/?app=live&stream={stream}", self.http_api)
    }

    pub fn register(&self, body: &str) {
        let reply = super::register(&self.p.api_addr(), body);
        assert_eq!(reply.status, 200, "register {body}: {}", reply.body);
    }

    /// The `/api/v1/streams` entry of `key`.
    pub fn stream(&self, key: &str) -> Option<Value> {
        let reply = get(&self.p.api_addr(), "/api/v1/streams");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["streams"].as_array()?.iter().find(|s| s["key"] == key).cloned()
    }

    /// Bytes (in from clients, out to clients) of `key` over `protocol` (`srt`, `webrtc`).
    pub fn bytes(&self, key: &str, protocol: &str) -> (u64, u64) {
        let Some(s) = self.stream(key) else { return (0, 0) };
        let p = &s["bytes_by_protocol"][protocol];
        (p["bytes_in"].as_u64().unwrap_or(0), p["bytes_out"].as_u64().unwrap_or(0))
    }

    /// Sessions of `key` of this kind (`srt_publish`, `webrtc_play`, ...).
    pub fn sessions(&self, key: &str, kind: &str) -> u64 {
        self.stream(key).and_then(|s| s["sessions"][kind].as_u64()).unwrap_or(0)
    }

    /// `GET /api/v1/shards`: per shard its UDP table sizes now and at their largest.
    pub fn shards(&self) -> Vec<Value> {
        let reply = get(&self.p.api_addr(), "/api/v1/shards");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["shards"].as_array().cloned().unwrap_or_default()
    }

    /// The sum over shards of one table's size: `udp_tables` (now) or `udp_tables_peak`.
    pub fn table(&self, which: &str, table: &str) -> u64 {
        self.shards().iter().map(|s| s[which][table].as_u64().unwrap_or(0)).sum()
    }

    /// The largest size one table reached on any one shard.
    pub fn table_peak(&self, table: &str) -> u64 {
        self.shards().iter().map(|s| s["udp_tables_peak"][table].as_u64().unwrap_or(0)).max().unwrap_or(0)
    }

    pub fn log(&self) -> String {
        format!("--- proxy log:\n{}", self.p.log_text())
    }
}

/// A registration body for an origin with SRT/WebRTC endpoints. `rtmp` is mandatory in a
/// registration, so a port nothing listens on stands there; these tests never use it.
pub fn origin_body_udp(server: &str, srt: &[String], api: &[u16], rtc: &[String]) -> String {
    let api: Vec<String> = api.iter().map(u16::to_string).collect();
    json!({
        "device_id": server, "ip": "127.0.0.1", "server": server, "service": "s", "pid": "1",
        "rtmp": ["9"], "srt": srt, "api": api, "rtc": rtc,
    })
    .to_string()
}

/// A stream name `<prefix><i>` whose key `<vhost>/live/<name>` the proxy's rendezvous hashing
/// puts on origin `want` of `ids` (so a test decides which origin serves which stream).
pub fn name_on(vhost: &str, prefix: &str, want: &str, ids: &[&str]) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|name| rendezvous_pick(&format!("{vhost}/live/{name}"), ids) == want)
        .unwrap_or_else(|| panic!("no stream name {prefix}N lands on {want}"))
}

// ------------------------------------------------------------------------------------ SRT

/// An SRT handshake packet as a libsrt caller writes it.
fn srt_packet(version: u32, ext_field: u32, hs_type: i32, socket_id: u32, cookie: u32, extensions: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + extensions.len());
    // control bit + HANDSHAKE, type-specific info, timestamp, destination socket id 0
    for word in [0x8000_0000u32, 0, 0, 0] {
        p.extend_from_slice(&word.to_be_bytes());
    }
    // version, encryption/extension field, initial sequence number, MTU, flow window, type,
    // socket id, SYN cookie
    for word in [version, ext_field, 0x1234_5678, 1500, 8192, hs_type as u32, socket_id, cookie] {
        p.extend_from_slice(&word.to_be_bytes());
    }
    p.extend_from_slice(&[1, 0, 0, 127]); // peer IP 127.0.0.1, each word byte-reversed
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(extensions);
    p
}

/// A caller's INDUCTION (version 4, extension field UDT_DGRAM, cookie 0).
pub fn srt_induction(socket_id: u32) -> Vec<u8> {
    srt_packet(4, 2, 1, socket_id, 0, &[])
}

/// A caller's HSv5 CONCLUSION: an HSREQ block (SRT 1.5.1, TSBPD both ways, 120 ms) and, if
/// given, a stream id block (NUL-padded, each 4-byte word byte-reversed, as libsrt sends it).
pub fn srt_conclusion(socket_id: u32, cookie: u32, stream_id: Option<&str>) -> Vec<u8> {
    let mut ext = Vec::new();
    ext.extend_from_slice(&1u16.to_be_bytes()); // HSREQ
    ext.extend_from_slice(&3u16.to_be_bytes());
    for word in [0x0001_0501u32, 0xBF, (120 << 16) | 120] {
        ext.extend_from_slice(&word.to_be_bytes());
    }
    let mut flags = 0x1; // HS_EXT_HSREQ
    if let Some(sid) = stream_id {
        flags |= 0x4; // HS_EXT_CONFIG
        let mut bytes = sid.as_bytes().to_vec();
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        ext.extend_from_slice(&5u16.to_be_bytes()); // SID
        ext.extend_from_slice(&((bytes.len() / 4) as u16).to_be_bytes());
        for word in bytes.chunks(4) {
            ext.extend(word.iter().rev());
        }
    }
    srt_packet(5, flags, -1, socket_id, cookie, &ext)
}

/// The fields of an SRT handshake the tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtHandshake {
    pub version: u32,
    pub ext_field: u16,
    /// 1 INDUCTION, -1 CONCLUSION, 1000 + reason for a rejection.
    pub hs_type: i32,
    pub socket_id: u32,
    pub cookie: u32,
}

/// Reads an SRT handshake control packet; `None` for anything else.
pub fn parse_srt_handshake(p: &[u8]) -> Option<SrtHandshake> {
    if p.len() < 64 || p[..4] != [0x80, 0, 0, 0] {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([p[16 + 4 * i], p[17 + 4 * i], p[18 + 4 * i], p[19 + 4 * i]]);
    Some(SrtHandshake {
        version: word(0),
        ext_field: (word(1) & 0xFFFF) as u16,
        hs_type: word(5) as i32,
        socket_id: word(6),
        cookie: word(7),
    })
}

/// A hand-made SRT caller on its own UDP socket.
pub struct SrtCaller {
    pub socket: UdpSocket,
    pub socket_id: u32,
}

impl SrtCaller {
    pub fn new(socket_id: u32) -> SrtCaller {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        SrtCaller { socket, socket_id }
    }

    /// Sends `packet` every 250 ms (as libsrt retransmits) until a handshake comes back or
    /// `timeout` passes.
    pub fn ask(&self, to: SocketAddr, packet: &[u8], timeout: Duration) -> Option<SrtHandshake> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            self.socket.send_to(packet, to).ok()?;
            let wait = Duration::from_millis(250).min(deadline.saturating_duration_since(Instant::now()));
            self.socket.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).unwrap();
            let until = Instant::now() + wait;
            while Instant::now() < until {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) if from == to => {
                        if let Some(hs) = parse_srt_handshake(&buf[..n]) {
                            return Some(hs);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        None
    }

    /// INDUCTION: the listener's cookie.
    pub fn induction(&self, to: SocketAddr) -> Result<u32, String> {
        match self.ask(to, &srt_induction(self.socket_id), Duration::from_secs(3)) {
            Some(hs) if hs.hs_type == 1 && hs.cookie != 0 => Ok(hs.cookie),
            other => Err(format!("INDUCTION to {to}: got {other:?}")),
        }
    }

    /// INDUCTION, then CONCLUSION with `stream_id`: the listener's answer to the CONCLUSION
    /// (with how long it took), or `None` if none came within `timeout`.
    pub fn connect(
        &self,
        to: SocketAddr,
        stream_id: Option<&str>,
        timeout: Duration,
    ) -> Option<(SrtHandshake, Duration)> {
        let cookie = self.induction(to).ok()?;
        let t0 = Instant::now();
        let answer = self.ask(to, &srt_conclusion(self.socket_id, cookie, stream_id), timeout)?;
        Some((answer, t0.elapsed()))
    }
}

/// Whether an SRT listener answers an INDUCTION on 127.0.0.1:`port` within half a second
/// (a listener keeps no state for it).
pub fn srt_answers(port: u16) -> bool {
    let caller = SrtCaller::new(0x0ABC_0001);
    caller.ask(([127, 0, 0, 1], port).into(), &srt_induction(caller.socket_id), Duration::from_millis(500)).is_some()
}

/// `srt-live-transmit srt://127.0.0.1:<input>?mode=listener srt://127.0.0.1:<output>?mode=listener`:
/// an SRT origin that relays what one publisher sends to `input` to one player on `output`
/// (each listener takes one caller at a time and listens again when it leaves). Nothing comes
/// out of `output` unless it went into `input`. Killed by pid on drop.
pub struct SrtRelayOrigin {
    pub input: u16,
    pub output: u16,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl SrtRelayOrigin {
    /// Starts it on two peer ports and waits until it holds both and both answer.
    pub fn start() -> SrtRelayOrigin {
        require("srt-live-transmit", "srt-tools");
        let (input, output) = (peer_port(), peer_port());
        let dir = TempDir::new("srt-origin");
        let log = dir.0.join("srt-live-transmit.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("srt-live-transmit")
            .current_dir(&dir.0)
            .args([
                "-v",
                &format!("srt://127.0.0.1:{input}?mode=listener"),
                &format!("srt://127.0.0.1:{output}?mode=listener"),
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start srt-live-transmit (apt-get install srt-tools)");
        let pid = child.id();
        let ours = |port| holds_port(pid, port, Transport::Udp) && srt_answers(port);
        let up = wait_until(Duration::from_secs(10), || {
            child.try_wait().ok().flatten().is_some() || (ours(input) && ours(output))
        });
        let running = child.try_wait().ok().flatten().is_none();
        let origin = SrtRelayOrigin { input, output, child, log, _dir: dir };
        assert!(up && running, "srt-live-transmit never listened on {input}/{output}: {}", origin.log_text());
        origin
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for SrtRelayOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ffmpeg publishes the test signal (H.264 with a 1 s GOP + AAC, real time) as MPEG-TS to an
/// SRT `url` for `seconds`.
pub fn publish_srt(url: &str, seconds: u32) -> FfmpegProc {
    publish_srt_with(&[], url, seconds)
}

/// [`publish_srt`] with output `options` before the URL (`-srt_streamid ID`: a stream id with
/// `&` cannot go in an `srt://` URL, where it would end `streamid=`).
pub fn publish_srt_with(options: &[&str], url: &str, seconds: u32) -> FfmpegProc {
    require("ffmpeg", "ffmpeg");
    let mut args = test_signal_args(seconds);
    args.extend(["-f", "mpegts"].map(String::from));
    args.extend(options.iter().map(|o| o.to_string()));
    args.push(url.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    FfmpegProc::spawn("srt-pub", "error", &args)
}

/// ffmpeg plays an SRT `url` into the null muxer until it ends; `frames()` counts decoded video
/// frames as it goes.
pub fn play_srt(url: &str) -> FfmpegProc {
    require("ffmpeg", "ffmpeg");
    FfmpegProc::spawn("srt-play", "error", &["-i", url, "-f", "null", "-"])
}

// ------------------------------------------------------------------------------------ STUN

/// A STUN binding request (RFC 8489): header with the magic cookie and `txid`, one USERNAME
/// attribute (padded to 4 bytes). The message length is right; tests corrupt it themselves.
pub fn stun_binding(username: &[u8], txid: [u8; 12]) -> Vec<u8> {
    let padded = username.len().div_ceil(4) * 4;
    let mut m = Vec::with_capacity(24 + padded);
    m.extend_from_slice(&0x0001u16.to_be_bytes());
    m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&txid);
    m.extend_from_slice(&0x0006u16.to_be_bytes());
    m.extend_from_slice(&(username.len() as u16).to_be_bytes());
    m.extend_from_slice(username);
    m.resize(24 + padded, 0);
    m
}

/// Deterministic pseudo-random bytes (xorshift), so a failing run can be repeated.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ------------------------------------------------------------------------------------ flood

/// What a flood did.
#[derive(Debug)]
pub struct Flood {
    pub sent: usize,
    pub ports: usize,
    pub elapsed: Duration,
}

/// Sends `per_socket` datagrams to `target` from each of `sockets` UDP sockets, each bound to
/// its own port on 127.0.0.1 (all open at once, so the ports are distinct; sent round robin in
/// batches of 250), never reading what comes back. `make(socket, n)` builds each datagram.
pub fn flood(target: SocketAddr, sockets: usize, per_socket: usize, make: impl Fn(usize, usize) -> Vec<u8>) -> Flood {
    allow_descriptors(sockets as u64 + 512);
    let t0 = Instant::now();
    let open: Vec<UdpSocket> =
        (0..sockets).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a flood socket")).collect();
    let ports: std::collections::HashSet<u16> = open.iter().map(|s| s.local_addr().unwrap().port()).collect();
    let mut sent = 0;
    for (b, batch) in open.chunks(250).enumerate() {
        for n in 0..per_socket {
            for (j, s) in batch.iter().enumerate() {
                if s.send_to(&make(b * 250 + j, n), target).is_ok() {
                    sent += 1;
                }
            }
        }
    }
    Flood { sent, ports: ports.len(), elapsed: t0.elapsed() }
}

/// Raises this process's soft limit on open files to at least `want` (within the hard limit).
fn allow_descriptors(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= want {
        return;
    }
    limit.rlim_cur = want.min(limit.rlim_max);
    // SAFETY: setrlimit only reads the struct we pass.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
}

// ------------------------------------------------------------------------------------ aiortc

/// One `tests/webrtc/peer.py` process: its stdout (one JSON event a line) and stderr go to
/// files in its temp dir; killed by pid on drop.
pub struct PyPeer {
    pub tag: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
    _dir: TempDir,
}

impl PyPeer {
    pub fn spawn(tag: &str, args: &[&str]) -> PyPeer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webrtc/peer.py");
        let dir = TempDir::new(tag);
        let (out, err) = (dir.0.join("stdout.jsonl"), dir.0.join("stderr.log"));
        let child = Command::new(python())
            .current_dir(&dir.0)
            .arg(&script)
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {script:?}: {e}", python().display()));
        PyPeer { tag: tag.to_string(), child, out, err, status: None, _dir: dir }
    }

    /// Every event printed so far.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The first event named `name`.
    pub fn event(&self, name: &str) -> Option<Value> {
        self.events().into_iter().find(|e| e["event"] == name)
    }

    /// The latest frame count (`frames` events).
    pub fn frames(&self) -> u64 {
        self.events().iter().rev().find(|e| e["event"] == "frames").and_then(|e| e["n"].as_u64()).unwrap_or(0)
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the event `name`; `Err` (with the whole story) if the peer reports an error,
    /// exits first, or `timeout` passes.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.event(name) {
                return Ok(e);
            }
            if self.event("error").is_some() || self.try_status().is_some() || Instant::now() >= deadline {
                let story = self.describe();
                return Err(format!("{}: no {name:?} event within {timeout:?}; {story}", self.tag));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.try_status()
    }

    /// Pid, exit status, the last events and stderr, for assertion messages.
    pub fn describe(&mut self) -> String {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        let tail = |s: &str, n: usize| {
            s.lines().rev().take(n).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        let status = self.try_status();
        format!(
            "{} pid {} status {status:?}\n--- events (last 15):\n{}\n--- stderr (last 30):\n{}",
            self.tag,
            self.child.id(),
            tail(&out, 15),
            tail(&err, 30)
        )
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One site of the aiortc origin: its HTTP API port and its WebRTC UDP port.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    pub api: u16,
    pub rtc: u16,
}

/// The aiortc WHIP/WHEP origin (`peer.py origin`), with `sites` sites whose ports the kernel
/// chose. WHEP players get the video of the newest WHIP publisher (of any site).
pub struct AiortcOrigin {
    pub peer: PyPeer,
    pub sites: Vec<Site>,
}

impl AiortcOrigin {
    pub fn start(sites: usize) -> AiortcOrigin {
        let mut peer = PyPeer::spawn("aiortc-origin", &["origin", "--sites", &sites.to_string()]);
        let ready = peer.wait_event("ready", Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
        let sites = ready["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Site { api: s["api"].as_u64().unwrap() as u16, rtc: s["rtc"].as_u64().unwrap() as u16 })
            .collect();
        AiortcOrigin { peer, sites }
    }

    /// What the origin saw (`GET /stats`, asked of the origin itself, not through the proxy).
    pub fn stats(&self) -> Value {
        get(&format!("127.0.0.1:{}", self.sites[0].api), "/stats").json()
    }

    /// Video frames the origin decoded from its WHIP publishers.
    pub fn whip_frames(&self) -> u64 {
        self.stats()["whip_frames"].as_u64().unwrap_or(0)
    }
}

/// `peer.py publish`: WHIP to `url`, video for `seconds`, then DELETE.
pub fn whip_publish(url: &str, seconds: u32) -> PyPeer {
    PyPeer::spawn("whip-publish", &["publish", "--url", url, "--seconds", &seconds.to_string()])
}

/// `peer.py play`: WHEP from `url`, counting frames for `seconds`, then DELETE.
pub fn whep_play(url: &str, seconds: u32) -> PyPeer {
    PyPeer::spawn("whep-play", &["play", "--url", url, "--seconds", &seconds.to_string()])
}

/// `peer.py offer`: a WHIP offer to `url` whose answer is applied only after `connect_after`
/// seconds (never: no STUN check or media at all), its resource DELETEd after `delete_after`;
/// it ends after `seconds`.
pub fn whip_offer(url: &str, seconds: u32, connect_after: Option<f64>, delete_after: Option<f64>) -> PyPeer {
    let seconds = seconds.to_string();
    let mut args = vec!["offer".to_string(), "--url".into(), url.into(), "--seconds".into(), seconds];
    if let Some(a) = connect_after {
        args.extend(["--connect-after".into(), a.to_string()]);
    }
    if let Some(d) = delete_after {
        args.extend(["--delete-after".into(), d.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    PyPeer::spawn("whip-offer", &args)
}
