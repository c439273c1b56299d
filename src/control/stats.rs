//! PLACEHOLDER until the shard-stats branch lands: the agreed interface only.

use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Default, Clone)]
pub struct ShardCounters {
    pub accepted: BTreeMap<Listener, u64>,
    pub open: u64,
    pub pick_failures: BTreeMap<PickFailure, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    Rtmp,
    HttpStream,
    HttpApi,
    WebrtcUdp,
    SrtUdp,
}

impl Listener {
    pub fn name(self) -> &'static str {
        match self {
            Listener::Rtmp => "rtmp",
            Listener::HttpStream => "http_stream",
            Listener::HttpApi => "http_api",
            Listener::WebrtcUdp => "webrtc",
            Listener::SrtUdp => "srt",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PickFailure {
    NoOrigin,
}

impl PickFailure {
    pub fn name(self) -> &'static str {
        "no_origin"
    }
}

#[derive(Debug, Default, Clone)]
pub struct ShardView {
    pub counters: ShardCounters,
    pub last_report: Option<Instant>,
}

#[derive(Debug, Default, Clone)]
pub struct StreamMedia {
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    pub width: u32,
    pub height: u32,
    pub meta_fps: f64,
    pub fps: f64,
    pub video_frames: u64,
    pub audio_frames: u64,
    pub keyframes: u64,
    pub publishing_since: Option<Instant>,
    pub dropped_frames: u64,
}
