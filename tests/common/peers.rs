//! Real RTMP peers for the proxy tests: nginx-rtmp origins and ffmpeg/ffprobe publishers and
//! players. Every process is started in its own temp dir, on loopback peer ports, tracked by
//! pid and stopped on drop, so tests can run in parallel and a failing test leaks nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::procfs::{Transport, holds_port};
use super::{TempDir, peer_port, signal, wait_until};

/// The nginx-rtmp dynamic module on Debian 12 (`libnginx-mod-rtmp`).
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// Sends a GET with `Connection: close` and reads until the server closes: the body, or why
/// there is none. Works for any framing (nginx's stat handler sends no Content-Length).
pub fn http_get_body(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP head: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not 200: {head}"));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One `<stream>` of nginx-rtmp's `/stat` XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatStream {
    pub app: String,
    pub name: String,
    /// Whether a client of the stream is publishing.
    pub publishing: bool,
    /// Clients that are not publishing.
    pub players: usize,
    /// `<nclients>` as nginx counts it (publisher included).
    pub nclients: usize,
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(&xml[start..end])
}

/// Splits `xml` into the bodies of its top-level-in-sequence `<name>...</name>` elements (the
/// stat XML does not nest an element in one of its own name).
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let Some(j) = body.find(&close) else { break };
        out.push(&body[..j]);
        rest = &body[j + close.len()..];
    }
    out
}

/// Parses nginx-rtmp's stat XML:
/// `<application><name>live</name><live><stream><name>a</name>...<client>...<publishing/>
/// ...</client>...<nclients>2</nclients><publishing/><active/></stream>...`.
pub fn parse_stat(xml: &str) -> Vec<StatStream> {
    let mut out = Vec::new();
    for app in elements(xml, "application") {
        let app_name = tag(app, "name").unwrap_or("").to_string();
        for stream in elements(app, "stream") {
            let clients = elements(stream, "client");
            let publishers = clients.iter().filter(|c| c.contains("<publishing/>")).count();
            // The stream's own <name> comes before its first <client>.
            let head = stream.split("<client>").next().unwrap_or("");
            out.push(StatStream {
                app: app_name.clone(),
                name: tag(head, "name").unwrap_or("").to_string(),
                publishing: publishers > 0,
                players: clients.len() - publishers,
                nclients: tag(stream.rsplit("</client>").next().unwrap_or(""), "nclients")
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0),
            });
        }
    }
    out
}

/// An nginx-rtmp origin: `rtmp://127.0.0.1:<rtmp_port>/live/<stream>`, stat on
/// `http://127.0.0.1:<http_port>/stat`. Daemonized nginx (master + one worker, one process
/// group); stopped by pid on drop.
pub struct NginxRtmp {
    pub rtmp_port: u16,
    pub http_port: u16,
    pub chunk_size: u32,
    pub dir: TempDir,
    /// The master's pid (also the process group of master and worker), read from its pid file.
    pub pid: u32,
    killed: bool,
}

impl NginxRtmp {
    /// Starts nginx-rtmp with this `chunk_size` on two peer ports and waits until its master
    /// listens on both and its stat page answers.
    pub fn start(chunk_size: u32) -> NginxRtmp {
        Self::start_with(chunk_size, "")
    }

    /// [`NginxRtmp::start`] with more directives in `application live` (`on_play ...;`).
    pub fn start_with(chunk_size: u32, app: &str) -> NginxRtmp {
        let dir = TempDir::new("nginx");
        let (pid, ports) = start_nginx(&dir.0, 2, |dir, ports| nginx_conf(dir, ports[0], ports[1], chunk_size, app));
        let (rtmp_port, http_port) = (ports[0], ports[1]);
        let nginx = NginxRtmp { rtmp_port, http_port, chunk_size, dir, pid, killed: false };
        let ready = wait_until(Duration::from_secs(20), || nginx.try_stat().is_ok());
        assert!(ready, "nginx-rtmp stat did not answer on {http_port}:\n{}", nginx.error_log());
        nginx
    }

    /// `rtmp://127.0.0.1:<rtmp_port>/live/<stream>`.
    pub fn url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.rtmp_port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }

    pub fn try_stat(&self) -> Result<String, String> {
        http_get_body(self.http_port, "/stat")
    }

    /// The stat XML; panics when nginx does not answer.
    pub fn stat(&self) -> String {
        self.try_stat().unwrap_or_else(|e| panic!("nginx stat on {}: {e}\n{}", self.http_port, self.error_log()))
    }

    /// The streams of application `live` now.
    pub fn streams(&self) -> Vec<StatStream> {
        parse_stat(&self.stat()).into_iter().filter(|s| s.app == "live").collect()
    }

    pub fn stream(&self, stream: &str) -> Option<StatStream> {
        self.streams().into_iter().find(|s| s.name == stream)
    }

    /// Whether `live/<stream>` has a publisher now.
    pub fn publishing(&self, stream: &str) -> bool {
        self.stream(stream).is_some_and(|s| s.publishing)
    }

    /// How many non-publishing clients `live/<stream>` has now.
    pub fn players(&self, stream: &str) -> usize {
        self.stream(stream).map_or(0, |s| s.players)
    }

    /// Whether the pid still names this nginx (so a reused pid is never signalled).
    fn alive(&self) -> bool {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let zombie = state.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z'));
        !zombie && String::from_utf8_lossy(&cmdline).contains(&*self.dir.0.to_string_lossy())
    }

    /// Simulates a crash: SIGKILL to master and worker (their process group), then waits until
    /// the RTMP port refuses connections.
    pub fn kill(&mut self) {
        if self.alive() {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.pid)]).status();
            signal(self.pid, "KILL");
        }
        self.killed = true;
        let gone = wait_until(Duration::from_secs(10), || !port_open(self.rtmp_port));
        assert!(gone, "nginx on {} still accepts after SIGKILL", self.rtmp_port);
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        if self.killed || !self.alive() {
            return;
        }
        // Fast shutdown (SIGTERM closes every connection), then SIGKILL the group if it lingers.
        signal(self.pid, "TERM");
        if !wait_until(Duration::from_secs(3), || !self.alive()) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.pid)]).status();
        }
    }
}

/// Starts a daemonized nginx (`-p dir`; master and worker in one process group) with the
/// config `conf(dir, ports)` on `count` [`peer_port`]s. Returns the master's pid, read from its
/// pid file, and the ports, once the master holds a listening socket on each of them.
pub fn start_nginx(dir: &Path, count: usize, conf: impl Fn(&Path, &[u16]) -> String) -> (u32, Vec<u16>) {
    let ports: Vec<u16> = (0..count).map(|_| peer_port()).collect();
    std::fs::write(dir.join("nginx.conf"), conf(dir, &ports)).unwrap();
    let out = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .args(["-c", "nginx.conf"])
        .stdin(Stdio::null())
        .output()
        .expect("run nginx (apt-get install nginx libnginx-mod-rtmp)");
    let error_log = || std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx on {ports:?} exited {}: {stderr}{}", out.status, error_log());
    let pid_file = dir.join("nginx.pid");
    let mut pid = 0;
    wait_until(Duration::from_secs(10), || {
        pid = std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse().ok()).unwrap_or(0);
        pid != 0
    });
    assert!(pid != 0, "nginx wrote no pid file in {}", dir.display());
    let listening = wait_until(Duration::from_secs(20), || ports.iter().all(|&p| holds_port(pid, p, Transport::Tcp)));
    assert!(listening, "nginx (pid {pid}) does not listen on {ports:?}:\n{}", error_log());
    (pid, ports)
}

fn nginx_conf(dir: &Path, rtmp_port: u16, http_port: u16, chunk_size: u32, app: &str) -> String {
    let d = dir.display();
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
        chunk_size {chunk_size};
        application live {{
            live on;
            record off;
            allow publish all;
            allow play all;
            {app}
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{http_port};
        location /stat {{ rtmp_stat all; }}
    }}
}}
"#
    )
}

/// A running ffmpeg (publisher or player): stdin null, stderr to a file, killed on drop.
pub struct Ffmpeg {
    pub child: Child,
    pub stderr: PathBuf,
    pub progress: PathBuf,
    status: Option<ExitStatus>,
    _dir: TempDir,
}

impl Ffmpeg {
    /// Publishes a 640x360 25 fps H.264 + AAC test signal to `url` in real time for `seconds`.
    pub fn publish(url: &str, seconds: u32) -> Ffmpeg {
        let t = seconds.to_string();
        Self::spawn(
            "ffmpeg-pub",
            &[
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=640x360:rate=25",
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
                "50",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                "-t",
                &t,
                "-f",
                "flv",
                url,
            ],
        )
    }

    /// Plays `url`, decoding `seconds` of it (or until the stream ends) into the null muxer. No
    /// read timeout: it exits only when it has its seconds or the connection ends.
    pub fn play(url: &str, seconds: u32) -> Ffmpeg {
        Self::spawn("ffmpeg-play", &["-i", url, "-t", &seconds.to_string(), "-f", "null", "-"])
    }

    /// Plays `url` until `frames` video frames are decoded (or the stream ends) into the null
    /// muxer; `frames()` then tells how many it got. No read timeout.
    pub fn play_frames(url: &str, frames: u32) -> Ffmpeg {
        Self::spawn("ffmpeg-play", &["-i", url, "-frames:v", &frames.to_string(), "-f", "null", "-"])
    }

    /// Runs ffmpeg with `args` (after its quiet-logging and progress options).
    pub fn spawn(tag: &str, args: &[&str]) -> Ffmpeg {
        let dir = TempDir::new(tag);
        let stderr = dir.0.join("stderr.log");
        let progress = dir.0.join("progress.txt");
        let child = Command::new("ffmpeg")
            .current_dir(&dir.0)
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-progress"])
            .arg(&progress)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start ffmpeg (apt-get install ffmpeg)");
        Ffmpeg { child, stderr, progress, status: None, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The latest `frame=` count ffmpeg reported in its progress file.
    pub fn frames(&self) -> u64 {
        progress_frames(&self.progress)
    }

    /// The exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `timeout` for it to exit.
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

    /// Kills it (SIGKILL by pid) and reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// A one-line description for assertion messages.
    pub fn describe(&mut self) -> String {
        format!("ffmpeg pid {} status {:?}, stderr: {:?}", self.pid(), self.try_status(), self.stderr_text())
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        self.kill();
    }
}

fn progress_frames(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// What a command run to completion (or killed at its deadline) left.
#[derive(Debug)]
pub struct Outcome {
    /// `None`: killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `cmd` with stdout and stderr to files in its own temp dir; kills it (by pid) once
/// `timeout` of wall-clock time has passed.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Outcome {
    let dir = TempDir::new("cmd");
    let (out, err) = (dir.0.join("stdout"), dir.0.join("stderr"));
    let t0 = Instant::now();
    let mut child = cmd
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        elapsed: t0.elapsed(),
    }
}

/// ffprobe's codec names for `url` (e.g. `["aac", "h264"]`, in ffprobe's stream order), or why
/// there are none: a non-zero exit, no streams, or still running after `timeout` (killed).
pub fn ffprobe_streams(url: &str, timeout: Duration) -> Result<Vec<String>, String> {
    ffprobe_streams_with(&[], url, timeout)
}

/// [`ffprobe_streams`] with input `options` before the URL (`-streamid ID` for SRT: a stream id
/// with `&` cannot go in an `srt://` URL, where it would end `streamid=`).
pub fn ffprobe_streams_with(options: &[&str], url: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-rw_timeout", "5000000", "-show_entries", "stream=codec_name", "-of", "csv=p=0"]);
    cmd.args(options).arg(url);
    let o = run_with_timeout(cmd, timeout);
    match o.status {
        None => Err(format!("ffprobe {url} still running after {timeout:?}, killed; stderr: {:?}", o.stderr)),
        Some(s) if !s.success() => Err(format!("ffprobe {url} exited {s}; stderr: {:?}", o.stderr)),
        Some(_) => {
            let codecs: Vec<String> = o
                .stdout
                .lines()
                .map(|l| l.trim().trim_end_matches(',').to_string())
                .filter(|l| !l.is_empty())
                .collect();
            if codecs.is_empty() {
                Err(format!("ffprobe {url} found no streams; stderr: {:?}", o.stderr))
            } else {
                Ok(codecs)
            }
        }
    }
}

/// Checks that ffprobe sees both H.264 video and AAC audio at `url`.
pub fn probe_h264_aac(url: &str, timeout: Duration) -> Result<(), String> {
    let codecs = ffprobe_streams(url, timeout)?;
    if codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac") {
        Ok(())
    } else {
        Err(format!("ffprobe {url}: codecs {codecs:?}, want h264 and aac"))
    }
}

/// What a bounded ffmpeg player got.
#[derive(Debug)]
pub struct Played {
    /// Video frames decoded.
    pub frames: u64,
    /// ffmpeg's stderr at `-loglevel error`: empty when nothing went wrong.
    pub stderr: String,
}

impl Played {
    /// Whether every one of `want` frames decoded with no error logged.
    pub fn clean(&self, want: u64) -> bool {
        self.frames >= want && self.stderr.trim().is_empty()
    }
}

/// Plays `url` with ffmpeg until `frames` video frames are decoded (a player joining mid-GOP
/// waits for the next keyframe first, up to 2 s here) into the null muxer. `Err` when ffmpeg
/// exits non-zero or is still running after `timeout` (killed); a stream that ends early is
/// `Ok` with fewer frames.
pub fn play_frames(url: &str, frames: u32, timeout: Duration) -> Result<Played, String> {
    let dir = TempDir::new("play");
    let progress = dir.0.join("progress.txt");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-progress"]).arg(&progress).args([
        "-rw_timeout",
        "5000000",
        "-i",
        url,
        "-frames:v",
        &frames.to_string(),
        "-f",
        "null",
        "-",
    ]);
    let o = run_with_timeout(cmd, timeout);
    let got = progress_frames(&progress);
    match o.status {
        None => {
            Err(format!("ffmpeg play {url} still running after {timeout:?} ({got} frames); stderr: {:?}", o.stderr))
        }
        Some(s) if !s.success() => Err(format!("ffmpeg play {url} exited {s} ({got} frames); stderr: {:?}", o.stderr)),
        Some(_) => Ok(Played { frames: got, stderr: o.stderr }),
    }
}

/// Runs `f(i)` for i in 0..n on n threads at once and returns the results in order.
pub fn in_parallel<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let f = f.clone();
            std::thread::spawn(move || f(i))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("player thread panicked")).collect()
}

/// `n` concurrent ffprobes of `url`.
pub fn ffprobe_many(url: &str, n: usize, timeout: Duration) -> Vec<Result<Vec<String>, String>> {
    let url = url.to_string();
    in_parallel(n, move |_| ffprobe_streams(&url, timeout))
}

/// `n` concurrent ffmpeg players of `url`, each decoding `frames` video frames.
pub fn play_many(url: &str, n: usize, frames: u32, timeout: Duration) -> Vec<Result<Played, String>> {
    let url = url.to_string();
    in_parallel(n, move |_| play_frames(&url, frames, timeout))
}

/// Watches one stream on an nginx-rtmp origin from a thread (stat every 100 ms) and records
/// whether it was ever seen there, with or without a publisher.
pub struct StatWatch {
    seen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl StatWatch {
    pub fn new(http_port: u16, stream: &str) -> StatWatch {
        let (seen, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (s, st, name) = (seen.clone(), stop.clone(), stream.to_string());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                if let Ok(xml) = http_get_body(http_port, "/stat")
                    && parse_stat(&xml).iter().any(|x| x.app == "live" && x.name == name)
                {
                    s.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        StatWatch { seen, stop, handle: Some(handle) }
    }

    pub fn ever_seen(&self) -> bool {
        self.seen.load(Ordering::SeqCst)
    }
}

impl Drop for StatWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Re-registers origins with a proxy's System API every `interval` from a thread, as their
/// heartbeats would; each origin's heartbeats can be stopped on their own.
pub struct Heartbeats {
    stops: Vec<Arc<AtomicBool>>,
    all: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Heartbeats {
    /// `bodies`: one registration body per origin (see `origin_body`).
    pub fn start(api_addr: &str, bodies: Vec<String>, interval: Duration) -> Heartbeats {
        let stops: Vec<_> = bodies.iter().map(|_| Arc::new(AtomicBool::new(false))).collect();
        let all = Arc::new(AtomicBool::new(false));
        let (addr, flags, quit) = (api_addr.to_string(), stops.clone(), all.clone());
        let handle = std::thread::spawn(move || {
            while !quit.load(Ordering::SeqCst) {
                for (body, stop) in bodies.iter().zip(&flags) {
                    if !stop.load(Ordering::SeqCst) {
                        let _ = std::panic::catch_unwind(|| super::register(&addr, body));
                    }
                }
                let t0 = Instant::now();
                while t0.elapsed() < interval && !quit.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Heartbeats { stops, all, handle: Some(handle) }
    }

    /// Stops the heartbeats of origin `i` (its index in `bodies`).
    pub fn stop(&self, i: usize) {
        self.stops[i].store(true, Ordering::SeqCst);
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.all.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The proxy's rendezvous score, from the library. Only used to choose origin names that spread
/// a test's keys; the tests assert where streams land from the origins' own stat.
pub fn rendezvous_score(key: &str, origin_id: &str) -> u64 {
    use streamgate::balance::pick;
    pick::score(pick::key_hash(key), pick::id_hash(origin_id))
}

/// The origin id (among `ids`) the proxy's rendezvous hashing should pick for `key`.
pub fn rendezvous_pick<'a>(key: &str, ids: &[&'a str]) -> &'a str {
    ids.iter().copied().max_by_key(|id| (rendezvous_score(key, id), *id)).expect("no origin ids")
}

/// `rtmp://` URL of `stream` in app `live` through the proxy.
pub fn proxy_url(p: &super::Proxy, stream: &str) -> String {
    format!("rtmp://127.0.0.1:{}/live/{stream}", p.rtmp)
}

/// What to print when an assertion fails: the proxy's log and every origin's streams.
pub fn diag(p: &super::Proxy, origins: &[&NginxRtmp]) -> String {
    let mut out = format!("--- proxy log:\n{}", p.log_text());
    for o in origins {
        let streams = o.try_stat().map(|x| format!("{:?}", parse_stat(&x)));
        out.push_str(&format!("\n--- origin :{} streams: {streams:?}", o.rtmp_port));
    }
    out
}
