//! The TLS flags (`--rtmps-server`, `--https-server`, `--https-api`, `--grpc-tls`,
//! `--tls-cert`, `--tls-key`): one clap group flattened into [`super::Cli`], validated into
//! [`TlsConfig`].
//!
//! Each TLS listener is off unless its address is given (gRPC: unless `--grpc-tls`, which
//! turns the `--grpc` listener into a TLS-only one); any of them needs both a certificate
//! chain and a key (PEM files). The files are read at startup (a bad one stops startup naming
//! its flag) and again on SIGHUP (`crate::shard::tls`).

use std::path::PathBuf;

use super::{ConfigError, ListenAddr};

/// The TLS flags, as clap sees them.
#[derive(clap::Args, Debug, Clone)]
pub struct TlsArgs {
    /// RTMPS listener (RTMP over TLS, rtmps://): the RTMP service behind TLS, served by every
    /// shard with SO_REUSEPORT. Off unless given; needs --tls-cert and --tls-key.
    #[arg(long, env = "STREAMGATE_RTMPS_SERVER", value_name = "ADDR", help_heading = "TLS")]
    pub rtmps_server: Option<ListenAddr>,

    /// HTTPS stream listener: the HTTP stream service (HTTP-FLV/TS, HLS, static files) behind
    /// TLS. Off unless given; needs --tls-cert and --tls-key.
    #[arg(long, env = "STREAMGATE_HTTPS_SERVER", value_name = "ADDR", help_heading = "TLS")]
    pub https_server: Option<ListenAddr>,

    /// HTTPS API listener: WHIP/WHEP signalling behind TLS (browsers only allow WebRTC from
    /// secure pages). Off unless given; needs --tls-cert and --tls-key.
    #[arg(long, env = "STREAMGATE_HTTPS_API", value_name = "ADDR", help_heading = "TLS")]
    pub https_api: Option<ListenAddr>,

    /// Serve gRPC (--grpc) over TLS only, with --tls-cert and --tls-key (ALPN h2): clients
    /// dial it with TLS (grpcio's secure_channel, grpcurl without -plaintext); a plaintext
    /// client's connection is closed during the handshake. The certificate is reloaded on
    /// SIGHUP like the other TLS listeners': new connections get it, while an HTTP/2
    /// connection already open keeps the one it was handshaken with until it closes (a TLS
    /// certificate is sent only in the handshake, and TLS 1.3 has no renegotiation; nginx's
    /// reload and Envoy's certificate rotation behave the same). Clients that hold one
    /// connection for days see the new certificate when they reconnect; a certificate that
    /// must stop being used at once needs a restart. Off: plaintext gRPC.
    #[arg(long, env = "STREAMGATE_GRPC_TLS", help_heading = "TLS")]
    pub grpc_tls: bool,

    /// PEM file with the certificate chain of the TLS listeners (leaf first). Read at startup
    /// and again on SIGHUP: new connections get the new certificate, connections already open
    /// keep theirs; a file that does not load then is logged and the old certificate kept.
    #[arg(long, env = "STREAMGATE_TLS_CERT", value_name = "PATH", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1). Reloaded with it
    /// on SIGHUP.
    #[arg(long, env = "STREAMGATE_TLS_KEY", value_name = "PATH", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
}

/// The validated TLS settings.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    pub rtmps: Option<ListenAddr>,
    pub https_stream: Option<ListenAddr>,
    pub https_api: Option<ListenAddr>,
    /// gRPC over TLS (`--grpc-tls`) on the `--grpc` listener.
    pub grpc: bool,
    /// The certificate chain and key files; `Some` whenever a TLS listener is on.
    pub files: Option<TlsFiles>,
}

/// Where the certificate chain and its key are read from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsConfig {
    /// The TLS listeners that are on, with their names in the startup line.
    pub fn listeners(&self) -> impl Iterator<Item = (&'static str, ListenAddr)> + '_ {
        [("RTMPS", self.rtmps), ("HTTPS stream", self.https_stream), ("HTTPS API", self.https_api)]
            .into_iter()
            .filter_map(|(name, addr)| Some((name, addr?)))
    }

    /// The TLS listeners of the startup line: `; RTMPS 0.0.0.0:1936; ...`, empty when none.
    pub fn describe(&self) -> String {
        self.listeners().map(|(name, addr)| format!("; {name} {addr}")).collect()
    }

    /// Whether anything serves TLS (a shard listener or gRPC), so the files are needed.
    pub fn any(&self) -> bool {
        self.grpc || self.listeners().next().is_some()
    }
}

impl TlsArgs {
    /// Checks that a TLS listener has its files, and that files come with a listener.
    pub fn validate(&self) -> Result<TlsConfig, ConfigError> {
        let path = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        let (cert, key) = (path(&self.tls_cert), path(&self.tls_key));
        let config = TlsConfig {
            rtmps: self.rtmps_server,
            https_stream: self.https_server,
            https_api: self.https_api,
            grpc: self.grpc_tls,
            files: None,
        };
        let any = config.any();
        match (cert, key) {
            (Some(cert), Some(key)) if any => Ok(TlsConfig { files: Some(TlsFiles { cert, key }), ..config }),
            (None, None) if !any => Ok(config),
            (Some(_), Some(_)) => Err(ConfigError::new(
                "--tls-cert",
                "given without a TLS listener; add --rtmps-server, --https-server, --https-api or --grpc-tls",
            )),
            (None, None) => Err(ConfigError::new("--tls-cert", "required with a TLS listener (and --tls-key)")),
            (Some(_), None) => Err(ConfigError::new("--tls-key", "required with --tls-cert")),
            (None, Some(_)) => Err(ConfigError::new("--tls-cert", "required with --tls-key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::super::{Cli, LoadError};
    use super::*;

    fn load(list: &[&str]) -> Result<TlsConfig, String> {
        let args: Vec<OsString> = std::iter::once("streamgate").chain(list.iter().copied()).map(Into::into).collect();
        match Cli::parse_args(&args) {
            Ok(cli) => cli.validate(&[0]).map(|c| c.tls).map_err(|e| e.to_string()),
            Err(LoadError::Invalid(e)) => Err(e.to_string()),
            Err(LoadError::Clap(e)) => Err(format!("clap: {e}")),
        }
    }

    #[test]
    fn off_unless_a_listener_is_given() {
        let tls = load(&[]).unwrap();
        assert!(tls.listeners().next().is_none() && tls.files.is_none() && !tls.any() && !tls.grpc);
        assert_eq!(tls.describe(), "");
    }

    #[test]
    fn listeners_with_their_files() {
        let files = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
        let tls = load(&[&["--rtmps-server", "1936", "--https-api", "127.0.0.1:443"][..], &files].concat()).unwrap();
        assert_eq!(tls.describe(), "; RTMPS 0.0.0.0:1936; HTTPS API 127.0.0.1:443");
        let files = tls.files.unwrap();
        assert_eq!((files.cert.to_str(), files.key.to_str()), (Some("c.pem"), Some("k.pem")));
    }

    #[test]
    fn grpc_tls_alone_needs_the_files() {
        let tls = load(&["--grpc-tls", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert!(tls.grpc && tls.any() && tls.files.is_some());
        assert_eq!(tls.describe(), "", "gRPC is on the startup line with its own listener");
        let e = load(&["--grpc-tls"]).unwrap_err();
        assert!(e.contains("--tls-cert") && e.contains("TLS listener"), "{e}");
    }

    #[test]
    fn missing_or_lone_files_name_the_flag() {
        let e = load(&["--https-server", "443"]).unwrap_err();
        assert!(e.contains("--tls-cert") && e.contains("STREAMGATE_TLS_CERT") && e.contains("TLS listener"), "{e}");
        let e = load(&["--https-server", "443", "--tls-cert", "c.pem"]).unwrap_err();
        assert!(e.contains("--tls-key") && e.contains("required with --tls-cert"), "{e}");
        let e = load(&["--https-server", "443", "--tls-key", "k.pem"]).unwrap_err();
        assert!(e.contains("--tls-cert") && e.contains("required with --tls-key"), "{e}");
        let e = load(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap_err();
        assert!(e.contains("without a TLS listener"), "{e}");
        let e = load(&["--rtmps-server", "nope", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap_err();
        assert!(e.contains("--rtmps-server") && e.contains("STREAMGATE_RTMPS_SERVER"), "{e}");
    }
}
