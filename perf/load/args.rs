//! Command-line flags of `streamgate-load` and the target they name.
//!
//! [`Args`] is the clap definition (every flag documented for `--help`); [`Args::check`]
//! rejects combinations that cannot run and [`Target`] is the parsed `--url`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// RTMP load generator for streamgate (or any RTMP server / TCP balancer).
///
/// Publishers send an FLV file to streams PREFIX0..PREFIX{N-1}; players are spread over those
/// streams (or all play --play-stream); churn connectors repeat connect -> play -> first media
/// -> close. One line per --report-every seconds goes to stderr, then a summary table (stderr)
/// and, with --json, a JSON summary on stdout.
#[derive(Debug, Parser)]
#[command(name = "streamgate-load", version, about, long_about)]
pub struct Args {
    /// Target URL rtmp://HOST[:PORT]/APP (the proxy, an origin, or a TCP balancer); PORT
    /// defaults to 1935, APP may contain '/' (app/instance).
    #[arg(long)]
    pub url: String,

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
    /// (connect/createStream results, Publish.Start/Play.Start), and a churn connector's first
    /// media message. Long-lived players wait for media without a limit.
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

/// The parsed `--url`.
#[derive(Debug, Clone)]
pub struct Target {
    /// First address HOST:PORT resolved to.
    pub addr: SocketAddr,
    /// The `app` sent in `connect`.
    pub app: String,
    /// The `tcUrl` sent in `connect`: rtmp://HOST:PORT/APP.
    pub tc_url: String,
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
    /// Parses rtmp://HOST[:PORT]/APP and resolves HOST (once, at startup).
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url.strip_prefix("rtmp://").ok_or_else(|| format!("--url {url:?}: must start with rtmp://"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let app = path.trim_matches('/');
        if authority.is_empty() || app.is_empty() {
            return Err(format!("--url {url:?}: expected rtmp://HOST[:PORT]/APP"));
        }
        let host_port = if has_port(authority) { authority.to_owned() } else { format!("{authority}:1935") };
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| format!("--url {url:?}: cannot resolve {host_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("--url {url:?}: {host_port} resolves to no address"))?;
        Ok(Target { addr, app: app.to_owned(), tc_url: format!("rtmp://{host_port}/{app}") })
    }
}

/// Whether HOST[:PORT] carries a port (an IPv6 literal is bracketed: `[::1]:1935`).
fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':'),
        None => false,
    }
}
