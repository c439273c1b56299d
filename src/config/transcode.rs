//! The transcoding and publish-limit flags, one group of their own: `--transcode` and its
//! outputs, directory, encoder, preset and ladder (MarchProxy's `RTMP_*` variables where
//! MarchProxy has one), the publish limits (`RTMP_MAX_STREAMS`, `RTMP_MAX_BITRATE`,
//! `RTMP_MAX_RESOLUTION`), and `RTMP_HOST`/`RTMP_PORT`, MarchProxy's variables for the RTMP
//! listener's address. Validated into [`TranscodeConfig`] and [`PublishLimits`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::values::{GoDuration, Switch};
use super::{ConfigError, ListenAddr};

/// Most rungs a ladder may have.
pub const MAX_RUNGS: usize = 8;

/// Which H.264 encoder the jobs use.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderChoice {
    /// The first hardware encoder that opens (nvenc, vaapi, qsv), else x264.
    Auto,
    /// libx264 (software).
    X264,
    /// NVIDIA NVENC (h264_nvenc).
    Nvenc,
    /// VA-API (h264_vaapi).
    Vaapi,
    /// Intel Quick Sync (h264_qsv).
    Qsv,
}

/// The flags, flattened into [`super::Cli`].
#[derive(Args, Debug, Clone)]
pub struct TranscodeArgs {
    /// Turn every stream published through the proxy into an adaptive-bitrate ladder, served
    /// as HLS at /streams/KEY/master.m3u8 and DASH at /streams/KEY/dash/manifest.mpd on the
    /// HTTP stream listener (KEY: the stream name for app `live` on the default vhost, see the
    /// README). Off by default: a ladder costs about a CPU core per 720p stream, next to a relay
    /// that costs a few percent. A build without the cargo feature `transcode` refuses `on`.
    #[arg(
        long,
        env = "STREAMGATE_TRANSCODE",
        default_value = "off",
        value_name = "on|off",
        help_heading = "Transcoding"
    )]
    pub transcode: Switch,

    /// Serve the ladder as HLS (master.m3u8 and one playlist per rung).
    #[arg(long, env = "RTMP_ENABLE_HLS", default_value = "on", value_name = "on|off", help_heading = "Transcoding")]
    pub transcode_hls: Switch,

    /// Serve the ladder as DASH (dash/manifest.mpd), over the same segments as HLS.
    #[arg(long, env = "RTMP_ENABLE_DASH", default_value = "on", value_name = "on|off", help_heading = "Transcoding")]
    pub transcode_dash: Switch,

    /// Directory the jobs write into, one folder per stream (created if missing; a stream's
    /// folder is emptied when its job starts and removed after --transcode-grace). Default: a
    /// folder streamgate-abr-PID in the system's temporary directory.
    #[arg(long, env = "STREAMGATE_TRANSCODE_DIR", value_name = "DIR", help_heading = "Transcoding")]
    pub transcode_dir: Option<PathBuf>,

    /// H.264 encoder: auto tries h264_nvenc, h264_vaapi and h264_qsv by opening each and uses
    /// the first that opens, else libx264. A named hardware encoder that does not open stops
    /// startup.
    #[arg(long, env = "RTMP_ENCODER", value_enum, default_value_t = EncoderChoice::Auto, help_heading = "Transcoding")]
    pub encoder: EncoderChoice,

    /// Encoder preset (x264: ultrafast .. placebo; nvenc: p1 .. p7 or its own names).
    #[arg(long, env = "RTMP_PRESET", default_value = "veryfast", value_name = "NAME", help_heading = "Transcoding")]
    pub preset: String,

    /// The ladder: `default` (1080p30 5000k 1920x1080, 720p30 3000k 1280x720, 480p30 1500k
    /// 854x480, 360p30 800k 640x360) or a file with one rung per line, `NAME WIDTHxHEIGHT
    /// FPS KBPS` (# starts a comment). Rungs above the source's height are left out.
    #[arg(
        long,
        env = "STREAMGATE_LADDER",
        default_value = "default",
        value_name = "default|FILE",
        help_heading = "Transcoding"
    )]
    pub ladder: String,

    /// Keyframe interval and segment length of every rung (the same on all rungs, so segment
    /// boundaries align); also the target segment length of a local stream's HLS
    /// (--local-hls-jobs), cut there on the publisher's key frames.
    #[arg(
        long,
        env = "STREAMGATE_SEGMENT_DURATION",
        default_value = "2s",
        value_name = "DURATION",
        help_heading = "Transcoding"
    )]
    pub segment_duration: GoDuration,

    /// A stream's folder (its ladder's, or a local stream's HLS) is removed this long after its
    /// publisher left (players finish the last segments meanwhile); a new publish of the stream
    /// within it starts afresh.
    #[arg(
        long,
        env = "STREAMGATE_TRANSCODE_GRACE",
        default_value = "30s",
        value_name = "DURATION",
        help_heading = "Transcoding"
    )]
    pub transcode_grace: GoDuration,

    /// Most transcoding jobs at once (each on its own threads); streams published beyond it are
    /// relayed but not transcoded (logged and counted).
    #[arg(
        long,
        env = "STREAMGATE_TRANSCODE_MAX_JOBS",
        default_value_t = 4,
        value_name = "N",
        help_heading = "Transcoding"
    )]
    pub transcode_max_jobs: usize,

    /// Most streams published through this proxy at once (RTMP); the next publisher is refused
    /// with an onStatus error naming the limit. 0: no limit.
    #[arg(long, env = "RTMP_MAX_STREAMS", default_value_t = 100, value_name = "N", help_heading = "Publish limits")]
    pub max_streams: usize,

    /// Highest bit rate of a published stream in Mbit/s: its metadata's (video + audio data
    /// rate) when it starts, then what it sends over every 5 s window. 0: no limit.
    #[arg(
        long,
        env = "RTMP_MAX_BITRATE",
        default_value_t = 10.0,
        value_name = "MBPS",
        help_heading = "Publish limits"
    )]
    pub max_bitrate: f64,

    /// Largest picture of a published stream, as a height (1080p, 720, or WIDTHxHEIGHT, whose
    /// height counts), read from its metadata or its H.264 sequence header. 0: no limit.
    #[arg(
        long,
        env = "RTMP_MAX_RESOLUTION",
        default_value = "1080p",
        value_name = "HEIGHT",
        help_heading = "Publish limits"
    )]
    pub max_resolution: String,

    /// Replaces the host of --rtmp-server (MarchProxy's name for it).
    #[arg(long, env = "RTMP_HOST", value_name = "IP", help_heading = "Listeners")]
    pub rtmp_host: Option<String>,

    /// Replaces the port of --rtmp-server (MarchProxy's name for it).
    #[arg(long, env = "RTMP_PORT", value_name = "PORT", help_heading = "Listeners")]
    pub rtmp_port: Option<u16>,
}

/// One rung of the ladder.
#[derive(Clone, Debug, PartialEq)]
pub struct Rung {
    /// Such as `720p`.
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Most frames per second (a source with fewer keeps its own rate).
    pub fps: u32,
    pub kbps: u32,
}

/// The reference's ladder.
pub fn default_ladder() -> Vec<Rung> {
    let rung = |name: &str, width, height, kbps| Rung { name: name.into(), width, height, fps: 30, kbps };
    vec![
        rung("1080p", 1920, 1080, 5000),
        rung("720p", 1280, 720, 3000),
        rung("480p", 854, 480, 1500),
        rung("360p", 640, 360, 800),
    ]
}

/// The validated transcoding settings.
#[derive(Clone, Debug)]
pub struct TranscodeConfig {
    pub enabled: bool,
    pub hls: bool,
    pub dash: bool,
    pub dir: PathBuf,
    pub encoder: EncoderChoice,
    pub preset: String,
    /// Highest first.
    pub ladder: Vec<Rung>,
    pub segment: Duration,
    pub grace: Duration,
    pub max_jobs: usize,
}

/// The validated publish limits (0 = none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PublishLimits {
    pub max_streams: usize,
    /// Bits per second.
    pub max_bitrate_bps: u64,
    /// Picture height.
    pub max_height: u32,
}

impl Default for PublishLimits {
    fn default() -> Self {
        PublishLimits { max_streams: 100, max_bitrate_bps: 10_000_000, max_height: 1080 }
    }
}

impl TranscodeArgs {
    /// Checks the group; returns the transcoding settings and the limits.
    pub fn validate(&self) -> Result<(TranscodeConfig, PublishLimits), ConfigError> {
        let enabled = self.transcode.0 && (self.transcode_hls.0 || self.transcode_dash.0);
        if self.transcode.0 && !cfg!(feature = "transcode") {
            return Err(ConfigError::new(
                "--transcode",
                "transcoding is not compiled into this binary (build with the cargo feature `transcode`)",
            ));
        }
        let ladder = match self.ladder.trim() {
            "default" | "" => default_ladder(),
            path => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new("--ladder", format!("cannot read {path}: {e}")))?;
                parse_ladder(&text).map_err(|e| ConfigError::new("--ladder", format!("{path}: {e}")))?
            }
        };
        if self.segment_duration.0 < Duration::from_millis(500) || self.segment_duration.0 > Duration::from_secs(20) {
            return Err(ConfigError::new("--segment-duration", "must be from 500ms to 20s"));
        }
        if self.transcode_max_jobs == 0 {
            return Err(ConfigError::new("--transcode-max-jobs", "must be at least 1"));
        }
        if self.preset.trim().is_empty() || !self.preset.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ConfigError::new("--preset", format!("{:?} is not a preset name", self.preset)));
        }
        let dir = self
            .transcode_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| std::env::temp_dir().join(format!("streamgate-abr-{}", std::process::id())));
        let config = TranscodeConfig {
            enabled,
            hls: self.transcode_hls.0,
            dash: self.transcode_dash.0,
            dir,
            encoder: self.encoder,
            preset: self.preset.trim().to_string(),
            ladder,
            segment: self.segment_duration.0,
            grace: self.transcode_grace.0,
            max_jobs: self.transcode_max_jobs,
        };
        Ok((config, self.limits()?))
    }

    fn limits(&self) -> Result<PublishLimits, ConfigError> {
        if !(0.0..=100_000.0).contains(&self.max_bitrate) {
            return Err(ConfigError::new("--max-bitrate", "must be from 0 (no limit) to 100000 Mbit/s"));
        }
        let max_height = parse_height(&self.max_resolution).map_err(|e| ConfigError::new("--max-resolution", e))?;
        Ok(PublishLimits {
            max_streams: self.max_streams,
            max_bitrate_bps: (self.max_bitrate * 1_000_000.0).round() as u64,
            max_height,
        })
    }

    /// `--rtmp-server` with `RTMP_HOST`/`RTMP_PORT` applied.
    pub fn rtmp_listener(&self, mut addr: ListenAddr) -> Result<ListenAddr, ConfigError> {
        if let Some(host) = self.rtmp_host.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
            let ip = match host {
                "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
                _ => host
                    .parse()
                    .map_err(|_| ConfigError::new("--rtmp-host", format!("{host:?} is not an IP address")))?,
            };
            addr.0.set_ip(ip);
        }
        if let Some(port) = self.rtmp_port {
            addr.0.set_port(port);
        }
        Ok(addr)
    }
}

/// A height: `1080p`, `1080`, `1920x1080`; `0` for none.
pub fn parse_height(s: &str) -> Result<u32, String> {
    let s = s.trim().to_ascii_lowercase();
    let digits = match s.split_once('x') {
        Some((_, h)) => h.to_string(),
        None => s.strip_suffix('p').unwrap_or(&s).to_string(),
    };
    digits.parse::<u32>().map_err(|_| format!("{s:?} is not a height (write 1080p, 720 or 1920x1080)"))
}

/// Parses a ladder file: `NAME WIDTHxHEIGHT FPS KBPS` per line, highest rung first after
/// sorting.
pub fn parse_ladder(text: &str) -> Result<Vec<Rung>, String> {
    let mut rungs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what} (expected NAME WIDTHxHEIGHT FPS KBPS)", n + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, size, fps, kbps] = fields[..] else { return Err(bad("four fields")) };
        let (w, h) = size.split_once('x').ok_or_else(|| bad("size"))?;
        let number = |s: &str, what: &str, max: u32| match s.parse::<u32>() {
            Ok(v) if v > 0 && v <= max => Ok(v),
            _ => Err(bad(what)),
        };
        let (width, height) = (number(w, "width", 8192)?, number(h, "height", 8192)?);
        if width % 2 != 0 || height % 2 != 0 {
            return Err(bad("width and height must be even"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(bad("name (letters, digits, _ and -)"));
        }
        rungs.push(Rung {
            name: name.to_string(),
            width,
            height,
            fps: number(fps, "fps", 240)?,
            kbps: number(kbps, "kbps", 200_000)?,
        });
    }
    if rungs.is_empty() || rungs.len() > MAX_RUNGS {
        return Err(format!("a ladder has 1 to {MAX_RUNGS} rungs"));
    }
    rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
    Ok(rungs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_and_ladders_parse() {
        assert_eq!(parse_height("1080p"), Ok(1080));
        assert_eq!(parse_height("720"), Ok(720));
        assert_eq!(parse_height("1280x720"), Ok(720));
        assert_eq!(parse_height("0"), Ok(0));
        assert!(parse_height("hd").is_err());
        let ladder = parse_ladder("# mine\n360p 640x360 25 800\n720p 1280x720 30 3000 # top\n").unwrap();
        assert_eq!(ladder.iter().map(|r| r.height).collect::<Vec<_>>(), [720, 360]);
        assert!(parse_ladder("720p 1281x720 30 3000").is_err(), "odd width");
        assert!(parse_ladder("720p 1280x720 30").is_err());
        assert!(parse_ladder("").is_err());
        assert_eq!(default_ladder().len(), 4);
    }
}
