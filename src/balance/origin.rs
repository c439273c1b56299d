//! Origin records and the registration request that creates them.
//!
//! A registration is the JSON body of `POST /api/v1/srs/register`, as SRS heartbeats send it.
//! Its fields are checked in a fixed order with the error texts SRS tooling knows (`empty ip`,
//! `empty server`, `empty service`, `empty pid`, `empty rtmp`); unknown fields such as SRS's
//! `summaries` are ignored. The `ip` must be an IP address and every endpoint must parse, so a
//! registration that could never be dialed is refused with the reason instead of failing at
//! play time.
//!
//! Every registration is bounded ([`MAX_FIELD_BYTES`], [`MAX_IP_BYTES`], [`MAX_ENDPOINT_BYTES`],
//! [`MAX_ENDPOINTS_PER_LIST`], [`MAX_ENDPOINTS`]), so one origin record costs at most a few KiB
//! whatever its 64 KiB body held; a registration over a bound is refused naming the field and
//! the limit. SRS sends one endpoint per protocol (two for WebRTC over UDP and TCP), far below
//! these limits.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use serde::Deserialize;

use super::endpoint::{self, Endpoint, EndpointError};

/// Longest `server`, `service`, `pid` and `device_id`, in bytes.
pub const MAX_FIELD_BYTES: usize = 128;
/// Longest `ip`, in bytes (an IPv6 address in text is at most 45).
pub const MAX_IP_BYTES: usize = 64;
/// Longest endpoint string, in bytes (`udp://[IPv6]:PORT` is at most 55).
pub const MAX_ENDPOINT_BYTES: usize = 64;
/// Most endpoints in one protocol's list (`rtmp`, `http`, `api`, `srt`, `rtc`).
pub const MAX_ENDPOINTS_PER_LIST: usize = 16;
/// Most endpoints in all lists together.
pub const MAX_ENDPOINTS: usize = 32;

/// An origin's identity, `<server>-<service>-<pid>` (a restarted SRS is a new origin).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginId(pub String);

impl std::fmt::Display for OriginId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The wire shape of a registration. Strings only: a JSON number where a string belongs is a
/// parse error.
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
    /// SRS's `summaries on`: only `data.system.load_1m` and `data.system.cpus` are read, and
    /// anything else in it (another SRS version's shape) is ignored, never refused.
    #[serde(default)]
    summaries: Option<serde_json::Value>,
}

/// The one-minute load average per CPU in hundredths from SRS's heartbeat `summaries`
/// (`None` when not reported or not numbers).
fn load_centi(summaries: &serde_json::Value) -> Option<u32> {
    let system = summaries.get("data")?.get("system")?;
    let (load, cpus) = (system.get("load_1m")?.as_f64()?, system.get("cpus")?.as_f64()?);
    if !(load.is_finite() && load >= 0.0 && cpus >= 1.0) {
        return None;
    }
    Some((load / cpus * 100.0).round().min(f64::from(u32::MAX)) as u32)
}

/// Why a registration was refused. The texts of the `Empty*` variants are those SRS tooling
/// expects.
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
    #[error("{field} is {len} bytes long, over the limit of {max} bytes")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("{list} has {count} endpoints, over the limit of {max} per protocol")]
    TooManyEndpoints { list: &'static str, count: usize, max: usize },
    #[error("{count} endpoints in all lists together, over the limit of {max}")]
    TooManyInAll { count: usize, max: usize },
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
    /// The origin's one-minute load average per CPU in hundredths, from the heartbeat's
    /// `summaries` (SRS sends them with `heartbeat { summaries on; }`); `None` without them.
    pub load_centi: Option<u32>,
}

impl Registration {
    /// Parses and validates a register body. An empty body is an empty object, so it fails
    /// with `empty ip`.
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
        let device_id = body.device_id.unwrap_or_default();
        let load_centi = body.summaries.as_ref().and_then(load_centi);
        check_len("ip", &ip, MAX_IP_BYTES)?;
        for (field, value) in [("server", &server), ("service", &service), ("pid", &pid), ("device_id", &device_id)] {
            check_len(field, value, MAX_FIELD_BYTES)?;
        }
        let lists =
            [("rtmp", Some(rtmp)), ("http", body.http), ("api", body.api), ("srt", body.srt), ("rtc", body.rtc)]
                .map(|(name, l)| (name, l.unwrap_or_default()));
        check_endpoint_counts(&lists)?;
        let ip = ip.parse().map_err(|_| RegisterError::BadIp(ip))?;
        let [rtmp, http, api, srt, rtc] = lists.map(|(name, l)| {
            endpoint::parse_list(&l).map_err(|source| RegisterError::BadEndpoint { list: name, source })
        });
        Ok(Registration {
            device_id,
            ip,
            server,
            service,
            pid,
            rtmp: rtmp?,
            http: http?,
            api: api?,
            srt: srt?,
            rtc: rtc?,
            load_centi,
        })
    }

    /// The identity `<server>-<service>-<pid>`.
    pub fn id(&self) -> OriginId {
        OriginId(format!("{}-{}-{}", self.server, self.service, self.pid))
    }

    /// The address an RTMP session dials (the registered ip and the first TCP `rtmp` port), which
    /// a probe dials to prove the origin; `None` when every `rtmp` endpoint is marked `udp://`.
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        endpoint::first_tcp(&self.rtmp).map(|e| SocketAddr::new(self.ip, e.port))
    }
}

/// How the proxy knows an origin is really there (see the registry's header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// A TCP connection to its RTMP address succeeded.
    Probed,
    /// The operator configured it (the default backend).
    Configured,
}

impl Proof {
    pub fn name(self) -> &'static str {
        match self {
            Proof::Probed => "probe",
            Proof::Configured => "configured",
        }
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), RegisterError> {
    if value.len() > max { Err(RegisterError::TooLong { field, len: value.len(), max }) } else { Ok(()) }
}

/// Bounds the endpoint lists before any is parsed: per list, per endpoint string, in all.
fn check_endpoint_counts(lists: &[(&'static str, Vec<String>)]) -> Result<(), RegisterError> {
    let mut total = 0;
    for (list, entries) in lists {
        if entries.len() > MAX_ENDPOINTS_PER_LIST {
            return Err(RegisterError::TooManyEndpoints { list, count: entries.len(), max: MAX_ENDPOINTS_PER_LIST });
        }
        if let Some(long) = entries.iter().find(|e| e.len() > MAX_ENDPOINT_BYTES) {
            let field = endpoint_field(list);
            return Err(RegisterError::TooLong { field, len: long.len(), max: MAX_ENDPOINT_BYTES });
        }
        total += entries.len();
    }
    if total > MAX_ENDPOINTS {
        return Err(RegisterError::TooManyInAll { count: total, max: MAX_ENDPOINTS });
    }
    Ok(())
}

fn endpoint_field(list: &str) -> &'static str {
    match list {
        "rtmp" => "an rtmp endpoint",
        "http" => "an http endpoint",
        "api" => "an api endpoint",
        "srt" => "an srt endpoint",
        _ => "an rtc endpoint",
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
    /// Whether, and how, it was proven; unproven origins take new streams only while no proven
    /// origin is alive.
    pub proof: Option<Proof>,
    /// Draining: no new streams; its pinned streams stay (System API).
    pub draining: bool,
    /// A dial to it was refused or timed out: until then its pins move and it takes new
    /// streams only when no other origin can.
    pub quarantined_until: Option<Instant>,
    /// Its last heartbeat reported a load over the registry's limit: it takes new streams only
    /// when every other candidate is overloaded too.
    pub overloaded: bool,
}

impl Origin {
    pub fn proven(&self) -> bool {
        self.proof.is_some()
    }

    /// Whether a failed dial put it in quarantine until after `now`.
    pub fn quarantined(&self, now: Instant) -> bool {
        self.quarantined_until.is_some_and(|until| now < until)
    }

    /// Whether its pinned streams stay on it: alive and not in quarantine (draining keeps them).
    pub fn keeps_pins(&self, now: Instant, ttl: std::time::Duration) -> bool {
        self.is_alive(now, ttl) && !self.quarantined(now)
    }

    /// Whether a new stream may go to it: alive and not draining (one in quarantine ranks
    /// last, see `pick::class`).
    pub fn takes_new_streams(&self, now: Instant, ttl: std::time::Duration) -> bool {
        self.is_alive(now, ttl) && !self.draining
    }

    /// Alive means heard from within `ttl` (strictly: at exactly `ttl` it is dead).
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
    fn load_per_cpu_from_srs_summaries() {
        let raw = include_str!("../../tests/data/heartbeats/srs7-with-summaries.http");
        let body = raw.split_once("\r\n\r\n").or_else(|| raw.split_once("\n\n")).unwrap().1;
        let r = Registration::from_json(body.trim().as_bytes()).unwrap();
        assert_eq!(r.load_centi, Some(129), "load_1m 2.58 on 2 CPUs");
        assert_eq!(Registration::from_json(CURL_EXAMPLE.as_bytes()).unwrap().load_centi, None);
        let odd = r#"{"ip":"1.2.3.4","server":"s","service":"v","pid":"1","rtmp":["1"],"summaries":{"data":{"system":{"load_1m":1,"cpus":0}}}}"#;
        assert_eq!(Registration::from_json(odd.as_bytes()).unwrap().load_centi, None, "0 CPUs is no answer");
        let junk = r#"{"ip":"1.2.3.4","server":"s","service":"v","pid":"1","rtmp":["1"],"summaries":{"data":{"system":{"load_1m":"x"}}}}"#;
        assert_eq!(Registration::from_json(junk.as_bytes()).unwrap().load_centi, None, "another shape is ignored");
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
