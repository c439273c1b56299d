//! Players and churn connectors, over RTMP or HTTP-FLV ([`Session`]).
//!
//! An RTMP player connects, creates a stream, plays and waits for `NetStream.Play.Start`; an
//! HTTP-FLV player sends its GET and waits for a 200 response head (either within
//! `--timeout`). Then it reads until the run ends, counting bytes, messages (FLV tags),
//! audio/video frames and keyframes, and recording the time from TCP connect start to the
//! first complete audio/video message or tag. Without media it just waits in the reactor. A
//! churn connector repeats connect -> play -> first media (within `--timeout`) -> close,
//! counting completed cycles; after a failure it pauses [`CHURN_BACKOFF`] so a refusing server
//! is not hammered in a tight loop.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout_at};

use crate::Ctx;
use crate::args::Protocol;
use crate::conn::Conn;
use crate::httpflv::FlvConn;
use crate::rtmp::{self, STREAM_CSID};
use crate::stats::{Batch, Failure, Kind};

/// Pause of a churn connector after a failed cycle.
const CHURN_BACKOFF: Duration = Duration::from_millis(100);

/// Plays `--play-stream` or PREFIX{idx % publishers} until the run ends; failures are
/// counted (a player is not restarted).
pub async fn run(ctx: Arc<Ctx>, idx: usize) {
    let name = ctx.args.play_name(idx);
    let started = Instant::now();
    let result = match Session::setup(&ctx, &name, started).await {
        Ok(mut session) => watch(&ctx, &mut session, started).await,
        Err(f) => Err(f),
    };
    if let Err(f) = result {
        ctx.stats.fail(&f);
    }
}

/// Churn connector `idx`: connect -> play -> first media -> close, over and over.
pub async fn churn(ctx: Arc<Ctx>, idx: usize) {
    let name = ctx.args.play_name(idx);
    loop {
        match cycle(&ctx, &name).await {
            Ok(()) => ctx.stats.cycle_done(),
            Err(f) => {
                ctx.stats.fail(&f);
                sleep(CHURN_BACKOFF).await;
            }
        }
    }
}

/// A player's connection, by the protocol of `--play-url` (or `--url`).
enum Session {
    Rtmp(Conn),
    Flv(FlvConn),
}

impl Session {
    /// Dials and sets up: RTMP handshake, connect, createStream, play, until
    /// `NetStream.Play.Start` (or media) arrived; HTTP-FLV GET until the 200 head arrived.
    async fn setup(ctx: &Arc<Ctx>, name: &str, started: Instant) -> Result<Session, Failure> {
        let session = match ctx.play.protocol {
            Protocol::Rtmp => Session::Rtmp(rtmp_setup(ctx, name).await?),
            Protocol::HttpFlv => Session::Flv(FlvConn::open(ctx, &ctx.play, name).await?),
        };
        ctx.stats.setup_done(started.elapsed());
        Ok(session)
    }

    /// Reads once (waiting as long as it takes), decodes, and answers what is due.
    async fn fill(&mut self) -> Result<(), Failure> {
        match self {
            Session::Rtmp(conn) => conn.fill().await,
            Session::Flv(conn) => conn.fill().await,
        }
    }

    /// Counts (and drops) what arrived since the last count, bytes included.
    fn count(&mut self) -> Batch {
        match self {
            Session::Rtmp(conn) => {
                let mut batch = Batch { bytes: conn.take_rx(), ..Batch::default() };
                while let Some(msg) = conn.pop() {
                    batch.count(&msg);
                }
                batch
            }
            Session::Flv(conn) => conn.take(),
        }
    }

    /// Marks the setup as over.
    fn streaming(&mut self) {
        match self {
            Session::Rtmp(conn) => conn.streaming(),
            Session::Flv(conn) => conn.streaming(),
        }
    }
}

/// The RTMP setup: dial, handshake, connect, createStream, play; the bytes read meanwhile
/// are counted, failed or not.
async fn rtmp_setup(ctx: &Arc<Ctx>, name: &str) -> Result<Conn, Failure> {
    let mut conn = Conn::open(ctx, &ctx.play).await?;
    let steps = async {
        conn.connect(&ctx.play).await?;
        let sid = conn.create_stream().await?;
        conn.send(&rtmp::play(name).to_message(STREAM_CSID, sid))?;
        conn.flush().await?;
        conn.status("NetStream.Play.Start").await
    };
    let result = steps.await;
    ctx.stats.add(&Batch { bytes: conn.take_rx(), ..Batch::default() });
    result.map(|()| conn)
}

/// Reads until the connection fails (the runtime drops this task when the run ends).
async fn watch(ctx: &Ctx, session: &mut Session, started: Instant) -> Result<(), Failure> {
    let stats = &ctx.stats;
    let mut waiting = WaitingMedia::new(ctx);
    session.streaming();
    loop {
        let batch = session.count();
        if batch.media() > 0 && waiting.done() {
            stats.ttfm.record(started.elapsed());
        }
        stats.add(&batch);
        session.fill().await?;
    }
}

/// One cycle of a churn connector.
async fn cycle(ctx: &Arc<Ctx>, name: &str) -> Result<(), Failure> {
    let started = Instant::now();
    let mut session = Session::setup(ctx, name, started).await?;
    let deadline = Instant::now() + ctx.args.step_timeout();
    loop {
        let batch = session.count();
        ctx.stats.add(&batch);
        if batch.media() > 0 {
            ctx.stats.ttfm.record(started.elapsed());
            return Ok(());
        }
        match timeout_at(deadline, session.fill()).await {
            Ok(r) => r?,
            Err(_) => return Err(Failure::new(Kind::Timeout, "no audio/video after the setup in --timeout")),
        }
    }
}

/// Keeps [`crate::stats::Stats::waiting_media`] right while a player has no media yet.
struct WaitingMedia<'a> {
    ctx: &'a Ctx,
    waiting: bool,
}

impl<'a> WaitingMedia<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        ctx.stats.waiting_media.fetch_add(1, Relaxed);
        WaitingMedia { ctx, waiting: true }
    }

    /// Marks media as received; true the first time.
    fn done(&mut self) -> bool {
        let first = std::mem::replace(&mut self.waiting, false);
        if first {
            self.ctx.stats.waiting_media.fetch_sub(1, Relaxed);
        }
        first
    }
}

impl Drop for WaitingMedia<'_> {
    fn drop(&mut self) {
        self.done();
    }
}
