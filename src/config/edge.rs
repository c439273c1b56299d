//! The edge flags (`--edge*`): one group, validated into [`EdgeConfig`].
//!
//! With `--edge on`, RTMP, HTTP-FLV and HTTP-TS players are served by the shard itself from one
//! origin pull per stream and shard (`crate::proxy::edge`); publishers stay 1:1 relays. Why
//! these defaults: `perf/results/2026-12-07-memory-slope-and-defaults.md`.

use std::time::Duration;

use super::ConfigError;
use super::values::{GoDuration, Switch};

/// The edge's flags, as clap sees them.
#[derive(clap::Args, Debug, Clone)]
pub struct EdgeArgs {
    /// Serve RTMP, HTTP-FLV and HTTP-TS players from one origin pull per stream and shard (an
    /// edge, the default: every byte is received once and written to all of the shard's
    /// players of the stream from shared buffers, at a third to a half of HAProxy's CPU per
    /// byte; the origin sees one play per stream and shard, carrying the first player's
    /// query, and checks a player with another query with a short play of its own; an HTTP-TS
    /// player of a stream in codecs other than H.264 and AAC is relayed). off relays each player to the
    /// origin on its own connection, so the origin sees every player and answers it itself
    /// (its status, headers and codecs; request headers such as cookies reach it). Publishers
    /// are relayed 1:1 either way.
    #[arg(long, env = "STREAMGATE_EDGE", default_value = "on", value_name = "on|off", help_heading = "Edge")]
    pub edge: Switch,

    /// How long a stream's origin pull stays open after its last player on the shard left (a
    /// player that comes back meanwhile starts at once from the cached keyframe).
    #[arg(long, env = "STREAMGATE_EDGE_LINGER", default_value = "5s", value_name = "DURATION", help_heading = "Edge")]
    pub edge_linger: GoDuration,

    /// Most bytes of media kept per stream and shard (the GOP cache from the last keyframe, and
    /// what lagging players still have to read). Sizes are bytes or KiB/MiB/GiB.
    #[arg(
        long,
        env = "STREAMGATE_EDGE_CACHE_BYTES",
        default_value = "16MiB",
        value_name = "SIZE",
        value_parser = parse_size,
        help_heading = "Edge"
    )]
    pub edge_cache_bytes: u64,

    /// A player more than this many bytes behind its stream skips to the next keyframe; the
    /// frames it skips are counted as its dropped frames.
    #[arg(
        long,
        env = "STREAMGATE_EDGE_MAX_LAG",
        default_value = "4MiB",
        value_name = "SIZE",
        value_parser = parse_size,
        help_heading = "Edge"
    )]
    pub edge_max_lag: u64,

    /// How the edge pulls a stream from its origin: rtmp (RTMP play on the origin's RTMP
    /// endpoint), http-flv (GET /APP/STREAM.flv on its HTTP endpoint, for origins that serve
    /// streams only over HTTP-FLV), or auto (the default): RTMP, and HTTP-FLV from an origin
    /// whose RTMP endpoint refuses connections while it registered an HTTP one.
    #[arg(long, env = "STREAMGATE_EDGE_PULL", value_enum, default_value_t = EdgePull::Auto, help_heading = "Edge")]
    pub edge_pull: EdgePull,

    /// A player that takes no bytes for this long while it has some to take is disconnected.
    /// Also the longest a stream's players wait while no origin can serve the stream.
    #[arg(
        long,
        env = "STREAMGATE_EDGE_STALL_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION",
        help_heading = "Edge"
    )]
    pub edge_stall_timeout: GoDuration,

    /// Merged writes: a player that has sent everything it had waits this long after its last
    /// send before it takes what came meanwhile, so each send carries this much of the stream
    /// (fewer, larger writes: less CPU per byte, this much more latency). 0s sends every message
    /// as it comes. SRS's `mw_latency` does the same (350 ms by default, 100 ms in its
    /// low-latency sample). A new player's first send (headers and GOP) never waits. At most 1s.
    #[arg(
        long,
        env = "STREAMGATE_EDGE_MERGE_WRITE",
        default_value = "40ms",
        value_name = "DURATION",
        help_heading = "Edge"
    )]
    pub edge_merge_write: GoDuration,
}

/// How the edge pulls from origins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EdgePull {
    /// RTMP, or HTTP-FLV when the origin's RTMP endpoint refuses the connection and it has an
    /// HTTP endpoint.
    Auto,
    /// RTMP play on the origin's RTMP endpoint.
    Rtmp,
    /// GET /APP/STREAM.flv on the origin's HTTP endpoint.
    HttpFlv,
}

/// The validated edge settings.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// `--edge`: serve players from the shard's pull.
    pub enabled: bool,
    pub linger: Duration,
    pub cache_bytes: usize,
    pub max_lag: usize,
    pub stall_timeout: Duration,
    pub pull: EdgePull,
    /// `--edge-merge-write`: how long a caught-up player waits before its next send.
    pub merge_write: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            enabled: true,
            linger: Duration::from_secs(5),
            cache_bytes: 16 << 20,
            max_lag: 4 << 20,
            stall_timeout: Duration::from_secs(10),
            pull: EdgePull::Auto,
            merge_write: Duration::from_millis(40),
        }
    }
}

impl EdgeArgs {
    /// Checks the edge flags against each other.
    pub fn validate(&self) -> Result<EdgeConfig, ConfigError> {
        if !(64 << 10..=1 << 30).contains(&self.edge_cache_bytes) {
            return Err(ConfigError::new("--edge-cache-bytes", "must be from 64KiB to 1GiB"));
        }
        if self.edge_max_lag < 16 << 10 || self.edge_max_lag > self.edge_cache_bytes {
            return Err(ConfigError::new("--edge-max-lag", "must be from 16KiB to --edge-cache-bytes"));
        }
        if self.edge_stall_timeout.0 < Duration::from_secs(1) {
            return Err(ConfigError::new("--edge-stall-timeout", "must be at least 1s"));
        }
        if self.edge_merge_write.0 > Duration::from_secs(1) {
            return Err(ConfigError::new("--edge-merge-write", "must be from 0s to 1s"));
        }
        Ok(EdgeConfig {
            enabled: self.edge.0,
            linger: self.edge_linger.0,
            cache_bytes: self.edge_cache_bytes as usize,
            max_lag: self.edge_max_lag as usize,
            stall_timeout: self.edge_stall_timeout.0,
            pull: self.edge_pull,
            merge_write: self.edge_merge_write.0,
        })
    }
}

/// A size: bytes, or a number with `KiB`, `MiB` or `GiB` (also `K`, `M`, `G`, `KB`, ...:
/// powers of 1024 all).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size such as 4MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{s:?} has an unknown unit (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
