//! Adaptive-bitrate transcoding of published streams, the HLS of local streams (remuxed, not
//! re-encoded: `remux`), and the publish limits.
//!
//! ```text
//!  shard: publish session opens/closes --ShardEvent::Session--> control thread
//!  control thread: Supervisor::publish_started / publish_stopped / tick (never waits on a job)
//!      |  spawns, stops (a flag), reaps; removes folders after the grace period
//!      v
//!  job thread (one per published stream, at most --transcode-max-jobs):
//!      RTMP play from the pinned origin, or from streamgate's own RTMP listener for a local
//!      stream (libavformat) -> decode once
//!        -> per rung: scale (never up) -> H.264 (same GOP, key frames forced on the same
//!           frames) ; audio -> AAC once
//!        -> one `dash` muxer: fMP4/CMAF segments + manifest.mpd + master.m3u8 + media_N.m3u8
//!  shard: GET /streams/<name>/... served from <--transcode-dir>/<name>/ (proxy::http_stream::abr)
//!
//!  remux thread (one per local stream, at most --local-hls-jobs):
//!      RTMP play from streamgate's own RTMP listener -> packets copied -> `hls` muxer:
//!      MPEG-TS segments + index.m3u8 in <--local-hls-dir>/<name>/
//!  shard: GET /APP/STREAM.m3u8 and /APP/STREAM-N.ts served from there (proxy::http_stream::local_hls)
//! ```
//!
//! Input: the job pulls the stream from its pinned origin like any player, instead of taking
//! the publisher's bytes from the shard. The shard then stays a relay that never waits for a
//! job nor copies media to another thread; libavformat's RTMP client handles the origin's
//! chunk stream, timestamps and reconnection-free ending by itself; a slow or broken job
//! affects only its own connection to the origin. The cost is one more origin connection per
//! transcoded stream and a start delay of one play handshake. A local stream has no origin: its
//! jobs play it from streamgate itself, over loopback, as players (served from the stream's
//! ring like any other, signed with `--play-secret` when there is one), for the same reasons.
//!
//! Layering: below `shard`/`proxy` for what they call (the limits, [`output_name`]), beside
//! `control`, which owns the [`Supervisor`]; no runtime here, jobs are plain threads.
//! Without the `transcode` feature the supervisor exists but never starts a job.

pub mod limits;
pub mod supervisor;

#[cfg(feature = "transcode")]
mod copy;
#[cfg(feature = "transcode")]
mod encoder;
#[cfg(feature = "transcode")]
pub mod ingest;
#[cfg(feature = "transcode")]
mod job;
#[cfg(feature = "transcode")]
mod remux;

use std::time::Duration;

use crate::balance::StreamKey;
use crate::balance::stream_key::DEFAULT_VHOST;
use crate::config::transcode::Rung;

pub use supervisor::Supervisor;

/// The folder and URL name of a stream's ladder: the stream name for app `live` on the default
/// vhost (MarchProxy's `<stream_key>`); otherwise the key's parts joined with `.` (the
/// default vhost left out): `app.stream`, `vhost.app.stream`. `None` for a name that is not a
/// safe single path segment (letters, digits, `-`, `_`, `.`, `~`; not starting with `.`).
pub fn output_name(key: &StreamKey) -> Option<String> {
    let mut parts: Vec<&str> = key.as_str().split('/').collect();
    if parts.first() == Some(&DEFAULT_VHOST) {
        parts.remove(0);
        if parts.len() == 2 && parts[0] == "live" {
            parts.remove(0);
        }
    }
    let name = parts.join(".");
    let safe = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    safe.then_some(name)
}

/// A local stream's HLS playlist in its folder (`--local-hls-dir`/[`output_name`]/); its
/// segments beside it are `STREAM-N.ts`, STREAM the key's stream part, so the playlist's
/// relative URIs resolve next to `/APP/STREAM.m3u8`.
pub const HLS_PLAYLIST: &str = "index.m3u8";

/// `url` with its query's `token=` value left out, for logs and views (a local stream's jobs
/// play a URL signed with `--play-secret`).
pub fn redacted(url: &str) -> String {
    match url.find("token=") {
        Some(at) => {
            let end = url[at..].find('&').map_or(url.len(), |n| at + n);
            format!("{}token=...{}", &url[..at], &url[end..])
        }
        None => url.to_string(),
    }
}

/// The state of a job or one of its rungs, as GetRoutes names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// Waiting for the origin to play the stream.
    #[default]
    Starting,
    Encoding,
    /// Ended normally (the publisher left).
    Complete,
    Error,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Encoding => "encoding",
            Status::Complete => "complete",
            Status::Error => "error",
        }
    }
}

/// One rung of a running job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RungView {
    pub name: String,
    pub codec: &'static str,
    pub width: u32,
    pub height: u32,
    pub kbps: u32,
    pub status: Status,
    /// From the job's start to this rung's first segment in its playlist.
    pub first_segment: Option<Duration>,
}

/// What a job reports, updated by its thread about once a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobView {
    pub status: Status,
    /// Why the job failed, or why it is behind.
    pub problem: Option<String>,
    pub input_width: u32,
    pub input_height: u32,
    /// Input bits per second over the last second.
    pub input_bps: u64,
    /// Input bytes read from the origin.
    pub bytes_processed: u64,
    /// Output frames per second (per rung) over the last second.
    pub fps: f64,
    /// Media seconds per second of the job's busy time (not counting waits for input): above 1
    /// it keeps up with real time.
    pub speed: f64,
    /// Video frames dropped (on every rung alike) to catch up with real time.
    pub dropped_frames: u64,
    /// Video frames encoded (per rung).
    pub frames: u64,
    /// The job is behind real time now (dropping frames).
    pub behind: bool,
    pub rungs: Vec<RungView>,
}

/// One stream's job, for GetRoutes, GetMetrics, /api/v1/streams and /metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub key: StreamKey,
    pub name: String,
    /// The origin URL the job plays.
    pub source: String,
    /// `x264`, `nvenc_h264`, ...
    pub encoder: &'static str,
    /// Seconds since the job started.
    pub duration: f64,
    pub view: JobView,
}

/// The rungs for a `width`x`height` source: the ladder's at or below its height (never
/// upscaled), each as wide as the source's aspect ratio makes it (even); a source below every
/// rung gets one rung at its own size with the lowest rung's bit rate.
pub fn plan(ladder: &[Rung], width: u32, height: u32) -> Vec<Rung> {
    let even_width = |h: u32| ((u64::from(width) * u64::from(h) / u64::from(height.max(1))) as u32).div_ceil(2) * 2;
    let mut rungs: Vec<Rung> = ladder
        .iter()
        .filter(|r| r.height <= height)
        .map(|r| Rung { width: even_width(r.height).max(2), ..r.clone() })
        .collect();
    if rungs.is_empty()
        && let Some(lowest) = ladder.iter().min_by_key(|r| r.height)
    {
        let h = height / 2 * 2;
        rungs.push(Rung { name: format!("{h}p"), width: even_width(h).max(2), height: h.max(2), ..lowest.clone() });
    }
    rungs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::transcode::default_ladder;

    #[test]
    fn plans_never_upscale() {
        let sizes = |w, h| plan(&default_ladder(), w, h).iter().map(|r| (r.width, r.height)).collect::<Vec<_>>();
        assert_eq!(sizes(1280, 720), [(1280, 720), (854, 480), (640, 360)]);
        assert_eq!(sizes(1920, 1080).len(), 4);
        assert_eq!(sizes(720, 1280), [(608, 1080), (406, 720), (270, 480), (202, 360)], "portrait keeps its aspect");
        let small = plan(&default_ladder(), 320, 180);
        assert_eq!((small[0].width, small[0].height, small[0].kbps, small[0].name.as_str()), (320, 180, 800, "180p"));
    }

    #[test]
    fn tokens_stay_out_of_logs() {
        assert_eq!(redacted("rtmp://h/live/a?token=abc&expires=9"), "rtmp://h/live/a?token=...&expires=9");
        assert_eq!(redacted("rtmp://h/live/a?vhost=v&token=abc"), "rtmp://h/live/a?vhost=v&token=...");
        assert_eq!(redacted("rtmp://h/live/a"), "rtmp://h/live/a");
    }
}
