//! Value types of the command line: listen addresses, Go-style durations, on/off switches,
//! CPU lists and network lists. Each parses with `FromStr` and fails with a message that says what was expected,
//! so clap can name the flag and the environment variable around it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// A listen address: `PORT` or `:PORT` (all IPv4 interfaces), `IP:PORT` or `[IPv6]:PORT`.
/// Port 0 asks for any free port (the startup line says which one each listener got).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bare = s.strip_prefix(':').unwrap_or(s);
        if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
            let port = parse_listen_port(bare)?;
            return Ok(Self(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)));
        }
        if let Some(port) = s.strip_prefix("localhost:") {
            return Ok(Self(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), parse_listen_port(port)?)));
        }
        let addr: SocketAddr =
            s.parse().map_err(|_| format!("expected PORT, :PORT, IP:PORT or [IPv6]:PORT, got {s:?}"))?;
        Ok(Self(addr))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses a port to listen on: 0..=65535, 0 for any free one.
fn parse_listen_port(s: &str) -> Result<u16, String> {
    s.trim().parse::<u16>().map_err(|_| format!("{s:?} is not a port number (0-65535)"))
}

/// Parses a TCP/UDP port number in 1..=65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) => Err("port 0 is not a fixed port; give the port to listen on".into()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("{s:?} is not a port number (1-65535)")),
    }
}

/// A duration written the Go way (`300s`, `1m30s`, `1.5h`, `250ms`), as SRS deployments write
/// their `PROXY_*` variables; a bare number is taken as seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_go_duration(s.trim())
            .map(GoDuration)
            .ok_or_else(|| format!("{s:?} is not a duration (write it like 300s, 1m30s, 500ms or 2h)"))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// An on/off switch: `on`/`off` (as SRS configurations write them), `true`/`false`,
/// `yes`/`no`, `1`/`0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Switch(pub bool);

impl FromStr for Switch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(Switch(true)),
            "off" | "false" | "no" | "0" | "" => Ok(Switch(false)),
            other => Err(format!("{other:?} is not on or off")),
        }
    }
}

/// A CPU list such as `0,2,4` or `0-3,6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl FromStr for CpuList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("{part:?} is not a CPU number or range (write 0,2,4 or 0-3)");
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                    if a > b || b - a > 4096 {
                        return Err(bad());
                    }
                    cpus.extend(a..=b);
                }
                None => cpus.push(part.parse().map_err(|_| bad())?),
            }
        }
        if cpus.is_empty() {
            return Err("the CPU list is empty".into());
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList(cpus))
    }
}

/// A network, `IP/PREFIX` or a bare IP (one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a
    /// dual-stack listener sees an IPv4 peer) is compared as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let (whole, bits) = (usize::from(prefix / 8), prefix % 8);
    if net[..whole] != ip[..whole] {
        return false;
    }
    bits == 0 || (net[whole] ^ ip[whole]) & (0xffu8 << (8 - bits)) == 0
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not a network (write it like 10.0.0.0/8, 192.0.2.7 or fd00::/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().map_err(|_| bad())?, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(format!("{s:?}: a prefix of /{prefix} is longer than the address ({max} bits)"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A comma-separated list of networks, such as `127.0.0.1,10.0.0.0/8,fd00::/8`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

impl FromStr for CidrList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let list =
            s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::parse).collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err("the network list is empty".into());
        }
        Ok(CidrList(list))
    }
}

impl CidrList {
    /// The loopback networks, `127.0.0.0/8` and `::1/128`.
    pub fn loopback() -> CidrList {
        CidrList(vec![
            Cidr { addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), prefix: 8 },
            Cidr { addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), prefix: 128 },
        ])
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// Whether every address it holds is a loopback address.
    pub fn is_loopback_only(&self) -> bool {
        self.0.iter().all(|c| match c.addr {
            IpAddr::V4(a) => a.is_loopback() && c.prefix >= 8,
            IpAddr::V6(a) => a.is_loopback() && c.prefix == 128,
        })
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Cidr::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let list: CidrList = "127.0.0.1, 10.0.0.0/8,fd00::/8,192.0.2.128/25".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(list.contains(ip("127.0.0.1")));
        assert!(!list.contains(ip("127.0.0.2")), "a bare IP is one address");
        assert!(list.contains(ip("10.255.0.1")));
        assert!(list.contains(ip("::ffff:10.1.2.3")), "an IPv4-mapped peer is its IPv4 address");
        assert!(list.contains(ip("fd12::1")));
        assert!(!list.contains(ip("fe80::1")));
        assert!(list.contains(ip("192.0.2.200")) && !list.contains(ip("192.0.2.127")));
        assert!(CidrList::loopback().contains(ip("127.3.4.5")) && CidrList::loopback().contains(ip("::1")));
        assert!(CidrList::loopback().is_loopback_only() && !list.is_loopback_only());
        let any: CidrList = "0.0.0.0/0,::/0".parse().unwrap();
        assert!(any.contains(ip("203.0.113.9")) && any.contains(ip("2001:db8::1")));
        for bad in ["", ",", "10.0.0.0/33", "::/129", "host", "10.0.0.0/x", "10.0.0/8"] {
            assert!(bad.parse::<CidrList>().is_err(), "{bad:?} should not parse");
        }
        assert_eq!(list.to_string(), "127.0.0.1/32, 10.0.0.0/8, fd00::/8, 192.0.2.128/25");
    }

    fn listen(s: &str) -> Result<SocketAddr, String> {
        s.parse::<ListenAddr>().map(|l| l.0)
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen("11935").unwrap(), "0.0.0.0:11935".parse().unwrap());
        assert_eq!(listen(":1935").unwrap(), "0.0.0.0:1935".parse().unwrap());
        assert_eq!(listen("127.0.0.1:80").unwrap(), "127.0.0.1:80".parse().unwrap());
        assert_eq!(listen("[::1]:8080").unwrap(), "[::1]:8080".parse().unwrap());
        assert_eq!(listen("localhost:9").unwrap(), "127.0.0.1:9".parse().unwrap());
        assert_eq!(listen("0").unwrap(), "0.0.0.0:0".parse().unwrap(), "any free port");
        assert_eq!(listen("127.0.0.1:0").unwrap().port(), 0);
        assert!(listen("65536").is_err());
        assert!(listen("70000").is_err());
        assert!(listen("abc").unwrap_err().contains("expected PORT"));
        assert!(listen("1.2.3.4").is_err());
        assert!(listen("").is_err());
    }

    #[test]
    fn go_durations() {
        let d = |s: &str| s.parse::<GoDuration>().map(|d| d.0);
        assert_eq!(d("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(d("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(d("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(d("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(d("20").unwrap(), Duration::from_secs(20));
        assert_eq!(d("0").unwrap(), Duration::ZERO);
        for bad in ["", "s", "5x", "-1s", "1..2s", "abc", "-3"] {
            assert!(d(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn switches() {
        for on in ["on", "ON", "true", "1", "yes"] {
            assert!(on.parse::<Switch>().unwrap().0);
        }
        for off in ["off", "false", "0", "no", ""] {
            assert!(!off.parse::<Switch>().unwrap().0);
        }
        assert!("maybe".parse::<Switch>().is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!("0,2,4".parse::<CpuList>().unwrap().0, vec![0, 2, 4]);
        assert_eq!("3-5,0,4".parse::<CpuList>().unwrap().0, vec![0, 3, 4, 5]);
        for bad in ["", "a", "3-1", "1-", ",", "0-999999"] {
            assert!(bad.parse::<CpuList>().is_err(), "{bad:?} should not parse");
        }
    }
}
