//! Real HTTP peers for the HTTP stream proxy tests: nginx-rtmp with HLS served by its own
//! `http {}` block, and ffmpeg as an HTTP-FLV / HTTP-TS origin.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::peer_port;
use super::peers::{RTMP_MODULE, StatStream, http_get_body, parse_stat, start_nginx};
use super::procfs::{Transport, holds_port};
use super::{TempDir, signal, wait_until};

/// A registration body for a test origin with an RTMP and an HTTP stream port.
pub fn origin_body_http(server: &str, service: &str, rtmp_port: u16, http_port: u16) -> String {
    format!(
        r#"{{"device_id":"{server}","ip":"127.0.0.1","server":"{server}","service":"{service}","pid":"1","rtmp":["{rtmp_port}"],"http":["{http_port}"]}}"#
    )
}

/// An HTTP response read to the end of its body, whatever its framing: Content-Length, chunked
/// (de-chunked here) or until the server closes.
#[derive(Debug)]
pub struct FullReply {
    pub status: u16,
    pub head: String,
    /// The body as sent on the wire (chunk framing included when chunked).
    pub raw_body: Vec<u8>,
    /// The body with any chunk framing removed.
    pub body: Vec<u8>,
}

impl FullReply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

/// Removes chunked framing from `raw`; `None` when it is not complete, valid chunking.
pub fn dechunk_bytes(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if raw.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Reads one response from `s`: its head, then a Content-Length body, a complete chunked body,
/// or (neither) everything until the server closes. Gives up at `limit` body bytes (for endless
/// live bodies) or when a read times out.
pub fn read_full_reply(s: &mut TcpStream, limit: usize) -> Result<FullReply, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut head_end = None;
    loop {
        if head_end.is_none() {
            head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
        }
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line: {head:?}"))?;
            let mut reply = FullReply { status, head, raw_body: buf[end + 4..].to_vec(), body: Vec::new() };
            let len: Option<usize> = reply.header("content-length").and_then(|v| v.parse().ok());
            let done = match len {
                Some(n) if reply.raw_body.len() >= n => {
                    reply.raw_body.truncate(n);
                    true
                }
                Some(_) => false,
                None if reply.chunked() => dechunk_bytes(&reply.raw_body).is_some(),
                None => false,
            };
            if done || reply.raw_body.len() >= limit {
                reply.body = if reply.chunked() {
                    dechunk_bytes(&reply.raw_body).unwrap_or_else(|| partial_dechunk(&reply.raw_body))
                } else {
                    reply.raw_body.clone()
                };
                return Ok(reply);
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(format!("read after {} bytes: {e}; got {:?}", buf.len(), String::from_utf8_lossy(&buf)));
            }
        }
    }
    // Closed by the server.
    let end = head_end.ok_or_else(|| format!("closed before a full head: {:?}", String::from_utf8_lossy(&buf)))?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut reply = FullReply { status, head, raw_body: buf[end + 4..].to_vec(), body: Vec::new() };
    if let Some(n) = reply.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        reply.raw_body.truncate(n);
    }
    reply.body = if reply.chunked() { partial_dechunk(&reply.raw_body) } else { reply.raw_body.clone() };
    Ok(reply)
}

/// De-chunks as much of `raw` as is complete.
fn partial_dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let Some(size) = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|t| usize::from_str_radix(t.split(';').next().unwrap_or("").trim(), 16).ok())
        else {
            break;
        };
        raw = &raw[line_end + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(raw.len());
        out.extend_from_slice(&raw[..take]);
        if raw.len() < size + 2 {
            break;
        }
        raw = &raw[size + 2..];
    }
    out
}

/// Sends `request` on a fresh connection and reads one full response (see [`read_full_reply`]).
pub fn http_full(addr: &str, request: &[u8], limit: usize) -> Result<FullReply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    read_full_reply(&mut s, limit)
}

/// `GET path` with `Connection: close`, read to the end of the body.
pub fn get_full(addr: &str, path: &str) -> Result<FullReply, String> {
    http_full(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(), usize::MAX)
}

/// A daemonized nginx (master + one worker, one process group, `-p` its own temp dir), stopped
/// by pid on drop. Shared by the HLS origin.
struct Nginx {
    dir: TempDir,
    pid: u32,
}

impl Nginx {
    /// Writes the config `conf(dir, ports)` and starts nginx on `ports` peer ports
    /// ([`start_nginx`]). Returns nginx and the ports it listens on.
    fn start(tag: &str, ports: usize, conf: impl Fn(&Path, &[u16]) -> String) -> (Nginx, Vec<u16>) {
        let dir = TempDir::new(tag);
        let (pid, ports) = start_nginx(&dir.0, ports, conf);
        (Nginx { dir, pid }, ports)
    }

    /// Whether the pid still names this nginx (so a reused pid is never signalled).
    fn alive(&self) -> bool {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let zombie = state.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z'));
        !zombie && String::from_utf8_lossy(&cmdline).contains(&*self.dir.0.to_string_lossy())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if !self.alive() {
            return;
        }
        signal(self.pid, "TERM");
        if !wait_until(Duration::from_secs(3), || !self.alive()) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.pid)]).status();
        }
    }
}

/// An nginx-rtmp origin that writes HLS (`hls_fragment 1s`, 4 s playlists) for what is
/// published to `rtmp://127.0.0.1:<rtmp_port>/live/<stream>`, and serves it from its own
/// `http {}` block: `http://127.0.0.1:<http_port>/live/<stream>.m3u8` and
/// `/live/<stream>-N.ts`, every such request written to its access log. `/stat` (not logged)
/// is nginx-rtmp's stat page.
pub struct NginxHls {
    pub rtmp_port: u16,
    pub http_port: u16,
    nginx: Nginx,
}

impl NginxHls {
    pub fn start() -> NginxHls {
        Self::start_with(false)
    }

    /// Like [`NginxHls::start`], and nginx-rtmp also records each published stream to
    /// `<stream>.flv` beside its playlist, so `/live/<stream>.flv` serves it as HTTP-FLV (what
    /// has been recorded so far).
    pub fn start_recording() -> NginxHls {
        Self::start_with(true)
    }

    fn start_with(record: bool) -> NginxHls {
        let (nginx, ports) = Nginx::start("nginx-hls", 2, |dir, ports| hls_conf(dir, ports[0], ports[1], record));
        let hls = NginxHls { rtmp_port: ports[0], http_port: ports[1], nginx };
        let ready = wait_until(Duration::from_secs(20), || hls.try_stat().is_ok());
        assert!(ready, "nginx-rtmp HLS stat did not answer on {}:\n{}", hls.http_port, hls.error_log());
        hls
    }

    pub fn dir(&self) -> &Path {
        &self.nginx.dir.0
    }

    /// `rtmp://127.0.0.1:<rtmp_port>/live/<stream>`.
    pub fn rtmp_url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.rtmp_port)
    }

    /// `http://127.0.0.1:<http_port>/live/<stream>.m3u8`.
    pub fn hls_url(&self, stream: &str) -> String {
        format!("http://127.0.0.1:{}/live/{stream}.m3u8", self.http_port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("error.log")).unwrap_or_default()
    }

    /// The access log of the HLS location (request lines as nginx's `combined` format has them).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("access.log")).unwrap_or_default()
    }

    /// The request targets (`/live/x.m3u8`, `/live/x-3.ts?spbhid=..`) of the access log, in order.
    pub fn requested(&self) -> Vec<String> {
        self.access_log()
            .lines()
            .filter_map(|l| l.split('"').nth(1))
            .filter_map(|req| req.split_whitespace().nth(1))
            .map(str::to_string)
            .collect()
    }

    /// The directory nginx-rtmp writes HLS into and the `/live/` location serves (created here
    /// so that tests can put files of their own there before anything is published).
    pub fn hls_dir(&self) -> PathBuf {
        let dir = self.dir().join("hls");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The playlist nginx-rtmp wrote for `stream`, read from disk.
    pub fn playlist(&self, stream: &str) -> Option<String> {
        std::fs::read_to_string(self.dir().join("hls").join(format!("{stream}.m3u8"))).ok()
    }

    /// How many segments the playlist on disk lists now.
    pub fn segments(&self, stream: &str) -> usize {
        self.playlist(stream).map_or(0, |p| p.lines().filter(|l| l.ends_with(".ts")).count())
    }

    pub fn try_stat(&self) -> Result<String, String> {
        http_get_body(self.http_port, "/stat")
    }

    pub fn streams(&self) -> Vec<StatStream> {
        parse_stat(&self.try_stat().unwrap_or_default()).into_iter().filter(|s| s.app == "live").collect()
    }

    /// Whether `live/<stream>` has a publisher now.
    pub fn publishing(&self, stream: &str) -> bool {
        self.streams().iter().any(|s| s.name == stream && s.publishing)
    }
}

fn hls_conf(dir: &Path, rtmp_port: u16, http_port: u16, record: bool) -> String {
    let d = dir.display();
    let record = if record {
        format!("record all; record_path {d}/hls; record_unique off; record_suffix .flv;")
    } else {
        "record off;".to_string()
    };
    format!(
        r#"load_module {RTMP_MODULE};
daemon on;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        application live {{
            live on;
            {record}
            allow publish all;
            allow play all;
            hls on;
            hls_path {d}/hls;
            hls_fragment 1s;
            hls_playlist_length 4s;
        }}
    }}
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
        video/x-flv flv;
    }}
    server {{
        listen 127.0.0.1:{http_port};
        location /live/ {{
            alias {d}/hls/;
            add_header Cache-Control no-cache;
        }}
        location /stat {{
            access_log off;
            rtmp_stat all;
        }}
    }}
}}
"#
    )
}

/// An ffmpeg process (stdin null, stdout and stderr to one log file in its own temp dir),
/// killed by pid on drop.
pub struct FfmpegProc {
    pub child: Child,
    pub log: PathBuf,
    pub progress: PathBuf,
    status: Option<ExitStatus>,
    dir: TempDir,
}

impl FfmpegProc {
    /// Runs `ffmpeg -hide_banner -nostdin -loglevel <level> -progress <file> <args>`.
    pub fn spawn(tag: &str, level: &str, args: &[&str]) -> FfmpegProc {
        let dir = TempDir::new(tag);
        let log = dir.0.join("ffmpeg.log");
        let progress = dir.0.join("progress.txt");
        let child = Command::new("ffmpeg")
            .current_dir(&dir.0)
            .args(["-hide_banner", "-nostdin", "-loglevel", level, "-progress"])
            .arg(&progress)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start ffmpeg (apt-get install ffmpeg)");
        FfmpegProc { child, log, progress, status: None, dir }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The latest `frame=` count in the progress file.
    pub fn frames(&self) -> u64 {
        std::fs::read_to_string(&self.progress)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("frame="))
            .filter_map(|n| n.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn running(&mut self) -> bool {
        self.try_status().is_none()
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// A description for assertion messages: pid, status and the log's last lines.
    pub fn describe(&mut self) -> String {
        let log = self.log_text();
        let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        format!("ffmpeg pid {} status {:?}, log tail:\n{}", self.child.id(), self.try_status(), tail.join("\n"))
    }
}

impl Drop for FfmpegProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The lavfi test signal every ffmpeg here encodes: 320x180 25 fps H.264 with a keyframe every
/// second (`-g 25`) and AAC, in real time (`-re`), for `seconds`.
pub fn test_signal_args(seconds: u32) -> Vec<String> {
    [
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x180:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=1000:sample_rate=44100",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-t",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([seconds.to_string()])
    .collect()
}

/// `args` ([`test_signal_args`]) with the audio encoded by `audio_codec` instead of AAC.
pub fn with_audio(mut args: Vec<String>, audio_codec: &str) -> Vec<String> {
    let at = args.iter().position(|a| a == "-c:a").expect("the test signal names its audio codec");
    args[at + 1] = audio_codec.to_string();
    args
}

/// Publishes the test signal (1 s GOP, see [`test_signal_args`]) to an RTMP `url`.
pub fn publish_short_gop(url: &str, seconds: u32) -> FfmpegProc {
    let mut args = test_signal_args(seconds);
    args.extend(["-f", "flv", url].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    FfmpegProc::spawn("ffmpeg-pub", "error", &args)
}

/// ffmpeg as a live HTTP origin: `ffmpeg ... -f <flv|mpegts> -listen 1 http://127.0.0.1:PORT/PATH`
/// serves the test signal to ONE client (any path; it exits when that client leaves), logging
/// at `trace`, which is the only level where ffmpeg's HTTP server prints the request it got:
/// `header='GET /live/x.flv?token=abc HTTP/1.1'`, `Requested resource: /live/x.flv?token=abc`
/// and one `header='Name: value'` line per request header.
pub struct FfmpegHttpOrigin {
    pub port: u16,
    pub path: String,
    pub proc: FfmpegProc,
}

impl FfmpegHttpOrigin {
    /// `format`: `flv` or `mpegts`; `path` such as `/live/x.flv`. Waits until ffmpeg listens
    /// (its socket seen in /proc, so the one client is not used up).
    pub fn start(format: &str, path: &str, seconds: u32) -> FfmpegHttpOrigin {
        Self::listen(test_signal_args(seconds), format, path)
    }

    /// An audio-only live stream as SRS's `http_remux` serves it: a 1 kHz tone in `codec`
    /// (`libmp3lame`, `aac`) muxed as `format` (`mp3`, `adts`) with SRS's `content_type`
    /// (`audio/mpeg`, `audio/x-aac`), in real time for `seconds`.
    pub fn start_audio(format: &str, codec: &str, content_type: &str, path: &str, seconds: u32) -> FfmpegHttpOrigin {
        let args = ["-re", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100", "-c:a", codec, "-b:a", "64k"];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["-t", &seconds.to_string(), "-content_type", content_type].map(String::from));
        Self::listen(args, format, path)
    }

    /// The test signal with its audio in `audio_codec` (`libmp3lame`, say) instead of AAC.
    pub fn start_with_audio(audio_codec: &str, format: &str, path: &str, seconds: u32) -> FfmpegHttpOrigin {
        Self::listen(with_audio(test_signal_args(seconds), audio_codec), format, path)
    }

    /// Runs ffmpeg with `input`, then `-f format -listen 1 http://127.0.0.1:PORT/PATH` on a
    /// peer port; waits until ffmpeg itself listens there.
    fn listen(input: Vec<String>, format: &str, path: &str) -> FfmpegHttpOrigin {
        let port = peer_port();
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut args = input;
        args.extend(["-f", format, "-listen", "1", &url].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = FfmpegProc::spawn("ffmpeg-origin", "trace", &args);
        let pid = proc.child.id();
        let listens = wait_until(Duration::from_secs(15), || holds_port(pid, port, Transport::Tcp) || !proc.running());
        assert!(listens && proc.running(), "ffmpeg HTTP origin never listened on {port}: {}", proc.describe());
        FfmpegHttpOrigin { port, path: path.to_string(), proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.path)
    }

    /// Whether a client has connected and sent its request.
    pub fn contacted(&self) -> bool {
        self.proc.log_text().contains("Requested resource:")
    }

    /// The request targets ffmpeg logged (`Requested resource: ...`).
    pub fn requested(&self) -> Vec<String> {
        self.proc
            .log_text()
            .lines()
            .filter_map(|l| l.split_once("Requested resource: ").map(|(_, r)| r.trim().to_string()))
            .collect()
    }

    /// The request line and headers ffmpeg logged (`header='...'`), in order, the empty line
    /// that ends the head left out.
    pub fn request_head(&self) -> Vec<String> {
        self.proc
            .log_text()
            .lines()
            .filter_map(|l| l.split_once("header='").map(|(_, h)| h.trim_end_matches('\'').to_string()))
            .filter(|h| !h.is_empty())
            .collect()
    }
}
