//! The gRPC `marchproxy.ModuleService` (proto/module.proto, the API a MarchProxy NLB asks its
//! modules), plus the
//! standard `grpc.health.v1.Health` service and server reflection, served by tonic on the
//! control thread (`--grpc`, default 50053).
//!
//! tonic wants `Send` services while the control state is `Rc<RefCell<..>>` on one thread, so
//! every RPC sends a closure to the control loop over a bounded queue ([`ASK_QUEUE`]) and awaits
//! its answer: answers are built from the live state (registry, per-stream traffic and media,
//! shard reports, process CPU), never from a copy that could be stale, and nothing is shared
//! with the shards. The health service follows [`super::health`]: `SERVING` unless unhealthy,
//! re-evaluated once a second.
//!
//! Connections are capped (`--grpc-max-connections`, taken before `accept`) and closed after
//! `--grpc-idle-timeout` without traffic; see [`super::grpc_listener`].
//! With auth on, ModuleService and reflection sit behind [`super::auth::GrpcAuth`] (a bearer
//! token in the `authorization` metadata); health stays open.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::State;
use super::grpc_listener::GrpcLimits;
use super::health::Level;
use crate::balance::StreamKey;
use crate::balance::endpoint::first_tcp;
use crate::balance::registry::Stream;
use crate::balance::session::Role;
use proto::module_service_server::{ModuleService, ModuleServiceServer};
use proto::{Empty, HealthCheckResponse, MetricsResponse, RoutesResponse, StatusResponse, StreamMetrics, StreamRoute};

/// The generated messages, server and client of proto/module.proto.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("marchproxy");

    /// The encoded descriptors of module.proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("module_descriptor");
}

/// The module name GetStatus answers, the one the NLB recognises.
pub const MODULE_NAME: &str = "rtmp-proxy";
/// Most RPCs waiting for the control loop; more wait for room.
pub const ASK_QUEUE: usize = 64;

/// A question for the control loop: runs there, with the state borrowed.
pub type Ask = Box<dyn FnOnce(&mut State) + Send>;

/// The ModuleService: a handle on the control loop's ask queue.
#[derive(Clone)]
pub struct Module {
    asks: mpsc::Sender<Ask>,
}

impl Module {
    pub fn new(asks: mpsc::Sender<Ask>) -> Self {
        Module { asks }
    }

    /// Runs `f` on the control thread and returns what it built.
    async fn ask<R: Send + 'static>(&self, f: impl FnOnce(&mut State) -> R + Send + 'static) -> Result<R, Status> {
        let (reply, answer) = oneshot::channel();
        let ask: Ask = Box::new(move |state| {
            let _ = reply.send(f(state));
        });
        let gone = || Status::unavailable("the proxy is shutting down");
        self.asks.send(ask).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }
}

#[tonic::async_trait]
impl ModuleService for Module {
    async fn get_status(&self, _: Request<Empty>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.ask(|s| status(s, Instant::now())).await?))
    }

    async fn get_routes(&self, _: Request<Empty>) -> Result<Response<RoutesResponse>, Status> {
        Ok(Response::new(self.ask(|s| routes(s, Instant::now())).await?))
    }

    async fn get_metrics(&self, _: Request<Empty>) -> Result<Response<MetricsResponse>, Status> {
        Ok(Response::new(self.ask(|s| metrics(s, Instant::now())).await?))
    }

    async fn health_check(&self, _: Request<Empty>) -> Result<Response<HealthCheckResponse>, Status> {
        let started = Instant::now();
        let health = self.ask(|s| s.health(Instant::now())).await?;
        Ok(Response::new(HealthCheckResponse {
            status: health.level.name().to_string(),
            message: health.message,
            response_time_ms: clamp_i32(started.elapsed().as_millis()),
            errors: health.problems,
        }))
    }
}

/// Binds the gRPC listener (before the proxy says it started, so a taken port stops startup).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on gRPC {addr} (--grpc, RTMP_GRPC_PORT): {e}"))
}

/// Serves ModuleService, health and reflection on `listener` until the task is dropped, with
/// the connection cap and idle timeout of `limits` ([`super::grpc_listener`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    limits: GrpcLimits,
    asks: mpsc::Sender<Ask>,
    auth: super::auth::GrpcAuth,
) {
    use tonic::service::interceptor::InterceptedService;
    let module = Module::new(asks);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection = match reflection {
        Ok(r) => r,
        Err(e) => return log::error!("gRPC not served: reflection: {e}"),
    };
    tokio::spawn(follow_health(module.clone(), reporter));
    let served = tonic::transport::Server::builder()
        .add_service(ModuleServiceServer::with_interceptor(module, auth.clone()))
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection, auth))
        .serve_with_incoming(super::grpc_listener::incoming(listener, limits))
        .await;
    if let Err(e) = served {
        log::error!("gRPC server stopped: {e}");
    }
}

/// Keeps `grpc.health.v1` in step with the health rules: the whole server ("") and
/// `marchproxy.ModuleService` are SERVING unless the proxy is unhealthy.
async fn follow_health(module: Module, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut last = None;
    loop {
        every.tick().await;
        let Ok(level) = module.ask(|s| s.health(Instant::now()).level).await else { return };
        let serving = if level == Level::Unhealthy { ServingStatus::NotServing } else { ServingStatus::Serving };
        if last != Some(serving) {
            reporter.set_service_status("", serving).await;
            reporter.set_service_status("marchproxy.ModuleService", serving).await;
            last = Some(serving);
        }
    }
}

fn clamp_i32(v: impl TryInto<i32>) -> i32 {
    v.try_into().unwrap_or(i32::MAX)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Go's Duration formatting at second precision, as the NLB shows it: "2h45m30s", "5m0s", "12s".
pub fn format_uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn status(state: &State, now: Instant) -> StatusResponse {
    let (bytes_in, bytes_out) = state.protocol_bytes.values().fold((0, 0), |(i, o), (a, b)| (i + a, o + b));
    StatusResponse {
        module_name: MODULE_NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        status: state.health(now).level.name().to_string(),
        active_streams: clamp_i32(state.active_streams().count()),
        total_bytes_in: clamp_i64(bytes_in),
        total_bytes_out: clamp_i64(bytes_out),
        uptime: format_uptime(now.saturating_duration_since(state.started)),
    }
}

/// `rtmp://<origin>:<port>/<app>/<stream>` (plus `?vhost=` for a vhost that is not the
/// default): where the stream lives, as a player of that origin would name it.
fn source_url(state: &State, key: &StreamKey, stream: &Stream) -> String {
    let origin = stream.pin.as_ref().and_then(|p| {
        let origin = state.registry.origin(&p.origin)?;
        let port = first_tcp(&origin.registration.rtmp)?.port;
        Some(SocketAddr::new(origin.registration.ip, port))
    });
    rtmp_url(&origin.map_or_else(|| "unpinned".to_string(), |a| a.to_string()), key)
}

/// `rtmp://HOST/APP/STREAM` for `key` (`?vhost=` for a vhost other than the default).
fn rtmp_url(host: &str, key: &StreamKey) -> String {
    let (vhost, path) = key.as_str().split_once('/').unwrap_or(("", key.as_str()));
    match vhost {
        "__defaultVhost__" | "" => format!("rtmp://{host}/{path}"),
        vhost => format!("rtmp://{host}/{path}?vhost={vhost}"),
    }
}

/// A local stream's source (`--local-origin`): the RTMP URL streamgate received it on.
fn local_url(state: &State, key: &StreamKey) -> String {
    rtmp_url(&state.config.listen.rtmp.0.to_string(), key)
}

fn routes(state: &State, now: Instant) -> RoutesResponse {
    let jobs = super::transcode::routes(&state.transcode);
    let routes = state
        .active_streams()
        .map(|(key, stream)| {
            let traffic = state.traffic.get(key);
            let media = state.media.get(key);
            let publishing = stream.sessions.iter().any(|((_, role), n)| *role == Role::Publish && *n > 0);
            let origin_alive = stream
                .pin
                .as_ref()
                .and_then(|p| state.registry.origin(&p.origin))
                .is_some_and(|o| o.is_alive(now, state.registry.ttl()));
            let local = super::stats::edge_totals(&state.shards, key).is_some_and(|e| e.local);
            let status = match (origin_alive || local, publishing) {
                (false, _) => "error",
                (true, true) => "active",
                (true, false) => "idle",
            };
            let job = jobs.get(key);
            StreamRoute {
                stream_key: key.as_str().to_string(),
                source: if local { local_url(state, key) } else { source_url(state, key, stream) },
                status: status.to_string(),
                encoder: job.map_or_else(String::new, |j| j.encoder.to_string()),
                input_bitrate: clamp_i32(traffic.map_or(0, |t| t.in_bps / 1000)),
                input_resolution: clamp_i32(media.map_or(0, |m| m.height)),
                bytes_processed: clamp_i64(traffic.map_or(0, |t| t.bytes_in + t.bytes_out)),
                profiles: job.map_or_else(Vec::new, super::transcode::profiles),
            }
        })
        .collect();
    RoutesResponse { routes }
}

fn metrics(state: &State, now: Instant) -> MetricsResponse {
    let jobs = super::transcode::routes(&state.transcode);
    let streams = state
        .active_streams()
        .map(|(key, _)| {
            let media = state.media.get(key);
            let job = jobs.get(key).map(|j| &j.view);
            StreamMetrics {
                stream_key: key.as_str().to_string(),
                fps: job.map_or_else(|| media.map_or(0.0, |m| m.fps), |j| j.fps) as f32,
                duration: media
                    .and_then(|m| m.publishing_since)
                    .map_or(0.0, |since| now.saturating_duration_since(since).as_secs_f32()),
                dropped_frames: clamp_i32(
                    media.map_or(0, |m| m.dropped_frames)
                        + super::stats::edge_totals(&state.shards, key).map_or(0, |e| e.dropped_frames)
                        + job.map_or(0, |j| j.dropped_frames),
                ),
                encoder_speed: job.map_or(0, |j| j.speed.round() as i32),
            }
        })
        .collect();
    MetricsResponse {
        cpu_percent: state.cpu.percent.round() as i32,
        gpu_percent: 0,
        memory_mb: clamp_i32(super::process::resident_bytes().unwrap_or(0) / (1024 * 1024)),
        streams,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_go_durations() {
        assert_eq!(format_uptime(Duration::from_secs(0)), "0s");
        assert_eq!(format_uptime(Duration::from_millis(12_900)), "12s");
        assert_eq!(format_uptime(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_uptime(Duration::from_secs(2 * 3600 + 45 * 60 + 30)), "2h45m30s");
        assert_eq!(format_uptime(Duration::from_secs(50 * 3600)), "50h0m0s");
    }
}
