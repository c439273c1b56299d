//! Origin records and the registration request that creates them (proxy-protocol.md).
//!
//! A registration is the JSON body of `POST /api/v1/srs/register`. Its fields are checked in
//! the SRS proxy's order with its error texts (`empty ip`, `empty server`, `empty service`,
//! `empty pid`, `empty rtmp`); unknown fields such as SRS's `summaries` are ignored. Unlike the
//! SRS proxy, the `ip` must be an IP address and every endpoint must parse, so a registration
//! that could never be dialed is refused with the reason instead of failing at play time.

use std::net::IpAddr;
use std::time::Instant;

use serde::Deserialize;

use super::endpoint::{self, Endpoint, EndpointError};

/// An origin's identity, `<server>-<service>-<pid>` as in the SRS proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginId(pub String);

impl std::fmt::Display for OriginId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The wire shape of a registration. Strings only: a JSON number where a string belongs is a
/// parse error, as in the SRS proxy.
#[derive(Debug, Default, Deserialize)]
struct RegisterBody {
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    pid: Option<String>,
    #[serde(default)]
    rtmp: Option<Vec<String>>,
    #[serde(default)]
    http: Option<Vec<String>>,
    #[serde(default)]
    api: Option<Vec<String>>,
    #[serde(default)]
    srt: Option<Vec<String>>,
    #[serde(default)]
    rtc: Option<Vec<String>>,
}

/// Why a registration was refused. The texts of the `Empty*` variants are the SRS proxy's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("parse body: {0}")]
    Parse(String),
    #[error("empty ip")]
    EmptyIp,
    #[error("empty server")]
    EmptyServer,
    #[error("empty service")]
    EmptyService,
    #[error("empty pid")]
    EmptyPid,
    #[error("empty rtmp")]
    EmptyRtmp,
    #[error("invalid ip {0:?}: not an IP address")]
    BadIp(String),
    #[error("invalid {list} endpoint: {source}")]
    BadEndpoint {
        list: &'static str,
        #[source]
        source: EndpointError,
    },
}

/// A validated registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub device_id: String,
    pub ip: IpAddr,
    pub server: String,
    pub service: String,
    pub pid: String,
    pub rtmp: Vec<Endpoint>,
    pub http: Vec<Endpoint>,
    pub api: Vec<Endpoint>,
    pub srt: Vec<Endpoint>,
    pub rtc: Vec<Endpoint>,
}

impl Registration {
    /// Parses and validates a register body. An empty body is an empty object, so it fails
    /// with `empty ip` like in the SRS proxy.
    pub fn from_json(body: &[u8]) -> Result<Self, RegisterError> {
        let body: RegisterBody = if body.iter().all(u8::is_ascii_whitespace) {
            RegisterBody::default()
        } else {
            serde_json::from_slice(body).map_err(|e| RegisterError::Parse(e.to_string()))?
        };
        let required = |v: Option<String>, err| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).ok_or(err);
        let ip = required(body.ip, RegisterError::EmptyIp)?;
        let server = required(body.server, RegisterError::EmptyServer)?;
        let service = required(body.service, RegisterError::EmptyService)?;
        let pid = required(body.pid, RegisterError::EmptyPid)?;
        let rtmp = body.rtmp.filter(|l| !l.is_empty()).ok_or(RegisterError::EmptyRtmp)?;
        let ip = ip.parse().map_err(|_| RegisterError::BadIp(ip))?;
        let list = |name: &'static str, l: Option<Vec<String>>| {
            endpoint::parse_list(&l.unwrap_or_default())
                .map_err(|source| RegisterError::BadEndpoint { list: name, source })
        };
        Ok(Registration {
            device_id: body.device_id.unwrap_or_default(),
            ip,
            server,
            service,
            pid,
            rtmp: list("rtmp", Some(rtmp))?,
            http: list("http", body.http)?,
            api: list("api", body.api)?,
            srt: list("srt", body.srt)?,
            rtc: list("rtc", body.rtc)?,
        })
    }

    /// The identity `<server>-<service>-<pid>`.
    pub fn id(&self) -> OriginId {
        OriginId(format!("{}-{}-{}", self.server, self.service, self.pid))
    }
}

/// A registered origin as the registry keeps it.
#[derive(Clone, Debug)]
pub struct Origin {
    pub id: OriginId,
    /// [`super::pick::id_hash`] of the id, for picking.
    pub id_hash: u64,
    pub registration: Registration,
    /// When it first registered with this id.
    pub first_seen: Instant,
    /// Its last heartbeat.
    pub last_seen: Instant,
}

impl Origin {
    /// Alive means heard from within `ttl` (strictly, as in the SRS proxy).
    pub fn is_alive(&self, now: Instant, ttl: std::time::Duration) -> bool {
        now.saturating_duration_since(self.last_seen) < ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURL_EXAMPLE: &str = include_str!("../../tests/data/register/curl-example.json");

    #[test]
    fn curl_example_of_the_protocol() {
        let r = Registration::from_json(CURL_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(r.id().0, "vid-46p14mm-z2s3w865-42583");
        assert_eq!(r.device_id, "origin2");
        assert_eq!(r.rtmp[0].port, 19352);
        assert_eq!(r.rtc[0].to_string(), "udp://0.0.0.0:8001");
    }

    #[test]
    fn missing_fields_in_srs_order() {
        let cases = [
            ("", "empty ip"),
            ("{}", "empty ip"),
            (r#"{"ip":""}"#, "empty ip"),
            (r#"{"ip":"1.2.3.4"}"#, "empty server"),
            (r#"{"ip":"1.2.3.4","server":"s"}"#, "empty service"),
            (r#"{"ip":"1.2.3.4","server":"s","service":"v"}"#, "empty pid"),
            (r#"{"ip":"1.2.3.4","server":"s","service":"v","pid":"1"}"#, "empty rtmp"),
            (r#"{"ip":"1.2.3.4","server":"s","service":"v","pid":"1","rtmp":[]}"#, "empty rtmp"),
        ];
        for (body, want) in cases {
            let err = Registration::from_json(body.as_bytes()).unwrap_err();
            assert_eq!(err.to_string(), want, "{body}");
        }
    }

    #[test]
    fn wrong_types_and_bad_values() {
        let pid_number = r#"{"ip":"1.2.3.4","server":"s","service":"v","pid":42583,"rtmp":["1"]}"#;
        let err = Registration::from_json(pid_number.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("parse body: invalid type: integer"), "{err}");
        assert!(Registration::from_json(b"not json").unwrap_err().to_string().starts_with("parse body"));
        assert!(Registration::from_json(b"[1,2]").unwrap_err().to_string().starts_with("parse body"));
        let bad_ip = r#"{"ip":"origin.local","server":"s","service":"v","pid":"1","rtmp":["1"]}"#;
        assert!(Registration::from_json(bad_ip.as_bytes()).unwrap_err().to_string().contains("not an IP"));
        let bad_ep = r#"{"ip":"1.2.3.4","server":"s","service":"v","pid":"1","rtmp":["1"],"rtc":["udp://x"]}"#;
        let err = Registration::from_json(bad_ep.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("invalid rtc endpoint"), "{err}");
    }
}
