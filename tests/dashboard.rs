//! The dashboard in real browsers: headless Chromium (Debian's `chromium`, or
//! `$STREAMGATE_TEST_CHROMIUM`) driven over the DevTools protocol by `tests/dashboard/cdp.py`,
//! and headless Firefox (Debian's `firefox-esr`, or `$STREAMGATE_TEST_FIREFOX`) over WebDriver
//! BiDi by `tests/dashboard/bidi.py`, against the real binary, an nginx-rtmp HLS origin and an
//! ffmpeg publisher. Every player the tests start must also leave no error in its on-page note
//! (the players report there, not to the console).
//!
//! - `a_published_stream_shows_up_plays_and_can_be_disconnected`: the page loads with no
//!   console error; a stream published through the proxy appears within 3 s (of its publish
//!   session opening at the proxy) with its origin and a bit rate, the same as
//!   `/api/v1/streams` says; the page's HLS player plays it (`currentTime` advances), so does
//!   its HTTP-FLV player (the origin's recording so far); the page fits a phone's width; its
//!   Disconnect button ends the publisher's session. Screenshots go to `target/tmp/dashboard/`
//!   (desktop.png, phone.png).
//! - `firefox_shows_and_plays_the_stream_and_fits_a_phone`: the same page in Firefox: no
//!   console error, the stream shows, its HLS and HTTP-FLV players play, no horizontal scroll
//!   at 390 px (firefox-desktop.png, firefox-phone.png).
//! - `the_ladder_shows_its_rungs_and_the_abr_player_plays_it`: with `--transcode on` (two small
//!   rungs), the stream's card shows the ladder's rungs and its ABR player plays
//!   `/streams/NAME/master.m3u8` with hls.js (ladder.png).
//! - `with_auth_on_the_page_asks_for_the_token_and_its_actions_use_it`: the page asks for the
//!   token before its first request, then shows the origins; its Drain and Unregister buttons
//!   work with the token, and the action routes answer 401 without it.
//! - `the_webrtc_player_plays_over_whep`: the page's WebRTC player (WHEP from the browser)
//!   plays through the proxy from an aiortc origin.
//! - `the_pages_routes_and_a_disconnect_of_an_srt_publisher`: no browser; the files' headers,
//!   `/api/v1/listeners`, Disconnect's answers, and Disconnect ending a UDP (SRT) session.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::http_peers::{NginxHls, origin_body_http, publish_short_gop};
use common::*;
use serde_json::{Value, json};

/// What the page must show a new stream within (the issue's bound).
const APPEARS_WITHIN: Duration = Duration::from_secs(3);

/// A headless browser behind its driver script (tests/dashboard/cdp.py for Chromium,
/// bidi.py for Firefox), both answering the same JSON-lines commands; quits when dropped.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Prefixes the screenshots' names ("" for Chromium, "firefox-").
    name: &'static str,
}

impl Browser {
    fn start() -> Browser {
        let chromium = std::env::var("STREAMGATE_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let python = python_with("json").expect("a python3");
        Self::spawn(&chromium, "chromium", python, "cdp.py", "")
    }

    fn firefox() -> Browser {
        let firefox = std::env::var("STREAMGATE_TEST_FIREFOX").unwrap_or_else(|_| "firefox-esr".into());
        let python = python_with("websockets").unwrap_or_else(|tried| {
            panic!("no Python with websockets ({tried}); scripts/test.sh installs it in target/py")
        });
        Self::spawn(&firefox, "firefox-esr", python, "bidi.py", "firefox-")
    }

    fn spawn(browser: &str, package: &str, python: PathBuf, driver: &str, name: &'static str) -> Browser {
        let found = Command::new(browser).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(found, "{browser} not found: install Debian's {package} (scripts/test.sh does)");
        let script = format!("{}/tests/dashboard/{driver}", env!("CARGO_MANIFEST_DIR"));
        // The drivers import lines.py beside them: no __pycache__ left in the source tree.
        let mut child = Command::new(python)
            .args([&script, browser])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the DevTools driver");
        let (stdin, stdout) = (child.stdin.take().unwrap(), BufReader::new(child.stdout.take().unwrap()));
        Browser { child, stdin, stdout, name }
    }

    fn call(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("write to the driver");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from the driver");
        let answer: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("driver said {line:?}"));
        assert_eq!(answer["ok"], true, "{command}: {answer}");
        answer["value"].clone()
    }

    fn open(&mut self, url: &str, width: u32, height: u32) {
        self.call(json!({ "cmd": "open", "url": url, "width": width, "height": height }));
    }

    fn eval(&mut self, expr: &str) -> Value {
        self.call(json!({ "cmd": "eval", "expr": expr }))
    }

    fn errors(&mut self) -> Vec<String> {
        serde_json::from_value(self.call(json!({ "cmd": "errors" }))).unwrap()
    }

    fn screenshot(&mut self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}{name}", self.name));
        self.call(json!({ "cmd": "screenshot", "path": path }));
        path
    }

    /// Clicks the stream card's `kind` player button (`hls`, `flv`, `whep`, `abr`) and waits until
    /// its video has played past `past` seconds and then 2 s more, with no error in the player's
    /// note; on failure, says what the player and its video show.
    fn play(&mut self, key: &str, kind: &str, past: f64, limit: Duration) -> Result<(), String> {
        let card = card(key);
        self.eval(&format!("{card}.querySelector('.play-{kind}').click()"));
        let video = format!("{card}.querySelector('video')");
        let time = |at: f64| {
            format!(
                "(() => {{ const v = {video}; \
                 return {card}.querySelector('.player').dataset.kind === '{kind}' && !!v && v.currentTime > {at}; }})()"
            )
        };
        let started = self.wait_for(&time(past), limit).is_some();
        let t1 = self.eval(&format!("{video}.currentTime")).as_f64().unwrap_or(0.0);
        let error = format!("{card}.querySelector('.player').dataset.error");
        if started && self.wait_for(&time(t1 + 2.0), Duration::from_secs(15)).is_some() {
            return match self.eval(&error) {
                Value::Null => Ok(()),
                e => Err(format!("the {kind} player played, and its note says {e}")),
            };
        }
        let state = self.eval(&format!(
            "(() => {{ const v = {video}; const s = v.srcObject; return {{ t: v.currentTime, ready: v.readyState, \
             webrtc: v.dataset.connection, paused: v.paused, note: {card}.querySelector('.player').textContent, \
             tracks: s ? s.getTracks().map((t) => t.kind + ' ' + t.readyState + (t.muted ? ' muted' : '')) : null }}; }})()"
        ));
        Err(format!(
            "the {kind} player started: {started}, then stuck near {t1}: {state}; console: {:?}",
            self.errors()
        ))
    }

    /// Polls `expr` in the page until it is true, up to `limit`; returns when it became true.
    fn wait_for(&mut self, expr: &str, limit: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if self.eval(expr) == true {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({ "cmd": "quit" }));
        let _ = self.child.wait();
    }
}

/// A JavaScript string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn card(key: &str) -> String {
    format!("document.querySelector('article[data-key=' + CSS.escape({}) + ']')", js(key))
}

/// A thread that polls `/api/v1/streams` (beside the page) and returns when `key` first had a
/// session of `kind` (`None` if not within 15 s).
fn session_opened(api: &str, key: &'static str, kind: &'static str) -> std::thread::JoinHandle<Option<Instant>> {
    let api = api.to_string();
    std::thread::spawn(move || {
        let open = || {
            let streams = get(&api, "/api/v1/streams").json();
            streams["streams"].as_array().unwrap().iter().any(|s| s["key"] == key && s["sessions"][kind] == 1)
        };
        wait_until(Duration::from_secs(15), open).then(Instant::now)
    })
}

fn post(api: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpReply {
    raw_http(api, &request("POST", path, headers, body))
}

/// A page expression: `key`'s card shows `origin` and an incoming bit rate above 0.
fn shown(key: &str, origin: &str) -> String {
    format!(
        "(() => {{ const c = {}; return !!c && c.querySelector('.origin').dataset.origin === {} \
         && Number(c.querySelector('[data-in-kbps]').dataset.inKbps) > 0; }})()",
        card(key),
        js(origin)
    )
}

/// Narrows the page to a phone's 390 px and says whether it fits: no horizontal scroll of the
/// page, nor inside a table's box (where columns would hide, the origins' buttons among them);
/// with the screenshot `phone.png` of it.
fn fits_a_phone(b: &mut Browser) -> (bool, PathBuf) {
    b.call(json!({ "cmd": "viewport", "width": 390, "height": 844, "mobile": true }));
    std::thread::sleep(Duration::from_millis(300));
    let fits = b.eval(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth && \
         [...document.querySelectorAll('.table-wrap')].every((w) => w.scrollWidth <= w.clientWidth)",
    );
    (fits == true, b.screenshot("phone.png"))
}

/// An nginx-rtmp origin, recording too (so it serves `/live/NAME.flv`, what it has recorded so
/// far, for the HTTP-FLV player), registered as `<server>-s-1` with a proxy started with
/// `flags`, and proven.
fn origin_and_proxy(server: &str, flags: &[&str]) -> (NginxHls, Proxy) {
    let origin = NginxHls::start_recording();
    let p = Proxy::start(flags);
    let api = p.api_addr();
    let reply = register(&api, &origin_body_http(server, "s", origin.rtmp_port, origin.http_port));
    assert_eq!(reply.status, 200, "{}", reply.body);
    wait_proven(&api, &[&format!("{server}-s-1")]);
    (origin, p)
}

/// `b` opens the page of the proxy's System API and waits for its first poll.
fn open_page(b: &mut Browser, p: &Proxy) {
    b.open(&format!("http://{}/", p.api_addr()), 1280, 900);
    b.wait_for("document.body.dataset.polls >= 1", Duration::from_secs(5)).expect("the page never polled");
}

#[test]
fn a_published_stream_shows_up_plays_and_can_be_disconnected() {
    // Players through the edge: its chunked HTTP-FLV body must end with its last chunk when
    // the operator disconnects the stream below (the browser logs a cut one as a network error).
    let (origin, p) = origin_and_proxy("dash", &["--edge", "on"]);
    let api = p.api_addr();
    let mut b = Browser::start();
    open_page(&mut b, &p);
    assert_eq!(b.eval("document.querySelector('tr[data-origin]').dataset.origin"), "dash-s-1");
    assert_eq!(b.eval("document.getElementById('auth').hidden"), true, "auth is off: no token asked for");

    let key = "__defaultVhost__/live/dash";
    let started = Instant::now();
    let mut publisher = publish_short_gop(&format!("rtmp://127.0.0.1:{}/live/dash", p.rtmp), 120);
    let watcher = session_opened(&api, key, "rtmp_publish");
    let appeared = b.wait_for(&shown(key, "dash-s-1"), Duration::from_secs(15)).map(|_| Instant::now());
    let published = watcher.join().unwrap();
    let (Some(appeared), Some(published)) = (appeared, published) else {
        panic!("published {published:?}, shown {appeared:?}: {}\n{}", publisher.describe(), p.log_text());
    };
    let took = appeared.saturating_duration_since(published);
    eprintln!(
        "the stream showed with its origin and bit rate {took:?} after its publish session opened ({:?} after ffmpeg started)",
        appeared - started
    );
    assert!(took <= APPEARS_WITHIN, "the stream took {took:?} (bound {APPEARS_WITHIN:?}) to show\n{}", p.log_text());
    // The page shows what the API route says.
    let listed = get(&api, "/api/v1/streams").json();
    let stream = listed["streams"].as_array().unwrap().iter().find(|s| s["key"] == key).unwrap().clone();
    assert_eq!(stream["origin"], "dash-s-1");
    let rate = b.eval(&format!("{}.querySelector('.rate-in').textContent", card(key)));
    assert!(rate.as_str().is_some_and(|r| r.ends_with("b/s")), "{rate}");

    // The HLS player, once the origin has segments; then the HTTP-FLV player (mpegts.js).
    assert!(wait_until(Duration::from_secs(20), || origin.segments("dash") >= 2), "no HLS segments at the origin");
    b.play(key, "hls", 0.0, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    let shot = b.screenshot("desktop.png");
    eprintln!("screenshot: {}", shot.display());
    b.play(key, "flv", 0.0, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));

    // A phone's width: nothing wider than the screen.
    let (fits, phone) = fits_a_phone(&mut b);
    assert!(fits, "the page is wider than a phone: {}", phone.display());

    // Disconnect: asks once more, then the publisher's session ends.
    let button = format!("{}.querySelector('.actions button.danger')", card(key));
    b.eval(&format!("{button}.click()"));
    assert_eq!(b.eval(&format!("{button}.textContent")), "Disconnect all?");
    b.eval(&format!("{button}.click()"));
    assert!(publisher.wait_timeout(Duration::from_secs(10)).is_some(), "the publisher was not disconnected");
    assert!(
        wait_until(Duration::from_secs(3), || p.log_text().contains("an operator disconnected the stream's sessions")),
        "{}",
        p.log_text()
    );

    let errors = b.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

#[test]
fn with_auth_on_the_page_asks_for_the_token_and_its_actions_use_it() {
    let token = "t0k3n";
    let p = Proxy::start(&["--http-api-auth-enabled=on", "--http-api-auth-type=bearer", "--http-api-auth-token=t0k3n"]);
    let api = p.api_addr();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
    for server in ["one", "two"] {
        let reply = post(&api, "/api/v1/srs/register", &auth, &origin_body_http(server, "s", 1935, 8080));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // Without the token (or with a wrong one) the actions answer 401 and change nothing
    // (tests/api_security.rs checks the views, `/api/v1/listeners` among them).
    let json_only = [("Content-Type", "application/json")];
    let wrong = [("Authorization", "Bearer wrong"), ("Content-Type", "application/json")];
    let actions = [
        ("/api/v1/origins/drain", r#"{"id":"one-s-1","draining":true}"#),
        ("/api/v1/srs/unregister", r#"{"id":"two-s-1"}"#),
        ("/api/v1/streams/disconnect", r#"{"key":"__defaultVhost__/live/none"}"#),
    ];
    for (path, body) in actions {
        for headers in [&json_only[..], &wrong[..]] {
            let reply = post(&api, path, headers, body);
            assert_eq!(reply.status, 401, "{path} with {headers:?}: {}", reply.body);
        }
    }
    let origins = raw_http(&api, &request("GET", "/api/v1/origins", &auth, "")).json();
    assert_eq!(origins["total"], 2, "{origins}");
    assert!(origins["origins"].as_array().unwrap().iter().all(|o| o["draining"] == false), "{origins}");

    let mut b = Browser::start();
    b.open(&format!("http://{api}/dashboard/"), 1280, 900);
    b.wait_for("document.getElementById('auth').hidden === false", Duration::from_secs(5))
        .expect("the page did not ask for the token");
    assert_eq!(b.eval("document.body.dataset.polls === undefined"), true);
    b.eval(&format!(
        "document.getElementById('token').value = {}; document.getElementById('token-use').click()",
        js(token)
    ));
    b.wait_for("document.querySelectorAll('tr[data-origin]').length === 2", Duration::from_secs(5))
        .expect("no origins shown with the token");

    let row = |id: &str| format!("document.querySelector('tr[data-origin=\"{id}\"]')");
    b.eval(&format!("{}.querySelector('button:not(.danger)').click()", row("one-s-1")));
    let draining = || {
        let origins = raw_http(&api, &request("GET", "/api/v1/origins", &auth, "")).json();
        origins["origins"].as_array().unwrap().iter().any(|o| o["id"] == "one-s-1" && o["draining"] == true)
    };
    assert!(wait_until(Duration::from_secs(3), draining), "Drain did not drain: {}", p.log_text());
    b.wait_for(&format!("{}.textContent.includes('draining')", row("one-s-1")), Duration::from_secs(3))
        .expect("the page does not show the origin draining");

    let unregister = format!("{}.querySelector('button.danger')", row("two-s-1"));
    b.eval(&format!("{unregister}.click()"));
    b.eval(&format!("{unregister}.click()"));
    b.wait_for(&format!("{} === null", row("two-s-1")), Duration::from_secs(5))
        .expect("the unregistered origin is still shown");
    let origins = raw_http(&api, &request("GET", "/api/v1/origins", &auth, "")).json();
    assert_eq!(origins["total"], 1, "{origins}");

    let errors = b.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// The routes the page relies on, without a browser: the files and their headers, the
/// listeners' URLs, and Disconnect's answers; and Disconnect ending a UDP session (SRT,
/// through `srt-live-transmit` as the origin), which the page test does not cover.
#[test]
fn the_pages_routes_and_a_disconnect_of_an_srt_publisher() {
    use common::udp_peers::{SrtRelayOrigin, UdpProxy, origin_body_udp, publish_srt};
    let origin = SrtRelayOrigin::start();
    let proxy = UdpProxy::start(&["--http-server", "0.0.0.0:0"]);
    let api = proxy.p.api_addr();

    let page = get(&api, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-auth=\"off\""), "{}", page.body);
    let csp = page.header("Content-Security-Policy").expect("a CSP");
    let http_stream = format!("http://127.0.0.1:{}", proxy.p.http);
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains(&format!("connect-src 'self' {http_stream} http://127.0.0.1:{}", proxy.http_api)), "{csp}");
    assert_eq!(get(&api, "/dashboard/").body, page.body);
    assert_eq!(get(&api, "/dashboard").header("Location").as_deref(), Some("/dashboard/"));
    let hls = get(&api, "/dashboard/vendor/hls-1.7.4.min.js");
    assert_eq!((hls.status, hls.header("Content-Type").as_deref()), (200, Some("text/javascript; charset=utf-8")));
    assert_eq!(get(&api, "/dashboard/nothing.js").status, 404);
    assert_eq!(raw_http(&api, &request("POST", "/", &[], "")).status, 405);

    // Bound to every address, the HTTP stream listener is reached at the host the browser used.
    let l = raw_http(&api, &request("GET", "/api/v1/listeners", &[("X-Unused", "1")], "")).json();
    assert_eq!(l["urls"]["http_stream"], http_stream, "{l}");
    assert_eq!(l["urls"]["http_api"], format!("http://127.0.0.1:{}", proxy.http_api), "{l}");
    assert_eq!(l["listeners"]["srt"], format!("127.0.0.1:{}", proxy.srt), "{l}");

    let json = [("Content-Type", "application/json")];
    let disconnect = |body: &str| raw_http(&api, &request("POST", "/api/v1/streams/disconnect", &json, body));
    assert_eq!(disconnect("{}").status, 400);
    assert_eq!(disconnect("not json").status, 400);
    assert_eq!(disconnect(r#"{"key":"__defaultVhost__/live/none"}"#).status, 404);
    assert_eq!(get(&api, "/api/v1/streams/disconnect").status, 405);

    proxy.register(&origin_body_udp("srt-in", &[origin.input.to_string()], &[], &[]));
    let key = "__defaultVhost__/live/udp";
    let mut publisher = publish_srt(&proxy.srt_url("#!::r=live/udp,m=publish"), 60);
    let publishing = wait_until(Duration::from_secs(15), || proxy.sessions(key, "srt_publish") == 1);
    assert!(publishing, "no SRT publish session: {}\n{}", publisher.describe(), proxy.log());
    let answer = disconnect(&format!(r#"{{"key":"{key}"}}"#));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["sessions"], 1, "{}", answer.body);
    assert!(
        wait_until(Duration::from_secs(3), || proxy.sessions(key, "srt_publish") == 0),
        "the SRT session is still open: {}",
        proxy.log()
    );
    assert!(proxy.log().contains("an operator disconnected the stream's sessions"), "{}", proxy.log());
}

/// The page's WebRTC player: WHEP from the browser through the proxy to an aiortc origin
/// (`tests/webrtc/peer.py`, as `tests/webrtc_proxy.rs` uses it) that sends its newest WHIP
/// publisher's video to its WHEP players. The origin has two sites (one session each), so the
/// WHIP publish (through the proxy) lands on one and the stream the browser plays on the other,
/// named so by the rendezvous hash; an aiortc WHEP player makes that stream known first, and
/// the browser's session takes its place at the origin. The video element plays
/// (`currentTime` advances) with no console error.
#[test]
fn the_webrtc_player_plays_over_whep() {
    use common::udp_peers::{AiortcOrigin, UdpProxy, name_on, origin_body_udp, whep_play, whip_publish};
    let origin = AiortcOrigin::start(2);
    let proxy = UdpProxy::start(&[]);
    let (a, b) = (origin.sites[0], origin.sites[1]);
    proxy.register(&origin_body_udp("rtc-a", &[], &[a.api], &[format!("udp://0.0.0.0:{}", a.rtc)]));
    proxy.register(&origin_body_udp("rtc-b", &[], &[b.api], &[b.rtc.to_string()]));
    let ids = ["rtc-a-s-1", "rtc-b-s-1"];
    let (publish, play) =
        (name_on("__defaultVhost__", "pub", ids[0], &ids), name_on("__defaultVhost__", "play", ids[1], &ids));
    let wait = Duration::from_secs(30);
    let mut publisher = whip_publish(&proxy.rtc_url("whip", &publish), 60);
    publisher.wait_event("connected", wait).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    assert!(wait_until(Duration::from_secs(15), || origin.whip_frames() >= 10), "{}", proxy.log());
    let mut first = whep_play(&proxy.rtc_url("whep", &play), 60);
    first.wait_event("connected", wait).unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));

    let key = format!("__defaultVhost__/live/{play}");
    let mut b = Browser::start();
    b.open(&format!("http://{}/", proxy.p.api_addr()), 1280, 900);
    b.wait_for(&format!("{} !== null", card(&key)), Duration::from_secs(5)).expect("the WHEP stream is not shown");
    b.play(&key, "whep", 1.0, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", origin.stats(), proxy.log()));
    let errors = b.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// The same page in Firefox (WebDriver BiDi): no console error, the stream shows with its origin
/// and bit rate, its HLS and HTTP-FLV players play, and it fits a phone's width.
#[test]
fn firefox_shows_and_plays_the_stream_and_fits_a_phone() {
    let (origin, p) = origin_and_proxy("fox", &[]);
    let mut b = Browser::firefox();
    open_page(&mut b, &p);
    let key = "__defaultVhost__/live/fox";
    let mut publisher = publish_short_gop(&format!("rtmp://127.0.0.1:{}/live/fox", p.rtmp), 60);
    if b.wait_for(&shown(key, "fox-s-1"), Duration::from_secs(15)).is_none() {
        panic!("the stream is not shown: {}\n{}", publisher.describe(), p.log_text());
    }
    assert!(wait_until(Duration::from_secs(20), || origin.segments("fox") >= 2), "no HLS segments at the origin");
    b.play(key, "hls", 0.0, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    eprintln!("screenshot: {}", b.screenshot("desktop.png").display());
    b.play(key, "flv", 0.0, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    let (fits, phone) = fits_a_phone(&mut b);
    assert!(fits, "the page is wider than a phone in Firefox: {}", phone.display());
    let errors = b.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// `--transcode on` with a ladder of two small rungs (the 320x180 test signal's size and one
/// below it, 1 s segments, `--preset ultrafast`: cheap on 2 cores): the stream's card shows the
/// rungs `/api/v1/streams` lists, and its ABR player plays the master playlist with hls.js.
#[test]
fn the_ladder_shows_its_rungs_and_the_abr_player_plays_it() {
    let tmp = TempDir::new("dash-abr");
    let ladder = tmp.0.join("ladder.txt");
    std::fs::write(&ladder, "180p 320x180 25 300\n144p 256x144 25 150\n").unwrap();
    let (out, ladder) = (tmp.0.join("out").to_string_lossy().to_string(), ladder.to_string_lossy().to_string());
    let flags = ["--transcode", "on", "--transcode-dir", &out, "--ladder", &ladder, "--preset", "ultrafast"];
    let (_origin, p) =
        origin_and_proxy("abr", &[&flags[..], &["--segment-duration", "1s", "--transcode-grace", "2s"]].concat());
    let api = p.api_addr();
    let mut b = Browser::start();
    open_page(&mut b, &p);
    let key = "__defaultVhost__/live/abr";
    let mut publisher = publish_short_gop(&format!("rtmp://127.0.0.1:{}/live/abr", p.rtmp), 60);
    let rungs = format!("{}?.querySelector('.ladder').dataset.rungs === '180p 144p'", card(key));
    if b.wait_for(&rungs, Duration::from_secs(20)).is_none() {
        let streams = get(&api, "/api/v1/streams").body;
        panic!("the rungs are not shown: {streams}\n{}\n{}", publisher.describe(), p.log_text());
    }
    // What the route says.
    let listed = get(&api, "/api/v1/streams").json();
    let stream = listed["streams"].as_array().unwrap().iter().find(|s| s["key"] == key).unwrap().clone();
    let profiles: Vec<&str> =
        stream["transcode"]["profiles"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(profiles, ["180p", "144p"], "{stream}");
    assert_eq!(stream["transcode"]["master"], "/streams/abr/master.m3u8", "{stream}");
    assert_eq!(b.eval(&format!("{}.querySelector('.play-abr').hidden", card(key))), false);

    // The player, once every rung has two segments.
    let http = p.http_addr();
    let segments = |i: usize| {
        let playlist = get(&http, &format!("/streams/abr/media_{i}.m3u8"));
        playlist.body.lines().filter(|l| l.starts_with("#EXTINF:")).count()
    };
    assert!(wait_until(Duration::from_secs(30), || (0..2).all(|i| segments(i) >= 2)), "no ladder: {}", p.log_text());
    b.play(key, "abr", 0.0, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    let note = b.eval(&format!("{}.querySelector('.player .note').textContent", card(key)));
    let note = note.as_str().unwrap_or_default();
    assert!(note.contains("/streams/abr/master.m3u8") && note.contains("playing 1"), "{note}");
    eprintln!("screenshot: {}", b.screenshot("ladder.png").display());
    let errors = b.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
