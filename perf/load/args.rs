//! Command-line flags of `streamgate-load` and the target they name.
//!
//! [`Args`] is the clap definition (every flag documented for `--help`); [`Args::check`]
//! rejects combinations that cannot run and [`Target`] is a parsed `--url` / `--play-url`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// RTMP and HTTP-FLV load generator for streamgate (or any RTMP / HTTP-FLV server, or a TCP
/// balancer).
///
/// Publishers send an FLV file to streams PREFIX0..PREFIX{N-1} over RTMP; players are spread
/// over those streams (or all play --play-stream), over RTMP or HTTP-FLV (the scheme of
/// --play-url, else of --url); churn connectors repeat connect -> play -> first media -> close.
/// One line per --report-every seconds goes to stderr, then a summary table (stderr) and, with
/// --json, a JSON summary on stdout. A flag given twice takes its last value.
///
/// `streamgate-load origin-flv --help`: an HTTP-FLV origin that fans one paced FLV file out to
/// any number of players.
#[derive(Debug, Parser)]
#[command(name = "streamgate-load", version, about, long_about, args_override_self = true)]
pub struct Args {
    /// Target URL rtmp://HOST[:PORT]/APP (the proxy, an origin, or a TCP balancer; PORT
    /// defaults to 1935) or, for HTTP-FLV players and churn connectors without publishers,
    /// http://HOST[:PORT]/APP (PORT defaults to 80; they GET /APP/NAME.flv). APP may contain
    /// '/' (app/instance).
    #[arg(long)]
    pub url: String,

    /// Where players and churn connectors go instead of --url, as rtmp:// or http:// URL: for
    /// instance RTMP publishers to an origin and HTTP-FLV players through a proxy.
    #[arg(long, value_name = "URL")]
    pub play_url: Option<String>,

    /// Number of publishing connections; publisher i publishes stream PREFIX{i}.
    #[arg(long, default_value_t = 0)]
    pub publishers: usize,

    /// Prefix of the stream names used by publishers and players.
    #[arg(long, default_value = "s")]
    pub stream_prefix: String,

    /// FLV file the publishers send (audio tags as type 8, video as 9, onMetaData as
    /// @setDataFrame type 18); required with --publishers. Loaded into memory once.
    #[arg(long, value_name = "PATH")]
    pub flv: Option<PathBuf>,

    /// Send media in real time (tag timestamps), looping the file with increasing timestamps;
    /// without it publishers send as fast as the socket takes it (also looping).
    #[arg(long)]
    pub paced: bool,

    /// Chunk size publishers announce (SetChunkSize right after connect) and send with.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(128..=16_777_215))]
    pub publish_chunk_size: u32,

    /// Number of long-lived players; player i plays PREFIX{i % publishers} (PREFIX0 without
    /// publishers). They only read, and may sit idle on a stream without media.
    #[arg(long, default_value_t = 0)]
    pub players: usize,

    /// Stream every player and churn connector plays, instead of spreading them over PREFIX*.
    #[arg(long, value_name = "NAME")]
    pub play_stream: Option<String>,

    /// Number of churn connectors, each looping connect -> play -> first audio/video message
    /// -> close (they count setups/s and time to first media).
    #[arg(long, default_value_t = 0)]
    pub churn: usize,

    /// Players and churn connectors started per second (publishers start at once, and players
    /// start after every publisher got NetStream.Publish.Start or failed).
    #[arg(long, default_value_t = 200.0)]
    pub ramp_per_sec: f64,

    /// Run time in seconds (from start, ramp included); Ctrl-C also ends the run with a summary.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,

    /// Seconds between the progress lines on stderr.
    #[arg(long, default_value_t = 1.0)]
    pub report_every: f64,

    /// Print the final summary as one JSON object on stdout (the table still goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// Worker threads, each running one current-thread tokio runtime; connection i runs on
    /// thread i % THREADS.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Seconds allowed for each setup step: TCP connect, handshake, every awaited RTMP answer
    /// (connect/createStream results, Publish.Start/Play.Start) or the HTTP response head, and
    /// a churn connector's first media message. Long-lived players wait for media without a
    /// limit.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,

    /// Re-arm TCP_QUICKACK after every read during setup (and a churn cycle), so the
    /// client's delayed ACKs do not add ~40 ms per exchange with servers that send replies in
    /// several small writes without TCP_NODELAY (nginx-rtmp). Off: behave like ordinary clients.
    #[arg(long)]
    pub quickack: bool,

    /// Largest RTMP message accepted from the server (ChunkDecoder limit); larger is a
    /// protocol error.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub max_message_size: u32,
}

/// How players talk to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RTMP (`rtmp://`).
    Rtmp,
    /// HTTP-FLV (`http://`): GET /APP/NAME.flv, then an FLV body.
    HttpFlv,
}

impl Protocol {
    /// Name in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::HttpFlv => "http-flv",
        }
    }
}

/// A parsed `--url` or `--play-url`.
#[derive(Debug, Clone)]
pub struct Target {
    /// RTMP or HTTP-FLV.
    pub protocol: Protocol,
    /// First address HOST:PORT resolved to.
    pub addr: SocketAddr,
    /// The `app` sent in `connect` (HTTP-FLV: the path's directory).
    pub app: String,
    /// The `tcUrl` sent in `connect`: rtmp://HOST:PORT/APP (HTTP-FLV: http://HOST:PORT/APP).
    pub tc_url: String,
    /// HOST:PORT as written, for the HTTP `Host` header.
    pub authority: String,
}

impl Args {
    /// Rejects values that cannot run; returns the message to print.
    pub fn check(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| match v.is_finite() && (1e-3..=1e8).contains(&v) {
            true => Ok(()),
            false => Err(format!("--{name} must be a number in 0.001..=1e8, not {v}")),
        };
        positive("ramp-per-sec", self.ramp_per_sec)?;
        positive("duration", self.duration)?;
        positive("report-every", self.report_every)?;
        positive("timeout", self.timeout)?;
        if self.threads == 0 || self.threads > 256 {
            return Err(format!("--threads must be 1..=256, not {}", self.threads));
        }
        if self.publishers > 0 && self.flv.is_none() {
            return Err("--publishers needs --flv PATH".to_owned());
        }
        if self.max_message_size < 1024 {
            return Err("--max-message-size must be at least 1024".to_owned());
        }
        if self.publishers + self.players + self.churn == 0 {
            return Err("nothing to do: give --publishers, --players and/or --churn".to_owned());
        }
        if self.publishers > 0 && !self.url.starts_with("rtmp://") {
            return Err("--publishers publish over RTMP: --url must be rtmp:// (players may use --play-url)".to_owned());
        }
        Ok(())
    }

    /// `--timeout` as a duration.
    pub fn step_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    /// Stream name for player / churn connector number `i`.
    pub fn play_name(&self, i: usize) -> String {
        match &self.play_stream {
            Some(name) => name.clone(),
            None => format!("{}{}", self.stream_prefix, i.checked_rem(self.publishers).unwrap_or(0)),
        }
    }
}

impl Target {
    /// Parses rtmp://HOST[:PORT]/APP or http://HOST[:PORT]/APP and resolves HOST (once, at
    /// startup).
    pub fn parse(url: &str) -> Result<Target, String> {
        let (protocol, scheme, rest, default_port) = if let Some(rest) = url.strip_prefix("rtmp://") {
            (Protocol::Rtmp, "rtmp", rest, 1935)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Protocol::HttpFlv, "http", rest, 80)
        } else {
            return Err(format!("{url:?}: must start with rtmp:// or http://"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let app = path.trim_matches('/');
        if authority.is_empty()
            || app.is_empty()
            || app.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("{url:?}: expected {scheme}://HOST[:PORT]/APP"));
        }
        let host_port = if has_port(authority) { authority.to_owned() } else { format!("{authority}:{default_port}") };
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: cannot resolve {host_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url:?}: {host_port} resolves to no address"))?;
        let tc_url = format!("{scheme}://{host_port}/{app}");
        Ok(Target { protocol, addr, app: app.to_owned(), tc_url, authority: authority.to_owned() })
    }
}

/// Whether HOST[:PORT] carries a port (an IPv6 literal is bracketed: `[::1]:1935`).
fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_protocol_port_and_app() {
        let t = Target::parse("rtmp://127.0.0.1/live").unwrap();
        assert_eq!((t.protocol, t.addr.port(), t.app.as_str()), (Protocol::Rtmp, 1935, "live"));
        assert_eq!(t.tc_url, "rtmp://127.0.0.1:1935/live");
        let t = Target::parse("http://127.0.0.1:8080/live/sub/").unwrap();
        assert_eq!((t.protocol, t.addr.port(), t.app.as_str()), (Protocol::HttpFlv, 8080, "live/sub"));
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(Target::parse("http://[::1]/live").unwrap().addr.port(), 80);
        for bad in ["rtsp://h/live", "http://127.0.0.1:8080/", "http:///live", "http://127.0.0.1/a b"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn publishers_need_an_rtmp_url() {
        let args =
            |extra: &[&str]| Args::parse_from(["streamgate-load", "--flv", "x.flv"].iter().chain(extra).copied());
        assert!(args(&["--url", "http://h/live", "--publishers", "1"]).check().is_err());
        assert!(args(&["--url", "rtmp://h/live", "--publishers", "1", "--play-url", "http://h/live"]).check().is_ok());
        assert!(args(&["--url", "http://h/live", "--players", "1"]).check().is_ok());
        assert_eq!(args(&["--url", "http://h/live", "--players", "500", "--players", "50"]).players, 50);
    }
}
