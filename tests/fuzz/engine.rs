//! A small mutation fuzzer that runs on the stable toolchain under `cargo test`, with no
//! dependency: seeds (real captures) are mutated (bit flips, interesting integers, inserted,
//! deleted, repeated and spliced ranges, truncations) for a time budget; an input whose
//! *outcome* (the target's coarse result, such as the error variant or the number of messages
//! decoded) was not seen before joins the corpus (bounded), so error paths reached once are
//! explored further. There is no coverage instrumentation: this finds panics, overflows (debug
//! builds check arithmetic) and broken round trips, not deep paths a coverage-guided fuzzer
//! would reach.
//!
//! A panic stops the target: the input is shrunk (ranges removed while it still panics), saved
//! under `target/fuzz-crashes/<target>/`, and the test fails naming the file. Copied into
//! `tests/fuzz/regressions/<target>/` it becomes a regression test that every run replays.
//!
//! `STREAMGATE_FUZZ_SECONDS` (default 1) is each target's budget, `STREAMGATE_FUZZ_SEED` the
//! random seed (default: from the clock; printed, so a run can be repeated).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

/// One fuzz target: seeds and a function that must not panic on any input.
pub struct Target {
    pub name: &'static str,
    /// The starting corpus (real captures, or inputs built from them).
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs one input; returns its outcome (see [`outcome`]). Panics on a failed invariant.
    pub run: fn(&[u8]) -> u64,
    /// Longest input tried.
    pub max_len: usize,
}

/// Most inputs a target's corpus keeps.
const MAX_CORPUS: usize = 512;
/// Most tries to shrink a crashing input.
const SHRINK_TRIES: usize = 2000;

/// A coarse outcome: a hash of `value`'s `Debug` text up to its first quoted string, without
/// digits, at most 80 characters (variants and flags count; numbers and the input's own text
/// do not: `Err(TooShort { need:, got: })`), combined with `count`.
pub fn outcome(value: &impl std::fmt::Debug, count: usize) -> u64 {
    let text = format!("{value:?}");
    let head: String = text.chars().take_while(|&c| c != '"').filter(|c| !c.is_ascii_digit()).take(80).collect();
    let mut h = DefaultHasher::new();
    (head, count).hash(&mut h);
    h.finish()
}

/// xorshift64*: fast, and reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const INTERESTING: [u32; 14] =
    [0, 1, 2, 3, 4, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x00ff_ffff, 0x7fff_ffff, 0xffff_ffff];

/// Applies one to eight random mutations to `data`, keeping it within `max_len`.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
    for _ in 0..1 + rng.below(8) {
        mutate_once(rng, data, corpus);
    }
    data.truncate(max_len);
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    if data.is_empty() {
        data.push(rng.next() as u8);
        return;
    }
    let at = rng.below(data.len());
    match rng.below(10) {
        0 => data[at] ^= 1 << rng.below(8),
        1 => data[at] = rng.next() as u8,
        2 => {
            // An interesting integer, big-endian as the wire formats here write them.
            let value = INTERESTING[rng.below(INTERESTING.len())].to_be_bytes();
            let width = [1, 2, 3, 4][rng.below(4)];
            for (i, b) in value[4 - width..].iter().enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        3 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        4 => {
            let end = (at + 1 + rng.below(64)).min(data.len());
            data.drain(at..end);
        }
        5 => data.truncate(at),
        6 => {
            // Repeat a range (lengths and counts that add up wrongly).
            let end = (at + 1 + rng.below(64)).min(data.len());
            let range = data[at..end].to_vec();
            let to = rng.below(data.len() + 1);
            data.splice(to..to, range);
        }
        7 => {
            // Splice in a piece of another corpus entry.
            let other = &corpus[rng.below(corpus.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(256)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
        }
        8 => {
            let (a, b) = (rng.below(data.len()), rng.below(data.len()));
            data.swap(a, b);
        }
        _ => {
            let n = 1 + rng.below(8);
            let fill = [0u8, 0xff][rng.below(2)];
            let end = (at + n).min(data.len());
            data[at..end].fill(fill);
        }
    }
}

thread_local! {
    /// Set while shrinking: the panic hook stays quiet for this thread.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn quiet_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                default(info);
            }
        }));
    });
}

fn panics(run: fn(&[u8]) -> u64, input: &[u8]) -> bool {
    catch_unwind(AssertUnwindSafe(|| run(input))).is_err()
}

/// The budget and seed of this run, from the environment.
pub fn settings() -> (Duration, u64) {
    let seconds = std::env::var("STREAMGATE_FUZZ_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(1.0);
    let seed = std::env::var("STREAMGATE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    (Duration::from_secs_f64(seconds), seed)
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    pub runs: u64,
    pub corpus: usize,
    pub outcomes: usize,
}

/// Runs `target`'s seeds, then mutated inputs for `budget`; panics (naming the saved input) if
/// an input makes the target panic.
pub fn fuzz(target: &Target, budget: Duration, seed: u64) -> Report {
    quiet_hook();
    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    assert!(!corpus.is_empty(), "{}: no seeds", target.name);
    let mut seen = HashSet::new();
    let mut rng = Rng::new(seed ^ fnv(target.name.as_bytes()));
    let mut runs = 0u64;
    let mut check = |input: &[u8], seen: &mut HashSet<u64>| -> bool {
        runs += 1;
        match catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
            Ok(o) => seen.insert(o),
            Err(_) => crash(target, input, seed),
        }
    };
    for input in corpus.clone() {
        check(&input, &mut seen);
    }
    let end = Instant::now() + budget;
    while Instant::now() < end {
        for _ in 0..64 {
            let mut input = corpus[rng.below(corpus.len())].clone();
            mutate(&mut rng, &mut input, &corpus, target.max_len);
            if check(&input, &mut seen) && corpus.len() < MAX_CORPUS {
                corpus.push(input);
            }
        }
    }
    Report { runs, corpus: corpus.len(), outcomes: seen.len() }
}

fn crash(target: &Target, input: &[u8], seed: u64) -> ! {
    let small = shrink(target.run, input.to_vec());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes").join(target.name);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{:016x}.bin", fnv(&small)));
    let _ = std::fs::write(&file, &small);
    panic!(
        "fuzz target {} panicked (seed {seed}) on a {}-byte input (shrunk to {} bytes), saved as {}; \
         copy it to tests/fuzz/regressions/{}/ to keep it as a regression test",
        target.name,
        input.len(),
        small.len(),
        file.display(),
        target.name
    );
}

/// Removes ranges (halving their size) while the input still panics.
fn shrink(run: fn(&[u8]) -> u64, mut input: Vec<u8>) -> Vec<u8> {
    QUIET.with(|q| q.set(true));
    let mut tries = 0;
    let mut size = input.len() / 2;
    while size > 0 && tries < SHRINK_TRIES {
        let mut at = 0;
        while at + size <= input.len() && tries < SHRINK_TRIES {
            let mut smaller = input.clone();
            smaller.drain(at..at + size);
            tries += 1;
            if panics(run, &smaller) {
                input = smaller;
            } else {
                at += size;
            }
        }
        size /= 2;
    }
    QUIET.with(|q| q.set(false));
    input
}

/// The saved regression inputs of `target` (`tests/fuzz/regressions/<name>/*`).
pub fn regressions(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions").join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
