//! The two things the WebRTC proxy needs from SDP (RFC 8866) offers and answers (sans-io).
//!
//! WHIP/WHEP signaling passes through the proxy as an HTTP exchange: the client's offer goes to
//! the origin unchanged and the origin's answer comes back. On the way the proxy
//!
//! - reads the ICE credentials of both ([`ice_credentials`]): the client's connectivity checks
//!   will carry `USERNAME = "<answer ufrag>:<offer ufrag>"`, which is how the media port later
//!   recognises the session (see [`super::stun`]);
//! - points the answer's host candidates at itself ([`rewrite_host_candidates`]), so that the
//!   client sends its media to the proxy's UDP port instead of the origin's.
//!
//! Nothing else is parsed: everything not named here passes through byte for byte. Legacy
//! JSON envelopes (`{"sdp": "..."}`) are unwrapped by the caller.

use std::fmt::Write as _;
use std::net::IpAddr;

/// ICE username fragment and password of one side (RFC 8839 §5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// `a=ice-ufrag:` value.
    pub ufrag: String,
    /// `a=ice-pwd:` value.
    pub pwd: String,
}

/// Lines of `sdp` without their line endings (CRLF or a bare LF).
fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// The first non-empty value of an `a=<name>:` line, up to the first whitespace.
fn first_attribute<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
    lines(sdp).filter_map(|l| l.strip_prefix(prefix)).find_map(|v| v.split_ascii_whitespace().next())
}

/// The ICE credentials of an offer or answer: the first `a=ice-ufrag:` and the first
/// `a=ice-pwd:`, wherever they are (session level, or the first media section; with BUNDLE
/// every section repeats the same pair). CRLF and bare-LF line endings are both accepted, and
/// the value is the text up to the first whitespace, found only at the start of a line.
///
/// `None` unless both are present and non-empty: a session without them cannot be keyed.
pub fn ice_credentials(sdp: &str) -> Option<IceCredentials> {
    let ufrag = first_attribute(sdp, "a=ice-ufrag:")?;
    let pwd = first_attribute(sdp, "a=ice-pwd:")?;
    Some(IceCredentials { ufrag: ufrag.to_owned(), pwd: pwd.to_owned() })
}

/// Byte ranges of the space-separated tokens of `line`.
fn token_spans(line: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    line.split(' ').filter_map(move |tok| {
        let span = (start, start + tok.len());
        start += tok.len() + 1;
        (!tok.is_empty()).then_some(span)
    })
}

/// A UDP host candidate line cut around its address and port.
struct HostCandidate<'a> {
    /// `a=candidate:<foundation> <component> <transport> <priority> `.
    head: &'a str,
    address: &'a str,
    /// The separator between address and port (normally one space).
    between: &'a str,
    port: u16,
    /// ` typ host` and whatever follows, without the line ending.
    tail: &'a str,
}

/// `line` cut around its address and port, if it is a UDP host candidate.
///
/// RFC 8839 §5.1: `a=candidate:<foundation> <component> <transport> <priority> <address>
/// <port> typ <type> [raddr .. rport ..] *(<name> <value>)`.
fn udp_host_candidate(line: &str) -> Option<HostCandidate<'_>> {
    if !line.starts_with("a=candidate:") {
        return None;
    }
    let spans: Vec<(usize, usize)> = token_spans(line).take(8).collect();
    let text = |i: usize| spans.get(i).and_then(|&(s, e)| line.get(s..e));
    let is_udp_host = text(2)?.eq_ignore_ascii_case("udp")
        && text(6)?.eq_ignore_ascii_case("typ")
        && text(7)?.eq_ignore_ascii_case("host");
    if !is_udp_host {
        return None;
    }
    let (&(addr_start, addr_end), &(port_start, port_end)) = (spans.get(4)?, spans.get(5)?);
    Some(HostCandidate {
        head: line.get(..addr_start)?,
        address: line.get(addr_start..addr_end)?,
        between: line.get(addr_end..port_start)?,
        port: text(5)?.parse().ok()?,
        tail: line.get(port_end..)?,
    })
}

/// Points the UDP host candidates of an origin's answer at the proxy.
///
/// Rule: on every `a=candidate:` line whose transport is `udp` (any case), whose type is
/// `host`, and whose port is one of `origin_ports` (the origin's registered RTC ports), the
/// port becomes `new_port` and, when `new_ip` is given, the connection address becomes
/// `new_ip`. Everything else is preserved byte for byte, line endings included:
///
/// - `tcp` candidates: the proxy relays UDP only. They keep naming the origin, so a client
///   that can reach the origin directly over TCP may bypass the proxy (pointing them at the
///   proxy's UDP port could never work);
/// - `srflx`/`relay` candidates, including their `raddr`/`rport`;
/// - `m=` ports and `c=` lines (with ICE, candidates decide where media goes; SRS answers carry
///   `m=... 9` and `c=IN IP4 0.0.0.0` placeholders anyway);
/// - candidates on other ports (another origin's, or the client's own in an offer).
///
/// Whole tokens only are matched (no hit on port `18000` when rewriting `8000`), the port is
/// written bare, and the address can be replaced too (origins often advertise internal IPs).
pub fn rewrite_host_candidates(sdp: &str, origin_ports: &[u16], new_port: u16, new_ip: Option<IpAddr>) -> String {
    let mut out = String::with_capacity(sdp.len() + 16);
    for raw in sdp.split_inclusive('\n') {
        let line = raw.trim_end_matches(['\r', '\n']);
        let ending = raw.get(line.len()..).unwrap_or_default();
        match udp_host_candidate(line) {
            Some(c) if origin_ports.contains(&c.port) => {
                out.push_str(c.head);
                match new_ip {
                    Some(ip) => {
                        let _ = write!(out, "{ip}");
                    }
                    None => out.push_str(c.address),
                }
                let _ = write!(out, "{}{new_port}{}{ending}", c.between, c.tail);
            }
            _ => out.push_str(raw),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// An SRS 7 answer to a WHIP publish: ICE-lite, BUNDLE, UDP and TCP host candidates on the
    /// RTC port 8000 in both media sections.
    const SRS_ANSWER: &str = "v=0\r\n\
        o=SRS/7.0.18(Hang) 30452224 2 IN IP4 0.0.0.0\r\n\
        s=SRSPublishSession\r\n\
        t=0 0\r\n\
        a=ice-lite\r\n\
        a=group:BUNDLE 0 1\r\n\
        a=msid-semantic: WMS live/livestream\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        c=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:8b4f6k1r\r\n\
        a=ice-pwd:4x0kq0yd1m19b8r8o4c15i91m19r5g00\r\n\
        a=fingerprint:sha-256 3B:5A:93:8E:C1:1F:0B:6C:2A:77:D4:0E:5D:9B:18:35:70:AC:2F:E8:66:41:0D:B9:77:52:3E:1C:8A:F0:44:D2\r\n\
        a=setup:passive\r\n\
        a=mid:0\r\n\
        a=recvonly\r\n\
        a=rtcp-mux\r\n\
        a=rtcp-rsize\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=candidate:0 1 udp 2130706431 192.168.1.10 8000 typ host generation 0\r\n\
        a=candidate:1 1 tcp 2130706431 192.168.1.10 8000 typ host tcptype passive generation 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 106\r\n\
        c=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:8b4f6k1r\r\n\
        a=ice-pwd:4x0kq0yd1m19b8r8o4c15i91m19r5g00\r\n\
        a=fingerprint:sha-256 3B:5A:93:8E:C1:1F:0B:6C:2A:77:D4:0E:5D:9B:18:35:70:AC:2F:E8:66:41:0D:B9:77:52:3E:1C:8A:F0:44:D2\r\n\
        a=setup:passive\r\n\
        a=mid:1\r\n\
        a=recvonly\r\n\
        a=rtcp-mux\r\n\
        a=rtcp-rsize\r\n\
        a=rtpmap:106 H264/90000\r\n\
        a=rtcp-fb:106 nack\r\n\
        a=rtcp-fb:106 nack pli\r\n\
        a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=candidate:0 1 udp 2130706431 192.168.1.10 8000 typ host generation 0\r\n\
        a=candidate:1 1 tcp 2130706431 192.168.1.10 8000 typ host tcptype passive generation 0\r\n";

    /// An aiortc offer (sendrecv, credentials at media level after the candidates, a host and a
    /// srflx candidate per section, `a=end-of-candidates`).
    const AIORTC_OFFER: &str = "v=0\r\n\
        o=- 3916052826 3916052826 IN IP4 0.0.0.0\r\n\
        s=-\r\n\
        t=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        a=msid-semantic:WMS *\r\n\
        m=audio 50036 UDP/TLS/RTP/SAVPF 96 0 8\r\n\
        c=IN IP4 192.168.1.20\r\n\
        a=sendrecv\r\n\
        a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=mid:0\r\n\
        a=msid:9e1f6e4c-7d0b-4d3f-9a53-5f0b2f0cbd54 2b1c5a1e-3c3e-4a57-8f0c-6a1b8c9d0e1f\r\n\
        a=rtcp:9 IN IP4 0.0.0.0\r\n\
        a=rtcp-mux\r\n\
        a=ssrc:1459127431 cname:a1b2c3d4-e5f6-4789-abcd-ef0123456789\r\n\
        a=rtpmap:96 opus/48000/2\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=candidate:3c4b1b2e2d1f1c0e8e5a6d3b2f1a0c9d 1 udp 2130706431 192.168.1.20 50036 typ host\r\n\
        a=candidate:d2b6ce0c1f4a0f2a3f4a2b1c5d6e7f80 1 udp 1694498815 203.0.113.5 50036 typ srflx raddr 192.168.1.20 rport 50036\r\n\
        a=end-of-candidates\r\n\
        a=ice-ufrag:Xa3f\r\n\
        a=ice-pwd:kq7Ae2Qk4ZbXKM1uN0fEfw\r\n\
        a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\n\
        a=setup:actpass\r\n\
        m=video 50036 UDP/TLS/RTP/SAVPF 97 98\r\n\
        c=IN IP4 192.168.1.20\r\n\
        a=sendrecv\r\n\
        a=mid:1\r\n\
        a=rtcp:9 IN IP4 0.0.0.0\r\n\
        a=rtcp-mux\r\n\
        a=rtpmap:97 VP8/90000\r\n\
        a=rtcp-fb:97 nack\r\n\
        a=rtpmap:98 rtx/90000\r\n\
        a=fmtp:98 apt=97\r\n\
        a=candidate:3c4b1b2e2d1f1c0e8e5a6d3b2f1a0c9d 1 udp 2130706431 192.168.1.20 50036 typ host\r\n\
        a=candidate:d2b6ce0c1f4a0f2a3f4a2b1c5d6e7f80 1 udp 1694498815 203.0.113.5 50036 typ srflx raddr 192.168.1.20 rport 50036\r\n\
        a=end-of-candidates\r\n\
        a=ice-ufrag:Xa3f\r\n\
        a=ice-pwd:kq7Ae2Qk4ZbXKM1uN0fEfw\r\n\
        a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\n\
        a=setup:actpass\r\n";

    fn creds(ufrag: &str, pwd: &str) -> Option<IceCredentials> {
        Some(IceCredentials { ufrag: ufrag.into(), pwd: pwd.into() })
    }

    #[test]
    fn credentials_of_srs_answer_and_aiortc_offer() {
        assert_eq!(ice_credentials(SRS_ANSWER), creds("8b4f6k1r", "4x0kq0yd1m19b8r8o4c15i91m19r5g00"));
        assert_eq!(ice_credentials(AIORTC_OFFER), creds("Xa3f", "kq7Ae2Qk4ZbXKM1uN0fEfw"));
    }

    #[test]
    fn credentials_variants() {
        // Session level, LF endings, trailing whitespace, no final newline.
        assert_eq!(ice_credentials("v=0\na=ice-ufrag:abcd \na=ice-pwd:p1\t\nm=audio 9 x 0"), creds("abcd", "p1"));
        // The first of each wins; empty values are skipped.
        assert_eq!(
            ice_credentials("a=ice-ufrag:\r\na=ice-ufrag:one\r\na=ice-pwd:x\r\na=ice-ufrag:two\r\n"),
            creds("one", "x")
        );
        // Only at the start of a line.
        assert_eq!(ice_credentials("a=x a=ice-ufrag:no\r\na=ice-pwd:p\r\n"), None);
        assert_eq!(ice_credentials("a=ice-ufrag:u\r\n"), None);
        assert_eq!(ice_credentials("a=ice-pwd:p\r\n"), None);
        assert_eq!(ice_credentials(""), None);
    }

    #[test]
    fn srs_answer_port_only_matches_the_srs_proxy_rewrite_on_udp() {
        let out = rewrite_host_candidates(SRS_ANSWER, &[8000], 18000, None);
        // A plain text replacement of " 8000 typ host" would hit the TCP candidates too.
        let srs = SRS_ANSWER.replace(" 8000 typ host", " 18000 typ host");
        let srs_udp_only =
            srs.replace("192.168.1.10 18000 typ host tcptype passive", "192.168.1.10 8000 typ host tcptype passive");
        assert_eq!(out, srs_udp_only);
        assert_eq!(out.matches("192.168.1.10 18000 typ host generation 0\r\n").count(), 2);
        assert_eq!(out.matches("tcp 2130706431 192.168.1.10 8000 typ host tcptype passive").count(), 2);
        assert_eq!(out.len(), SRS_ANSWER.len() + 2);
        // Credentials are untouched.
        assert_eq!(ice_credentials(&out), ice_credentials(SRS_ANSWER));
    }

    #[test]
    fn srs_answer_with_new_address() {
        let out = rewrite_host_candidates(SRS_ANSWER, &[8000], 18000, Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
        let expected = SRS_ANSWER
            .replace("udp 2130706431 192.168.1.10 8000 typ host", "udp 2130706431 203.0.113.7 18000 typ host");
        assert_eq!(out, expected);
        assert_eq!(out.matches("c=IN IP4 0.0.0.0\r\n").count(), 2);
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));

        let v6 = rewrite_host_candidates(SRS_ANSWER, &[8000], 18000, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(v6.matches("a=candidate:0 1 udp 2130706431 ::1 18000 typ host generation 0\r\n").count(), 2);
    }

    #[test]
    fn other_ports_and_offers_are_untouched() {
        assert_eq!(rewrite_host_candidates(SRS_ANSWER, &[8001], 18000, None), SRS_ANSWER);
        assert_eq!(rewrite_host_candidates(SRS_ANSWER, &[], 18000, None), SRS_ANSWER);
        assert_eq!(rewrite_host_candidates(AIORTC_OFFER, &[8000], 18000, None), AIORTC_OFFER);
        // Rewriting the aiortc port changes only the host lines, not srflx/raddr/rport or m=.
        let out = rewrite_host_candidates(AIORTC_OFFER, &[50036], 18000, None);
        assert_eq!(out, AIORTC_OFFER.replace("192.168.1.20 50036 typ host\r\n", "192.168.1.20 18000 typ host\r\n"));
        assert_eq!(out.matches("rport 50036").count(), 2);
        assert_eq!(out.matches("m=audio 50036").count(), 1);
    }

    #[test]
    fn candidate_edge_cases() {
        let rw = |sdp: &str| rewrite_host_candidates(sdp, &[8000, 8001], 9, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // Whole tokens only: 18000 and 80000 are not 8000.
        let l = "a=candidate:0 1 udp 1 10.0.0.1 18000 typ host\r\n";
        assert_eq!(rw(l), l);
        let l = "a=candidate:0 1 udp 1 10.0.0.1 80000 typ host\r\n";
        assert_eq!(rw(l), l);
        // Any listed port, uppercase transport, LF, no final newline, extensions kept.
        assert_eq!(
            rw("a=candidate:0 1 UDP 1 10.0.0.1 8001 typ host ufrag x network-id 1\n"),
            "a=candidate:0 1 UDP 1 127.0.0.1 9 typ host ufrag x network-id 1\n"
        );
        assert_eq!(rw("a=candidate:0 2 udp 1 h.local 8000 typ host"), "a=candidate:0 2 udp 1 127.0.0.1 9 typ host");
        // Not a candidate, not host, short lines, a candidate-like non-attribute.
        for l in [
            "a=candidate:0 1 udp 1 10.0.0.1 8000 typ srflx raddr 10.0.0.1 rport 8000\r\n",
            "a=candidate:0 1 udp 1 10.0.0.1 8000 typ\r\n",
            "a=candidate:0 1 udp 1 10.0.0.1 8000\r\n",
            "a=candidate:\r\n",
            "x=candidate:0 1 udp 1 10.0.0.1 8000 typ host\r\n",
            " a=candidate:0 1 udp 1 10.0.0.1 8000 typ host\r\n",
            "\r\n\n\r",
            "",
        ] {
            assert_eq!(rw(l), l);
        }
        // Extra spaces between tokens are kept as they are.
        assert_eq!(
            rw("a=candidate:0 1 udp 1  10.0.0.1  8000 typ host\r\n"),
            "a=candidate:0 1 udp 1  127.0.0.1  9 typ host\r\n"
        );
    }

    mod property {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Arbitrary text never panics, and without a matching port comes back unchanged.
            #[test]
            fn arbitrary_text(sdp in "(a=candidate:[ 0-9a-z.:]{0,40}|a=ice-(ufrag|pwd):[ -~]{0,8}|[ -~]{0,20})((\r?\n)(a=candidate:[ 0-9a-z.:]{0,40}|[ -~]{0,20})){0,8}\r?\n?") {
                let _ = ice_credentials(&sdp);
                prop_assert_eq!(rewrite_host_candidates(&sdp, &[], 1, None), sdp.clone());
                let out = rewrite_host_candidates(&sdp, &[0, 1, 8000], 2, Some(IpAddr::from([1, 2, 3, 4])));
                prop_assert_eq!(out.lines().count(), sdp.lines().count());
            }

            /// A generated UDP host candidate on an origin port gets exactly the new port and
            /// address, and the rest of the line is unchanged.
            #[test]
            fn generated_candidates(
                foundation in "[a-zA-Z0-9+/]{1,32}",
                component in 1u8..3,
                priority in any::<u32>(),
                address in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
                port in any::<u16>(),
                ext in "( [a-z-]{1,10} [a-z0-9]{1,6}){0,3}",
                crlf in any::<bool>(),
            ) {
                let eol = if crlf { "\r\n" } else { "\n" };
                let line = format!("a=candidate:{foundation} {component} udp {priority} {address} {port} typ host{ext}{eol}");
                let out = rewrite_host_candidates(&line, &[port], 18000, None);
                prop_assert_eq!(out, format!("a=candidate:{foundation} {component} udp {priority} {address} 18000 typ host{ext}{eol}"));
            }
        }
    }
}
