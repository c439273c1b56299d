//! SRT packet headers, handshakes and stream ids for the SRT proxy (sans-io).
//!
//! An SRT proxy sits between a caller (ffmpeg, OBS, srt-live-transmit) and an origin that is an
//! SRT listener. It answers the caller's INDUCTION itself (stateless, with a SYN cookie), reads
//! the stream id from the CONCLUSION to pick the origin, replays the handshake to the origin,
//! and from then on forwards datagrams by destination socket id. This module gives it:
//!
//! - the 16-byte packet header ([`Header`], and the cheap [`is_control`], [`control_type`],
//!   [`dest_socket_id`] for the per-datagram fast path);
//! - the handshake control packet ([`Handshake::parse`] / [`Handshake::encode`], HSv5 extension
//!   blocks as raw [`Extension`]s so a replay to the origin carries exactly what the caller
//!   sent), and the listener's replies ([`induction_response`], [`rejection`]);
//! - the stream id: [`stream_id`] / [`encode_stream_id`] (the SID extension's per-word byte
//!   order) and [`parse_stream_id`] (the `#!::r=...,m=...` access-control syntax);
//! - [`syn_cookie`] / [`cookie_is_valid`], a keyed cookie bound to the caller's address.
//!
//! Field layout: draft-sharabayko-srt §3 (header, handshake CIF, extensions). Where the draft
//! and libsrt disagree (induction response socket id, peer IP byte order), libsrt's wire
//! behaviour is followed, since that is what every real peer runs.
#![deny(clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Length of every SRT packet header.
pub const HEADER_LEN: usize = 16;
/// Length of the fixed handshake body (CIF) that follows the header.
pub const HANDSHAKE_BODY_LEN: usize = 48;
/// Length of a handshake without extensions: header plus body (an INDUCTION).
pub const HANDSHAKE_LEN: usize = HEADER_LEN + HANDSHAKE_BODY_LEN;

/// Control type HANDSHAKE.
pub const CONTROL_HANDSHAKE: u16 = 0x0000;
/// Control type KEEPALIVE.
pub const CONTROL_KEEPALIVE: u16 = 0x0001;
/// Control type ACK.
pub const CONTROL_ACK: u16 = 0x0002;
/// Control type NAK (loss report).
pub const CONTROL_NAK: u16 = 0x0003;
/// Control type congestion warning.
pub const CONTROL_CONGESTION_WARNING: u16 = 0x0004;
/// Control type SHUTDOWN.
pub const CONTROL_SHUTDOWN: u16 = 0x0005;
/// Control type ACKACK.
pub const CONTROL_ACKACK: u16 = 0x0006;
/// Control type DROPREQ.
pub const CONTROL_DROPREQ: u16 = 0x0007;
/// Control type PEERERROR.
pub const CONTROL_PEERERROR: u16 = 0x0008;
/// Control type for user-defined messages (the subtype says which).
pub const CONTROL_USER_DEFINED: u16 = 0x7FFF;

/// Handshake type WAVEAHAND (rendezvous).
pub const HS_WAVEAHAND: i32 = 0;
/// Handshake type INDUCTION: the caller's first packet and the listener's cookie reply.
pub const HS_INDUCTION: i32 = 1;
/// Handshake type CONCLUSION: the caller's second packet and the listener's acceptance.
pub const HS_CONCLUSION: i32 = -1;
/// Handshake type AGREEMENT (rendezvous).
pub const HS_AGREEMENT: i32 = -2;
/// Handshake type DONE (a libsrt-internal state, not normally on the wire).
pub const HS_DONE: i32 = -3;
/// A handshake type above this is a rejection: type = 1000 + reason (libsrt
/// `URQ_FAILURE_TYPES`).
pub const HS_REJECTION_BASE: i32 = 1000;

/// Rejection reason SRT_REJ_PEER: rejected by the peer.
pub const REJ_PEER: i32 = 2;
/// Rejection reason SRT_REJ_RESOURCE: resource allocation failure.
pub const REJ_RESOURCE: i32 = 3;
/// Rejection reason SRT_REJ_ROGUE: incorrect data in the handshake.
pub const REJ_ROGUE: i32 = 4;
/// Rejection reason SRT_REJ_VERSION: unsupported version.
pub const REJ_VERSION: i32 = 8;
/// Rejection reason SRT_REJ_UNSECURE: encryption expected or unexpected.
pub const REJ_UNSECURE: i32 = 11;
/// Access-control rejection SRT_REJX_BAD_REQUEST (HTTP 400): malformed stream id.
pub const REJX_BAD_REQUEST: i32 = 1400;
/// Access-control rejection SRT_REJX_NOTFOUND (HTTP 404): no such stream (no origin).
pub const REJX_NOT_FOUND: i32 = 1404;
/// Access-control rejection SRT_REJX_OVERLOAD: the listener is overloaded.
pub const REJX_OVERLOAD: i32 = 1402;
/// Access-control rejection SRT_REJX_BAD_MODE: the `m=` value is not supported.
pub const REJX_BAD_MODE: i32 = 1405;
/// Access-control rejection SRT_REJX_CONFLICT (HTTP 409): the stream is being published
/// already.
pub const REJX_CONFLICT: i32 = 1409;

/// Extension field of a listener's INDUCTION reply: the HSv5 magic.
pub const SRT_MAGIC: u16 = 0x4A17;
/// Extension field of a caller's HSv4-compatible INDUCTION: `UDT_DGRAM`.
pub const UDT_DGRAM: u16 = 2;
/// CONCLUSION extension field flag: an HSREQ/HSRSP block is attached.
pub const HS_EXT_HSREQ: u16 = 0x1;
/// CONCLUSION extension field flag: a KMREQ/KMRSP block is attached (encryption).
pub const HS_EXT_KMREQ: u16 = 0x2;
/// CONCLUSION extension field flag: config blocks (SID, congestion, filter, group) attached.
pub const HS_EXT_CONFIG: u16 = 0x4;

/// Extension block SRT_CMD_HSREQ: the caller's SRT version, flags and latencies.
pub const EXT_HSREQ: u16 = 1;
/// Extension block SRT_CMD_HSRSP: the listener's answer to HSREQ.
pub const EXT_HSRSP: u16 = 2;
/// Extension block SRT_CMD_KMREQ: key material.
pub const EXT_KMREQ: u16 = 3;
/// Extension block SRT_CMD_KMRSP: key material response.
pub const EXT_KMRSP: u16 = 4;
/// Extension block SRT_CMD_SID: the stream id.
pub const EXT_SID: u16 = 5;
/// Extension block SRT_CMD_CONGESTION: congestion controller name.
pub const EXT_CONGESTION: u16 = 6;
/// Extension block SRT_CMD_FILTER: packet filter configuration.
pub const EXT_FILTER: u16 = 7;
/// Extension block SRT_CMD_GROUP: bonding group membership.
pub const EXT_GROUP: u16 = 8;
/// Longest stream id libsrt sends or accepts, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 512;

/// Largest extension contents a 16-bit word count can describe, in bytes.
const MAX_EXTENSION_LEN: usize = 0xFFFF * 4;

/// Why bytes are not the expected SRT packet.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SrtError {
    /// Shorter than the header or the fixed handshake.
    #[error("{got} bytes, at least {need} needed")]
    TooShort {
        /// Bytes required.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// A data packet where a handshake was expected.
    #[error("data packet, not a control packet")]
    NotControl,
    /// A control packet of another type where a handshake was expected.
    #[error("control type {0:#06x} is not HANDSHAKE")]
    NotHandshake(u16),
    /// An extension block's header or contents run past the end of the packet.
    #[error("handshake extension at offset {offset} runs past the end of the packet")]
    TruncatedExtension {
        /// Offset of the block header from the start of the packet.
        offset: usize,
    },
    /// The stream id names no resource (`r=` missing or empty, or an empty plain id).
    #[error("no resource in stream id {0:?}")]
    NoResource(String),
    /// The stream id's `m=` is neither `publish` nor `request`.
    #[error("unsupported mode m={0:?} in stream id")]
    UnsupportedMode(String),
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Header of a control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlHeader {
    /// Control type (15 bits): [`CONTROL_HANDSHAKE`], [`CONTROL_ACK`], ...
    pub control_type: u16,
    /// Subtype, meaningful for [`CONTROL_USER_DEFINED`] only.
    pub subtype: u16,
    /// Type-specific information (the ACK number of an ACK, 0 for a handshake).
    pub type_info: u32,
    /// Microseconds since the sender's socket was created (wraps).
    pub timestamp: u32,
    /// The receiving socket's id; 0 for a connection request to a listener.
    pub dest_socket_id: u32,
}

/// Header of a data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Packet sequence number (31 bits).
    pub seq: u32,
    /// Second word: packet position (2 bits), in-order flag, key-based encryption (2 bits),
    /// retransmitted flag, message number (26 bits).
    pub msg_word: u32,
    /// Microseconds since the sender's socket was created (wraps).
    pub timestamp: u32,
    /// The receiving socket's id.
    pub dest_socket_id: u32,
}

/// The 16-byte header every SRT packet starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The F bit is 1.
    Control(ControlHeader),
    /// The F bit is 0.
    Data(DataHeader),
}

impl Header {
    /// Parses the header at the start of `pkt`; the payload is not looked at.
    pub fn parse(pkt: &[u8]) -> Result<Header, SrtError> {
        let (Some(w0), Some(w1), Some(timestamp), Some(dest_socket_id)) =
            (be32(pkt, 0), be32(pkt, 4), be32(pkt, 8), be32(pkt, 12))
        else {
            return Err(SrtError::TooShort { need: HEADER_LEN, got: pkt.len() });
        };
        Ok(if w0 & 0x8000_0000 != 0 {
            Header::Control(ControlHeader {
                control_type: ((w0 >> 16) & 0x7FFF) as u16,
                subtype: (w0 & 0xFFFF) as u16,
                type_info: w1,
                timestamp,
                dest_socket_id,
            })
        } else {
            Header::Data(DataHeader { seq: w0, msg_word: w1, timestamp, dest_socket_id })
        })
    }

    /// The destination socket id, whichever the kind.
    pub fn dest_socket_id(&self) -> u32 {
        match self {
            Header::Control(h) => h.dest_socket_id,
            Header::Data(h) => h.dest_socket_id,
        }
    }

    /// The timestamp, whichever the kind.
    pub fn timestamp(&self) -> u32 {
        match self {
            Header::Control(h) => h.timestamp,
            Header::Data(h) => h.timestamp,
        }
    }
}

/// Whether `pkt` is a control packet (F bit set). False for anything shorter than a header,
/// which is not an SRT packet at all.
pub fn is_control(pkt: &[u8]) -> bool {
    pkt.len() >= HEADER_LEN && pkt.first().is_some_and(|b| b & 0x80 != 0)
}

/// The control type of a control packet; `None` for a data packet or a runt.
pub fn control_type(pkt: &[u8]) -> Option<u16> {
    if !is_control(pkt) {
        return None;
    }
    be16(pkt, 0).map(|w| w & 0x7FFF)
}

/// The destination socket id (bytes 12..16): how the proxy finds the connection a datagram
/// belongs to. 0 means a connection request (INDUCTION or CONCLUSION to a listener).
pub fn dest_socket_id(pkt: &[u8]) -> Option<u32> {
    be32(pkt, 12)
}

/// One HSv5 handshake extension block, contents kept as they are on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Block type: [`EXT_HSREQ`], [`EXT_SID`], ...
    pub type_: u16,
    /// Contents, a whole number of 32-bit words when parsed. On encode, contents that are not
    /// are zero-padded, and anything past 65535 words is dropped (the length field is 16 bits).
    pub contents: Vec<u8>,
}

/// A handshake control packet's body (CIF) and extension blocks.
///
/// Parsing checks framing only (lengths, control type); whether the values make sense
/// (version, ISN range, cookie) is for the caller to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// 4 in a caller's INDUCTION (HSv4 compatibility), 5 for HSv5 everywhere else.
    pub version: u32,
    /// Advertised key length (0 none, 2/3/4 for AES-128/192/256).
    pub encryption_field: u16,
    /// [`UDT_DGRAM`] in a caller's INDUCTION, [`SRT_MAGIC`] in the listener's reply, and the
    /// `HS_EXT_*` flags of the attached blocks in a CONCLUSION.
    pub extension_field: u16,
    /// Initial packet sequence number (the caller's; the listener echoes it).
    pub initial_seq: u32,
    /// Maximum transmission unit, IP packet size in bytes (1500 by default).
    pub mtu: u32,
    /// Maximum flow window in packets (8192 by default).
    pub flow_window: u32,
    /// [`HS_INDUCTION`], [`HS_CONCLUSION`], [`HS_WAVEAHAND`], [`HS_AGREEMENT`], [`HS_DONE`],
    /// or a rejection above [`HS_REJECTION_BASE`].
    pub handshake_type: i32,
    /// The sender's socket id.
    pub socket_id: u32,
    /// 0 in the caller's INDUCTION; the listener's cookie from then on.
    pub syn_cookie: u32,
    /// An address as libsrt writes it (see [`encode_peer_ip`]): the packet's destination.
    pub peer_ip: [u8; 16],
    /// Extension blocks after the body, in wire order.
    pub extensions: Vec<Extension>,
}

impl Handshake {
    /// Parses a handshake control packet: header, 48-byte body, then extension blocks
    /// (`type: u16, length: u16 in 32-bit words, contents`) until the end of the packet.
    ///
    /// Errors: shorter than 64 bytes, a data packet, another control type, or an extension
    /// block (or a 1-3 byte tail) that runs past the end.
    pub fn parse(pkt: &[u8]) -> Result<(ControlHeader, Handshake), SrtError> {
        let header = match Header::parse(pkt)? {
            Header::Control(h) if h.control_type == CONTROL_HANDSHAKE => h,
            Header::Control(h) => return Err(SrtError::NotHandshake(h.control_type)),
            Header::Data(_) => return Err(SrtError::NotControl),
        };
        let too_short = SrtError::TooShort { need: HANDSHAKE_LEN, got: pkt.len() };
        let mut words = [0u32; 8];
        for (i, w) in words.iter_mut().enumerate() {
            *w = be32(pkt, HEADER_LEN + 4 * i).ok_or_else(|| too_short.clone())?;
        }
        let [version, enc_ext, initial_seq, mtu, flow_window, hs_type, socket_id, syn_cookie] = words;
        let peer_ip: [u8; 16] =
            pkt.get(HEADER_LEN + 32..HANDSHAKE_LEN).and_then(|b| b.try_into().ok()).ok_or(too_short)?;
        let mut extensions = Vec::new();
        let mut offset = HANDSHAKE_LEN;
        while offset < pkt.len() {
            let (Some(type_), Some(words)) = (be16(pkt, offset), be16(pkt, offset + 2)) else {
                return Err(SrtError::TruncatedExtension { offset });
            };
            let start = offset + 4;
            let end = start + 4 * usize::from(words);
            let Some(contents) = pkt.get(start..end) else {
                return Err(SrtError::TruncatedExtension { offset });
            };
            extensions.push(Extension { type_, contents: contents.to_vec() });
            offset = end;
        }
        let handshake = Handshake {
            version,
            encryption_field: (enc_ext >> 16) as u16,
            extension_field: (enc_ext & 0xFFFF) as u16,
            initial_seq,
            mtu,
            flow_window,
            handshake_type: hs_type as i32,
            socket_id,
            syn_cookie,
            peer_ip,
            extensions,
        };
        Ok((header, handshake))
    }

    /// The whole packet: a HANDSHAKE control header (subtype 0, type-specific info 0) with
    /// `timestamp` and `dest_socket_id`, the body, and the extension blocks.
    /// [`Handshake::parse`] gives back `self` for any handshake whose extension contents are
    /// whole words (as all parsed ones are).
    pub fn encode(&self, timestamp: u32, dest_socket_id: u32) -> Vec<u8> {
        let ext_len: usize = self.extensions.iter().map(|e| 4 + e.contents.len().min(MAX_EXTENSION_LEN) + 3).sum();
        let mut out = Vec::with_capacity(HANDSHAKE_LEN + ext_len);
        for word in [
            0x8000_0000 | (u32::from(CONTROL_HANDSHAKE) << 16),
            0,
            timestamp,
            dest_socket_id,
            self.version,
            (u32::from(self.encryption_field) << 16) | u32::from(self.extension_field),
            self.initial_seq,
            self.mtu,
            self.flow_window,
            self.handshake_type as u32,
            self.socket_id,
            self.syn_cookie,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.peer_ip);
        for ext in &self.extensions {
            let contents = ext.contents.get(..MAX_EXTENSION_LEN).unwrap_or(&ext.contents);
            let words = contents.len().div_ceil(4);
            out.extend_from_slice(&ext.type_.to_be_bytes());
            out.extend_from_slice(&(words as u16).to_be_bytes());
            out.extend_from_slice(contents);
            out.resize(out.len() + (words * 4 - contents.len()), 0);
        }
        out
    }

    /// The first extension block of type `type_`.
    pub fn extension(&self, type_: u16) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.type_ == type_)
    }

    /// The rejection reason (`SRT_REJ_*`, or `SRT_REJX_*` from 1000 up) when this handshake
    /// rejects a connection: its type is `1000 + reason`, and libsrt counts only types strictly
    /// above 1000.
    pub fn rejection_reason(&self) -> Option<i32> {
        (self.handshake_type > HS_REJECTION_BASE).then(|| self.handshake_type - HS_REJECTION_BASE)
    }
}

/// The listener's reply to a caller's INDUCTION, as libsrt builds it: the
/// request's body echoed with version 5, encryption field 0 (no encryption advertised),
/// extension field [`SRT_MAGIC`], type INDUCTION and `cookie`; the initial sequence number, MTU,
/// flow window, socket id (the caller's own, which no caller reads here although the draft
/// says the listener's) and peer IP stay as received. No extensions.
///
/// Send it with `encode(timestamp, request.socket_id)` to the address the request came from.
/// The proxy keeps no state for it, so `cookie` must be derived from that address (see
/// [`syn_cookie`]): the CONCLUSION that echoes it is then proof that the caller receives at the
/// address it claims (a constant cookie would prove nothing).
pub fn induction_response(request: &Handshake, cookie: u32) -> Handshake {
    Handshake {
        version: 5,
        encryption_field: 0,
        extension_field: SRT_MAGIC,
        handshake_type: HS_INDUCTION,
        syn_cookie: cookie,
        extensions: Vec::new(),
        ..request.clone()
    }
}

/// The listener's rejection of a CONCLUSION, as libsrt sends it: the request's body echoed
/// with type `1000 + reason` and no extensions, sent with `encode(timestamp,
/// request.socket_id)`. libsrt callers report the reason from `srt_getrejectreason`; use
/// [`REJX_NOT_FOUND`] when no origin serves the stream, [`REJX_BAD_REQUEST`] for an unusable
/// stream id. A reason below 1 is sent as 1: type 1000 would not read as a rejection.
pub fn rejection(request: &Handshake, reason: i32) -> Handshake {
    Handshake {
        handshake_type: HS_REJECTION_BASE.saturating_add(reason.max(1)),
        extensions: Vec::new(),
        ..request.clone()
    }
}

/// Reverses the bytes of each 32-bit word, zero-padding a partial last word first. libsrt
/// keeps string-valued fields (SID, peer IP) in host-order words and then converts every word
/// of a control packet to network order, so on the wire each 4-byte group of the string appears
/// reversed. The operation is its own inverse on whole words.
fn swap_words(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(4) * 4);
    for chunk in bytes.chunks(4) {
        let mut word = [0u8; 4];
        word.iter_mut().zip(chunk).for_each(|(w, c)| *w = *c);
        word.reverse();
        out.extend_from_slice(&word);
    }
    out
}

/// The stream id of a CONCLUSION: the first [`EXT_SID`] block, un-swapped word by word, with
/// the trailing NUL padding trimmed. `None` without one, when it is empty, or when it is not
/// UTF-8 (libsrt allows any bytes, but a stream key has to be text).
pub fn stream_id(handshake: &Handshake) -> Option<String> {
    let raw = swap_words(&handshake.extension(EXT_SID)?.contents);
    let len = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let text = String::from_utf8(raw.get(..len)?.to_vec()).ok()?;
    (!text.is_empty()).then_some(text)
}

/// The [`EXT_SID`] block carrying `sid`: NUL-padded to whole words, each word byte-reversed.
/// Keep `sid` within [`MAX_STREAM_ID_LEN`]; libsrt listeners reject longer ones.
pub fn encode_stream_id(sid: &str) -> Extension {
    Extension { type_: EXT_SID, contents: swap_words(sid.as_bytes()) }
}

/// The 16-byte peer IP field for `ip`, as libsrt writes it: an IPv4 address in the first word,
/// and every 4-byte group of the address byte-reversed within its word (so 192.168.1.10 is
/// `0A 01 A8 C0` followed by 12 zero bytes).
pub fn encode_peer_ip(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    let swapped = match ip {
        IpAddr::V4(v4) => swap_words(&v4.octets()),
        IpAddr::V6(v6) => swap_words(&v6.octets()),
    };
    out.iter_mut().zip(swapped).for_each(|(o, s)| *o = s);
    out
}

/// The address in a peer IP field written as [`encode_peer_ip`] does: IPv4 when the last 12
/// bytes are zero (which makes `::a.b.c.d` read as IPv4, a form nobody sends), else IPv6.
pub fn decode_peer_ip(raw: &[u8; 16]) -> IpAddr {
    let octets: [u8; 16] = swap_words(raw).try_into().unwrap_or_default();
    match octets {
        [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        _ => IpAddr::V6(Ipv6Addr::from(octets)),
    }
}

/// A SYN cookie for the caller at `peer` during time slot `slot` (a counter the caller
/// advances, e.g. minutes since start): the first 4 bytes of HMAC-SHA256 over the address,
/// port and slot, keyed with a per-process `secret`. Never 0, which means "no cookie".
///
/// libsrt hashes `host:port:minute` with MD5 for the same purpose; any keyed function of the
/// address and a coarse clock works, since only the listener checks it.
pub fn syn_cookie(secret: &[u8], peer: SocketAddr, slot: u64) -> u32 {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return 1; // HMAC accepts keys of any length: unreachable.
    };
    let ip = match peer.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    mac.update(&ip);
    mac.update(&peer.port().to_be_bytes());
    mac.update(&slot.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let first: [u8; 4] = digest.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0, 0, 0, 1]);
    u32::from_be_bytes(first).max(1)
}

/// Whether `cookie` is the one [`syn_cookie`] gave `peer` in slot `slot` or the slot before,
/// so a handshake that straddles a slot boundary still completes (libsrt 1.4's fallback
/// computes the next slot instead, a known bug).
pub fn cookie_is_valid(secret: &[u8], peer: SocketAddr, slot: u64, cookie: u32) -> bool {
    cookie == syn_cookie(secret, peer, slot) || (slot > 0 && cookie == syn_cookie(secret, peer, slot - 1))
}

/// What the caller wants to do with the stream (`m=` of the stream id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `m=publish`: the caller sends the stream.
    Publish,
    /// `m=request`: the caller plays the stream.
    Request,
}

/// A parsed stream id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamId {
    /// `r=`: the resource, `app/stream` for SRS; a plain id is all resource.
    pub resource: String,
    /// `h=`: the host (SRS vhost).
    pub host: Option<String>,
    /// `m=`: `None` when absent, which means play (request).
    pub mode: Option<Mode>,
    /// `u=`: the user name.
    pub user: Option<String>,
}

impl StreamId {
    /// Whether the caller publishes (`m=publish`); absent or `m=request` is play.
    pub fn is_publish(&self) -> bool {
        self.mode == Some(Mode::Publish)
    }

    /// The URL the stream key is built from, `srt://<h or localhost>/<r>`, so an SRT stream has
    /// the key an RTMP or HTTP client of the same stream gets.
    pub fn stream_url(&self) -> String {
        format!("srt://{}/{}", self.host.as_deref().unwrap_or("localhost"), self.resource)
    }
}

/// Parses a stream id in the SRT access-control syntax, `#!::key=value,key=value...`.
///
/// Keys are matched exactly: `r` resource, `h` host, `m` mode, `u` user; others (`s`, `t`,
/// custom ones) are ignored, as are items without `=`. The first occurrence of a key wins.
/// `m` must be `publish` or `request` (`bidirectional` and anything else is an error, since the
/// proxy must know which way the stream flows); absent means play. Empty values count as
/// absent, and a missing or empty `r` is an error.
///
/// A stream id without the `#!::` prefix (`live/livestream`, `live/x?vhost=v.example.com`) is
/// the resource itself, verbatim.
///
/// A key is never found inside another key or value (`user=bob,r=live/x` is resource
/// `live/x`, not `bob`).
pub fn parse_stream_id(sid: &str) -> Result<StreamId, SrtError> {
    let Some(items) = sid.strip_prefix("#!::") else {
        if sid.is_empty() {
            return Err(SrtError::NoResource(sid.to_owned()));
        }
        return Ok(StreamId { resource: sid.to_owned(), host: None, mode: None, user: None });
    };
    let (mut resource, mut host, mut mode, mut user) = (None, None, None, None);
    for (key, value) in items.split(',').filter_map(|item| item.split_once('=')) {
        if value.is_empty() {
            continue;
        }
        match key {
            "r" => {
                resource.get_or_insert(value);
            }
            "h" => {
                host.get_or_insert(value);
            }
            "u" => {
                user.get_or_insert(value);
            }
            "m" if mode.is_none() => {
                mode = Some(match value {
                    "publish" => Mode::Publish,
                    "request" => Mode::Request,
                    other => return Err(SrtError::UnsupportedMode(other.to_owned())),
                });
            }
            _ => {}
        }
    }
    let Some(resource) = resource else {
        return Err(SrtError::NoResource(sid.to_owned()));
    };
    Ok(StreamId { resource: resource.to_owned(), host: host.map(str::to_owned), mode, user: user.map(str::to_owned) })
}

/// The stream's query as SRS reads it from a stream id (without `?`; empty for none): the
/// resource's own (`#!::r=live/cam?token=..&expires=..`), then every other item but `r`, `h`
/// and `m`, in order, as `key=value` joined with `&` (`#!::r=live/cam?token=..,expires=..` or
/// `#!::r=live/cam,token=..,expires=..`). So a client that can give only a URL, where an `&`
/// would end `streamid=`, still carries several parameters (a signed URL's two). A plain id's
/// query is its resource's; an id that does not parse has none.
pub fn stream_query(sid: &str) -> String {
    let Ok(id) = parse_stream_id(sid) else {
        return String::new();
    };
    let mut query = id.resource.split_once('?').map_or("", |(_, q)| q).to_owned();
    let items = sid.strip_prefix("#!::").unwrap_or_default();
    for (key, value) in items.split(',').filter_map(|item| item.split_once('=')) {
        if key.is_empty() || value.is_empty() || matches!(key, "r" | "h" | "m") {
            continue;
        }
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(key);
        query.push('=');
        query.push_str(value);
    }
    query
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::balance::StreamKey;

    /// An ffmpeg (libsrt 1.4.4) caller's INDUCTION to 127.0.0.1: version 4, extension field
    /// `UDT_DGRAM`, type 1, cookie 0, destination socket id 0 (draft-sharabayko-srt §4.3.1.1).
    const CALLER_INDUCTION: [u8; 64] = [
        0x80, 0x00, 0x00, 0x00, // control, HANDSHAKE, subtype 0
        0x00, 0x00, 0x00, 0x00, // type-specific information
        0x00, 0x00, 0x1f, 0x9e, // timestamp 8094 µs
        0x00, 0x00, 0x00, 0x00, // destination socket id: connection request
        0x00, 0x00, 0x00, 0x04, // version 4
        0x00, 0x00, 0x00, 0x02, // encryption 0, extension UDT_DGRAM
        0x2a, 0x3f, 0x1c, 0x5d, // initial sequence number
        0x00, 0x00, 0x05, 0xdc, // MTU 1500
        0x00, 0x00, 0x20, 0x00, // flow window 8192
        0x00, 0x00, 0x00, 0x01, // INDUCTION
        0x1d, 0x4a, 0x7f, 0x3b, // caller's socket id
        0x00, 0x00, 0x00, 0x00, // no cookie yet
        0x01, 0x00, 0x00, 0x7f, // peer IP 127.0.0.1, libsrt byte order
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// The same caller's CONCLUSION with `streamid=#!::r=live/livestream,m=publish`: version 5,
    /// extension field HSREQ|CONFIG, the listener's cookie, then HSREQ (SRT 1.4.4, flags 0xBF,
    /// receiver latency 120 ms) and SID blocks.
    const CALLER_CONCLUSION: [u8; 116] = [
        0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // control HANDSHAKE
        0x00, 0x00, 0x4e, 0x20, // timestamp 20000 µs
        0x00, 0x00, 0x00, 0x00, // destination 0, as libsrt sends it
        0x00, 0x00, 0x00, 0x05, // version 5
        0x00, 0x00, 0x00, 0x05, // encryption 0, extension HSREQ | CONFIG
        0x2a, 0x3f, 0x1c, 0x5d, // same ISN
        0x00, 0x00, 0x05, 0xdc, // MTU 1500
        0x00, 0x00, 0x20, 0x00, // flow window 8192
        0xff, 0xff, 0xff, 0xff, // CONCLUSION
        0x1d, 0x4a, 0x7f, 0x3b, // caller's socket id
        0x41, 0x8d, 0x5e, 0x4e, // cookie from the induction reply
        0x01, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x03, // HSREQ, 3 words
        0x00, 0x01, 0x04, 0x04, // SRT version 1.4.4
        0x00, 0x00, 0x00, 0xbf, // flags: TSBPDSND..REXMITFLG, PACKET_FILTER
        0x00, 0x78, 0x00, 0x00, // receiver TSBPD delay 120 ms, sender 0
        0x00, 0x05, 0x00, 0x08, // SID, 8 words
        0x3a, 0x3a, 0x21, 0x23, // "#!::" reversed
        0x69, 0x6c, 0x3d, 0x72, // "r=li"
        0x6c, 0x2f, 0x65, 0x76, // "ve/l"
        0x73, 0x65, 0x76, 0x69, // "ives"
        0x61, 0x65, 0x72, 0x74, // "trea"
        0x3d, 0x6d, 0x2c, 0x6d, // "m,m="
        0x6c, 0x62, 0x75, 0x70, // "publ"
        0x00, 0x68, 0x73, 0x69, // "ish" + NUL
    ];

    fn sid_of(s: &str) -> StreamId {
        parse_stream_id(s).unwrap()
    }

    #[test]
    fn caller_induction() {
        let (header, hs) = Handshake::parse(&CALLER_INDUCTION).unwrap();
        assert_eq!(
            header,
            ControlHeader { control_type: 0, subtype: 0, type_info: 0, timestamp: 8094, dest_socket_id: 0 }
        );
        assert_eq!(hs.version, 4);
        assert_eq!((hs.encryption_field, hs.extension_field), (0, UDT_DGRAM));
        assert_eq!((hs.initial_seq, hs.mtu, hs.flow_window), (0x2a3f_1c5d, 1500, 8192));
        assert_eq!(hs.handshake_type, HS_INDUCTION);
        assert_eq!((hs.socket_id, hs.syn_cookie), (0x1d4a_7f3b, 0));
        assert_eq!(decode_peer_ip(&hs.peer_ip), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(hs.extensions.is_empty());
        assert_eq!(stream_id(&hs), None);
        assert_eq!(hs.rejection_reason(), None);
        assert_eq!(hs.encode(8094, 0), CALLER_INDUCTION);

        assert!(is_control(&CALLER_INDUCTION));
        assert_eq!(control_type(&CALLER_INDUCTION), Some(CONTROL_HANDSHAKE));
        assert_eq!(dest_socket_id(&CALLER_INDUCTION), Some(0));
    }

    #[test]
    fn caller_conclusion() {
        let (header, hs) = Handshake::parse(&CALLER_CONCLUSION).unwrap();
        assert_eq!((header.timestamp, header.dest_socket_id), (20_000, 0));
        assert_eq!(hs.version, 5);
        assert_eq!(hs.extension_field, HS_EXT_HSREQ | HS_EXT_CONFIG);
        assert_eq!(hs.handshake_type, HS_CONCLUSION);
        assert_eq!(hs.syn_cookie, 0x418d_5e4e);
        assert_eq!(hs.extensions.len(), 2);
        let hsreq = hs.extension(EXT_HSREQ).unwrap();
        assert_eq!(hsreq.contents, [0, 1, 4, 4, 0, 0, 0, 0xbf, 0, 0x78, 0, 0]);
        assert_eq!(hs.extension(EXT_SID).unwrap().contents.len(), 32);
        assert_eq!(hs.extension(EXT_KMREQ), None);
        assert_eq!(stream_id(&hs).as_deref(), Some("#!::r=live/livestream,m=publish"));
        assert_eq!(encode_stream_id("#!::r=live/livestream,m=publish"), hs.extensions[1]);
        assert_eq!(hs.encode(20_000, 0), CALLER_CONCLUSION);

        let sid = parse_stream_id(&stream_id(&hs).unwrap()).unwrap();
        assert_eq!(
            sid,
            StreamId { resource: "live/livestream".into(), host: None, mode: Some(Mode::Publish), user: None }
        );
        assert!(sid.is_publish());
        let key = StreamKey::from_url(&sid.stream_url()).unwrap();
        assert_eq!(key.as_str(), "__defaultVhost__/live/livestream");
    }

    #[test]
    fn induction_reply_as_srs_and_libsrt_build_it() {
        let (_, request) = Handshake::parse(&CALLER_INDUCTION).unwrap();
        let reply = induction_response(&request, 0x418d_5e4e);
        assert_eq!(reply.version, 5);
        assert_eq!((reply.encryption_field, reply.extension_field), (0, SRT_MAGIC));
        assert_eq!((reply.initial_seq, reply.mtu, reply.flow_window), (request.initial_seq, 1500, 8192));
        assert_eq!(reply.handshake_type, HS_INDUCTION);
        assert_eq!((reply.socket_id, reply.syn_cookie), (request.socket_id, 0x418d_5e4e));
        assert_eq!(reply.peer_ip, request.peer_ip);
        assert!(reply.extensions.is_empty());

        let bytes = reply.encode(1234, request.socket_id);
        assert_eq!(bytes.len(), HANDSHAKE_LEN);
        assert_eq!(&bytes[..4], [0x80, 0, 0, 0]);
        assert_eq!(&bytes[8..16], [0, 0, 0x04, 0xd2, 0x1d, 0x4a, 0x7f, 0x3b]);
        assert_eq!(&bytes[16..24], [0, 0, 0, 5, 0, 0, 0x4a, 0x17]);
        assert_eq!(&bytes[36..48], [0, 0, 0, 1, 0x1d, 0x4a, 0x7f, 0x3b, 0x41, 0x8d, 0x5e, 0x4e]);
        assert_eq!(Handshake::parse(&bytes).unwrap().1, reply);
    }

    #[test]
    fn rejections() {
        let (_, conclusion) = Handshake::parse(&CALLER_CONCLUSION).unwrap();
        let reject = rejection(&conclusion, REJX_NOT_FOUND);
        assert_eq!(reject.handshake_type, 2404);
        assert_eq!(reject.rejection_reason(), Some(REJX_NOT_FOUND));
        assert!(reject.extensions.is_empty());
        assert_eq!((reject.socket_id, reject.initial_seq), (conclusion.socket_id, conclusion.initial_seq));
        let bytes = reject.encode(0, conclusion.socket_id);
        assert_eq!(&bytes[36..40], [0, 0, 0x09, 0x64]);
        assert_eq!(rejection(&conclusion, REJ_ROGUE).rejection_reason(), Some(REJ_ROGUE));
        // Reason 0 would be type 1000, which libsrt does not treat as a rejection.
        assert_eq!(rejection(&conclusion, 0).rejection_reason(), Some(1));
        assert_eq!(conclusion.rejection_reason(), None);
    }

    #[test]
    fn headers() {
        let data = [0x00, 0x00, 0x30, 0x39, 0xc0, 0x00, 0x00, 0x01, 0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef, 0x47];
        assert_eq!(
            Header::parse(&data),
            Ok(Header::Data(DataHeader {
                seq: 12345,
                msg_word: 0xc000_0001,
                timestamp: 9,
                dest_socket_id: 0xdead_beef
            }))
        );
        assert!(!is_control(&data));
        assert_eq!(control_type(&data), None);
        assert_eq!(dest_socket_id(&data), Some(0xdead_beef));
        assert_eq!(Handshake::parse(&[data.as_slice(), &[0; 60]].concat()), Err(SrtError::NotControl));

        // ACK (type 2) with ACK number 7; keepalive; user-defined with subtype 3.
        let ack = [0x80, 0x02, 0x00, 0x00, 0, 0, 0, 7, 0, 0, 1, 0, 0, 0, 0, 42];
        let h = Header::parse(&ack).unwrap();
        assert_eq!((h.timestamp(), h.dest_socket_id()), (256, 42));
        assert_eq!(
            h,
            Header::Control(ControlHeader {
                control_type: CONTROL_ACK,
                subtype: 0,
                type_info: 7,
                timestamp: 256,
                dest_socket_id: 42
            })
        );
        assert_eq!(control_type(&ack), Some(CONTROL_ACK));
        assert_eq!(Handshake::parse(&[ack.as_slice(), &[0; 48]].concat()), Err(SrtError::NotHandshake(CONTROL_ACK)));
        let user = [0xff, 0xff, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(control_type(&user), Some(CONTROL_USER_DEFINED));
        let Ok(Header::Control(u)) = Header::parse(&user) else { panic!() };
        assert_eq!(u.subtype, 3);
    }

    #[test]
    fn truncated_packets() {
        for len in 0..HEADER_LEN {
            assert_eq!(Header::parse(&CALLER_INDUCTION[..len]), Err(SrtError::TooShort { need: 16, got: len }));
            assert_eq!(dest_socket_id(&CALLER_INDUCTION[..len]), None);
            assert!(!is_control(&CALLER_INDUCTION[..len]));
            assert_eq!(control_type(&CALLER_INDUCTION[..len]), None);
        }
        for len in [16, 20, 48, 63] {
            assert_eq!(Handshake::parse(&CALLER_INDUCTION[..len]), Err(SrtError::TooShort { need: 64, got: len }));
        }
        // A cut inside the SID block, inside an extension header, and a 2-byte tail.
        assert_eq!(Handshake::parse(&CALLER_CONCLUSION[..112]), Err(SrtError::TruncatedExtension { offset: 80 }));
        assert_eq!(Handshake::parse(&CALLER_CONCLUSION[..66]), Err(SrtError::TruncatedExtension { offset: 64 }));
        let mut tail = CALLER_CONCLUSION.to_vec();
        tail.extend_from_slice(&[0, 5]);
        assert_eq!(Handshake::parse(&tail), Err(SrtError::TruncatedExtension { offset: 116 }));
        // A block claiming 0xFFFF words.
        let mut huge = CALLER_CONCLUSION;
        huge[66] = 0xff;
        huge[67] = 0xff;
        assert_eq!(Handshake::parse(&huge), Err(SrtError::TruncatedExtension { offset: 64 }));
    }

    #[test]
    fn stream_id_byte_order() {
        // Worked examples of the libsrt wire order.
        assert_eq!(encode_stream_id("abcdefg").contents, [0x64, 0x63, 0x62, 0x61, 0x00, 0x67, 0x66, 0x65]);
        assert_eq!(encode_stream_id("STREAM").contents, b"ERTS\0\0MA");
        assert_eq!(encode_stream_id("abcd").contents, b"dcba");
        assert_eq!(encode_stream_id("").contents, b"");
        assert_eq!(encode_stream_id("x").type_, EXT_SID);
        let with = |ext: Extension| Handshake {
            version: 5,
            encryption_field: 0,
            extension_field: HS_EXT_HSREQ | HS_EXT_CONFIG,
            initial_seq: 1,
            mtu: 1500,
            flow_window: 8192,
            handshake_type: HS_CONCLUSION,
            socket_id: 2,
            syn_cookie: 3,
            peer_ip: [0; 16],
            extensions: vec![ext],
        };
        for sid in ["#!::r=live/livestream,m=publish", "a", "ab", "abc", "abcd", "abcde", "live/x?vhost=a", "é✓"] {
            let hs = with(encode_stream_id(sid));
            assert_eq!(hs.extensions[0].contents.len() % 4, 0);
            let (_, back) = Handshake::parse(&hs.encode(0, 0)).unwrap();
            assert_eq!(stream_id(&back).as_deref(), Some(sid), "{sid}");
        }
        assert_eq!(stream_id(&with(encode_stream_id(""))), None);
        assert_eq!(stream_id(&with(Extension { type_: EXT_SID, contents: vec![0; 8] })), None);
        assert_eq!(stream_id(&with(Extension { type_: EXT_SID, contents: vec![0xff, 0xfe, 0, 0] })), None);
        // A partial last word (never from the wire) reads as the zero-padded word encode sends.
        let partial = with(Extension { type_: EXT_SID, contents: b"dcbafe".to_vec() });
        let (_, sent) = Handshake::parse(&partial.encode(0, 0)).unwrap();
        assert_eq!(stream_id(&partial), stream_id(&sent));
        assert_eq!(stream_id(&partial).as_deref(), Some("abcd\0\0ef"));
        // Encoding pads partial words with zeros.
        let odd = with(Extension { type_: 9, contents: vec![1, 2, 3, 4, 5] });
        let bytes = odd.encode(0, 0);
        assert_eq!(&bytes[64..], [0, 9, 0, 2, 1, 2, 3, 4, 5, 0, 0, 0]);
    }

    #[test]
    fn peer_ip_byte_order() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10));
        let raw = encode_peer_ip(v4);
        assert_eq!(raw, [0x0a, 0x01, 0xa8, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_peer_ip(&raw), v4);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let raw = encode_peer_ip(v6);
        assert_eq!(&raw[..4], [0xb8, 0x0d, 0x01, 0x20]);
        assert_eq!(decode_peer_ip(&raw), v6);
    }

    #[test]
    fn stream_id_table() {
        let sid = |r: &str, h: Option<&str>, m: Option<Mode>, u: Option<&str>| StreamId {
            resource: r.into(),
            host: h.map(Into::into),
            mode: m,
            user: u.map(Into::into),
        };
        let cases = [
            ("#!::r=live/livestream,m=publish", sid("live/livestream", None, Some(Mode::Publish), None)),
            ("#!::r=live/livestream,m=request", sid("live/livestream", None, Some(Mode::Request), None)),
            ("#!::r=live/livestream", sid("live/livestream", None, None, None)),
            (
                "#!::h=example.com,r=live/x,m=publish,u=alice",
                sid("live/x", Some("example.com"), Some(Mode::Publish), Some("alice")),
            ),
            ("#!::m=publish,r=live/x,h=example.com", sid("live/x", Some("example.com"), Some(Mode::Publish), None)),
            // Exact keys: SRS's `r=([^,]+)` finds "r=bob" inside "user=bob".
            ("#!::user=bob,r=live/x", sid("live/x", None, None, None)),
            ("#!::u=bob,r=live/x", sid("live/x", None, None, Some("bob"))),
            // Unknown keys, items without '=', empty items, empty values, repeated keys.
            ("#!::s=sess1,t=stream,x=1,r=live/x,,junk", sid("live/x", None, None, None)),
            ("#!::r=,r=live/y,h=", sid("live/y", None, None, None)),
            ("#!::r=live/a,r=live/b", sid("live/a", None, None, None)),
            ("#!::r=live/a=b", sid("live/a=b", None, None, None)),
            // Plain ids are the resource, query and all.
            ("live/livestream", sid("live/livestream", None, None, None)),
            ("live/x?vhost=a", sid("live/x?vhost=a", None, None, None)),
            ("#!:r=live/x", sid("#!:r=live/x", None, None, None)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_stream_id(input), Ok(expected), "{input}");
        }
        for bad in ["", "#!::", "#!::m=publish", "#!::r=", "#!::h=example.com", "#!:: r=live/x", "#!::R=live/x"] {
            assert_eq!(parse_stream_id(bad), Err(SrtError::NoResource(bad.into())), "{bad}");
        }
        assert_eq!(
            parse_stream_id("#!::r=live/x,m=bidirectional"),
            Err(SrtError::UnsupportedMode("bidirectional".into()))
        );
        assert_eq!(parse_stream_id("#!::r=live/x,m=Publish"), Err(SrtError::UnsupportedMode("Publish".into())));
        assert!(!sid_of("#!::r=live/x").is_publish());
        assert!(!sid_of("#!::r=live/x,m=request").is_publish());
    }

    #[test]
    fn the_query_comes_from_the_resource_and_the_other_items_as_srs_reads_it() {
        for (sid, query) in [
            ("#!::r=live/cam?token=ab&expires=12,m=publish", "token=ab&expires=12"),
            ("#!::r=live/cam?token=ab,expires=12,m=publish", "token=ab&expires=12"),
            ("#!::r=live/cam,token=ab,expires=12,m=request", "token=ab&expires=12"),
            ("#!::token=ab,h=example.com,r=live/cam,u=bob,expires=12", "token=ab&u=bob&expires=12"),
            // Repeated r/h/m, empty values and keys, items without '=' add nothing.
            ("#!::r=live/cam,r=live/other?x=1,h=a,m=publish,k=,=v,junk", ""),
            ("#!::r=live/cam", ""),
            ("live/cam?token=ab&expires=12", "token=ab&expires=12"),
            ("live/cam", ""),
            ("#!::m=publish", ""),
            ("", ""),
        ] {
            assert_eq!(stream_query(sid), query, "{sid}");
        }
    }

    #[test]
    fn srs_stream_key_mapping() {
        // The key of "srt://" + (h or "localhost") + "/" + r, as RTMP and HTTP clients get it.
        let key = |s: &str| StreamKey::from_url(&sid_of(s).stream_url()).unwrap().as_str().to_owned();
        assert_eq!(key("#!::r=live/livestream,m=publish"), "__defaultVhost__/live/livestream");
        assert_eq!(key("#!::r=live/livestream,m=request"), "__defaultVhost__/live/livestream");
        assert_eq!(key("#!::h=example.com,r=live/stream,m=publish"), "example.com/live/stream");
        assert_eq!(key("#!::h=example.com:1935,r=live/stream"), "example.com/live/stream");
        assert_eq!(key("#!::h=127.0.0.1,r=live/stream"), "__defaultVhost__/live/stream");
        assert_eq!(key("#!::h=localhost,r=live/stream"), "__defaultVhost__/live/stream");
        assert_eq!(key("live/livestream"), "__defaultVhost__/live/livestream");
        assert_eq!(key("live/x?vhost=v.example.com"), "v.example.com/live/x");
        assert_eq!(sid_of("#!::h=example.com,r=live/s").stream_url(), "srt://example.com/live/s");
    }

    #[test]
    fn cookies() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let a: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:50001".parse().unwrap();
        let c = syn_cookie(secret, a, 100);
        assert_ne!(c, 0);
        assert_eq!(c, syn_cookie(secret, a, 100));
        assert_ne!(c, syn_cookie(secret, b, 100));
        assert_ne!(c, syn_cookie(secret, a, 101));
        assert_ne!(c, syn_cookie(b"another secret", a, 100));
        assert!(cookie_is_valid(secret, a, 100, c));
        assert!(cookie_is_valid(secret, a, 101, c));
        assert!(!cookie_is_valid(secret, a, 102, c));
        assert!(!cookie_is_valid(secret, a, 99, c));
        assert!(!cookie_is_valid(secret, b, 100, c));
        assert!(cookie_is_valid(secret, a, 0, syn_cookie(secret, a, 0)));
        let v6: SocketAddr = "[2001:db8::1]:9000".parse().unwrap();
        assert_ne!(syn_cookie(secret, v6, 1), 0);
    }

    mod property {
        use super::super::*;
        use proptest::prelude::*;

        fn handshake() -> impl Strategy<Value = Handshake> {
            (
                (any::<u32>(), any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>(), any::<u32>()),
                (any::<i32>(), any::<u32>(), any::<u32>(), any::<[u8; 16]>()),
                prop::collection::vec((any::<u16>(), prop::collection::vec(any::<[u8; 4]>(), 0..20)), 0..5),
            )
                .prop_map(
                    |((version, enc, ext, isn, mtu, fw), (hs_type, socket_id, cookie, peer_ip), exts)| Handshake {
                        version,
                        encryption_field: enc,
                        extension_field: ext,
                        initial_seq: isn,
                        mtu,
                        flow_window: fw,
                        handshake_type: hs_type,
                        socket_id,
                        syn_cookie: cookie,
                        peer_ip,
                        extensions: exts
                            .into_iter()
                            .map(|(type_, words)| Extension { type_, contents: words.concat() })
                            .collect(),
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Random bytes never panic any parser.
            #[test]
            fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                let _ = Header::parse(&bytes);
                let _ = (is_control(&bytes), control_type(&bytes), dest_socket_id(&bytes));
                if let Ok((_, hs)) = Handshake::parse(&bytes) {
                    let _ = stream_id(&hs);
                    let _ = hs.rejection_reason();
                    let _ = decode_peer_ip(&hs.peer_ip);
                }
            }

            /// Random bytes behind a valid handshake header exercise the extension walk.
            #[test]
            fn random_handshake_tails_never_panic(tail in prop::collection::vec(any::<u8>(), 0..200)) {
                let mut pkt = super::CALLER_INDUCTION.to_vec();
                pkt.extend_from_slice(&tail);
                if let Ok((_, hs)) = Handshake::parse(&pkt) {
                    prop_assert_eq!(hs.encode(8094, 0), pkt);
                    let _ = stream_id(&hs);
                }
            }

            /// encode then parse gives the handshake and header back.
            #[test]
            fn handshake_round_trip(hs in handshake(), timestamp in any::<u32>(), dest in any::<u32>()) {
                let bytes = hs.encode(timestamp, dest);
                let (header, back) = Handshake::parse(&bytes).unwrap();
                prop_assert_eq!(header, ControlHeader { control_type: 0, subtype: 0, type_info: 0, timestamp, dest_socket_id: dest });
                prop_assert_eq!(back, hs);
            }

            /// Arbitrary text never panics the stream id parser, and NUL-free text survives the
            /// SID extension byte order.
            #[test]
            fn stream_ids(sid in "[^\\x00]{0,80}", items in prop::collection::vec("[a-z]{1,3}=[a-z/]{0,6}", 0..6)) {
                let _ = parse_stream_id(&sid);
                let _ = parse_stream_id(&format!("#!::{}", items.join(",")));
                let hs = Handshake {
                    version: 5, encryption_field: 0, extension_field: 5, initial_seq: 0, mtu: 1500,
                    flow_window: 8192, handshake_type: -1, socket_id: 1, syn_cookie: 1, peer_ip: [0; 16],
                    extensions: vec![encode_stream_id(&sid)],
                };
                let back = stream_id(&Handshake::parse(&hs.encode(0, 0)).unwrap().1);
                prop_assert_eq!(back, (!sid.is_empty()).then_some(sid.clone()));
            }
        }
    }
}
