use super::probes::ProbeLimits;
use super::*;
use proptest::prelude::*;
use std::net::IpAddr;

const RTMP_PLAY: (Protocol, Role) = (Protocol::Rtmp, Role::Play);

const TTL: Duration = Duration::from_secs(300);

fn reg(server: &str, service: &str, pid: &str) -> Registration {
    let body =
        format!(r#"{{"ip":"127.0.0.1","server":"{server}","service":"{service}","pid":"{pid}","rtmp":["1935"]}}"#);
    Registration::from_json(body.as_bytes()).unwrap()
}

fn key(s: &str) -> StreamKey {
    StreamKey::from_url(&format!("rtmp://127.0.0.1/live/{s}")).unwrap()
}

fn fixture_body(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/heartbeats/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap();
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let at = at.or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)).unwrap();
    raw[at..].to_vec()
}

#[test]
fn captured_srs_heartbeats_register() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    for name in ["srs7-bare-ports.http", "srs7-ip-port-listens.http", "srs7-with-summaries.http"] {
        let registration = Registration::from_json(&fixture_body(name)).unwrap();
        assert_eq!(r.register(registration, t0).unwrap(), Registered::New, "{name}");
    }
    let ids: Vec<_> = r.origins().map(|o| o.id.0.clone()).collect();
    assert_eq!(ids, ["vid-41ql43j-80f90c15-27940", "vid-41ql43j-x512581b-28883", "vid-gy87v58-i2c42w71-16388"]);
    let lo = r.origin(&OriginId("vid-41ql43j-80f90c15-27940".into())).unwrap();
    assert_eq!(lo.registration.rtmp[0].to_string(), "127.0.0.1:19351");
    assert_eq!(lo.registration.srt[0].to_string(), "udp://0.0.0.0:10081");
}

#[test]
fn reregister_refreshes_and_a_restart_is_a_new_origin() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    assert_eq!(r.register(reg("s", "a", "1"), t0).unwrap(), Registered::New);
    let later = t0 + Duration::from_secs(200);
    assert_eq!(r.register(reg("s", "a", "1"), later).unwrap(), Registered::Refreshed);
    let o = r.origin(&OriginId("s-a-1".into())).unwrap();
    assert_eq!((o.first_seen, o.last_seen), (t0, later));
    assert!(o.is_alive(t0 + Duration::from_secs(499), TTL));
    assert!(!o.is_alive(t0 + Duration::from_secs(500), TTL), "alive is strictly within the TTL");
    assert_eq!(r.register(reg("s", "b", "2"), later).unwrap(), Registered::New);
    assert_eq!(r.origins().count(), 2);
}

#[test]
fn claims_are_sticky_until_the_origin_dies() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    for i in 0..5 {
        r.register(reg("s", &i.to_string(), "1"), t0).unwrap();
    }
    let k = key("a");
    let first = r.claim(&k, None, t0).unwrap();
    let other = r.origins().find(|o| o.id != first.id).unwrap().id.clone();
    assert_eq!(r.claim(&k, Some(&other), t0).unwrap().id, first.id, "a pin beats a proposal");
    // Every origin but the pinned one keeps heart-beating; the pinned one dies.
    let t1 = t0 + TTL;
    for i in 0..5 {
        let reg = reg("s", &i.to_string(), "1");
        if reg.id() != first.id {
            r.register(reg, t1).unwrap();
        }
    }
    let second = r.claim(&k, None, t1).unwrap();
    assert_ne!(second.id, first.id, "a dead pinned origin is replaced on the next claim");
    assert_eq!(r.claim(&k, None, t1).unwrap().id, second.id);
}

#[test]
fn no_alive_origin_is_an_error() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    let err = r.claim(&key("a"), None, t0).unwrap_err();
    assert!(err.to_string().starts_with("no origin available for __defaultVhost__/live/a"), "{err}");
    r.register(reg("s", "a", "1"), t0).unwrap();
    assert!(r.claim(&key("a"), None, t0 + TTL).is_err(), "dead origins are never picked");
}

#[test]
fn tick_expires_forgets_and_unpins() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    r.register(reg("s", "a", "1"), t0).unwrap();
    r.register(reg("s", "b", "1"), t0).unwrap();
    assert_eq!(r.tick(t0), TickReport::default());
    let k = key("x");
    let pinned = r.claim(&k, None, t0).unwrap().id.clone();
    r.session_delta(&k, RTMP_PLAY, true, t0);
    let survivor = r.origins().find(|o| o.id != pinned).unwrap().registration.clone();
    r.register(survivor.clone(), t0 + TTL).unwrap();
    let report = r.tick(t0 + TTL);
    assert_eq!(report.expired, vec![pinned.clone()]);
    assert_eq!(report.unpinned, vec![(k.clone(), pinned.clone())]);
    assert!(r.tick(t0 + TTL).expired.is_empty(), "expiry is reported once");
    assert_eq!(r.tick(t0 + TTL * 2).forgotten, vec![pinned]);
    // An idle pin (no sessions) goes one TTL after it was made.
    r.register(survivor, t0 + TTL * 2).unwrap();
    let k2 = key("y");
    r.claim(&k2, None, t0 + TTL * 2).unwrap();
    assert!(r.tick(t0 + TTL * 2 + Duration::from_secs(299)).unpinned.is_empty());
    assert_eq!(r.tick(t0 + TTL * 3).unpinned.len(), 1);
}

#[test]
fn limits_bound_the_tables() {
    let mut r = Registry::new(TTL, Limits { max_origins: 2, max_streams: 1, ..Limits::default() });
    let t0 = Instant::now();
    r.register(reg("s", "a", "1"), t0).unwrap();
    r.register(reg("s", "b", "1"), t0).unwrap();
    // Full of unproven origins: a newcomer takes the place of one (see the eviction tests).
    assert_eq!(r.register(reg("s", "c", "1"), t0), Ok(Registered::Evicted(OriginId("s-a-1".into()))));
    probe_round(&mut r, t0, |_| true);
    assert_eq!(r.register(reg("s", "d", "1"), t0), Err(RegistryError::OriginsFull(2)), "full of proven origins");
    r.register(reg("s", "b", "1"), t0).expect("a refresh needs no room");
    r.claim(&key("a"), None, t0).unwrap();
    assert_eq!(r.claim(&key("b"), None, t0).unwrap_err(), RegistryError::PinsFull(1));
}

#[test]
fn rendezvous_spreads_keys_and_moves_few_on_change() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    for i in 0..4 {
        r.register(reg("s", &i.to_string(), "1"), t0).unwrap();
    }
    let snap = r.snapshot(t0);
    let mut counts = std::collections::HashMap::new();
    let keys: Vec<_> = (0..4000).map(|i| key(&i.to_string())).collect();
    for k in &keys {
        *counts.entry(snap.propose(k, t0).unwrap().id.clone()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 4);
    assert!(counts.values().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    r.register(reg("s", "4", "1"), t0).unwrap();
    let snap2 = r.snapshot(t0);
    let moved = keys.iter().filter(|k| snap.propose(k, t0).unwrap().id != snap2.propose(k, t0).unwrap().id).count();
    assert!((600..1000).contains(&moved), "about 1/5 of the keys move to the new origin, moved {moved}");
}

/// One step of the shard/control interleaving the property test explores.
#[derive(Clone, Debug)]
enum Op {
    /// Origin `o` sends a heartbeat.
    Heartbeat(u8),
    /// Time passes.
    Advance(u16),
    /// Shard `s` refreshes its snapshot from the registry.
    Refresh(u8),
    /// Shard `s` gets a connection for key `k`: propose from its (maybe stale) snapshot, claim.
    Connect(u8, u8),
    /// One session of key `k` closes.
    Disconnect(u8),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..4).prop_map(Op::Heartbeat),
        2 => (0u16..200).prop_map(Op::Advance),
        2 => (0u8..3).prop_map(Op::Refresh),
        6 => (0u8..3, 0u8..6).prop_map(|(s, k)| Op::Connect(s, k)),
        3 => (0u8..6).prop_map(Op::Disconnect),
        1 => Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// With picks from several shards holding stale snapshots, a stream key is never served by
    /// two origins at once: a claim returns a different origin than the key's previous claim
    /// only if that previous origin has been dead at some moment since, or the stream had no
    /// session at some moment since (an idle pin may expire).
    #[test]
    fn one_origin_per_stream_key(ops in proptest::collection::vec(op(), 1..200)) {
        let mut r = Registry::new(Duration::from_secs(300), Limits::default());
        let mut now = Instant::now();
        let mut snaps: Vec<Snapshot> = (0..3).map(|_| r.snapshot(now)).collect();
        // Per origin: how many times it has been seen dead (deaths only happen as time passes).
        let mut deaths: HashMap<OriginId, u32> = HashMap::new();
        let mut last: HashMap<u8, (OriginId, u32, u32)> = HashMap::new();
        // Per key: open sessions, and how many times that count fell to zero.
        let mut open: HashMap<u8, (u32, u32)> = HashMap::new();
        let note_deaths = |r: &Registry, now: Instant, deaths: &mut HashMap<OriginId, u32>, dead_before: &mut HashMap<OriginId, bool>| {
            for o in r.origins() {
                let dead = !o.is_alive(now, r.ttl());
                let was = dead_before.insert(o.id.clone(), dead).unwrap_or(false);
                if dead && !was {
                    *deaths.entry(o.id.clone()).or_default() += 1;
                }
            }
        };
        let mut dead_before = HashMap::new();
        for op in ops {
            match op {
                Op::Heartbeat(o) => {
                    r.register(reg("srv", &o.to_string(), "1"), now).unwrap();
                    note_deaths(&r, now, &mut deaths, &mut dead_before);
                }
                Op::Advance(s) => {
                    now += Duration::from_secs(s.into());
                    note_deaths(&r, now, &mut deaths, &mut dead_before);
                }
                Op::Refresh(s) => snaps[s as usize] = r.snapshot(now),
                Op::Tick => { r.tick(now); }
                Op::Disconnect(k) => {
                    let entry = open.entry(k).or_default();
                    if entry.0 > 0 {
                        r.session_delta(&key(&k.to_string()), RTMP_PLAY, false, now);
                        entry.0 -= 1;
                        if entry.0 == 0 {
                            entry.1 += 1;
                        }
                    }
                }
                Op::Connect(s, k) => {
                    let sk = key(&k.to_string());
                    let proposed = snaps[s as usize].propose(&sk, now).ok().map(|o| o.id.clone());
                    match r.claim(&sk, proposed.as_ref(), now) {
                        Ok(origin) => {
                            prop_assert!(origin.is_alive(now, r.ttl()), "claimed a dead origin");
                            let idle_epoch = open.get(&k).map_or(0, |e| e.1);
                            if let Some((prev, prev_deaths, prev_idle)) = last.get(&k) {
                                let died_since = deaths.get(prev).copied().unwrap_or(0) > *prev_deaths;
                                let idle_since = idle_epoch != *prev_idle;
                                prop_assert!(prev == &origin.id || died_since || idle_since,
                                    "key {} moved from {} (never dead or idle since) to {}", sk, prev, origin.id);
                            }
                            r.session_delta(&sk, RTMP_PLAY, true, now);
                            open.entry(k).or_default().0 += 1;
                            let d = deaths.get(&origin.id).copied().unwrap_or(0);
                            last.insert(k, (origin.id.clone(), d, idle_epoch));
                        }
                        Err(_) => prop_assert!(!r.origins().any(|o| o.is_alive(now, r.ttl()))),
                    }
                }
            }
        }
    }
}

/// The same property with real threads: shards claim through a shared registry (standing in
/// for the control thread's serialization) while origins keep registering.
#[test]
fn concurrent_claims_from_threads_agree() {
    use std::sync::Mutex;
    let registry = Arc::new(Mutex::new(Registry::new(TTL, Limits::default())));
    let t0 = Instant::now();
    for i in 0..8 {
        registry.lock().unwrap().register(reg("s", &i.to_string(), "1"), t0).unwrap();
    }
    let results: Vec<Vec<(u32, OriginId)>> = std::thread::scope(|scope| {
        let shards: Vec<_> = (0..4)
            .map(|shard| {
                let registry = registry.clone();
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..2000u32 {
                        let k = (i * 7 + shard * 13) % 97;
                        let snap = registry.lock().unwrap().snapshot(t0);
                        let sk = key(&k.to_string());
                        let proposal = snap.propose(&sk, t0).unwrap().id.clone();
                        let got = registry.lock().unwrap().claim(&sk, Some(&proposal), t0).unwrap();
                        out.push((k, got.id.clone()));
                    }
                    out
                })
            })
            .collect();
        let registry = registry.clone();
        scope.spawn(move || {
            for round in 0..200 {
                let i = round % 8;
                registry.lock().unwrap().register(reg("s", &i.to_string(), "1"), t0).unwrap();
            }
        });
        shards.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen: HashMap<u32, OriginId> = HashMap::new();
    for (k, id) in results.into_iter().flatten() {
        let first = seen.entry(k).or_insert_with(|| id.clone());
        assert_eq!(*first, id, "stream {k} was served by two origins");
    }
    assert_eq!(seen.len(), 97);
}

fn reg_at(server: &str, rtmp: u16) -> Registration {
    let body = format!(r#"{{"ip":"127.0.0.1","server":"{server}","service":"s","pid":"1","rtmp":["{rtmp}"]}}"#);
    Registration::from_json(body.as_bytes()).unwrap()
}

fn oid(server: &str) -> OriginId {
    OriginId(format!("{server}-s-1"))
}

/// Hands out every due probe and answers it: `reached(id)` decides.
fn probe_round(r: &mut Registry, now: Instant, reached: impl Fn(&OriginId) -> bool) -> Vec<(OriginId, ProbeOutcome)> {
    let due = r.due_probes(now);
    due.into_iter().map(|(id, addr)| (id.clone(), r.probe_done(&id, addr, reached(&id), now))).collect()
}

#[test]
fn unproven_origins_take_new_streams_only_while_no_proven_one_is_alive() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    for s in ["a", "b", "c"] {
        r.register(reg_at(s, 1935), t0).unwrap();
    }
    let early = r.claim(&key("early"), None, t0).unwrap().id.clone();
    assert!(!r.origin(&early).unwrap().proven(), "with no proven origin the unproven ones serve");
    let outcomes = probe_round(&mut r, t0, |id| *id == oid("b"));
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.contains(&(oid("b"), ProbeOutcome::Proven)));
    assert!(r.origin(&oid("b")).unwrap().proven() && !r.origin(&oid("a")).unwrap().proven());
    let snap = r.snapshot(t0);
    for i in 0..50 {
        let k = key(&format!("new{i}"));
        assert_eq!(snap.propose(&k, t0).unwrap().id, oid("b"), "shards propose the proven origin");
        // A shard's stale proposal of an unproven origin is overridden.
        assert_eq!(r.claim(&k, Some(&oid("a")), t0).unwrap().id, oid("b"));
    }
    assert_eq!(r.claim(&key("early"), None, t0).unwrap().id, early, "an existing pin is kept");
    // b stops heart-beating: new streams fall back to the unproven origins.
    let t1 = t0 + TTL;
    r.register(reg_at("a", 1935), t1).unwrap();
    r.register(reg_at("c", 1935), t1).unwrap();
    let fallback = r.claim(&key("late"), Some(&oid("c")), t1).unwrap();
    assert_eq!(fallback.id, oid("c"), "with no proven origin alive, a proposal of an unproven one stands");
}

#[test]
fn a_full_table_evicts_unproven_origins_never_proven_ones() {
    let mut r = Registry::new(TTL, Limits { max_origins: 3, ..Limits::default() });
    let t0 = Instant::now();
    r.register(reg_at("proven", 1935), t0).unwrap();
    r.register(reg_at("dead-end", 1936), t0).unwrap();
    probe_round(&mut r, t0, |id| *id == oid("proven"));
    let t1 = t0 + Duration::from_secs(1);
    r.register(reg_at("old", 1937), t1).unwrap();
    let t2 = t1 + Duration::from_secs(1);
    // The table is full: the failed one goes first, then the least recently heard.
    assert_eq!(r.register(reg_at("n1", 1938), t2).unwrap(), Registered::Evicted(oid("dead-end")));
    let t3 = t2 + Duration::from_secs(1);
    r.register(reg_at("n1", 1938), t3).unwrap(); // a heartbeat moves n1 behind "old"
    assert_eq!(r.register(reg_at("n2", 1939), t3).unwrap(), Registered::Evicted(oid("old")));
    assert_eq!(r.origins().count(), 3);
    assert!(r.origin(&oid("proven")).is_some());
    assert_eq!(r.tick(t3).expired, Vec::<OriginId>::new(), "an eviction is not reported as a death");
    // Every origin proven: a new one is refused, a refresh still works.
    probe_round(&mut r, t3, |_| true);
    assert_eq!(r.register(reg_at("n3", 1940), t3), Err(RegistryError::OriginsFull(3)));
    assert_eq!(r.register(reg_at("n1", 1938), t3).unwrap(), Registered::Refreshed);
    assert_eq!(r.unproven(), (0, 0));
}

#[test]
fn probes_are_rate_limited_bounded_and_back_off() {
    let probes = ProbeLimits {
        per_second: 4,
        in_flight: 2,
        backoff: Duration::from_secs(5),
        backoff_max: Duration::from_secs(12),
    };
    let mut r = Registry::new(TTL, Limits { probes, ..Limits::default() });
    let t0 = Instant::now();
    for i in 0..10 {
        r.register(reg_at(&format!("o{i}"), 2000 + i), t0).unwrap();
    }
    let first = r.due_probes(t0);
    assert_eq!(first.len(), 2, "at most 2 in flight");
    assert!(r.due_probes(t0).is_empty(), "none while 2 are in flight");
    for (id, addr) in &first {
        assert_eq!(r.probe_done(id, *addr, false, t0), ProbeOutcome::Failed);
    }
    assert_eq!(probe_round(&mut r, t0, |_| false).len(), 2, "two more tokens this second");
    assert!(r.due_probes(t0).is_empty(), "4 a second");
    let half = t0 + Duration::from_millis(500);
    assert_eq!(probe_round(&mut r, half, |_| false).len(), 2, "half a second earns 2");
    assert_eq!(r.unproven(), (10, 0), "nothing left in flight");

    // One origin failing again and again: due after 5 s, then 10 s, then at most 12 s.
    let mut r = Registry::new(TTL, Limits { probes, ..Limits::default() });
    r.register(reg_at("solo", 1935), t0).unwrap();
    let mut at = t0;
    for wait in [0, 5, 10, 12, 12] {
        let due_at = at + Duration::from_secs(wait);
        if wait > 0 {
            assert!(r.due_probes(due_at - Duration::from_millis(1)).is_empty(), "due before its back-off of {wait}s");
        }
        assert_eq!(probe_round(&mut r, due_at, |_| false), vec![(oid("solo"), ProbeOutcome::Failed)], "{wait}s");
        at = due_at;
    }
    assert_eq!(r.probe_failures(&oid("solo")), Some(5));
    assert_eq!(probe_round(&mut r, at + Duration::from_secs(12), |_| true), vec![(oid("solo"), ProbeOutcome::Proven)]);
    assert_eq!(r.probe_failures(&oid("solo")), None);
}

#[test]
fn a_proof_holds_for_one_address() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    r.register(reg_at("a", 1935), t0).unwrap();
    probe_round(&mut r, t0, |_| true);
    assert!(r.origin(&oid("a")).unwrap().proven());
    r.register(reg_at("a", 1935), t0).unwrap();
    assert!(r.origin(&oid("a")).unwrap().proven(), "a heartbeat keeps the proof");
    r.register(reg_at("a", 1936), t0).unwrap();
    assert!(!r.origin(&oid("a")).unwrap().proven(), "a new RTMP address must be proven again");
    let due = r.due_probes(t0);
    assert_eq!(due, vec![(oid("a"), "127.0.0.1:1936".parse().unwrap())]);
    // The address changes again while that probe is out: its result no longer counts.
    r.register(reg_at("a", 1937), t0).unwrap();
    assert_eq!(r.probe_done(&due[0].0, due[0].1, true, t0), ProbeOutcome::Stale);
    assert!(!r.origin(&oid("a")).unwrap().proven());
    assert_eq!(r.due_probes(t0), vec![(oid("a"), "127.0.0.1:1937".parse().unwrap())]);
}

#[test]
fn gone_origins_and_configured_ones() {
    let mut r = Registry::new(TTL, Limits { max_origins: 1, ..Limits::default() });
    let t0 = Instant::now();
    r.register(reg_at("a", 1935), t0).unwrap();
    let due = r.due_probes(t0);
    // Evicted while its probe is out: the result is dropped and nothing stays in flight.
    assert_eq!(r.register(reg_at("b", 1936), t0).unwrap(), Registered::Evicted(oid("a")));
    assert_eq!(r.probe_done(&due[0].0, due[0].1, true, t0), ProbeOutcome::Stale);
    assert_eq!(r.unproven(), (1, 0));
    // Forgotten (dead for two TTLs) while its probe is out: the same.
    let due = r.due_probes(t0);
    r.tick(t0 + TTL * 2);
    assert!(r.origins().next().is_none());
    assert_eq!(r.probe_done(&due[0].0, due[0].1, true, t0), ProbeOutcome::Stale);
    assert_eq!(r.unproven(), (0, 0));
    // The operator's default backend is proven from the start and never probed.
    assert_eq!(r.register_configured(reg_at("default", 1935), t0).unwrap(), Registered::New);
    assert_eq!(r.origin(&oid("default")).unwrap().proof, Some(Proof::Configured));
    assert!(r.due_probes(t0).is_empty());
    assert_eq!(r.register(reg_at("x", 1), t0), Err(RegistryError::OriginsFull(1)), "a configured origin stays");
    // A dead unproven origin is not dialed: it waits its back-off.
    let mut r = Registry::new(TTL, Limits::default());
    r.register(reg_at("late", 1935), t0).unwrap();
    assert!(r.due_probes(t0 + TTL).is_empty());
    assert_eq!(r.probe_failures(&oid("late")), Some(1));
}

#[test]
fn origins_page_in_id_order() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    for s in ["c", "a", "b"] {
        r.register(reg_at(s, 1935), t0).unwrap();
    }
    let ids = |after: Option<&str>| r.origins_after(after).map(|o| o.id.0.clone()).collect::<Vec<_>>();
    assert_eq!(ids(None), ["a-s-1", "b-s-1", "c-s-1"]);
    assert_eq!(ids(Some("a-s-1")), ["b-s-1", "c-s-1"]);
    assert_eq!(ids(Some("b")), ["b-s-1", "c-s-1"], "a cursor need not be an id");
    assert!(ids(Some("c-s-1")).is_empty());
}

/// What the origin-table property test does.
#[derive(Clone, Debug)]
enum TableOp {
    Register(u8),
    Advance(u16),
    /// Answer every due probe; origin `o` is reachable when bit `o` is set.
    Probes(u8),
    Claim(u8),
}

fn table_op() -> impl Strategy<Value = TableOp> {
    prop_oneof![
        5 => (0u8..8).prop_map(TableOp::Register),
        1 => (0u16..120).prop_map(TableOp::Advance),
        2 => any::<u8>().prop_map(TableOp::Probes),
        3 => (0u8..20).prop_map(TableOp::Claim),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// With a table of 4 and 8 origins coming and going: the table never holds more than 4, a
    /// proven origin is never evicted (nor refused a refresh), probes in flight never exceed
    /// their bound, and a new stream never goes to an unproven origin while a proven one is alive.
    #[test]
    fn proven_origins_are_never_evicted_or_passed_over(ops in proptest::collection::vec(table_op(), 1..150)) {
        let probes = ProbeLimits { per_second: 3, in_flight: 2, ..ProbeLimits::default() };
        let mut r = Registry::new(TTL, Limits { max_origins: 4, probes, ..Limits::default() });
        let mut now = Instant::now();
        let mut proven: BTreeSet<OriginId> = BTreeSet::new();
        for op in ops {
            match op {
                TableOp::Register(o) => {
                    let id = oid(&format!("o{o}"));
                    match r.register(reg_at(&format!("o{o}"), 3000 + u16::from(o)), now) {
                        Ok(Registered::Evicted(victim)) => prop_assert!(!proven.contains(&victim), "evicted proven {victim}"),
                        Ok(_) => {}
                        Err(RegistryError::OriginsFull(_)) => {
                            prop_assert!(!proven.contains(&id), "a proven origin's refresh was refused");
                            prop_assert!(r.origins().all(|o| o.proven()), "refused while an unproven origin could go");
                        }
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                TableOp::Advance(s) => now += Duration::from_secs(s.into()),
                TableOp::Probes(mask) => {
                    for (id, outcome) in probe_round(&mut r, now, |id| {
                        let o: u32 = id.0[1..id.0.len() - 4].parse().unwrap();
                        mask & (1 << o) != 0
                    }) {
                        if outcome == ProbeOutcome::Proven {
                            proven.insert(id);
                        }
                    }
                }
                TableOp::Claim(k) => {
                    let k = key(&format!("p{k}"));
                    let pinned = r.pin(&k).and_then(|p| r.origin(&p.origin)).is_some_and(|o| o.is_alive(now, TTL));
                    if let Ok(origin) = r.claim(&k, None, now)
                        && !pinned
                    {
                        let proven_alive = r.origins().any(|o| o.proven() && o.is_alive(now, TTL));
                        prop_assert!(origin.proven() || !proven_alive, "new pin on unproven {} beside a proven one", origin.id);
                    }
                }
            }
            prop_assert!(r.origins().count() <= 4);
            prop_assert!(r.unproven().1 <= 2);
            for id in &proven {
                prop_assert!(r.origin(id).is_some_and(|o| o.proven()), "proven {id} was lost");
            }
            prop_assert_eq!(r.unproven().0, r.origins().filter(|o| !o.proven()).count());
        }
    }
}

#[test]
fn a_flood_from_one_network_evicts_its_own_records() {
    let mut r = Registry::new(TTL, Limits { max_origins: 10, ..Limits::default() });
    let t0 = Instant::now();
    let flooder: IpAddr = "192.0.2.66".parse().unwrap();
    let (honest, v6): (IpAddr, IpAddr) = ("198.51.100.7".parse().unwrap(), "2001:db8:1:2::9".parse().unwrap());
    r.register_from(reg_at("honest", 1935), honest, t0).unwrap();
    r.register_from(reg_at("v6", 1936), v6, t0).unwrap();
    for i in 0..1000 {
        let later = t0 + Duration::from_millis(i);
        let what = r.register_from(reg_at(&format!("bogus{i}"), 9), flooder, later).unwrap();
        if let Registered::Evicted(victim) = what {
            assert!(victim.0.starts_with("bogus"), "the flood evicted {victim}");
        }
    }
    assert!(r.origin(&oid("honest")).is_some() && r.origin(&oid("v6")).is_some());
    // Another address of the same IPv6 /64 is the same network: its records share one load.
    let same64: IpAddr = "2001:db8:1:2::10".parse().unwrap();
    r.register_from(reg_at("v6b", 1937), same64, t0).unwrap();
    assert_eq!(Network::of(v6), Network::of(same64));
    assert_ne!(Network::of("::ffff:192.0.2.66".parse().unwrap()), Network::of(v6));
    assert_eq!(Network::of("::ffff:192.0.2.66".parse().unwrap()), Network::of(flooder), "a mapped IPv4 peer");
    // The most loaded network loses its oldest record, whoever registers.
    let mut r = Registry::new(TTL, Limits { max_origins: 3, ..Limits::default() });
    r.register_from(reg_at("a", 1), honest, t0).unwrap();
    r.register_from(reg_at("b", 2), flooder, t0 + Duration::from_secs(1)).unwrap();
    r.register_from(reg_at("c", 3), flooder, t0 + Duration::from_secs(2)).unwrap();
    let evicted = r.register_from(reg_at("d", 4), honest, t0 + Duration::from_secs(3)).unwrap();
    assert_eq!(evicted, Registered::Evicted(oid("b")));
}

/// Two origins `a` and `b`, both proven; returns a key pinned to each.
fn two_pinned(r: &mut Registry, now: Instant) -> (StreamKey, StreamKey) {
    for s in ["a", "b"] {
        r.register_configured(reg_at(s, 1935), now).unwrap();
    }
    let on = |want: &str| {
        (0..)
            .map(|i| key(&format!("k{i}")))
            .find(|k| pick::rendezvous(k, r.origins(), now, TTL).unwrap().id == oid(want))
            .unwrap()
    };
    let (ka, kb) = (on("a"), on("b"));
    assert_eq!(r.claim(&ka, None, now).unwrap().id, oid("a"));
    assert_eq!(r.claim(&kb, None, now).unwrap().id, oid("b"));
    (ka, kb)
}

#[test]
fn a_quarantined_origin_loses_its_pins_and_new_streams_until_it_ends() {
    let limits = Limits { quarantine: Duration::from_secs(10), ..Limits::default() };
    let mut r = Registry::new(TTL, limits);
    let t0 = Instant::now();
    let (ka, kb) = two_pinned(&mut r, t0);
    let v = r.version();
    assert!(r.quarantine(&oid("a"), t0));
    assert!(r.version() > v, "the shards hear of it");
    assert!(!r.quarantine(&oid("nobody"), t0));
    assert!(r.pinned(&ka, t0).is_none(), "a quarantined origin keeps no pin");
    assert_eq!(r.claim(&ka, Some(&oid("a")), t0).unwrap().id, oid("b"), "the pin moves, whatever the proposal");
    assert_eq!(r.claim(&kb, None, t0).unwrap().id, oid("b"));
    let snap = r.snapshot(t0);
    assert_eq!(snap.pinned(&ka, t0).unwrap().id, oid("b"));
    assert!(snap.origins.iter().all(|o| o.id != oid("a") || o.quarantined(t0)));
    // A heartbeat does not end it; time does.
    r.register_configured(reg_at("a", 1935), t0 + Duration::from_secs(5)).unwrap();
    let fresh = key("fresh");
    assert_eq!(r.claim(&fresh, Some(&oid("a")), t0 + Duration::from_secs(5)).unwrap().id, oid("b"));
    let t1 = t0 + Duration::from_secs(10);
    assert!(r.origin(&oid("a")).unwrap().takes_new_streams(t1, TTL));
    assert_eq!(r.claim(&ka, None, t1).unwrap().id, oid("b"), "moved pins stay where they went");
    // Every origin in quarantine: they still serve (a lone origin that blipped is not refused).
    r.quarantine(&oid("a"), t1);
    r.quarantine(&oid("b"), t1);
    assert!(r.claim(&key("still"), None, t1).is_ok());
    assert!(r.pinned(&key("still"), t1).is_none(), "and its pin moves as soon as another can take it");
}

#[test]
fn draining_keeps_pins_and_unregistering_drops_them() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    let (ka, kb) = two_pinned(&mut r, t0);
    assert!(r.set_draining(&oid("a"), true));
    assert_eq!(r.claim(&ka, None, t0).unwrap().id, oid("a"), "a draining origin keeps its streams");
    for i in 0..20 {
        assert_eq!(r.claim(&key(&format!("n{i}")), Some(&oid("a")), t0).unwrap().id, oid("b"));
    }
    r.register_configured(reg_at("a", 1935), t0).unwrap();
    assert!(r.origin(&oid("a")).unwrap().draining, "a heartbeat keeps the drain");
    assert!(r.set_draining(&oid("a"), false));
    assert!(r.unregister(&oid("b")).is_some());
    assert!(r.unregister(&oid("b")).is_none());
    assert_eq!(r.pin(&kb), None);
    assert_eq!(r.claim(&kb, None, t0).unwrap().id, oid("a"), "its streams re-pin at once");
    assert!(r.snapshot(t0).origins.iter().all(|o| o.id != oid("b")));
}

#[test]
fn overloaded_origins_take_new_streams_last() {
    let limits = Limits { max_load_centi: Some(200), ..Limits::default() };
    let mut r = Registry::new(TTL, limits);
    let t0 = Instant::now();
    let loaded = |server: &str, load: f64| {
        let body = format!(
            r#"{{"ip":"127.0.0.1","server":"{server}","service":"s","pid":"1","rtmp":["1935"],"summaries":{{"data":{{"system":{{"load_1m":{load},"cpus":2}}}}}}}}"#
        );
        Registration::from_json(body.as_bytes()).unwrap()
    };
    r.register_configured(loaded("a", 4.5), t0).unwrap();
    r.register_configured(loaded("b", 1.0), t0).unwrap();
    assert_eq!(r.origin(&oid("a")).unwrap().registration.load_centi, Some(225));
    assert!(r.origin(&oid("a")).unwrap().overloaded && !r.origin(&oid("b")).unwrap().overloaded);
    for i in 0..20 {
        assert_eq!(r.claim(&key(&format!("o{i}")), Some(&oid("a")), t0).unwrap().id, oid("b"));
    }
    r.register_configured(loaded("b", 4.0), t0).unwrap();
    let ids: std::collections::BTreeSet<_> =
        (0..40).map(|i| r.claim(&key(&format!("p{i}")), None, t0).unwrap().id.clone()).collect();
    assert_eq!(ids.len(), 2, "both overloaded: both take streams again");
    r.register_configured(loaded("a", 0.5), t0).unwrap();
    assert!(!r.origin(&oid("a")).unwrap().overloaded, "the next heartbeat clears it");
}

#[test]
fn learned_heartbeats_keep_the_newest() {
    let mut r = Registry::new(TTL, Limits::default());
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(60);
    assert_eq!(r.learn(reg_at("a", 1935), t0, t1).unwrap(), Some(Registered::New));
    assert_eq!(r.origin(&oid("a")).unwrap().last_seen, t0, "heard when the other proxy heard it");
    assert_eq!(r.learn(reg_at("a", 1935), t0, t1).unwrap(), None, "the same heartbeat again changes nothing");
    let v = r.version();
    assert_eq!(r.learn(reg_at("a", 1935), t0 + Duration::from_millis(200), t1).unwrap(), None, "jitter is not news");
    assert_eq!(r.version(), v);
    assert_eq!(r.learn(reg_at("a", 1935), t1, t1).unwrap(), Some(Registered::Refreshed));
    assert_eq!(r.learn(reg_at("a", 1936), t0, t1).unwrap(), Some(Registered::Refreshed), "a new address is news");
    assert!(!r.origin(&oid("a")).unwrap().is_alive(t0 + TTL + Duration::from_secs(1), TTL));
}
