//! `streamgate-load`: RTMP and HTTP-FLV load generator for streamgate (works against any RTMP
//! or HTTP-FLV server), and `streamgate-load origin-flv`, an HTTP-FLV origin for benchmarks
//! ([`origin`]).
//!
//! ## Shape
//!
//! - `--threads` worker threads, each with a current-thread tokio runtime; connection `i` of
//!   each group (publishers, then players and churn connectors) runs on thread `i % threads`.
//! - Publishers ([`publisher`]) start at once; players and churn connectors ([`player`]) start
//!   once every publisher got `NetStream.Publish.Start` (or failed), at `--ramp-per-sec`.
//! - Every RTMP connection ([`conn`]) uses the library's sans-io codec
//!   (`streamgate::codec::rtmp`): simple client handshake, `ChunkDecoder` with a message size
//!   limit, `ChunkEncoder`. HTTP-FLV players ([`httpflv`]) parse the response head and chunked
//!   bodies with `streamgate::codec::http` and count FLV tags ([`flv::TagReader`]).
//! - Counters ([`stats`]) are shared atomics; the main thread prints one progress line per
//!   `--report-every` and, after `--duration` (or Ctrl-C), stops the workers (their runtimes
//!   are dropped, closing every connection) and prints the summary ([`report`]).
//!
//! Nothing the server sends can panic the generator: failures end that connection and are
//! counted by kind (connect refused / timeout / error, handshake, RTMP or HTTP error status
//! with its code, closed early, timeout, protocol, io).

#![deny(clippy::undocumented_unsafe_blocks)]

mod args;
mod conn;
mod cpu;
mod flv;
mod httpflv;
mod origin;
mod player;
mod publisher;
mod report;
mod rtmp;
mod stats;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use tokio::time::{Instant, sleep, sleep_until};

use args::{Args, Target};
use flv::Flv;
use stats::Stats;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often worker threads look at [`Ctx::stop`] and launchers at publisher progress.
const POLL: Duration = Duration::from_millis(20);

/// Set by the SIGINT handler: end the run early, with a summary.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Everything the connections share, read-only except the counters.
pub struct Ctx {
    /// The flags.
    pub args: Args,
    /// The parsed `--url` (publishers, and players without `--play-url`).
    pub target: Target,
    /// Where players and churn connectors go: `--play-url`, else `--url`.
    pub play: Target,
    /// The file publishers send (`None` without publishers).
    pub flv: Option<Flv>,
    /// The run's counters.
    pub stats: Stats,
    /// Set when the run ends; workers then drop their runtimes.
    pub stop: AtomicBool,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "origin-flv") {
        let argv = std::iter::once("streamgate-load origin-flv".into()).chain(std::env::args_os().skip(2));
        return origin::main(origin::OriginArgs::parse_from(argv));
    }
    let args = Args::parse();
    let ctx = match prepare(args) {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            eprintln!("streamgate-load: {e}");
            return ExitCode::from(2);
        }
    };
    install_sigint();
    let started = std::time::Instant::now();
    let mut workers = Vec::with_capacity(ctx.args.threads);
    for t in 0..ctx.args.threads {
        match worker(Arc::clone(&ctx), t) {
            Ok(w) => workers.push(w),
            Err(e) => {
                eprintln!("streamgate-load: cannot start worker thread {t}: {e}");
                ctx.stop.store(true, Relaxed);
                workers.into_iter().for_each(|w| drop(w.join()));
                return ExitCode::FAILURE;
            }
        }
    }
    let end = report::progress(&ctx, started, || INTERRUPTED.load(Relaxed));
    ctx.stop.store(true, Relaxed);
    for w in workers {
        if w.join().is_err() {
            eprintln!("streamgate-load: a worker thread panicked");
        }
    }
    report::summary(&ctx, &end);
    ExitCode::SUCCESS
}

/// Checks the flags, resolves the target and loads the FLV file.
fn prepare(args: Args) -> Result<Ctx, String> {
    args.check()?;
    let target = Target::parse(&args.url).map_err(|e| format!("--url {e}"))?;
    let play = match &args.play_url {
        Some(url) => Target::parse(url).map_err(|e| format!("--play-url {e}"))?,
        None => target.clone(),
    };
    let flv = match &args.flv {
        Some(path) if args.publishers > 0 => Some(flv::load(path)?),
        _ => None,
    };
    if let Some(f) = &flv {
        let mbit = f.media_bytes as f64 * 8.0 / (f.loop_ms as f64 / 1000.0) / 1e6;
        eprintln!(
            "flv: {} tags, {:.1} s per lap, {mbit:.2} Mbit/s of audio+video",
            f.tags.len(),
            f.loop_ms as f64 / 1e3
        );
    }
    eprintln!(
        "target {} (app {:?}): {} publishers ({}), {} {} players, {} churn, {} threads, {} s",
        target.addr,
        target.app,
        args.publishers,
        if args.paced { "paced" } else { "unpaced" },
        args.players,
        play.tc_url,
        args.churn,
        args.threads,
        args.duration,
    );
    Ok(Ctx { args, target, play, flv, stats: Stats::default(), stop: AtomicBool::new(false) })
}

#[cfg(test)]
impl Ctx {
    /// A context for one player of `url`, with default flags.
    pub fn for_tests(url: &str) -> Ctx {
        prepare(Args::parse_from(["streamgate-load", "--url", url, "--players", "1"])).unwrap()
    }
}

/// Worker thread `t`: runs its share of the connections until [`Ctx::stop`].
fn worker(ctx: Arc<Ctx>, t: usize) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("load-{t}")).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return eprintln!("streamgate-load: worker {t}: cannot build runtime: {e}"),
        };
        rt.block_on(async {
            tokio::spawn(launch(Arc::clone(&ctx), t));
            while !ctx.stop.load(Relaxed) {
                sleep(POLL).await;
            }
        });
        drop(rt); // drops every task, closing its connection
    })
}

/// Starts thread `t`'s publishers, waits for all publishers to settle, then starts its
/// players and churn connectors on the global `--ramp-per-sec` schedule.
async fn launch(ctx: Arc<Ctx>, t: usize) {
    let (n, players) = (ctx.args.threads, ctx.args.players);
    for i in (t..ctx.args.publishers).step_by(n) {
        tokio::spawn(publisher::run(Arc::clone(&ctx), i));
    }
    wait_for_publishers(&ctx).await;
    let start = Instant::now();
    for i in (t..players + ctx.args.churn).step_by(n) {
        sleep_until(start + Duration::from_secs_f64(i as f64 / ctx.args.ramp_per_sec)).await;
        if i < players {
            tokio::spawn(player::run(Arc::clone(&ctx), i));
        } else {
            tokio::spawn(player::churn(Arc::clone(&ctx), i - players));
        }
    }
}

/// Returns once every publisher got Publish.Start or failed (or its setup steps' time ran out).
async fn wait_for_publishers(ctx: &Ctx) {
    let limit = Instant::now() + ctx.args.step_timeout() * 6;
    while ctx.stats.publishers_settled.load(Relaxed) < ctx.args.publishers && Instant::now() < limit {
        sleep(POLL).await;
    }
}

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Relaxed);
}

/// First Ctrl-C ends the run with a summary; the handler resets itself, so a second one kills.
fn install_sigint() {
    // SAFETY: `sigaction` is plain old data, so the all-zero value is valid.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as usize;
    action.sa_flags = libc::SA_RESETHAND;
    // SAFETY: `action` is a valid sigaction whose handler only stores to an atomic
    // (async-signal-safe); the mask pointer is valid and the old action is not requested.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}
