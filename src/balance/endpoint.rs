//! Origin listen endpoints as SRS reports them in heartbeats.
//!
//! Every form SRS 5 to 7 sends is accepted for every list: `PORT`, `IP:PORT`, `[IPv6]:PORT`,
//! `scheme://PORT`, `scheme://:PORT`, `scheme://IP:PORT` and `scheme://[IPv6]:PORT` (an SRS
//! with `listen 0.0.0.0:1935` reports the host part too). The host part is kept for display;
//! the dial address is always the origin's registered `ip`, since an origin reports its
//! listen address, not how to reach it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The transport an endpoint names, when it names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

/// One parsed listen endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The scheme before `://`, lowercased, when one was given (`tcp`, `udp`, ...).
    pub scheme: Option<String>,
    /// The host part, when one was given (`0.0.0.0` included).
    pub host: Option<IpAddr>,
    pub port: u16,
}

/// Why an endpoint string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("empty endpoint")]
    Empty,
    #[error("endpoint {0:?}: {1:?} is not a port number (1-65535)")]
    BadPort(String, String),
    #[error("endpoint {0:?}: {1:?} is not an IP address")]
    BadHost(String, String),
    #[error("endpoint {0:?}: {1:?} is not a scheme")]
    BadScheme(String, String),
}

impl Endpoint {
    /// The transport named by the scheme, if it names one.
    pub fn transport(&self) -> Option<Transport> {
        match self.scheme.as_deref() {
            Some("udp") => Some(Transport::Udp),
            Some("tcp") => Some(Transport::Tcp),
            _ => None,
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(raw: &str) -> Result<Self, EndpointError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(EndpointError::Empty);
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (Some(parse_scheme(raw, scheme)?), rest),
            None => (None, s),
        };
        let (host, port) = split_host_port(rest);
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(EndpointError::BadPort(raw.into(), port.into())),
        };
        let host = match host {
            None | Some("") => None,
            Some(h) => Some(h.parse().map_err(|_| EndpointError::BadHost(raw.into(), h.into()))?),
        };
        Ok(Endpoint { scheme, host, port })
    }
}

fn parse_scheme(raw: &str, scheme: &str) -> Result<String, EndpointError> {
    let ok =
        !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
    if ok { Ok(scheme.to_ascii_lowercase()) } else { Err(EndpointError::BadScheme(raw.into(), scheme.into())) }
}

/// Splits `host:port`, `[v6]:port` or `port`.
fn split_host_port(s: &str) -> (Option<&str>, &str) {
    if let Some((host, rest)) = s.strip_prefix('[').and_then(|v6| v6.split_once(']')) {
        return (Some(host), rest.strip_prefix(':').unwrap_or(rest));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => (Some(host), port),
        None => (None, s),
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        match self.host {
            Some(IpAddr::V6(h)) => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
            None if self.scheme.is_some() => write!(f, ":{}", self.port),
            None => write!(f, "{}", self.port),
        }
    }
}

/// Parses every entry of an endpoint list; the first bad one is the error.
pub fn parse_list(list: &[String]) -> Result<Vec<Endpoint>, EndpointError> {
    list.iter().map(|s| s.parse()).collect()
}

/// The endpoint to dial for a TCP protocol: the first not marked `udp://`.
pub fn first_tcp(list: &[Endpoint]) -> Option<&Endpoint> {
    list.iter().find(|e| e.transport() != Some(Transport::Udp))
}

/// The endpoint to use for a UDP protocol (WebRTC, SRT): the first `udp://` one, else the first.
pub fn first_udp(list: &[Endpoint]) -> Option<&Endpoint> {
    list.iter().find(|e| e.transport() == Some(Transport::Udp)).or_else(|| list.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_form_srs_sends() {
        let cases = [
            ("19351", None, None, 19351),
            ("127.0.0.1:19351", None, Some("127.0.0.1"), 19351),
            ("[::1]:1935", None, Some("::1"), 1935),
            ("udp://8000", Some("udp"), None, 8000),
            ("tcp://:1935", Some("tcp"), None, 1935),
            ("udp://0.0.0.0:10081", Some("udp"), Some("0.0.0.0"), 10081),
            ("TCP://192.168.3.10:1935", Some("tcp"), Some("192.168.3.10"), 1935),
            ("udp://[2001:db8::2]:8000", Some("udp"), Some("2001:db8::2"), 8000),
            (" 1935 ", None, None, 1935),
        ];
        for (s, scheme, host, port) in cases {
            let e = ep(s);
            assert_eq!(e.scheme.as_deref(), scheme, "{s}");
            assert_eq!(e.host, host.map(|h| h.parse().unwrap()), "{s}");
            assert_eq!(e.port, port, "{s}");
        }
    }

    #[test]
    fn bad_endpoints_say_why() {
        assert_eq!("".parse::<Endpoint>(), Err(EndpointError::Empty));
        for (s, want) in [
            ("abc", "not a port"),
            ("0", "not a port"),
            ("65536", "not a port"),
            ("udp://abc", "not a port"),
            ("tcp://host:1935", "not an IP"),
            ("a:b", "not a port"),
            ("://1935", "not a scheme"),
            ("[::1]", "not a port"),
        ] {
            let err = s.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.contains(want), "{s}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["1935", "127.0.0.1:1935", "[::1]:1935", "udp://:8000", "udp://0.0.0.0:8000"] {
            assert_eq!(ep(s).to_string(), s);
            assert_eq!(ep(&ep(s).to_string()), ep(s));
        }
    }

    #[test]
    fn protocol_choice() {
        let list = parse_list(&["tcp://0.0.0.0:8000".into(), "udp://0.0.0.0:8001".into()]).unwrap();
        assert_eq!(first_udp(&list).unwrap().port, 8001);
        assert_eq!(first_tcp(&list).unwrap().port, 8000);
        let list = parse_list(&["udp://9".into(), "10".into()]).unwrap();
        assert_eq!(first_tcp(&list).unwrap().port, 10);
        assert_eq!(first_udp(&parse_list(&["8000".into()]).unwrap()).unwrap().port, 8000);
    }
}
