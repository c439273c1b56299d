//! An SRT publisher of a local stream, on its own thread: libavformat listens for SRT (libsrt)
//! on a loopback port that the shard relays the caller's session to, demuxes its MPEG-TS and
//! copies the H.264 and AAC, not decoded, into FLV published over RTMP to streamgate's own
//! RTMP listener, where the stream becomes local like any RTMP publisher's
//! (`crate::proxy::local`): its messages feed the stream's ring, players of every protocol and
//! shard play it, and its HLS and ladder start as for an RTMP publisher.
//!
//! - The FLV muxer turns the H.264 into AVC (sequence header from the stream's SPS/PPS) and the
//!   ADTS AAC into raw AAC with its AudioSpecificConfig (libavformat's `aac_adtstoasc`).
//! - End: when the caller ends its session (SHUTDOWN, relayed to the listener) the input ends,
//!   the RTMP publish is closed (`FCUnpublish`/`deleteStream`) and the stream's players end.
//! - Failure: no caller within [`CONNECT_WAIT`], no track, a read that waits longer than
//!   [`super::job::STALL`], or the RTMP publish refused: the job ends, logged with why.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::{Dictionary, Packet, Rational, Rescale, format};

use super::copy::{Track, add_tracks, header_written};

/// How long the listener waits for the relayed caller.
pub const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// What an ingest job needs.
pub struct Params {
    /// The stream key, for logs.
    pub name: String,
    /// The loopback SRT port to listen on.
    pub port: u16,
    /// `rtmp://127.0.0.1:PORT/APP/STREAM` (signed when publishing needs it).
    pub target: String,
}

/// Why an ingest job ended early.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Init(String),
    #[error("no SRT caller on 127.0.0.1:{port} within {CONNECT_WAIT:?}: {source}")]
    Listen { port: u16, source: ffmpeg::Error },
    #[error("the stream has no audio or video track")]
    NoTrack,
    #[error("cannot publish to {url}: {source}")]
    Publish { url: String, source: ffmpeg::Error },
    #[error("reading the caller's MPEG-TS failed: {0}")]
    Read(ffmpeg::Error),
    #[error("publishing failed: {0}")]
    Write(ffmpeg::Error),
}

/// Runs the job on this thread until the caller ends it or it fails; returns the bytes copied.
pub fn run(p: &Params) -> Result<u64, IngestError> {
    super::remux::init().map_err(IngestError::Init)?;
    let clock = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen, up) = (activity.clone(), connected.clone());
    let interrupt = move || {
        let idle = Duration::from_millis(clock.elapsed().as_millis() as u64 - seen.load(Ordering::Relaxed));
        idle > if up.load(Ordering::Relaxed) { super::job::STALL } else { CONNECT_WAIT }
    };
    let url = format!("srt://127.0.0.1:{}?mode=listener&transtype=live", p.port);
    let mut options = Dictionary::new();
    options.set("analyzeduration", "2000000");
    let mut input = format::input_with_interrupt_and_dictionary(&url, interrupt, options)
        .map_err(|source| IngestError::Listen { port: p.port, source })?;
    connected.store(true, Ordering::Relaxed);
    activity.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
    let mut out = format::output_as(&p.target, "flv")
        .map_err(|source| IngestError::Publish { url: super::redacted(&p.target), source })?;
    let mut tracks = add_tracks(&input, &mut out).map_err(IngestError::Write)?;
    if tracks.iter().all(Option::is_none) {
        return Err(IngestError::NoTrack);
    }
    out.write_header().map_err(|source| IngestError::Publish { url: super::redacted(&p.target), source })?;
    header_written(&mut tracks, &out);
    log::info!("srt ingest {}: publishing to streamgate's RTMP listener", p.name);
    let mut bytes = 0;
    let copied = copy(&mut input, &mut out, &mut tracks, (&activity, clock), &mut bytes).or_else(|e| match e {
        // libsrt reports the caller's session ending (SHUTDOWN, or the connection lost) as
        // an I/O error, not an end of file: after media flowed, that is the publish's end.
        IngestError::Read(why) if bytes > 0 => {
            log::info!("srt ingest {}: the caller's session ended ({why})", p.name);
            Ok(())
        }
        other => Err(other),
    });
    // The trailer ends the RTMP publish (the stream's players end) however the copy ended.
    let ended = out.write_trailer().map_err(IngestError::Write);
    copied.and(ended).map(|()| bytes)
}

/// What an SRT player's job needs.
pub struct PlayParams {
    /// The stream key and the player's address, for logs.
    pub name: String,
    /// The loopback SRT port to listen on for the relayed player.
    pub port: u16,
    /// `rtmp://127.0.0.1:PORT/APP/STREAM` (signed when playing needs it).
    pub source: String,
}

/// An SRT player of a local stream, on this thread: listens for the relayed player on
/// loopback, then plays the stream from streamgate's own RTMP listener and copies it, not
/// decoded, into MPEG-TS over SRT, until the stream ends (the publisher left) or the player
/// leaves. Returns the bytes copied.
pub fn play(p: &PlayParams) -> Result<u64, IngestError> {
    super::remux::init().map_err(IngestError::Init)?;
    let clock = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    // The listener first: the player's handshake, relayed by the shard, is waiting for it.
    let url =
        format!("srt://127.0.0.1:{}?mode=listener&transtype=live&listen_timeout={}", p.port, CONNECT_WAIT.as_micros());
    let mut out = format::output_as(&url, "mpegts").map_err(|source| IngestError::Listen { port: p.port, source })?;
    let seen = activity.clone();
    let interrupt = move || {
        let idle = Duration::from_millis(clock.elapsed().as_millis() as u64 - seen.load(Ordering::Relaxed));
        idle > super::job::STALL
    };
    let mut options = Dictionary::new();
    options.set("rtmp_live", "live");
    options.set("analyzeduration", "2000000");
    let mut input = format::input_with_interrupt_and_dictionary(&p.source, interrupt, options)
        .map_err(|source| IngestError::Publish { url: super::redacted(&p.source), source })?;
    activity.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
    let mut tracks = add_tracks(&input, &mut out).map_err(IngestError::Write)?;
    if tracks.iter().all(Option::is_none) {
        return Err(IngestError::NoTrack);
    }
    out.write_header().map_err(IngestError::Write)?;
    header_written(&mut tracks, &out);
    log::info!("srt play {}: playing from streamgate's RTMP listener", p.name);
    let mut bytes = 0;
    let copied = copy(&mut input, &mut out, &mut tracks, (&activity, clock), &mut bytes).or_else(|e| match e {
        // The player leaving shows as a failed write (libsrt: connection lost).
        IngestError::Write(why) if bytes > 0 => {
            log::info!("srt play {}: the player's session ended ({why})", p.name);
            Ok(())
        }
        other => Err(other),
    });
    let ended = out.write_trailer().map_err(IngestError::Write);
    copied.and(ended.or(Ok(()))).map(|()| bytes)
}

/// Copies packets until the caller's stream ends, counting the bytes read in `bytes`.
fn copy(
    input: &mut format::context::Input,
    out: &mut format::context::Output,
    tracks: &mut [Option<Track>],
    (activity, clock): (&AtomicU64, Instant),
    bytes: &mut u64,
) -> Result<(), IngestError> {
    let mut packet = Packet::empty();
    // The first DTS becomes 0, so that the RTMP timestamps start near 0 whatever the MPEG-TS
    // clock reads.
    let mut origin: Option<(i64, Rational)> = None;
    loop {
        match super::job::read_packet(&mut packet, input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => return Ok(()),
            Err(e) => return Err(IngestError::Read(e)),
        }
        activity.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
        *bytes += packet.size() as u64;
        let Some(track) = tracks.get_mut(packet.stream()).and_then(Option::as_mut) else { continue };
        let Some(dts) = packet.dts().or(packet.pts()) else { continue };
        let (first, first_tb) = *origin.get_or_insert((dts, track.in_tb()));
        let shift = first.rescale(first_tb, track.in_tb());
        packet.set_dts(packet.dts().map(|d| d - shift));
        packet.set_pts(packet.pts().map(|p| p - shift));
        track.write(&mut packet, out).map_err(IngestError::Write)?;
    }
}
