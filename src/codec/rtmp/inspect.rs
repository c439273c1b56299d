//! A streaming, bounded-memory reader of a publisher's chunk stream: it follows the chunk
//! headers exactly as the origin's decoder does (chunk sizes, header compression, extended
//! timestamps, Abort) and reads media facts from the messages without reassembling them.
//! Headers are read and applied by [`super::header`], as in the
//! [`ChunkDecoder`](super::ChunkDecoder); this file owns what is counted and captured.
//!
//! Feed it the publisher's bytes from the first byte after C2, in order, in pieces of any size
//! ([`Inspector::feed`]); [`Inspector::info`] says what it found. Per message it keeps only:
//!
//! - audio and video: the first [`TAG_PREFIX`] bytes (codec, frame type, packet type); a
//!   sequence header (AVC/HEVC record, AAC config) of at most [`MAX_CAPTURE`] bytes whole;
//! - data messages (`onMetaData`) of at most [`MAX_CAPTURE`] bytes whole;
//! - SetChunkSize and Abort: their 4 bytes;
//! - nothing of anything else (commands, acknowledgements, aggregates, bigger messages).
//!
//! Whole captures in flight at once are bounded by [`CAPTURE_BUDGET`] bytes together, chunk
//! streams by [`DEFAULT_MAX_CHUNK_STREAMS`] (the chunk decoder's default; publishers use a
//! handful): an inspector holds at most a few hundred KiB whatever the input. Key frames of
//! many MB pass through as a count.
//!
//! A chunk stream error (a header the origin's decoder would refuse too) stops the inspector:
//! it returns the error once, keeps what it found so far and ignores later input. Counting
//! happens when a message's last byte arrives, so a message cut short by the end of the
//! connection is not a frame. Aggregate messages (type 22, which publishers do not send in
//! practice) are not looked into.
#![deny(clippy::indexing_slicing)]

use thiserror::Error;

use super::chunk::DEFAULT_CHUNK_SIZE;
use super::header::{
    ChunkHeader, ChunkStream, ChunkStreams, DEFAULT_MAX_CHUNK_STREAMS, HeaderError, HeaderReader, Phase, Start, Status,
};
use super::message::{self, AUDIO, DATA_AMF0, DATA_AMF3, VIDEO};
use crate::codec::flv::{self, Metadata, Packet, TAG_PREFIX};

/// Largest message kept whole (metadata, sequence headers); bigger ones are skipped.
pub const MAX_CAPTURE: usize = 64 * 1024;
/// Most bytes of whole messages being captured at once, over all chunk streams.
pub const CAPTURE_BUDGET: usize = 256 * 1024;

/// Why inspection stopped.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InspectError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("invalid SetChunkSize or Abort: {0}")]
    Control(#[from] message::MessageError),
}

/// What the publisher's messages said so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaInfo {
    /// From the video messages, else from metadata.
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    /// The last `onMetaData`, if any arrived.
    pub metadata: Option<Metadata>,
    /// Picture size from the last video sequence header's SPS (0 = none read).
    pub sps_width: u32,
    pub sps_height: u32,
    /// From the last AAC sequence header or the legacy audio header bits (0 = unknown).
    pub audio_sample_rate: u32,
    pub audio_channels: u8,
    /// Coded video frames, key frames among them, and coded audio frames.
    pub video_frames: u64,
    pub keyframes: u64,
    pub audio_frames: u64,
    /// Messages read (of any type, commands included).
    pub messages: u64,
}

impl MediaInfo {
    /// The picture size: the metadata's when it has both sides, else the SPS's, else
    /// whatever the metadata has (0 = unknown).
    pub fn size(&self) -> (u32, u32) {
        let meta = self.metadata.as_ref().map_or((0, 0), |m| (m.width, m.height));
        if meta.0 > 0 && meta.1 > 0 {
            meta
        } else if self.sps_width > 0 {
            (self.sps_width, self.sps_height)
        } else {
            meta
        }
    }

    pub fn video_codec(&self) -> Option<&'static str> {
        self.video_codec.or_else(|| self.metadata.as_ref()?.video_codec)
    }

    pub fn audio_codec(&self) -> Option<&'static str> {
        self.audio_codec.or_else(|| self.metadata.as_ref()?.audio_codec)
    }

    /// `framerate` from metadata (0 = absent).
    pub fn meta_fps(&self) -> f64 {
        self.metadata.as_ref().map_or(0.0, |m| m.framerate)
    }
}

/// How much of the current message on a chunk stream is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Keep {
    /// Nothing.
    #[default]
    Skip,
    /// The first n bytes.
    Prefix(usize),
    /// All of it (its length is reserved in the capture budget).
    Whole,
}

/// What the inspector keeps of a chunk stream's current message.
#[derive(Debug, Default)]
struct Capture {
    keep: Keep,
    kept: Vec<u8>,
}

type Stream = ChunkStream<Capture>;

/// The streaming reader of one publisher's chunk stream.
#[derive(Debug)]
pub struct Inspector {
    chunk_size: usize,
    streams: ChunkStreams<Capture>,
    reader: HeaderReader,
    phase: Phase,
    /// Bytes reserved by [`Keep::Whole`] messages in flight.
    reserved: usize,
    stopped: bool,
    info: MediaInfo,
}

impl Default for Inspector {
    fn default() -> Self {
        Self::new()
    }
}

impl Inspector {
    pub fn new() -> Self {
        Inspector {
            chunk_size: DEFAULT_CHUNK_SIZE as usize,
            streams: ChunkStreams::new(DEFAULT_MAX_CHUNK_STREAMS),
            reader: HeaderReader::new(),
            phase: Phase::Header,
            reserved: 0,
            stopped: false,
            info: MediaInfo::default(),
        }
    }

    pub fn info(&self) -> &MediaInfo {
        &self.info
    }

    /// Whether an error stopped it.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Bytes held now (kept message bytes and chunk stream state), for tests of the bound.
    pub fn held(&self) -> usize {
        self.streams.iter().map(|s| s.body.kept.capacity() + ChunkStreams::<Capture>::STREAM_SIZE).sum()
    }

    /// Reads the next bytes of the stream. The first error stops the inspector (and is
    /// returned once); after that, input is ignored.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InspectError> {
        if self.stopped {
            return Ok(());
        }
        while !input.is_empty() {
            let step = match self.phase {
                Phase::Header => self.read_header(input),
                Phase::Payload { index, remaining } => self.read_payload(input, index, remaining),
            };
            match step {
                Ok(used) => input = input.get(used..).unwrap_or_default(),
                Err(e) => {
                    self.stop();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.streams = ChunkStreams::new(DEFAULT_MAX_CHUNK_STREAMS);
        self.reserved = 0;
    }

    /// Reads the next header; once it is whole, starts its chunk. Returns bytes used.
    fn read_header(&mut self, input: &[u8]) -> Result<usize, InspectError> {
        let (used, status) = self.reader.read(input, &self.streams)?;
        if let Status::Complete(header) = status {
            self.begin_chunk(&header)?;
        }
        Ok(used)
    }

    /// Applies a whole header to its chunk stream; a new message decides what it keeps.
    fn begin_chunk(&mut self, h: &ChunkHeader) -> Result<(), InspectError> {
        let (index, start) = self.streams.begin_chunk(h)?;
        let Some(s) = self.streams.get_mut(index) else { return Ok(()) };
        if start == Start::NewMessage {
            s.body.kept.clear();
            s.body.keep = match s.header.type_id() {
                message::SET_CHUNK_SIZE | message::ABORT => Keep::Prefix(4),
                AUDIO | VIDEO => Keep::Prefix(TAG_PREFIX),
                DATA_AMF0 | DATA_AMF3 => whole_if_fits(&mut self.reserved, s.header.length()),
                _ => Keep::Skip,
            };
        }
        if s.header.is_complete() {
            return self.complete(index);
        }
        self.phase = Phase::Payload { index, remaining: s.header.chunk_len(self.chunk_size) };
        Ok(())
    }

    /// Takes up to `remaining` payload bytes of the current chunk; returns bytes used.
    fn read_payload(&mut self, input: &[u8], index: usize, remaining: usize) -> Result<usize, InspectError> {
        let n = remaining.min(input.len());
        let Some(s) = self.streams.get_mut(index) else {
            self.phase = Phase::Header;
            return Ok(n);
        };
        take_piece(&mut self.reserved, s, input.get(..n).unwrap_or_default());
        let left = remaining - n;
        if left > 0 {
            self.phase = Phase::Payload { index, remaining: left };
            return Ok(n);
        }
        self.phase = Phase::Header;
        if s.header.is_complete() {
            self.complete(index)?;
        }
        Ok(n)
    }

    /// A message on chunk stream `index` is complete: read it.
    fn complete(&mut self, index: usize) -> Result<(), InspectError> {
        let Some(s) = self.streams.get_mut(index) else { return Ok(()) };
        s.header.end_message();
        if s.body.keep == Keep::Whole {
            self.reserved = self.reserved.saturating_sub(s.header.length() as usize);
        }
        let kept = std::mem::take(&mut s.body.kept);
        let type_id = s.header.type_id();
        let info = &mut self.info;
        info.messages += 1;
        match type_id {
            message::SET_CHUNK_SIZE => {
                self.chunk_size = message::parse_set_chunk_size(&kept)? as usize;
            }
            message::ABORT => self.abort(message::parse_abort(&kept)?),
            VIDEO => on_video(info, &kept),
            AUDIO => on_audio(info, &kept),
            DATA_AMF0 | DATA_AMF3 => {
                if let Some(m) = flv::metadata(&kept, type_id == DATA_AMF3) {
                    info.metadata = Some(m);
                }
            }
            _ => {}
        }
        // Small buffers are reused by the next message; big ones are given back.
        if kept.capacity() <= 2 * TAG_PREFIX
            && let Some(s) = self.streams.get_mut(index)
        {
            let mut kept = kept;
            kept.clear();
            s.body.kept = kept;
        }
        Ok(())
    }

    /// Drops the partial message on chunk stream `csid` and its capture reservation.
    fn abort(&mut self, csid: u32) {
        if let Some(a) = self.streams.find_mut(csid) {
            if a.header.in_message() && a.body.keep == Keep::Whole {
                self.reserved = self.reserved.saturating_sub(a.header.length() as usize);
            }
            a.header.end_message();
            a.body.kept = Vec::new();
        }
    }
}

/// Counts a piece of the current message's payload and keeps what its [`Keep`] asks.
fn take_piece(reserved: &mut usize, s: &mut Stream, mut piece: &[u8]) {
    while !piece.is_empty() {
        match s.body.keep {
            Keep::Skip => {
                s.header.advance(piece.len());
                piece = &[];
            }
            Keep::Whole => {
                s.body.kept.extend_from_slice(piece);
                s.header.advance(piece.len());
                piece = &[];
            }
            Keep::Prefix(prefix) => {
                let k = prefix.saturating_sub(s.header.received()).min(piece.len());
                let (head, rest) = piece.split_at(k);
                s.body.kept.extend_from_slice(head);
                s.header.advance(k);
                piece = rest;
                if s.header.received() >= prefix {
                    s.body.keep = after_prefix(reserved, s);
                }
            }
        }
    }
}

/// What to keep of a message once its first bytes are in: the rest of a media sequence
/// header (if it fits), else nothing more.
fn after_prefix(reserved: &mut usize, s: &Stream) -> Keep {
    let kept = &s.body.kept;
    let sequence_header = match s.header.type_id() {
        VIDEO => flv::video_tag(kept).is_some_and(|t| matches!(t.packet, Packet::SequenceHeader { .. })),
        AUDIO => flv::audio_tag(kept).is_some_and(|t| matches!(t.packet, Packet::SequenceHeader { .. })),
        _ => false,
    };
    if sequence_header { whole_if_fits(reserved, s.header.length()) } else { Keep::Skip }
}

fn whole_if_fits(reserved: &mut usize, length: u32) -> Keep {
    let length = length as usize;
    if length <= MAX_CAPTURE && *reserved + length <= CAPTURE_BUDGET {
        *reserved += length;
        Keep::Whole
    } else {
        Keep::Skip
    }
}

fn on_video(info: &mut MediaInfo, kept: &[u8]) {
    let Some(tag) = flv::video_tag(kept) else { return };
    if tag.codec.is_some() {
        info.video_codec = tag.codec;
    }
    match tag.packet {
        Packet::Frame => {
            info.video_frames += 1;
            info.keyframes += u64::from(tag.keyframe);
        }
        Packet::SequenceHeader { config } => {
            if let Some((w, h)) = flv::config_size(tag.codec, kept.get(config..).unwrap_or_default()) {
                info.sps_width = w;
                info.sps_height = h;
            }
        }
        Packet::Other => {}
    }
}

fn on_audio(info: &mut MediaInfo, kept: &[u8]) {
    let Some(tag) = flv::audio_tag(kept) else { return };
    if tag.codec.is_some() {
        info.audio_codec = tag.codec;
    }
    match tag.packet {
        Packet::Frame => {
            info.audio_frames += 1;
            if tag.sample_rate > 0 {
                info.audio_sample_rate = tag.sample_rate;
                info.audio_channels = tag.channels;
            }
        }
        Packet::SequenceHeader { config } => {
            if tag.codec == Some("aac")
                && let Some((rate, channels)) = flv::aac_config(kept.get(config..).unwrap_or_default())
            {
                info.audio_sample_rate = rate;
                info.audio_channels = channels;
            }
        }
        Packet::Other => {}
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::codec::flv::{TAG_SCRIPT, tags};
    use crate::codec::rtmp::amf0::Amf0Value;
    use crate::codec::rtmp::message::{Command, Message};
    use crate::codec::rtmp::{ChunkDecoder, ChunkEncoder};
    use proptest::prelude::*;

    /// ffmpeg 5.1 publishing 2 s of 320x180 25 fps x264 + AAC to nginx-rtmp, the bytes it sent
    /// after C2 (captured with a tee in front of nginx): its own chunk size, compressed headers.
    const FFMPEG_PUBLISH: &[u8] = include_bytes!("../../../tests/data/media/ffmpeg_publish_320x180.rtmp");
    /// ffmpeg 5.1, 1 s of 640x360 25 fps x264 (-g 10) + AAC, as an FLV file.
    const FLV_640X360: &[u8] = include_bytes!("../../../tests/data/media/x264_640x360.flv");

    fn inspect(bytes: &[u8]) -> Inspector {
        let mut i = Inspector::new();
        i.feed(bytes).unwrap();
        i
    }

    /// The same facts from whole messages reassembled by the chunk decoder.
    fn reference(bytes: &[u8]) -> MediaInfo {
        let mut info = MediaInfo::default();
        for (msg, _) in ChunkDecoder::new().decode_all(bytes).unwrap() {
            info.messages += 1;
            match msg.type_id {
                VIDEO => on_video(&mut info, &msg.payload),
                AUDIO => on_audio(&mut info, &msg.payload),
                DATA_AMF0 | DATA_AMF3 => {
                    if let Some(m) = flv::metadata(&msg.payload, msg.type_id == DATA_AMF3) {
                        info.metadata = Some(m);
                    }
                }
                _ => {}
            }
        }
        info
    }

    /// A publish session as a client writes it: connect, createStream, publish, then the FLV
    /// file's tags as messages; SetChunkSize to each of `chunk_sizes` spread over the media.
    fn publish_stream(flv_file: &[u8], chunk_sizes: &[u32]) -> Vec<u8> {
        let mut enc = ChunkEncoder::new();
        let mut out = Vec::new();
        let app = Amf0Value::object([("app", Amf0Value::string("live"))]);
        let commands = [
            Command::new("connect", 1.0, app, vec![]).to_message(3, 0),
            Command::new("createStream", 2.0, Amf0Value::Null, vec![]).to_message(3, 0),
            Command::new("publish", 3.0, Amf0Value::Null, vec![Amf0Value::string("s")]).to_message(8, 1),
        ];
        for m in &commands {
            enc.encode(m, &mut out).unwrap();
        }
        let all: Vec<_> = tags(flv_file).collect();
        let every = all.len() / (chunk_sizes.len() + 1);
        for (i, tag) in all.iter().enumerate() {
            if every > 0
                && i % every == 0
                && i / every >= 1
                && let Some(&size) = chunk_sizes.get(i / every - 1)
            {
                enc.encode(&message::set_chunk_size(size), &mut out).unwrap();
            }
            let mut payload = tag.data.to_vec();
            if tag.tag_type == TAG_SCRIPT {
                payload = amf0_set_data_frame(tag.data);
            }
            let csid = match tag.tag_type {
                AUDIO => 4,
                VIDEO => 6,
                _ => 5,
            };
            let msg = Message { csid, timestamp: tag.timestamp, type_id: tag.tag_type, stream_id: 1, payload };
            enc.encode(&msg, &mut out).unwrap();
        }
        out
    }

    fn amf0_set_data_frame(script: &[u8]) -> Vec<u8> {
        let mut out = crate::codec::rtmp::amf0::encode_all(&[Amf0Value::string("@setDataFrame")]);
        out.extend_from_slice(script);
        out
    }

    #[test]
    fn real_ffmpeg_publish() {
        let i = inspect(FFMPEG_PUBLISH);
        let info = i.info();
        assert_eq!((info.video_codec(), info.audio_codec()), (Some("h264"), Some("aac")));
        assert_eq!(info.size(), (320, 180));
        assert_eq!((info.sps_width, info.sps_height), (320, 180), "the SPS agrees with the metadata");
        assert_eq!(info.meta_fps(), 25.0);
        assert_eq!((info.video_frames, info.keyframes), (50, 1), "2 s at 25 fps, -g 50");
        assert!((80..=90).contains(&info.audio_frames), "2 s of 1024-sample AAC frames at 44.1 kHz: {info:?}");
        assert_eq!((info.audio_sample_rate, info.audio_channels), (44100, 1));
        assert_eq!(*info, reference(FFMPEG_PUBLISH), "same as whole messages");
        assert!(!i.stopped());
    }

    #[test]
    fn byte_at_a_time_is_the_same() {
        let mut i = Inspector::new();
        for b in FFMPEG_PUBLISH {
            i.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(i.info(), inspect(FFMPEG_PUBLISH).info());
    }

    #[test]
    fn chunk_size_changes() {
        for sizes in [&[][..], &[4096], &[1, 60000], &[64, 128, 4096, 129]] {
            let bytes = publish_stream(FLV_640X360, sizes);
            let info = inspect(&bytes).info().clone();
            assert_eq!(info.size(), (640, 360), "{sizes:?}");
            assert_eq!((info.video_frames, info.keyframes), (25, 3), "{sizes:?}");
            assert_eq!(info.audio_frames, 45, "{sizes:?}");
            assert_eq!(info, reference(&bytes), "{sizes:?}");
        }
    }

    #[test]
    fn size_from_the_sps_when_metadata_has_none() {
        let no_meta: Vec<u8> = {
            // The FLV file without its script tag.
            let mut file = FLV_640X360[..13].to_vec();
            for t in tags(FLV_640X360).filter(|t| t.tag_type != TAG_SCRIPT) {
                let len = t.data.len() as u32;
                file.push(t.tag_type);
                file.extend_from_slice(&len.to_be_bytes()[1..]);
                file.extend_from_slice(&t.timestamp.to_be_bytes()[1..]);
                file.extend_from_slice(&[(t.timestamp >> 24) as u8, 0, 0, 0]);
                file.extend_from_slice(t.data);
                file.extend_from_slice(&(len + 11).to_be_bytes());
            }
            file
        };
        let info = inspect(&publish_stream(&no_meta, &[4096])).info().clone();
        assert!(info.metadata.is_none());
        assert_eq!((info.size(), info.meta_fps()), ((640, 360), 0.0));
        assert_eq!(info.video_codec(), Some("h264"));
    }

    #[test]
    fn big_key_frames_are_counted_not_kept() {
        let mut enc = ChunkEncoder::new();
        let mut bytes = Vec::new();
        let mut key = vec![0x17, 1, 0, 0, 0];
        key.resize(3 << 20, 0xAB);
        // Extended timestamps too: every continuation chunk repeats them.
        let msg = Message { csid: 6, timestamp: 0x0100_0000, type_id: VIDEO, stream_id: 1, payload: key };
        enc.encode(&msg, &mut bytes).unwrap();
        let meta = vec![0u8; MAX_CAPTURE + 1];
        enc.encode(&Message { csid: 5, timestamp: 0, type_id: DATA_AMF0, stream_id: 1, payload: meta }, &mut bytes)
            .unwrap();
        let mut i = Inspector::new();
        let mut most = 0;
        for piece in bytes.chunks(1000) {
            i.feed(piece).unwrap();
            most = most.max(i.held());
        }
        assert_eq!((i.info().video_frames, i.info().keyframes), (1, 1));
        assert!(most < 4096, "held {most} bytes");
    }

    #[test]
    fn interleaved_sequence_headers_share_a_bounded_budget() {
        // Many chunk streams each opening a 64 KiB sequence header at once: at most
        // CAPTURE_BUDGET bytes are kept.
        let mut bytes = Vec::new();
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.resize(MAX_CAPTURE, 0);
        for csid in 3..40u8 {
            bytes.extend_from_slice(&[csid, 0, 0, 0, 0x01, 0x00, 0x00, VIDEO, 1, 0, 0, 0]);
            bytes.extend_from_slice(&seq[..128]);
        }
        let mut i = Inspector::new();
        i.feed(&bytes).unwrap();
        assert!(i.reserved <= CAPTURE_BUDGET);
        assert!(i.held() < CAPTURE_BUDGET + DEFAULT_MAX_CHUNK_STREAMS * 256, "{}", i.held());
    }

    #[test]
    fn abort_drops_the_partial_message() {
        let mut bytes = vec![0x06, 0, 0, 0, 0, 0x01, 0x00, VIDEO, 1, 0, 0, 0];
        bytes.extend_from_slice(&[0x17, 1, 0, 0, 0]);
        bytes.extend_from_slice(&[0; 123]);
        bytes.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, message::ABORT, 0, 0, 0, 0, 0, 0, 0, 6]);
        // The chunk stream starts a new, 6-byte message with a fmt 1 header.
        bytes.extend_from_slice(&[0x46, 0, 0, 40, 0, 0, 6, VIDEO, 0x27, 1, 0, 0, 0, 0]);
        let info = inspect(&bytes).info().clone();
        assert_eq!((info.video_frames, info.keyframes), (1, 0), "only the frame after the abort");
        assert_eq!(info, reference(&bytes));
    }

    #[test]
    fn errors_stop_inspection_once() {
        // Cut at a message boundary, then a fmt 1 header on a chunk stream never seen.
        let ends = ChunkDecoder::new().decode_all(FFMPEG_PUBLISH).unwrap();
        let cut = ends.iter().map(|(_, end)| *end as usize).find(|&end| end > 5000).unwrap();
        let mut i = Inspector::new();
        i.feed(&FFMPEG_PUBLISH[..cut]).unwrap();
        let before = i.info().clone();
        assert_eq!(
            i.feed(&[0x4A, 0, 0, 0, 0, 0, 1, VIDEO]),
            Err(InspectError::Header(HeaderError::MissingPreviousHeader { csid: 10, fmt: 1 }))
        );
        assert!(i.stopped());
        assert_eq!(i.feed(&FFMPEG_PUBLISH[cut..]), Ok(()), "later input is ignored");
        assert_eq!(i.info(), &before);
        assert_eq!(i.held(), 0);
        let bad_size = [0x02, 0, 0, 0, 0, 0, 4, message::SET_CHUNK_SIZE, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(Inspector::new().feed(&bad_size), Err(InspectError::Control(_))));
        let mut inside = vec![0x06, 0, 0, 0, 0, 1, 0, VIDEO, 1, 0, 0, 0];
        inside.extend_from_slice(&[0; 128]);
        inside.extend_from_slice(&[0x06, 0, 0, 0, 0, 1, 0, VIDEO, 1, 0, 0, 0]);
        assert_eq!(
            Inspector::new().feed(&inside),
            Err(InspectError::Header(HeaderError::HeaderInsideMessage { csid: 6, fmt: 0, received: 128, length: 256 }))
        );
        // 65 chunk streams with 2-byte basic headers (csid 64 + c), empty audio messages.
        let many: Vec<u8> =
            (0..=DEFAULT_MAX_CHUNK_STREAMS as u8).flat_map(|c| [0, c, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]).collect();
        assert_eq!(
            Inspector::new().feed(&many),
            Err(InspectError::Header(HeaderError::TooManyChunkStreams { csid: 128, limit: 64 }))
        );
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_facts(cuts in proptest::collection::vec(0usize..FFMPEG_PUBLISH.len(), 0..40)) {
            let mut cuts = cuts;
            cuts.push(0);
            cuts.push(FFMPEG_PUBLISH.len());
            cuts.sort_unstable();
            let mut i = Inspector::new();
            for w in cuts.windows(2) {
                i.feed(&FFMPEG_PUBLISH[w[0]..w[1]]).unwrap();
            }
            prop_assert_eq!(i.info(), &reference(FFMPEG_PUBLISH));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000), split in 1usize..64) {
            let mut i = Inspector::new();
            for piece in bytes.chunks(split) {
                let _ = i.feed(piece);
            }
            prop_assert!(i.held() <= CAPTURE_BUDGET + DEFAULT_MAX_CHUNK_STREAMS * 256);
        }

        #[test]
        fn flipped_real_streams_never_panic(flips in proptest::collection::vec((0usize..FFMPEG_PUBLISH.len(), any::<u8>()), 1..8)) {
            let mut bytes = FFMPEG_PUBLISH.to_vec();
            for (at, b) in flips {
                bytes[at] = b;
            }
            let mut i = Inspector::new();
            for piece in bytes.chunks(1500) {
                let _ = i.feed(piece);
            }
            prop_assert!(i.held() <= CAPTURE_BUDGET + DEFAULT_MAX_CHUNK_STREAMS * 256);
        }
    }
}
