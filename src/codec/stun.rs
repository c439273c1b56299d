//! STUN message parsing and first-byte demultiplexing for the WebRTC media port (sans-io).
//!
//! The WebRTC proxy receives every client datagram on one UDP socket: ICE connectivity checks
//! (STUN), DTLS and SRTP/SRTCP all share the 5-tuple (RFC 8445, RFC 5764). It never terminates
//! ICE, DTLS or SRTP; it only has to know which origin a datagram belongs to. The first STUN
//! binding request from a client carries `USERNAME = "<answer ufrag>:<offer ufrag>"`, which the
//! signaling exchange already tied to a stream, so the proxy reads that attribute, learns the
//! client's address, and from then on routes by address.
//!
//! - [`classify`] sorts a datagram by its first byte (RFC 7983 §7), with the STUN magic cookie
//!   as a second check, so DTLS and SRTP are never fed to the STUN parser.
//! - [`Message::parse`] validates the header and walks the attributes once; lookups such as
//!   [`Message::username`] then borrow from the datagram without copying.
//! - [`split_username`] separates the two ICE ufrags.
//!
//! Integrity (MESSAGE-INTEGRITY, FINGERPRINT) is not checked here: the origin, which knows the
//! ICE password, checks it, and a forged check only reaches the origin of the session it names.
#![deny(clippy::indexing_slicing)]

use thiserror::Error;

/// The fixed value in bytes 4..8 of every RFC 5389/8489 STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header: type, length, magic cookie, transaction id.
pub const HEADER_LEN: usize = 20;
/// Message type of a Binding request (method 0x001, class request).
pub const BINDING_REQUEST: u16 = 0x0001;
/// Attribute type of USERNAME.
pub const ATTR_USERNAME: u16 = 0x0006;
/// Attribute type of MESSAGE-INTEGRITY (HMAC-SHA1).
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// Attribute type of PRIORITY (ICE).
pub const ATTR_PRIORITY: u16 = 0x0024;
/// Attribute type of USE-CANDIDATE (ICE).
pub const ATTR_USE_CANDIDATE: u16 = 0x0025;
/// Attribute type of SOFTWARE.
pub const ATTR_SOFTWARE: u16 = 0x8022;
/// Attribute type of FINGERPRINT (CRC-32).
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// Attribute type of ICE-CONTROLLED.
pub const ATTR_ICE_CONTROLLED: u16 = 0x8029;
/// Attribute type of ICE-CONTROLLING.
pub const ATTR_ICE_CONTROLLING: u16 = 0x802A;
/// Longest USERNAME [`Message::username`] returns, in bytes.
///
/// An ICE username is two ufrags of at most 256 characters (RFC 8839 §5.4) joined by a colon,
/// so 513 bytes; anything longer cannot name an ICE session. (RFC 8489 §14.3 has senders stay
/// under 509 bytes and receivers accept up to 763 for RFC 5389 compatibility; both are moot for
/// a lookup key that must be an ICE username.)
pub const MAX_USERNAME_LEN: usize = 513;

/// Minimum DTLS datagram: one 13-byte record header.
const DTLS_MIN_LEN: usize = 13;
/// Minimum SRTP/SRTCP datagram: the 12-byte RTP header (SRTCP: 8-byte header, 4-byte index).
const RTP_MIN_LEN: usize = 12;

/// What a datagram on the WebRTC media port is, by RFC 7983 first-byte demultiplexing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// First byte 0..=3, at least 20 bytes, and the magic cookie in bytes 4..8.
    Stun,
    /// First byte 20..=63 (a DTLS record content type) and at least a record header.
    Dtls,
    /// First byte 128..=191 (RTP version 2) and at least 12 bytes: SRTP or SRTCP.
    Rtp,
    /// Anything else: ZRTP (16..=19), TURN channel data (64..=79), a STUN-range first byte
    /// without the magic cookie (pre-RFC 5389 STUN, which ICE never uses), or a runt.
    Unknown,
}

/// Classifies a datagram received on the WebRTC media port.
///
/// The magic cookie must be present (a first byte of 0x00/0x01 is not enough), so a stray
/// datagram is not parsed as an ICE check.
pub fn classify(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(0..=3) if datagram.len() >= HEADER_LEN && cookie(datagram) == Some(MAGIC_COOKIE) => Kind::Stun,
        Some(20..=63) if datagram.len() >= DTLS_MIN_LEN => Kind::Dtls,
        Some(128..=191) if datagram.len() >= RTP_MIN_LEN => Kind::Rtp,
        _ => Kind::Unknown,
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

fn cookie(datagram: &[u8]) -> Option<u32> {
    let b: [u8; 4] = datagram.get(4..8)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Why a datagram is not a well-formed STUN message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StunError {
    /// Fewer than the 20 header bytes.
    #[error("{0} bytes is shorter than a STUN header (20)")]
    TooShort(usize),
    /// One of the two most significant bits of the message type is set (RFC 8489 §5): not STUN.
    #[error("message type {0:#06x} has a top bit set")]
    NotStun(u16),
    /// Bytes 4..8 are not 0x2112A442.
    #[error("magic cookie {0:#010x} is not 0x2112a442")]
    BadMagicCookie(u32),
    /// The header's message length is not a multiple of 4 (attributes are padded to 4 bytes).
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The header's message length disagrees with the bytes after the header. A datagram holds
    /// exactly one message, so both a short and a long datagram are refused.
    #[error("message length {declared} but {actual} bytes follow the header")]
    LengthMismatch {
        /// Length from the header.
        declared: u16,
        /// Bytes actually after the header.
        actual: usize,
    },
    /// An attribute header or value runs past the end of the message.
    #[error("attribute {attr_type:#06x} at offset {offset} runs past the end of the message")]
    TruncatedAttribute {
        /// Type of the attribute (0 if even its header is cut off).
        attr_type: u16,
        /// Offset of the attribute header from the start of the datagram.
        offset: usize,
    },
}

/// A STUN message borrowed from its datagram, already validated by [`Message::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The 14-bit message type: method and class bits interleaved (RFC 8489 §5).
    pub class_method: u16,
    /// The 96-bit transaction id, which a response echoes.
    pub transaction_id: [u8; 12],
    /// The attribute bytes after the header; every attribute in it is known to be in bounds.
    attributes: &'a [u8],
}

/// One attribute: its type and value (without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute type (0x0006 USERNAME, ...).
    pub attr_type: u16,
    /// The value, `length` bytes, padding excluded.
    pub value: &'a [u8],
}

/// The four message classes (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// C1C0 = 00.
    Request,
    /// C1C0 = 01.
    Indication,
    /// C1C0 = 10.
    SuccessResponse,
    /// C1C0 = 11.
    ErrorResponse,
}

/// Iterator over the attributes of a parsed [`Message`], in wire order.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        // `parse` already walked these bytes, so every step here is in bounds; an inconsistent
        // slice just ends the iteration.
        let attr_type = be16(self.rest, 0)?;
        let len = usize::from(be16(self.rest, 2)?);
        let value = self.rest.get(4..4 + len)?;
        self.rest = self.rest.get(4 + padded(len)..).unwrap_or_default();
        Some(Attribute { attr_type, value })
    }
}

fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

impl<'a> Message<'a> {
    /// Parses one STUN message that fills `datagram` exactly.
    ///
    /// Checks, in order: at least 20 bytes, the two top bits of the type are zero, the magic
    /// cookie, the message length is a multiple of 4 and equals the bytes that follow, and every
    /// attribute (4-byte header, value, padding to 4 bytes) lies inside the message. Padding
    /// bytes are not required to be zero (RFC 5769's sample pads with spaces).
    pub fn parse(datagram: &'a [u8]) -> Result<Message<'a>, StunError> {
        let (Some(class_method), Some(length), Some(magic), Some(tid), Some(attributes)) = (
            be16(datagram, 0),
            be16(datagram, 2),
            cookie(datagram),
            datagram.get(8..HEADER_LEN),
            datagram.get(HEADER_LEN..),
        ) else {
            return Err(StunError::TooShort(datagram.len()));
        };
        if class_method & 0xC000 != 0 {
            return Err(StunError::NotStun(class_method));
        }
        if magic != MAGIC_COOKIE {
            return Err(StunError::BadMagicCookie(magic));
        }
        if length % 4 != 0 {
            return Err(StunError::UnalignedLength(length));
        }
        if usize::from(length) != attributes.len() {
            return Err(StunError::LengthMismatch { declared: length, actual: attributes.len() });
        }
        let mut offset = 0;
        while offset < attributes.len() {
            let header_at = HEADER_LEN + offset;
            let (Some(attr_type), Some(len)) = (be16(attributes, offset), be16(attributes, offset + 2)) else {
                return Err(StunError::TruncatedAttribute { attr_type: 0, offset: header_at });
            };
            // The message length is a multiple of 4 and so is `offset`, so a value that fits
            // leaves room for its padding too.
            let end = offset + 4 + usize::from(len);
            if end > attributes.len() {
                return Err(StunError::TruncatedAttribute { attr_type, offset: header_at });
            }
            offset += 4 + padded(usize::from(len));
        }
        let transaction_id = tid.try_into().unwrap_or_default();
        Ok(Message { class_method, transaction_id, attributes })
    }

    /// The method: the 12 `M` bits of the message type (0x001 for Binding).
    pub fn method(&self) -> u16 {
        let t = self.class_method;
        (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    }

    /// The class: the two `C` bits of the message type.
    pub fn class(&self) -> Class {
        match ((self.class_method >> 7) & 0b10) | ((self.class_method >> 4) & 0b01) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }

    /// Whether this is a Binding request: an ICE connectivity check (or a plain STUN query).
    pub fn is_binding_request(&self) -> bool {
        self.class_method == BINDING_REQUEST
    }

    /// All attributes in wire order, including any after MESSAGE-INTEGRITY (which RFC 8489
    /// §14.5 tells an authenticating receiver to ignore; nothing is authenticated here).
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes { rest: self.attributes }
    }

    /// The value of the first attribute of type `attr_type`, without padding.
    pub fn attribute(&self, attr_type: u16) -> Option<&'a [u8]> {
        self.attributes().find(|a| a.attr_type == attr_type).map(|a| a.value)
    }

    /// The first USERNAME, for ICE `"<answer ufrag>:<offer ufrag>"`.
    ///
    /// `None` when there is none, when it is not UTF-8, or when it is longer than
    /// [`MAX_USERNAME_LEN`]: such a value can never match a session, and the message itself is
    /// still well formed, so this is not a parse error.
    pub fn username(&self) -> Option<&'a str> {
        let value = self.attribute(ATTR_USERNAME)?;
        if value.len() > MAX_USERNAME_LEN {
            return None;
        }
        std::str::from_utf8(value).ok()
    }
}

/// Splits an ICE USERNAME into `(answer ufrag, offer ufrag)`.
///
/// In a connectivity check the sender writes the receiver's ufrag first (RFC 8445 §7.2.2): a
/// check from the offerer (the browser, for WHIP and WHEP) to the answerer (the origin) carries
/// `answerUfrag:offerUfrag`. The proxy's session key is the whole string, exactly as the SRS
/// proxy stores it; the parts are for logging and for matching one side only. `None` unless both
/// parts are non-empty and there is exactly one colon (ufrags are `ice-char`s, RFC 8839 §5.4,
/// which exclude `:`).
pub fn split_username(username: &str) -> Option<(&str, &str)> {
    let (answer, offer) = username.split_once(':')?;
    (!answer.is_empty() && !offer.is_empty() && !offer.contains(':')).then_some((answer, offer))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// RFC 5769 §2.1 "Sample Request": a Binding request as an ICE agent sends it, with
    /// SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME "evtj:h6vY" (padded with spaces),
    /// MESSAGE-INTEGRITY and FINGERPRINT.
    const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87,
        0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c,
        0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f,
        0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76,
        0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
    ];

    /// A Binding request with the given attributes (type, value), correctly padded.
    fn message(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            body.resize(padded(body.len()), 0);
        }
        let mut out = vec![0x00, 0x01];
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&[7; 12]);
        out.extend(body);
        out
    }

    #[test]
    fn rfc5769_sample_request() {
        let m = Message::parse(&RFC5769_REQUEST).unwrap();
        assert!(m.is_binding_request());
        assert_eq!(m.method(), 0x001);
        assert_eq!(m.class(), Class::Request);
        assert_eq!(m.transaction_id, [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae]);
        assert_eq!(m.username(), Some("evtj:h6vY"));
        assert_eq!(split_username(m.username().unwrap()), Some(("evtj", "h6vY")));
        assert_eq!(m.attribute(ATTR_SOFTWARE), Some(&b"STUN test client"[..]));
        assert_eq!(m.attribute(ATTR_PRIORITY), Some(&[0x6e, 0x00, 0x01, 0xff][..]));
        assert_eq!(m.attribute(ATTR_ICE_CONTROLLED).map(<[u8]>::len), Some(8));
        assert_eq!(m.attribute(ATTR_MESSAGE_INTEGRITY).map(<[u8]>::len), Some(20));
        assert_eq!(m.attribute(ATTR_FINGERPRINT), Some(&[0xe5, 0x7a, 0x3b, 0xcf][..]));
        assert_eq!(m.attribute(ATTR_USE_CANDIDATE), None);
        let types: Vec<u16> = m.attributes().map(|a| a.attr_type).collect();
        assert_eq!(
            types,
            [
                ATTR_SOFTWARE,
                ATTR_PRIORITY,
                ATTR_ICE_CONTROLLED,
                ATTR_USERNAME,
                ATTR_MESSAGE_INTEGRITY,
                ATTR_FINGERPRINT
            ]
        );
        assert_eq!(classify(&RFC5769_REQUEST), Kind::Stun);
    }

    #[test]
    fn classes_and_methods() {
        let mut response = RFC5769_REQUEST;
        response[0] = 0x01; // 0x0101: Binding success response
        let m = Message::parse(&response).unwrap();
        assert_eq!((m.method(), m.class()), (0x001, Class::SuccessResponse));
        assert!(!m.is_binding_request());
        response[1] = 0x11; // 0x0111: Binding error response
        assert_eq!(Message::parse(&response).unwrap().class(), Class::ErrorResponse);
        response[0] = 0x00; // 0x0011: Binding indication
        assert_eq!(Message::parse(&response).unwrap().class(), Class::Indication);
        let mut allocate = message(&[]);
        allocate[1] = 0x03; // Allocate request
        assert_eq!(Message::parse(&allocate).unwrap().method(), 0x003);
    }

    #[test]
    fn header_errors() {
        assert_eq!(Message::parse(&RFC5769_REQUEST[..19]), Err(StunError::TooShort(19)));
        assert_eq!(Message::parse(&[]), Err(StunError::TooShort(0)));

        let mut top_bits = RFC5769_REQUEST;
        top_bits[0] = 0x40;
        assert_eq!(Message::parse(&top_bits), Err(StunError::NotStun(0x4001)));

        let mut cookie = RFC5769_REQUEST;
        cookie[7] = 0x43;
        assert_eq!(Message::parse(&cookie), Err(StunError::BadMagicCookie(0x2112_a443)));

        let mut unaligned = RFC5769_REQUEST;
        unaligned[3] = 0x57;
        assert_eq!(Message::parse(&unaligned), Err(StunError::UnalignedLength(0x57)));

        // Declared 0x58 but one attribute short, and a datagram with trailing bytes.
        assert_eq!(
            Message::parse(&RFC5769_REQUEST[..100]),
            Err(StunError::LengthMismatch { declared: 0x58, actual: 80 })
        );
        let mut long = RFC5769_REQUEST.to_vec();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(Message::parse(&long), Err(StunError::LengthMismatch { declared: 0x58, actual: 92 }));
        let mut shorter_length = RFC5769_REQUEST;
        shorter_length[3] = 0x54;
        assert_eq!(Message::parse(&shorter_length), Err(StunError::LengthMismatch { declared: 0x54, actual: 0x58 }));
    }

    #[test]
    fn truncated_attribute() {
        // FINGERPRINT claims 8 bytes of value where 4 remain.
        let mut bad = RFC5769_REQUEST;
        bad[103] = 0x08;
        assert_eq!(
            Message::parse(&bad),
            Err(StunError::TruncatedAttribute { attr_type: ATTR_FINGERPRINT, offset: 100 })
        );
        // USERNAME claims 0xFFFF bytes.
        let mut bad = RFC5769_REQUEST;
        bad[62] = 0xff;
        bad[63] = 0xff;
        assert_eq!(Message::parse(&bad), Err(StunError::TruncatedAttribute { attr_type: ATTR_USERNAME, offset: 60 }));
        // A value that fits but whose padding would not cannot occur: the length is a multiple
        // of 4. The last value ending exactly at the end is fine.
        let m = message(&[(ATTR_USERNAME, b"abcd:efgh")]);
        assert_eq!(Message::parse(&m).unwrap().username(), Some("abcd:efgh"));
    }

    #[test]
    fn empty_message_and_empty_attribute() {
        let m = message(&[]);
        let parsed = Message::parse(&m).unwrap();
        assert_eq!(parsed.attributes().count(), 0);
        assert_eq!(parsed.username(), None);
        let m = message(&[(ATTR_USE_CANDIDATE, b""), (ATTR_USERNAME, b"a:b")]);
        let parsed = Message::parse(&m).unwrap();
        assert_eq!(parsed.attribute(ATTR_USE_CANDIDATE), Some(&b""[..]));
        assert_eq!(parsed.username(), Some("a:b"));
    }

    #[test]
    fn oversized_and_invalid_usernames_are_none() {
        // The largest USERNAME a STUN message can carry: 65528 bytes (64 KiB minus header room).
        let huge = vec![b'a'; 65_528];
        let m = message(&[(ATTR_USERNAME, &huge)]);
        assert_eq!(m.len(), HEADER_LEN + 65_532);
        let parsed = Message::parse(&m).unwrap();
        assert_eq!(parsed.attribute(ATTR_USERNAME).map(<[u8]>::len), Some(65_528));
        assert_eq!(parsed.username(), None);

        let longest = format!("{}:{}", "u".repeat(256), "v".repeat(256));
        let m = message(&[(ATTR_USERNAME, longest.as_bytes())]);
        assert_eq!(Message::parse(&m).unwrap().username(), Some(longest.as_str()));
        let too_long = format!("{longest}w");
        let m = message(&[(ATTR_USERNAME, too_long.as_bytes())]);
        assert_eq!(Message::parse(&m).unwrap().username(), None);

        let m = message(&[(ATTR_USERNAME, &[0xff, 0xfe, b':', b'a'])]);
        assert_eq!(Message::parse(&m).unwrap().username(), None);
    }

    #[test]
    fn first_username_wins() {
        let m = message(&[(ATTR_USERNAME, b"one:two"), (ATTR_USERNAME, b"three:four")]);
        assert_eq!(Message::parse(&m).unwrap().username(), Some("one:two"));
    }

    #[test]
    fn split_usernames() {
        assert_eq!(split_username("8b4f6k1r:Xa3f"), Some(("8b4f6k1r", "Xa3f")));
        assert_eq!(split_username("a+b/c:d"), Some(("a+b/c", "d")));
        assert_eq!(split_username("nocolon"), None);
        assert_eq!(split_username(":offer"), None);
        assert_eq!(split_username("answer:"), None);
        assert_eq!(split_username("a:b:c"), None);
        assert_eq!(split_username(""), None);
    }

    #[test]
    fn classification() {
        // DTLS 1.2 ClientHello record header: content type 22 (handshake), version fe fd.
        let client_hello = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc8, 1, 0, 0, 0xbc];
        assert_eq!(classify(&client_hello), Kind::Dtls);
        assert_eq!(classify(&client_hello[..12]), Kind::Unknown);
        // RTP version 2, no padding/extension/CSRC: 0x80; RTCP SR: 0x80 then PT 200.
        let mut rtp = [0u8; 172];
        rtp[0] = 0x80;
        rtp[1] = 111;
        assert_eq!(classify(&rtp), Kind::Rtp);
        let rtcp = [0x81, 200, 0, 6, 1, 2, 3, 4, 0, 0, 0, 0];
        assert_eq!(classify(&rtcp), Kind::Rtp);
        assert_eq!(classify(&[0x80; 11]), Kind::Unknown);
        assert_eq!(classify(&[0xbf; 12]), Kind::Rtp);
        assert_eq!(classify(&[0xc0; 12]), Kind::Unknown);
        // STUN range without the cookie (RFC 3489 STUN) and runts.
        let mut old_stun = RFC5769_REQUEST;
        old_stun[4] = 0;
        assert_eq!(classify(&old_stun), Kind::Unknown);
        assert_eq!(classify(&RFC5769_REQUEST[..19]), Kind::Unknown);
        assert_eq!(classify(&[]), Kind::Unknown);
        // ZRTP and TURN channel data.
        assert_eq!(classify(&[16; 64]), Kind::Unknown);
        assert_eq!(classify(&[0x40; 64]), Kind::Unknown);
        // Cookie-bearing STUN with a first byte of 2 or 3 (methods above 0x0FF) is still STUN.
        let mut high_method = RFC5769_REQUEST;
        high_method[0] = 0x03;
        assert_eq!(classify(&high_method), Kind::Stun);
    }

    mod property {
        use super::super::*;
        use super::message;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Random bytes never panic, and whatever parses walks consistently.
            #[test]
            fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = classify(&bytes);
                if let Ok(m) = Message::parse(&bytes) {
                    let total: usize = m.attributes().map(|a| 4 + padded(a.value.len())).sum();
                    prop_assert_eq!(total + HEADER_LEN, bytes.len());
                    let _ = m.username();
                    let _ = m.class();
                }
            }

            /// Random attribute lists behind a valid header: parse succeeds and gives them back.
            #[test]
            fn valid_messages_round_trip(
                attrs in prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..40)), 0..8),
            ) {
                let refs: Vec<(u16, &[u8])> = attrs.iter().map(|(t, v)| (*t, v.as_slice())).collect();
                let bytes = message(&refs);
                prop_assert_eq!(classify(&bytes), Kind::Stun);
                let m = Message::parse(&bytes).unwrap();
                let got: Vec<(u16, &[u8])> = m.attributes().map(|a| (a.attr_type, a.value)).collect();
                prop_assert_eq!(got, refs);
            }

            /// Any corruption of a valid message's length fields is an error, never a panic.
            #[test]
            fn mutated_sample_never_panics(at in 0usize..108, byte in any::<u8>(), cut in 0usize..=108) {
                let mut m = super::RFC5769_REQUEST.to_vec();
                m[at] = byte;
                m.truncate(cut);
                if let Ok(parsed) = Message::parse(&m) {
                    let _ = parsed.attributes().count();
                    let _ = parsed.username();
                }
            }
        }
    }
}
