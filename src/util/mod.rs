//! Small helpers with no better home.

pub mod backoff;

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

#[cfg(test)]
mod tests {
    #[test]
    fn random_bytes_differ() {
        let (mut a, mut b) = ([0u8; 1528], [0u8; 1528]);
        super::fill_random(&mut a);
        super::fill_random(&mut b);
        assert_ne!(a, b);
        assert!(a.iter().filter(|&&x| x == 0).count() < 100);
    }
}
