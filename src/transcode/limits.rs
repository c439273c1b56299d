//! Publish limits (`RTMP_MAX_STREAMS`, `RTMP_MAX_BITRATE`, `RTMP_MAX_RESOLUTION`): decided
//! here, enforced by the RTMP publish path (`proxy::rtmp::limits`), which refuses with an
//! `onStatus` error whose description is [`Refusal`]'s text, then closes.
//!
//! - Streams: [`admit`] takes a slot from a process-wide counter (one atomic add, no round
//!   trip to the control thread and no race between shards); the [`Slot`] gives it back when
//!   the publish session ends, however it ends. Redis mode counts per proxy instance.
//! - Resolution and bit rate at the start: [`Watch::check`] reads the publisher's metadata
//!   (`width`/`height`, `videodatarate` + `audiodatarate`) or the H.264 sequence header's
//!   picture size as soon as the shard's media inspector has them.
//! - Bit rate while it runs: the bytes the publisher sent over each [`WINDOW`]; a window over
//!   [`WINDOW_TOLERANCE`] times the limit refuses (key frames make single seconds bursty).
//!
//! Refusals are counted per limit ([`refused`]) for `/metrics` and logged by the caller.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::codec::rtmp::MediaInfo;
use crate::config::transcode::PublishLimits;

/// The bit-rate window while a stream runs.
pub const WINDOW: Duration = Duration::from_secs(5);
/// A window may exceed the limit by this factor before the stream is refused.
pub const WINDOW_TOLERANCE: f64 = 1.2;

/// Why a publish is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Streams { max: usize },
    Bitrate { bps: u64, max: u64 },
    Resolution { height: u32, max: u32 },
}

impl Refusal {
    /// The limit's name in metrics and logs.
    pub fn limit(&self) -> &'static str {
        match self {
            Refusal::Streams { .. } => "max_streams",
            Refusal::Bitrate { .. } => "max_bitrate",
            Refusal::Resolution { .. } => "max_resolution",
        }
    }

    fn index(&self) -> usize {
        match self {
            Refusal::Streams { .. } => 0,
            Refusal::Bitrate { .. } => 1,
            Refusal::Resolution { .. } => 2,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Streams { max } => write!(f, "RTMP_MAX_STREAMS: {max} streams are published already"),
            Refusal::Bitrate { bps, max } => write!(
                f,
                "RTMP_MAX_BITRATE: {:.2} Mbit/s is over the limit of {:.2} Mbit/s",
                *bps as f64 / 1e6,
                *max as f64 / 1e6
            ),
            Refusal::Resolution { height, max } => {
                write!(f, "RTMP_MAX_RESOLUTION: {height}p is over the limit of {max}p")
            }
        }
    }
}

/// The limits' names, in the order of [`refused`].
pub const LIMITS: [&str; 3] = ["max_streams", "max_bitrate", "max_resolution"];

static REFUSED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Counts a refusal (call once per refused publisher).
pub fn count(refusal: &Refusal) {
    REFUSED[refusal.index()].fetch_add(1, Ordering::Relaxed);
}

/// Publishers refused per limit since start, in the order of [`LIMITS`].
pub fn refused() -> [u64; 3] {
    [0, 1, 2].map(|i| REFUSED[i].load(Ordering::Relaxed))
}

/// A counter of publish slots.
#[derive(Debug, Default)]
pub struct Slots {
    taken: AtomicUsize,
}

/// The process's publishers.
pub static PUBLISHERS: Slots = Slots { taken: AtomicUsize::new(0) };

impl Slots {
    /// Takes a slot unless `max` are taken (`max` 0: no limit).
    pub fn take(&'static self, max: usize) -> Result<Slot, Refusal> {
        let mut now = self.taken.load(Ordering::Relaxed);
        loop {
            if max > 0 && now >= max {
                return Err(Refusal::Streams { max });
            }
            match self.taken.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(Slot(self)),
                Err(seen) => now = seen,
            }
        }
    }

    /// Slots taken now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
    }
}

/// A publisher's slot; given back when dropped.
#[derive(Debug)]
pub struct Slot(&'static Slots);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admits a new publisher under `limits` (the streams limit; the others need its media).
pub fn admit(limits: &PublishLimits) -> Result<Slot, Refusal> {
    PUBLISHERS.take(limits.max_streams)
}

/// One publish session's running checks.
#[derive(Debug)]
pub struct Watch {
    limits: PublishLimits,
    window: Option<(Instant, u64)>,
}

impl Watch {
    pub fn new(limits: PublishLimits) -> Watch {
        Watch { limits, window: None }
    }

    /// Checks what the publisher sent so far: its media facts and `bytes` received in all.
    pub fn check(&mut self, info: &MediaInfo, bytes: u64, now: Instant) -> Option<Refusal> {
        let PublishLimits { max_bitrate_bps: max_bps, max_height, .. } = self.limits;
        let height = info.size().1;
        if max_height > 0 && height > max_height {
            return Some(Refusal::Resolution { height, max: max_height });
        }
        if max_bps == 0 {
            return None;
        }
        if let Some(meta) = &info.metadata {
            let bps = ((meta.video_kbps + meta.audio_kbps).max(0.0) * 1000.0) as u64;
            if bps > max_bps {
                return Some(Refusal::Bitrate { bps, max: max_bps });
            }
        }
        let (since, at) = *self.window.get_or_insert((now, bytes));
        let elapsed = now.saturating_duration_since(since);
        if elapsed < WINDOW {
            return None;
        }
        self.window = Some((now, bytes));
        let bps = ((bytes - at) as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
        (bps as f64 > max_bps as f64 * WINDOW_TOLERANCE).then_some(Refusal::Bitrate { bps, max: max_bps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::flv::Metadata;

    static TEST_SLOTS: Slots = Slots { taken: AtomicUsize::new(0) };

    #[test]
    fn slots_are_given_back() {
        let a = TEST_SLOTS.take(2).unwrap();
        let b = TEST_SLOTS.take(2).unwrap();
        assert_eq!(TEST_SLOTS.take(2).unwrap_err(), Refusal::Streams { max: 2 });
        drop(a);
        let c = TEST_SLOTS.take(2).unwrap();
        assert_eq!(TEST_SLOTS.taken(), 2);
        drop((b, c));
        assert!(TEST_SLOTS.take(0).is_ok(), "0 is no limit");
    }

    fn meta(height: u32, kbps: f64) -> MediaInfo {
        let metadata = Metadata { width: height * 16 / 9, height, video_kbps: kbps, ..Default::default() };
        MediaInfo { metadata: Some(metadata), ..Default::default() }
    }

    #[test]
    fn resolution_and_bitrate() {
        let limits = PublishLimits { max_streams: 0, max_bitrate_bps: 2_000_000, max_height: 720 };
        let t0 = Instant::now();
        let mut watch = Watch::new(limits);
        assert_eq!(watch.check(&meta(1080, 500.0), 0, t0), Some(Refusal::Resolution { height: 1080, max: 720 }));
        assert_eq!(watch.check(&meta(720, 3000.0), 0, t0), Some(Refusal::Bitrate { bps: 3_000_000, max: 2_000_000 }));
        assert_eq!(watch.check(&meta(720, 1000.0), 0, t0), None);
        // 2.2 Mbit/s over the window is within the tolerance; 3 Mbit/s is not.
        assert_eq!(watch.check(&meta(720, 1000.0), 1_375_000, t0 + WINDOW), None);
        let over = watch.check(&meta(720, 1000.0), 1_375_000 + 1_875_000, t0 + WINDOW * 2);
        assert!(matches!(over, Some(Refusal::Bitrate { bps: 3_000_000, .. })), "{over:?}");
        assert!(over.unwrap().to_string().starts_with("RTMP_MAX_BITRATE"));
        assert_eq!(Watch::new(PublishLimits { max_height: 0, ..limits }).check(&meta(2160, 0.0), 0, t0), None);
    }
}
