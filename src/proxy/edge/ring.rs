//! One stream's recent messages on one shard, shared by all of its players there.
//!
//! The feeding side ([`Ring::push`]) takes [`Frame`]s from wherever they come from (today the
//! origin pull, [`super::upstream`]; a local publisher could feed it the same way). Each entry
//! is written in a player protocol's wire form at most once, when the first player of that
//! protocol reaches it ([`Entry::wire`]), into `Bytes` every player of that protocol shares:
//!
//! - RTMP: the message's chunks at [`CHUNK_SIZE`] (the size the proxy announced to every
//!   player), fmt 0 header with an absolute timestamp, fixed chunk-stream ids per type and
//!   message stream [`STREAM_ID`], so the bytes decode the same for every player whatever it
//!   got before;
//! - FLV: one tag and its PreviousTagSize.
//!
//! Players hold a cursor (the sequence number of the next entry they read), never a copy. What
//! the ring keeps, bounded by `cache_bytes` of memory in every case ([`Ring::memory`]: each
//! entry's payload, its own allocations and the wire forms written so far, so a stream of many
//! small messages is bounded as tightly as one of few large ones; the bound holds after each
//! message arrives, and the wire forms players write before the next one come on top until it
//! does, a few KiB when players keep up):
//! - everything since the last keyframe (the GOP cache: a new player starts there at once);
//! - before it, only entries no more than `max_lag` bytes behind the newest: a player further
//!   behind than that skips to a keyframe anyway ([`Ring::skip`]);
//! - the newest metadata and sequence headers, outside the ring ([`Ring::headers`]), which
//!   every player gets first.
//!
//! Invariants: `entries[i]` has sequence number `first + i`; `bytes` is the sum of the payload
//! lengths held, `held` the sum of their [`entry_cost`]s and `wires` of the lengths (plus
//! [`ALLOC_OVERHEAD`]) of the wire forms written for them; `last_key`, when set, is in
//! `first..head()`.

use std::cell::{Cell, OnceCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use crate::codec::flv::{self, Packet};
use crate::codec::rtmp::chunk::{Head, write_chunks};
use crate::codec::rtmp::client::{AUDIO_CSID, DATA_CSID, VIDEO_CSID};
use crate::codec::rtmp::message::{AUDIO, DATA_AMF0, VIDEO};

/// The chunk size RTMP players read in: what the proxy announced before its `connect` answer.
pub const CHUNK_SIZE: u32 = crate::proxy::rtmp::identify::CHUNK_SIZE;
/// The message stream id every RTMP player was given by `createStream`.
pub const STREAM_ID: u32 = crate::proxy::rtmp::identify::STREAM_ID;

/// What one heap allocation costs beyond its bytes (the allocator's header and rounding), as
/// counted against the cache bound.
const ALLOC_OVERHEAD: usize = 16;

/// The memory an entry holds before any wire form is written: its payload's allocation, the
/// `Rc<Entry>` allocation and its slot in the ring.
fn entry_cost(payload: usize) -> usize {
    payload
        + ALLOC_OVERHEAD
        + std::mem::size_of::<Entry>()
        + 2 * std::mem::size_of::<usize>()
        + ALLOC_OVERHEAD
        + std::mem::size_of::<Rc<Entry>>()
}

/// A message of the stream as its source gave it.
#[derive(Clone, Debug)]
pub struct Frame {
    pub type_id: u8,
    /// Milliseconds, absolute, as the players will see it.
    pub timestamp: u32,
    pub payload: Bytes,
}

/// What a message is to a player.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `onMetaData`.
    Meta,
    VideoHeader,
    AudioHeader,
    /// A video keyframe: where a player may start.
    Key,
    Video,
    Audio,
    /// Any other message (kept in order, not a frame).
    Data,
}

impl Kind {
    /// Whether it counts as a frame (for dropped frames).
    pub fn is_frame(self) -> bool {
        matches!(self, Kind::Key | Kind::Video | Kind::Audio)
    }

    /// The gate of a reader that has no keyframe to decode from while `*need_key` is set:
    /// whether a message of this kind goes through. A keyframe does, and opens the gate; other
    /// frames are passed over while it is shut; metadata and sequence headers always go.
    pub fn passes(self, need_key: &mut bool) -> bool {
        if self == Kind::Key {
            *need_key = false;
            return true;
        }
        !(*need_key && self.is_frame())
    }

    /// Reads a message's kind from its first bytes.
    pub fn of(type_id: u8, payload: &[u8]) -> Kind {
        match type_id {
            VIDEO => match flv::video_tag(payload) {
                Some(tag) if matches!(tag.packet, Packet::SequenceHeader { .. }) => Kind::VideoHeader,
                Some(tag) if tag.keyframe => Kind::Key,
                _ => Kind::Video,
            },
            AUDIO => match flv::audio_tag(payload) {
                Some(tag) if matches!(tag.packet, Packet::SequenceHeader { .. }) => Kind::AudioHeader,
                _ => Kind::Audio,
            },
            DATA_AMF0 if payload.get(..13) == Some(&ON_META_DATA[..]) => Kind::Meta,
            _ => Kind::Data,
        }
    }
}

/// AMF0 string "onMetaData".
const ON_META_DATA: [u8; 13] = *b"\x02\x00\x0aonMetaData";
/// AMF0 string "@setDataFrame", in front of the metadata as publishers send it.
const SET_DATA_FRAME: [u8; 16] = *b"\x02\x00\x0d@setDataFrame";

/// A player protocol's wire form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Rtmp,
    Flv,
}

/// One message with its wire forms, written on first use.
#[derive(Debug)]
pub struct Entry {
    pub kind: Kind,
    pub frame: Frame,
    /// Payload bytes pushed before this entry (for lags).
    start: u64,
    rtmp: OnceCell<Bytes>,
    flv: OnceCell<Bytes>,
    /// The ring's count of wire-form memory, which this entry's forms add to while it is in
    /// the ring (a header entry can outlive its place in the ring).
    wires: Rc<Cell<usize>>,
    in_ring: Cell<bool>,
}

impl Entry {
    fn new(kind: Kind, frame: Frame, start: u64, wires: Rc<Cell<usize>>) -> Self {
        Entry { kind, frame, start, rtmp: OnceCell::new(), flv: OnceCell::new(), wires, in_ring: Cell::new(true) }
    }

    /// The message in `wire`'s form (empty for a message that protocol does not carry).
    pub fn wire(&self, wire: Wire) -> &Bytes {
        let cell = match wire {
            Wire::Rtmp => &self.rtmp,
            Wire::Flv => &self.flv,
        };
        if let Some(bytes) = cell.get() {
            return bytes;
        }
        let bytes = cell.get_or_init(|| self.write(wire));
        if self.in_ring.get() {
            self.wires.set(self.wires.get() + bytes.len() + ALLOC_OVERHEAD);
        }
        bytes
    }

    fn write(&self, wire: Wire) -> Bytes {
        let f = &self.frame;
        match wire {
            Wire::Rtmp => {
                let csid = match f.type_id {
                    AUDIO => AUDIO_CSID,
                    VIDEO => VIDEO_CSID,
                    _ => DATA_CSID,
                };
                let head = Head { csid, timestamp: f.timestamp, type_id: f.type_id, stream_id: STREAM_ID };
                let mut out = Vec::with_capacity(f.payload.len() + 16 + f.payload.len() / CHUNK_SIZE as usize);
                write_chunks(&head, &f.payload, CHUNK_SIZE, &mut out);
                Bytes::from(out)
            }
            Wire::Flv => {
                if !matches!(f.type_id, AUDIO | VIDEO | DATA_AMF0) {
                    return Bytes::new();
                }
                let mut out = Vec::with_capacity(f.payload.len() + 15);
                flv::write_tag(f.type_id, f.timestamp, &f.payload, &mut out);
                Bytes::from(out)
            }
        }
    }

    /// Leaves the ring: takes back what its wire forms added to the ring's count (no form
    /// written from now on is counted).
    fn leave(&self) {
        self.in_ring.set(false);
        let cost: usize =
            [self.rtmp.get(), self.flv.get()].into_iter().flatten().map(|b| b.len() + ALLOC_OVERHEAD).sum();
        self.wires.set(self.wires.get() - cost);
    }
}

/// Where a player starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The next entry's sequence number.
    pub seq: u64,
    /// Frames are passed over until a keyframe (the player has none to decode from).
    pub need_key: bool,
}

/// Bytes a player still has to write, and whether each is a frame.
pub type Batch = Vec<(Bytes, bool)>;

/// The stream's recent messages (see the module header).
pub struct Ring {
    entries: VecDeque<Rc<Entry>>,
    first: u64,
    bytes: usize,
    held: usize,
    /// Wire forms are written while players read (through `&self`), so each entry adds its
    /// own to this shared count; the bound applies at the next push.
    wires: Rc<Cell<usize>>,
    pushed: u64,
    last_key: Option<u64>,
    meta: Option<Rc<Entry>>,
    video_header: Option<Rc<Entry>>,
    audio_header: Option<Rc<Entry>>,
    cache_bytes: usize,
    max_lag: usize,
}

impl Ring {
    pub fn new(cache_bytes: usize, max_lag: usize) -> Self {
        Ring {
            entries: VecDeque::new(),
            first: 0,
            bytes: 0,
            held: 0,
            wires: Rc::new(Cell::new(0)),
            pushed: 0,
            last_key: None,
            meta: None,
            video_header: None,
            audio_header: None,
            cache_bytes,
            max_lag,
        }
    }

    /// The sequence number the next pushed entry gets.
    pub fn head(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Payload bytes held (metadata and sequence headers outside the ring not counted).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The memory the held entries take, as bounded by `cache_bytes`: payloads, each entry's
    /// own allocations and the wire forms written for them.
    pub fn memory(&self) -> usize {
        self.held + self.wires.get()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a message (metadata with `@setDataFrame` in front loses it, as players expect),
    /// then drops what the bounds no longer keep.
    pub fn push(&mut self, mut frame: Frame) {
        if frame.type_id == DATA_AMF0 && frame.payload.starts_with(&SET_DATA_FRAME) {
            frame.payload = frame.payload.slice(SET_DATA_FRAME.len()..);
        }
        let kind = Kind::of(frame.type_id, &frame.payload);
        let len = frame.payload.len();
        let entry = Rc::new(Entry::new(kind, frame, self.pushed, self.wires.clone()));
        match kind {
            Kind::Meta => self.meta = Some(entry.clone()),
            Kind::VideoHeader => self.video_header = Some(entry.clone()),
            Kind::AudioHeader => self.audio_header = Some(entry.clone()),
            Kind::Key => self.last_key = Some(self.head()),
            _ => {}
        }
        self.entries.push_back(entry);
        self.bytes += len;
        self.held += entry_cost(len);
        self.pushed += len as u64;
        self.evict();
    }

    fn evict(&mut self) {
        while let Some(front) = self.entries.front() {
            let over_cap = self.memory() > self.cache_bytes && self.entries.len() > 1;
            let before_key = self.last_key.is_some_and(|k| self.first < k);
            let too_old = before_key && self.pushed - front.start > self.max_lag as u64;
            if !over_cap && !too_old {
                break;
            }
            self.bytes -= front.frame.payload.len();
            self.held -= entry_cost(front.frame.payload.len());
            front.leave();
            self.entries.pop_front();
            if self.last_key == Some(self.first) {
                self.last_key = None;
            }
            self.first += 1;
        }
    }

    /// The metadata and sequence headers a player needs before any frame, newest of each.
    pub fn headers(&self) -> impl Iterator<Item = &Rc<Entry>> {
        [&self.meta, &self.video_header, &self.audio_header].into_iter().flatten()
    }

    /// Where a new player starts: the last keyframe, or the next one.
    pub fn start(&self) -> Cursor {
        match self.last_key {
            Some(seq) => Cursor { seq, need_key: false },
            None => Cursor { seq: self.head(), need_key: true },
        }
    }

    /// How many payload bytes the player at `seq` is behind; `None` once its next entry is
    /// gone.
    pub fn lag(&self, seq: u64) -> Option<u64> {
        if seq < self.first {
            return None;
        }
        let start = self.entries.get((seq - self.first) as usize).map_or(self.pushed, |e| e.start);
        Some(self.pushed - start)
    }

    /// A lagging player's new cursor: the last keyframe if it is ahead of `seq`, else the next
    /// keyframe to come; and how many frames it passes over (entries it lost counted as
    /// frames).
    pub fn skip(&self, seq: u64) -> (Cursor, u64) {
        let target = match self.last_key {
            Some(key) if key > seq => Cursor { seq: key, need_key: false },
            _ => Cursor { seq: self.head(), need_key: true },
        };
        let lost = self.first.saturating_sub(seq);
        let from = seq.max(self.first);
        let passed = (from..target.seq).filter(|s| self.get(*s).is_some_and(|e| e.kind.is_frame())).count();
        (target, lost + passed as u64)
    }

    /// The entries from `seq` on (all held ones when `seq` is behind the ring).
    pub fn entries_from(&self, seq: u64) -> impl Iterator<Item = &Rc<Entry>> {
        self.entries.iter().skip(seq.saturating_sub(self.first) as usize)
    }

    fn get(&self, seq: u64) -> Option<&Rc<Entry>> {
        seq.checked_sub(self.first).and_then(|i| self.entries.get(i as usize))
    }

    /// Gives `take` the entries from `cursor` on in `wire`'s form (with whether each is a
    /// frame), until about `max_bytes` (at least one entry); advances the cursor. With
    /// `need_key`, frames before a keyframe are passed over. The cursor must not be behind the
    /// ring ([`Ring::lag`] is `Some`).
    pub fn read(&self, cursor: &mut Cursor, wire: Wire, max_bytes: usize, mut take: impl FnMut(Bytes, bool)) {
        let mut taken = 0;
        while let Some(entry) = self.get(cursor.seq) {
            if taken > 0 && taken + entry.frame.payload.len() > max_bytes {
                break;
            }
            cursor.seq += 1;
            if !entry.kind.passes(&mut cursor.need_key) {
                continue;
            }
            let bytes = entry.wire(wire);
            if !bytes.is_empty() {
                taken += bytes.len();
                take(bytes.clone(), entry.kind.is_frame());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::rtmp::ChunkDecoder;

    fn video(key: bool, ts: u32, len: usize) -> Frame {
        let mut payload = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        payload.resize(len, 7);
        Frame { type_id: VIDEO, timestamp: ts, payload: payload.into() }
    }

    fn header(ts: u32) -> Frame {
        Frame { type_id: VIDEO, timestamp: ts, payload: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2, 3]) }
    }

    fn audio(ts: u32) -> Frame {
        Frame { type_id: AUDIO, timestamp: ts, payload: Bytes::from_static(&[0xaf, 1, 9, 9]) }
    }

    #[test]
    fn a_new_player_starts_at_the_last_keyframe_after_the_headers() {
        let mut ring = Ring::new(1 << 20, 1 << 20);
        assert_eq!(ring.start(), Cursor { seq: 0, need_key: true });
        ring.push(header(0));
        ring.push(video(true, 0, 100));
        ring.push(video(false, 40, 100));
        ring.push(video(true, 80, 100));
        ring.push(audio(90));
        assert_eq!(ring.start(), Cursor { seq: 3, need_key: false });
        assert_eq!(ring.headers().map(|e| e.kind).collect::<Vec<_>>(), [Kind::VideoHeader]);
        let mut cursor = ring.start();
        let mut out = Batch::new();
        ring.read(&mut cursor, Wire::Flv, usize::MAX, |b, f| out.push((b, f)));
        assert_eq!(cursor.seq, 5);
        let tag = |b: &Bytes| (b[0], u32::from_be_bytes([b[7], b[4], b[5], b[6]]));
        let tags: Vec<_> = out.iter().map(|(b, _)| tag(b)).collect();
        assert_eq!(tags, [(9, 80), (8, 90)]);
    }

    #[test]
    fn the_keyframe_gate_opens_at_a_keyframe_and_lets_headers_through() {
        let mut need_key = true;
        assert!(!Kind::Video.passes(&mut need_key) && !Kind::Audio.passes(&mut need_key));
        assert!(Kind::Meta.passes(&mut need_key) && Kind::VideoHeader.passes(&mut need_key) && need_key);
        assert!(Kind::Key.passes(&mut need_key) && !need_key);
        assert!(Kind::Video.passes(&mut need_key) && Kind::Audio.passes(&mut need_key));
    }

    #[test]
    fn a_player_waiting_for_a_keyframe_passes_frames_over_but_not_headers() {
        let mut ring = Ring::new(1 << 20, 1 << 20);
        let mut cursor = ring.start();
        ring.push(audio(0));
        ring.push(video(false, 0, 50));
        ring.push(header(10));
        ring.push(video(true, 20, 50));
        let mut out = Batch::new();
        ring.read(&mut cursor, Wire::Rtmp, usize::MAX, |b, f| out.push((b, f)));
        assert_eq!(out.len(), 2, "the sequence header and the keyframe");
        assert!(!cursor.need_key);
        let mut dec = ChunkDecoder::new();
        dec.set_chunk_size(CHUNK_SIZE).unwrap();
        let wire: Vec<u8> = out.iter().flat_map(|(b, _)| b.to_vec()).collect();
        let msgs = dec.decode_all(&wire).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[1].0.timestamp, msgs[1].0.stream_id, msgs[1].0.payload.len()), (20, STREAM_ID, 50));
    }

    /// What the ring should count, recounted from what it holds.
    fn recount(ring: &Ring) -> usize {
        ring.entries
            .iter()
            .map(|e| {
                let wires: usize =
                    [e.rtmp.get(), e.flv.get()].into_iter().flatten().map(|b| b.len() + ALLOC_OVERHEAD).sum();
                entry_cost(e.frame.payload.len()) + wires
            })
            .sum()
    }

    #[test]
    fn memory_is_bounded_and_old_gops_go_once_players_would_skip_them() {
        let cost = entry_cost(500);
        let mut ring = Ring::new(10 * cost + cost / 2, 4 * 500);
        for i in 0..100u32 {
            ring.push(video(i % 10 == 0, i * 40, 500));
            assert!(ring.memory() <= 10 * cost + cost / 2);
        }
        // The last GOP (keyframe at 90) is ten entries: kept whole, nothing older.
        assert_eq!(ring.start().seq, 90);
        assert_eq!((ring.bytes(), ring.memory()), (5_000, 10 * cost));
        // A GOP larger than the cache is cut: a new player waits for the next keyframe.
        let mut big = Ring::new(10 * cost, 4 * 500);
        for i in 0..30u32 {
            big.push(video(i == 0, i * 40, 500));
        }
        assert!(big.memory() <= 10 * cost);
        assert_eq!(big.start(), Cursor { seq: 30, need_key: true });
    }

    #[test]
    fn the_bound_counts_each_entry_and_its_wire_forms_not_only_payloads() {
        // Many small messages, read in both wire forms, as a high frame rate stream with RTMP
        // and HTTP-FLV players makes them: the entries and their wire forms are most of it.
        let cap = 256 << 10;
        let mut ring = Ring::new(cap, cap);
        let mut rtmp = ring.start();
        let mut flv = ring.start();
        for i in 0..20_000u32 {
            ring.push(if i % 3 == 0 { audio(i) } else { video(i % 1_000 == 1, i, 40) });
            // Players keep up, so every entry gets both forms.
            let mut out = Batch::new();
            ring.read(&mut rtmp, Wire::Rtmp, usize::MAX, |b, f| out.push((b, f)));
            ring.read(&mut flv, Wire::Flv, usize::MAX, |b, f| out.push((b, f)));
            // Forms written since the last push may pass the cap until the next one.
            assert!(ring.memory() <= cap + out.iter().map(|(b, _)| b.len() + ALLOC_OVERHEAD).sum::<usize>());
            assert_eq!(ring.memory(), recount(&ring), "after message {i}");
        }
        assert!(ring.bytes() * 4 < ring.memory(), "payloads {} of {} held", ring.bytes(), ring.memory());
        // A header that left the ring still serves new players; its late wire forms are not
        // counted (nothing would take them back).
        let mut late = Ring::new(cap, cap);
        late.push(header(0));
        for i in 0..2_000u32 {
            late.push(video(i % 100 == 0, i, 200));
        }
        let before = late.memory();
        for e in late.headers() {
            let _ = e.wire(Wire::Rtmp);
        }
        assert_eq!(late.memory(), before, "the header left the ring before its form was written");
        assert_eq!(late.memory(), recount(&late));
    }

    #[test]
    fn a_lagging_player_skips_to_a_keyframe_counting_the_frames() {
        let mut ring = Ring::new(100_000, 50_000);
        ring.push(video(true, 0, 1_000));
        let behind = 1;
        for i in 1..10u32 {
            ring.push(video(false, i * 40, 1_000));
        }
        assert_eq!(ring.lag(behind), Some(9_000));
        // No keyframe ahead: wait for the next one, every frame up to the head dropped.
        assert_eq!(ring.skip(behind), (Cursor { seq: 10, need_key: true }, 9));
        ring.push(video(true, 400, 1_000));
        ring.push(audio(410));
        assert_eq!(ring.skip(behind), (Cursor { seq: 10, need_key: false }, 9));
        assert_eq!(ring.lag(12), Some(0));
    }
}
