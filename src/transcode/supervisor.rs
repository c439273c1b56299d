//! The jobs, from the control thread: per published stream, a ladder job (`--transcode on`)
//! and, for a local stream (`--local-origin`), a remux job writing its HLS
//! (`--local-hls-jobs`); each started when the stream's first publish session opens and
//! stopped (a flag the job polls, and libavformat's interrupt callback) when its last one
//! closes; its folder is removed [`TranscodeConfig::grace`] later. Every call returns at once:
//! the control thread never waits for a job, except when it stops for good ([`Drop`]: each job
//! is told to stop, which interrupts its I/O, then joined).
//!
//! Bounded: at most `max_jobs` ladder jobs and `--local-hls-jobs` remux jobs; a publish beyond
//! either is relayed (or served locally) without it (logged, counted in
//! [`Supervisor::skipped`]). A stream published again while its old job is still finishing gets
//! a new job once the old one has ended.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{JobView, Route, Status, output_name};
use crate::balance::StreamKey;
use crate::balance::stream_key::DEFAULT_VHOST;
use crate::config::Config;
use crate::config::local::LocalHls;
use crate::config::transcode::TranscodeConfig;

/// What a job makes of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The transcoded ladder, `/streams/NAME/` (`--transcode on`).
    Ladder,
    /// A local stream's HLS, copied (`/APP/STREAM.m3u8`, `--local-hls-jobs`).
    Remux,
}

impl Kind {
    /// The log lines' prefix.
    fn name(self) -> &'static str {
        match self {
            Kind::Ladder => "transcode",
            Kind::Remux => "hls",
        }
    }
}

/// What a job and the supervisor share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set by the supervisor: the job ends as soon as it can.
    pub stop: AtomicBool,
    /// Set by the job about once a second.
    pub view: Mutex<JobView>,
}

impl Shared {
    pub fn view(&self) -> JobView {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

struct Job {
    kind: Kind,
    /// The folder's name ([`output_name`]).
    name: String,
    /// The stream part of the key: the segments' file names start with it (`STREAM-N.ts`).
    stream: String,
    source: String,
    dir: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
    /// Open publish sessions of the stream.
    publishers: u32,
    /// When the last publisher left.
    left: Option<Instant>,
    /// Published again while this job was finishing: the source of the next job.
    restart: Option<String>,
}

impl Job {
    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("{} {}: the job's thread panicked", self.kind.name(), self.name);
        }
    }
}

/// The jobs of this process.
pub struct Supervisor {
    config: TranscodeConfig,
    hls: LocalHls,
    /// The encoder the jobs use, and its name for GetRoutes; `None` when transcoding is off.
    encoder: Option<(&'static str, &'static str)>,
    /// Whether local streams get a remux job (`--local-hls-jobs` above 0, and libavformat
    /// compiled in).
    remux: bool,
    jobs: HashMap<(Kind, StreamKey), Job>,
    /// Publishes not transcoded because `max_jobs` ran, and local streams without HLS because
    /// `--local-hls-jobs` ran.
    pub skipped: u64,
}

impl Supervisor {
    /// Probes the encoder and creates the output directory when transcoding is on; creates the
    /// HLS directory of local streams when they get HLS.
    pub fn new(config: &TranscodeConfig, hls: &LocalHls) -> Result<Supervisor, String> {
        let mut supervisor = Supervisor {
            config: config.clone(),
            hls: hls.clone(),
            encoder: None,
            remux: hls.max_jobs > 0 && cfg!(feature = "transcode"),
            jobs: HashMap::new(),
            skipped: 0,
        };
        if hls.max_jobs > 0 && !cfg!(feature = "transcode") {
            log::info!("local streams have no HLS: this binary is built without the cargo feature `transcode`");
        }
        // The HLS directory is made with the first stream's folder, and removed at shutdown
        // when empty: most runs have no local stream.
        #[cfg(feature = "transcode")]
        if supervisor.remux {
            super::remux::init()?;
        }
        if !config.enabled {
            return Ok(supervisor);
        }
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| format!("cannot create --transcode-dir {}: {e}", config.dir.display()))?;
        supervisor.encoder = probe(config)?;
        if let Some((codec, name)) = &supervisor.encoder {
            log::info!(
                "transcoding on: encoder {name} ({codec}), preset {}, {} rungs, into {}",
                config.preset,
                config.ladder.len(),
                config.dir.display()
            );
        }
        Ok(supervisor)
    }

    /// The encoder's name for GetRoutes (`x264`, `nvenc_h264`, ...), when transcoding is on.
    pub fn encoder(&self) -> Option<&'static str> {
        self.encoder.map(|e| e.1)
    }

    pub fn enabled(&self) -> bool {
        self.encoder.is_some()
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Whether any job may run: the ladder is on, or local streams get HLS.
    pub fn any(&self) -> bool {
        self.encoder.is_some() || self.remux
    }

    /// A publish session of `key` opened. `source` is the RTMP URL its jobs play it from: its
    /// origin's, or streamgate's own for a `local` stream (which also gets a remux job).
    pub fn publish_started(&mut self, key: &StreamKey, source: Option<String>, local: bool) {
        if self.encoder.is_some() {
            self.started(Kind::Ladder, key, source.clone());
        }
        if local && self.remux {
            self.started(Kind::Remux, key, source);
        }
    }

    fn started(&mut self, kind: Kind, key: &StreamKey, source: Option<String>) {
        let what = kind.name();
        if let Some(job) = self.jobs.get_mut(&(kind, key.clone())) {
            job.publishers += 1;
            if job.left.take().is_some() {
                job.shared.stop.store(true, Ordering::Relaxed);
                job.restart = source;
            }
            return;
        }
        let Some(source) = source else {
            return log::warn!("{what} {key}: not started, no origin with an RTMP endpoint holds it");
        };
        let Some(name) = output_name(key) else {
            return log::warn!("{what} {key}: not started, its name is not a safe path segment");
        };
        if let Some(((_, other), _)) = self.jobs.iter().find(|((k, _), j)| *k == kind && j.name == name) {
            return log::warn!("{what} {key}: not started, {other} already writes the folder {name}");
        }
        let (max, flag, root) = match kind {
            Kind::Ladder => (self.config.max_jobs, "--transcode-max-jobs", &self.config.dir),
            Kind::Remux => (self.hls.max_jobs, "--local-hls-jobs", &self.hls.dir),
        };
        if self.jobs.keys().filter(|(k, _)| *k == kind).count() >= max {
            self.skipped += 1;
            return log::warn!("{what} {key}: not started, {max} jobs run already ({flag})");
        }
        let stream = key.as_str().rsplit('/').next().unwrap_or_default().to_string();
        let mut job = Job {
            kind,
            dir: root.join(&name),
            name,
            stream,
            source,
            shared: Arc::default(),
            thread: None,
            started: Instant::now(),
            publishers: 1,
            left: None,
            restart: None,
        };
        start_job(&self.config, &mut job, self.encoder);
        self.jobs.insert((kind, key.clone()), job);
    }

    /// A publish session of `key` closed.
    pub fn publish_stopped(&mut self, key: &StreamKey, now: Instant) {
        let grace = self.config.grace;
        for kind in [Kind::Ladder, Kind::Remux] {
            let Some(job) = self.jobs.get_mut(&(kind, key.clone())) else { continue };
            job.publishers = job.publishers.saturating_sub(1);
            if job.publishers == 0 {
                job.shared.stop.store(true, Ordering::Relaxed);
                job.left = Some(now);
                job.restart = None;
                log::info!("{} {key}: publisher left; {} is removed in {grace:?}", kind.name(), job.dir.display());
            }
        }
    }

    /// Reaps ended jobs, restarts re-published streams, removes folders past their grace.
    pub fn tick(&mut self, now: Instant) {
        let encoder = self.encoder;
        let grace = self.config.grace;
        let mut gone = Vec::new();
        for (id, job) in &mut self.jobs {
            if !job.finished() {
                continue;
            }
            job.join();
            if let Some(source) = job.restart.take() {
                job.source = source;
                job.shared = Arc::default();
                job.started = now;
                start_job(&self.config, job, encoder);
            } else if job.left.is_some_and(|left| now.saturating_duration_since(left) >= grace) {
                remove_dir(&job.dir);
                log::info!("{} {}: {} removed", job.kind.name(), id.1, job.dir.display());
                gone.push(id.clone());
            }
        }
        for key in gone {
            self.jobs.remove(&key);
        }
    }

    /// Every ladder job, in key order.
    pub fn routes(&self) -> Vec<Route> {
        let now = Instant::now();
        let mut routes: Vec<Route> = self
            .jobs
            .iter()
            .filter(|((kind, _), _)| *kind == Kind::Ladder)
            .map(|((_, key), job)| Route {
                key: key.clone(),
                name: job.name.clone(),
                source: super::redacted(&job.source),
                encoder: self.encoder().unwrap_or("none"),
                duration: now.saturating_duration_since(job.started).as_secs_f64(),
                view: job.shared.view(),
            })
            .collect();
        routes.sort_by(|a, b| a.key.cmp(&b.key));
        routes
    }

    /// What makes the proxy degraded now: jobs that failed while their stream is published, or
    /// that are behind real time.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ((kind, key), job) in &self.jobs {
            let view = job.shared.view();
            if job.left.is_none() && view.status == Status::Error {
                let (what, problem) = (kind.name(), view.problem.as_deref().unwrap_or("unknown"));
                out.push(format!("{what} {key} failed: {problem}"));
            } else if job.left.is_none() && view.behind {
                out.push(format!("transcode {key} is behind real time: {}", view.problem.as_deref().unwrap_or("")));
            }
        }
        out.sort();
        out
    }
}

/// Empties the job's folder and starts its thread (a ladder job with `encoder`: its codec and
/// name).
fn start_job(config: &TranscodeConfig, job: &mut Job, encoder: Option<(&'static str, &'static str)>) {
    remove_dir(&job.dir);
    if let Err(e) = std::fs::create_dir_all(&job.dir) {
        return fail(job, format!("cannot create {}: {e}", job.dir.display()));
    }
    let what = match (job.kind, encoder) {
        (Kind::Ladder, Some((_, name))) => name,
        (Kind::Ladder, None) => return fail(job, "no encoder".into()),
        (Kind::Remux, _) => "remux (copy)",
    };
    let (kind, name, source) = (job.kind.name(), &job.name, super::redacted(&job.source));
    log::info!("{kind} {name}: job started, {what} from {source} into {}", job.dir.display());
    #[cfg(feature = "transcode")]
    {
        let spawned = match (job.kind, encoder) {
            (Kind::Ladder, Some((codec, _))) => {
                let params = super::job::Params {
                    name: job.name.clone(),
                    source: job.source.clone(),
                    dir: job.dir.clone(),
                    codec,
                    config: config.clone(),
                };
                super::job::spawn(params, job.shared.clone())
            }
            _ => {
                let params = super::remux::Params {
                    name: job.name.clone(),
                    stream: job.stream.clone(),
                    source: job.source.clone(),
                    dir: job.dir.clone(),
                    segment: config.segment,
                };
                super::remux::spawn(params, job.shared.clone())
            }
        };
        match spawned {
            Ok(thread) => job.thread = Some(thread),
            Err(e) => fail(job, format!("cannot start its thread: {e}")),
        }
    }
    #[cfg(not(feature = "transcode"))]
    {
        let _ = (config, &job.stream);
        fail(job, "libavformat is not compiled in (cargo feature `transcode`)".into());
    }
}

fn fail(job: &Job, problem: String) {
    log::error!("{} {}: {problem}", job.kind.name(), job.name);
    if let Ok(mut view) = job.shared.view.lock() {
        view.status = Status::Error;
        view.problem = Some(problem);
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        log::warn!("cannot remove the job folder {}: {e}", dir.display());
    }
}

impl Supervisor {
    /// Stops every job (interrupting its I/O), waits for them and removes their folders.
    pub fn shutdown(&mut self) {
        for job in self.jobs.values() {
            job.shared.stop.store(true, Ordering::Relaxed);
        }
        for (_, mut job) in self.jobs.drain() {
            job.join();
            remove_dir(&job.dir);
        }
        if self.remux {
            let _ = std::fs::remove_dir(&self.hls.dir);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The URL a job plays `key` from: `rtmp://ORIGIN/app/stream`, `?vhost=` for a named vhost.
pub fn source_url(origin: SocketAddr, key: &StreamKey) -> String {
    let (vhost, path) = key.as_str().split_once('/').unwrap_or((DEFAULT_VHOST, key.as_str()));
    let query = if vhost == DEFAULT_VHOST { String::new() } else { format!("?vhost={vhost}") };
    format!("rtmp://{origin}/{path}{query}")
}

/// How long a job's signed loopback URL stays valid: it is checked once, when the job connects.
const LOCAL_SIGNED_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// The RTMP URL a job plays or publishes a local stream at (HLS remux, ladder, SRT ingest and
/// players): streamgate's own RTMP listener (loopback for a wildcard address), signed with the
/// process's internal secret, since a job is not a client (no callback, no per-stream count).
pub fn local_source(config: &Config, key: &StreamKey) -> String {
    let mut addr = config.listen.rtmp.0;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    let url = source_url(addr, key);
    let secret = &config.access.internal_secret;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let expires = (now + LOCAL_SIGNED_FOR).as_secs();
    let token = crate::balance::signed::sign(secret, key, expires);
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}token={token}&expires={expires}")
}

#[cfg(feature = "transcode")]
fn probe(config: &TranscodeConfig) -> Result<Option<(&'static str, &'static str)>, String> {
    let chosen = super::encoder::probe(config.encoder)?;
    Ok(Some((chosen.codec, chosen.name)))
}

#[cfg(not(feature = "transcode"))]
fn probe(_: &TranscodeConfig) -> Result<Option<(&'static str, &'static str)>, String> {
    Err("transcoding is not compiled into this binary".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sources() {
        let key = |url: &str| StreamKey::from_url(url).unwrap();
        assert_eq!(output_name(&key("rtmp://1.2.3.4/live/cam1")).as_deref(), Some("cam1"));
        assert_eq!(output_name(&key("rtmp://1.2.3.4/other/cam1")).as_deref(), Some("other.cam1"));
        assert_eq!(output_name(&key("rtmp://example.com/live/cam1")).as_deref(), Some("example.com.live.cam1"));
        assert_eq!(output_name(&key("rtmp://1.2.3.4/live/a%20b")), None);
        let origin: SocketAddr = "127.0.0.1:1935".parse().unwrap();
        assert_eq!(source_url(origin, &key("rtmp://1.2.3.4/live/cam1")), "rtmp://127.0.0.1:1935/live/cam1");
        assert_eq!(
            source_url(origin, &key("rtmp://example.com/live/cam1")),
            "rtmp://127.0.0.1:1935/live/cam1?vhost=example.com"
        );
    }
}
