//! Small helpers with no better home.

pub mod backoff;
pub mod certs;
pub mod oneshot;

/// 64 random bits from the kernel (getrandom(2)); falls back to the clock and pid if the
/// kernel refuses, which only weakens ids, never safety.
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        return u64::from_ne_bytes(buf);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

/// Fills `buf` with random bytes in one getrandom(2) call (falling back to [`random_u64`]
/// only for what the kernel did not fill).
pub fn fill_random(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    let filled = usize::try_from(n).unwrap_or(0).min(buf.len());
    for chunk in buf[filled..].chunks_mut(8) {
        let r = random_u64().to_ne_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
}

/// Sets TCP_QUICKACK on a socket: the kernel acknowledges the next segments at once instead
/// of delaying the ACK (it clears the flag again by itself, so callers set it after each
/// read). Failure only loses the hint.
pub fn quickack(fd: std::os::fd::RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from the valid `one` for the length given; a bad
    // descriptor only makes it fail.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Turns TCP keepalive on for a socket: the first probe after `idle` without traffic, then one
/// every `interval`, and the kernel drops the connection after `count` unanswered (the next
/// read or write on it fails, so a relay waiting on a vanished peer ends).
pub fn keepalive(fd: std::os::fd::RawFd, idle: std::time::Duration, interval: std::time::Duration, count: u32) {
    let secs = |d: std::time::Duration| libc::c_int::try_from(d.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(idle)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(interval)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, libc::c_int::try_from(count).unwrap_or(libc::c_int::MAX)),
    ];
    for (level, name, value) in options {
        // SAFETY: setsockopt reads one c_int from the valid `value` for the length given; a bad
        // descriptor only makes it fail, which only loses the probes.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keepalive_is_set_as_asked() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = socket.as_raw_fd();
        super::keepalive(fd, std::time::Duration::from_secs(7), std::time::Duration::from_secs(3), 4);
        let get = |level, name| {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into the valid `value`.
            unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
            value
        };
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 7);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 3);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 4);
    }

    #[test]
    fn random_bytes_differ() {
        let (mut a, mut b) = ([0u8; 1528], [0u8; 1528]);
        super::fill_random(&mut a);
        super::fill_random(&mut b);
        assert_ne!(a, b);
        assert!(a.iter().filter(|&&x| x == 0).count() < 100);
    }
}
