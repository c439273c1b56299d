//! `--local-origin`: whether streamgate serves a published stream itself (a local origin)
//! instead of relaying it to a registered origin (`crate::proxy::local`).

/// The flag, as clap sees it.
#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// Serve RTMP publishers locally: streamgate terminates the publish itself and its RTMP and
    /// HTTP-FLV players (on any shard) play the stream from streamgate's own buffers, with no
    /// origin server. auto: only when no registered origin is alive to take a new stream (an
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
