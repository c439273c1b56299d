//! Media facts of the RTMP publishers on a shard.
//!
//! A publish session gets a [`MediaProbe`]: the [`Inspector`] its upstream relay feeds with
//! every byte the publisher sends (see `relay::one_way_inspect`). Once a second the shard's
//! reporter collects, per probe, the frames counted since its last report and the facts so
//! far ([`MediaTable::take`]); a probe whose session has ended is reported one last time
//! (`ended`) and forgotten. Publishers are one connection per stream, so the table is as
//! small as the number of streams published on this shard.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use crate::balance::StreamKey;
use crate::bridge::MediaDelta;
use crate::codec::rtmp::{Inspector, MediaInfo};

/// One publish session's inspector.
#[derive(Debug)]
pub struct MediaProbe {
    key: StreamKey,
    inspector: RefCell<Inspector>,
}

impl MediaProbe {
    /// Reads the next bytes the publisher sent. An inspection error is logged at debug and
    /// stops the inspection (the relay goes on).
    pub fn feed(&self, bytes: &[u8]) {
        if let Err(e) = self.inspector.borrow_mut().feed(bytes) {
            log::debug!("rtmp publish {}: media inspection stopped: {e}", self.key);
        }
    }

    /// What the inspector found so far.
    pub fn info(&self) -> MediaInfo {
        self.inspector.borrow().info().clone()
    }
}

#[derive(Debug)]
struct Entry {
    probe: Rc<MediaProbe>,
    since: Instant,
    /// Counts and time of the previous report.
    reported: (u64, u64, u64),
    last: Instant,
}

/// The shard's publish sessions' probes.
#[derive(Debug, Default)]
pub struct MediaTable {
    entries: RefCell<Vec<Entry>>,
}

impl MediaTable {
    /// A probe for a new publish session of `key`; the session holds it while it lasts.
    pub fn register(&self, key: &StreamKey, now: Instant) -> Rc<MediaProbe> {
        let probe = Rc::new(MediaProbe { key: key.clone(), inspector: RefCell::new(Inspector::new()) });
        self.entries.borrow_mut().push(Entry { probe: probe.clone(), since: now, reported: (0, 0, 0), last: now });
        probe
    }

    /// Publish sessions on this shard now.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session's report since the previous call; forgets sessions that have ended.
    pub fn take(&self, now: Instant) -> Vec<MediaDelta> {
        let mut out = Vec::new();
        self.entries.borrow_mut().retain_mut(|e| {
            let ended = Rc::strong_count(&e.probe) == 1;
            let info = e.probe.info();
            let counts = (info.video_frames, info.audio_frames, info.keyframes);
            out.push(MediaDelta {
                key: e.probe.key.clone(),
                since: e.since,
                video_frames: counts.0.saturating_sub(e.reported.0),
                audio_frames: counts.1.saturating_sub(e.reported.1),
                keyframes: counts.2.saturating_sub(e.reported.2),
                elapsed: now.saturating_duration_since(e.last),
                info,
                ended,
            });
            e.reported = counts;
            e.last = now;
            !ended
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reports_deltas_and_a_last_report() {
        let bytes = include_bytes!("../../tests/data/media/ffmpeg_publish_320x180.rtmp");
        let table = MediaTable::default();
        let t0 = Instant::now();
        let key = StreamKey::from_url("rtmp://h/live/a").unwrap();
        let probe = table.register(&key, t0);
        probe.feed(&bytes[..bytes.len() / 2]);
        let first = table.take(t0 + Duration::from_secs(1));
        assert_eq!(first.len(), 1);
        assert!(first[0].video_frames > 0 && !first[0].ended);
        assert_eq!(first[0].elapsed, Duration::from_secs(1));
        probe.feed(&bytes[bytes.len() / 2..]);
        drop(probe);
        let last = table.take(t0 + Duration::from_secs(2));
        assert!(last[0].ended);
        assert_eq!(first[0].video_frames + last[0].video_frames, 50);
        assert_eq!(last[0].info.size(), (320, 180));
        assert!(table.take(t0 + Duration::from_secs(3)).is_empty(), "forgotten after its last report");
    }
}
