//! The process's own CPU time and memory, read from `/proc/self` (all threads: shards, control,
//! glommio's helpers), for the gRPC GetMetrics answer, the health rules and `/metrics`.

use std::time::Instant;

/// CPU seconds (user + system) the whole process has used, or `None` where `/proc` is missing.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_seconds_from_stat(&stat, clock_ticks())
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds.
fn cpu_seconds_from_stat(stat: &str, ticks_per_second: f64) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses; fields are counted after
    // its closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Resident memory of the process in bytes, or `None` where `/proc` is missing.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as u64 } else { 4096 })
}

/// Open file descriptors of the process.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// The process's CPU use over the last sampling interval.
#[derive(Debug)]
pub struct CpuSampler {
    last: Option<(Instant, f64)>,
    /// Share of the CPUs this process may run on, 0 to 100, over the last interval.
    pub percent: f64,
    /// CPU seconds used since start, at the last sample.
    pub total_seconds: f64,
    cpus: f64,
}

impl Default for CpuSampler {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        CpuSampler { last: None, percent: 0.0, total_seconds: 0.0, cpus }
    }
}

impl CpuSampler {
    /// Takes a sample now (the control thread does once a second).
    pub fn sample(&mut self, now: Instant) {
        let Some(seconds) = cpu_seconds() else { return };
        self.record(now, seconds);
    }

    fn record(&mut self, now: Instant, seconds: f64) {
        if let Some((at, before)) = self.last {
            let wall = now.saturating_duration_since(at).as_secs_f64();
            if wall > 0.0 {
                self.percent = ((seconds - before) / wall / self.cpus * 100.0).clamp(0.0, 100.0);
            }
        }
        self.last = Some((now, seconds));
        self.total_seconds = seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_utime_and_stime_after_a_name_with_spaces() {
        let stat = "4242 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0 100 1000 50";
        assert_eq!(cpu_seconds_from_stat(stat, 100.0), Some(3.0));
        assert_eq!(cpu_seconds_from_stat("garbage", 100.0), None);
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn percent_is_a_share_of_the_allowed_cpus() {
        let t0 = Instant::now();
        let mut s = CpuSampler { cpus: 2.0, ..Default::default() };
        s.record(t0, 10.0);
        assert_eq!(s.percent, 0.0, "one sample is no interval");
        s.record(t0 + Duration::from_secs(2), 11.0);
        assert!((s.percent - 25.0).abs() < 1e-9, "1 CPU-second over 2 s on 2 CPUs: {}", s.percent);
        s.record(t0 + Duration::from_secs(3), 20.0);
        assert_eq!(s.percent, 100.0, "clamped");
        assert_eq!(s.total_seconds, 20.0);
    }
}
