//! Shared counters of a run: bytes, frames, connections, setups, latencies and errors.
//!
//! Connections update relaxed atomics once per socket read (a [`Batch`]), so threads do not
//! contend per message. Latencies go to fixed-size log-linear [`Histogram`]s (about 3%
//! resolution, no allocation per sample). Errors are counted by [`Kind`] name, RTMP error
//! statuses by `rtmp_status:CODE` and HTTP ones by `http_status:CODE`, and the first message
//! seen of each is kept as an example.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use streamgate::codec::rtmp::Message;
use streamgate::codec::rtmp::message::{AUDIO, VIDEO};

/// Error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP connect refused (nothing listening).
    ConnectRefused,
    /// TCP connect not answered within `--timeout`.
    ConnectTimeout,
    /// Any other TCP connect error (out of ports or file descriptors, unreachable, ...).
    ConnectError,
    /// Handshake failed, timed out, or the server closed during it.
    Handshake,
    /// The server answered with an error `_error` / `onStatus` (counted by code too).
    RtmpStatus,
    /// An HTTP-FLV request was answered with a status other than 200 (counted by status too).
    HttpStatus,
    /// The server closed the connection before the run ended.
    ClosedEarly,
    /// An awaited RTMP answer or HTTP response head (or a churn connector's first media) did
    /// not come in time.
    Timeout,
    /// Undecodable chunk stream, command, HTTP response or FLV stream from the server.
    Protocol,
    /// Other socket errors (reset, ...) after the handshake.
    Io,
}

impl Kind {
    /// Name used in the JSON summary and the table.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ConnectRefused => "connect_refused",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::ConnectError => "connect_error",
            Kind::Handshake => "handshake",
            Kind::RtmpStatus => "rtmp_status",
            Kind::HttpStatus => "http_status",
            Kind::ClosedEarly => "closed_early",
            Kind::Timeout => "timeout",
            Kind::Protocol => "protocol",
            Kind::Io => "io",
        }
    }
}

/// Why one connection failed.
#[derive(Debug)]
pub struct Failure {
    /// Counter it goes to.
    pub kind: Kind,
    /// The status code for [`Kind::RtmpStatus`] and [`Kind::HttpStatus`], empty otherwise.
    pub code: String,
    /// Human-readable detail (kept as the example of its kind).
    pub detail: String,
}

impl Failure {
    /// A failure of `kind` without a status code.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Failure { kind, code: String::new(), detail: detail.into() }
    }
}

/// Per-read counts, added to [`Stats`] in one go.
#[derive(Debug, Default, Clone, Copy)]
pub struct Batch {
    /// Bytes read from the socket.
    pub bytes: u64,
    /// Complete RTMP messages (control messages the connection answers itself excluded) or
    /// FLV tags.
    pub messages: u64,
    /// Video messages or tags (type 9).
    pub video: u64,
    /// Audio messages or tags (type 8).
    pub audio: u64,
    /// Video messages or tags whose frame type nibble is 1 (keyframe).
    pub keyframes: u64,
}

impl Batch {
    /// Counts one received RTMP message.
    pub fn count(&mut self, msg: &Message) {
        self.tag(msg.type_id, msg.payload.first().copied());
    }

    /// Counts one received message or FLV tag of `type_id` whose body starts with `first`.
    pub fn tag(&mut self, type_id: u8, first: Option<u8>) {
        self.messages += 1;
        match type_id {
            AUDIO => self.audio += 1,
            VIDEO => {
                self.video += 1;
                if first.is_some_and(|b| b >> 4 == 1) {
                    self.keyframes += 1;
                }
            }
            _ => {}
        }
    }

    /// Audio plus video messages.
    pub fn media(&self) -> u64 {
        self.audio + self.video
    }
}

/// Sub-buckets per power of two (5 bits: about 3% resolution).
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Log-linear histogram of durations in microseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        let buckets = (0..BUCKETS).map(|_| AtomicU64::new(0)).collect();
        Histogram { buckets, count: AtomicU64::new(0), sum_us: AtomicU64::new(0), max_us: AtomicU64::new(0) }
    }

    /// Adds one sample.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(b) = self.buckets.get(bucket(us)) {
            b.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Mean in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_us.load(Relaxed) as f64 / n as f64 / 1000.0)
    }

    /// Largest sample in milliseconds.
    pub fn max_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.max_us.load(Relaxed) as f64 / 1000.0)
    }

    /// The `q` quantile (0..=1) in milliseconds, at its bucket's midpoint.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                let (low, width) = bucket_range(i);
                return Some((low as f64 + width as f64 / 2.0) / 1000.0);
            }
        }
        self.max_ms()
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// Lowest value and width of bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, 1);
    }
    let shift = (i / SUB - 1) as u32;
    let sub = (i % SUB) as u64;
    ((SUB as u64 + sub) << shift, 1u64 << shift)
}

/// Counter values at one instant.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub messages: u64,
    pub video: u64,
    pub audio: u64,
    pub keyframes: u64,
    pub setups: u64,
    pub cycles: u64,
    pub errors: u64,
}

impl Snapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
            messages: self.messages.saturating_sub(earlier.messages),
            video: self.video.saturating_sub(earlier.video),
            audio: self.audio.saturating_sub(earlier.audio),
            keyframes: self.keyframes.saturating_sub(earlier.keyframes),
            setups: self.setups.saturating_sub(earlier.setups),
            cycles: self.cycles.saturating_sub(earlier.cycles),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }
}

/// Error counts and examples by key (kind name, `rtmp_status:CODE` or `http_status:CODE`),
/// behind a lock (errors are rare).
#[derive(Default)]
struct ErrorInfo {
    counts: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
}

/// Everything counted during a run.
#[derive(Default)]
pub struct Stats {
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    messages: AtomicU64,
    video: AtomicU64,
    audio: AtomicU64,
    keyframes: AtomicU64,
    /// Connections that got Publish.Start / Play.Start (HTTP-FLV: a 200 response head).
    setups: AtomicU64,
    /// Completed churn cycles (first media received, then closed).
    cycles: AtomicU64,
    errors: AtomicU64,
    info: Mutex<ErrorInfo>,
    /// TCP connections open now.
    pub open: AtomicI64,
    /// TCP connections opened so far.
    pub opened: AtomicU64,
    /// Started players that have not received audio/video yet.
    pub waiting_media: AtomicI64,
    /// Publishers that got Publish.Start or failed.
    pub publishers_settled: AtomicUsize,
    /// Time to first media message or FLV tag (TCP connect start to its last byte's arrival).
    pub ttfm: Histogram,
    /// Time to Publish.Start / Play.Start / the 200 head (TCP connect start to its arrival).
    pub setup: Histogram,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Adds what one read brought.
    pub fn add(&self, b: &Batch) {
        self.rx_bytes.fetch_add(b.bytes, Relaxed);
        if b.messages > 0 {
            self.messages.fetch_add(b.messages, Relaxed);
            self.video.fetch_add(b.video, Relaxed);
            self.audio.fetch_add(b.audio, Relaxed);
            self.keyframes.fetch_add(b.keyframes, Relaxed);
        }
    }

    /// Adds bytes written by a publisher.
    pub fn sent(&self, bytes: u64) {
        self.tx_bytes.fetch_add(bytes, Relaxed);
    }

    /// Counts one setup that took `took`.
    pub fn setup_done(&self, took: Duration) {
        self.setups.fetch_add(1, Relaxed);
        self.setup.record(took);
    }

    /// Counts one completed churn cycle.
    pub fn cycle_done(&self) {
        self.cycles.fetch_add(1, Relaxed);
    }

    /// Counts a failure.
    pub fn fail(&self, f: &Failure) {
        self.errors.fetch_add(1, Relaxed);
        let key = match f.kind {
            Kind::RtmpStatus | Kind::HttpStatus => format!("{}:{}", f.kind.name(), f.code),
            kind => kind.name().to_owned(),
        };
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        info.examples.entry(key.clone()).or_insert_with(|| f.detail.clone());
        *info.counts.entry(key).or_default() += 1;
    }

    /// Current counter values.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            messages: self.messages.load(Relaxed),
            video: self.video.load(Relaxed),
            audio: self.audio.load(Relaxed),
            keyframes: self.keyframes.load(Relaxed),
            setups: self.setups.load(Relaxed),
            cycles: self.cycles.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    /// Error counts by kind name; error statuses as `rtmp_status:CODE` / `http_status:CODE`.
    pub fn errors_by_kind(&self) -> BTreeMap<String, u64> {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).counts.clone()
    }

    /// First error message seen per key of [`Stats::errors_by_kind`].
    pub fn examples(&self) -> BTreeMap<String, String> {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).examples.clone()
    }
}
