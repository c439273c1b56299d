//! Startup and shutdown of the real binary: environment fallbacks, the `.env` file, bad flags,
//! `--help`, the default backend, listener conflicts and SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

fn run_to_exit(cmd: &mut std::process::Command) -> (i32, String) {
    let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_documents_every_flag_and_its_variable() {
    let (code, help) = run_to_exit(std::process::Command::new(BIN).arg("--help"));
    assert_eq!(code, 0);
    for needle in [
        "--rtmp-server",
        "PROXY_RTMP_SERVER",
        "--http-server",
        "PROXY_HTTP_SERVER",
        "--http-api",
        "PROXY_HTTP_API",
        "--webrtc-server",
        "PROXY_WEBRTC_SERVER",
        "--srt-server",
        "PROXY_SRT_SERVER",
        "--system-api",
        "PROXY_SYSTEM_API",
        "--shards",
        "--cpus",
        "--origin-ttl",
        "PROXY_ORIGIN_SERVER_TTL",
        "--load-balancer",
        "PROXY_LOAD_BALANCER_TYPE",
        "--default-backend-enabled",
        "PROXY_DEFAULT_BACKEND_ENABLED",
        "PROXY_DEFAULT_BACKEND_IP",
        "PROXY_DEFAULT_BACKEND_RTMP",
        "PROXY_DEFAULT_BACKEND_HTTP",
        "PROXY_DEFAULT_BACKEND_API",
        "PROXY_DEFAULT_BACKEND_RTC",
        "PROXY_DEFAULT_BACKEND_SRT",
        "PROXY_REDIS_HOST",
        "PROXY_REDIS_PORT",
        "PROXY_REDIS_PASSWORD",
        "PROXY_REDIS_DB",
        "PROXY_REDIS_KEY_PREFIX",
        "--log-level",
        "--log-format",
        "--relay",
        "--grace-quit-timeout",
        "PROXY_GRACE_QUIT_TIMEOUT",
        "--force-quit-timeout",
        "PROXY_FORCE_QUIT_TIMEOUT",
        "PROXY_HTTP_API_AUTH_ENABLED",
        "PROXY_HTTP_API_AUTH_TYPE",
        "PROXY_HTTP_API_AUTH_TOKEN",
        "--register-allow",
        "STREAMGATE_REGISTER_ALLOW",
        "--metrics-token",
        "STREAMGATE_METRICS_TOKEN",
        "--max-origins",
        "STREAMGATE_MAX_ORIGINS",
        "--env-file",
        "--grpc-max-connections",
        "STREAMGATE_GRPC_MAX_CONNECTIONS",
        "--grpc-idle-timeout",
        "STREAMGATE_GRPC_IDLE_TIMEOUT",
        "--grpc-tls",
        "STREAMGATE_GRPC_TLS",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn a_bad_value_from_the_environment_stops_startup_with_one_line() {
    let dir = TempDir::new("badenv");
    let mut cmd = proxy_command(&dir, &[]);
    cmd.env("PROXY_ORIGIN_SERVER_TTL", "five minutes");
    let (code, text) = run_to_exit(&mut cmd);
    assert_eq!(code, 2, "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("--origin-ttl") && text.contains("PROXY_ORIGIN_SERVER_TTL"), "{text}");
    assert!(text.contains("\"five minutes\" from the environment"), "{text}");
}

#[test]
fn a_bad_network_list_stops_startup_naming_the_flag() {
    let dir = TempDir::new("badallow");
    let mut cmd = proxy_command(&dir, &[]);
    cmd.env("STREAMGATE_REGISTER_ALLOW", "10.0.0.0/33");
    let (code, text) = run_to_exit(&mut cmd);
    assert_eq!(code, 2, "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("--register-allow") && text.contains("STREAMGATE_REGISTER_ALLOW"), "{text}");
    assert!(text.contains("/33"), "{text}");
}

#[test]
fn dotenv_fills_in_but_never_overrides_the_environment() {
    let dir = TempDir::new("dotenv");
    // The .env asks for a TTL of 7s, a bad RTMP address and the System API's address; the real
    // environment's RTMP wins, so startup succeeds only if the environment took precedence.
    let env_text = "# test\nexport PROXY_ORIGIN_SERVER_TTL=7s\nPROXY_RTMP_SERVER='not an address'\nPROXY_SYSTEM_API=\"127.0.0.1:0\" # api\n";
    std::fs::write(dir.0.join(".env"), env_text).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.current_dir(&dir.0);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PROXY_") || k.starts_with("STREAMGATE_")) {
        cmd.env_remove(k);
    }
    for (flag, _) in LISTENERS.iter().filter(|(f, _)| !["--rtmp-server", "--system-api"].contains(f)) {
        cmd.args([*flag, "127.0.0.1:0"]);
    }
    cmd.env("PROXY_RTMP_SERVER", "127.0.0.1:0");
    let log = dir.0.join("log");
    let mut child = cmd.stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let line = wait_started(&log);
    assert!(started_port(&line, "RTMP").is_some_and(|p| p != 0), "{line}");
    assert!(line.contains("origin TTL 7s"), "{line}");
    let api = started_port(&line, "System API").unwrap();
    assert_eq!(get(&format!("127.0.0.1:{api}"), "/api/v1/versions").status, 200);
    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
}

#[test]
fn default_backend_is_registered_at_startup() {
    let p = Proxy::start_with(&[], &[("PROXY_DEFAULT_BACKEND_ENABLED", "on"), ("PROXY_DEFAULT_BACKEND_RTMP", "19350")]);
    let origins = get(&p.api_addr(), "/api/v1/origins").json();
    let list = origins["origins"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{origins}");
    assert_eq!(list[0]["device_id"], "default");
    assert_eq!(list[0]["endpoints"]["rtmp"], serde_json::json!(["19350"]));
    assert_eq!(list[0]["endpoints"]["http"], serde_json::json!([]));
    assert_eq!(list[0]["alive"], true);
}

#[test]
fn a_taken_port_stops_startup_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("taken");
    let (code, text) = run_to_exit(&mut proxy_command(&dir, &["--system-api", &addr]));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("--system-api") && text.contains("PROXY_SYSTEM_API"), "{text}");
    // RTMP is bound by the shards with SO_REUSEPORT; a plain listener still conflicts.
    let (code, text) = run_to_exit(&mut proxy_command(&dir, &["--rtmp-server", &addr]));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("--rtmp-server") && text.contains("Address already in use"), "{text}");
}

#[test]
fn sigterm_exits_cleanly_and_json_logs_parse() {
    let p = Proxy::start(&["--log-format", "json", "--grace-quit-timeout", "1s", "--force-quit-timeout", "2s"]);
    let (status, took, text) = p.stop();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["time"].is_string() && v["level"].is_string() && v["msg"].is_string(), "{line}");
    }
    assert!(text.contains("SIGTERM received"), "{text}");
}

/// scripts/run.sh runs streamgate with its log through scripts/announce.sh, which passes the
/// log on and, once streamgate has started, prints every listener with the address it bound
/// and how to publish and play over RTMP, HTTP-FLV, HTTP-TS, HLS and SRT with those ports, and
/// over the TLS listeners when they are on. Here with port 0 everywhere, so every port printed
/// can only come from the startup line, in both log formats (the JSON run with every TLS
/// listener on, the text run with none); the log still passes through after the announcement
/// (the shutdown lines).
#[test]
fn announce_script_prints_every_listener_and_how_to_play() {
    let announce = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/announce.sh");
    const TLS: [&str; 3] = ["RTMPS", "HTTPS stream", "HTTPS API"];
    for (format, tls) in [("text", false), ("json", true)] {
        let dir = TempDir::new("announce");
        let out = dir.0.join("stderr.txt");
        let cert = tls.then(|| make_cert(&dir.0, "announce"));
        let mut flags = vec!["--log-format", format];
        if let Some(cert) = &cert {
            let (cert, key) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
            for flag in ["--rtmps-server", "--https-server", "--https-api"] {
                flags.extend([flag, "127.0.0.1:0"]);
            }
            flags.extend(["--tls-cert", cert, "--tls-key", key]);
        }
        let inner = proxy_command(&dir, &flags);
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c").arg(r#"exec "$@" 2> >("$0")"#).arg(announce).arg(inner.get_program()).args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.current_dir(&dir.0).stdout(Stdio::null()).stderr(std::fs::File::create(&out).unwrap());
        let mut child = cmd.spawn().unwrap();
        let text = || std::fs::read_to_string(&out).unwrap_or_default();
        let announced = wait_until(Duration::from_secs(20), || text().contains("Stop with Ctrl-C"));
        let line = wait_started(&out);
        signal(child.id(), "TERM");
        let _ = child.wait();
        assert!(announced, "{format}: no announcement:\n{}", text());
        let port = |name: &str| started_port(&line, name).unwrap_or_else(|| panic!("no {name} in {line}"));
        let mut want: Vec<String> =
            LISTENERS.iter().map(|(_, name)| format!("  {name:<12} 127.0.0.1:{}", port(name))).collect();
        want.extend([
            format!("curl -X POST http://127.0.0.1:{}/api/v1/srs/register", port("System API")),
            format!("-f flv rtmp://127.0.0.1:{}/live/demo", port("RTMP")),
            format!("ffplay http://127.0.0.1:{}/live/demo.flv", port("HTTP stream")),
            format!("ffplay http://127.0.0.1:{}/live/demo.ts", port("HTTP stream")),
            format!("ffplay http://127.0.0.1:{}/live/demo.m3u8", port("HTTP stream")),
            format!("ffplay 'srt://127.0.0.1:{}?streamid=#!::r=live/demo,m=request'", port("SRT")),
            format!("-f mpegts 'srt://127.0.0.1:{}?streamid=#!::r=live/demo,m=publish'", port("SRT")),
        ]);
        let tls_lines = || {
            let mut lines: Vec<String> =
                TLS.iter().map(|name| format!("  {name:<12} 127.0.0.1:{}", port(name))).collect();
            lines.extend([
                format!("ffplay rtmps://127.0.0.1:{}/live/demo", port("RTMPS")),
                format!("ffplay https://127.0.0.1:{}/live/demo.flv", port("HTTPS stream")),
                format!("https://127.0.0.1:{}/rtc/v1/whep/?app=live&stream=demo", port("HTTPS API")),
            ]);
            lines
        };
        if tls {
            want.extend(tls_lines());
        }
        let printed = text();
        for w in &want {
            assert!(printed.contains(w.as_str()), "{format}: {w:?} missing from:\n{printed}");
        }
        for name in TLS {
            assert_eq!(started_port(&line, name).is_some(), tls, "{format}: {name} in {line}");
        }
        assert_eq!(printed.contains("Over TLS"), tls, "{format}: TLS help only with TLS listeners:\n{printed}");
        assert!(!printed.contains("SRT needs an origin"), "{format}: stale text:\n{printed}");
        let after = |needle: &str| {
            let now = text();
            now.find("Stop with Ctrl-C").zip(now.find(needle)).is_some_and(|(a, b)| b > a)
        };
        assert!(
            wait_until(Duration::from_secs(5), || after("stopped")),
            "{format}: the log stopped at the announcement:\n{}",
            text()
        );
        assert!(printed.contains(line.as_str()), "{format}: the startup line itself passes through");
    }
}
