//! AMF0 value model, decoder and encoder.
//!
//! The decoder never panics and never allocates more than the input can
//! justify: container capacities are capped by the bytes left in the input,
//! and nesting is limited to [`MAX_DEPTH`] levels.
#![deny(clippy::indexing_slicing)]

use thiserror::Error;

/// Maximum nesting depth of objects and arrays accepted by the decoder.
pub const MAX_DEPTH: usize = 32;

/// AMF0 type markers.
mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const MOVIE_CLIP: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
    pub const UNSUPPORTED: u8 = 0x0D;
    pub const RECORD_SET: u8 = 0x0E;
    pub const XML_DOCUMENT: u8 = 0x0F;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVM_PLUS: u8 = 0x11;
}

/// One AMF0 value.
///
/// Objects keep their properties as an ordered list so that re-encoding a
/// decoded value reproduces the original property order.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// IEEE-754 double (marker 0x00).
    Number(f64),
    /// Boolean (marker 0x01).
    Boolean(bool),
    /// UTF-8 string of at most 65535 bytes (marker 0x02).
    String(String),
    /// Anonymous object (marker 0x03).
    Object(Vec<(String, Amf0Value)>),
    /// Null (marker 0x05).
    Null,
    /// Undefined (marker 0x06).
    Undefined,
    /// Reference to an earlier complex value by index (marker 0x07); not resolved.
    Reference(u16),
    /// Associative array (marker 0x08); the declared count is ignored on decode.
    EcmaArray(Vec<(String, Amf0Value)>),
    /// Dense array (marker 0x0A).
    StrictArray(Vec<Amf0Value>),
    /// Date: milliseconds since the Unix epoch and a time-zone field (marker 0x0B).
    Date {
        /// Milliseconds since 1970-01-01 UTC.
        millis: f64,
        /// Time-zone offset field (spec says it should be 0).
        tz: i16,
    },
    /// UTF-8 string with a 32-bit length (marker 0x0C).
    LongString(String),
    /// The "unsupported" marker (0x0D), which carries no data.
    Unsupported,
    /// XML document as a long string (marker 0x0F).
    XmlDocument(String),
    /// Object with a registered class name (marker 0x10).
    TypedObject {
        /// Class alias.
        class_name: String,
        /// Properties in wire order.
        properties: Vec<(String, Amf0Value)>,
    },
}

/// Errors from AMF0 decoding.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Amf0Error {
    /// The input ended inside a value.
    #[error("AMF0 input truncated at offset {offset}: {needed} more bytes needed")]
    Truncated {
        /// Offset at which the missing bytes were expected.
        offset: usize,
        /// How many more bytes were needed at that point.
        needed: usize,
    },
    /// A marker byte that AMF0 does not define.
    #[error("unknown AMF0 marker 0x{marker:02x} at offset {offset}")]
    UnknownMarker {
        /// The marker byte.
        marker: u8,
        /// Offset of the marker.
        offset: usize,
    },
    /// A defined but unsupported marker (movie clip, record set, AVM+ switch to AMF3).
    #[error("AMF0 marker 0x{marker:02x} at offset {offset} is reserved or needs AMF3")]
    UnsupportedMarker {
        /// The marker byte.
        marker: u8,
        /// Offset of the marker.
        offset: usize,
    },
    /// Objects/arrays nested deeper than [`MAX_DEPTH`].
    #[error("AMF0 nesting deeper than {limit} levels at offset {offset}")]
    DepthExceeded {
        /// The configured limit.
        limit: usize,
        /// Offset of the container that went too deep.
        offset: usize,
    },
    /// A string whose bytes are not valid UTF-8.
    #[error("invalid UTF-8 in AMF0 string at offset {offset}")]
    InvalidUtf8 {
        /// Offset of the string bytes.
        offset: usize,
    },
    /// An object-end marker (0x09) where a value was expected.
    #[error("unexpected AMF0 object-end marker at offset {offset}")]
    UnexpectedObjectEnd {
        /// Offset of the marker.
        offset: usize,
    },
}

impl Amf0Value {
    /// Looks up `key` in an object, ECMA array or typed object (first match).
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        let props = match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => p,
            Amf0Value::TypedObject { properties, .. } => properties,
            _ => return None,
        };
        props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The text of a `String`, `LongString` or `XmlDocument`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) | Amf0Value::LongString(s) | Amf0Value::XmlDocument(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a `Number`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value of a `Boolean`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// Builds an `Object` from `(key, value)` pairs.
    pub fn object<'a>(props: impl IntoIterator<Item = (&'a str, Amf0Value)>) -> Self {
        Amf0Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// Builds a `String` value.
    pub fn string(s: impl Into<String>) -> Self {
        Amf0Value::String(s.into())
    }

    /// Short name of the variant, for diagnostics.
    pub fn kind(&self) -> &'static str {
        match self {
            Amf0Value::Number(_) => "number",
            Amf0Value::Boolean(_) => "boolean",
            Amf0Value::String(_) => "string",
            Amf0Value::Object(_) => "object",
            Amf0Value::Null => "null",
            Amf0Value::Undefined => "undefined",
            Amf0Value::Reference(_) => "reference",
            Amf0Value::EcmaArray(_) => "ecma-array",
            Amf0Value::StrictArray(_) => "strict-array",
            Amf0Value::Date { .. } => "date",
            Amf0Value::LongString(_) => "long-string",
            Amf0Value::Unsupported => "unsupported",
            Amf0Value::XmlDocument(_) => "xml-document",
            Amf0Value::TypedObject { .. } => "typed-object",
        }
    }
}

/// Decodes one value from the start of `input`; returns it and the bytes used.
pub fn decode(input: &[u8]) -> Result<(Amf0Value, usize), Amf0Error> {
    let mut reader = Reader { buf: input, pos: 0 };
    let value = reader.value(0)?;
    Ok((value, reader.pos))
}

/// Decodes consecutive values until `input` is exhausted.
pub fn decode_all(input: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut reader = Reader { buf: input, pos: 0 };
    let mut values = Vec::new();
    while reader.remaining() > 0 {
        values.push(reader.value(0)?);
    }
    Ok(values)
}

/// Bounds-checked cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Amf0Error> {
        let truncated = Amf0Error::Truncated { offset: self.pos, needed: n.saturating_sub(self.remaining()) };
        let end = self.pos.checked_add(n).ok_or(truncated.clone())?;
        let bytes = self.buf.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Amf0Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    fn utf8(&mut self, len: usize) -> Result<String, Amf0Error> {
        let offset = self.pos;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Amf0Error::InvalidUtf8 { offset })
    }

    fn short_string(&mut self) -> Result<String, Amf0Error> {
        let len = self.u16()?;
        self.utf8(usize::from(len))
    }

    fn long_string(&mut self) -> Result<String, Amf0Error> {
        let len = self.u32()?;
        self.utf8(usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        let offset = self.pos;
        let m = self.u8()?;
        match m {
            marker::NUMBER => Ok(Amf0Value::Number(self.f64()?)),
            marker::BOOLEAN => Ok(Amf0Value::Boolean(self.u8()? != 0)),
            marker::STRING => Ok(Amf0Value::String(self.short_string()?)),
            marker::NULL => Ok(Amf0Value::Null),
            marker::UNDEFINED => Ok(Amf0Value::Undefined),
            marker::REFERENCE => Ok(Amf0Value::Reference(self.u16()?)),
            marker::DATE => self.date(),
            marker::LONG_STRING => Ok(Amf0Value::LongString(self.long_string()?)),
            marker::UNSUPPORTED => Ok(Amf0Value::Unsupported),
            marker::XML_DOCUMENT => Ok(Amf0Value::XmlDocument(self.long_string()?)),
            marker::OBJECT_END => Err(Amf0Error::UnexpectedObjectEnd { offset }),
            marker::MOVIE_CLIP | marker::RECORD_SET | marker::AVM_PLUS => {
                Err(Amf0Error::UnsupportedMarker { marker: m, offset })
            }
            _ => self.container(m, child_depth(depth, offset)?, offset),
        }
    }

    fn date(&mut self) -> Result<Amf0Value, Amf0Error> {
        let millis = self.f64()?;
        let tz = i16::from_be_bytes(self.array()?);
        Ok(Amf0Value::Date { millis, tz })
    }

    fn container(&mut self, m: u8, depth: usize, offset: usize) -> Result<Amf0Value, Amf0Error> {
        match m {
            marker::OBJECT => Ok(Amf0Value::Object(self.properties(depth)?)),
            marker::ECMA_ARRAY => {
                let _approximate_count = self.u32()?;
                Ok(Amf0Value::EcmaArray(self.properties(depth)?))
            }
            marker::STRICT_ARRAY => Ok(Amf0Value::StrictArray(self.strict_array(depth)?)),
            marker::TYPED_OBJECT => {
                let class_name = self.short_string()?;
                let properties = self.properties(depth)?;
                Ok(Amf0Value::TypedObject { class_name, properties })
            }
            _ => Err(Amf0Error::UnknownMarker { marker: m, offset }),
        }
    }

    /// Reads `key value` pairs up to and including the empty-key + 0x09 terminator.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        let mut props = Vec::new();
        loop {
            let key = self.short_string()?;
            if key.is_empty() && self.buf.get(self.pos) == Some(&marker::OBJECT_END) {
                self.pos = self.pos.saturating_add(1);
                return Ok(props);
            }
            let value = self.value(depth)?;
            props.push((key, value));
        }
    }

    fn strict_array(&mut self, depth: usize) -> Result<Vec<Amf0Value>, Amf0Error> {
        let count = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        // Every value takes at least one byte, so this caps the allocation.
        let mut items = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            items.push(self.value(depth)?);
        }
        Ok(items)
    }
}

fn child_depth(depth: usize, offset: usize) -> Result<usize, Amf0Error> {
    let next = depth.saturating_add(1);
    if next > MAX_DEPTH {
        return Err(Amf0Error::DepthExceeded { limit: MAX_DEPTH, offset });
    }
    Ok(next)
}

/// Appends the AMF0 encoding of `value` to `out`.
///
/// A `String` longer than 65535 bytes is written as a long string. Property
/// keys longer than 65535 bytes are truncated at a character boundary, and
/// lengths/counts beyond `u32::MAX` are truncated; neither occurs in practice.
pub fn encode(value: &Amf0Value, out: &mut Vec<u8>) {
    match value {
        Amf0Value::Number(n) => {
            out.push(marker::NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0Value::Boolean(b) => out.extend_from_slice(&[marker::BOOLEAN, u8::from(*b)]),
        Amf0Value::String(s) if s.len() <= usize::from(u16::MAX) => {
            out.push(marker::STRING);
            put_short_string(s, out);
        }
        Amf0Value::String(s) | Amf0Value::LongString(s) => {
            out.push(marker::LONG_STRING);
            put_long_string(s, out);
        }
        Amf0Value::Null => out.push(marker::NULL),
        Amf0Value::Undefined => out.push(marker::UNDEFINED),
        Amf0Value::Unsupported => out.push(marker::UNSUPPORTED),
        Amf0Value::Reference(i) => {
            out.push(marker::REFERENCE);
            out.extend_from_slice(&i.to_be_bytes());
        }
        Amf0Value::Date { millis, tz } => {
            out.push(marker::DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&tz.to_be_bytes());
        }
        Amf0Value::XmlDocument(s) => {
            out.push(marker::XML_DOCUMENT);
            put_long_string(s, out);
        }
        _ => encode_container(value, out),
    }
}

fn encode_container(value: &Amf0Value, out: &mut Vec<u8>) {
    match value {
        Amf0Value::Object(props) => {
            out.push(marker::OBJECT);
            put_properties(props, out);
        }
        Amf0Value::EcmaArray(props) => {
            out.push(marker::ECMA_ARRAY);
            out.extend_from_slice(&clamp_u32(props.len()).to_be_bytes());
            put_properties(props, out);
        }
        Amf0Value::StrictArray(items) => {
            out.push(marker::STRICT_ARRAY);
            let count = clamp_u32(items.len());
            out.extend_from_slice(&count.to_be_bytes());
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            items.iter().take(count).for_each(|v| encode(v, out));
        }
        Amf0Value::TypedObject { class_name, properties } => {
            out.push(marker::TYPED_OBJECT);
            put_short_string(class_name, out);
            put_properties(properties, out);
        }
        _ => {}
    }
}

/// Convenience: encodes several values back to back into a new buffer.
pub fn encode_all<'a>(values: impl IntoIterator<Item = &'a Amf0Value>) -> Vec<u8> {
    let mut out = Vec::new();
    values.into_iter().for_each(|v| encode(v, &mut out));
    out
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_properties(props: &[(String, Amf0Value)], out: &mut Vec<u8>) {
    for (key, value) in props {
        put_short_string(key, out);
        encode(value, out);
    }
    out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
}

fn put_short_string(s: &str, out: &mut Vec<u8>) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let bytes = s.as_bytes().get(..end).unwrap_or_default();
    out.extend_from_slice(&u16::try_from(end).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_long_string(s: &str, out: &mut Vec<u8>) {
    let len = clamp_u32(s.len());
    let end = usize::try_from(len).unwrap_or(usize::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes().get(..end).unwrap_or_default());
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(super) mod tests {
    use super::*;

    fn roundtrip(v: &Amf0Value) {
        let mut buf = Vec::new();
        encode(v, &mut buf);
        let (back, used) = decode(&buf).unwrap();
        assert_eq!(&back, v);
        assert_eq!(used, buf.len());
    }

    fn sample_values() -> Vec<Amf0Value> {
        vec![
            Amf0Value::Number(1.5),
            Amf0Value::Boolean(true),
            Amf0Value::string("héllo"),
            Amf0Value::Null,
            Amf0Value::Undefined,
            Amf0Value::Reference(7),
            Amf0Value::Date { millis: 1.7e12, tz: 0 },
            Amf0Value::LongString("long".into()),
            Amf0Value::Unsupported,
            Amf0Value::XmlDocument("<a/>".into()),
            Amf0Value::object([("a", Amf0Value::Number(1.0)), ("", Amf0Value::Null)]),
            Amf0Value::EcmaArray(vec![("duration".into(), Amf0Value::Number(0.0))]),
            Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::string("x")]),
            Amf0Value::TypedObject {
                class_name: "Cls".into(),
                properties: vec![("k".into(), Amf0Value::Boolean(false))],
            },
        ]
    }

    #[test]
    fn roundtrips_every_variant() {
        sample_values().iter().for_each(roundtrip);
        roundtrip(&Amf0Value::StrictArray(sample_values()));
    }

    #[test]
    fn decodes_hand_built_connect_command() {
        let bytes = ffmpeg_connect_bytes();
        let values = decode_all(&bytes).unwrap();
        assert_eq!(values.len(), 3);
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[1].as_f64(), Some(1.0));
        let obj = &values[2];
        assert_eq!(obj.get("app").and_then(Amf0Value::as_str), Some("live"));
        assert_eq!(obj.get("type").and_then(Amf0Value::as_str), Some("nonprivate"));
        let fv = obj.get("flashVer").and_then(Amf0Value::as_str);
        assert_eq!(fv, Some("FMLE/3.0 (compatible; Lavf59.27.100)"));
        let tc = obj.get("tcUrl").and_then(Amf0Value::as_str);
        assert_eq!(tc, Some("rtmp://127.0.0.1:11935/live"));
        assert_eq!(obj.get("missing"), None);
    }

    /// Bytes as ffmpeg's `gen_connect` writes them for a publisher.
    pub fn ffmpeg_connect_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"\x02\x00\x07connect");
        b.extend_from_slice(b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00");
        b.extend_from_slice(b"\x03");
        b.extend_from_slice(b"\x00\x03app\x02\x00\x04live");
        b.extend_from_slice(b"\x00\x04type\x02\x00\x0anonprivate");
        b.extend_from_slice(b"\x00\x08flashVer\x02\x00\x24FMLE/3.0 (compatible; Lavf59.27.100)");
        b.extend_from_slice(b"\x00\x05tcUrl\x02\x00\x1brtmp://127.0.0.1:11935/live");
        b.extend_from_slice(b"\x00\x00\x09");
        b
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = Vec::new();
        encode(&Amf0Value::StrictArray(sample_values()), &mut buf);
        for len in 0..buf.len() {
            assert!(decode(&buf[..len]).is_err(), "len {len}");
        }
        let connect = ffmpeg_connect_bytes();
        for len in 0..connect.len() {
            let r = decode_all(&connect[..len]);
            assert!(len == 0 || len == 10 || len == 19 || r.is_err(), "len {len}");
        }
    }

    #[test]
    fn huge_declared_counts_do_not_preallocate() {
        let bytes = [marker::STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF, marker::NULL];
        assert!(matches!(decode(&bytes), Err(Amf0Error::Truncated { .. })));
        let long = [marker::LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF, b'a'];
        assert!(matches!(decode(&long), Err(Amf0Error::Truncated { .. })));
    }

    #[test]
    fn depth_limit_is_enforced() {
        let nest = |levels: usize| {
            let mut v = Amf0Value::Null;
            for _ in 0..levels {
                v = Amf0Value::StrictArray(vec![v]);
            }
            let mut buf = Vec::new();
            encode(&v, &mut buf);
            buf
        };
        assert!(decode(&nest(MAX_DEPTH)).is_ok());
        let err = decode(&nest(MAX_DEPTH + 1)).unwrap_err();
        assert!(matches!(err, Amf0Error::DepthExceeded { .. }));
    }

    #[test]
    fn markers_classified() {
        for m in [0x04u8, 0x0E, 0x11] {
            assert!(matches!(decode(&[m]), Err(Amf0Error::UnsupportedMarker { .. })));
        }
        assert!(matches!(decode(&[0x12]), Err(Amf0Error::UnknownMarker { .. })));
        assert!(matches!(decode(&[0x09]), Err(Amf0Error::UnexpectedObjectEnd { .. })));
        let bad_utf8 = [marker::STRING, 0, 1, 0xFF];
        assert!(matches!(decode(&bad_utf8), Err(Amf0Error::InvalidUtf8 { .. })));
    }

    #[test]
    fn long_strings_switch_marker() {
        let s = "x".repeat(70_000);
        let mut buf = Vec::new();
        encode(&Amf0Value::String(s.clone()), &mut buf);
        assert_eq!(buf[0], marker::LONG_STRING);
        assert_eq!(decode(&buf).unwrap().0, Amf0Value::LongString(s));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..10_000 {
            let len = (next() % 64) as usize;
            // Bias towards valid markers so decoding goes deep.
            let buf: Vec<u8> = (0..len).map(|_| (next() % 20) as u8).collect();
            let _ = decode_all(&buf);
        }
    }
}
