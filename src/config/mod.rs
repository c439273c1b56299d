//! Configuration: command-line flags, their environment variables and the `.env` file, turned
//! into one validated [`Config`].
//!
//! Every flag falls back to an environment variable: `PROXY_*` for the settings SRS proxy
//! deployments already set (so their environment works unchanged), `RTMP_*` for the gRPC and
//! transcoding settings of the ModuleService contract, `STREAMGATE_*` otherwise. A `.env` file
//! in the working directory (or `--env-file`) fills in variables the environment does not
//! already have ([`dotenv`]). A bad value stops startup with one line that names the flag, the
//! variable and what is wrong ([`ConfigError`]); nothing after startup reads the environment
//! again.

pub mod access;
pub mod dotenv;
pub mod edge;
pub mod local;
pub mod tls;
pub mod transcode;
pub mod values;

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

pub use edge::EdgeConfig;
pub use values::{Cidr, CidrList, CpuList, GoDuration, ListenAddr, Switch};

/// The flags, as clap sees them. Turned into [`Config`] by [`Cli::validate`].
#[derive(Parser, Debug)]
#[command(
    name = "streamgate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("STREAMGATE_COMMIT"), ")"),
    about = "A load-balancing proxy for live-video origins (RTMP, HTTP-FLV/TS, HLS, WebRTC, SRT).",
    long_about = "A load-balancing proxy for live-video origins. Origins register themselves \
with SRS heartbeats (POST /api/v1/srs/register on the System API); publishers and players connect \
to streamgate, which pins each stream to one origin for every protocol and relays the bytes.\n\n\
Every flag can also be set by the environment variable shown with it, or in a .env file \
(which never overrides the real environment). Addresses are PORT (all interfaces), :PORT, \
IP:PORT or [IPv6]:PORT. Durations are written like 300s, 1m30s or 500ms.",
    next_line_help = false
)]
pub struct Cli {
    /// RTMP listener (publish and play), served by every shard with SO_REUSEPORT.
    #[arg(long, env = "PROXY_RTMP_SERVER", default_value = "11935", value_name = "ADDR", help_heading = "Listeners")]
    pub rtmp_server: ListenAddr,

    /// HTTP stream listener (HTTP-FLV, -TS, -MP3, -AAC, HLS, static files,
    /// /api/v1/versions), served by every shard with SO_REUSEPORT.
    #[arg(long, env = "PROXY_HTTP_SERVER", default_value = "18080", value_name = "ADDR", help_heading = "Listeners")]
    pub http_server: ListenAddr,

    /// HTTP API listener (WebRTC WHIP/WHEP signalling, SRS's legacy /rtc/v1/publish/ and
    /// /rtc/v1/play/), served by every shard with SO_REUSEPORT.
    #[arg(long, env = "PROXY_HTTP_API", default_value = "11985", value_name = "ADDR", help_heading = "Listeners")]
    pub http_api: ListenAddr,

    /// WebRTC media UDP listener (ICE, DTLS, SRTP relayed to the session's origin); its port is
    /// the one written into the host candidates of SDP answers.
    #[arg(long, env = "PROXY_WEBRTC_SERVER", default_value = "18000", value_name = "ADDR", help_heading = "Listeners")]
    pub webrtc_server: ListenAddr,

    /// SRT UDP listener (publish and play, routed by the stream id), served by every shard with
    /// SO_REUSEPORT.
    #[arg(long, env = "PROXY_SRT_SERVER", default_value = "20080", value_name = "ADDR", help_heading = "Listeners")]
    pub srt_server: ListenAddr,

    /// System API listener: origin registration (SRS heartbeats), versions, origins, streams.
    #[arg(long, env = "PROXY_SYSTEM_API", default_value = "12025", value_name = "ADDR", help_heading = "Listeners")]
    pub system_api: ListenAddr,

    /// gRPC listener: the ModuleService (GetStatus, GetRoutes, GetMetrics,
    /// HealthCheck), the standard grpc.health.v1 service and server reflection, on the control
    /// thread.
    #[arg(long, env = "RTMP_GRPC_PORT", default_value = "50053", value_name = "ADDR", help_heading = "Listeners")]
    pub grpc: ListenAddr,

    /// Most gRPC connections open at once; past it new clients wait in the kernel's listen
    /// backlog until one closes (the cap is taken before accept, so waiting clients hold no
    /// descriptor of the proxy's).
    #[arg(
        long,
        env = "STREAMGATE_GRPC_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_name = "N",
        help_heading = "gRPC"
    )]
    pub grpc_max_connections: usize,

    /// A gRPC connection with no byte in either direction for this long is closed (a client
    /// that connects and says nothing, a dead peer, an idle HTTP/2 connection). The proxy sends
    /// no HTTP/2 pings of its own; a client that keeps a quiet stream open longer sends its own
    /// keepalive pings.
    #[arg(
        long,
        env = "STREAMGATE_GRPC_IDLE_TIMEOUT",
        default_value = "60s",
        value_name = "DURATION",
        help_heading = "gRPC"
    )]
    pub grpc_idle_timeout: GoDuration,

    /// Transcoding and publish limits ([`transcode`]).
    #[command(flatten)]
    pub abr: transcode::TranscodeArgs,

    /// Number of data-plane shards (one thread pinned per CPU). Default: one per CPU this
    /// process may run on, or one per CPU given with --cpus.
    #[arg(long, env = "STREAMGATE_SHARDS", value_name = "N", help_heading = "Threads")]
    pub shards: Option<usize>,

    /// CPUs to pin the shards to, such as 0,2,4 or 0-3. Each must be one this process may run on.
    #[arg(long, env = "STREAMGATE_CPUS", value_name = "LIST", help_heading = "Threads")]
    pub cpus: Option<CpuList>,

    /// Most client connections one shard holds open; past it the shard stops accepting until
    /// one closes (the kernel's listen backlog holds the rest).
    #[arg(
        long,
        env = "STREAMGATE_MAX_CONNECTIONS_PER_SHARD",
        default_value_t = 50_000,
        value_name = "N",
        help_heading = "Threads"
    )]
    pub max_connections_per_shard: usize,

    /// How bytes are relayed once a stream is set up: splice (zero-copy through a kernel pipe;
    /// no user-space buffer per busy connection, the fastest single stream) or copy (receive
    /// into a buffer of up to 64 KiB, send it on).
    #[arg(long, env = "STREAMGATE_RELAY", value_enum, default_value_t = RelayMode::Splice, help_heading = "Threads")]
    pub relay: RelayMode,

    #[command(flatten)]
    pub edge: edge::EdgeArgs,

    #[command(flatten)]
    pub local: local::LocalArgs,

    /// Batch a player's live bytes: once the origin's side is drained, wait this long after it
    /// is readable again before relaying, so several audio and video frames go out in one
    /// syscall and fewer TCP segments (less CPU per byte; each byte is delayed by up to this
    /// much: with 300 rtmpdump players, 20ms takes the relay from 1.25x to 0.62x HAProxy's CPU
    /// per GiB). 0s turns it off. At most 100ms.
    #[arg(
        long,
        env = "STREAMGATE_RELAY_BATCH",
        default_value = "20ms",
        value_name = "DURATION",
        help_heading = "Threads"
    )]
    pub relay_batch: GoDuration,

    /// A relayed session that has moved no byte in either direction for this long while its
    /// client or its origin has hung up is closed by the shard, counted (`stalled` in
    /// /api/v1/shards, streamgate_connections_stalled_total) and logged. A working relay
    /// notices a hang-up at once, so this only catches a session whose task stopped being
    /// woken (a bug); it never closes an idle session whose peers are still there.
    #[arg(
        long,
        env = "STREAMGATE_STALL_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION",
        help_heading = "Threads"
    )]
    pub stall_timeout: GoDuration,

    /// How long to wait for an origin to accept an RTMP connection, and then again for its
    /// handshake, before the origin counts as unreachable (quarantined; the session is retried
    /// once on another origin, else the client is told).
    #[arg(
        long,
        env = "STREAMGATE_RTMP_DIAL_TIMEOUT",
        default_value = "3s",
        value_name = "DURATION",
        help_heading = "Origins"
    )]
    pub rtmp_dial_timeout: GoDuration,

    /// An origin whose last heartbeat is older than this is dead: no new stream goes to it,
    /// and streams pinned to it are re-picked.
    #[arg(
        long,
        env = "PROXY_ORIGIN_SERVER_TTL",
        default_value = "300s",
        value_name = "DURATION",
        help_heading = "Origins"
    )]
    pub origin_ttl: GoDuration,

    /// After a dial to an origin is refused or times out, it takes no new streams and its
    /// streams move to other origins for this long (the session that failed is retried once on
    /// the origin picked instead).
    #[arg(
        long,
        env = "STREAMGATE_ORIGIN_QUARANTINE",
        default_value = "15s",
        value_name = "DURATION",
        help_heading = "Origins"
    )]
    pub origin_quarantine: GoDuration,

    /// An origin whose heartbeat reports a one-minute load average per CPU at or over this
    /// (SRS `heartbeat { summaries on; }`: system load_1m / cpus) takes new streams only when no
    /// other origin can. 0 turns it off.
    #[arg(
        long,
        env = "STREAMGATE_ORIGIN_MAX_LOAD",
        default_value_t = 2.0,
        value_name = "LOAD",
        help_heading = "Origins"
    )]
    pub origin_max_load: f64,

    /// Where origins and stream pins are kept: memory (this process) or redis (shared by
    /// several proxies, in the SRS proxy's keys: see --redis-*).
    #[arg(long, env = "PROXY_LOAD_BALANCER_TYPE", value_enum, default_value_t = LoadBalancer::Memory, help_heading = "Origins")]
    pub load_balancer: LoadBalancer,

    /// Register a fixed origin at startup and keep it alive (for debugging and single-origin
    /// setups).
    #[arg(
        long,
        env = "PROXY_DEFAULT_BACKEND_ENABLED",
        default_value = "off",
        value_name = "on|off",
        help_heading = "Default backend"
    )]
    pub default_backend_enabled: Switch,

    /// IP address of the default backend.
    #[arg(
        long,
        env = "PROXY_DEFAULT_BACKEND_IP",
        default_value = "127.0.0.1",
        value_name = "IP",
        help_heading = "Default backend"
    )]
    pub default_backend_ip: String,

    /// RTMP endpoint of the default backend.
    #[arg(
        long,
        env = "PROXY_DEFAULT_BACKEND_RTMP",
        default_value = "1935",
        value_name = "ENDPOINT",
        help_heading = "Default backend"
    )]
    pub default_backend_rtmp: String,

    /// HTTP (FLV/TS/HLS) endpoint of the default backend; none when empty.
    #[arg(long, env = "PROXY_DEFAULT_BACKEND_HTTP", value_name = "ENDPOINT", help_heading = "Default backend")]
    pub default_backend_http: Option<String>,

    /// HTTP API (WHIP/WHEP) endpoint of the default backend; none when empty.
    #[arg(
        long,
        env = "PROXY_DEFAULT_BACKEND_API",
        default_value = "1985",
        value_name = "ENDPOINT",
        help_heading = "Default backend"
    )]
    pub default_backend_api: String,

    /// WebRTC UDP endpoint of the default backend; none when empty.
    #[arg(
        long,
        env = "PROXY_DEFAULT_BACKEND_RTC",
        default_value = "8000",
        value_name = "ENDPOINT",
        help_heading = "Default backend"
    )]
    pub default_backend_rtc: String,

    /// SRT UDP endpoint of the default backend; none when empty.
    #[arg(
        long,
        env = "PROXY_DEFAULT_BACKEND_SRT",
        default_value = "10080",
        value_name = "ENDPOINT",
        help_heading = "Default backend"
    )]
    pub default_backend_srt: String,

    /// Redis host (redis load balancer).
    #[arg(long, env = "PROXY_REDIS_HOST", default_value = "127.0.0.1", value_name = "HOST", help_heading = "Redis")]
    pub redis_host: String,

    /// Redis port.
    #[arg(long, env = "PROXY_REDIS_PORT", default_value = "6379", value_name = "PORT", value_parser = values::parse_port, help_heading = "Redis")]
    pub redis_port: u16,

    /// Redis password; none when empty.
    #[arg(long, env = "PROXY_REDIS_PASSWORD", hide_env_values = true, value_name = "PASSWORD", help_heading = "Redis")]
    pub redis_password: Option<String>,

    /// Redis database number.
    #[arg(long, env = "PROXY_REDIS_DB", default_value_t = 0, value_name = "N", help_heading = "Redis")]
    pub redis_db: u32,

    /// Prefix for every Redis key (`<prefix>:<key>`); none when empty.
    #[arg(long, env = "PROXY_REDIS_KEY_PREFIX", value_name = "PREFIX", help_heading = "Redis")]
    pub redis_key_prefix: Option<String>,

    /// Require `Authorization: Bearer <token>` on /api/v1/srs/register, on the views
    /// (/api/v1/origins, /api/v1/streams, /api/v1/shards, /metrics) and on gRPC ModuleService and
    /// reflection. /api/v1/versions and grpc.health.v1 stay open.
    #[arg(
        long,
        env = "PROXY_HTTP_API_AUTH_ENABLED",
        default_value = "off",
        value_name = "on|off",
        help_heading = "System API"
    )]
    pub http_api_auth_enabled: Switch,

    /// Authentication type; only bearer exists.
    #[arg(long, env = "PROXY_HTTP_API_AUTH_TYPE", value_name = "TYPE", help_heading = "System API")]
    pub http_api_auth_type: Option<String>,

    /// The bearer token origins and API clients must send when auth is on.
    #[arg(
        long,
        env = "PROXY_HTTP_API_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "System API"
    )]
    pub http_api_auth_token: Option<String>,

    /// Networks origins may register from, such as 10.0.0.0/8,fd00::/8 (a bare IP is one
    /// address; 0.0.0.0/0,::/0 is everyone). Default: loopback only (127.0.0.0/8, ::1) when auth
    /// is off; every peer that has the token when auth is on. Given with auth on, a peer needs
    /// both. Others get 403.
    #[arg(long, env = "STREAMGATE_REGISTER_ALLOW", value_name = "CIDR[,CIDR...]", help_heading = "System API")]
    pub register_allow: Option<CidrList>,

    /// A bearer token for /metrics alone, so Prometheus needs no registration token. Accepted on
    /// /metrics besides the auth token; with auth off, /metrics then requires it.
    #[arg(
        long,
        env = "STREAMGATE_METRICS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "System API"
    )]
    pub metrics_token: Option<String>,

    /// Most origin records. When the table is full a new origin takes the place of one the proxy
    /// has not reached (proven) yet; a proven origin is never evicted.
    #[arg(
        long,
        env = "STREAMGATE_MAX_ORIGINS",
        default_value_t = crate::balance::registry::MAX_ORIGINS,
        value_name = "N",
        help_heading = "Origins"
    )]
    pub max_origins: usize,

    /// Most streams with their own series in /metrics (bit rates, bytes, fps): those moving the
    /// most bits per second; the rest are only counted (streamgate_stream_series_omitted).
    #[arg(
        long,
        env = "STREAMGATE_METRICS_STREAMS",
        default_value_t = 100,
        value_name = "N",
        help_heading = "System API"
    )]
    pub metrics_streams: usize,

    /// Least level of log lines written to stderr.
    #[arg(long, env = "STREAMGATE_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info, help_heading = "Logs")]
    pub log_level: LogLevel,

    /// Deadline for an HTTP client (System API or HTTP listeners) to send a request head (the
    /// first of a connection counts from the connect, later ones from their first byte), and
    /// then its body; past it the client gets 408 and is disconnected.
    #[arg(
        long,
        env = "STREAMGATE_HTTP_REQUEST_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION",
        help_heading = "HTTP"
    )]
    pub http_request_timeout: GoDuration,

    /// How long an idle keep-alive connection on the HTTP stream listener may wait for its
    /// next request before it is closed.
    #[arg(
        long,
        env = "STREAMGATE_HTTP_IDLE_TIMEOUT",
        default_value = "60s",
        value_name = "DURATION",
        help_heading = "HTTP"
    )]
    pub http_idle_timeout: GoDuration,

    /// How long to wait for an HTTP origin to accept the connection, and then again for its
    /// response head (and for a whole HLS playlist); past it the player gets 502 or 504.
    #[arg(
        long,
        env = "STREAMGATE_HTTP_ORIGIN_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION",
        help_heading = "HTTP"
    )]
    pub http_origin_timeout: GoDuration,

    /// IP address written into the host candidates of WebRTC answers, in place of the origin's
    /// own (often internal) address. Default: the address the client's signalling request
    /// reached the proxy at.
    #[arg(long, env = "STREAMGATE_WEBRTC_CANDIDATE", value_name = "IP", help_heading = "WebRTC and SRT")]
    pub webrtc_candidate: Option<IpAddr>,

    /// A WebRTC or SRT session with no datagram in either direction for this long is dropped.
    #[arg(
        long,
        env = "STREAMGATE_UDP_IDLE_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION",
        help_heading = "WebRTC and SRT"
    )]
    pub udp_idle_timeout: GoDuration,

    /// Directory served on the HTTP stream listener for paths that are not streams (SRS's
    /// players, for example). Unset: such paths get 404. It must exist when given.
    #[arg(long, env = "PROXY_STATIC_FILES", value_name = "DIR", help_heading = "HTTP")]
    pub static_files: Option<PathBuf>,

    /// Log line format: text for people, json (one object a line) for collectors.
    #[arg(long, env = "STREAMGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = "Logs")]
    pub log_format: LogFormat,

    /// On SIGINT/SIGTERM, how long open connections may drain before they are closed.
    #[arg(
        long,
        env = "PROXY_GRACE_QUIT_TIMEOUT",
        default_value = "20s",
        value_name = "DURATION",
        help_heading = "Shutdown"
    )]
    pub grace_quit_timeout: GoDuration,

    /// On SIGINT/SIGTERM, the process exits (status 1) after this long whatever is left.
    #[arg(
        long,
        env = "PROXY_FORCE_QUIT_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION",
        help_heading = "Shutdown"
    )]
    pub force_quit_timeout: GoDuration,

    /// Who may publish and play; dead peers and per-client limits ([`access`]).
    #[command(flatten)]
    pub access: access::AccessFlags,

    /// The .env file to read before the flags (missing is fine).
    #[arg(long, env = "STREAMGATE_ENV_FILE", default_value = ".env", value_name = "PATH")]
    pub env_file: PathBuf,

    #[command(flatten)]
    pub tls: tls::TlsArgs,
}

/// Where the origin registry and stream pins live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoadBalancer {
    /// In this process.
    Memory,
    /// In Redis, under the key names SRS proxies use, so mixed fleets share one Redis.
    Redis,
}

/// How established streams are relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RelayMode {
    /// splice(2) through a pipe, woken by io_uring readiness: no copy through user space.
    Splice,
    /// recv into a buffer, send it out.
    Copy,
}

impl RelayMode {
    pub fn name(self) -> &'static str {
        match self {
            RelayMode::Splice => "splice",
            RelayMode::Copy => "copy",
        }
    }
}

/// Log level names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// Log line formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The addresses streamgate listens on.
#[derive(Clone, Debug)]
pub struct Listeners {
    pub rtmp: ListenAddr,
    pub http_stream: ListenAddr,
    pub http_api: ListenAddr,
    pub webrtc: ListenAddr,
    pub srt: ListenAddr,
    pub system_api: ListenAddr,
    pub grpc: ListenAddr,
}

/// The origin registered at startup by `PROXY_DEFAULT_BACKEND_*`; endpoints are left for the
/// registry to parse, like any registration.
#[derive(Clone, Debug)]
pub struct DefaultBackend {
    pub ip: IpAddr,
    pub rtmp: String,
    pub http: Option<String>,
    pub api: Option<String>,
    pub rtc: Option<String>,
    pub srt: Option<String>,
}

/// Redis connection settings (redis load balancer).
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub db: u32,
    pub key_prefix: Option<String>,
}

/// The validated configuration every thread starts from.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Listeners,
    /// One shard per entry, pinned to that CPU.
    pub cpus: Vec<usize>,
    pub max_connections_per_shard: usize,
    pub relay: RelayMode,
    /// `--relay-batch`: zero for none.
    pub relay_batch: Duration,
    /// `--edge*`: players served from one origin pull per stream and shard.
    pub edge: EdgeConfig,
    /// `--local-origin`: when publishers are served locally.
    pub local_origin: local::LocalOrigin,
    /// `--local-hls-jobs`, `--local-hls-dir`: HLS of local streams.
    pub local_hls: local::LocalHls,
    /// `--local-max-streams`: most local streams at once.
    pub local_max_streams: usize,
    /// `--stall-timeout`.
    pub stall_timeout: Duration,
    pub origin_ttl: Duration,
    /// `--origin-quarantine`.
    pub origin_quarantine: Duration,
    /// `--origin-max-load` in hundredths; `None` when off.
    pub origin_max_load_centi: Option<u32>,
    pub rtmp_dial_timeout: Duration,
    pub load_balancer: LoadBalancer,
    pub redis: RedisConfig,
    pub default_backend: Option<DefaultBackend>,
    /// The bearer token required on register, the views and gRPC, when auth is on.
    pub register_token: Option<String>,
    /// Who may register: `None` for every peer (auth on, no `--register-allow`).
    pub register_allow: Option<CidrList>,
    /// A bearer token accepted on `/metrics` (besides `register_token`).
    pub metrics_token: Option<String>,
    /// Most origin records.
    pub max_origins: usize,
    pub http_request_timeout: Duration,
    pub http_idle_timeout: Duration,
    pub http_origin_timeout: Duration,
    /// The canonical static-files directory, if any.
    pub static_files: Option<PathBuf>,
    pub webrtc_candidate: Option<IpAddr>,
    pub udp_idle_timeout: Duration,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub grace_quit_timeout: Duration,
    pub force_quit_timeout: Duration,
    /// Most streams with their own series in `/metrics`.
    pub metrics_streams: usize,
    /// Most gRPC connections open at once.
    pub grpc_max_connections: usize,
    /// A gRPC connection without traffic for this long is closed.
    pub grpc_idle_timeout: Duration,
    /// Transcoding (`--transcode` and its group).
    pub transcode: transcode::TranscodeConfig,
    /// Publish limits (`RTMP_MAX_*`).
    pub limits: transcode::PublishLimits,
    /// Callbacks, signed URLs, keepalive, idle timeout, per-IP and per-stream limits.
    pub access: access::AccessConfig,
    /// The TLS listeners and their certificate files.
    pub tls: tls::TlsConfig,
}

/// A startup configuration error: one line naming the flag, its variable and the problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid {flag} (env {env}): {message}")]
pub struct ConfigError {
    pub flag: String,
    pub env: String,
    pub message: String,
}

impl ConfigError {
    fn new(flag: &str, message: impl Into<String>) -> Self {
        let env = Cli::command()
            .get_arguments()
            .find(|a| a.get_long() == flag.strip_prefix("--"))
            .and_then(|a| a.get_env())
            .map_or_else(String::new, |e| e.to_string_lossy().into_owned());
        ConfigError { flag: flag.into(), env, message: message.into() }
    }
}

/// What stops startup: clap's own exits (help, version, unknown flags) or a bad value.
#[derive(Debug)]
pub enum LoadError {
    /// Print with `exit()`: help, version, or a usage error clap explains best.
    Clap(clap::Error),
    /// Print as one line and exit with status 2.
    Invalid(ConfigError),
}

impl Cli {
    /// Parses `args` against the current environment (after the `.env` file has been applied).
    pub fn parse_args(args: &[OsString]) -> Result<Cli, LoadError> {
        let mut cmd = Cli::command();
        let matches = cmd
            .try_get_matches_from_mut(args.iter().cloned())
            .map_err(|e| value_error(&cmd, &e, args).map_or(LoadError::Clap(e), LoadError::Invalid))?;
        Cli::from_arg_matches(&matches).map_err(LoadError::Clap)
    }

    /// Checks the settings that depend on each other and on the machine.
    pub fn validate(self, allowed_cpus: &[usize]) -> Result<Config, ConfigError> {
        let cpus = choose_cpus(self.shards, self.cpus.as_ref(), allowed_cpus)?;
        if self.origin_ttl.0.is_zero() {
            return Err(ConfigError::new("--origin-ttl", "must be longer than 0s"));
        }
        if self.rtmp_dial_timeout.0.is_zero() {
            return Err(ConfigError::new("--rtmp-dial-timeout", "must be longer than 0s"));
        }
        if self.http_request_timeout.0.is_zero() {
            return Err(ConfigError::new("--http-request-timeout", "must be longer than 0s"));
        }
        if self.stall_timeout.0 < Duration::from_secs(1) {
            return Err(ConfigError::new("--stall-timeout", "must be at least 1s (the shards check once a second)"));
        }
        if self.udp_idle_timeout.0.is_zero() {
            return Err(ConfigError::new("--udp-idle-timeout", "must be longer than 0s"));
        }
        if self.http_idle_timeout.0.is_zero() {
            return Err(ConfigError::new("--http-idle-timeout", "must be longer than 0s"));
        }
        if self.http_origin_timeout.0.is_zero() {
            return Err(ConfigError::new("--http-origin-timeout", "must be longer than 0s"));
        }
        let static_files =
            match self.static_files.clone().filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) if !dir.is_dir() => {
                    return Err(ConfigError::new("--static-files", format!("{} is not a directory", dir.display())));
                }
                Some(dir) => Some(dir.canonicalize().map_err(|e| {
                    ConfigError::new("--static-files", format!("cannot resolve {}: {e}", dir.display()))
                })?),
                None => None,
            };
        if self.relay_batch.0 > Duration::from_millis(100) {
            return Err(ConfigError::new(
                "--relay-batch",
                format!("{} is longer than 100ms; live players would lag", self.relay_batch),
            ));
        }
        if self.grpc_max_connections == 0 {
            return Err(ConfigError::new("--grpc-max-connections", "must be at least 1"));
        }
        if self.grpc_idle_timeout.0.is_zero() {
            return Err(ConfigError::new("--grpc-idle-timeout", "must be longer than 0s"));
        }
        if self.max_connections_per_shard == 0 {
            return Err(ConfigError::new("--max-connections-per-shard", "must be at least 1"));
        }
        if self.force_quit_timeout.0 < self.grace_quit_timeout.0 {
            return Err(ConfigError::new(
                "--force-quit-timeout",
                format!(
                    "{} is shorter than --grace-quit-timeout {}; connections could never drain",
                    self.force_quit_timeout, self.grace_quit_timeout
                ),
            ));
        }
        if self.origin_quarantine.0.is_zero() {
            return Err(ConfigError::new("--origin-quarantine", "must be longer than 0s"));
        }
        if !(0.0..=1000.0).contains(&self.origin_max_load) {
            return Err(ConfigError::new("--origin-max-load", "must be from 0 (off) to 1000"));
        }
        if self.load_balancer == LoadBalancer::Redis && self.redis_host.trim().is_empty() {
            return Err(ConfigError::new("--redis-host", "required in redis mode"));
        }
        let access = self.access.validate()?;
        let tls = self.tls.validate()?;
        let register_token = self.register_token()?;
        let (transcode, limits) = self.abr.validate()?;
        let rtmp_server = self.abr.rtmp_listener(self.rtmp_server)?;
        let default_backend = self.default_backend()?;
        if !(1..=1_000_000).contains(&self.max_origins) {
            return Err(ConfigError::new("--max-origins", "must be from 1 to 1000000"));
        }
        let register_allow = match (&self.register_allow, &register_token) {
            (Some(list), _) => Some(list.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(CidrList::loopback()),
        };
        Ok(Config {
            listen: Listeners {
                rtmp: rtmp_server,
                http_stream: self.http_server,
                http_api: self.http_api,
                webrtc: self.webrtc_server,
                srt: self.srt_server,
                system_api: self.system_api,
                grpc: self.grpc,
            },
            cpus,
            max_connections_per_shard: self.max_connections_per_shard,
            relay: self.relay,
            relay_batch: self.relay_batch.0,
            edge: self.edge.validate()?,
            local_origin: self.local.local_origin,
            local_hls: self.local.hls()?,
            local_max_streams: self.local.max_streams()?,
            stall_timeout: self.stall_timeout.0,
            origin_ttl: self.origin_ttl.0,
            origin_quarantine: self.origin_quarantine.0,
            origin_max_load_centi: (self.origin_max_load > 0.0).then(|| (self.origin_max_load * 100.0).round() as u32),
            rtmp_dial_timeout: self.rtmp_dial_timeout.0,
            load_balancer: self.load_balancer,
            redis: RedisConfig {
                host: self.redis_host.trim().to_string(),
                port: self.redis_port,
                password: non_empty(self.redis_password),
                db: self.redis_db,
                key_prefix: non_empty(self.redis_key_prefix),
            },
            default_backend,
            register_token,
            register_allow,
            metrics_token: non_empty(self.metrics_token),
            max_origins: self.max_origins,
            http_request_timeout: self.http_request_timeout.0,
            http_idle_timeout: self.http_idle_timeout.0,
            http_origin_timeout: self.http_origin_timeout.0,
            static_files,
            webrtc_candidate: self.webrtc_candidate,
            udp_idle_timeout: self.udp_idle_timeout.0,
            log_level: self.log_level,
            log_format: self.log_format,
            grace_quit_timeout: self.grace_quit_timeout.0,
            force_quit_timeout: self.force_quit_timeout.0,
            metrics_streams: self.metrics_streams,
            grpc_max_connections: self.grpc_max_connections,
            grpc_idle_timeout: self.grpc_idle_timeout.0,
            transcode,
            limits,
            access,
            tls,
        })
    }

    fn register_token(&self) -> Result<Option<String>, ConfigError> {
        if !self.http_api_auth_enabled.0 {
            return Ok(None);
        }
        match self.http_api_auth_type.as_deref().map(str::trim) {
            Some(t) if t.eq_ignore_ascii_case("bearer") => {}
            Some("") | None => {
                return Err(ConfigError::new("--http-api-auth-type", "required when auth is on; set it to bearer"));
            }
            Some(other) => {
                return Err(ConfigError::new(
                    "--http-api-auth-type",
                    format!("{other:?} is not supported; only bearer is"),
                ));
            }
        }
        match non_empty(self.http_api_auth_token.clone()) {
            Some(token) => Ok(Some(token)),
            None => Err(ConfigError::new("--http-api-auth-token", "required for bearer authentication")),
        }
    }

    fn default_backend(&self) -> Result<Option<DefaultBackend>, ConfigError> {
        if !self.default_backend_enabled.0 {
            return Ok(None);
        }
        let ip = self.default_backend_ip.trim().parse().map_err(|_| {
            ConfigError::new("--default-backend-ip", format!("{:?} is not an IP address", self.default_backend_ip))
        })?;
        let rtmp = self.default_backend_rtmp.trim();
        if rtmp.is_empty() {
            return Err(ConfigError::new("--default-backend-rtmp", "required when the default backend is on"));
        }
        let opt = |s: &str| non_empty(Some(s.to_string()));
        let endpoints = [
            ("--default-backend-rtmp", Some(rtmp.to_string())),
            ("--default-backend-http", non_empty(self.default_backend_http.clone())),
            ("--default-backend-api", opt(&self.default_backend_api)),
            ("--default-backend-rtc", opt(&self.default_backend_rtc)),
            ("--default-backend-srt", opt(&self.default_backend_srt)),
        ];
        for (flag, value) in endpoints {
            if let Some(Err(e)) = value.map(|v| v.parse::<crate::balance::endpoint::Endpoint>()) {
                return Err(ConfigError::new(flag, e.to_string()));
            }
        }
        Ok(Some(DefaultBackend {
            ip,
            rtmp: rtmp.to_string(),
            http: non_empty(self.default_backend_http.clone()),
            api: opt(&self.default_backend_api),
            rtc: opt(&self.default_backend_rtc),
            srt: opt(&self.default_backend_srt),
        }))
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Picks the CPUs the shards run on from `--shards`, `--cpus` and the process's affinity mask.
pub fn choose_cpus(
    shards: Option<usize>,
    cpus: Option<&CpuList>,
    allowed: &[usize],
) -> Result<Vec<usize>, ConfigError> {
    if shards == Some(0) {
        return Err(ConfigError::new("--shards", "must be at least 1"));
    }
    let chosen = match cpus {
        Some(list) => {
            if let Some(cpu) = list.0.iter().find(|c| !allowed.contains(c)) {
                return Err(ConfigError::new(
                    "--cpus",
                    format!("CPU {cpu} is not one this process may run on (allowed: {allowed:?})"),
                ));
            }
            list.0.clone()
        }
        None => allowed.to_vec(),
    };
    match shards {
        Some(n) if cpus.is_some() && n != chosen.len() => Err(ConfigError::new(
            "--shards",
            format!("{n} shards but --cpus names {} CPUs; give one or make them agree", chosen.len()),
        )),
        Some(n) if n > chosen.len() => Err(ConfigError::new(
            "--shards",
            format!("{n} shards but this process may run on only {} CPUs {chosen:?}", chosen.len()),
        )),
        Some(n) => Ok(chosen[..n].to_vec()),
        None => Ok(chosen),
    }
}

/// Turns clap's value errors into one line naming the flag, its variable and the reason.
fn value_error(cmd: &clap::Command, err: &clap::Error, args: &[OsString]) -> Option<ConfigError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(err.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split([' ', '=']).next().unwrap_or(arg).to_string();
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    let reason = match (std::error::Error::source(err), err.get(ContextKind::ValidValue)) {
        (Some(src), _) => src.to_string(),
        (None, Some(ContextValue::Strings(valid))) => {
            format!("expected one of {}", valid.join(", "))
        }
        _ => "not a valid value".to_string(),
    };
    let env = cmd
        .get_arguments()
        .find(|a| a.get_long() == flag.strip_prefix("--"))
        .and_then(|a| a.get_env())
        .map_or_else(String::new, |e| e.to_string_lossy().into_owned());
    let on_command_line =
        args.iter().skip(1).any(|a| a.to_str().is_some_and(|a| a == flag || a.starts_with(&format!("{flag}="))));
    let source = if on_command_line { "from the command line" } else { "from the environment" };
    Some(ConfigError { flag, env, message: format!("{value:?} {source}: {reason}") })
}

#[cfg(test)]
mod tests;
