//! FLV tag bodies as RTMP carries them (audio messages are FLV AUDIODATA, video messages
//! VIDEODATA, `@setDataFrame`/`onMetaData` data messages SCRIPTDATA), read only as far as a
//! proxy needs to describe a stream:
//!
//! - [`video_tag`] / [`audio_tag`]: codec (legacy FLV codec ids and enhanced RTMP FourCCs),
//!   frame type, and whether the message is a coded frame, a sequence header or something else,
//!   from the first bytes of the message ([`TAG_PREFIX`] are always enough);
//! - [`metadata`]: `onMetaData` (an AMF0 ECMA array or object): width, height, frame rate,
//!   codec ids, encoder, audio format;
//! - [`avc_config_size`] / [`h264_sps_size`] and [`hevc_config_size`] / [`hevc_sps_size`]: the
//!   picture size from the SPS in an AVC or HEVC decoder configuration record (cropping
//!   applied), for publishers whose metadata lacks it;
//! - [`aac_config`]: sample rate and channels of an AAC AudioSpecificConfig;
//! - [`tags`]: the tags of an FLV file (captures for tests and benchmarks); [`write_tag`] and
//!   [`FILE_HEADER`]: a live FLV stream as the edge writes it.
//!
//! Everything takes a byte slice and returns `None` for anything it cannot read: no input
//! panics, loops are bounded by the input, and nothing allocates more than the input's size.
#![deny(clippy::indexing_slicing)]

use super::rtmp::amf0::{self, Amf0Value};

/// Bytes at the start of an audio or video message that [`video_tag`] and [`audio_tag`] need
/// at most (enhanced RTMP with a ModEx prefix and a multitrack header included).
pub const TAG_PREFIX: usize = 32;

/// FLV/RTMP tag types.
pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

/// What a video or audio message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// A coded frame (counted as one frame).
    Frame,
    /// A decoder configuration (AVC/HEVC record, AAC AudioSpecificConfig, ...), starting at
    /// `config` in the message.
    SequenceHeader { config: usize },
    /// End of sequence, metadata, command frames and everything else: not a frame.
    Other,
}

/// The head of a video message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTag {
    /// `"h264"`, `"hevc"`, `"av1"`, `"vp9"`, ...; `None` for an unknown codec id or FourCC.
    pub codec: Option<&'static str>,
    /// A coded frame of frame type 1 (key frame).
    pub keyframe: bool,
    pub packet: Packet,
}

/// The head of an audio message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTag {
    /// `"aac"`, `"mp3"`, `"opus"`, ...; `None` for an unknown format or FourCC.
    pub codec: Option<&'static str>,
    pub packet: Packet,
    /// Sample rate and channels from the legacy header's bits (AAC: see [`aac_config`]).
    pub sample_rate: u32,
    pub channels: u8,
}

fn byte(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

fn fourcc(b: &[u8], at: usize) -> Option<[u8; 4]> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some([*s.first()?, *s.get(1)?, *s.get(2)?, *s.get(3)?])
}

/// The codec part of an enhanced RTMP header at `at`, after its packet type: a multitrack
/// packet first has a byte with the multitrack type and the tracks' packet type; then comes the
/// FourCC, unless every track has its own (multitrack type 2). Returns the packet type, the
/// position after, whether it is one track, and the FourCC.
fn codec_header(b: &[u8], at: usize, packet_type: u8, multitrack: bool) -> Option<(u8, usize, bool, Option<[u8; 4]>)> {
    let (mut packet_type, mut at, mut single_track) = (packet_type, at, true);
    if multitrack {
        let m = byte(b, at)?;
        packet_type = m & 0x0F;
        single_track = m >> 4 == 0;
        at += 1;
        if m >> 4 == 2 {
            return Some((packet_type, at, single_track, None));
        }
    }
    Some((packet_type, at + 4, single_track, Some(fourcc(b, at)?)))
}

/// Codec name of an enhanced RTMP video FourCC.
pub fn video_fourcc_name(cc: [u8; 4]) -> Option<&'static str> {
    Some(match &cc {
        b"avc1" => "h264",
        b"hvc1" => "hevc",
        b"av01" => "av1",
        b"vp09" => "vp9",
        b"vp08" => "vp8",
        _ => return None,
    })
}

/// Codec name of a legacy FLV video codec id (12 is the widespread HEVC extension).
pub fn video_codec_id_name(id: u8) -> Option<&'static str> {
    Some(match id {
        2 => "h263",
        3 => "screen",
        4 => "vp6",
        5 => "vp6a",
        6 => "screen2",
        7 => "h264",
        12 => "hevc",
        _ => return None,
    })
}

/// Codec name of an enhanced RTMP audio FourCC.
pub fn audio_fourcc_name(cc: [u8; 4]) -> Option<&'static str> {
    Some(match &cc {
        b"mp4a" => "aac",
        b"Opus" => "opus",
        b"fLaC" => "flac",
        b"ac-3" => "ac3",
        b"ec-3" => "eac3",
        b".mp3" => "mp3",
        _ => return None,
    })
}

/// Codec name of a legacy FLV SoundFormat.
pub fn audio_format_name(format: u8) -> Option<&'static str> {
    Some(match format {
        0 | 3 => "pcm",
        1 => "adpcm",
        2 | 14 => "mp3",
        4..=6 => "nellymoser",
        7 => "g711a",
        8 => "g711u",
        10 => "aac",
        11 => "speex",
        _ => return None,
    })
}

/// Skips enhanced RTMP ModEx prefixes starting at `at` (right after the first byte); returns
/// the real packet type and where the rest starts.
fn skip_modex(b: &[u8], mut at: usize, mut packet_type: u8, modex: u8) -> Option<(u8, usize)> {
    let mut rounds = 0;
    while packet_type == modex {
        rounds += 1;
        if rounds > 4 {
            return None;
        }
        let mut size = usize::from(byte(b, at)?) + 1;
        at += 1;
        if size == 256 {
            let hi = usize::from(byte(b, at)?);
            let lo = usize::from(byte(b, at + 1)?);
            size = ((hi << 8) | lo) + 1;
            at += 2;
        }
        at = at.checked_add(size)?;
        packet_type = byte(b, at)? & 0x0F;
        at += 1;
    }
    Some((packet_type, at))
}

/// Reads the head of a video message from its first bytes (at least [`TAG_PREFIX`] of them,
/// or the whole message if shorter).
pub fn video_tag(b: &[u8]) -> Option<VideoTag> {
    let first = byte(b, 0)?;
    if first & 0x80 == 0 {
        let (frame_type, codec_id) = (first >> 4, first & 0x0F);
        let codec = video_codec_id_name(codec_id);
        let packet = if frame_type == 5 {
            Packet::Other // video info / command frame
        } else if codec_id == 7 || codec_id == 12 {
            match byte(b, 1)? {
                0 => Packet::SequenceHeader { config: 5 },
                1 => Packet::Frame,
                _ => Packet::Other,
            }
        } else {
            Packet::Frame
        };
        return Some(VideoTag { codec, keyframe: frame_type == 1 && packet == Packet::Frame, packet });
    }
    // Enhanced RTMP: IsExHeader, 3-bit frame type, 4-bit packet type, then a FourCC.
    let frame_type = (first >> 4) & 0x07;
    let (packet_type, at) = skip_modex(b, 1, first & 0x0F, 7)?;
    if frame_type == 5 && packet_type != 4 {
        return Some(VideoTag { codec: None, keyframe: false, packet: Packet::Other }); // command
    }
    let multitrack = packet_type == 6;
    let (packet_type, at, single_track, cc) = codec_header(b, at, packet_type, multitrack)?;
    let codec = cc.and_then(video_fourcc_name);
    let packet = match packet_type {
        0 if single_track => Packet::SequenceHeader { config: at + usize::from(multitrack) },
        1 | 3 => Packet::Frame,
        _ => Packet::Other,
    };
    Some(VideoTag { codec, keyframe: frame_type == 1 && matches!(packet, Packet::Frame), packet })
}

/// Reads the head of an audio message from its first bytes.
pub fn audio_tag(b: &[u8]) -> Option<AudioTag> {
    let first = byte(b, 0)?;
    let format = first >> 4;
    if format != 9 {
        let sample_rate = match (first >> 2) & 3 {
            0 => 5_512,
            1 => 11_025,
            2 => 22_050,
            _ => 44_100,
        };
        let channels = if first & 1 == 1 { 2 } else { 1 };
        let packet = if format == 10 {
            match byte(b, 1)? {
                0 => Packet::SequenceHeader { config: 2 },
                1 => Packet::Frame,
                _ => Packet::Other,
            }
        } else {
            Packet::Frame
        };
        let (sample_rate, channels) = if format == 10 { (0, 0) } else { (sample_rate, channels) };
        return Some(AudioTag { codec: audio_format_name(format), packet, sample_rate, channels });
    }
    // Enhanced RTMP audio: SoundFormat 9 (ExHeader), packet type, then a FourCC.
    let (packet_type, at) = skip_modex(b, 1, first & 0x0F, 7)?;
    let multitrack = packet_type == 5;
    let (packet_type, at, single_track, cc) = codec_header(b, at, packet_type, multitrack)?;
    let packet = match packet_type {
        // A one-track multitrack packet has a track id before the track's body.
        0 if single_track => Packet::SequenceHeader { config: at + usize::from(multitrack) },
        1 => Packet::Frame,
        _ => Packet::Other,
    };
    Some(AudioTag { codec: cc.and_then(audio_fourcc_name), packet, sample_rate: 0, channels: 0 })
}

/// Sample rate and channel count of an AAC AudioSpecificConfig.
pub fn aac_config(asc: &[u8]) -> Option<(u32, u8)> {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let mut r = BitReader::new(asc);
    let object_type = r.bits(5)?;
    if object_type == 31 {
        r.bits(6)?;
    }
    let index = r.bits(4)?;
    let rate = if index == 15 { r.bits(24)? } else { *RATES.get(usize::try_from(index).ok()?)? };
    let channels = u8::try_from(r.bits(4)?).ok()?;
    Some((rate, channels))
}

/// What `onMetaData` says about a stream; zeros and `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub width: u32,
    pub height: u32,
    pub framerate: f64,
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    /// The `encoder` string (at most [`MAX_ENCODER_LEN`] bytes kept).
    pub encoder: Option<String>,
    pub audio_sample_rate: u32,
    pub audio_channels: u8,
    /// `videodatarate` / `audiodatarate`, kbit/s.
    pub video_kbps: f64,
    pub audio_kbps: f64,
}

/// Longest `encoder` string kept from metadata.
pub const MAX_ENCODER_LEN: usize = 128;

/// Reads an `onMetaData` data message (`@setDataFrame`, `onMetaData`, then an ECMA array or
/// object; `amf3` for type 15 messages, whose leading 0x00 format byte is skipped). `None`
/// when the message is not `onMetaData` or does not decode.
pub fn metadata(payload: &[u8], amf3: bool) -> Option<Metadata> {
    let mut rest = if amf3 { payload.strip_prefix(&[0u8]).unwrap_or(payload) } else { payload };
    let mut next = || -> Option<Amf0Value> {
        let (value, used) = amf0::decode(rest).ok()?;
        rest = rest.get(used..)?;
        Some(value)
    };
    let mut value = next()?;
    if value.as_str() == Some("@setDataFrame") {
        value = next()?;
    }
    if value.as_str() != Some("onMetaData") {
        return None;
    }
    let map = next()?;
    if !matches!(map, Amf0Value::EcmaArray(_) | Amf0Value::Object(_) | Amf0Value::TypedObject { .. }) {
        return None;
    }
    let number = |k: &str| map.get(k).and_then(Amf0Value::as_f64).filter(|n| n.is_finite() && *n > 0.0);
    let dimension = |k: &str| number(k).filter(|n| *n <= 65_535.0).map_or(0, |n| n as u32);
    let codec = |k: &str, by_id: fn(u8) -> Option<&'static str>, by_cc: fn([u8; 4]) -> Option<&'static str>| match map
        .get(
        k,
    )? {
        Amf0Value::Number(n) if *n >= 0.0 && *n < 256.0 => by_id(*n as u8),
        v => by_cc(fourcc(v.as_str()?.as_bytes(), 0)?),
    };
    let framerate = number("framerate").or_else(|| number("videoframerate")).or_else(|| number("fps"));
    let stereo = map.get("stereo").and_then(Amf0Value::as_bool);
    let channels = number("audiochannels").filter(|n| *n < 256.0).map(|n| n as u8);
    let encoder = map.get("encoder").and_then(Amf0Value::as_str).map(|s| {
        let mut end = s.len().min(MAX_ENCODER_LEN);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.get(..end).unwrap_or_default().to_string()
    });
    Some(Metadata {
        width: dimension("width"),
        height: dimension("height"),
        framerate: framerate.filter(|f| *f <= 1000.0).unwrap_or(0.0),
        video_codec: codec("videocodecid", video_codec_id_name, video_fourcc_name),
        audio_codec: codec("audiocodecid", audio_format_name, audio_fourcc_name),
        encoder,
        audio_sample_rate: number("audiosamplerate").filter(|n| *n < 1e7).map_or(0, |n| n as u32),
        audio_channels: channels.or(stereo.map(|s| if s { 2 } else { 1 })).unwrap_or(0),
        video_kbps: number("videodatarate").unwrap_or(0.0),
        audio_kbps: number("audiodatarate").unwrap_or(0.0),
    })
}

/// Reads big-endian bits, MSB first, with exp-Golomb codes.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let b = *self.data.get(self.pos / 8)?;
        let v = (b >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(v))
    }

    /// Up to 32 bits.
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n.min(32) {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.pos = self.pos.checked_add(n)?;
        (self.pos <= self.data.len() * 8).then_some(())
    }

    /// Unsigned exp-Golomb (ue(v)); values past 32 bits are refused.
    /// A cropping (H.264 frame_cropping) or conformance (HEVC) window: a flag, then the left,
    /// right, top and bottom offsets when it is set; zeros when not.
    fn crop_window(&mut self) -> Option<(u64, u64, u64, u64)> {
        if self.bit()? == 0 {
            return Some((0, 0, 0, 0));
        }
        Some((self.ue()?.into(), self.ue()?.into(), self.ue()?.into(), self.ue()?.into()))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        ((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()
    }

    /// Signed exp-Golomb (se(v)).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Largest NAL unit unescaped for parsing (SPS are tens of bytes).
const MAX_NAL: usize = 4096;

/// The RBSP of a NAL unit: emulation prevention bytes (0x000003) removed, header kept.
fn unescape(nal: &[u8]) -> Vec<u8> {
    let nal = nal.get(..nal.len().min(MAX_NAL)).unwrap_or_default();
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Largest picture side accepted from an SPS.
const MAX_SIDE: u64 = 65_535;

/// Width and height from an H.264 SPS NAL unit (header byte included), cropping applied.
pub fn h264_sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let rbsp = unescape(nal);
    let mut r = BitReader::new(&rbsp);
    let header = r.bits(8)?;
    if header & 0x1F != 7 {
        return None;
    }
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = 0;
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            // seq_scaling_matrix_present_flag: scaling lists to skip
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (left, right, top, bottom) = r.crop_window()?;
    let chroma_array_type = if separate_colour_plane == 1 { 0 } else { chroma_format_idc };
    let (crop_x, crop_y) = match chroma_array_type {
        0 => (1, 2 - frame_mbs_only),
        1 => (2, 2 * (2 - frame_mbs_only)),
        2 => (2, 2 - frame_mbs_only),
        _ => (1, 2 - frame_mbs_only),
    };
    let width = (width_mbs * 16).checked_sub(crop_x * (left + right))?;
    let height = ((2 - frame_mbs_only) * height_map_units * 16).checked_sub(crop_y * (top + bottom))?;
    sized(width, height)
}

fn sized(width: u64, height: u64) -> Option<(u32, u32)> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return None;
    }
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// Width and height from the first SPS of an AVCDecoderConfigurationRecord.
pub fn avc_config_size(record: &[u8]) -> Option<(u32, u32)> {
    let count = byte(record, 5)? & 0x1F;
    if count == 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([byte(record, 6)?, byte(record, 7)?]));
    h264_sps_size(record.get(8..8usize.checked_add(len)?)?)
}

/// Width and height from an HEVC SPS NAL unit (2-byte header included), conformance window
/// applied.
pub fn hevc_sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let rbsp = unescape(nal);
    let mut r = BitReader::new(&rbsp);
    let header = r.bits(16)?;
    if (header >> 9) & 0x3F != 33 {
        return None;
    }
    r.bits(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    r.bit()?; // sps_temporal_id_nesting_flag
    // profile_tier_level(1, max_sub_layers_minus1)
    r.skip(88)?; // general profile space/tier/idc, compatibility flags, constraint flags
    r.skip(8)?; // general_level_idc
    let mut sub_profile = [false; 8];
    let mut sub_level = [false; 8];
    for i in 0..max_sub_layers_minus1 as usize {
        *sub_profile.get_mut(i)? = r.bit()? == 1;
        *sub_level.get_mut(i)? = r.bit()? == 1;
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.bits(2)?; // reserved_zero_2bits
        }
    }
    for i in 0..max_sub_layers_minus1 as usize {
        if *sub_profile.get(i)? {
            r.skip(88)?;
        }
        if *sub_level.get(i)? {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return None;
    }
    let mut separate_colour_plane = 0;
    if chroma_format_idc == 3 {
        separate_colour_plane = r.bit()?;
    }
    let width = u64::from(r.ue()?);
    let height = u64::from(r.ue()?);
    let (left, right, top, bottom) = r.crop_window()?;
    let chroma_array_type = if separate_colour_plane == 1 { 0 } else { chroma_format_idc };
    let (sub_w, sub_h) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    sized(width.checked_sub(sub_w * (left + right))?, height.checked_sub(sub_h * (top + bottom))?)
}

/// Width and height from the first SPS of an HEVCDecoderConfigurationRecord.
pub fn hevc_config_size(record: &[u8]) -> Option<(u32, u32)> {
    let arrays = byte(record, 22)?;
    let mut at = 23usize;
    for _ in 0..arrays {
        let nal_type = byte(record, at)? & 0x3F;
        let count = u16::from_be_bytes([byte(record, at + 1)?, byte(record, at + 2)?]);
        at += 3;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([byte(record, at)?, byte(record, at + 1)?]));
            let nal = record.get(at + 2..at.checked_add(2 + len)?)?;
            if nal_type == 33 {
                return hevc_sps_size(nal);
            }
            at += 2 + len;
        }
    }
    None
}

/// The picture size in a video sequence header of `codec`, when the codec's record is read.
pub fn config_size(codec: Option<&'static str>, record: &[u8]) -> Option<(u32, u32)> {
    match codec? {
        "h264" => avc_config_size(record),
        "hevc" => hevc_config_size(record),
        _ => None,
    }
}

/// Reads a live FLV stream fed in pieces (an HTTP-FLV body): the file header, then one tag at
/// a time. Holds at most one incomplete tag (under 16 MiB + 15 bytes, the 24-bit size field's
/// reach) besides the input not yet read.
#[derive(Debug, Default)]
pub struct TagReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already read.
    at: usize,
    header_done: bool,
}

/// One tag read by [`TagReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedTag {
    pub tag_type: u8,
    pub timestamp: u32,
    pub data: Vec<u8>,
}

/// Why a stream is not FLV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("not an FLV stream (no FLV signature)")]
    NotFlv,
}

impl TagReader {
    /// Appends the next bytes of the stream.
    pub fn feed(&mut self, input: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > 64 * 1024 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(input);
    }

    /// The next complete tag, if one has arrived.
    pub fn next_tag(&mut self) -> Result<Option<OwnedTag>, FlvError> {
        let rest = self.buf.get(self.at..).unwrap_or_default();
        if !self.header_done {
            let Some(head) = rest.get(..9) else { return Ok(None) };
            let &[b'F', b'L', b'V', _, _, a, b, c, d] = head else { return Err(FlvError::NotFlv) };
            let size = u32::from_be_bytes([a, b, c, d]) as usize;
            let skip = size.max(9).saturating_add(4);
            if rest.len() < skip {
                return Ok(None);
            }
            self.at += skip;
            self.header_done = true;
            return self.next_tag();
        }
        let Some(&[kind, s2, s1, s0, t2, t1, t0, t3, _, _, _]) = rest.get(..11) else { return Ok(None) };
        let size = usize::from(s2) << 16 | usize::from(s1) << 8 | usize::from(s0);
        let timestamp = u32::from_be_bytes([t3, t2, t1, t0]);
        let tag_type = kind & 0x1f;
        let Some(data) = rest.get(11..11 + size) else { return Ok(None) };
        if rest.len() < 11 + size + 4 {
            return Ok(None);
        }
        let data = data.to_vec();
        self.at += 11 + size + 4;
        Ok(Some(OwnedTag { tag_type, timestamp, data }))
    }
}

/// The start of a live FLV stream: the file header announcing audio and video, and the first
/// PreviousTagSize (0).
pub const FILE_HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0];

/// Appends one FLV tag (`tag_type` [`TAG_AUDIO`], [`TAG_VIDEO`] or [`TAG_SCRIPT`], RTMP's type
/// ids for the same bodies) with its PreviousTagSize to `out`. Bodies over 16 MiB do not fit
/// the 24-bit size field; the caller keeps them smaller (RTMP's decoder limit does).
pub fn write_tag(tag_type: u8, timestamp: u32, body: &[u8], out: &mut Vec<u8>) {
    let size = u32::try_from(body.len()).unwrap_or(u32::MAX).min(0xFF_FFFF);
    let [_, s2, s1, s0] = size.to_be_bytes();
    let [t3, t2, t1, t0] = timestamp.to_be_bytes();
    out.extend_from_slice(&[tag_type, s2, s1, s0, t2, t1, t0, t3, 0, 0, 0]);
    out.extend_from_slice(body.get(..size as usize).unwrap_or(body));
    out.extend_from_slice(&(size + 11).to_be_bytes());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<'a> {
    pub tag_type: u8,
    /// Milliseconds (the 24-bit field and its extension byte).
    pub timestamp: u32,
    pub data: &'a [u8],
}

/// The tags of an FLV file, in order; stops at the first truncated tag. Empty if the file
/// does not start with an FLV header.
pub fn tags(file: &[u8]) -> impl Iterator<Item = Tag<'_>> {
    let start = match file.get(..9) {
        Some([b'F', b'L', b'V', _, _, a, b, c, d]) => {
            usize::try_from(u32::from_be_bytes([*a, *b, *c, *d])).unwrap_or(usize::MAX).saturating_add(4)
        }
        _ => usize::MAX,
    };
    let mut at = start;
    std::iter::from_fn(move || {
        let h = file.get(at..at.checked_add(11)?)?;
        let size = usize::from(*h.get(1)?) << 16 | usize::from(*h.get(2)?) << 8 | usize::from(*h.get(3)?);
        let ts = u32::from(*h.get(4)?) << 16 | u32::from(*h.get(5)?) << 8 | u32::from(*h.get(6)?);
        let timestamp = ts | u32::from(*h.get(7)?) << 24;
        let data = file.get(at + 11..at.checked_add(11 + size)?)?;
        at = at.checked_add(11 + size + 4)?;
        Some(Tag { tag_type: *h.first()?, timestamp, data })
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn written_tags_read_back() {
        let mut file = FILE_HEADER.to_vec();
        write_tag(TAG_VIDEO, 0x0123_4567, &[1, 2, 3], &mut file);
        write_tag(TAG_AUDIO, 40, &[], &mut file);
        let read: Vec<_> = tags(&file).collect();
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].tag_type, read[0].timestamp, read[0].data), (TAG_VIDEO, 0x0123_4567, &[1u8, 2, 3][..]));
        assert_eq!((read[1].tag_type, read[1].timestamp, read[1].data.len()), (TAG_AUDIO, 40, 0));
        assert_eq!(&file[file.len() - 4..], &11u32.to_be_bytes());
    }

    #[test]
    fn a_stream_fed_in_pieces_reads_tag_by_tag() {
        let mut file = FILE_HEADER.to_vec();
        write_tag(TAG_SCRIPT, 0, b"meta", &mut file);
        write_tag(TAG_VIDEO, 40, &[0x17, 1, 2], &mut file);
        let mut reader = TagReader::default();
        let mut got = Vec::new();
        for piece in file.chunks(5) {
            reader.feed(piece);
            while let Some(tag) = reader.next_tag().unwrap() {
                got.push(tag);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].tag_type, got[1].timestamp, &got[1].data[..]), (TAG_VIDEO, 40, &[0x17u8, 1, 2][..]));
        let mut bad = TagReader::default();
        bad.feed(b"HTTP/1.1 200 OK");
        assert_eq!(bad.next_tag(), Err(FlvError::NotFlv));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// First video tags (AVC sequence headers) written by ffmpeg 5.1 + libx264.
    const X264_640X360_BASELINE: &str =
        "17000000000142c01effe100196742c01eda0280bfe5c044000003000400000300ca3c58ba8001000468ce0fc8";
    const X264_640X360_HIGH: &str =
        "17000000000164001effe1001a6764001eacd940a02ff970110000030001000003003c0f162d9601000668ebe3cb22c0fdf8f800";
    const X264_1920X1080: &str =
        "17000000000142c028ffe100196742c028da01e0089f970110000003001000000303c0f1832a01000468ce0fc8";
    const X264_1920X1080_INTERLACED: &str =
        "1700000000014d4028ffe10019674d4028f403c0227ef0110000030001000003003c1f162ea001000468de0fc8";
    const X264_1280X720_444: &str =
        "170000000001f4001fffe1001967f4001f9196805005bb0110000003001000000303c0f1832a01000568ce0f1920fff8f800";
    const X264_854X480: &str =
        "17000000000164001fffe1001a6764001facd940d83de6f0110000030001000003003c0f18319601000468ef8fcbfdf8f800";

    fn avc_size(tag_hex: &str) -> Option<(u32, u32)> {
        let tag = hex(tag_hex);
        let head = video_tag(&tag).unwrap();
        assert_eq!(head.codec, Some("h264"));
        let Packet::SequenceHeader { config } = head.packet else { panic!("not a sequence header: {head:?}") };
        config_size(head.codec, &tag[config..])
    }

    #[test]
    fn sps_of_real_x264_streams() {
        assert_eq!(avc_size(X264_640X360_BASELINE), Some((640, 360)), "baseline, 23 MB rows cropped by 8");
        assert_eq!(avc_size(X264_640X360_HIGH), Some((640, 360)), "high profile: chroma format and the rest");
        assert_eq!(avc_size(X264_1920X1080), Some((1920, 1080)));
        assert_eq!(avc_size(X264_1920X1080_INTERLACED), Some((1920, 1080)), "field coding: map units are pairs");
        assert_eq!(avc_size(X264_1280X720_444), Some((1280, 720)), "4:4:4: crop units of one sample");
        assert_eq!(avc_size(X264_854X480), Some((854, 480)), "cropped on the right");
    }

    #[test]
    fn sps_of_real_x265_streams() {
        // hvcC boxes written by ffmpeg 5.1 + libx265 (VPS, SPS, PPS and an SEI with x265's options).
        let hvcc = include_bytes!("../../tests/data/media/x265_1280x720.hvcc");
        assert_eq!(hevc_config_size(hvcc), Some((1280, 720)));
        let hvcc = include_bytes!("../../tests/data/media/x265_1920x1080.hvcc");
        assert_eq!(hevc_config_size(hvcc), Some((1920, 1080)));
        // The same record in an enhanced RTMP sequence start.
        let mut tag = vec![0x90, b'h', b'v', b'c', b'1'];
        tag.extend_from_slice(hvcc);
        let head = video_tag(&tag).unwrap();
        assert_eq!(
            head,
            VideoTag { codec: Some("hevc"), keyframe: false, packet: Packet::SequenceHeader { config: 5 } }
        );
        assert_eq!(config_size(head.codec, &tag[5..]), Some((1920, 1080)));
    }

    #[test]
    fn broken_sps_are_none() {
        let tag = hex(X264_640X360_HIGH);
        for len in 0..tag.len() - 6 {
            // Truncations end inside the SPS or before it: never a wrong size, never a panic.
            let got = avc_config_size(&tag[5..5 + len]);
            assert!(got.is_none() || got == Some((640, 360)), "{len}: {got:?}");
        }
        assert_eq!(h264_sps_size(&[0x68, 0xff, 0xff]), None, "a PPS is not an SPS");
        assert_eq!(h264_sps_size(&[0x67, 100, 0, 0, 0, 0, 0, 0, 0, 0]), None, "zeros: exp-Golomb runs out");
        assert_eq!(hevc_sps_size(&[0x42, 0x01]), None);
    }

    #[test]
    fn video_heads() {
        let legacy = |b: &[u8]| video_tag(b).unwrap();
        assert_eq!(
            legacy(&[0x17, 1, 0, 0, 0]),
            VideoTag { codec: Some("h264"), keyframe: true, packet: Packet::Frame }
        );
        assert_eq!(
            legacy(&[0x27, 1, 0, 0, 0]),
            VideoTag { codec: Some("h264"), keyframe: false, packet: Packet::Frame }
        );
        assert_eq!(legacy(&[0x17, 2, 0, 0, 0]).packet, Packet::Other, "end of sequence");
        assert_eq!(legacy(&[0x57, 0]).packet, Packet::Other, "command frame");
        assert_eq!(legacy(&[0x1c, 1, 0, 0, 0]).codec, Some("hevc"));
        assert_eq!(legacy(&[0x22]), VideoTag { codec: Some("h263"), keyframe: false, packet: Packet::Frame });
        assert_eq!(video_tag(&[0x17]), None, "AVC needs its packet type");
        assert_eq!(video_tag(&[]), None);
        // Enhanced RTMP: key frame, CodedFrames / CodedFramesX / SequenceEnd.
        let ex = |b: &[u8]| video_tag(b).unwrap();
        assert_eq!(ex(b"\x91av01").packet, Packet::Frame);
        assert_eq!(ex(b"\x91av01"), VideoTag { codec: Some("av1"), keyframe: true, packet: Packet::Frame });
        assert_eq!(ex(b"\xa3hvc1"), VideoTag { codec: Some("hevc"), keyframe: false, packet: Packet::Frame });
        assert_eq!(ex(b"\x92vp09").packet, Packet::Other);
        assert_eq!(ex(b"\x91zzzz").codec, None);
        assert_eq!(video_tag(b"\x91av0"), None, "truncated FourCC");
        // ModEx (timestamp offset, 3 bytes) wrapping CodedFramesX.
        assert_eq!(
            ex(b"\x97\x02\x00\x00\x10\x03avc1"),
            VideoTag { codec: Some("h264"), keyframe: true, packet: Packet::Frame }
        );
        // Multitrack, one track, sequence start: the record follows the track id.
        assert_eq!(
            ex(b"\x96\x00hvc1\x00"),
            VideoTag { codec: Some("hevc"), keyframe: false, packet: Packet::SequenceHeader { config: 7 } }
        );
        // Multitrack, many tracks with many codecs: a frame, codec unknown.
        assert_eq!(ex(b"\x96\x21\x00"), VideoTag { codec: None, keyframe: true, packet: Packet::Frame });
    }

    #[test]
    fn audio_heads() {
        let aac = audio_tag(&hex("af00120856e500")).unwrap();
        assert_eq!(aac.codec, Some("aac"));
        assert_eq!(aac.packet, Packet::SequenceHeader { config: 2 });
        assert_eq!(aac_config(&hex("120856e500")), Some((44100, 1)), "ffmpeg's AAC-LC mono 44.1 kHz");
        assert_eq!(aac_config(&[0x11, 0x90]), Some((48000, 2)));
        assert_eq!(aac_config(&[0x17]), None);
        assert_eq!(audio_tag(&hex("af01de02")).unwrap().packet, Packet::Frame);
        let mp3 = audio_tag(&[0x2f, 0xff]).unwrap();
        assert_eq!((mp3.codec, mp3.packet, mp3.sample_rate, mp3.channels), (Some("mp3"), Packet::Frame, 44100, 2));
        assert_eq!(audio_tag(b"\x91Opus").unwrap().codec, Some("opus"));
        assert_eq!(audio_tag(b"\x90mp4a").unwrap().packet, Packet::SequenceHeader { config: 5 });
        assert_eq!(audio_tag(b"\x90mp4"), None);
        assert_eq!(audio_tag(&[0xaf]), None);
    }

    fn amf(values: &[Amf0Value]) -> Vec<u8> {
        amf0::encode_all(values)
    }

    #[test]
    fn metadata_from_ffmpeg() {
        let file = include_bytes!("../../tests/data/media/x264_640x360.flv");
        let script = tags(file).find(|t| t.tag_type == TAG_SCRIPT).unwrap();
        let m = metadata(script.data, false).unwrap();
        assert_eq!((m.width, m.height, m.framerate), (640, 360, 25.0));
        assert_eq!((m.video_codec, m.audio_codec), (Some("h264"), Some("aac")));
        assert_eq!(m.encoder.as_deref(), Some("Lavf59.27.100"));
        assert_eq!((m.audio_sample_rate, m.audio_channels), (44100, 1));
        assert_eq!(m.audio_kbps, 62.5);
    }

    #[test]
    fn metadata_shapes() {
        let fields = vec![
            ("width".to_string(), Amf0Value::Number(1280.0)),
            ("height".to_string(), Amf0Value::Number(720.0)),
            ("fps".to_string(), Amf0Value::Number(29.97)),
            ("videocodecid".to_string(), Amf0Value::string("hvc1")),
            ("audiocodecid".to_string(), Amf0Value::string("Opus")),
            ("stereo".to_string(), Amf0Value::Boolean(true)),
            ("encoder".to_string(), Amf0Value::string("é".repeat(100))),
        ];
        let obs = amf(&[
            Amf0Value::string("@setDataFrame"),
            Amf0Value::string("onMetaData"),
            Amf0Value::Object(fields.clone()),
        ]);
        let m = metadata(&obs, false).unwrap();
        assert_eq!((m.width, m.height, m.framerate), (1280, 720, 29.97));
        assert_eq!((m.video_codec, m.audio_codec, m.audio_channels), (Some("hevc"), Some("opus"), 2));
        assert_eq!(m.encoder.as_ref().unwrap().len(), MAX_ENCODER_LEN, "cut on a character boundary");
        let mut amf3 = vec![0u8];
        amf3.extend(amf(&[Amf0Value::string("onMetaData"), Amf0Value::EcmaArray(fields)]));
        assert_eq!(metadata(&amf3, true).unwrap().height, 720, "type 15 with its format byte, ECMA array");
        let silly = amf(&[
            Amf0Value::string("onMetaData"),
            Amf0Value::object([("width", Amf0Value::Number(-1.0)), ("height", Amf0Value::Number(f64::NAN))]),
        ]);
        let m = metadata(&silly, false).unwrap();
        assert_eq!((m.width, m.height, m.framerate), (0, 0, 0.0), "nonsense is absent");
        assert_eq!(metadata(&amf(&[Amf0Value::string("onCuePoint"), Amf0Value::Null]), false), None);
        assert_eq!(metadata(&amf(&[Amf0Value::string("onMetaData"), Amf0Value::Null]), false), None);
        assert_eq!(metadata(&[0x02, 0x00], false), None);
    }

    #[test]
    fn flv_file_tags() {
        let file = include_bytes!("../../tests/data/media/x264_640x360.flv");
        let all: Vec<Tag> = tags(file).collect();
        assert_eq!(all.len(), 74);
        let video: Vec<&Tag> = all.iter().filter(|t| t.tag_type == TAG_VIDEO).collect();
        let frames = video.iter().filter(|t| video_tag(t.data).unwrap().packet == Packet::Frame).count();
        let keys = video.iter().filter(|t| video_tag(t.data).unwrap().keyframe).count();
        assert_eq!((frames, keys), (25, 3), "25 frames at -g 10; the end-of-sequence tag is no frame");
        assert_eq!(tags(&file[..13 + 11 + 293 + 4 + 20]).count(), 1, "a truncated tag ends the list");
        assert_eq!(tags(b"not flv").count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = video_tag(&bytes);
            let _ = audio_tag(&bytes);
            let _ = metadata(&bytes, false);
            let _ = metadata(&bytes, true);
            let _ = avc_config_size(&bytes);
            let _ = hevc_config_size(&bytes);
            let _ = aac_config(&bytes);
            let mut nal = vec![0x67];
            nal.extend_from_slice(&bytes);
            let _ = h264_sps_size(&nal);
            let mut nal = vec![0x42, 0x01];
            nal.extend_from_slice(&bytes);
            let _ = hevc_sps_size(&nal);
            let _ = tags(&bytes).count();
        }
    }
}
