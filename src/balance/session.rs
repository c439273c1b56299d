//! What kind of session a client has with a stream: its protocol and whether it publishes or
//! plays. Counted per stream by the registry.

/// Which protocol a session speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Rtmp,
    HttpFlv,
    HttpTs,
    /// Audio-only live streams over HTTP (SRS's `http_remux` serves `.mp3` and `.aac`).
    HttpMp3,
    HttpAac,
    Hls,
    WebRtc,
    Srt,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::HttpFlv => "http_flv",
            Protocol::HttpTs => "http_ts",
            Protocol::HttpMp3 => "http_mp3",
            Protocol::HttpAac => "http_aac",
            Protocol::Hls => "hls",
            Protocol::WebRtc => "webrtc",
            Protocol::Srt => "srt",
        }
    }
}

/// Whether a session publishes or plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Publish,
    Play,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Play => "play",
        }
    }
}
