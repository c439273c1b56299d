//! `--local-origin`: whether streamgate serves a published stream itself (a local origin)
//! instead of relaying it to a registered origin (`crate::proxy::local`), and the HLS of local
//! streams (`--local-hls-jobs`, `--local-hls-dir`).

use std::path::PathBuf;

use super::ConfigError;

/// Most remux jobs `--local-hls-jobs` may allow.
pub const MAX_HLS_JOBS: usize = 1000;

/// The flag, as clap sees it.
#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// Serve RTMP and SRT publishers locally: streamgate terminates the publish itself (an SRT
    /// caller's MPEG-TS through an ingest job that republishes it over RTMP to streamgate, which
    /// needs the cargo feature `transcode`) and its RTMP and HTTP-FLV players (on any shard) play
    /// the stream from streamgate's own buffers, with no origin server. auto: only when no registered origin is alive to take a new stream (an
    /// origin registering later takes new streams; local ones stay local until their
    /// publisher leaves); on: always; off: publishers need an origin.
    #[arg(
        long,
        env = "STREAMGATE_LOCAL_ORIGIN",
        value_enum,
        default_value_t = LocalOrigin::Auto,
        help_heading = "Local origin"
    )]
    pub local_origin: LocalOrigin,

    /// HLS of local streams: each local stream is remuxed (no re-encoding: its H.264 and AAC
    /// copied into MPEG-TS segments, --segment-duration long, cut on key frames; a sliding window
    /// of 6) by a job that plays it from streamgate's own RTMP listener, and served at
    /// /APP/STREAM.m3u8 on the HTTP stream listener. This is the most jobs at once; local
    /// streams beyond it have no HLS (logged). 0: no HLS for local streams. Needs the cargo
    /// feature `transcode` (libavformat). The job is an RTMP player from 127.0.0.1: it counts
    /// as one, signs itself with --play-secret and passes --on-play like any player.
    #[arg(
        long,
        env = "STREAMGATE_LOCAL_HLS_JOBS",
        default_value_t = 16,
        value_name = "N",
        help_heading = "Local origin"
    )]
    pub local_hls_jobs: usize,

    /// Directory of the local streams' HLS, one folder per stream (emptied when its job starts,
    /// removed --transcode-grace after the publisher left; the directory itself is made with
    /// the first folder and removed at exit if empty). Default: a folder streamgate-hls-PID in
    /// the system's temporary directory.
    #[arg(long, env = "STREAMGATE_LOCAL_HLS_DIR", value_name = "DIR", help_heading = "Local origin")]
    pub local_hls_dir: Option<PathBuf>,

    /// Most local streams at once, across the shards (the process-wide table of who publishes
    /// what is bounded by it); past it a new local publisher is refused (RTMP error status,
    /// logged). It bounds the SRT ingest jobs (a thread each) the same way. From 1 to 1000000.
    #[arg(
        long,
        env = "STREAMGATE_LOCAL_MAX_STREAMS",
        default_value_t = 100_000,
        value_name = "N",
        help_heading = "Local origin"
    )]
    pub local_max_streams: usize,
}

/// The validated HLS settings of local streams.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalHls {
    /// Most remux jobs at once; 0: off.
    pub max_jobs: usize,
    pub dir: PathBuf,
}

impl LocalArgs {
    /// Checks `--local-max-streams`.
    pub fn max_streams(&self) -> Result<usize, ConfigError> {
        if !(1..=1_000_000).contains(&self.local_max_streams) {
            return Err(ConfigError::new("--local-max-streams", "must be from 1 to 1000000"));
        }
        Ok(self.local_max_streams)
    }

    /// Checks the HLS flags.
    pub fn hls(&self) -> Result<LocalHls, ConfigError> {
        if self.local_hls_jobs > MAX_HLS_JOBS {
            return Err(ConfigError::new("--local-hls-jobs", format!("must be from 0 (off) to {MAX_HLS_JOBS}")));
        }
        let dir = self
            .local_hls_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| std::env::temp_dir().join(format!("streamgate-hls-{}", std::process::id())));
        Ok(LocalHls { max_jobs: self.local_hls_jobs, dir })
    }
}

/// When streams are served locally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LocalOrigin {
    /// When no registered origin is alive to take the stream.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::LocalOrigin;
    use crate::config::Cli;

    fn local_origin(list: &[&str]) -> Result<LocalOrigin, String> {
        let args: Vec<OsString> =
            std::iter::once("streamgate").chain(list.iter().copied()).map(OsString::from).collect();
        let cli = Cli::parse_args(&args).map_err(|_| "refused".to_string())?;
        cli.validate(&[0]).map(|c| c.local_origin).map_err(|e| e.to_string())
    }

    #[test]
    fn the_local_origin_is_auto_unless_told_otherwise() {
        assert_eq!(local_origin(&[]), Ok(LocalOrigin::Auto));
        assert_eq!(local_origin(&["--local-origin", "on"]), Ok(LocalOrigin::On));
        assert_eq!(local_origin(&["--local-origin", "off"]), Ok(LocalOrigin::Off));
        assert!(local_origin(&["--local-origin", "sometimes"]).is_err());
    }

    #[test]
    fn local_hls_jobs_are_bounded() {
        let hls = |list: &[&str]| {
            let args: Vec<OsString> =
                std::iter::once("streamgate").chain(list.iter().copied()).map(OsString::from).collect();
            let cli = Cli::parse_args(&args).map_err(|_| "refused".to_string())?;
            cli.validate(&[0]).map(|c| c.local_hls).map_err(|e| e.to_string())
        };
        let default = hls(&[]).unwrap();
        assert_eq!(default.max_jobs, 16);
        assert!(default.dir.to_string_lossy().contains("streamgate-hls-"), "{default:?}");
        let set = hls(&["--local-hls-jobs", "0", "--local-hls-dir", "/tmp/x"]).unwrap();
        assert_eq!((set.max_jobs, set.dir.to_string_lossy().as_ref()), (0, "/tmp/x"));
        assert!(hls(&["--local-hls-jobs", "1001"]).unwrap_err().contains("--local-hls-jobs"));
    }
}
