//! The gRPC ModuleService, the standard health service, reflection and `/metrics`, against a
//! proxy carrying a real stream: ffmpeg publishes through the proxy to a real nginx-rtmp
//! origin. Two clients: tonic (the generated client of proto/module.proto) and MarchProxy's
//! own Python client example, run unchanged, plus a Python check with `prometheus_client`'s parser.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::peers::*;
use common::*;
use streamgate::control::grpc::proto::Empty;
use streamgate::control::grpc::proto::module_service_client::ModuleServiceClient;

const PUBLISH_WAIT: Duration = Duration::from_secs(20);

fn key(stream: &str) -> String {
    format!("__defaultVhost__/live/{stream}")
}

/// A proxy with one nginx-rtmp origin and ffmpeg publishing `stream` through it, once the
/// publisher's video rate has been measured for a few seconds (shards report once a second).
struct Published {
    proxy: Proxy,
    origin: NginxRtmp,
    publisher: Ffmpeg,
}

impl Published {
    fn start(stream: &str, extra: &[&str]) -> Published {
        let origin = NginxRtmp::start(4096);
        let proxy = Proxy::start(extra);
        assert_eq!(register(&proxy.api_addr(), &origin_body("one", "g", origin.rtmp_port)).status, 200);
        let mut publisher = Ffmpeg::publish(&format!("rtmp://127.0.0.1:{}/live/{stream}", proxy.rtmp), 60);
        if !wait_until(PUBLISH_WAIT, || origin.publishing(stream)) {
            panic!("{stream} never published: {}\n{}", publisher.describe(), proxy.log_text());
        }
        // Three reports: the rates and the frame rate cover whole seconds of media.
        std::thread::sleep(Duration::from_secs(4));
        Published { proxy, origin, publisher }
    }

    fn diag(&mut self) -> String {
        format!(
            "publisher: {}\nproxy log:\n{}\norigin: {}",
            self.publisher.describe(),
            self.proxy.log_text(),
            self.origin.stat()
        )
    }
}

/// A channel to `url` for the standard services' clients (generated without a connect()).
async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_string()).unwrap().connect().await.unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn tonic_client_health_and_reflection() {
    let mut live = Published::start("grpc", &[]);
    let grpc = format!("http://127.0.0.1:{}", live.proxy.grpc);
    let key = key("grpc");
    let result: Result<(), String> = runtime().block_on(async {
        let mut client = ModuleServiceClient::connect(grpc.clone()).await.map_err(|e| e.to_string())?;
        let status = client.get_status(Empty {}).await.map_err(|e| e.to_string())?.into_inner();
        eprintln!("{status:?}");
        assert_eq!((status.module_name.as_str(), status.version.as_str()), ("rtmp-proxy", env!("CARGO_PKG_VERSION")));
        assert_eq!(status.status, "healthy");
        assert_eq!(status.active_streams, 1);
        assert!(status.total_bytes_in > 100_000, "4 s of a stream: {status:?}");
        assert!(status.uptime.ends_with('s'), "{status:?}");

        let routes = client.get_routes(Empty {}).await.map_err(|e| e.to_string())?.into_inner().routes;
        eprintln!("{routes:?}");
        let [route] = routes.as_slice() else { return Err(format!("one route expected: {routes:?}")) };
        assert_eq!(route.stream_key, key);
        assert_eq!(route.source, format!("rtmp://127.0.0.1:{}/live/grpc", live.origin.rtmp_port));
        assert_eq!(route.status, "active");
        assert_eq!(route.input_resolution, 360, "{route:?}");
        assert!((50..20_000).contains(&route.input_bitrate), "{route:?}");
        assert!(route.bytes_processed as u64 >= status.total_bytes_in as u64 / 2, "{route:?}");
        assert!(route.encoder.is_empty() && route.profiles.is_empty(), "no transcoding: {route:?}");

        let metrics = client.get_metrics(Empty {}).await.map_err(|e| e.to_string())?.into_inner();
        eprintln!("{metrics:?}");
        let [m] = metrics.streams.as_slice() else { return Err(format!("one stream expected: {metrics:?}")) };
        assert_eq!(m.stream_key, key);
        assert!((20.0..=30.0).contains(&m.fps), "published at 25 fps: {m:?}");
        assert!(m.duration > 3.0 && m.duration < 120.0, "{m:?}");
        assert_eq!((m.dropped_frames, m.encoder_speed), (0, 0));
        assert!(metrics.memory_mb > 0 && (0..=100).contains(&metrics.cpu_percent), "{metrics:?}");
        assert_eq!(metrics.gpu_percent, 0);

        let health = client.health_check(Empty {}).await.map_err(|e| e.to_string())?.into_inner();
        eprintln!("{health:?}");
        assert_eq!((health.status.as_str(), health.message.as_str()), ("healthy", "All systems operational"));
        assert!(health.errors.is_empty() && (0..1000).contains(&health.response_time_ms), "{health:?}");

        // grpc.health.v1: the server and the module are SERVING.
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
        let mut health = HealthClient::new(channel(&grpc).await);
        for service in ["", "marchproxy.ModuleService"] {
            let req = HealthCheckRequest { service: service.to_string() };
            let answer = health.check(req).await.map_err(|e| e.to_string())?.into_inner();
            assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
        }

        // Reflection lists the module, health and reflection services.
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(channel(&grpc).await);
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(futures_lite::stream::once(ask))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let answer = answers.message().await.map_err(|e| e.to_string())?.ok_or("no reflection answer")?;
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            return Err(format!("not a service list: {answer:?}"));
        };
        let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "marchproxy.ModuleService"]);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n{}", live.diag());
    }
}

/// The health rules seen from outside: with no origin at all the proxy is unhealthy, says why,
/// and the standard health service answers NOT_SERVING.
#[test]
fn no_origin_is_unhealthy_everywhere() {
    let proxy = Proxy::start(&[]);
    let grpc = format!("http://127.0.0.1:{}", proxy.grpc);
    runtime().block_on(async {
        let mut client = ModuleServiceClient::connect(grpc.clone()).await.unwrap();
        let health = client.health_check(Empty {}).await.unwrap().into_inner();
        assert_eq!(health.status, "unhealthy");
        assert_eq!(health.message, "no origin registered");
        assert_eq!(health.errors, ["no origin registered"]);
        let status = client.get_status(Empty {}).await.unwrap().into_inner();
        assert_eq!((status.status.as_str(), status.active_streams), ("unhealthy", 0));
        assert!(client.get_routes(Empty {}).await.unwrap().into_inner().routes.is_empty());

        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
        let health = HealthClient::new(channel(&grpc).await);
        let serving = || async {
            let mut h = health.clone();
            h.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status()
        };
        let mut status = serving().await;
        for _ in 0..40 {
            if status == ServingStatus::NotServing {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = serving().await;
        }
        assert_eq!(status, ServingStatus::NotServing);
    });
    let metrics = get(&proxy.api_addr(), "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("streamgate_health{level=\"unhealthy\"} 1\n"), "{}", metrics.body);
}

/// Runs `python3 args...` with the stubs on PYTHONPATH; its output, or why it failed.
fn python(stubs: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let python = python_with("grpc, grpc_tools, prometheus_client").map_err(|tried| {
        format!("no Python with grpcio, grpcio-tools and prometheus_client ({tried}); scripts/test.sh installs them in target/py")
    })?;
    let mut cmd = Command::new(python);
    cmd.args(args).env("PYTHONPATH", stubs);
    let out = run_with_timeout(cmd, timeout);
    let text = format!("{}{}", out.stdout, out.stderr);
    if out.status.is_some_and(|s| s.success()) {
        Ok(text)
    } else {
        Err(format!("python3 {args:?}: {:?}\n{text}", out.status))
    }
}

/// Generates `marchproxy/proto/module_pb2{,_grpc}.py` from proto/module.proto under `dir`, so
/// that `from marchproxy.proto import module_pb2, module_pb2_grpc` works as MarchProxy's
/// example writes it.
fn python_stubs(dir: &Path) -> Result<(), String> {
    let package = dir.join("marchproxy/proto");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/module.proto"), package.join("module.proto")).unwrap();
    let d = dir.to_str().unwrap();
    let proto = package.join("module.proto");
    let args = ["-m", "grpc_tools.protoc", "-I", d, "--python_out", d, "--grpc_python_out", d, proto.to_str().unwrap()];
    python(dir, &args, Duration::from_secs(60)).map(|_| ())
}

/// The reference's Python client, unchanged but for the address it dials (its
/// `localhost:50053`, the default port, becomes this proxy's: no test listens on a fixed port),
/// and the Python check of every RPC and of `/metrics`.
#[test]
fn reference_python_client_and_prometheus_parser() {
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc");
    let stubs = TempDir::new("pystubs");
    python_stubs(&stubs.0)
        .unwrap_or_else(|e| panic!("cannot generate the Python stubs (scripts/test.sh installs grpcio-tools): {e}"));
    let mut live = Published::start("py", &[]);
    let grpc = format!("127.0.0.1:{}", live.proxy.grpc);
    let reference = std::fs::read_to_string(format!("{tests}/seed_client.py")).unwrap();
    assert!(reference.contains("'localhost:50053'"), "the reference client changed: {reference}");
    let client = stubs.0.join("seed_client.py");
    std::fs::write(&client, reference.replace("'localhost:50053'", &format!("'{grpc}'"))).unwrap();

    let seed = python(&stubs.0, &[client.to_str().unwrap()], Duration::from_secs(30));
    let seed = seed.unwrap_or_else(|e| panic!("{e}\n{}", live.diag()));
    eprintln!("{seed}");
    assert!(seed.contains("Module: rtmp-proxy\nStatus: healthy\nActive streams: 1\n"), "{seed}");

    let metrics_url = format!("http://{}/metrics", live.proxy.api_addr());
    let (script, key) = (format!("{tests}/check.py"), key("py"));
    let args = [script.as_str(), grpc.as_str(), metrics_url.as_str(), key.as_str()];
    match python(&stubs.0, &args, Duration::from_secs(60)) {
        Ok(out) => {
            eprintln!("{out}");
            assert!(out.trim_end().ends_with("OK"), "{out}");
        }
        Err(e) => panic!("{e}\n{}", live.diag()),
    }
}
