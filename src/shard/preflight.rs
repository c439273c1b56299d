//! Checks made before any shard starts, so that a machine that cannot run glommio fails at
//! once with a message saying what to change, instead of at `join()` after startup looked fine.
//!
//! - io_uring must be available: `kernel.io_uring_disabled` not set, `io_uring_setup(2)` not
//!   refused (Docker's default seccomp profile refuses it).
//! - `RLIMIT_MEMLOCK` must be at least [`MIN_MEMLOCK`] (glommio refuses to start below it);
//!   the soft limit is raised to the hard one when that is enough.
//! - `RLIMIT_NOFILE` soft is raised to the hard limit: every connection is two descriptors.

use std::io;

/// glommio's own minimum locked-memory limit (`MemLockLimit(.., 524288)`).
pub const MIN_MEMLOCK: u64 = 512 * 1024;

/// Why startup cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "io_uring is disabled on this host (kernel.io_uring_disabled={0}); \
         enable it with `sysctl -w kernel.io_uring_disabled=0`"
    )]
    IoUringDisabled(String),
    #[error(
        "io_uring_setup(2) failed: {0}; the kernel must be 5.10 or newer and a container must \
         allow the io_uring syscalls (Docker: --security-opt seccomp=unconfined or a profile \
         allowing io_uring_setup, io_uring_enter, io_uring_register)"
    )]
    IoUringSetup(io::Error),
    #[error(
        "RLIMIT_MEMLOCK is {soft} bytes (hard {hard}); glommio needs at least {MIN_MEMLOCK}: \
         run `ulimit -l 1024` (KiB) before starting, or set LimitMEMLOCK=1M in the systemd unit"
    )]
    MemLock { soft: u64, hard: u64 },
}

/// Runs every check; raises the limits it may.
pub fn check() -> Result<(), PreflightError> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        let v = v.trim();
        if v == "2" {
            return Err(PreflightError::IoUringDisabled(v.into()));
        }
    }
    probe_io_uring().map_err(PreflightError::IoUringSetup)?;
    ensure_memlock()?;
    raise_nofile();
    Ok(())
}

fn probe_io_uring() -> io::Result<()> {
    // struct io_uring_params is 120 bytes; the kernel fills it in.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes exactly one io_uring_params (120 bytes), which
    // `params` provides, zeroed as the kernel requires; the result is a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

fn get_limit(resource: libc::__rlimit_resource_t) -> libc::rlimit {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the valid `lim`.
    unsafe { libc::getrlimit(resource, &mut lim) };
    lim
}

fn set_soft_limit(resource: libc::__rlimit_resource_t, soft: u64) -> bool {
    let mut lim = get_limit(resource);
    lim.rlim_cur = soft;
    // SAFETY: setrlimit reads one valid rlimit.
    unsafe { libc::setrlimit(resource, &lim) == 0 }
}

fn ensure_memlock() -> Result<(), PreflightError> {
    let lim = get_limit(libc::RLIMIT_MEMLOCK);
    if lim.rlim_cur >= MIN_MEMLOCK {
        return Ok(());
    }
    if lim.rlim_max >= MIN_MEMLOCK && set_soft_limit(libc::RLIMIT_MEMLOCK, lim.rlim_max) {
        log::info!("raised RLIMIT_MEMLOCK from {} to {} bytes for io_uring", lim.rlim_cur, lim.rlim_max);
        return Ok(());
    }
    Err(PreflightError::MemLock { soft: lim.rlim_cur, hard: lim.rlim_max })
}

/// Most descriptors asked for: a relayed session holds two sockets, and two pipes (four
/// descriptors) while it moves bytes with splice.
const WANTED_NOFILE: u64 = 1 << 20;

fn raise_nofile() {
    let lim = get_limit(libc::RLIMIT_NOFILE);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok());
    let wanted = nr_open.unwrap_or(WANTED_NOFILE).min(WANTED_NOFILE);
    if lim.rlim_max < wanted {
        // Root (CAP_SYS_RESOURCE) may raise the hard limit too.
        let raised = libc::rlimit { rlim_cur: wanted, rlim_max: wanted };
        // SAFETY: setrlimit reads one valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return;
        }
    }
    if lim.rlim_cur < lim.rlim_max && !set_soft_limit(libc::RLIMIT_NOFILE, lim.rlim_max) {
        log::warn!("could not raise RLIMIT_NOFILE from {} to {}", lim.rlim_cur, lim.rlim_max);
    }
    let now = get_limit(libc::RLIMIT_NOFILE).rlim_cur;
    if now < 65_536 {
        log::warn!(
            "RLIMIT_NOFILE is {now}: at 4 descriptors per relayed connection that is about {} streams' clients; raise it (ulimit -n, LimitNOFILE=)",
            now / 4
        );
    }
}

/// The CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into `set`.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    // SAFETY: CPU_ISSET only reads `set`, and i < CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_passes_and_has_cpus() {
        check().expect("the build machine runs io_uring");
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(get_limit(libc::RLIMIT_MEMLOCK).rlim_cur >= MIN_MEMLOCK);
    }
}
