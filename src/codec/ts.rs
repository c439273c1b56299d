//! FLV/RTMP audio and video messages to MPEG-TS (ISO/IEC 13818-1), for HTTP-TS players of
//! streams streamgate holds itself: H.264 (FLV codec 7) and AAC (sound format 10) only.
//!
//! - Tables: PAT and PMT (program 1, PMT on [`PMT_PID`]) before the first frame and before
//!   every video key frame, so a player may start at any key frame.
//! - Video: the AVC decoder configuration's SPS and PPS are kept; each frame's length-prefixed
//!   NAL units become an access unit in Annex B form (an access unit delimiter first, SPS and
//!   PPS before a key frame), one PES per frame with PTS (timestamp plus composition time) and
//!   DTS, on [`VIDEO_PID`], which carries the PCR.
//! - Audio: the AudioSpecificConfig gives each raw AAC frame its ADTS header; one PES per frame
//!   on [`AUDIO_PID`].
//! - Clock: the FLV milliseconds times 90, plus [`PTS_OFFSET`] so that a PTS ahead of its DTS
//!   and the PCR never go below zero; 33 bits, wrapping as MPEG-TS does.
//!
//! Frames of other codecs, and frames before their configuration arrived, are skipped
//! (counted in [`TsMuxer::skipped`]). Nothing here panics on malformed input: a frame that does
//! not parse is skipped.

/// TS packet size.
pub const PACKET: usize = 188;
pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;
/// Added to every timestamp (90 kHz): 1 s.
pub const PTS_OFFSET: u64 = 90_000;

const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const STREAM_TYPE_H264: u8 = 0x1b;
const STREAM_TYPE_AAC: u8 = 0x0f;

/// The codec of an audio or video message that this muxer cannot carry (`"hevc"`, `"mp3"`,
/// `"an unknown codec"`), if it is one; `None` for H.264, AAC and any other message.
pub fn uncarried(type_id: u8, payload: &[u8]) -> Option<&'static str> {
    let (codec, carried) = match type_id {
        VIDEO => (crate::codec::flv::video_tag(payload)?.codec, "h264"),
        AUDIO => (crate::codec::flv::audio_tag(payload)?.codec, "aac"),
        _ => return None,
    };
    match codec {
        Some(codec) if codec == carried => None,
        Some(codec) => Some(codec),
        None => Some("an unknown codec"),
    }
}

/// What a message was.
enum Written {
    Frame,
    /// A codec configuration, kept (nothing written).
    Config,
}

/// One output's muxing state (continuity counters, codec configurations).
#[derive(Debug, Default)]
pub struct TsMuxer {
    /// SPS and PPS in Annex B form, from the AVC decoder configuration.
    parameter_sets: Option<Vec<u8>>,
    /// The length of the NAL unit length prefix (1, 2 or 4).
    nal_length: usize,
    /// AAC object type, sampling frequency index, channel configuration.
    aac: Option<(u8, u8, u8)>,
    /// Continuity counters: PAT, PMT, video, audio.
    cc: [u8; 4],
    /// Frames passed over (unknown codec, no configuration yet, malformed).
    pub skipped: u64,
}

impl TsMuxer {
    /// Appends what `payload` (an RTMP/FLV message of `type_id` at `timestamp` ms) becomes in
    /// MPEG-TS to `out`; returns whether it wrote anything.
    pub fn push(&mut self, type_id: u8, timestamp: u32, payload: &[u8], out: &mut Vec<u8>) -> bool {
        let written = match type_id {
            VIDEO => self.video(timestamp, payload, out),
            AUDIO => self.audio(timestamp, payload, out),
            _ => return false,
        };
        match written {
            Some(Written::Frame) => true,
            Some(Written::Config) => false,
            None => {
                self.skipped += 1;
                false
            }
        }
    }

    fn video(&mut self, timestamp: u32, b: &[u8], out: &mut Vec<u8>) -> Option<Written> {
        let (&first, rest) = b.split_first()?;
        if first & 0x0f != 7 || first & 0x80 != 0 {
            return None; // not legacy AVC
        }
        let keyframe = first >> 4 == 1;
        let packet_type = *rest.first()?;
        let cts = rest.get(1..4).map(|c| {
            let raw = (i32::from(c[0]) << 16) | (i32::from(c[1]) << 8) | i32::from(c[2]);
            (raw << 8) >> 8 // sign-extend 24 bits
        })?;
        let data = &rest[4..];
        match packet_type {
            0 => self.avc_config(data).map(|()| Written::Config),
            1 => {
                let sets = self.parameter_sets.as_deref()?;
                let mut es = Vec::with_capacity(data.len() + 64);
                es.extend_from_slice(&[0, 0, 0, 1, 0x09, 0xf0]);
                if keyframe {
                    es.extend_from_slice(sets);
                }
                let mut at = 0;
                while at < data.len() {
                    let len_bytes = data.get(at..at + self.nal_length)?;
                    let len = len_bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
                    let nal = data.get(at + self.nal_length..at + self.nal_length + len)?;
                    at += self.nal_length + len;
                    if matches!(nal.first().map(|h| h & 0x1f), Some(9)) {
                        continue; // the publisher's own delimiter: ours is first already
                    }
                    es.extend_from_slice(&[0, 0, 0, 1]);
                    es.extend_from_slice(nal);
                }
                let dts = ticks(i64::from(timestamp));
                let pts = ticks(i64::from(timestamp) + i64::from(cts));
                if keyframe {
                    self.tables(out);
                }
                let header = pes_header(0xe0, pts, Some(dts), 0);
                self.packetize(VIDEO_PID, &header, &es, keyframe.then_some(dts), out);
                Some(Written::Frame)
            }
            _ => None,
        }
    }

    /// Keeps the SPS and PPS of an AVCDecoderConfigurationRecord.
    fn avc_config(&mut self, r: &[u8]) -> Option<()> {
        let nal_length = usize::from(r.get(4)? & 0x03) + 1;
        if nal_length == 3 {
            return None;
        }
        let mut sets = Vec::new();
        let mut at = 5;
        for mask in [0x1f, 0xff] {
            let count = r.get(at)? & mask;
            at += 1;
            for _ in 0..count {
                let len = usize::from(u16::from_be_bytes([*r.get(at)?, *r.get(at + 1)?]));
                let unit = r.get(at + 2..at + 2 + len)?;
                sets.extend_from_slice(&[0, 0, 0, 1]);
                sets.extend_from_slice(unit);
                at += 2 + len;
            }
        }
        self.parameter_sets = Some(sets);
        self.nal_length = nal_length;
        Some(())
    }

    fn audio(&mut self, timestamp: u32, b: &[u8], out: &mut Vec<u8>) -> Option<Written> {
        if b.first()? >> 4 != 10 {
            return None; // not AAC
        }
        let data = b.get(2..)?;
        match b.get(1)? {
            0 => {
                let object = data.first()? >> 3;
                let frequency = ((data.first()? & 0x07) << 1) | (data.get(1)? >> 7);
                let channels = (data.get(1)? >> 3) & 0x0f;
                if object == 0 || object > 4 || frequency > 12 {
                    return None;
                }
                self.aac = Some((object, frequency, channels));
                Some(Written::Config)
            }
            1 => {
                let (object, frequency, channels) = self.aac?;
                let len = data.len() + 7;
                if len >= 1 << 13 {
                    return None;
                }
                let mut es = Vec::with_capacity(len);
                es.extend_from_slice(&[
                    0xff,
                    0xf1,
                    ((object - 1) << 6) | (frequency << 2) | (channels >> 2),
                    ((channels & 3) << 6) | (len >> 11) as u8,
                    (len >> 3) as u8,
                    (((len & 7) << 5) as u8) | 0x1f,
                    0xfc,
                ]);
                es.extend_from_slice(data);
                let pts = ticks(i64::from(timestamp));
                let header = pes_header(0xc0, pts, None, es.len());
                self.packetize(AUDIO_PID, &header, &es, None, out);
                Some(Written::Frame)
            }
            _ => None,
        }
    }

    /// PAT and PMT.
    fn tables(&mut self, out: &mut Vec<u8>) {
        let mut pat = vec![0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01];
        pat.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
        self.section(0, 0, pat, out);
        let mut pmt = vec![0x02, 0xb0, 0x00, 0x00, 0x01, 0xc1, 0x00, 0x00];
        pmt.extend_from_slice(&(0xe000 | VIDEO_PID).to_be_bytes());
        pmt.extend_from_slice(&[0xf0, 0x00]);
        for (kind, pid) in [(STREAM_TYPE_H264, VIDEO_PID), (STREAM_TYPE_AAC, AUDIO_PID)] {
            pmt.push(kind);
            pmt.extend_from_slice(&(0xe000 | pid).to_be_bytes());
            pmt.extend_from_slice(&[0xf0, 0x00]);
        }
        let length = pmt.len() - 3 + 4;
        pmt[1] = 0xb0 | (length >> 8) as u8;
        pmt[2] = length as u8;
        self.section(1, PMT_PID, pmt, out);
    }

    /// One PSI section (with its CRC) in one packet.
    fn section(&mut self, counter: usize, pid: u16, mut section: Vec<u8>, out: &mut Vec<u8>) {
        let crc = crc32_mpeg(&section);
        section.extend_from_slice(&crc.to_be_bytes());
        let start = out.len();
        out.extend_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | self.next_cc(counter), 0x00]);
        out.extend_from_slice(&section);
        out.resize(start + PACKET, 0xff);
    }

    fn next_cc(&mut self, counter: usize) -> u8 {
        let cc = self.cc[counter];
        self.cc[counter] = (cc + 1) & 0x0f;
        cc
    }

    /// Splits a PES (`header` then `es`) into TS packets on `pid`; a PCR in the first when
    /// `pcr` is given. The last packet's adaptation field is stuffed so that the PES ends it.
    fn packetize(&mut self, pid: u16, header: &[u8], es: &[u8], pcr: Option<u64>, out: &mut Vec<u8>) {
        const ROOM: usize = PACKET - 4;
        let counter = if pid == VIDEO_PID { 2 } else { 3 };
        let total = header.len() + es.len();
        let byte = |i: usize| if i < header.len() { header[i] } else { es[i - header.len()] };
        let mut sent = 0;
        while sent < total {
            let first = sent == 0;
            // The adaptation field's bytes after its length byte, if it has one.
            let mut adaptation: Option<Vec<u8>> = pcr.filter(|_| first).map(|pcr| {
                let base = pcr & ((1 << 33) - 1);
                vec![
                    0x10,
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    (((base & 1) << 7) as u8) | 0x7e,
                    0x00,
                ]
            });
            let left = total - sent;
            let used = |a: &Option<Vec<u8>>| a.as_ref().map_or(0, |a| 1 + a.len());
            if left < ROOM - used(&adaptation) {
                // Stuffing: the adaptation field grows until the payload ends the packet.
                let need = ROOM - left;
                let field = adaptation.get_or_insert_with(Vec::new);
                if need >= 2 && field.is_empty() {
                    field.push(0x00); // no flags
                }
                field.resize(need - 1, 0xff);
            }
            let pusi = if first { 0x40 } else { 0 };
            let control = if adaptation.is_some() { 0x30 } else { 0x10 };
            let start = out.len();
            out.extend_from_slice(&[
                0x47,
                pusi | ((pid >> 8) as u8 & 0x1f),
                pid as u8,
                control | self.next_cc(counter),
            ]);
            if let Some(field) = &adaptation {
                out.push(field.len() as u8);
                out.extend_from_slice(field);
            }
            let take = (PACKET - (out.len() - start)).min(left);
            out.extend((sent..sent + take).map(byte));
            sent += take;
        }
    }
}

/// FLV milliseconds to the 90 kHz clock, offset and wrapped to 33 bits.
fn ticks(ms: i64) -> u64 {
    ((ms * 90 + PTS_OFFSET as i64).max(0) as u64) & ((1 << 33) - 1)
}

/// A PES header: `stream_id`, PTS and (when it differs) DTS; `len` of the payload for audio
/// (0, unbounded, for video).
fn pes_header(stream_id: u8, pts: u64, dts: Option<u64>, len: usize) -> Vec<u8> {
    let dts = dts.filter(|&d| d != pts);
    let fields = if dts.is_some() { 10 } else { 5 };
    let packet_len = if len == 0 { 0 } else { (len + 3 + fields).min(0xffff) };
    let mut h = vec![0, 0, 1, stream_id, (packet_len >> 8) as u8, packet_len as u8, 0x80];
    h.push(if dts.is_some() { 0xc0 } else { 0x80 });
    h.push(fields as u8);
    let stamp = |h: &mut Vec<u8>, marker: u8, t: u64| {
        h.push((marker << 4) | (((t >> 30) as u8 & 0x07) << 1) | 1);
        h.extend_from_slice(&((((t >> 15) & 0x7fff) << 1 | 1) as u16).to_be_bytes());
        h.extend_from_slice(&((((t & 0x7fff) << 1) | 1) as u16).to_be_bytes());
    };
    match dts {
        Some(dts) => {
            stamp(&mut h, 3, pts);
            stamp(&mut h, 1, dts);
        }
        None => stamp(&mut h, 2, pts),
    }
    h
}

/// CRC-32/MPEG-2 of a PSI section.
fn crc32_mpeg(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avc_config() -> Vec<u8> {
        // version 1, profile 66, compat 0xc0, level 30, 4-byte lengths; one SPS, one PPS.
        vec![0x17, 0x00, 0, 0, 0, 1, 66, 0xc0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xc0, 30, 1, 0, 2, 0x68, 0xce]
    }

    fn packets(out: &[u8]) -> Vec<&[u8]> {
        assert_eq!(out.len() % PACKET, 0);
        out.chunks(PACKET).collect()
    }

    fn pid(p: &[u8]) -> u16 {
        (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
    }

    #[test]
    fn the_pat_crc_is_the_mpeg_one() {
        // The PAT every muxer writes for program 1 on PMT PID 0x1000 has this CRC.
        let pat = [0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00];
        assert_eq!(crc32_mpeg(&pat), 0x2ab1_04b2);
    }

    #[test]
    fn a_key_frame_gets_tables_pcr_and_parameter_sets_and_packets_are_whole() {
        let mut m = TsMuxer::default();
        let mut out = Vec::new();
        assert!(!m.push(VIDEO, 0, &avc_config(), &mut out), "a configuration writes nothing");
        assert_eq!(m.skipped, 0);
        let mut frame = vec![0x17, 0x01, 0, 0, 40];
        let nal = vec![0x65; 500];
        frame.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        frame.extend_from_slice(&nal);
        assert!(m.push(VIDEO, 1000, &frame, &mut out));
        let ps = packets(&out);
        assert_eq!((pid(ps[0]), pid(ps[1])), (0, PMT_PID));
        assert!(ps.iter().all(|p| p[0] == 0x47));
        let video: Vec<_> = ps.iter().filter(|p| pid(p) == VIDEO_PID).collect();
        assert_eq!(video[0][1] & 0x40, 0x40, "payload unit start");
        assert_eq!(video[0][3] & 0x20, 0x20, "adaptation field with the PCR");
        assert_eq!(video[0][5] & 0x10, 0x10, "PCR flag");
        let ccs: Vec<u8> = video.iter().map(|p| p[3] & 0x0f).collect();
        assert_eq!(ccs, (0..video.len() as u8).collect::<Vec<_>>());
        // The access unit: delimiter, SPS, PPS, then the frame's NAL unit.
        let at = |unit: &[u8]| out.windows(unit.len()).position(|w| w == unit);
        let (aud, sps, pps, idr) =
            (at(&[0, 0, 0, 1, 0x09, 0xf0]), at(&[0, 0, 0, 1, 0x67]), at(&[0, 0, 0, 1, 0x68]), at(&[0, 0, 0, 1, 0x65]));
        assert!(aud < sps && sps < pps && pps < idr && aud.is_some(), "{aud:?} {sps:?} {pps:?} {idr:?}");
    }

    #[test]
    fn aac_frames_get_adts_headers_and_malformed_input_is_skipped() {
        let mut m = TsMuxer::default();
        let mut out = Vec::new();
        assert!(!m.push(AUDIO, 0, &[0xaf, 1, 1, 2, 3], &mut out), "no configuration yet");
        assert_eq!(m.skipped, 1);
        assert!(!m.push(AUDIO, 0, &[0xaf, 0, 0x12, 0x10], &mut out)); // AAC LC, 44.1 kHz, stereo
        assert_eq!(m.skipped, 1);
        assert!(m.push(AUDIO, 23, &[0xaf, 1, 1, 2, 3], &mut out));
        let adts = out.windows(2).position(|w| w == [0xff, 0xf1]).unwrap();
        assert_eq!(out[adts + 2], (1 << 6) | (4 << 2), "LC, 44.1 kHz");
        for bad in [&[][..], &[0xaf][..], &[0x17, 1][..], &[0x17, 1, 0, 0, 0, 0, 0, 0, 9, 1][..]] {
            let (before, len) = (m.skipped, out.len());
            m.push(VIDEO, 0, bad, &mut out);
            m.push(AUDIO, 0, bad, &mut out);
            assert!(m.skipped >= before && out.len() == len, "{bad:?}");
        }
    }

    #[test]
    fn random_messages_never_panic_and_always_give_whole_packets() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut m = TsMuxer::default();
        for round in 0..20_000 {
            let len = (next() % 300) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half of them look like AVC or AAC, so the parsers go deep.
            if round % 2 == 0 && len > 2 {
                payload[0] = if round % 4 == 0 { 0x17 } else { 0xaf };
                payload[1] = (next() % 2) as u8;
            }
            let mut out = Vec::new();
            m.push(if next() % 2 == 0 { VIDEO } else { AUDIO }, next() as u32, &payload, &mut out);
            assert!(out.len().is_multiple_of(PACKET) && out.chunks(PACKET).all(|p| p[0] == 0x47));
        }
    }

    #[test]
    fn every_payload_size_packs_into_whole_packets() {
        let mut m = TsMuxer::default();
        m.push(AUDIO, 0, &[0xaf, 0, 0x12, 0x10], &mut Vec::new());
        for size in 0..600 {
            let mut out = Vec::new();
            let mut frame = vec![0xaf, 1];
            frame.extend(std::iter::repeat_n(7u8, size));
            assert!(m.push(AUDIO, 0, &frame, &mut out));
            let ps = packets(&out);
            let payload: usize =
                ps.iter().map(|p| if p[3] & 0x20 != 0 { PACKET - 5 - usize::from(p[4]) } else { PACKET - 4 }).sum();
            assert_eq!(payload, 14 + 7 + size, "size {size}");
        }
    }
}
