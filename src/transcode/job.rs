//! One stream's job, on its own thread: play the stream from its origin, decode once, scale
//! and encode each rung, encode the audio once, and package everything with one `dash` muxer
//! (fMP4/CMAF segments that `manifest.mpd`, `master.m3u8` and each `media_N.m3u8` share).
//!
//! - Aligned segments: every rung gets the same frames with the same timestamps, the same
//!   GOP (`--segment-duration` of frames, no scene-cut key frames) and a key frame forced on
//!   the first frame at or after each segment boundary ([`KeyClock`]), so the muxer cuts every
//!   rung's segments on the same frames.
//! - Real time: when the frames decoded lag the wall clock by more than [`MAX_LAG`], frames are
//!   dropped on every rung alike (decoded, not encoded; counted) until it catches up.
//! - Failure: a stream that never plays within [`OPEN_WAIT`], has no video, or whose input or
//!   codecs fail stops this job with the reason in its view and the log; nothing else.
//! - Stop: the supervisor's flag, checked between packets and by libavformat's interrupt
//!   callback during any blocking read, as is a read that waits longer than [`STALL`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{
    ChannelLayout, Dictionary, Packet, Rational, codec, decoder, encoder, format, frame, media, picture, software,
};

use super::supervisor::Shared;
use super::{RungView, Status};
use crate::config::transcode::{Rung, TranscodeConfig};

/// How long a job tries to play the stream from its origin.
pub const OPEN_WAIT: Duration = Duration::from_secs(20);
/// A read from the origin that waits this long ends the job.
pub const STALL: Duration = Duration::from_secs(10);
/// Frames are dropped while decoding lags the wall clock by more than this.
pub const MAX_LAG: Duration = Duration::from_millis(1500);
/// Audio bit rate of the AAC track.
pub const AUDIO_BPS: usize = 128_000;
/// AAC frame size.
const AAC_FRAME: usize = 1024;
/// Segments kept in the manifests, and kept on disk past them before deletion.
const WINDOW: &str = "6";
const EXTRA_WINDOW: &str = "4";

/// What a job needs.
pub struct Params {
    pub name: String,
    pub source: String,
    pub dir: PathBuf,
    /// FFmpeg's encoder name.
    pub codec: &'static str,
    pub config: TranscodeConfig,
}

/// Why a job ended early.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("could not play {url} within {OPEN_WAIT:?}: {source}")]
    Open { url: String, source: ffmpeg::Error },
    #[error("the stream has no video track")]
    NoVideo,
    #[error("the video track has no picture size")]
    NoSize,
    #[error("cannot {what}: {source}")]
    Codec { what: String, source: ffmpeg::Error },
    #[error("reading the stream failed: {0}")]
    Read(ffmpeg::Error),
    #[error("writing the segments failed: {0}")]
    Write(ffmpeg::Error),
    #[error("{0} undecodable packets in a row: corrupt input")]
    Corrupt(u32),
    #[error("stopped before the stream played")]
    Stopped,
}

pub(super) fn codec_err(what: impl Into<String>) -> impl FnOnce(ffmpeg::Error) -> JobError {
    let what = what.into();
    move |source| JobError::Codec { what, source }
}

/// Starts the job's thread.
pub fn spawn(params: Params, shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    let name: String = format!("abr {}", params.name).chars().take(15).collect();
    std::thread::Builder::new().name(name).spawn(move || {
        let result = run(&params, &shared);
        let mut view = shared.view.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) | Err(JobError::Stopped) => {
                view.status = Status::Complete;
                log::info!(
                    "transcode {}: job ended ({} frames per rung, {} dropped)",
                    params.name,
                    view.frames,
                    view.dropped_frames
                );
            }
            Err(e) => {
                view.status = Status::Error;
                view.problem = Some(e.to_string());
                log::warn!("transcode {}: job stopped: {e}", params.name);
            }
        }
        let status = view.status;
        for rung in &mut view.rungs {
            rung.status = status;
        }
    })
}

/// Reads the input's next packet into `packet`, releasing what it held first.
/// `av_read_frame` fills a packet without unreferencing the buffer it already holds, so a
/// packet reused for every read leaks each buffer not handed on to a muxer (which takes the
/// reference): every packet a decoder was given, every packet a remux skipped.
pub(super) fn read_packet(packet: &mut Packet, input: &mut format::context::Input) -> Result<(), ffmpeg::Error> {
    *packet = Packet::empty();
    packet.read(input)
}

pub(super) fn stopping(shared: &Shared) -> bool {
    shared.stop.load(Ordering::Relaxed)
}

fn run(p: &Params, shared: &Arc<Shared>) -> Result<(), JobError> {
    let clock = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let mut input = open_input(&p.source, shared, &activity, clock)?;
    let video_in = input.streams().best(media::Type::Video).ok_or(JobError::NoVideo)?;
    let (v_index, v_tb) = (video_in.index(), video_in.time_base());
    let fps = frame_rate(&video_in);
    let mut vdec = codec::context::Context::from_parameters(video_in.parameters())
        .map_err(codec_err("read the video parameters"))?;
    vdec.set_threading(codec::threading::Config {
        kind: codec::threading::Type::Frame,
        count: 0,
        ..Default::default()
    });
    let vdec = vdec.decoder().video().map_err(codec_err("open the video decoder"))?;
    if vdec.width() == 0 || vdec.height() == 0 {
        return Err(JobError::NoSize);
    }
    let rungs = super::plan(&p.config.ladder, vdec.width(), vdec.height());
    let audio_in = input.streams().best(media::Type::Audio).map(|s| (s.index(), s.time_base(), s.parameters()));
    let mut out = open_output(&p.dir)?;
    let mut video = Video::new(p, vdec, v_tb, fps, &rungs, &mut out)?;
    let mut audio = match audio_in {
        Some((index, tb, params)) => Some((index, Audio::new(params, tb, &mut out)?)),
        None => None,
    };
    write_header(&mut out, &p.config)?;
    video.fix_time_bases(&out);
    if let Some((_, a)) = &mut audio {
        a.out_tb = out.stream(a.out_index).map_or(a.out_tb, |s| s.time_base());
    }
    {
        let mut view = shared.view.lock().unwrap_or_else(|e| e.into_inner());
        view.status = Status::Encoding;
        view.input_width = video.src.0;
        view.input_height = video.src.1;
        view.rungs = rungs
            .iter()
            .map(|r| RungView {
                name: r.name.clone(),
                codec: "h264",
                width: r.width,
                height: r.height,
                kbps: r.kbps,
                status: Status::Encoding,
                first_segment: None,
            })
            .collect();
    }
    let mut meter = Meter::new(clock);
    let mut packet = Packet::empty();
    let mut bad = 0u32;
    loop {
        if stopping(shared) {
            break;
        }
        match read_packet(&mut packet, &mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(_) if stopping(shared) => break,
            Err(e) => return Err(JobError::Read(e)),
        }
        activity.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
        meter.bytes += packet.size() as u64;
        let busy = Instant::now();
        let decoded = if packet.stream() == v_index {
            video.packet(&packet, &mut out)
        } else if let Some((_, a)) = audio.as_mut().filter(|(i, _)| *i == packet.stream()) {
            a.packet(&packet, &mut out)
        } else {
            Ok(true)
        };
        match decoded {
            Ok(true) => bad = 0,
            Ok(false) => {
                bad += 1;
                if bad >= 100 {
                    return Err(JobError::Corrupt(bad));
                }
            }
            Err(e) => return Err(e),
        }
        meter.busy += busy.elapsed();
        meter.report(shared, &video, p);
    }
    video.flush(&mut out)?;
    if let Some((_, a)) = &mut audio {
        a.flush(&mut out)?;
    }
    out.write_trailer().map_err(JobError::Write)?;
    meter.report_now(shared, &video, p);
    Ok(())
}

/// Plays the stream, retrying until it plays or [`OPEN_WAIT`] has passed; a read that waits
/// longer than [`STALL`] after the last `activity` is interrupted, as is one when `shared`
/// is told to stop.
pub(super) fn open_input(
    source: &str,
    shared: &Arc<Shared>,
    activity: &Arc<AtomicU64>,
    clock: Instant,
) -> Result<format::context::Input, JobError> {
    let deadline = Instant::now() + OPEN_WAIT;
    loop {
        activity.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
        let (flag, seen) = (shared.clone(), activity.clone());
        let interrupt = move || {
            let idle = clock.elapsed().as_millis() as u64 - seen.load(Ordering::Relaxed);
            flag.stop.load(Ordering::Relaxed) || idle > STALL.as_millis() as u64
        };
        let mut options = Dictionary::new();
        options.set("rtmp_live", "live");
        options.set("analyzeduration", "2000000");
        match format::input_with_interrupt_and_dictionary(source, interrupt, options) {
            Ok(input) => return Ok(input),
            Err(_) if stopping(shared) => return Err(JobError::Stopped),
            Err(e) if Instant::now() >= deadline => {
                return Err(JobError::Open { url: super::redacted(source), source: e });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

fn frame_rate(stream: &format::stream::Stream) -> f64 {
    [stream.avg_frame_rate(), stream.rate()]
        .into_iter()
        .map(f64::from)
        .find(|r| r.is_finite() && *r > 1.0 && *r <= 240.0)
        .unwrap_or(25.0)
}

/// The `dash` muxer writing `dir/manifest.mpd` (it opens its own files: no AVIO here).
fn open_output(dir: &Path) -> Result<format::context::Output, JobError> {
    let path = std::ffi::CString::new(dir.join("manifest.mpd").to_string_lossy().as_bytes())
        .map_err(|_| JobError::Write(ffmpeg::Error::InvalidData))?;
    let mut ctx = std::ptr::null_mut();
    // SAFETY: `ctx` is a valid out-pointer; the format name and path are NUL-terminated
    // strings that outlive the call.
    let ret = unsafe {
        ffmpeg::ffi::avformat_alloc_output_context2(&mut ctx, std::ptr::null_mut(), c"dash".as_ptr(), path.as_ptr())
    };
    if ret < 0 || ctx.is_null() {
        return Err(JobError::Write(ffmpeg::Error::from(ret)));
    }
    // SAFETY: `ctx` was just allocated by libavformat and is owned by the wrapper from here on
    // (freed once, when it drops; its `pb` is null, which avio_close accepts).
    Ok(unsafe { format::context::Output::wrap(ctx) })
}

/// Writes the header: one packaging for DASH and (with `--transcode-hls`) HLS.
fn write_header(out: &mut format::context::Output, config: &TranscodeConfig) -> Result<(), JobError> {
    let mut o = Dictionary::new();
    o.set("seg_duration", &format!("{:.3}", config.segment.as_secs_f64()));
    o.set("use_template", "1");
    o.set("use_timeline", "1");
    o.set("window_size", WINDOW);
    o.set("extra_window_size", EXTRA_WINDOW);
    o.set("remove_at_exit", "0");
    o.set(
        "adaptation_sets",
        if out.nb_streams() > 1 && has_audio(out) { "id=0,streams=v id=1,streams=a" } else { "id=0,streams=v" },
    );
    if config.hls {
        o.set("hls_playlist", "1");
        o.set("hls_master_name", "master.m3u8");
    }
    out.write_header_with(o).map(drop).map_err(JobError::Write)
}

fn has_audio(out: &format::context::Output) -> bool {
    out.streams().any(|s| s.parameters().medium() == media::Type::Audio)
}

/// Decides which frames are key frames: the first at or after each segment boundary.
struct KeyClock {
    next: Option<i64>,
    step: i64,
}

impl KeyClock {
    fn key(&mut self, pts: i64) -> bool {
        let next = self.next.get_or_insert(pts);
        if pts < *next {
            return false;
        }
        while *next <= pts {
            *next += self.step;
        }
        true
    }
}

struct VideoRung {
    scaler: Option<software::scaling::Context>,
    scaled: frame::Video,
    encoder: encoder::Video,
    out_index: usize,
    out_tb: Rational,
    packet: Packet,
}

struct Video {
    decoder: decoder::Video,
    tb: Rational,
    src: (u32, u32),
    frame_ms: i64,
    keys: KeyClock,
    /// A key frame boundary passed while frames were dropped: the next frame encoded is one.
    key_owed: bool,
    rungs: Vec<VideoRung>,
    /// The first frame's timestamp and when it was decoded.
    first: Option<(i64, Instant)>,
    last_pts: i64,
    decoded: frame::Video,
    frames: u64,
    dropped: u64,
    behind: bool,
}

impl Video {
    fn new(
        p: &Params,
        decoder: decoder::Video,
        tb: Rational,
        fps: f64,
        rungs: &[Rung],
        out: &mut format::context::Output,
    ) -> Result<Video, JobError> {
        let gop = (fps * p.config.segment.as_secs_f64()).round().max(1.0) as u32;
        let step =
            (p.config.segment.as_secs_f64() * f64::from(tb.denominator()) / f64::from(tb.numerator().max(1))) as i64;
        let src = (decoder.width(), decoder.height());
        let mut built = Vec::new();
        for rung in rungs {
            built.push(video_rung(p, &decoder, tb, fps, gop, rung, out)?);
        }
        Ok(Video {
            frame_ms: (1000.0 / fps) as i64,
            decoder,
            tb,
            src,
            keys: KeyClock { next: None, step: step.max(1) },
            key_owed: false,
            rungs: built,
            first: None,
            last_pts: 0,
            decoded: frame::Video::empty(),
            frames: 0,
            dropped: 0,
            behind: false,
        })
    }

    fn fix_time_bases(&mut self, out: &format::context::Output) {
        for r in &mut self.rungs {
            r.out_tb = out.stream(r.out_index).map_or(r.out_tb, |s| s.time_base());
        }
    }

    /// Decodes a packet and encodes its frames; `false` when the decoder refused it.
    fn packet(&mut self, packet: &Packet, out: &mut format::context::Output) -> Result<bool, JobError> {
        if self.decoder.send_packet(packet).is_err() {
            return Ok(false);
        }
        self.drain(out)?;
        Ok(true)
    }

    fn drain(&mut self, out: &mut format::context::Output) -> Result<(), JobError> {
        while self.decoder.receive_frame(&mut self.decoded).is_ok() {
            let pts = self.decoded.timestamp().unwrap_or(self.last_pts + self.frame_ms);
            self.last_pts = pts;
            let key = self.keys.key(pts);
            if self.lagging(pts) {
                self.dropped += 1;
                self.key_owed |= key;
                continue;
            }
            let key = key || std::mem::take(&mut self.key_owed);
            self.decoded.set_pts(Some(pts));
            self.decoded.set_kind(if key { picture::Type::I } else { picture::Type::None });
            for r in &mut self.rungs {
                let frame = match &mut r.scaler {
                    Some(scaler) => {
                        scaler.run(&self.decoded, &mut r.scaled).map_err(codec_err("scale a frame"))?;
                        r.scaled.set_pts(Some(pts));
                        r.scaled.set_kind(self.decoded.kind());
                        &r.scaled
                    }
                    None => &self.decoded,
                };
                r.encoder.send_frame(frame).map_err(codec_err("encode a frame"))?;
                r.write(self.tb, self.frame_ms, out)?;
            }
            self.frames += 1;
        }
        Ok(())
    }

    /// Whether the frame at `pts` is later than real time allows (and then it is dropped).
    fn lagging(&mut self, pts: i64) -> bool {
        let (pts0, t0) = *self.first.get_or_insert((pts, Instant::now()));
        let media = (pts - pts0) as f64 * f64::from(self.tb);
        let lag = t0.elapsed().as_secs_f64() - media;
        self.behind = lag > MAX_LAG.as_secs_f64();
        self.behind
    }

    fn flush(&mut self, out: &mut format::context::Output) -> Result<(), JobError> {
        let _ = self.decoder.send_eof();
        self.drain(out)?;
        for r in &mut self.rungs {
            let _ = r.encoder.send_eof();
            r.write(self.tb, self.frame_ms, out)?;
        }
        Ok(())
    }
}

impl VideoRung {
    fn write(&mut self, tb: Rational, frame_ms: i64, out: &mut format::context::Output) -> Result<(), JobError> {
        while self.encoder.receive_packet(&mut self.packet).is_ok() {
            self.packet.set_stream(self.out_index);
            self.packet
                .set_duration(frame_ms.max(1) * i64::from(tb.denominator()) / 1000 / i64::from(tb.numerator().max(1)));
            self.packet.rescale_ts(tb, self.out_tb);
            self.packet.write_interleaved(out).map_err(JobError::Write)?;
        }
        Ok(())
    }
}

fn video_rung(
    p: &Params,
    decoder: &decoder::Video,
    tb: Rational,
    fps: f64,
    gop: u32,
    rung: &Rung,
    out: &mut format::context::Output,
) -> Result<VideoRung, JobError> {
    let codec = encoder::find_by_name(p.codec)
        .ok_or(JobError::Codec { what: format!("find {}", p.codec), source: ffmpeg::Error::EncoderNotFound })?;
    let global = out.format().flags().contains(format::Flags::GLOBAL_HEADER);
    let mut enc =
        codec::context::Context::new_with_codec(codec).encoder().video().map_err(codec_err("make an encoder"))?;
    enc.set_width(rung.width);
    enc.set_height(rung.height);
    // The source's display aspect ratio on every rung (the DASH muxer refuses an adaptation set
    // whose pictures differ: 854x480 is not exactly 16:9).
    let sar = match decoder.aspect_ratio() {
        r if r.numerator() > 0 && r.denominator() > 0 => r,
        _ => Rational(1, 1),
    };
    let num = i64::from(sar.numerator()) * i64::from(decoder.width()) * i64::from(rung.height);
    let den = i64::from(sar.denominator()) * i64::from(decoder.height()) * i64::from(rung.width);
    let aspect = Rational::new(i32::try_from(num).unwrap_or(1), i32::try_from(den).unwrap_or(1)).reduce();
    enc.set_aspect_ratio(aspect);
    enc.set_format(format::Pixel::YUV420P);
    enc.set_time_base(tb);
    enc.set_frame_rate(Some(Rational::from(fps)));
    enc.set_gop(gop);
    enc.set_bit_rate(rung.kbps as usize * 1000);
    enc.set_max_bit_rate(rung.kbps as usize * 1000);
    if global {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let mut o = Dictionary::new();
    if p.codec == "libx264" || p.config.preset.starts_with('p') {
        o.set("preset", &p.config.preset);
    }
    o.set("keyint_min", &gop.to_string());
    o.set("sc_threshold", "0");
    o.set("bufsize", &(rung.kbps as usize * 2000).to_string());
    o.set("threads", "auto");
    o.set("forced-idr", "1");
    let encoder = enc.open_with(o).map_err(codec_err(format!("open {} for {}", p.codec, rung.name)))?;
    let mut stream = out.add_stream(codec).map_err(JobError::Write)?;
    stream.set_parameters(&encoder);
    stream.set_time_base(tb);
    // SAFETY: the stream was just added to `out` and its codec parameters allocated with it.
    unsafe { (*stream.as_mut_ptr()).sample_aspect_ratio = aspect.into() };
    let out_index = stream.index();
    let same =
        decoder.format() == format::Pixel::YUV420P && decoder.width() == rung.width && decoder.height() == rung.height;
    let scaler = if same {
        None
    } else {
        let flags = software::scaling::Flags::BICUBIC;
        Some(
            software::scaling::Context::get(
                decoder.format(),
                decoder.width(),
                decoder.height(),
                format::Pixel::YUV420P,
                rung.width,
                rung.height,
                flags,
            )
            .map_err(codec_err(format!("scale to {}x{}", rung.width, rung.height)))?,
        )
    };
    Ok(VideoRung { scaler, scaled: frame::Video::empty(), encoder, out_index, out_tb: tb, packet: Packet::empty() })
}

struct Audio {
    decoder: decoder::Audio,
    in_tb: Rational,
    resampler: Option<software::resampling::Context>,
    encoder: encoder::Audio,
    rate: u32,
    out_index: usize,
    out_tb: Rational,
    pending: [Vec<f32>; 2],
    next_pts: Option<i64>,
    decoded: frame::Audio,
    resampled: frame::Audio,
    packet: Packet,
}

impl Audio {
    fn new(params: codec::Parameters, in_tb: Rational, out: &mut format::context::Output) -> Result<Audio, JobError> {
        let decoder =
            codec::context::Context::from_parameters(params).map_err(codec_err("read the audio parameters"))?;
        let decoder = decoder.decoder().audio().map_err(codec_err("open the audio decoder"))?;
        let rate = match decoder.rate() {
            r @ (8000 | 11025 | 12000 | 16000 | 22050 | 24000 | 32000 | 44100 | 48000 | 88200 | 96000) => r,
            _ => 48000,
        };
        let codec = encoder::find(codec::Id::AAC)
            .ok_or(JobError::Codec { what: "find the AAC encoder".into(), source: ffmpeg::Error::EncoderNotFound })?;
        let global = out.format().flags().contains(format::Flags::GLOBAL_HEADER);
        let mut enc = codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(codec_err("make the AAC encoder"))?;
        enc.set_rate(rate as i32);
        enc.set_channel_layout(ChannelLayout::STEREO);
        enc.set_channels(2);
        enc.set_format(format::Sample::F32(format::sample::Type::Planar));
        enc.set_bit_rate(AUDIO_BPS);
        enc.set_time_base((1, rate as i32));
        if global {
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let encoder = enc.open_with(Dictionary::new()).map_err(codec_err("open the AAC encoder"))?;
        let mut stream = out.add_stream(codec).map_err(JobError::Write)?;
        stream.set_parameters(&encoder);
        stream.set_time_base((1, rate as i32));
        let out_index = stream.index();
        Ok(Audio {
            decoder,
            in_tb,
            resampler: None,
            encoder,
            rate,
            out_index,
            out_tb: Rational(1, rate as i32),
            pending: [Vec::new(), Vec::new()],
            next_pts: None,
            decoded: frame::Audio::empty(),
            resampled: frame::Audio::empty(),
            packet: Packet::empty(),
        })
    }

    fn packet(&mut self, packet: &Packet, out: &mut format::context::Output) -> Result<bool, JobError> {
        if self.decoder.send_packet(packet).is_err() {
            return Ok(false);
        }
        self.drain(out)?;
        Ok(true)
    }

    fn drain(&mut self, out: &mut format::context::Output) -> Result<(), JobError> {
        while self.decoder.receive_frame(&mut self.decoded).is_ok() {
            if self.next_pts.is_none() {
                let pts = self.decoded.timestamp().unwrap_or(0);
                self.next_pts = Some(pts.rescale(self.in_tb, Rational(1, self.rate as i32)));
            }
            if self.resampler.is_none() {
                let layout = match self.decoded.channel_layout() {
                    l if l.bits() == 0 => ChannelLayout::default(i32::from(self.decoded.channels())),
                    l => l,
                };
                let planar = format::Sample::F32(format::sample::Type::Planar);
                let r = software::resampling::Context::get(
                    self.decoded.format(),
                    layout,
                    self.decoded.rate(),
                    planar,
                    ChannelLayout::STEREO,
                    self.rate,
                )
                .map_err(codec_err("resample the audio"))?;
                self.resampler = Some(r);
            }
            let Some(resampler) = self.resampler.as_mut() else { continue };
            self.resampled = frame::Audio::empty();
            if resampler.run(&self.decoded, &mut self.resampled).is_err() {
                continue;
            }
            let n = self.resampled.samples();
            for (ch, pending) in self.pending.iter_mut().enumerate() {
                pending.extend_from_slice(&self.resampled.plane::<f32>(ch)[..n]);
            }
            self.encode_pending(out, false)?;
        }
        Ok(())
    }

    fn encode_pending(&mut self, out: &mut format::context::Output, last: bool) -> Result<(), JobError> {
        while self.pending[0].len() >= AAC_FRAME || (last && !self.pending[0].is_empty()) {
            let n = self.pending[0].len().min(AAC_FRAME);
            let mut f = frame::Audio::new(format::Sample::F32(format::sample::Type::Planar), n, ChannelLayout::STEREO);
            f.set_rate(self.rate);
            for (ch, pending) in self.pending.iter_mut().enumerate() {
                f.plane_mut::<f32>(ch)[..n].copy_from_slice(&pending[..n]);
                pending.drain(..n);
            }
            let pts = self.next_pts.unwrap_or(0);
            f.set_pts(Some(pts));
            self.next_pts = Some(pts + n as i64);
            self.encoder.send_frame(&f).map_err(codec_err("encode audio"))?;
            self.write(out)?;
        }
        Ok(())
    }

    fn write(&mut self, out: &mut format::context::Output) -> Result<(), JobError> {
        let tb = Rational(1, self.rate as i32);
        while self.encoder.receive_packet(&mut self.packet).is_ok() {
            self.packet.set_stream(self.out_index);
            self.packet.rescale_ts(tb, self.out_tb);
            self.packet.write_interleaved(out).map_err(JobError::Write)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut format::context::Output) -> Result<(), JobError> {
        let _ = self.decoder.send_eof();
        self.drain(out)?;
        self.encode_pending(out, true)?;
        let _ = self.encoder.send_eof();
        self.write(out)
    }
}

/// The job's numbers for its view, updated once a second.
struct Meter {
    clock: Instant,
    last: Instant,
    bytes: u64,
    busy: Duration,
    /// At the previous report: bytes, frames.
    prev: (u64, u64),
}

impl Meter {
    fn new(clock: Instant) -> Meter {
        Meter { clock, last: Instant::now(), bytes: 0, busy: Duration::ZERO, prev: (0, 0) }
    }

    fn report(&mut self, shared: &Shared, video: &Video, p: &Params) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.report_now(shared, video, p);
        }
    }

    fn report_now(&mut self, shared: &Shared, video: &Video, p: &Params) {
        let secs = self.last.elapsed().as_secs_f64().max(0.001);
        self.last = Instant::now();
        let media = match video.first {
            Some((pts0, _)) => (video.last_pts - pts0) as f64 * f64::from(video.tb),
            None => 0.0,
        };
        let mut view = shared.view.lock().unwrap_or_else(|e| e.into_inner());
        view.input_bps = ((self.bytes - self.prev.0) as f64 * 8.0 / secs) as u64;
        view.bytes_processed = self.bytes;
        view.fps = (video.frames - self.prev.1) as f64 / secs;
        view.frames = video.frames;
        view.dropped_frames = video.dropped;
        view.speed = if self.busy.is_zero() { 0.0 } else { media / self.busy.as_secs_f64() };
        view.behind = video.behind;
        view.problem = video.behind.then(|| format!("{} frames dropped to keep up with real time", video.dropped));
        self.prev = (self.bytes, video.frames);
        let since = self.clock.elapsed();
        for (i, rung) in view.rungs.iter_mut().enumerate() {
            if rung.first_segment.is_none() && has_segment(&p.dir, i, p.config.hls) {
                rung.first_segment = Some(since);
            }
        }
    }
}

/// Whether rung `i` (stream `i` of the muxer) has a playable segment.
fn has_segment(dir: &Path, i: usize, hls: bool) -> bool {
    if hls {
        std::fs::read_to_string(dir.join(format!("media_{i}.m3u8"))).is_ok_and(|t| t.contains("#EXTINF"))
    } else {
        dir.join(format!("chunk-stream{i}-00002.m4s")).exists()
    }
}

trait Rescale {
    fn rescale(self, from: Rational, to: Rational) -> i64;
}

impl Rescale for i64 {
    fn rescale(self, from: Rational, to: Rational) -> i64 {
        ffmpeg::mathematics::Rescale::rescale(&self, from, to)
    }
}

#[cfg(test)]
mod tests {
    use ffmpeg_next::packet::{Mut, Ref};

    use super::*;

    /// A captured x264/AAC FLV.
    const MEDIA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/media/x264_640x360.flv");

    #[test]
    fn a_reused_packet_lets_go_of_each_buffer_it_read() {
        ffmpeg::init().unwrap();
        let mut input = format::input(&MEDIA).unwrap();
        let mut packet = Packet::empty();
        read_packet(&mut packet, &mut input).unwrap();
        let mut reads = 1;
        loop {
            // A second reference to the buffer just read: once the packet lets go of it,
            // this is the only one.
            // (`Packet::clone` would copy the data: it makes its packet writable.)
            let mut kept = Packet::empty();
            // SAFETY: both point to live packets; `kept` is blank.
            assert_eq!(unsafe { ffmpeg::ffi::av_packet_ref(kept.as_mut_ptr(), packet.as_ptr()) }, 0);
            let buf = kept.as_ptr();
            match read_packet(&mut packet, &mut input) {
                Ok(()) => reads += 1,
                Err(ffmpeg::Error::Eof) => break,
                Err(e) => panic!("{e}"),
            }
            // SAFETY: `kept` owns a reference to its buffer, alive until it drops below.
            let refs = unsafe { ffmpeg::ffi::av_buffer_get_ref_count((*buf).buf) };
            assert_eq!(refs, 1, "packet {reads}: the reused packet still holds the buffer it read before");
        }
        assert!(reads > 10, "only {reads} packets in {MEDIA}");
    }
}
