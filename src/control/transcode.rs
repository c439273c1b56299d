//! The control thread's side of transcoding: publish sessions opening and closing drive the
//! [`Supervisor`] (a job plays the stream from the origin it is pinned to, or, for a local
//! stream, from streamgate's own RTMP listener), and the jobs' numbers go into GetRoutes,
//! GetMetrics, HealthCheck, `/api/v1/streams` and `/metrics` together with the publish limits'
//! refusals.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use serde_json::{Value, json};

use super::State;
use super::grpc::proto::TranscodeProfile;
use super::metrics::Out;
use crate::balance::StreamKey;
use crate::balance::endpoint::first_tcp;
use crate::transcode::supervisor::{local_source, source_url};
use crate::transcode::{Route, Supervisor, limits};

/// A session of `key` opened or closed: a publish starts or stops its jobs.
pub fn on_session(state: &mut State, key: &StreamKey, publish: bool, opened: bool, local: bool, now: Instant) {
    if !publish || !state.transcode.any() {
        return;
    }
    if opened {
        let source = if local { Some(local_source(&state.config, key)) } else { origin_source(state, key, now) };
        state.transcode.publish_started(key, source, local);
    } else {
        state.transcode.publish_stopped(key, now);
    }
}

/// The RTMP URL of `key` on the origin it is pinned to.
fn origin_source(state: &State, key: &StreamKey, now: Instant) -> Option<String> {
    origin_rtmp(state, key, now).map(|origin| source_url(origin, key))
}

/// The RTMP address of the origin `key` is pinned to.
fn origin_rtmp(state: &State, key: &StreamKey, now: Instant) -> Option<SocketAddr> {
    let origin = state.registry.pinned(key, now)?;
    let endpoint = first_tcp(&origin.registration.rtmp)?;
    Some(SocketAddr::new(origin.registration.ip, endpoint.port))
}

/// The jobs by stream.
pub fn routes(supervisor: &Supervisor) -> HashMap<StreamKey, Route> {
    supervisor.routes().into_iter().map(|r| (r.key.clone(), r)).collect()
}

/// GetRoutes' profiles of a job.
pub fn profiles(route: &Route) -> Vec<TranscodeProfile> {
    route
        .view
        .rungs
        .iter()
        .map(|r| TranscodeProfile {
            name: r.name.clone(),
            codec: r.codec.to_string(),
            bitrate: r.kbps as i32,
            resolution: r.height as i32,
            status: r.status.name().to_string(),
        })
        .collect()
}

/// `/api/v1/streams`' `transcode` object of a job.
pub fn json(route: &Route) -> Value {
    let v = &route.view;
    json!({
        "name": route.name,
        "source": route.source,
        "status": v.status.name(),
        "problem": v.problem,
        "encoder": route.encoder,
        "input_width": v.input_width,
        "input_height": v.input_height,
        "input_kbps": v.input_bps / 1000,
        "bytes_processed": v.bytes_processed,
        "fps": (v.fps * 100.0).round() / 100.0,
        "speed": (v.speed * 100.0).round() / 100.0,
        "frames": v.frames,
        "dropped_frames": v.dropped_frames,
        "duration": route.duration,
        "master": format!("/streams/{}/master.m3u8", route.name),
        "dash": format!("/streams/{}/dash/manifest.mpd", route.name),
        "profiles": v.rungs.iter().map(|r| json!({
            "name": r.name, "codec": r.codec, "width": r.width, "height": r.height, "kbps": r.kbps,
            "status": r.status.name(),
            "first_segment_seconds": r.first_segment.map(|d| d.as_secs_f64()),
        })).collect::<Vec<_>>(),
    })
}

/// The transcoding and publish-limit families of `/metrics`.
pub(super) fn metrics(o: &mut Out, state: &State) {
    o.family("streamgate_publish_refused_total", "counter", "Publishers refused by a publish limit (RTMP_MAX_*).");
    for (name, n) in limits::LIMITS.iter().zip(limits::refused()) {
        o.sample("streamgate_publish_refused_total", &[("limit", name)], n as f64);
    }
    o.family("streamgate_publishers", "gauge", "RTMP publishers counted against RTMP_MAX_STREAMS.");
    o.sample("streamgate_publishers", &[], limits::PUBLISHERS.taken() as f64);
    o.family("streamgate_transcode_skipped_total", "counter", "Publishes not transcoded: --transcode-max-jobs ran.");
    o.sample("streamgate_transcode_skipped_total", &[], state.transcode.skipped as f64);
    let routes = state.transcode.routes();
    o.family("streamgate_transcode_jobs", "gauge", "Transcoding jobs (running, or finished within the grace period).");
    o.sample("streamgate_transcode_jobs", &[], routes.len() as f64);
    type Field = fn(&Route) -> f64;
    let families: [(&str, &str, &str, Field); 5] = [
        ("streamgate_transcode_fps", "gauge", "Frames encoded per second per rung.", |r| r.view.fps),
        ("streamgate_transcode_speed", "gauge", "Media seconds per busy second (above 1 keeps up).", |r| r.view.speed),
        ("streamgate_transcode_dropped_frames_total", "counter", "Frames dropped to keep up.", |r| {
            r.view.dropped_frames as f64
        }),
        ("streamgate_transcode_input_bytes_total", "counter", "Bytes the job read from the origin.", |r| {
            r.view.bytes_processed as f64
        }),
        ("streamgate_transcode_failed", "gauge", "1 when the job stopped with an error.", |r| {
            f64::from(u8::from(r.view.status == crate::transcode::Status::Error))
        }),
    ];
    for (name, kind, help, value) in families {
        o.family(name, kind, help);
        for route in &routes {
            o.sample(name, &[("stream", route.key.as_str()), ("encoder", route.encoder)], value(route));
        }
    }
}
