//! Small helpers with no better home.

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

/// Fills `buf` with random bytes.
pub fn fill_random(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let r = random_u64().to_ne_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
}
