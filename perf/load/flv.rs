//! FLV: the tags of a file as RTMP message payloads with timestamps relative to the first tag
//! (loaded once and shared by every publisher and by the HTTP-FLV origin), writing tags back
//! as FLV ([`write_header`], [`write_tag`]), and counting the tags of a received FLV stream
//! ([`TagReader`], constant memory whatever the tag sizes).
//!
//! Audio (8) and video (9) tags are kept as they are; an `onMetaData` script tag (18) gets the
//! `@setDataFrame` prefix publishers send; other script tags are dropped. A truncated last tag
//! ends the file (as players do). Nothing here panics on a malformed file or stream.

use std::path::Path;

use streamgate::codec::rtmp::amf0::{self, Amf0Value};
use streamgate::codec::rtmp::message::{AUDIO, DATA_AMF0, VIDEO};

use crate::stats::Batch;

/// Largest FLV file accepted (it is held in memory).
const MAX_FILE_BYTES: u64 = 1 << 30;
/// Frame gap assumed when the file has fewer than two video (or audio) tags.
const DEFAULT_GAP_MS: u64 = 40;
/// Length of the AMF0 string `@setDataFrame` that [`Tag::data`] of a metadata tag starts with.
const SET_DATA_FRAME_LEN: usize = 3 + "@setDataFrame".len();
/// FLV tag header length (type, size, timestamp, stream id).
const TAG_HEADER: usize = 11;

/// One tag, ready to be sent as an RTMP message.
#[derive(Debug)]
pub struct Tag {
    /// RTMP message type: 8 audio, 9 video, 18 data (`@setDataFrame onMetaData`).
    pub type_id: u8,
    /// Milliseconds since the file's first tag.
    pub ts: u64,
    /// Message payload.
    pub data: Vec<u8>,
}

impl Tag {
    /// The tag body as an FLV file carries it (metadata without the `@setDataFrame` prefix).
    pub fn flv_data(&self) -> &[u8] {
        match self.type_id {
            DATA_AMF0 => self.data.get(SET_DATA_FRAME_LEN..).unwrap_or_default(),
            _ => &self.data,
        }
    }

    /// Whether this is a video keyframe (frame type 1).
    pub fn is_keyframe(&self) -> bool {
        self.type_id == VIDEO && self.data.first().is_some_and(|b| b >> 4 == 1)
    }

    /// Whether this is a decoder configuration a player needs before any frame: an AVC or
    /// HEVC sequence header, an enhanced-FLV video sequence start, or an AAC sequence header.
    pub fn is_sequence_header(&self) -> bool {
        let (first, second) = (self.data.first().copied().unwrap_or(0), self.data.get(1).copied());
        match self.type_id {
            VIDEO if first & 0x80 != 0 => first & 0x0F == 0, // enhanced FLV: PacketTypeSequenceStart
            VIDEO => matches!(first & 0x0F, 7 | 12) && second == Some(0),
            AUDIO => first >> 4 == 10 && second == Some(0),
            _ => false,
        }
    }
}

/// A loaded FLV file.
#[derive(Debug)]
pub struct Flv {
    /// Tags in file order.
    pub tags: Vec<Tag>,
    /// Timestamp offset added per loop: last tag's time plus one frame gap.
    pub loop_ms: u64,
    /// Payload bytes of the audio and video tags (one loop).
    pub media_bytes: u64,
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Flv, String> {
    let what = |e: &dyn std::fmt::Display| format!("--flv {}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(|e| what(&e))?.len();
    if len > MAX_FILE_BYTES {
        return Err(what(&format!("{len} bytes, more than the {MAX_FILE_BYTES} accepted")));
    }
    let bytes = std::fs::read(path).map_err(|e| what(&e))?;
    parse(&bytes).map_err(|e| what(&e))
}

/// Parses a whole FLV file.
pub fn parse(b: &[u8]) -> Result<Flv, String> {
    if b.get(..3) != Some(b"FLV") {
        return Err("not an FLV file (no FLV signature)".to_owned());
    }
    let header_len = be(b, 5, 4).max(9);
    let mut pos = usize::try_from(header_len).unwrap_or(usize::MAX).saturating_add(4);
    let mut tags = Vec::new();
    while let Some((tag, next)) = read_tag(b, pos) {
        pos = next;
        if let Some(tag) = tag {
            tags.push(tag);
        }
    }
    finish(tags)
}

/// Reads the tag at `pos`; `None` at the end or a truncated tag, `Some((None, next))` for a
/// tag that is skipped.
fn read_tag(b: &[u8], pos: usize) -> Option<(Option<Tag>, usize)> {
    let header = b.get(pos..pos.checked_add(11)?)?;
    let kind = header.first().copied().unwrap_or(0) & 0x1F;
    let size = usize::try_from(be(header, 1, 3)).ok()?;
    let ts = (be(header, 7, 1) << 24) | be(header, 4, 3);
    let start = pos.checked_add(11)?;
    let end = start.checked_add(size)?;
    let data = b.get(start..end)?;
    let next = end.saturating_add(4);
    let tag = match kind {
        AUDIO | VIDEO if !data.is_empty() => Some(Tag { type_id: kind, ts: u64::from(ts), data: data.to_vec() }),
        DATA_AMF0 => metadata(data).map(|data| Tag { type_id: DATA_AMF0, ts: u64::from(ts), data }),
        _ => None,
    };
    Some((tag, next))
}

/// `@setDataFrame` + the tag body when the tag is `onMetaData`.
fn metadata(data: &[u8]) -> Option<Vec<u8>> {
    let (first, _) = amf0::decode(data).ok()?;
    if first.as_str() != Some("onMetaData") {
        return None;
    }
    let mut out = Vec::with_capacity(data.len().saturating_add(16));
    amf0::encode(&Amf0Value::string("@setDataFrame"), &mut out);
    out.extend_from_slice(data);
    Some(out)
}

/// Rebases timestamps on the first tag and computes the loop length.
fn finish(mut tags: Vec<Tag>) -> Result<Flv, String> {
    let media: Vec<&Tag> = tags.iter().filter(|t| t.type_id != DATA_AMF0).collect();
    if media.is_empty() {
        return Err("no audio or video tags".to_owned());
    }
    let media_bytes = media.iter().map(|t| t.data.len() as u64).sum();
    let base = tags.iter().map(|t| t.ts).min().unwrap_or(0);
    tags.iter_mut().for_each(|t| t.ts = t.ts.saturating_sub(base));
    let last = tags.iter().map(|t| t.ts).max().unwrap_or(0);
    let gap = frame_gap(&tags, VIDEO).or_else(|| frame_gap(&tags, AUDIO)).unwrap_or(DEFAULT_GAP_MS);
    Ok(Flv { tags, loop_ms: last.saturating_add(gap).max(1), media_bytes })
}

/// Average interval between tags of one type, if there are at least two.
fn frame_gap(tags: &[Tag], type_id: u8) -> Option<u64> {
    let ts: Vec<u64> = tags.iter().filter(|t| t.type_id == type_id).map(|t| t.ts).collect();
    let (first, last) = (ts.first()?, ts.last()?);
    let intervals = (ts.len() as u64).checked_sub(1).filter(|&n| n > 0)?;
    Some((last.saturating_sub(*first) / intervals).max(1))
}

/// Big-endian unsigned value of `len` bytes at `at` (missing bytes read as 0).
fn be(b: &[u8], at: usize, len: usize) -> u32 {
    (0..len).fold(0u32, |acc, i| (acc << 8) | u32::from(b.get(at.saturating_add(i)).copied().unwrap_or(0)))
}

/// Appends the FLV file header (audio and video flags set) and PreviousTagSize0.
pub fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(&[b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]);
}

/// Appends one FLV tag of `type_id` at `ts` ms (its 32 bits, as FLV carries them) and its
/// PreviousTagSize. A body over the format's 16 MiB - 1 is cut there (none is: tags come from
/// a parsed file).
pub fn write_tag(out: &mut Vec<u8>, type_id: u8, ts: u32, data: &[u8]) {
    let data = data.get(..0xFF_FFFF).unwrap_or(data);
    let size = data.len() as u32;
    let [_, s2, s1, s0] = size.to_be_bytes();
    let [t3, t2, t1, t0] = ts.to_be_bytes();
    out.extend_from_slice(&[type_id, s2, s1, s0, t2, t1, t0, t3, 0, 0, 0]);
    out.extend_from_slice(data);
    out.extend_from_slice(&(size + TAG_HEADER as u32).to_be_bytes());
}

/// Counts the tags of an FLV byte stream as it arrives, in any split: every complete tag is
/// one message in the [`Batch`], audio and video as frames, keyframes by the first body byte.
/// Holds at most one tag header; bodies are skipped, not buffered.
#[derive(Debug, Default)]
pub struct TagReader {
    state: ReadState,
    /// The part of the file or tag header read so far.
    head: [u8; TAG_HEADER],
    have: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// The 9-byte file header.
    #[default]
    FileHeader,
    /// Bytes to pass over (the rest of a longer file header, a PreviousTagSize).
    Skip(u64),
    /// An 11-byte tag header.
    TagHeader,
    /// A tag body: bytes left, type, first body byte once seen.
    Body { left: u32, type_id: u8, first: Option<u8> },
}

impl TagReader {
    /// Feeds received bytes, counting the tags they complete into `batch`; an error for a
    /// stream that is not FLV.
    pub fn feed(&mut self, mut data: &[u8], batch: &mut Batch) -> Result<(), String> {
        while !data.is_empty() {
            match self.state {
                ReadState::FileHeader | ReadState::TagHeader => {
                    let want = if self.state == ReadState::FileHeader { 9 } else { TAG_HEADER };
                    let n = want.saturating_sub(self.have).min(data.len());
                    let (part, rest) = data.split_at(n);
                    if let Some(dst) = self.head.get_mut(self.have..self.have + n) {
                        dst.copy_from_slice(part);
                    }
                    (self.have, data) = (self.have + n, rest);
                    if self.have == want {
                        self.have = 0;
                        self.state = self.header_done(batch)?;
                    }
                }
                ReadState::Skip(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    data = data.get(n..).unwrap_or_default();
                    let left = left - n as u64;
                    self.state = if left == 0 { ReadState::TagHeader } else { ReadState::Skip(left) };
                }
                ReadState::Body { left, type_id, first } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    let first = first.or_else(|| data.first().copied());
                    data = data.get(n..).unwrap_or_default();
                    let left = left - n as u32;
                    self.state = match left {
                        0 => {
                            batch.tag(type_id, first);
                            ReadState::Skip(4)
                        }
                        left => ReadState::Body { left, type_id, first },
                    };
                }
            }
        }
        Ok(())
    }

    /// What follows a complete file or tag header.
    fn header_done(&self, batch: &mut Batch) -> Result<ReadState, String> {
        let h = &self.head;
        if self.state == ReadState::FileHeader {
            if h.get(..3) != Some(b"FLV") {
                return Err(format!("not an FLV stream: it starts with {:?}", String::from_utf8_lossy(&h[..9])));
            }
            // The rest of a longer header (DataOffset), then PreviousTagSize0.
            return Ok(ReadState::Skip(u64::from(be(h, 5, 4)).saturating_sub(9) + 4));
        }
        let type_id = h.first().copied().unwrap_or(0) & 0x1F;
        match be(h, 1, 3) {
            0 => {
                batch.tag(type_id, None);
                Ok(ReadState::Skip(4))
            }
            left => Ok(ReadState::Body { left, type_id, first: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out);
        write_tag(&mut out, DATA_AMF0, 0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09");
        write_tag(&mut out, VIDEO, 0, &[0x17, 0, 0, 0, 0, 1, 2, 3]); // AVC sequence header
        write_tag(&mut out, AUDIO, 0, &[0xAF, 0, 0x12, 0x10]); // AAC sequence header
        write_tag(&mut out, VIDEO, 40, &[0x17, 1, 0, 0, 0, 9, 9, 9, 9]);
        write_tag(&mut out, VIDEO, 80, &[0x27, 1, 0, 0, 0, 8]);
        write_tag(&mut out, AUDIO, 0x0123_4567, &[0xAF, 1, 5, 5]);
        out
    }

    #[test]
    fn written_files_parse_back() {
        let flv = parse(&sample()).unwrap();
        let kinds: Vec<(u8, u64)> = flv.tags.iter().map(|t| (t.type_id, t.ts)).collect();
        assert_eq!(kinds, [(18, 0), (9, 0), (8, 0), (9, 40), (9, 80), (8, 0x0123_4567)]);
        assert!(flv.tags[0].flv_data().starts_with(b"\x02\x00\x0aonMetaData"));
        let heads: Vec<bool> = flv.tags.iter().map(Tag::is_sequence_header).collect();
        assert_eq!(heads, [false, true, true, false, false, false]);
        let keys: Vec<bool> = flv.tags.iter().map(Tag::is_keyframe).collect();
        assert_eq!(keys, [false, true, false, true, false, false]);
    }

    #[test]
    fn set_data_frame_prefix_length() {
        let mut out = Vec::new();
        amf0::encode(&Amf0Value::string("@setDataFrame"), &mut out);
        assert_eq!(out.len(), SET_DATA_FRAME_LEN);
    }

    #[test]
    fn reader_counts_tags_in_any_split() {
        let bytes = sample();
        for split in 1..bytes.len() {
            let (mut reader, mut batch) = (TagReader::default(), Batch::default());
            for part in bytes.chunks(split) {
                reader.feed(part, &mut batch).unwrap();
            }
            assert_eq!((batch.messages, batch.video, batch.audio, batch.keyframes), (6, 3, 2, 2), "split {split}");
        }
    }

    #[test]
    fn reader_counts_a_tag_when_its_body_is_complete() {
        let bytes = sample();
        let first_media_end = 13 + (11 + 21 + 4) + 11 + 8; // header, metadata tag, video header + body
        let (mut reader, mut batch) = (TagReader::default(), Batch::default());
        reader.feed(&bytes[..first_media_end - 1], &mut batch).unwrap();
        assert_eq!(batch.media(), 0);
        reader.feed(&bytes[first_media_end - 1..first_media_end], &mut batch).unwrap();
        assert_eq!((batch.media(), batch.keyframes), (1, 1));
    }

    #[test]
    fn reader_refuses_what_is_not_flv_and_skips_long_headers() {
        let mut batch = Batch::default();
        assert!(TagReader::default().feed(b"HTTP/1.1 200 OK\r\n", &mut batch).is_err());
        // DataOffset 20: 11 extra header bytes before PreviousTagSize0.
        let mut bytes = vec![b'F', b'L', b'V', 1, 5, 0, 0, 0, 20];
        bytes.extend_from_slice(&[0xEE; 11]);
        bytes.extend_from_slice(&[0; 4]);
        write_tag(&mut bytes, AUDIO, 0, &[0xAF, 1]);
        let mut reader = TagReader::default();
        reader.feed(&bytes, &mut batch).unwrap();
        assert_eq!(batch.audio, 1);
    }

    #[test]
    fn reader_survives_garbage_after_the_header() {
        let mut bytes = Vec::new();
        write_header(&mut bytes);
        bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let mut batch = Batch::default();
        TagReader::default().feed(&bytes, &mut batch).unwrap();
    }
}
