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
}
