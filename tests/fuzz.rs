//! Fuzzing every parser that faces the network (and the `.env` file) on the stable toolchain:
//! a short run of each target in every test run (`STREAMGATE_FUZZ_SECONDS`, default 1 s each),
//! longer runs with `scripts/fuzz.sh [MINUTES]`, and every input that ever crashed a target
//! replayed from `tests/fuzz/regressions/<target>/`. The engine is `tests/fuzz/engine.rs`, the
//! targets and their seeds `tests/fuzz/targets.rs`.

#[path = "fuzz/engine.rs"]
mod engine;
#[path = "fuzz/targets.rs"]
mod targets;

use engine::{Target, fuzz, regressions, settings};
use targets::TARGETS;

fn target(name: &str) -> &'static Target {
    TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no fuzz target {name}"))
}

fn run(name: &str) {
    let (budget, seed) = settings();
    let report = fuzz(target(name), budget, seed);
    eprintln!(
        "fuzz {name}: seed {seed}, {} inputs, {} in the corpus, {} outcomes",
        report.runs, report.corpus, report.outcomes
    );
    assert!(report.runs > 0);
}

macro_rules! fuzz_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test]
        fn $name() {
            run(stringify!($name));
        })*
    };
}

fuzz_tests!(
    rtmp_handshake,
    rtmp_chunks,
    amf0,
    rtmp_inspector,
    http_heads,
    m3u8,
    flv_tags,
    stun,
    sdp,
    srt_handshake,
    register_json,
    dotenv,
    stream_keys,
);

/// Every input saved from a crash still runs cleanly through its target.
#[test]
fn regressions_pass() {
    for t in &TARGETS {
        for (path, input) in regressions(t.name) {
            let result = std::panic::catch_unwind(|| (t.run)(&input));
            assert!(result.is_ok(), "{} panics again on {}", t.name, path.display());
        }
    }
}

/// Every target has a test above (a new target without one would never run).
#[test]
fn every_target_has_a_test() {
    let source = include_str!("fuzz.rs");
    for t in &TARGETS {
        assert!(source.contains(&format!("    {},\n", t.name)), "no test for fuzz target {}", t.name);
    }
}

/// The engine finds a planted bug: a target that panics on inputs with a 0xff byte after at
/// least 8 bytes is caught, its input shrunk and saved.
#[test]
fn the_engine_finds_a_planted_bug() {
    fn planted(input: &[u8]) -> u64 {
        assert!(!input.iter().skip(8).any(|&b| b == 0xff), "planted bug");
        input.len() as u64
    }
    let t = Target { name: "planted", seeds: || vec![vec![1u8; 32]], run: planted, max_len: 256 };
    let caught = std::panic::catch_unwind(|| fuzz(&t, std::time::Duration::from_secs(10), 42));
    let message = match caught {
        Ok(report) => panic!("the planted bug was not found: {report:?}"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(message.contains("shrunk to 9 bytes"), "{message}");
    let saved = message.split("saved as ").nth(1).and_then(|s| s.split(';').next()).unwrap();
    assert_eq!(std::fs::read(saved).unwrap().len(), 9);
    let _ = std::fs::remove_file(saved);
}
