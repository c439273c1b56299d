use super::*;

fn url(u: &str) -> String {
    StreamKey::from_url(u).unwrap().to_string()
}

#[test]
fn build_stream_url_table() {
    assert_eq!(url("rtmp://example.com/live/stream"), "example.com/live/stream");
    assert_eq!(url("rtmp://example.com:1935/live/stream"), "example.com/live/stream");
    assert_eq!(url("rtmp://127.0.0.1/live/stream"), "__defaultVhost__/live/stream");
    assert_eq!(url("rtmp://localhost:1935/live/stream"), "__defaultVhost__/live/stream");
    assert_eq!(url("rtmp://[::1]:1935/live/stream"), "__defaultVhost__/live/stream");
    assert_eq!(url("rtmp://example.com/live/stream?token=1"), "example.com/live/stream");
    assert_eq!(url("srt://localhost/live/livestream"), "__defaultVhost__/live/livestream");
}

#[test]
fn rtmp_keys() {
    let k = |tc: &str, name: &str| StreamKey::from_rtmp(tc, name).unwrap().to_string();
    assert_eq!(k("rtmp://localhost:11935/live", "livestream"), "__defaultVhost__/live/livestream");
    assert_eq!(k("rtmp://Example.COM/live", "s?token=abc"), "example.com/live/s");
    assert_eq!(k("rtmp://example.com:1935/live/", "s"), "example.com/live/s");
    // The query names the vhost; it never becomes part of the app.
    assert_eq!(k("rtmp://127.0.0.1/live?vhost=v.example.com", "s"), "v.example.com/live/s");
    assert_eq!(k("rtmp://127.0.0.1/live", "s?vhost=v.example.com"), "v.example.com/live/s");
    assert_eq!(k("rtmp://127.0.0.1/a/b", "c"), "__defaultVhost__/a/b/c");
    assert!(StreamKey::from_rtmp("live", "s").is_err());
    assert!(StreamKey::from_rtmp("rtmp://h/live", "").is_err());
}

#[test]
fn http_keys() {
    let k = |host: Option<&str>, path: &str, q: Option<&str>| StreamKey::from_http(host, path, q).unwrap().to_string();
    assert_eq!(k(Some("example.com:8080"), "/live/stream.flv", None), "example.com/live/stream");
    assert_eq!(k(Some("example.com:8080"), "/x.flv", Some("app=live&stream=foo")), "example.com/live/foo");
    assert_eq!(k(Some("localhost:18080"), "/live/livestream.m3u8", None), "__defaultVhost__/live/livestream");
    assert_eq!(k(None, "/live/livestream.flv", None), "__defaultVhost__/live/livestream");
    assert_eq!(k(Some("127.0.0.1:18080"), "/live/a%20b.flv", None), "__defaultVhost__/live/a b");
    assert_eq!(k(Some("h"), "/live/v1.2/s.ts", None), "__defaultVhost__/live/v1.2/s");
}

#[test]
fn same_key_for_every_protocol_of_one_stream() {
    // §13 item 7 and the Host-without-port fix.
    let rtmp = StreamKey::from_rtmp("rtmp://localhost:11935/live", "livestream").unwrap();
    let flv = StreamKey::from_http(Some("localhost:18080"), "/live/livestream.flv", None).unwrap();
    let whip =
        StreamKey::from_http(Some("localhost:11985"), "/rtc/v1/whip/", Some("app=live&stream=livestream")).unwrap();
    let srt = StreamKey::from_url("srt://localhost/live/livestream").unwrap();
    for audio in ["/live/livestream.mp3", "/live/livestream.aac"] {
        assert_eq!(rtmp, StreamKey::from_http(Some("localhost:18080"), audio, None).unwrap(), "{audio}");
    }
    assert_eq!(rtmp, flv);
    assert_eq!(rtmp, whip);
    assert_eq!(rtmp, srt);
    let rtmp = StreamKey::from_rtmp("rtmp://live.example.com/live", "s").unwrap();
    let http = StreamKey::from_http(Some("live.example.com"), "/live/s.flv", None).unwrap();
    assert_eq!(rtmp, http, "a Host header without a port keeps its vhost");
}

#[test]
fn bounds_and_garbage() {
    let long = format!("rtmp://h/live/{}", "x".repeat(2000));
    assert_eq!(StreamKey::from_url(&long), Err(KeyError::TooLong));
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
    assert_eq!(percent_decode("%41%4a"), "AJ");
    assert_eq!(percent_decode("%"), "%");
    for junk in ["", "://", "rtmp://", "rtmp:///", "x://h", "rtmp://h/live", "rtmp://@/a/b%"] {
        let _ = StreamKey::from_url(junk);
    }
}
