//! Copying tracks, not decoded, from one libavformat context to another: what the HLS remux
//! job (`super::remux`), the SRT ingest and the SRT player jobs (`super::ingest`) share.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{Packet, Rational, codec, encoder, format, media};

/// One copied track: its output stream, both time bases, the last DTS written.
pub(super) struct Track {
    out_index: usize,
    in_tb: Rational,
    out_tb: Rational,
    last_dts: Option<i64>,
    /// The output's muxer refuses a DTS equal to the last one (MPEG-TS, HLS; FLV takes it).
    strict: bool,
}

impl Track {
    /// The input's time base (timestamps of the packets given to [`Track::write`]).
    pub(super) fn in_tb(&self) -> Rational {
        self.in_tb
    }

    /// Writes `packet` (in the input's time base) to its output stream; `false` when it was
    /// dropped for a DTS before 0 or before the last one written (the muxers refuse those:
    /// such a packet, a publisher's timestamp jump back, is dropped, not the job). A DTS equal
    /// to the last one (frames sharing an FLV millisecond) goes out one output tick later where
    /// the muxer needs it to increase, as the ffmpeg CLI does when it copies.
    pub(super) fn write(
        &mut self,
        packet: &mut Packet,
        out: &mut format::context::Output,
    ) -> Result<bool, ffmpeg::Error> {
        packet.rescale_ts(self.in_tb, self.out_tb);
        if let Some(dts) = packet.dts() {
            match next_dts(dts, self.last_dts, self.strict) {
                None => return Ok(false),
                Some(next) if next != dts => {
                    packet.set_dts(Some(next));
                    packet.set_pts(packet.pts().map(|pts| pts.max(next)));
                }
                Some(_) => {}
            }
        }
        self.last_dts = packet.dts().or(self.last_dts);
        packet.set_stream(self.out_index);
        packet.set_position(-1);
        packet.write_interleaved(out)?;
        Ok(true)
    }
}

/// Adds to `out` a copy of the input's best video and best audio stream; the tracks by input
/// stream index (`None` for streams not copied; all `None` when the input has neither).
pub(super) fn add_tracks(
    input: &format::context::Input,
    out: &mut format::context::Output,
) -> Result<Vec<Option<Track>>, ffmpeg::Error> {
    let mut tracks: Vec<Option<Track>> = (0..input.nb_streams()).map(|_| None).collect();
    for kind in [media::Type::Video, media::Type::Audio] {
        let Some(stream) = input.streams().best(kind) else { continue };
        let mut copied = out.add_stream(encoder::find(codec::Id::None))?;
        copied.set_parameters(stream.parameters());
        // SAFETY: the stream was just added to `out` with its own codec parameters; a zero tag
        // lets the output's muxer choose its own (the input container's tags mean nothing there).
        unsafe { (*copied.parameters().as_mut_ptr()).codec_tag = 0 };
        let (tb, out_index) = (stream.time_base(), copied.index());
        if let Some(slot) = tracks.get_mut(stream.index()) {
            *slot = Some(Track { out_index, in_tb: tb, out_tb: tb, last_dts: None, strict: true });
        }
    }
    Ok(tracks)
}

/// After the output's header is written: the time bases its muxer chose for each track, and
/// whether it takes equal timestamps.
pub(super) fn header_written(tracks: &mut [Option<Track>], out: &format::context::Output) {
    let strict = !out.format().flags().contains(format::Flags::TS_NONSTRICT);
    for track in tracks.iter_mut().flatten() {
        track.out_tb = out.stream(track.out_index).map_or(track.out_tb, |s| s.time_base());
        track.strict = strict;
    }
}

/// The DTS to write a packet with: `None` to drop it (before 0, or before the last DTS
/// written); one tick after the last for an equal one when the muxer is `strict`.
fn next_dts(dts: i64, last: Option<i64>, strict: bool) -> Option<i64> {
    match last {
        _ if dts < 0 => None,
        Some(last) if dts < last => None,
        Some(last) if dts == last && strict => last.checked_add(1),
        _ => Some(dts),
    }
}

#[cfg(test)]
mod tests {
    use super::next_dts;

    #[test]
    fn equal_timestamps_go_one_tick_later_for_strict_muxers_and_jumps_back_are_dropped() {
        // Two frames in one FLV millisecond, in 90 kHz: the second one tick later for MPEG-TS.
        assert_eq!(next_dts(90, Some(90), true), Some(91));
        assert_eq!(next_dts(180, Some(91), true), Some(180));
        // FLV takes equal timestamps as they are.
        assert_eq!(next_dts(90, Some(90), false), Some(90));
        // A jump back, and a DTS before 0, are dropped either way.
        assert_eq!(next_dts(89, Some(91), true), None);
        assert_eq!(next_dts(89, Some(91), false), None);
        assert_eq!(next_dts(-1, None, true), None);
        assert_eq!(next_dts(0, None, true), Some(0));
        assert_eq!(next_dts(i64::MAX, Some(i64::MAX), true), None);
    }
}
