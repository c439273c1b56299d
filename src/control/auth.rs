//! Who may use the System API and gRPC.
//!
//! | what | auth off (default) | auth on (`--http-api-auth-enabled on`) |
//! |---|---|---|
//! | `POST /api/v1/srs/register` | peers in `--register-allow` (default: loopback only) | the token, from peers in `--register-allow` (default: any peer) |
//! | `/api/v1/origins`, `/api/v1/streams`, `/api/v1/shards` | open | the token |
//! | `/metrics` | open, or the metrics token when `--metrics-token` is set | the token or the metrics token |
//! | gRPC `marchproxy.ModuleService`, reflection | open | `authorization: Bearer <token>` metadata |
//! | `/api/v1/versions`, gRPC `grpc.health.v1` | open | open |
//!
//! `/api/v1/versions` stays open because it tells only the name and version (as in the SRS
//! proxy, whose tools poll it); `grpc.health.v1` stays open because load balancers and
//! orchestrators probe it without credentials, and it tells only SERVING or NOT_SERVING.
//!
//! Tokens are read strictly: exactly `Bearer`, one space and the token, nothing else (a second
//! space or whitespace inside is refused, not trimmed), compared in constant time. A request
//! with more than one `Authorization` header (or gRPC call with more than one `authorization`
//! value) is refused whatever they hold, so no two components can disagree on which counts.
//! Whitespace at the very end of an HTTP/1.1 header line is the protocol's optional whitespace,
//! not part of the value (RFC 9110 §5.5), and never reaches these checks; HTTP/2 metadata keeps
//! it, and there it is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::codec::http::{Request, Response};
use crate::config::{CidrList, Config};

use super::http_server::error_response;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Open to everyone: `/api/v1/versions`, unknown routes.
    Nothing,
    /// Registration: an allowed peer, and the token when auth is on.
    Register,
    /// The views: the token when auth is on.
    Admin,
    /// `/metrics`: the token or the metrics token, when either is set.
    Metrics,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0} Authorization headers; send exactly one")]
    SeveralHeaders(usize),
    #[error("Unauthorized: no Authorization header; send \"Authorization: Bearer <token>\"")]
    Missing,
    #[error("Unauthorized: malformed Authorization; send exactly \"Bearer <token>\" (one space, no other whitespace)")]
    Malformed,
    #[error("Unauthorized: wrong bearer token")]
    Wrong,
    #[error("registration from {peer} is not allowed: not in --register-allow ({allowed})")]
    PeerNotAllowed { peer: std::net::IpAddr, allowed: String },
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::SeveralHeaders(_) => 400,
            AuthError::Missing | AuthError::Malformed | AuthError::Wrong => 401,
            AuthError::PeerNotAllowed { .. } => 403,
        }
    }

    /// The HTTP answer: a JSON error with the reason; 401 carries `WWW-Authenticate: Bearer`.
    pub fn response(&self) -> Response {
        let resp = error_response(self.status(), &self.to_string());
        if self.status() == 401 { resp.with_header("WWW-Authenticate", "Bearer") } else { resp }
    }
}

/// Checks one System API request against `need`.
pub fn check_http(config: &Config, req: &Request, peer: SocketAddr, need: Need) -> Result<(), AuthError> {
    let mut values = req.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("authorization")).map(|(_, v)| v);
    let given = values.next().map(Vec::as_slice);
    let more = values.count();
    if more > 0 {
        return Err(AuthError::SeveralHeaders(more + 1));
    }
    let register = config.register_token.as_deref();
    match need {
        Need::Nothing => Ok(()),
        Need::Register => {
            check_peer(config.register_allow.as_ref(), peer)?;
            require(given, &[register])
        }
        Need::Admin => require(given, &[register]),
        Need::Metrics => require(given, &[register, config.metrics_token.as_deref()]),
    }
}

fn check_peer(allow: Option<&CidrList>, peer: SocketAddr) -> Result<(), AuthError> {
    match allow {
        Some(list) if !list.contains(peer.ip()) => {
            Err(AuthError::PeerNotAllowed { peer: peer.ip(), allowed: list.to_string() })
        }
        _ => Ok(()),
    }
}

/// Requires `given` to carry one of the `accepted` tokens that are set; nothing when none is.
fn require(given: Option<&[u8]>, accepted: &[Option<&str>]) -> Result<(), AuthError> {
    let mut accepted = accepted.iter().flatten().peekable();
    if accepted.peek().is_none() {
        return Ok(());
    }
    let token = bearer_token(given.ok_or(AuthError::Missing)?)?;
    // Every accepted token is compared, so the time taken does not tell which one was close.
    let matched = accepted.fold(false, |ok, expected| ok | constant_time_eq(token, expected.as_bytes()));
    if matched { Ok(()) } else { Err(AuthError::Wrong) }
}

/// The token of a `Bearer <token>` value: the word `Bearer`, exactly one space, then a
/// non-empty token without whitespace or control characters.
pub fn bearer_token(value: &[u8]) -> Result<&[u8], AuthError> {
    let token = value.strip_prefix(b"Bearer ").ok_or(AuthError::Malformed)?;
    if token.is_empty() || token.iter().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// Compares in time that depends only on the lengths, never on where the first difference is.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ e);
    }
    diff == 0 && !expected.is_empty()
}

/// The gRPC check, a tonic interceptor in front of ModuleService and reflection: with a token
/// set, a call needs exactly one `authorization: Bearer <token>` value, else UNAUTHENTICATED
/// with the reason.
#[derive(Clone, Debug, Default)]
pub struct GrpcAuth {
    token: Option<Arc<str>>,
}

impl GrpcAuth {
    pub fn new(config: &Config) -> Self {
        GrpcAuth { token: config.register_token.as_deref().map(Arc::from) }
    }

    /// Whether `metadata` may call: the same rules as the HTTP views.
    pub fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), AuthError> {
        let Some(token) = &self.token else { return Ok(()) };
        let mut values = metadata.get_all("authorization").iter();
        let given = values.next().map(|v| v.as_bytes());
        let more = values.count();
        if more > 0 {
            return Err(AuthError::SeveralHeaders(more + 1));
        }
        require(given, &[Some(token)])
    }
}

impl tonic::service::Interceptor for GrpcAuth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match self.check(req.metadata()) {
            Ok(()) => Ok(req),
            Err(e) => Err(tonic::Status::unauthenticated(e.to_string())),
        }
    }
}

/// The startup line about registration: a warning whenever no token is needed.
pub fn log_policy(config: &Config) {
    let views = "the views and /metrics answer anyone reaching the System API";
    match (&config.register_token, &config.register_allow) {
        (None, Some(allow)) if allow.is_loopback_only() => log::warn!(
            "registration is open: auth is off, so any local process can register origins without a token \
             (only loopback peers, {allow}; widen with --register-allow) and {views}; \
             set --http-api-auth-enabled on to require a token"
        ),
        (None, Some(allow)) => log::warn!(
            "registration is open: auth is off, so anyone in {allow} can register origins without a token and {views}; \
             set --http-api-auth-enabled on to require a token"
        ),
        (None, None) => log::warn!("registration is open to every peer without a token"),
        (Some(_), Some(allow)) => log::info!("registration needs the bearer token and a peer in {allow}"),
        (Some(_), None) => log::info!("registration needs the bearer token (any peer: no --register-allow)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_are_read_strictly() {
        assert_eq!(bearer_token(b"Bearer s3cret"), Ok(&b"s3cret"[..]));
        for bad in [
            &b"Bearer  s3cret"[..],
            b"Bearer s3cret ",
            b"Bearer s3 cret",
            b"Bearer s3cret\t",
            b"bearer s3cret",
            b"Basic s3cret",
            b"Bearer ",
            b"Bearer",
            b"s3cret",
            b" Bearer s3cret",
        ] {
            assert_eq!(bearer_token(bad), Err(AuthError::Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cretX", b"s3cret"));
        assert!(!constant_time_eq(b"", b""));
        assert_eq!(require(Some(b"Bearer m"), &[Some("t"), Some("m")]), Ok(()));
        assert_eq!(require(Some(b"Bearer x"), &[Some("t"), None]), Err(AuthError::Wrong));
        assert_eq!(require(None, &[Some("t")]), Err(AuthError::Missing));
        assert_eq!(require(None, &[None, None]), Ok(()), "nothing set: open");
    }

    #[test]
    fn grpc_metadata() {
        let auth = GrpcAuth { token: Some(Arc::from("t0k")) };
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(auth.check(&md), Err(AuthError::Missing));
        md.insert("authorization", "Bearer t0k".parse().unwrap());
        assert_eq!(auth.check(&md), Ok(()));
        md.append("authorization", "Bearer t0k".parse().unwrap());
        assert_eq!(auth.check(&md), Err(AuthError::SeveralHeaders(2)));
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("authorization", "Bearer t0k ".parse().unwrap());
        assert_eq!(auth.check(&md), Err(AuthError::Malformed));
        assert_eq!(GrpcAuth::default().check(&tonic::metadata::MetadataMap::new()), Ok(()));
    }
}
