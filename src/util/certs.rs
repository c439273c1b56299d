//! The TLS certificate and key of `--tls-cert`/`--tls-key`, loaded into rustls server
//! configurations and replaced on SIGHUP ([`Certs::reload`]). Shared by the shards' TLS
//! listeners (`crate::shard::tls`) and gRPC over TLS on the control thread
//! (`crate::control::grpc_listener`), so it lives below both.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;

use crate::config::tls::TlsFiles;

/// A client must finish its TLS handshake within this long after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot load --tls-cert {}: {reason}", path.display())]
    Cert { path: PathBuf, reason: String },
    #[error("cannot load --tls-key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("--tls-cert {} with --tls-key {} is not a usable certificate: {reason}", cert.display(), key.display())]
    Unusable { cert: PathBuf, key: PathBuf, reason: String },
}

/// The TLS listeners' certificate, shared by every shard and the gRPC server, and replaced
/// on reload.
#[derive(Debug)]
pub struct Certs {
    files: TlsFiles,
    current: RwLock<Configs>,
}

/// One loaded certificate as each kind of listener uses it.
#[derive(Clone, Debug)]
struct Configs {
    /// RTMPS, HTTPS stream, HTTPS API: no ALPN (the protocol is the listener's).
    shard: Arc<ServerConfig>,
    /// gRPC: ALPN `h2`, which gRPC clients (grpcio, grpc-go) insist on.
    grpc: Arc<ServerConfig>,
}

impl Configs {
    fn load(files: &TlsFiles) -> Result<Configs, CertError> {
        let shard = server_config(files)?;
        let mut grpc = ServerConfig::clone(&shard);
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Configs { shard: Arc::new(shard), grpc: Arc::new(grpc) })
    }
}

impl Certs {
    /// Loads the certificate chain and key of `files`.
    pub fn load(files: &TlsFiles) -> Result<Certs, CertError> {
        Ok(Certs { current: RwLock::new(Configs::load(files)?), files: files.clone() })
    }

    /// Reads the files again; on success new handshakes use them, on failure the old
    /// certificate stays. Returns the error for the caller to log.
    pub fn reload(&self) -> Result<(), CertError> {
        let configs = Configs::load(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = configs;
        Ok(())
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).shard.clone()
    }

    /// The configuration new gRPC handshakes use (the same certificate, ALPN `h2`).
    pub fn current_grpc(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).grpc.clone()
    }
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, CertError> {
    let cert_error = |reason: String| CertError::Cert { path: files.cert.clone(), reason };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| CertError::Key { path: files.key.clone(), reason: e.to_string() })?;
    let unusable = |e: rustls::Error| CertError::Unusable {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    };
    // ring, not aws-lc-rs: no cmake and a shorter build. rustls 0.23.48 deprecates it for
    // having no post-quantum key exchange; X25519, P-256 and P-384 are what it offers.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(unusable)?;
    Ok(config)
}
