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
//! - The listener's port ([`Listener`]): libavformat's `srt://` takes no port 0, so the job
//!   takes a loopback port the kernel has just handed out (bound and released), has libsrt
//!   bind it, and only then tells the shard, which sends nothing there before. If libsrt cannot
//!   bind it (something took it in between), the job takes another, up to [`BIND_TRIES`] times.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::util::interrupt::{self, InterruptGuard};
use ffmpeg_next::{Dictionary, Packet, Rational, Rescale, format};

use super::copy::{Track, add_tracks, header_written};
use crate::util::oneshot;

/// How long the listener waits for the relayed caller.
pub const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Loopback ports a job tries for its SRT listener before it gives up.
pub const BIND_TRIES: usize = 4;

/// Where a job's SRT listener is bound, told once from the job's thread to the shard that
/// relays the caller to it. libavformat's `srt://` calls its interrupt callback first while
/// libsrt waits for the caller, that is once libsrt has bound the port and listens: that first
/// call tells the port. Clones share it.
#[derive(Clone)]
pub struct Listener {
    port: Arc<AtomicU16>,
    tell: Arc<Mutex<Option<oneshot::Sender<u16>>>>,
}

impl Listener {
    /// A listener that will tell `tell` its port (or drop it, if it never binds).
    pub fn new(tell: oneshot::Sender<u16>) -> Listener {
        Listener { port: Arc::new(AtomicU16::new(0)), tell: Arc::new(Mutex::new(Some(tell))) }
    }

    /// From the interrupt callback: libsrt listens, so the port is told (the first time).
    fn listening(&self) {
        let tell = self.tell.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tell) = tell {
            tell.send(self.port.load(Ordering::Acquire));
        }
    }

    fn told(&self) -> bool {
        self.tell.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    /// Opens libsrt's listener with `open(url)` on a loopback port from `ports` ([`loopback_port`]
    /// but in tests), `query` its URL's query; on the next port when it could not listen
    /// (nothing was told yet).
    fn open<T>(
        &self,
        mut ports: impl FnMut() -> std::io::Result<u16>,
        query: &str,
        mut open: impl FnMut(&str) -> Result<T, ffmpeg::Error>,
    ) -> Result<T, IngestError> {
        let mut failed = None;
        for _ in 0..BIND_TRIES {
            let port = ports().map_err(IngestError::Port)?;
            self.port.store(port, Ordering::Release);
            match open(&format!("srt://127.0.0.1:{port}?{query}")) {
                Ok(opened) => return Ok(opened),
                Err(source) if self.told() => return Err(IngestError::Listen { port, source }),
                Err(source) => {
                    log::debug!("srt job: libsrt could not listen on 127.0.0.1:{port} ({source}); another port");
                    failed = Some(IngestError::Bind { port, source });
                }
            }
        }
        Err(failed.unwrap_or(IngestError::Port(std::io::ErrorKind::AddrNotAvailable.into())))
    }
}

/// A UDP port the kernel hands out on loopback now (bound and released at once).
pub fn loopback_port() -> std::io::Result<u16> {
    Ok(std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// What an ingest job needs.
pub struct Params {
    /// The stream key, for logs.
    pub name: String,
    /// Where its SRT listener goes, and whom it tells.
    pub listener: Listener,
    /// `rtmp://127.0.0.1:PORT/APP/STREAM` (signed when publishing needs it).
    pub target: String,
}

/// Why an ingest job ended early.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Init(String),
    #[error("no loopback UDP port for its SRT listener: {0}")]
    Port(std::io::Error),
    #[error("libsrt could not listen on 127.0.0.1:{port}, the last of {BIND_TRIES} ports tried: {source}")]
    Bind { port: u16, source: ffmpeg::Error },
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
    let mut input = p.listener.open(loopback_port, "mode=listener&transtype=live", |url| {
        let (seen, up, listener) = (activity.clone(), connected.clone(), p.listener.clone());
        let interrupt = move || {
            listener.listening();
            let idle = Duration::from_millis(clock.elapsed().as_millis() as u64 - seen.load(Ordering::Relaxed));
            idle > if up.load(Ordering::Relaxed) { super::job::STALL } else { CONNECT_WAIT }
        };
        let mut options = Dictionary::new();
        options.set("analyzeduration", "2000000");
        format::input_with_interrupt_and_dictionary(url, interrupt, options)
    })?;
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
    /// Where its SRT listener for the relayed player goes, and whom it tells.
    pub listener: Listener,
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
    let query = format!("mode=listener&transtype=live&listen_timeout={}", CONNECT_WAIT.as_micros());
    let mut out = p.listener.open(loopback_port, &query, |url| {
        let listener = p.listener.clone();
        output_with_interrupt(url, "mpegts", move || {
            listener.listening();
            false
        })
    })?;
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
    let out = &mut out.output;
    let mut tracks = add_tracks(&input, out).map_err(IngestError::Write)?;
    if tracks.iter().all(Option::is_none) {
        return Err(IngestError::NoTrack);
    }
    out.write_header().map_err(IngestError::Write)?;
    header_written(&mut tracks, out);
    log::info!("srt play {}: playing from streamgate's RTMP listener", p.name);
    let mut bytes = 0;
    let copied = copy(&mut input, out, &mut tracks, (&activity, clock), &mut bytes).or_else(|e| match e {
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

/// An output whose libavformat context calls `interrupt` while it blocks (libsrt's wait for
/// the caller among them); the closure lives as long as the output.
struct InterruptibleOutput {
    output: format::context::Output,
    // Dropped after `output` (fields drop in order): the context holds the closure's address.
    _interrupt: InterruptGuard,
}

/// `format::output_as(url, format)` with an interrupt callback, which `format::output_as`
/// has no way to pass.
fn output_with_interrupt(
    url: &str,
    format: &str,
    interrupt: impl FnMut() -> bool + Send + 'static,
) -> Result<InterruptibleOutput, ffmpeg::Error> {
    use ffmpeg::ffi;
    let invalid = |_| ffmpeg::Error::InvalidData;
    let (url, format) = (CString::new(url).map_err(invalid)?, CString::new(format).map_err(invalid)?);
    let interrupt = interrupt::new(Box::new(interrupt));
    let mut context = std::ptr::null_mut();
    // SAFETY: `context` is an out-pointer for the new context; `format` and `url` are
    // NUL-terminated strings that live through the call.
    let made = unsafe {
        ffi::avformat_alloc_output_context2(&mut context, std::ptr::null_mut(), format.as_ptr(), url.as_ptr())
    };
    if made < 0 || context.is_null() {
        return Err(ffmpeg::Error::from(made.min(-1)));
    }
    // SAFETY: `context` is the valid context just made and owned here; the callback's closure
    // (owned by the guard) outlives it, as the returned struct drops the output first. On
    // failure the context, whose `pb` is still null, is freed and not used again.
    unsafe {
        (*context).interrupt_callback = interrupt.interrupt;
        let opened = ffi::avio_open2(
            &mut (*context).pb,
            url.as_ptr(),
            ffi::AVIO_FLAG_WRITE,
            &(*context).interrupt_callback,
            std::ptr::null_mut(),
        );
        if opened < 0 {
            ffi::avformat_free_context(context);
            return Err(ffmpeg::Error::from(opened));
        }
        Ok(InterruptibleOutput { output: format::context::Output::wrap(context), _interrupt: interrupt.guard })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    /// Opens an SRT listener (libsrt, through libavformat) that gives up at its first wait for
    /// a caller, on the ports `ports` gives; what it told and how the open ended.
    fn listen_once(ports: Vec<u16>) -> (Option<u16>, Result<(), IngestError>) {
        super::super::remux::init().unwrap();
        let (tell, told) = oneshot::channel();
        let listener = Listener::new(tell);
        let mut ports = ports.into_iter();
        let next = || ports.next().ok_or_else(|| std::io::ErrorKind::AddrNotAvailable.into());
        let opened = listener.open(next, "mode=listener&transtype=live", |url| {
            let listener = listener.clone();
            format::input_with_interrupt(url, move || {
                listener.listening();
                true // ends the wait: no caller comes
            })
            .map(drop)
        });
        drop(listener);
        (block_on(told.recv()), opened)
    }

    /// The port the kernel handed out can be taken before libsrt binds it: the job then listens
    /// on the next one and tells that one, never the one it could not bind.
    #[test]
    fn a_listener_whose_port_was_taken_listens_on_another_and_tells_that_one() {
        let taken = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let busy = taken.local_addr().unwrap().port();
        let free = loopback_port().unwrap();
        let (told, opened) = listen_once(vec![busy, free]);
        assert_eq!(told, Some(free));
        assert!(matches!(opened, Err(IngestError::Listen { port, .. }) if port == free), "{opened:?}");
    }

    /// A job that finds no port it can listen on tells nothing: the shard's wait ends with
    /// `None` at once.
    #[test]
    fn a_listener_that_never_binds_tells_nothing() {
        let taken = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let busy = taken.local_addr().unwrap().port();
        let (told, opened) = listen_once(vec![busy; BIND_TRIES]);
        assert_eq!(told, None);
        assert!(matches!(opened, Err(IngestError::Bind { port, .. }) if port == busy), "{opened:?}");
    }
}
