//! The jobs, from the control thread: one per published stream, started when its first publish
//! session opens and stopped (a flag the job polls, and libavformat's interrupt callback) when
//! its last one closes; its folder is removed [`TranscodeConfig::grace`] later. Every call
//! returns at once: the control thread never waits for a job, except when it stops for good
//! ([`Drop`]: each job is told to stop, which interrupts its I/O, then joined).
//!
//! Bounded: at most `max_jobs` jobs; a publish beyond it is relayed, not transcoded (logged,
//! counted in [`Supervisor::skipped`]). A stream published again while its old job is still
//! finishing gets a new job once the old one has ended.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{JobView, Route, Status, output_name};
use crate::balance::StreamKey;
use crate::balance::stream_key::DEFAULT_VHOST;
use crate::config::transcode::TranscodeConfig;

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
    name: String,
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
            log::error!("transcode {}: the job's thread panicked", self.name);
        }
    }
}

/// The jobs of this process.
pub struct Supervisor {
    config: TranscodeConfig,
    /// The encoder the jobs use, and its name for GetRoutes; `None` when transcoding is off.
    encoder: Option<(&'static str, &'static str)>,
    jobs: HashMap<StreamKey, Job>,
    /// Publishes not transcoded because `max_jobs` ran.
    pub skipped: u64,
}

impl Supervisor {
    /// Probes the encoder and creates the output directory when transcoding is on.
    pub fn new(config: &TranscodeConfig) -> Result<Supervisor, String> {
        let mut supervisor = Supervisor { config: config.clone(), encoder: None, jobs: HashMap::new(), skipped: 0 };
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

    /// A publish session of `key` opened; `origin` is its origin's RTMP address, if known.
    pub fn publish_started(&mut self, key: &StreamKey, origin: Option<SocketAddr>) {
        let Some(encoder) = self.encoder else { return };
        if let Some(job) = self.jobs.get_mut(key) {
            job.publishers += 1;
            if job.left.take().is_some() {
                job.shared.stop.store(true, Ordering::Relaxed);
                job.restart = origin.map(|o| source_url(o, key));
            }
            return;
        }
        let Some(origin) = origin else {
            return log::warn!(
                "transcode {key}: not started, no origin with an RTMP endpoint holds it (local-origin streams are not transcoded)"
            );
        };
        let Some(name) = output_name(key) else {
            return log::warn!("transcode {key}: not started, its name is not a safe path segment");
        };
        if let Some((other, _)) = self.jobs.iter().find(|(_, j)| j.name == name) {
            return log::warn!("transcode {key}: not started, {other} already writes /streams/{name}/");
        }
        if self.jobs.len() >= self.config.max_jobs {
            self.skipped += 1;
            return log::warn!(
                "transcode {key}: not started, {} jobs run already (--transcode-max-jobs)",
                self.config.max_jobs
            );
        }
        let mut job = Job {
            dir: self.config.dir.join(&name),
            name,
            source: source_url(origin, key),
            shared: Arc::default(),
            thread: None,
            started: Instant::now(),
            publishers: 1,
            left: None,
            restart: None,
        };
        self.start(&mut job, encoder);
        self.jobs.insert(key.clone(), job);
    }

    /// A publish session of `key` closed.
    pub fn publish_stopped(&mut self, key: &StreamKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(key) else { return };
        job.publishers = job.publishers.saturating_sub(1);
        if job.publishers == 0 {
            job.shared.stop.store(true, Ordering::Relaxed);
            job.left = Some(now);
            job.restart = None;
            log::info!("transcode {key}: publisher left; /streams/{}/ is removed in {:?}", job.name, self.config.grace);
        }
    }

    /// Reaps ended jobs, restarts re-published streams, removes folders past their grace.
    pub fn tick(&mut self, now: Instant) {
        let encoder = self.encoder;
        let grace = self.config.grace;
        let mut gone = Vec::new();
        for (key, job) in &mut self.jobs {
            if !job.finished() {
                continue;
            }
            job.join();
            if let (Some(source), Some(encoder)) = (job.restart.take(), encoder) {
                job.source = source;
                job.shared = Arc::default();
                job.started = now;
                start_job(&self.config, job, encoder);
            } else if job.left.is_some_and(|left| now.saturating_duration_since(left) >= grace) {
                remove_dir(&job.dir);
                log::info!("transcode {key}: /streams/{}/ removed", job.name);
                gone.push(key.clone());
            }
        }
        for key in gone {
            self.jobs.remove(&key);
        }
    }

    /// Every job, in key order.
    pub fn routes(&self) -> Vec<Route> {
        let now = Instant::now();
        let mut routes: Vec<Route> = self
            .jobs
            .iter()
            .map(|(key, job)| Route {
                key: key.clone(),
                name: job.name.clone(),
                source: job.source.clone(),
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
        for (key, job) in &self.jobs {
            let view = job.shared.view();
            if job.left.is_none() && view.status == Status::Error {
                out.push(format!("transcode {key} failed: {}", view.problem.as_deref().unwrap_or("unknown")));
            } else if job.left.is_none() && view.behind {
                out.push(format!("transcode {key} is behind real time: {}", view.problem.as_deref().unwrap_or("")));
            }
        }
        out.sort();
        out
    }

    fn start(&self, job: &mut Job, encoder: (&'static str, &'static str)) {
        start_job(&self.config, job, encoder);
    }
}

/// Empties the job's folder and starts its thread.
fn start_job(config: &TranscodeConfig, job: &mut Job, (codec, encoder): (&'static str, &'static str)) {
    remove_dir(&job.dir);
    if let Err(e) = std::fs::create_dir_all(&job.dir) {
        return fail(job, format!("cannot create {}: {e}", job.dir.display()));
    }
    log::info!("transcode {}: job started, {encoder} from {} into {}", job.name, job.source, job.dir.display());
    #[cfg(feature = "transcode")]
    {
        let params = super::job::Params {
            name: job.name.clone(),
            source: job.source.clone(),
            dir: job.dir.clone(),
            codec,
            config: config.clone(),
        };
        match super::job::spawn(params, job.shared.clone()) {
            Ok(thread) => job.thread = Some(thread),
            Err(e) => fail(job, format!("cannot start its thread: {e}")),
        }
    }
    #[cfg(not(feature = "transcode"))]
    {
        let _ = (config, codec);
        fail(job, "transcoding is not compiled in".into());
    }
}

fn fail(job: &Job, problem: String) {
    log::error!("transcode {}: {problem}", job.name);
    if let Ok(mut view) = job.shared.view.lock() {
        view.status = Status::Error;
        view.problem = Some(problem);
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        log::warn!("transcode: cannot remove {}: {e}", dir.display());
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
