//! What the shards report once a second, as the control thread keeps it: per-shard counters
//! ([`ShardView`]), per-stream media facts of RTMP publishers ([`StreamMedia`]) and bytes per
//! protocol over the process life. The System API, gRPC and metrics read these from
//! [`State`].
//!
//! Each shard sends one [`ShardEvent::Report`](crate::bridge::ShardEvent::Report) a second:
//! its traffic deltas, its publishers' media deltas and its counters. The counters are
//! cumulative since the shard started, so a report that never arrives loses nothing; traffic
//! and media are deltas, sent with back-pressure (the reporter waits for room in the queue,
//! never a relay).
//!
//! Bounded: one [`ShardView`] per shard (sized at start), one [`StreamMedia`] per stream the
//! registry knows (dropped with the stream, like traffic), one counter per protocol.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::State;
use crate::balance::StreamKey;
use crate::bridge::TableSizes;
use crate::bridge::TrafficDelta;
use crate::bridge::report::PlayerBehind;
use crate::bridge::report::REPORT_INTERVAL;
use crate::bridge::{EdgeReport, Listener, MediaDelta, ShardCounters};

/// One shard as the control thread last heard from it.
#[derive(Clone, Debug, Default)]
pub struct ShardView {
    pub counters: ShardCounters,
    /// When its last report arrived (`None` before the first, about 1 s after start).
    pub last_report: Option<Instant>,
    /// Its SRT and WebRTC table sizes as last reported: now, and the largest since start.
    pub udp_tables: TableSizes,
    pub udp_tables_peak: TableSizes,
    /// When its count of connections closed after a panic last grew.
    pub last_panic: Option<Instant>,
    /// When its count of connections ended as stalled last grew.
    pub last_stall: Option<Instant>,
    /// Its edge streams as last reported (`--edge on`).
    pub edge: EdgeReport,
}

/// One stream's edge over every shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeTotals {
    /// Shards pulling it from an origin now (one origin connection each).
    pub pulls: u64,
    pub players: u64,
    pub cache_bytes: u64,
    pub dropped_frames: u64,
    pub max_lag_bytes: u64,
    /// The players furthest behind over every shard, furthest first, with their shard's index
    /// (at most [`crate::bridge::report::PLAYERS_BEHIND`]).
    pub players_behind: Vec<(usize, PlayerBehind)>,
    /// Served by streamgate itself (`--local-origin`), not pulled from an origin.
    pub local: bool,
}

/// `key`'s edge over every shard; `None` where no shard serves it from a pull.
pub fn edge_totals(shards: &[ShardView], key: &StreamKey) -> Option<EdgeTotals> {
    let mut found = None;
    let streams = shards.iter().enumerate().flat_map(|(i, v)| v.edge.streams.iter().map(move |s| (i, s)));
    for (shard, s) in streams.filter(|(_, s)| &s.key == key) {
        let t: &mut EdgeTotals = found.get_or_insert_with(EdgeTotals::default);
        t.players_behind.extend(s.players_behind.iter().map(|p| (shard, p.clone())));
        t.pulls += u64::from(s.pulling);
        t.players += s.players;
        t.cache_bytes += s.cache_bytes;
        t.dropped_frames += s.dropped_frames;
        t.max_lag_bytes = t.max_lag_bytes.max(s.max_lag_bytes);
        t.local |= s.origin.as_deref() == Some(crate::bridge::report::LOCAL_ORIGIN);
    }
    if let Some(t) = &mut found {
        crate::bridge::report::keep_furthest_behind(&mut t.players_behind, |(_, p)| p);
    }
    found
}

/// Media facts of one published stream, from parsing the RTMP publisher's messages.
#[derive(Clone, Debug, Default)]
pub struct StreamMedia {
    /// `"h264"`, `"hevc"`, `"av1"`, ...: FLV codec id or enhanced RTMP FourCC of the video
    /// messages, else `videocodecid` of the metadata.
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    /// From onMetaData, else from the SPS of the AVC/HEVC sequence header (0 = unknown).
    pub width: u32,
    pub height: u32,
    /// onMetaData framerate (0 = absent).
    pub meta_fps: f64,
    /// Video frames per second over the publisher shard's last report interval (about 1 s);
    /// 0 without a publisher or when its reports stop.
    pub fps: f64,
    /// Since the proxy first saw the stream published (over all its publish sessions).
    pub video_frames: u64,
    pub audio_frames: u64,
    pub keyframes: u64,
    /// When the current publish session started (`None` = no publisher).
    pub publishing_since: Option<Instant>,
    /// Frames the relay dropped for a slow consumer. The relay never drops: it has no queues
    /// (a slow origin or player is pushed back on by TCP, see `shard::relay`), so this stays 0;
    /// the edge's drops are in the shards' edge reports ([`edge_totals`]).
    pub dropped_frames: u64,
    /// onMetaData `encoder` (at most 128 bytes).
    pub encoder: Option<String>,
    /// From the AAC sequence header (or the legacy audio header, or metadata); 0 = unknown.
    pub audio_sample_rate: u32,
    pub audio_channels: u8,
    /// When the last media report of the current session arrived.
    last_report: Option<Instant>,
    /// Start of the newest publish session reported (ended or not).
    newest_session: Option<Instant>,
}

/// Reports older than this make `fps` 0 (a shard reports once a second).
pub const MEDIA_STALE: Duration = Duration::from_millis(3500);

impl StreamMedia {
    /// Applies one publish session's report.
    fn apply(&mut self, delta: &MediaDelta, now: Instant) {
        self.video_frames += delta.video_frames;
        self.audio_frames += delta.audio_frames;
        self.keyframes += delta.keyframes;
        // Facts follow the newest session: a late report of an older one does not undo them.
        if self.newest_session.is_some_and(|newest| delta.since < newest) {
            return;
        }
        self.newest_session = Some(delta.since);
        let info = &delta.info;
        let (width, height) = info.size();
        self.video_codec = info.video_codec();
        self.audio_codec = info.audio_codec();
        (self.width, self.height) = (width, height);
        self.meta_fps = info.meta_fps();
        let meta = info.metadata.as_ref();
        self.encoder = meta.and_then(|m| m.encoder.clone());
        (self.audio_sample_rate, self.audio_channels) = if info.audio_sample_rate > 0 {
            (info.audio_sample_rate, info.audio_channels)
        } else {
            meta.map_or((0, 0), |m| (m.audio_sample_rate, m.audio_channels))
        };
        if delta.ended {
            self.publishing_since = None;
            self.fps = 0.0;
            self.last_report = None;
            return;
        }
        self.publishing_since = Some(delta.since);
        let secs = delta.elapsed.as_secs_f64();
        if secs >= 0.05 {
            self.fps = delta.video_frames as f64 / secs;
        }
        self.last_report = Some(now);
    }

    /// Once a tick: `fps` is 0 when the publisher's reports stopped.
    fn expire(&mut self, now: Instant) {
        if self.last_report.is_none_or(|at| now.saturating_duration_since(at) > MEDIA_STALE) {
            self.fps = 0.0;
        }
    }
}

impl State {
    /// A shard's once-a-second report.
    pub(super) fn on_report(
        &mut self,
        shard: usize,
        traffic: Vec<TrafficDelta>,
        media: Vec<MediaDelta>,
        counters: ShardCounters,
        (udp_now, udp_peak): (TableSizes, TableSizes),
        now: Instant,
    ) {
        let previous = self.shards.get(shard).and_then(|v| v.last_report);
        let interval = previous.map_or(REPORT_INTERVAL, |at| now.saturating_duration_since(at));
        let mut touched = Vec::new();
        for delta in traffic {
            let p = self.protocol_bytes.entry(delta.protocol).or_default();
            p.0 += delta.bytes_in;
            p.1 += delta.bytes_out;
            let t = self.traffic.entry(delta.key.clone()).or_default();
            t.bytes_in += delta.bytes_in;
            t.bytes_out += delta.bytes_out;
            t.rates.add(shard, (delta.bytes_in, delta.bytes_out), interval, now);
            let p = t.by_protocol.entry(delta.protocol).or_default();
            p.0 += delta.bytes_in;
            p.1 += delta.bytes_out;
            touched.push(delta.key);
        }
        // A publisher has claimed its stream, so the registry knows it; the tick drops the
        // entries of streams it forgot, as for traffic. A session that read nothing (its
        // origin was never reached) makes no entry.
        for delta in &media {
            if let Some(m) = self.media.get_mut(&delta.key) {
                m.apply(delta, now);
            } else if delta.info.messages > 0 {
                self.media.entry(delta.key.clone()).or_default().apply(delta, now);
            }
        }
        match self.shards.get_mut(shard) {
            Some(view) => {
                let sum = |m: &BTreeMap<Listener, u64>| m.values().sum::<u64>();
                if sum(&counters.panicked) > sum(&view.counters.panicked) {
                    view.last_panic = Some(now);
                }
                if sum(&counters.stalled) > sum(&view.counters.stalled) {
                    view.last_stall = Some(now);
                }
                view.counters = counters;
                view.last_report = Some(now);
                view.udp_tables = udp_now;
                view.udp_tables_peak = udp_peak;
            }
            None => log::debug!("report from shard {shard}, which is not one of {}", self.shards.len()),
        }
        // The streams in this report show their new rates at once; the others at the tick.
        let reports: Vec<Option<Instant>> = self.shards.iter().map(|v| v.last_report).collect();
        for key in touched {
            if let Some(t) = self.traffic.get_mut(&key) {
                t.refresh(&reports, now);
            }
        }
    }
}

/// Once a tick, after the registry's: forgets the media of streams the registry forgot, and
/// zeroes the rates of publishers whose reports stopped.
pub fn tick_media(media: &mut MediaTable, known: &std::collections::HashSet<&StreamKey>, now: Instant) {
    media.retain(|k, _| known.contains(k));
    for m in media.values_mut() {
        m.expire(now);
    }
}

/// One view per shard, for `State::shards`.
pub fn shard_views(shards: usize) -> Vec<ShardView> {
    vec![ShardView::default(); shards]
}

/// The per-stream media table, for `State::media`.
pub type MediaTable = HashMap<StreamKey, StreamMedia>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::rtmp::MediaInfo;

    fn delta(since: Instant, frames: u64, ended: bool) -> MediaDelta {
        let info =
            MediaInfo { video_codec: Some("h264"), sps_width: 640, sps_height: 360, messages: 9, ..Default::default() };
        MediaDelta {
            key: StreamKey::from_url("rtmp://h/live/a").unwrap(),
            since,
            info,
            video_frames: frames,
            audio_frames: 2 * frames,
            keyframes: 1,
            elapsed: Duration::from_millis(1000),
            ended,
        }
    }

    #[test]
    fn sessions_set_and_clear_publishing() {
        let t0 = Instant::now();
        let mut m = StreamMedia::default();
        m.apply(&delta(t0, 25, false), t0);
        assert_eq!((m.fps, m.video_frames, m.width, m.height, m.video_codec), (25.0, 25, 640, 360, Some("h264")));
        assert_eq!(m.publishing_since, Some(t0));
        // A second session starts on another shard before the first one's end arrives.
        let t1 = t0 + Duration::from_secs(5);
        m.apply(&delta(t1, 30, false), t1);
        m.apply(&delta(t0, 3, true), t1);
        assert_eq!(m.publishing_since, Some(t1), "the old session's end leaves the new one");
        assert_eq!((m.fps, m.video_frames), (30.0, 58));
        m.expire(t1 + Duration::from_secs(1));
        assert_eq!(m.fps, 30.0);
        m.expire(t1 + Duration::from_secs(10));
        assert_eq!(m.fps, 0.0, "stale reports");
        m.apply(&delta(t1, 0, true), t1);
        assert_eq!((m.publishing_since, m.fps, m.video_frames), (None, 0.0, 58));
        m.apply(&delta(t0, 1, false), t1);
        assert_eq!(m.publishing_since, None, "a late report of the old session does not revive it");
    }
}

/// A stream's bit rates per shard, each from that shard's latest report: the report's bytes
/// over the time since the shard's previous report (as the control thread received them,
/// kept within [`RATE_INTERVALS`]). Reports and the control thread's tick are not aligned, so
/// sampling a running byte total once a tick would count no report in one tick and two in the
/// next (a rate flickering between 0 and double); a rate per report does not. A shard's rate
/// counts until that shard reports again without bytes of the stream, or for at most
/// [`RATE_KEPT`] when it stops reporting. One entry per shard: bounded by the shard count.
#[derive(Debug, Default, Clone)]
pub struct ShardRates {
    by_shard: BTreeMap<usize, (u64, u64, Instant)>,
}

/// The shortest and longest time a report's bytes are spread over (a late report does not
/// make a burst, a stalled shard does not make a trickle).
pub const RATE_INTERVALS: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(3));
/// How long a shard's rate counts without a new report from it.
pub const RATE_KEPT: Duration = Duration::from_secs(3);

impl ShardRates {
    /// Bytes (in, out) of one report of `shard`, which came `interval` after its previous one.
    pub fn add(&mut self, shard: usize, (bytes_in, bytes_out): (u64, u64), interval: Duration, now: Instant) {
        let secs = interval.clamp(RATE_INTERVALS.0, RATE_INTERVALS.1).as_secs_f64();
        let bps = |bytes: u64| (bytes as f64 * 8.0 / secs) as u64;
        let entry = self.by_shard.entry(shard).or_insert((0, 0, now));
        if entry.2 != now {
            *entry = (0, 0, now);
        }
        entry.0 += bps(bytes_in);
        entry.1 += bps(bytes_out);
    }

    /// Bits per second (in, out): the sum over the shards whose latest report (`reports`, by
    /// shard index) carried the stream; forgets the others.
    pub fn total(&mut self, reports: &[Option<Instant>], now: Instant) -> (u64, u64) {
        self.by_shard.retain(|shard, (_, _, at)| {
            let newer = reports.get(*shard).copied().flatten().is_some_and(|r| r > *at);
            !newer && now.saturating_duration_since(*at) <= RATE_KEPT
        });
        self.by_shard.values().fold((0, 0), |(i, o), (bi, bo, _)| (i + bi, o + bo))
    }
}

impl super::StreamTraffic {
    /// Sets the rates from each shard's latest report ([`ShardRates`]).
    pub fn refresh(&mut self, reports: &[Option<Instant>], now: Instant) {
        (self.in_bps, self.out_bps) = self.rates.total(reports, now);
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn rates_come_from_each_shards_latest_report_whatever_the_tick_sees() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = ShardRates::default();
        r.add(0, (125_000, 0), s, t0);
        r.add(0, (0, 250_000), s, t0); // a second protocol of the same report
        r.add(1, (0, 125_000), s / 2, t0);
        let reports = [Some(t0), Some(t0)];
        assert_eq!(r.total(&reports, t0), (1_000_000, 4_000_000), "shard 1's bytes came in half a second");
        assert_eq!(r.total(&reports, t0 + s / 2), (1_000_000, 4_000_000), "a tick between reports sees the same");
        // Shard 1 reports again without the stream: its part ends; shard 0's stays.
        let reports = [Some(t0), Some(t0 + s)];
        assert_eq!(r.total(&reports, t0 + s), (1_000_000, 2_000_000));
        // A late report is spread over at most RATE_INTERVALS.1, an early one over at least .0.
        r.add(0, (300_000, 0), Duration::from_secs(10), t0 + s);
        assert_eq!(r.total(&[Some(t0 + s)], t0 + s), (800_000, 0));
        r.add(0, (50_000, 0), Duration::from_millis(10), t0 + 2 * s);
        assert_eq!(r.total(&[Some(t0 + 2 * s)], t0 + 2 * s), (800_000, 0));
        assert_eq!(r.total(&[Some(t0 + 2 * s)], t0 + 2 * s + RATE_KEPT * 2), (0, 0), "a silent shard's rate ends");
    }
}
