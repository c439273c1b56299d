//! Startup and shutdown of the whole process: control thread, shards, signals.
//!
//! Order: block SIGINT/SIGTERM in every thread (they are taken with `sigtimedwait` here), start
//! the control thread and wait until the System API is bound, start one shard per CPU and wait
//! until each has bound its listeners. Any failure there stops startup with its reason.
//!
//! A shard or the control thread that stops on its own (a bug: a panic) stops the process
//! with status 1 and a log line, rather than leaving a port half served.
//!
//! On the first SIGINT/SIGTERM the shards stop accepting and drain for up to
//! `--grace-quit-timeout`; the control thread stops after the last shard. If that takes longer
//! than `--force-quit-timeout`, or a second signal arrives, the process exits with status 1.
//!
//! SIGHUP reloads the TLS listeners' certificate and key ([`shard::tls::Certs::reload`]), the
//! gRPC server's with them; it never stops the process.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::bridge;
use crate::config::Config;
use crate::control::{self, ControlStart};
use crate::shard;

/// Runs streamgate until a signal stops it.
pub fn run(mut config: Config) -> ExitCode {
    // Port 0 for a shard listener: one free port for every shard, held until they have bound.
    let reserved = match reserve_ports(&mut config) {
        Ok(reserved) => reserved,
        Err(reason) => return fail(&reason),
    };
    let config = Arc::new(config);
    let certs = match load_certs(&config) {
        Ok(certs) => certs,
        Err(reason) => return fail(&reason),
    };
    block_signals();
    let registry = control::new_registry(&config);
    let (snapshots, events, link) = bridge::channel(registry.snapshot(Instant::now()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let grpc_certs = certs.clone().filter(|_| config.tls.grpc);
    let start = ControlStart { config: config.clone(), registry, snapshots, events, grpc_certs };
    let control = std::thread::Builder::new().name("control".into()).spawn(move || control::run(start, ready_tx));
    let control = match control {
        Ok(handle) => handle,
        Err(e) => return fail(&format!("cannot start the control thread: {e}")),
    };
    let bound = match ready_rx.recv() {
        Ok(Ok(bound)) => bound,
        Ok(Err(reason)) => return fail(&reason),
        Err(_) => return fail("the control thread stopped during startup"),
    };
    let services = crate::proxy::services(&config, certs.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (shard_ready_tx, shard_ready_rx) = mpsc::channel();
    let mut shards = Vec::new();
    for (index, &cpu) in config.cpus.iter().enumerate() {
        let (services, link, shutdown, ready) =
            (services.clone(), link.clone(), shutdown_rx.clone(), shard_ready_tx.clone());
        match shard::spawn(index, cpu, config.clone(), services, link, shutdown, ready) {
            Ok(handle) => shards.push(handle),
            Err(e) => return fail(&format!("cannot start shard {index} on CPU {cpu}: {e}")),
        }
    }
    drop(link);
    for _ in 0..shards.len() {
        match shard_ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return fail(&reason),
            Err(_) => return fail("a shard stopped during startup"),
        }
    }
    drop(reserved);
    log_started(&config, bound);
    let (exit_tx, exit_rx) = mpsc::channel();
    let threads = shards.len() + 1;
    for (index, handle) in shards.into_iter().enumerate() {
        let exit_tx = exit_tx.clone();
        std::thread::spawn(move || {
            let _ = handle.join();
            let _ = exit_tx.send(format!("shard {index}"));
        });
    }
    std::thread::spawn(move || {
        let _ = control.join();
        let _ = exit_tx.send("the control thread".to_string());
    });
    let signal = loop {
        match wait_for_signal(Some(Duration::from_millis(250))) {
            Some(libc::SIGHUP) => reload_certs(certs.as_deref()),
            Some(sig) => break sig,
            None => {}
        }
        if let Ok(which) = exit_rx.try_recv() {
            log::error!("{which} stopped unexpectedly (see the error above); exiting");
            std::process::exit(1);
        }
    };
    log::info!(
        "{} received: no longer accepting; draining connections for up to {:?}",
        signal_name(Some(signal)),
        config.grace_quit_timeout
    );
    let _ = shutdown_tx.send(true);
    let deadline = Instant::now() + config.force_quit_timeout;
    let mut stopped = 0;
    loop {
        while exit_rx.try_recv().is_ok() {
            stopped += 1;
        }
        if stopped == threads {
            log::info!("stopped");
            return ExitCode::SUCCESS;
        }
        if Instant::now() >= deadline {
            log::error!("still running after --force-quit-timeout {:?}: exiting", config.force_quit_timeout);
            std::process::exit(1);
        }
        if let Some(sig) = wait_for_signal(Some(Duration::from_millis(100))).filter(|&s| s != libc::SIGHUP) {
            log::warn!("second signal ({}): exiting now", signal_name(Some(sig)));
            std::process::exit(1);
        }
    }
}

fn fail(reason: &str) -> ExitCode {
    log::error!("startup failed: {reason}");
    // Threads already started hold listeners; leave at once rather than unwind them.
    std::process::exit(1)
}

/// Gives every shard listener set to port 0 a free port, reserved until the shards have bound
/// it ([`shard::ports`]).
fn reserve_ports(config: &mut Config) -> Result<shard::ports::Reservation, String> {
    use shard::ports::{Kind, reserve};
    let mut held = shard::ports::Reservation::default();
    let listen = &mut config.listen;
    let listeners = [
        (&mut listen.rtmp, Kind::Tcp, "--rtmp-server"),
        (&mut listen.http_stream, Kind::Tcp, "--http-server"),
        (&mut listen.http_api, Kind::Tcp, "--http-api"),
        (&mut listen.webrtc, Kind::Udp, "--webrtc-server"),
        (&mut listen.srt, Kind::Udp, "--srt-server"),
    ];
    let tls = &mut config.tls;
    let tls_listeners = [
        (tls.rtmps.as_mut(), Kind::Tcp, "--rtmps-server"),
        (tls.https_stream.as_mut(), Kind::Tcp, "--https-server"),
        (tls.https_api.as_mut(), Kind::Tcp, "--https-api"),
    ];
    let tls_listeners = tls_listeners.into_iter().filter_map(|(addr, kind, flag)| Some((addr?, kind, flag)));
    for (addr, kind, flag) in listeners.into_iter().chain(tls_listeners) {
        addr.0 = reserve(addr.0, kind, &mut held)
            .map_err(|e| format!("cannot find a free port for {flag} {}: {e}", addr.0))?;
    }
    Ok(held)
}

/// The TLS listeners' certificate, when one is on.
fn load_certs(config: &Config) -> Result<Option<Arc<shard::tls::Certs>>, String> {
    let Some(files) = &config.tls.files else {
        return Ok(None);
    };
    let certs = shard::tls::Certs::load(files).map_err(|e| e.to_string())?;
    Ok(Some(Arc::new(certs)))
}

/// SIGHUP: reads the TLS certificate and key again; a file that does not load is logged and
/// the old certificate kept.
fn reload_certs(certs: Option<&shard::tls::Certs>) {
    let Some(certs) = certs else {
        return log::info!("SIGHUP received: no TLS listener, nothing to reload");
    };
    let files = certs.files();
    match certs.reload() {
        Ok(()) => log::info!(
            "SIGHUP received: TLS certificate reloaded from {} and {}; new connections use it",
            files.cert.display(),
            files.key.display()
        ),
        Err(e) => log::error!("SIGHUP received: {e}; the TLS listeners keep the certificate they had"),
    }
}

/// The startup line: every listener with the address it is bound to (tests and scripts read
/// the ports from it when they ask for port 0).
fn log_started(config: &Config, bound: control::Bound) {
    let l = &config.listen;
    log::info!(
        "streamgate {} ({}) started: {} shards on CPUs {:?}; RTMP {}; HTTP stream {}; HTTP API {}; WebRTC {}; SRT {}{}; System API {}; gRPC {}{}; relay {}; origin TTL {:?}",
        crate::version::VERSION,
        crate::version::COMMIT,
        config.cpus.len(),
        config.cpus,
        l.rtmp,
        l.http_stream,
        l.http_api,
        l.webrtc,
        l.srt,
        config.tls.describe(),
        bound.system_api,
        bound.grpc,
        if config.tls.grpc { " (TLS)" } else { "" },
        config.relay.name(),
        config.origin_ttl,
    );
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for both calls.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    set
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts afterwards.
fn block_signals() {
    let set = signal_set();
    // SAFETY: `set` is valid; the old mask is not wanted (null).
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for SIGINT/SIGTERM/SIGHUP, forever or up to `timeout`.
fn wait_for_signal(timeout: Option<Duration>) -> Option<i32> {
    let set = signal_set();
    loop {
        let rc = match timeout {
            None => {
                let mut sig = 0;
                // SAFETY: `set` and `sig` are valid for the call.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc == 0 { sig } else { -1 }
            }
            Some(t) => {
                let ts = libc::timespec { tv_sec: t.as_secs() as _, tv_nsec: t.subsec_nanos() as _ };
                // SAFETY: `set` and `ts` are valid; siginfo is not wanted (null).
                unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) }
            }
        };
        if rc > 0 {
            return Some(rc);
        }
        if timeout.is_some() {
            return None;
        }
    }
}

fn signal_name(sig: Option<i32>) -> &'static str {
    match sig {
        Some(libc::SIGINT) => "SIGINT",
        Some(libc::SIGTERM) => "SIGTERM",
        _ => "signal",
    }
}
