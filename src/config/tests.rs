//! Flag validation. Environment fallbacks and `.env` precedence are tested against the real
//! binary in `tests/startup.rs`, where each run gets its own environment.

use super::*;

fn args(list: &[&str]) -> Vec<OsString> {
    std::iter::once("streamgate").chain(list.iter().copied()).map(OsString::from).collect()
}

fn load(list: &[&str]) -> Result<Config, String> {
    match Cli::parse_args(&args(list)) {
        Ok(cli) => cli.validate(&[0, 1]).map_err(|e| e.to_string()),
        Err(LoadError::Invalid(e)) => Err(e.to_string()),
        Err(LoadError::Clap(e)) => Err(format!("clap: {e}")),
    }
}

#[test]
fn defaults_are_the_srs_proxy_ports() {
    let c = load(&[]).unwrap();
    assert_eq!(c.listen.rtmp.to_string(), "0.0.0.0:11935");
    assert_eq!(c.listen.http_stream.to_string(), "0.0.0.0:18080");
    assert_eq!(c.listen.http_api.to_string(), "0.0.0.0:11985");
    assert_eq!(c.listen.webrtc.to_string(), "0.0.0.0:18000");
    assert_eq!(c.listen.srt.to_string(), "0.0.0.0:20080");
    assert_eq!(c.listen.system_api.to_string(), "0.0.0.0:12025");
    assert_eq!(c.origin_ttl, Duration::from_secs(300));
    assert_eq!(c.grace_quit_timeout, Duration::from_secs(20));
    assert_eq!(c.force_quit_timeout, Duration::from_secs(30));
    assert_eq!(c.cpus, vec![0, 1]);
    assert_eq!(c.relay, RelayMode::Splice, "the relay perf/results favour");
    assert!(c.default_backend.is_none());
    assert!(c.register_token.is_none());
}

#[test]
fn bad_values_name_the_flag_and_the_variable() {
    let e = load(&["--rtmp-server", "abc"]).unwrap_err();
    assert!(e.contains("--rtmp-server") && e.contains("PROXY_RTMP_SERVER"), "{e}");
    assert!(e.contains("from the command line") && e.contains("expected PORT"), "{e}");
    let e = load(&["--origin-ttl=5 minutes"]).unwrap_err();
    assert!(e.contains("--origin-ttl") && e.contains("PROXY_ORIGIN_SERVER_TTL"), "{e}");
    let e = load(&["--relay", "memcpy"]).unwrap_err();
    assert!(e.contains("--relay") && e.contains("splice, copy"), "{e}");
    let e = load(&["--origin-ttl", "0s"]).unwrap_err();
    assert!(e.contains("PROXY_ORIGIN_SERVER_TTL") && e.contains("longer than 0s"), "{e}");
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn shards_and_cpus() {
    assert_eq!(load(&["--shards", "1"]).unwrap().cpus, vec![0]);
    assert_eq!(load(&["--cpus", "1"]).unwrap().cpus, vec![1]);
    assert!(load(&["--shards", "3"]).unwrap_err().contains("only 2 CPUs"));
    assert!(load(&["--shards", "0"]).unwrap_err().contains("at least 1"));
    assert!(load(&["--cpus", "0,5"]).unwrap_err().contains("CPU 5"));
    assert!(load(&["--cpus", "0,1", "--shards", "1"]).unwrap_err().contains("agree"));
}

#[test]
fn auth_needs_bearer_and_a_token() {
    let e = load(&["--http-api-auth-enabled", "on"]).unwrap_err();
    assert!(e.contains("PROXY_HTTP_API_AUTH_TYPE"), "{e}");
    let e = load(&["--http-api-auth-enabled", "on", "--http-api-auth-type", "basic"]).unwrap_err();
    assert!(e.contains("only bearer"), "{e}");
    let e = load(&["--http-api-auth-enabled=on", "--http-api-auth-type=bearer"]).unwrap_err();
    assert!(e.contains("PROXY_HTTP_API_AUTH_TOKEN"), "{e}");
    let c = load(&["--http-api-auth-enabled=on", "--http-api-auth-type=Bearer", "--http-api-auth-token=s3"]).unwrap();
    assert_eq!(c.register_token.as_deref(), Some("s3"));
}

#[test]
fn default_backend() {
    let c = load(&["--default-backend-enabled", "on", "--default-backend-rtmp", "19350"]).unwrap();
    let b = c.default_backend.unwrap();
    assert_eq!(b.ip.to_string(), "127.0.0.1");
    assert_eq!(b.rtmp, "19350");
    assert_eq!(b.http, None, "the SRS proxy sets no HTTP default");
    assert_eq!(b.api.as_deref(), Some("1985"));
    let e = load(&["--default-backend-enabled=on", "--default-backend-ip=origin"]).unwrap_err();
    assert!(e.contains("PROXY_DEFAULT_BACKEND_IP"), "{e}");
}

#[test]
fn quit_timeouts_must_agree() {
    let e = load(&["--grace-quit-timeout", "40s"]).unwrap_err();
    assert!(e.contains("--force-quit-timeout") && e.contains("shorter"), "{e}");
    let c = load(&["--grace-quit-timeout", "1s", "--force-quit-timeout", "2s"]).unwrap();
    assert_eq!(c.force_quit_timeout, Duration::from_secs(2));
}

#[test]
fn relay_batch_is_20ms_by_default_and_bounded() {
    assert_eq!(load(&[]).unwrap().relay_batch, Duration::from_millis(20));
    assert_eq!(load(&["--relay-batch", "0s"]).unwrap().relay_batch, Duration::ZERO);
    assert_eq!(load(&["--relay-batch", "10ms"]).unwrap().relay_batch, Duration::from_millis(10));
    let e = load(&["--relay-batch", "1s"]).unwrap_err();
    assert!(e.contains("--relay-batch") && e.contains("STREAMGATE_RELAY_BATCH") && e.contains("100ms"), "{e}");
}

#[test]
fn redis_mode_and_failover_settings() {
    let c = load(&["--load-balancer", "redis", "--redis-port", "6380", "--redis-key-prefix", " fleet "]).unwrap();
    assert_eq!(c.load_balancer, LoadBalancer::Redis);
    assert_eq!((c.redis.port, c.redis.key_prefix.as_deref(), c.redis.password.as_deref()), (6380, Some("fleet"), None));
    let e = load(&["--load-balancer", "redis", "--redis-host", " "]).unwrap_err();
    assert!(e.contains("--redis-host") && e.contains("PROXY_REDIS_HOST"), "{e}");
    let e = load(&["--load-balancer", "cluster"]).unwrap_err();
    assert!(e.contains("PROXY_LOAD_BALANCER_TYPE") && e.contains("memory, redis"), "{e}");
    let c = load(&[]).unwrap();
    assert_eq!((c.origin_quarantine, c.origin_max_load_centi), (Duration::from_secs(15), Some(200)));
    assert_eq!(load(&["--origin-max-load", "0"]).unwrap().origin_max_load_centi, None);
    assert_eq!(load(&["--origin-max-load", "1.5"]).unwrap().origin_max_load_centi, Some(150));
    let e = load(&["--origin-max-load=-1"]).unwrap_err();
    assert!(e.contains("STREAMGATE_ORIGIN_MAX_LOAD"), "{e}");
    let e = load(&["--origin-quarantine", "0s"]).unwrap_err();
    assert!(e.contains("STREAMGATE_ORIGIN_QUARANTINE"), "{e}");
}

#[test]
fn every_flag_has_help_and_a_variable() {
    for arg in Cli::command().get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        assert!(arg.get_help().is_some(), "--{id} has no help text");
        assert!(arg.get_env().is_some(), "--{id} has no environment variable");
    }
}

#[test]
fn default_backend_endpoints_are_checked_at_startup() {
    let e = load(&["--default-backend-enabled=on", "--default-backend-rtc=udp://x"]).unwrap_err();
    assert!(e.contains("PROXY_DEFAULT_BACKEND_RTC") && e.contains("not a port"), "{e}");
}

#[test]
fn the_edge_is_on_by_default_pulls_auto_and_merges_writes_for_40ms_at_most_a_second() {
    let defaults = load(&[]).unwrap().edge;
    assert!(defaults.enabled);
    assert_eq!(defaults.pull, crate::config::edge::EdgePull::Auto);
    assert_eq!(defaults.merge_write, Duration::from_millis(40));
    assert!(!load(&["--edge", "off"]).unwrap().edge.enabled);
    assert_eq!(load(&["--edge-pull", "http-flv"]).unwrap().edge.pull, crate::config::edge::EdgePull::HttpFlv);
    assert_eq!(load(&["--edge-merge-write", "0s"]).unwrap().edge.merge_write, Duration::ZERO);
    assert_eq!(load(&["--edge-merge-write", "100ms"]).unwrap().edge.merge_write, Duration::from_millis(100));
    let e = load(&["--edge-merge-write", "2s"]).unwrap_err();
    assert!(e.contains("--edge-merge-write") && e.contains("STREAMGATE_EDGE_MERGE_WRITE"), "{e}");
}

#[test]
fn stall_timeout_defaults_to_30s_and_is_at_least_a_second() {
    assert_eq!(load(&[]).unwrap().stall_timeout, Duration::from_secs(30));
    assert_eq!(load(&["--stall-timeout", "2s"]).unwrap().stall_timeout, Duration::from_secs(2));
    let e = load(&["--stall-timeout", "500ms"]).unwrap_err();
    assert!(e.contains("--stall-timeout") && e.contains("STREAMGATE_STALL_TIMEOUT") && e.contains("1s"), "{e}");
}

#[test]
fn grpc_limits_have_defaults_and_refuse_zero() {
    let c = load(&[]).unwrap();
    assert_eq!((c.grpc_max_connections, c.grpc_idle_timeout), (1024, Duration::from_secs(60)));
    let c = load(&["--grpc-max-connections", "8", "--grpc-idle-timeout", "1m30s"]).unwrap();
    assert_eq!((c.grpc_max_connections, c.grpc_idle_timeout), (8, Duration::from_secs(90)));
    let e = load(&["--grpc-max-connections", "0"]).unwrap_err();
    assert!(e.contains("--grpc-max-connections") && e.contains("STREAMGATE_GRPC_MAX_CONNECTIONS"), "{e}");
    assert_eq!(e.lines().count(), 1);
    let e = load(&["--grpc-max-connections", "many"]).unwrap_err();
    assert!(e.contains("STREAMGATE_GRPC_MAX_CONNECTIONS") && e.contains("\"many\""), "{e}");
    let e = load(&["--grpc-idle-timeout", "0s"]).unwrap_err();
    assert!(e.contains("--grpc-idle-timeout") && e.contains("STREAMGATE_GRPC_IDLE_TIMEOUT"), "{e}");
}

#[test]
fn registration_is_loopback_only_unless_told_otherwise() {
    let c = load(&[]).unwrap();
    assert_eq!(c.register_allow, Some(CidrList::loopback()), "auth off: loopback only");
    let auth = ["--http-api-auth-enabled=on", "--http-api-auth-type=bearer", "--http-api-auth-token=t"];
    assert_eq!(load(&auth).unwrap().register_allow, None, "auth on: any peer with the token");
    let c = load(&["--register-allow", "10.0.0.0/8, 192.0.2.7"]).unwrap();
    assert_eq!(c.register_allow.unwrap().to_string(), "10.0.0.0/8, 192.0.2.7/32");
    let mut with_list = auth.to_vec();
    with_list.extend(["--register-allow", "fd00::/8"]);
    assert_eq!(load(&with_list).unwrap().register_allow.unwrap().to_string(), "fd00::/8", "auth on: both");
    let e = load(&["--register-allow", "10.0.0.0/33"]).unwrap_err();
    assert!(e.contains("--register-allow") && e.contains("STREAMGATE_REGISTER_ALLOW") && e.contains("/33"), "{e}");
    assert_eq!(e.lines().count(), 1);
    let e = load(&["--register-allow", "origin.example"]).unwrap_err();
    assert!(e.contains("not a network"), "{e}");
}

#[test]
fn metrics_token_and_max_origins() {
    let c = load(&[]).unwrap();
    assert_eq!((c.metrics_token, c.max_origins), (None, 10_000));
    let c = load(&["--metrics-token", "m", "--max-origins", "50"]).unwrap();
    assert_eq!((c.metrics_token.as_deref(), c.max_origins), (Some("m"), 50));
    assert_eq!(load(&["--metrics-token", " "]).unwrap().metrics_token, None, "empty is none, like the other tokens");
    let e = load(&["--max-origins", "0"]).unwrap_err();
    assert!(e.contains("--max-origins") && e.contains("STREAMGATE_MAX_ORIGINS"), "{e}");
}

#[test]
fn bounded_tables_have_flags_with_defaults_and_limits() {
    let c = load(&[]).unwrap();
    let a = &c.access;
    assert_eq!((a.webrtc_ice_sessions, a.webrtc_ice_ttl), (100_000, Duration::from_secs(3600)));
    assert_eq!((a.webrtc_media_timeout, a.callback_max_notices), (Duration::from_secs(30), 4096));
    assert_eq!(c.local_max_streams, 100_000);
    assert_eq!((a.hls_session_timeout, a.hls_max_sessions), (Duration::from_secs(30), 100_000));
    let c = load(&[
        "--webrtc-ice-sessions",
        "10",
        "--webrtc-ice-ttl",
        "5m",
        "--webrtc-media-timeout",
        "2s",
        "--callback-max-notices",
        "1",
        "--local-max-streams",
        "3",
    ])
    .unwrap();
    let a = &c.access;
    assert_eq!((a.webrtc_ice_sessions, a.webrtc_ice_ttl), (10, Duration::from_secs(300)));
    assert_eq!((a.webrtc_media_timeout, a.callback_max_notices), (Duration::from_secs(2), 1));
    assert_eq!(c.local_max_streams, 3);
    for (flag, value, env) in [
        ("--webrtc-ice-sessions", "0", "STREAMGATE_WEBRTC_ICE_SESSIONS"),
        ("--webrtc-media-timeout", "500ms", "STREAMGATE_WEBRTC_MEDIA_TIMEOUT"),
        ("--webrtc-media-timeout", "2h", "STREAMGATE_WEBRTC_MEDIA_TIMEOUT"),
        ("--webrtc-ice-ttl", "10s", "STREAMGATE_WEBRTC_ICE_TTL"),
        ("--callback-max-notices", "0", "STREAMGATE_CALLBACK_MAX_NOTICES"),
        ("--local-max-streams", "0", "STREAMGATE_LOCAL_MAX_STREAMS"),
        ("--local-max-streams", "2000000", "STREAMGATE_LOCAL_MAX_STREAMS"),
        ("--hls-session-timeout", "0s", "STREAMGATE_HLS_SESSION_TIMEOUT"),
        ("--hls-max-sessions", "0", "STREAMGATE_HLS_MAX_SESSIONS"),
    ] {
        let e = load(&[flag, value]).unwrap_err();
        assert!(e.contains(flag) && e.contains(env), "{flag} {value}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = load(&["--webrtc-ice-ttl", "10s"]).unwrap_err();
    assert!(e.contains("shorter than --webrtc-media-timeout"), "{e}");
}
