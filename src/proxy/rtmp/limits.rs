//! The publish limits on the RTMP publish path ([`crate::transcode::limits`] decides): a
//! publisher is admitted against `RTMP_MAX_STREAMS` before its origin is picked, and while its
//! session runs [`enforce`] reads the media inspector's facts and the bytes received every
//! [`CHECK_EVERY`] for `RTMP_MAX_RESOLUTION` and `RTMP_MAX_BITRATE`. A refusal is counted and
//! logged by the caller, which answers the publisher with an `onStatus` error naming the limit
//! and closes.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::shard::media::MediaProbe;
use crate::transcode::limits::{self, Refusal, Slot, Watch};

/// How often a running publisher is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Admits a publisher under `RTMP_MAX_STREAMS`; the slot is held for the session.
pub fn admit(limits: &crate::config::transcode::PublishLimits) -> Result<Slot, Refusal> {
    limits::admit(limits).inspect_err(limits::count)
}

/// Returns (counted) once the publisher breaks a limit; never, while it keeps to them.
pub async fn enforce(
    limits: crate::config::transcode::PublishLimits,
    probe: &MediaProbe,
    bytes: &Cell<u64>,
) -> Refusal {
    let mut watch = Watch::new(limits);
    loop {
        if let Some(refusal) = watch.check(&probe.info(), bytes.get(), Instant::now()) {
            limits::count(&refusal);
            return refusal;
        }
        glommio::timer::sleep(CHECK_EVERY).await;
    }
}
