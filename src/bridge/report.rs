//! What a shard reports to the control thread once a second, and the names its counters
//! use: per-stream traffic and publishers' media since the previous report, the shard's
//! cumulative counters and its UDP table sizes. Plain data, no runtime: the shards build these
//! ([`crate::shard`]), the control thread keeps them ([`crate::control::stats`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::balance::StreamKey;
use crate::balance::session::Protocol;
use crate::codec::rtmp::MediaInfo;

/// How often a shard reports to the control thread.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A listener connections or sessions are accepted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    Rtmp,
    HttpStream,
    HttpApi,
    WebrtcUdp,
    SrtUdp,
}

impl Listener {
    pub const ALL: [Listener; 5] =
        [Listener::Rtmp, Listener::HttpStream, Listener::HttpApi, Listener::WebrtcUdp, Listener::SrtUdp];

    pub fn name(&self) -> &'static str {
        match self {
            Listener::Rtmp => "rtmp",
            Listener::HttpStream => "http_stream",
            Listener::HttpApi => "http_api",
            Listener::WebrtcUdp => "webrtc",
            Listener::SrtUdp => "srt",
        }
    }

    /// Position in [`Listener::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a stream's session could not be given an origin (or its origin could not serve it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PickFailure {
    /// No alive origin (none has sent a heartbeat within the TTL).
    NoOrigin,
    /// The stream's origin has no endpoint for the session's protocol.
    NoEndpoint,
    /// The origin could not be reached, timed out, or broke off before the session started
    /// (dial, handshake, response head, confirmation).
    DialFailed,
    /// The origin answered with a refusal (an RTMP error status, an SRT rejection).
    Refused,
    /// The registry's limits (origins or streams table full).
    Limit,
    /// The control thread is gone (shutting down).
    ControlGone,
    /// Redis mode: a new stream could not be pinned because Redis is down or slow.
    Redis,
    /// Access refused: a missing, wrong or expired signed URL, or the on_publish/on_play
    /// callback said no, failed or timed out.
    Denied,
    /// The stream already had `--max-sessions-per-stream` sessions.
    StreamFull,
}

impl PickFailure {
    pub const ALL: [PickFailure; 9] = [
        PickFailure::NoOrigin,
        PickFailure::NoEndpoint,
        PickFailure::DialFailed,
        PickFailure::Refused,
        PickFailure::Limit,
        PickFailure::ControlGone,
        PickFailure::Redis,
        PickFailure::Denied,
        PickFailure::StreamFull,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            PickFailure::NoOrigin => "no_origin",
            PickFailure::NoEndpoint => "no_endpoint",
            PickFailure::DialFailed => "dial_failed",
            PickFailure::Refused => "refused",
            PickFailure::Limit => "limit",
            PickFailure::ControlGone => "control_gone",
            PickFailure::Redis => "redis",
            PickFailure::Denied => "denied",
            PickFailure::StreamFull => "stream_full",
        }
    }

    /// Position in [`PickFailure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A question a shard asks the control thread and waits for the answer to: a session waits on
/// it. Shards answer an established stream's pin and its HLS ids from their snapshot, so these
/// count new streams (and, in redis mode, what only Redis knows), never an established stream's
/// new players or HLS segment requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ControlAsk {
    /// A stream's origin (to pin, or re-pin after a failed dial).
    Claim,
    /// A stream's origin and HLS id.
    HlsClaim,
    /// The stream of an HLS id.
    HlsResolve,
    /// The WebRTC session of a STUN USERNAME.
    IceResolve,
}

impl ControlAsk {
    pub const ALL: [ControlAsk; 4] =
        [ControlAsk::Claim, ControlAsk::HlsClaim, ControlAsk::HlsResolve, ControlAsk::IceResolve];

    pub fn name(&self) -> &'static str {
        match self {
            ControlAsk::Claim => "claim",
            ControlAsk::HlsClaim => "hls_claim",
            ControlAsk::HlsResolve => "hls_resolve",
            ControlAsk::IceResolve => "ice_resolve",
        }
    }

    /// Position in [`ControlAsk::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Cumulative counters of one shard since start, as last reported (cumulative so a lost
/// report loses nothing). Every listener and reason is present, zeros included (also in
/// `default()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardCounters {
    /// Connections (TCP) or sessions (WebRTC media, SRT) accepted per listener.
    pub accepted: BTreeMap<Listener, u64>,
    /// Connections and UDP sessions open now on this shard (the sum of `open_by_listener`).
    pub open: u64,
    /// Open now, per listener.
    pub open_by_listener: BTreeMap<Listener, u64>,
    /// Connections whose task panicked (each was closed, both sides), per listener.
    pub panicked: BTreeMap<Listener, u64>,
    /// Connections the shard ended because their session moved no byte for
    /// `--stall-timeout` while a peer had hung up, per listener.
    pub stalled: BTreeMap<Listener, u64>,
    /// Connections the shard ended because their session moved no byte for
    /// `--relay-idle-timeout`, per listener.
    pub idle: BTreeMap<Listener, u64>,
    /// Connections closed at accept because their IP held `--max-connections-per-ip`.
    pub refused: BTreeMap<Listener, u64>,
    pub pick_failures: BTreeMap<PickFailure, u64>,
    /// Questions asked of the control thread, by kind.
    pub control_asks: BTreeMap<ControlAsk, u64>,
}

impl Default for ShardCounters {
    fn default() -> Self {
        let listeners: BTreeMap<Listener, u64> = Listener::ALL.iter().map(|l| (*l, 0)).collect();
        ShardCounters {
            accepted: listeners.clone(),
            open: 0,
            open_by_listener: listeners.clone(),
            panicked: listeners.clone(),
            stalled: listeners.clone(),
            idle: listeners.clone(),
            refused: listeners,
            pick_failures: PickFailure::ALL.iter().map(|p| (*p, 0)).collect(),
            control_asks: ControlAsk::ALL.iter().map(|a| (*a, 0)).collect(),
        }
    }
}

/// One stream's bytes over one protocol since the last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficDelta {
    pub key: StreamKey,
    pub protocol: Protocol,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One publish session's report.
#[derive(Debug, Clone)]
pub struct MediaDelta {
    pub key: StreamKey,
    /// When the session started (names it).
    pub since: Instant,
    /// The facts so far (counts in it are the session's totals).
    pub info: MediaInfo,
    /// Counted since the previous report of this session.
    pub video_frames: u64,
    pub audio_frames: u64,
    pub keyframes: u64,
    /// Time since the previous report of this session (or since it started).
    pub elapsed: Duration,
    /// The session has ended: this is its last report.
    pub ended: bool,
}

/// One shard's UDP table sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// SRT sessions (connecting or up), at most `--srt-max-sessions`.
    pub srt_sessions: usize,
    /// WebRTC sessions, at most `--webrtc-max-sessions`.
    pub webrtc_sessions: usize,
    /// Client addresses of WebRTC sessions, at most `MAX_ADDRESSES` per session.
    pub webrtc_addresses: usize,
    /// STUN usernames being asked of the control thread, at most `MAX_LOOKUPS`.
    pub webrtc_lookups: usize,
    /// Usernames the control thread did not know, remembered briefly, at most `MAX_UNKNOWN`.
    pub webrtc_unknown: usize,
}

impl TableSizes {
    /// Each size the larger of the two.
    pub fn max(self, other: TableSizes) -> TableSizes {
        TableSizes {
            srt_sessions: self.srt_sessions.max(other.srt_sessions),
            webrtc_sessions: self.webrtc_sessions.max(other.webrtc_sessions),
            webrtc_addresses: self.webrtc_addresses.max(other.webrtc_addresses),
            webrtc_lookups: self.webrtc_lookups.max(other.webrtc_lookups),
            webrtc_unknown: self.webrtc_unknown.max(other.webrtc_unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable() {
        let names: Vec<&str> = Listener::ALL.iter().map(Listener::name).collect();
        assert_eq!(names, ["rtmp", "http_stream", "http_api", "webrtc", "srt"]);
        assert!(Listener::ALL.iter().enumerate().all(|(i, l)| l.index() == i));
        assert!(PickFailure::ALL.iter().enumerate().all(|(i, p)| p.index() == i));
        assert!(ControlAsk::ALL.iter().enumerate().all(|(i, a)| a.index() == i));
        let names: Vec<&str> = ControlAsk::ALL.iter().map(ControlAsk::name).collect();
        assert_eq!(names, ["claim", "hls_claim", "hls_resolve", "ice_resolve"]);
        let names: Vec<&str> = PickFailure::ALL.iter().map(PickFailure::name).collect();
        assert_eq!(
            names,
            [
                "no_origin",
                "no_endpoint",
                "dial_failed",
                "refused",
                "limit",
                "control_gone",
                "redis",
                "denied",
                "stream_full"
            ]
        );
    }
}

/// What an edge stream fed by a local publisher (`--local-origin`) reports as its origin.
pub const LOCAL_ORIGIN: &str = "local";

/// One edge stream on one shard now (`--edge on`, or a local stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeStream {
    pub key: StreamKey,
    /// The origin the shard pulls it from (the last one tried).
    pub origin: Option<String>,
    /// Whether its pull is connected to that origin now.
    pub pulling: bool,
    pub players: u64,
    /// Payload bytes in its ring (GOP cache and what lagging players still read).
    pub cache_bytes: u64,
    /// Frames its players skipped to catch up, since the shard started pulling it.
    pub dropped_frames: u64,
    /// How far its furthest-behind player is, in payload bytes.
    pub max_lag_bytes: u64,
    /// Its [`PLAYERS_BEHIND`] players furthest behind, furthest first (those behind now or
    /// that skipped frames).
    pub players_behind: Vec<PlayerBehind>,
}

/// How many players furthest behind a stream's report names (per shard, and over all shards in
/// the API): the report stays bounded however many players a stream has.
pub const PLAYERS_BEHIND: usize = 8;

/// One player of an edge stream that is behind or skipped frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerBehind {
    /// The player's number in its stream on its shard.
    pub player: u64,
    pub peer: std::net::SocketAddr,
    /// Payload bytes behind the stream's newest message, as it last looked.
    pub lag_bytes: u64,
    /// Frames it skipped to catch up (`--edge-max-lag`).
    pub dropped_frames: u64,
}

/// Keeps the [`PLAYERS_BEHIND`] players furthest behind in `players` (each `of` an item),
/// furthest first (then those that skipped most).
pub fn keep_furthest_behind<T>(players: &mut Vec<T>, of: impl Fn(&T) -> &PlayerBehind) {
    players.sort_unstable_by_key(|t| {
        let p = of(t);
        std::cmp::Reverse((p.lag_bytes, p.dropped_frames))
    });
    players.truncate(PLAYERS_BEHIND);
}

/// A shard's edge now: its streams, and its counters since it started (cumulative, so a lost
/// report loses nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeReport {
    pub streams: Vec<EdgeStream>,
    /// Origin pulls started (a failover starts another).
    pub pulls_started: u64,
    pub dropped_frames: u64,
}

impl EdgeReport {
    /// Pulls connected now.
    pub fn pulls(&self) -> u64 {
        self.streams.iter().filter(|s| s.pulling).count() as u64
    }

    pub fn players(&self) -> u64 {
        self.streams.iter().map(|s| s.players).sum()
    }

    pub fn cache_bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.cache_bytes).sum()
    }
}
