//! Players and churn connectors.
//!
//! A player connects, creates a stream, plays, waits for `NetStream.Play.Start` (within
//! `--timeout`), then reads until the run ends, counting bytes, messages, audio/video frames
//! and keyframes, and recording the time from TCP connect start to the first audio/video
//! message. Without media it just waits in the reactor. A churn connector repeats connect ->
//! play -> first media (within `--timeout`) -> close, counting completed cycles; after a
//! failure it pauses [`CHURN_BACKOFF`] so a refusing server is not hammered in a tight loop.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout_at};

use crate::Ctx;
use crate::conn::Conn;
use crate::rtmp::{self, STREAM_CSID};
use crate::stats::{Batch, Failure, Kind};

/// Pause of a churn connector after a failed cycle.
const CHURN_BACKOFF: Duration = Duration::from_millis(100);

/// Plays `--play-stream` or PREFIX{idx % publishers} until the run ends; failures are
/// counted (a player is not restarted).
pub async fn run(ctx: Arc<Ctx>, idx: usize) {
    let name = ctx.args.play_name(idx);
    let started = Instant::now();
    let result = match setup(&ctx, &name, started).await {
        Ok(mut conn) => watch(&ctx, &mut conn, started).await,
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

/// Dial, handshake, connect, createStream, play; returns once `NetStream.Play.Start` (or
/// media) arrived.
async fn setup(ctx: &Arc<Ctx>, name: &str, started: Instant) -> Result<Conn, Failure> {
    let mut conn = Conn::open(ctx).await?;
    let steps = async {
        conn.connect(ctx).await?;
        let sid = conn.create_stream().await?;
        conn.send(&rtmp::play(name).to_message(STREAM_CSID, sid))?;
        conn.flush().await?;
        conn.status("NetStream.Play.Start").await
    };
    let result = steps.await;
    ctx.stats.add(&Batch { bytes: conn.take_rx(), ..Batch::default() });
    result?;
    ctx.stats.setup_done(started.elapsed());
    Ok(conn)
}

/// Reads until the connection fails (the runtime drops this task when the run ends).
async fn watch(ctx: &Ctx, conn: &mut Conn, started: Instant) -> Result<(), Failure> {
    let stats = &ctx.stats;
    let mut waiting = WaitingMedia::new(ctx);
    conn.streaming();
    loop {
        let batch = count(conn);
        if batch.media() > 0 && waiting.done() {
            stats.ttfm.record(started.elapsed());
        }
        stats.add(&batch);
        conn.fill().await?;
    }
}

/// One cycle of a churn connector.
async fn cycle(ctx: &Arc<Ctx>, name: &str) -> Result<(), Failure> {
    let started = Instant::now();
    let mut conn = setup(ctx, name, started).await?;
    let deadline = Instant::now() + ctx.args.step_timeout();
    loop {
        let batch = count(&mut conn);
        ctx.stats.add(&batch);
        if batch.media() > 0 {
            ctx.stats.ttfm.record(started.elapsed());
            return Ok(());
        }
        match timeout_at(deadline, conn.fill()).await {
            Ok(r) => r?,
            Err(_) => return Err(Failure::new(Kind::Timeout, "no audio/video after Play.Start in --timeout")),
        }
    }
}

/// Counts and drops every decoded message; includes the bytes read since the last count.
fn count(conn: &mut Conn) -> Batch {
    let mut batch = Batch { bytes: conn.take_rx(), ..Batch::default() };
    while let Some(msg) = conn.pop() {
        batch.count(&msg);
    }
    batch
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
