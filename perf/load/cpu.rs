//! The generator's own resource use: CPU seconds (user, system) of the whole process and its
//! peak resident set, from `getrusage(RUSAGE_SELF)`.

/// CPU time and peak memory of this process so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User-mode CPU seconds, all threads.
    pub user_s: f64,
    /// Kernel-mode CPU seconds, all threads.
    pub system_s: f64,
    /// Peak resident set size in KiB.
    pub max_rss_kib: f64,
}

impl Usage {
    /// User plus system seconds.
    pub fn total_s(&self) -> f64 {
        self.user_s + self.system_s
    }
}

/// Reads this process's usage; zeros if the call fails.
pub fn usage() -> Usage {
    // SAFETY: `rusage` is plain old data, so the all-zero value is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` that outlives the call; RUSAGE_SELF is a
    // valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Usage::default();
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Usage { user_s: secs(ru.ru_utime), system_s: secs(ru.ru_stime), max_rss_kib: ru.ru_maxrss as f64 }
}
