//! What a test reads about a process from /proc: CPU time, open descriptors, the ports its
//! sockets listen on; and lowering its descriptor limit from outside with prlimit(1).

use std::process::Command;
use std::time::Duration;

/// The process's user + system CPU time so far, all threads (fields 14 and 15 of
/// /proc/PID/stat, in clock ticks).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

/// CPU time the process used over `window`, measured by sleeping through it.
pub fn cpu_over(pid: u32, window: Duration) -> Duration {
    let before = cpu_time(pid);
    std::thread::sleep(window);
    cpu_time(pid).saturating_sub(before)
}

/// Descriptors the process holds now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Sets the process's RLIMIT_NOFILE (soft and hard) with prlimit(1), as an operator's
/// `ulimit -n` would have before it started (streamgate raises its own limit at startup, so
/// lowering it from outside afterwards is how a test makes it run out).
pub fn limit_descriptors(pid: u32, limit: usize) {
    let out = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:{limit}")])
        .output()
        .expect("prlimit (util-linux) is installed");
    assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
}

/// Which socket table of /proc/net a port is looked up in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A listening TCP socket.
    Tcp,
    /// A bound UDP socket.
    Udp,
}

/// Whether process `pid` holds a socket listening on TCP `port` (or bound to UDP `port`), any
/// local address, IPv4 or IPv6: the socket's inode in /proc/net/{tcp,tcp6,udp,udp6} is one of
/// the process's descriptors. So a test knows the peer it started is the one listening, not
/// some other process on that port.
pub fn holds_port(pid: u32, port: u16, transport: Transport) -> bool {
    let (tables, state) = match transport {
        Transport::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], "0A"), // TCP_LISTEN
        Transport::Udp => (["/proc/net/udp", "/proc/net/udp6"], "07"), // TCP_CLOSE: bound, unconnected
    };
    let suffix = format!(":{port:04X}");
    let inodes: Vec<String> = tables
        .iter()
        .flat_map(|t| {
            std::fs::read_to_string(t).unwrap_or_default().lines().skip(1).map(str::to_string).collect::<Vec<_>>()
        })
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && f[1].ends_with(&suffix) && f[3] == state).then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| inodes.iter().any(|inode| target.as_os_str() == inode.as_str()))
}
