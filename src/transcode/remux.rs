//! A local stream's HLS, on its own thread: play the stream from streamgate's own RTMP listener
//! (like any player: the shard serves it from the stream's ring) and copy its video and audio,
//! not decoded, into MPEG-TS segments with libavformat's `hls` muxer.
//!
//! - Files: `<dir>/`[`HLS_PLAYLIST`] and `<dir>/STREAM-N.ts` (N from the Unix time the job
//!   started, so a stream published again never reuses a name a player may have cached); both
//!   written to a temporary name and renamed, so a reader never sees half a file.
//! - Window: [`WINDOW`] segments in the playlist; older segments are deleted by the muxer.
//!   Segments are cut on the first key frame after each `--segment-duration`.
//! - End: when the stream ends (the publisher left) or the supervisor says stop, the trailer is
//!   written: the playlist ends with `#EXT-X-ENDLIST`; the supervisor removes the folder later.
//! - Failure: as the ladder job's ([`super::job`]): a stream that never plays within
//!   [`super::job::OPEN_WAIT`] or stalls for [`super::job::STALL`] ends the job, logged.
//!
//! [`HLS_PLAYLIST`]: super::HLS_PLAYLIST

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{Dictionary, Packet, format};

use super::Status;
use super::copy::{Track, add_tracks, header_written};
use super::job::{JobError, open_input, read_packet, stopping};
use super::supervisor::Shared;

/// Segments listed in the playlist.
pub const WINDOW: &str = "6";

/// What a remux job needs.
pub struct Params {
    /// The folder's name, for logs.
    pub name: String,
    /// The stream part of the key: segments are `STREAM-N.ts`.
    pub stream: String,
    pub source: String,
    pub dir: PathBuf,
    pub segment: Duration,
}

/// Initializes libavformat once, quiet (the jobs log what goes wrong themselves).
pub fn init() -> Result<(), String> {
    ffmpeg::init().map_err(|e| format!("cannot initialize FFmpeg: {e}"))?;
    ffmpeg::log::set_level(ffmpeg::log::Level::Fatal);
    Ok(())
}

/// Starts the job's thread.
pub fn spawn(params: Params, shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    let name: String = format!("hls {}", params.name).chars().take(15).collect();
    std::thread::Builder::new().name(name).spawn(move || {
        let result = run(&params, &shared);
        let mut view = shared.view.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) | Err(JobError::Stopped) => {
                view.status = Status::Complete;
                log::info!("hls {}: job ended ({} bytes copied)", params.name, view.bytes_processed);
            }
            Err(e) => {
                view.status = Status::Error;
                view.problem = Some(e.to_string());
                log::warn!("hls {}: job stopped: {e}", params.name);
            }
        }
    })
}

fn run(p: &Params, shared: &Arc<Shared>) -> Result<(), JobError> {
    let clock = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let mut input = open_input(&p.source, shared, &activity, clock)?;
    let mut out = open_output(&p.dir)?;
    let mut tracks = add_tracks(&input, &mut out).map_err(JobError::Write)?;
    if tracks.iter().all(Option::is_none) {
        return Err(JobError::NoVideo);
    }
    write_header(&mut out, p)?;
    header_written(&mut tracks, &out);
    shared.view.lock().unwrap_or_else(|e| e.into_inner()).status = Status::Encoding;
    let copied = copy(&mut input, &mut out, &mut tracks, shared, &activity, clock);
    // The trailer ends the playlist (#EXT-X-ENDLIST) however the copy ended.
    let ended = out.write_trailer().map_err(JobError::Write);
    copied.and(ended)
}

/// Copies packets until the stream ends or the job is told to stop.
fn copy(
    input: &mut format::context::Input,
    out: &mut format::context::Output,
    tracks: &mut [Option<Track>],
    shared: &Shared,
    activity: &AtomicU64,
    clock: Instant,
) -> Result<(), JobError> {
    let mut packet = Packet::empty();
    let (mut bytes, mut reported) = (0u64, Instant::now());
    let mut out_of_order = 0u64;
    loop {
        if stopping(shared) {
            return Ok(());
        }
        match read_packet(&mut packet, input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => return Ok(()),
            Err(_) if stopping(shared) => return Ok(()),
            Err(e) => return Err(JobError::Read(e)),
        }
        activity.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
        bytes += packet.size() as u64;
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            shared.view.lock().unwrap_or_else(|e| e.into_inner()).bytes_processed = bytes;
        }
        let Some(track) = tracks.get_mut(packet.stream()).and_then(Option::as_mut) else { continue };
        if !track.write(&mut packet, out).map_err(JobError::Write)? {
            out_of_order += 1;
            if out_of_order.is_power_of_two() {
                log::debug!("hls: {out_of_order} packets dropped for going back in time");
            }
        }
    }
}

/// The `hls` muxer writing `dir/`[`super::HLS_PLAYLIST`] (it opens its own files).
fn open_output(dir: &Path) -> Result<format::context::Output, JobError> {
    let path = std::ffi::CString::new(dir.join(super::HLS_PLAYLIST).to_string_lossy().as_bytes())
        .map_err(|_| JobError::Write(ffmpeg::Error::InvalidData))?;
    let mut ctx = std::ptr::null_mut();
    // SAFETY: `ctx` is a valid out-pointer; the format name and path are NUL-terminated
    // strings that outlive the call.
    let ret = unsafe {
        ffmpeg::ffi::avformat_alloc_output_context2(&mut ctx, std::ptr::null_mut(), c"hls".as_ptr(), path.as_ptr())
    };
    if ret < 0 || ctx.is_null() {
        return Err(JobError::Write(ffmpeg::Error::from(ret)));
    }
    // SAFETY: `ctx` was just allocated by libavformat and is owned by the wrapper from here on
    // (freed once, when it drops; its `pb` is null, which avio_close accepts).
    Ok(unsafe { format::context::Output::wrap(ctx) })
}

fn write_header(out: &mut format::context::Output, p: &Params) -> Result<(), JobError> {
    let segments = p.dir.join(format!("{}-%d.ts", p.stream));
    let mut o = Dictionary::new();
    o.set("hls_time", &format!("{:.3}", p.segment.as_secs_f64()));
    o.set("hls_list_size", WINDOW);
    o.set("hls_flags", "delete_segments+temp_file+independent_segments");
    o.set("hls_start_number_source", "epoch");
    o.set("hls_segment_filename", &segments.to_string_lossy());
    out.write_header_with(o).map(drop).map_err(JobError::Write)
}
