//! Which H.264 encoder the jobs use: a hardware one when it opens, else libx264. Probed once
//! at startup by opening each candidate for a small picture with system-memory YUV 4:2:0
//! frames (the frames the jobs feed), never by looking for vendor tools. h264_nvenc takes such
//! frames; h264_vaapi and h264_qsv want frames in device memory (a hardware frames context the
//! jobs do not set up), so on this build they open only where their driver converts.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{Dictionary, codec, encoder, format};

use crate::config::transcode::EncoderChoice;

/// The encoder chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    /// FFmpeg's name (`libx264`, `h264_nvenc`, ...).
    pub codec: &'static str,
    /// GetRoutes' name (`x264`, `nvenc_h264`, ...).
    pub name: &'static str,
}

const X264: Chosen = Chosen { codec: "libx264", name: "x264" };
const HARDWARE: [(EncoderChoice, Chosen); 3] = [
    (EncoderChoice::Nvenc, Chosen { codec: "h264_nvenc", name: "nvenc_h264" }),
    (EncoderChoice::Vaapi, Chosen { codec: "h264_vaapi", name: "vaapi_h264" }),
    (EncoderChoice::Qsv, Chosen { codec: "h264_qsv", name: "qsv_h264" }),
];

/// Initializes FFmpeg and picks the encoder for `choice`. FFmpeg's own log (raw lines on
/// stderr, which would break `--log-format json`) is limited to fatal errors; the jobs log
/// what failed, with FFmpeg's error, through ours.
pub fn probe(choice: EncoderChoice) -> Result<Chosen, String> {
    ffmpeg::init().map_err(|e| format!("cannot initialize FFmpeg: {e}"))?;
    ffmpeg::log::set_level(ffmpeg::log::Level::Fatal);
    match choice {
        EncoderChoice::Auto => {
            for (_, hw) in HARDWARE {
                match opens(hw.codec) {
                    Ok(()) => return Ok(hw),
                    Err(e) => log::info!("transcode: encoder {} not used: {e}", hw.codec),
                }
            }
            opens(X264.codec).map(|_| X264).map_err(|e| format!("no H.264 encoder opens (libx264: {e})"))
        }
        EncoderChoice::X264 => opens(X264.codec).map(|_| X264).map_err(|e| format!("--encoder x264: {e}")),
        named => {
            let hw = HARDWARE.iter().find(|(c, _)| *c == named).map(|(_, hw)| *hw).unwrap_or(X264);
            opens(hw.codec).map(|_| hw).map_err(|e| format!("--encoder {}: {e}", hw.codec))
        }
    }
}

/// Opens `name` for 320x180 at 25 fps.
fn opens(name: &str) -> Result<(), String> {
    let codec = encoder::find_by_name(name).ok_or("not in this FFmpeg build")?;
    let mut video = codec::context::Context::new_with_codec(codec).encoder().video().map_err(|e| e.to_string())?;
    video.set_width(320);
    video.set_height(180);
    video.set_format(format::Pixel::YUV420P);
    video.set_time_base((1, 25));
    video.set_frame_rate(Some((25, 1)));
    video.set_bit_rate(500_000);
    video.open_with(Dictionary::new()).map(drop).map_err(|e| format!("does not open: {e}"))
}
