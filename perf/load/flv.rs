//! FLV reader: the tags of a file as RTMP message payloads with timestamps relative to the
//! first tag, loaded once and shared by every publisher.
//!
//! Audio (8) and video (9) tags are kept as they are; an `onMetaData` script tag (18) gets the
//! `@setDataFrame` prefix publishers send; other script tags are dropped. A truncated last tag
//! ends the file (as players do). Nothing here panics on a malformed file.

use std::path::Path;

use streamgate::codec::rtmp::amf0::{self, Amf0Value};
use streamgate::codec::rtmp::message::{AUDIO, DATA_AMF0, VIDEO};

/// Largest FLV file accepted (it is held in memory).
const MAX_FILE_BYTES: u64 = 1 << 30;
/// Frame gap assumed when the file has fewer than two video (or audio) tags.
const DEFAULT_GAP_MS: u64 = 40;

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
