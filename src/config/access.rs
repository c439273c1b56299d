//! The flags of who may publish and play and of dead peers and per-client limits: HTTP
//! callbacks in SRS's form, signed URLs, TCP keepalive, the relay idle timeout, connections per
//! IP and sessions per stream. One group, flattened into [`super::Cli`], validated into
//! [`AccessConfig`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use super::{ConfigError, GoDuration};

/// The flags, as clap sees them.
#[derive(clap::Args, Debug, Clone)]
pub struct AccessFlags {
    /// HTTP callback asked before a publish starts (SRS's on_publish): POST JSON with action,
    /// client_id, ip, vhost, app, stream, param, tcUrl, stream_url and protocol. The publish
    /// goes on only when the answer is 200 with a body of {"code":0} (or 0); anything else, no
    /// answer within --callback-timeout or more than --callback-max-in-flight waiting refuses
    /// it. http://HOST[:PORT]/PATH; HOST is resolved once, at startup.
    #[arg(long, env = "STREAMGATE_ON_PUBLISH", value_name = "URL", help_heading = "Access")]
    pub on_publish: Option<String>,

    /// HTTP callback told when an allowed publish ends (SRS's on_unpublish; its answer is ignored).
    #[arg(long, env = "STREAMGATE_ON_UNPUBLISH", value_name = "URL", help_heading = "Access")]
    pub on_unpublish: Option<String>,

    /// HTTP callback asked before a player starts (SRS's on_play), as --on-publish.
    #[arg(long, env = "STREAMGATE_ON_PLAY", value_name = "URL", help_heading = "Access")]
    pub on_play: Option<String>,

    /// HTTP callback told when an allowed player ends (SRS's on_stop; its answer is ignored).
    #[arg(long, env = "STREAMGATE_ON_STOP", value_name = "URL", help_heading = "Access")]
    pub on_stop: Option<String>,

    /// How long a callback may take (connect, request and answer) before the session it asks
    /// about is refused.
    #[arg(
        long,
        env = "STREAMGATE_CALLBACK_TIMEOUT",
        default_value = "2s",
        value_name = "DURATION",
        help_heading = "Access"
    )]
    pub callback_timeout: GoDuration,

    /// Most callbacks in flight per shard; a session that finds no room within
    /// --callback-timeout is refused, an end notice that finds the queue full is dropped
    /// (logged).
    #[arg(
        long,
        env = "STREAMGATE_CALLBACK_MAX_IN_FLIGHT",
        default_value_t = 64,
        value_name = "N",
        help_heading = "Access"
    )]
    pub callback_max_in_flight: usize,

    /// Publishing needs a signed URL: `?token=HEX&expires=UNIX_SECONDS` in the stream's query
    /// (RTMP: the stream name's or the tcUrl's; SRT: the r= resource's), where HEX is
    /// HMAC-SHA256 with this secret of "APP/STREAM:EXPIRES" and EXPIRES is not past.
    #[arg(
        long,
        env = "STREAMGATE_PUBLISH_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Access"
    )]
    pub publish_secret: Option<String>,

    /// Most end notices (on_unpublish, on_stop) waiting per shard for a turn to be posted
    /// (--callback-max-in-flight of them are posted at once); past it a notice is dropped and
    /// logged.
    #[arg(
        long,
        env = "STREAMGATE_CALLBACK_MAX_NOTICES",
        default_value_t = 4096,
        value_name = "N",
        help_heading = "Access"
    )]
    pub callback_max_notices: usize,

    /// Playing needs a signed URL, as --publish-secret, with this secret.
    #[arg(
        long,
        env = "STREAMGATE_PLAY_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Access"
    )]
    pub play_secret: Option<String>,

    /// Most sessions (publishers and players, every protocol) of one stream at once across the
    /// shards; past it new ones are refused (RTMP error status, HTTP 403, SRT rejection). 0: no
    /// cap.
    #[arg(
        long,
        env = "STREAMGATE_MAX_SESSIONS_PER_STREAM",
        default_value_t = 0,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_sessions_per_stream: u32,

    /// Most connections one client IP may hold open on a listener, counted across the shards:
    /// N for every listener, or LISTENER=N,... with rtmp, http (the HTTP stream listener), api
    /// (the HTTP API listener), srt and webrtc (the UDP listeners, where it counts relayed
    /// sessions). Past it a new TCP connection is closed at once, an SRT caller is rejected
    /// (1402, overload) and a WebRTC media session is not opened (its STUN check dropped);
    /// each counted as `refused` in /api/v1/shards and logged. Unset: no limit.
    #[arg(long, env = "STREAMGATE_MAX_CONNECTIONS_PER_IP", value_name = "N|LISTENER=N,...", help_heading = "Limits")]
    pub max_connections_per_ip: Option<PerIpLimits>,

    /// Most SRT sessions one shard relays; past it callers are rejected (1402, overload).
    #[arg(
        long,
        env = "STREAMGATE_SRT_MAX_SESSIONS",
        default_value_t = 10_000,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub srt_max_sessions: usize,

    /// Most WebRTC media sessions one shard relays; past it new ones are dropped (logged).
    #[arg(
        long,
        env = "STREAMGATE_WEBRTC_MAX_SESSIONS",
        default_value_t = 10_000,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub webrtc_max_sessions: usize,

    /// How long an answered WebRTC offer (WHIP, WHEP, SRS's legacy API) may wait for its first
    /// STUN check to open a media session; past it the offer's admission ends (its slot of
    /// --max-sessions-per-stream given back, on_unpublish / on_stop sent), as SRS ends a
    /// session that never got a check. From 1s to 1h.
    #[arg(
        long,
        env = "STREAMGATE_WEBRTC_MEDIA_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION",
        help_heading = "Limits"
    )]
    pub webrtc_media_timeout: GoDuration,

    /// Most WebRTC sessions the control thread remembers by ICE username (what routes a
    /// client's first STUN check, a NAT rebinding or an ICE restart to the session's origin).
    /// When full, the least recently used is forgotten: an offer that has not sent its first
    /// check by then gets no media, and a session already relaying keeps its media but a later
    /// change of client address is no longer routed.
    #[arg(
        long,
        env = "STREAMGATE_WEBRTC_ICE_SESSIONS",
        default_value_t = 100_000,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub webrtc_ice_sessions: usize,

    /// A WebRTC session's ICE username is forgotten after this long without a lookup (shards
    /// ask only for client addresses they have not seen; a relaying session's consent checks
    /// stay on its shard). At least --webrtc-media-timeout.
    #[arg(
        long,
        env = "STREAMGATE_WEBRTC_ICE_TTL",
        default_value = "1h",
        value_name = "DURATION",
        help_heading = "Limits"
    )]
    pub webrtc_ice_ttl: GoDuration,

    /// With --on-play, --on-stop or --max-sessions-per-stream, an HLS player is one session: asked
    /// once at its first playlist request, given a session token (spbhs=) that its playlist
    /// refreshes carry, and ended (stream slot back, on_stop sent) when no playlist request of
    /// it came for this long. From 1s to 1h.
    #[arg(
        long,
        env = "STREAMGATE_HLS_SESSION_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION",
        help_heading = "Limits"
    )]
    pub hls_session_timeout: GoDuration,

    /// Most HLS player sessions (see --hls-session-timeout) at once, across the shards; past it a
    /// new player's first playlist request gets 503 (logged).
    #[arg(
        long,
        env = "STREAMGATE_HLS_MAX_SESSIONS",
        default_value_t = 100_000,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub hls_max_sessions: usize,

    /// TCP keepalive on every relayed socket (clients and origins): the first probe after this
    /// long without traffic. 0s turns keepalive off.
    #[arg(
        long,
        env = "STREAMGATE_TCP_KEEPALIVE_IDLE",
        default_value = "60s",
        value_name = "DURATION",
        help_heading = "Limits"
    )]
    pub tcp_keepalive_idle: GoDuration,

    /// TCP keepalive: time between unanswered probes.
    #[arg(
        long,
        env = "STREAMGATE_TCP_KEEPALIVE_INTERVAL",
        default_value = "10s",
        value_name = "DURATION",
        help_heading = "Limits"
    )]
    pub tcp_keepalive_interval: GoDuration,

    /// TCP keepalive: unanswered probes before the kernel drops the connection (the relay then
    /// sees the error and closes both sides).
    #[arg(
        long,
        env = "STREAMGATE_TCP_KEEPALIVE_COUNT",
        default_value_t = 6,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub tcp_keepalive_count: u32,

    /// A relayed TCP session (RTMP, HTTP-FLV/TS) that moves no byte in either direction for this
    /// long is closed, both sides, counted (`idle` in /api/v1/shards,
    /// streamgate_connections_idle_total) and logged. Checked once a second. 0s turns it off.
    #[arg(
        long,
        env = "STREAMGATE_RELAY_IDLE_TIMEOUT",
        default_value = "5m",
        value_name = "DURATION",
        help_heading = "Limits"
    )]
    pub relay_idle_timeout: GoDuration,
}

/// A callback target: where to connect and what to send as `Host` and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackUrl {
    pub addr: SocketAddr,
    pub host: String,
    /// The path with its query, `/api/v1/streams?x=1`.
    pub path: String,
    /// As given, for log lines.
    pub url: String,
}

impl CallbackUrl {
    /// Parses `http://HOST[:PORT][/PATH]` and resolves HOST.
    pub fn parse(url: &str) -> Result<CallbackUrl, String> {
        let url = url.trim();
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?} names no host"));
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_string()
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {authority:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority:?} resolves to no address"))?;
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        Ok(CallbackUrl { addr, host: authority.to_string(), path, url: url.to_string() })
    }
}

/// `--max-connections-per-ip`: per listener, `None` for no limit (SRT and WebRTC: sessions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerIpLimits {
    pub rtmp: Option<u32>,
    pub http: Option<u32>,
    pub api: Option<u32>,
    pub srt: Option<u32>,
    pub webrtc: Option<u32>,
}

impl FromStr for PerIpLimits {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let number = |v: &str| match v.trim().parse::<u32>() {
            Ok(0) | Err(_) => Err(format!("{v:?} is not a number of connections (1 or more)")),
            Ok(n) => Ok(n),
        };
        let s = s.trim();
        if !s.contains('=') {
            let n = number(s)?;
            let n = Some(n);
            return Ok(PerIpLimits { rtmp: n, http: n, api: n, srt: n, webrtc: n });
        }
        let mut limits = PerIpLimits::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item.split_once('=').ok_or_else(|| format!("{item:?} is not LISTENER=N"))?;
            let slot = match name.trim() {
                "rtmp" => &mut limits.rtmp,
                "http" => &mut limits.http,
                "api" => &mut limits.api,
                "srt" => &mut limits.srt,
                "webrtc" => &mut limits.webrtc,
                other => return Err(format!("{other:?} is not a listener (rtmp, http, api, srt or webrtc)")),
            };
            *slot = Some(number(value)?);
        }
        Ok(limits)
    }
}

/// TCP keepalive times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

/// 128 random bits as hex, from the standard library's randomly seeded hasher keys (the OS's
/// randomness; no other crate needed for a per-process secret).
fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        h.finish()
    };
    format!("{:016x}{:016x}", word(), word())
}

/// The validated access settings.
#[derive(Clone, Debug, Default)]
pub struct AccessConfig {
    pub on_publish: Option<CallbackUrl>,
    pub on_unpublish: Option<CallbackUrl>,
    pub on_play: Option<CallbackUrl>,
    pub on_stop: Option<CallbackUrl>,
    pub callback_timeout: Duration,
    pub callback_max_in_flight: usize,
    /// End notices waiting per shard.
    pub callback_max_notices: usize,
    pub publish_secret: Option<String>,
    pub play_secret: Option<String>,
    /// The secret streamgate signs its own jobs' loopback URLs with (a local stream's HLS
    /// remux and ladder, SRT ingest and SRT players): random per process, never configured.
    /// Sessions that carry it are not asked of the callbacks nor counted per stream.
    pub internal_secret: String,
    /// 0: no cap.
    pub max_sessions_per_stream: u32,
    pub max_connections_per_ip: PerIpLimits,
    /// Per shard.
    pub srt_max_sessions: usize,
    /// Per shard.
    pub webrtc_max_sessions: usize,
    /// How long an answered offer waits for its media session.
    pub webrtc_media_timeout: Duration,
    /// Most ICE usernames the control thread remembers.
    pub webrtc_ice_sessions: usize,
    /// An ICE username unused for this long is forgotten.
    pub webrtc_ice_ttl: Duration,
    /// An HLS player's session ends after this long without a playlist request.
    pub hls_session_timeout: Duration,
    /// Most HLS player sessions.
    pub hls_max_sessions: usize,
    /// `None`: keepalive off.
    pub keepalive: Option<Keepalive>,
    /// `None`: no relay idle timeout.
    pub relay_idle_timeout: Option<Duration>,
}

impl AccessFlags {
    /// Checks the flags; a bad one is named.
    pub fn validate(&self) -> Result<AccessConfig, ConfigError> {
        let url = |flag: &str, value: &Option<String>| -> Result<Option<CallbackUrl>, ConfigError> {
            match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => CallbackUrl::parse(v).map(Some).map_err(|e| ConfigError::new(flag, e)),
            }
        };
        if self.callback_timeout.0.is_zero() {
            return Err(ConfigError::new("--callback-timeout", "must be longer than 0s"));
        }
        if self.callback_max_in_flight == 0 {
            return Err(ConfigError::new("--callback-max-in-flight", "must be at least 1"));
        }
        let secret = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let keepalive = if self.tcp_keepalive_idle.0.is_zero() {
            None
        } else {
            let whole = |flag: &str, d: Duration| {
                if d < Duration::from_secs(1) || d.subsec_nanos() != 0 || d.as_secs() > 32767 {
                    Err(ConfigError::new(flag, "must be whole seconds from 1s to 32767s (the kernel counts seconds)"))
                } else {
                    Ok(d)
                }
            };
            if !(1..=127).contains(&self.tcp_keepalive_count) {
                return Err(ConfigError::new("--tcp-keepalive-count", "must be from 1 to 127"));
            }
            Some(Keepalive {
                idle: whole("--tcp-keepalive-idle", self.tcp_keepalive_idle.0)?,
                interval: whole("--tcp-keepalive-interval", self.tcp_keepalive_interval.0)?,
                count: self.tcp_keepalive_count,
            })
        };
        for (flag, n) in
            [("--srt-max-sessions", self.srt_max_sessions), ("--webrtc-max-sessions", self.webrtc_max_sessions)]
        {
            if !(1..=1_000_000).contains(&n) {
                return Err(ConfigError::new(flag, "must be from 1 to 1000000"));
            }
        }
        if !(1..=1_000_000).contains(&self.callback_max_notices) {
            return Err(ConfigError::new("--callback-max-notices", "must be from 1 to 1000000"));
        }
        if !(1..=10_000_000).contains(&self.webrtc_ice_sessions) {
            return Err(ConfigError::new("--webrtc-ice-sessions", "must be from 1 to 10000000"));
        }
        let media_timeout = self.webrtc_media_timeout.0;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&media_timeout) {
            return Err(ConfigError::new(
                "--webrtc-media-timeout",
                "must be from 1s to 1h (waiting offers are checked once a second)",
            ));
        }
        if self.webrtc_ice_ttl.0 < media_timeout {
            return Err(ConfigError::new(
                "--webrtc-ice-ttl",
                format!(
                    "{} is shorter than --webrtc-media-timeout {}; an offer's first check could find its session forgotten",
                    self.webrtc_ice_ttl, self.webrtc_media_timeout
                ),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.hls_session_timeout.0) {
            return Err(ConfigError::new(
                "--hls-session-timeout",
                "must be from 1s to 1h (sessions are checked once a second)",
            ));
        }
        if !(1..=10_000_000).contains(&self.hls_max_sessions) {
            return Err(ConfigError::new("--hls-max-sessions", "must be from 1 to 10000000"));
        }
        let idle = self.relay_idle_timeout.0;
        if !idle.is_zero() && idle < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "--relay-idle-timeout",
                "must be 0s (off) or at least 1s (checked once a second)",
            ));
        }
        Ok(AccessConfig {
            on_publish: url("--on-publish", &self.on_publish)?,
            on_unpublish: url("--on-unpublish", &self.on_unpublish)?,
            on_play: url("--on-play", &self.on_play)?,
            on_stop: url("--on-stop", &self.on_stop)?,
            callback_timeout: self.callback_timeout.0,
            callback_max_in_flight: self.callback_max_in_flight,
            callback_max_notices: self.callback_max_notices,
            publish_secret: secret(&self.publish_secret),
            play_secret: secret(&self.play_secret),
            internal_secret: random_secret(),
            max_sessions_per_stream: self.max_sessions_per_stream,
            max_connections_per_ip: self.max_connections_per_ip.unwrap_or_default(),
            srt_max_sessions: self.srt_max_sessions,
            webrtc_max_sessions: self.webrtc_max_sessions,
            webrtc_media_timeout: media_timeout,
            webrtc_ice_sessions: self.webrtc_ice_sessions,
            webrtc_ice_ttl: self.webrtc_ice_ttl.0,
            hls_session_timeout: self.hls_session_timeout.0,
            hls_max_sessions: self.hls_max_sessions,
            keepalive,
            relay_idle_timeout: (!idle.is_zero()).then_some(idle),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls() {
        let u = CallbackUrl::parse("http://127.0.0.1:8085/api/v1/streams").unwrap();
        assert_eq!((u.addr.port(), u.host.as_str(), u.path.as_str()), (8085, "127.0.0.1:8085", "/api/v1/streams"));
        let u = CallbackUrl::parse("http://127.0.0.1").unwrap();
        assert_eq!((u.addr.port(), u.path.as_str()), (80, "/"));
        let u = CallbackUrl::parse("http://[::1]:9/x?a=1").unwrap();
        assert_eq!((u.addr.port(), u.path.as_str()), (9, "/x?a=1"));
        assert!(CallbackUrl::parse("https://127.0.0.1/x").is_err());
        assert!(CallbackUrl::parse("http:///x").is_err());
        assert!(CallbackUrl::parse("http://u@127.0.0.1/x").is_err());
    }

    #[test]
    fn per_ip_limits() {
        let all: PerIpLimits = "10".parse().unwrap();
        let ten = Some(10);
        assert_eq!(all, PerIpLimits { rtmp: ten, http: ten, api: ten, srt: ten, webrtc: ten });
        let some: PerIpLimits = "rtmp=2, api=5".parse().unwrap();
        assert_eq!(some, PerIpLimits { rtmp: Some(2), api: Some(5), ..Default::default() });
        let udp: PerIpLimits = "srt=3,webrtc=4".parse().unwrap();
        assert_eq!(udp, PerIpLimits { srt: Some(3), webrtc: Some(4), ..Default::default() });
        assert!("0".parse::<PerIpLimits>().is_err());
        assert!("rtsp=3".parse::<PerIpLimits>().unwrap_err().contains("not a listener"));
        assert!("rtmp".parse::<PerIpLimits>().is_err());
    }
}
