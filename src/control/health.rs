//! The health rules, one place for gRPC HealthCheck and GetStatus, the standard
//! `grpc.health.v1` service and `/metrics`:
//!
//! | level | when |
//! |---|---|
//! | unhealthy | no origin is alive (none registered, or none heard from within the TTL): no new stream can be served |
//! | degraded | a shard has not reported for [`SHARD_SILENT`] (it reports once a second: it is stuck or overloaded) |
//! | degraded | a shard holds its `--max-connections-per-shard` (new clients wait in the listen backlog) |
//! | degraded | the process used at least [`CPU_BUSY`]% of the CPUs it may run on over the last second |
//! | degraded | a registered origin is dead (no heartbeat within the TTL; its streams move on their next session) |
//! | degraded | a shard closed a connection after a panic in its task, or ended one as stalled, within the last [`TROUBLE_RECENT`] (a bug: the log line names the stream) |
//! | degraded | redis mode: Redis does not answer (live sessions and streams pinned here go on; brand-new streams are refused) |
//! | healthy | none of the above |

use std::time::{Duration, Instant};

/// A shard that has not reported for this long makes the proxy degraded.
pub const SHARD_SILENT: Duration = Duration::from_secs(3);
/// How long a panicked or stalled connection keeps the proxy degraded.
pub const TROUBLE_RECENT: Duration = Duration::from_secs(600);
/// CPU use (percent of the allowed CPUs) from which the proxy is degraded.
pub const CPU_BUSY: f64 = 90.0;

/// How well the proxy is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Level {
    /// The reference's words: "healthy", "degraded", "unhealthy".
    pub fn name(self) -> &'static str {
        match self {
            Level::Healthy => "healthy",
            Level::Degraded => "degraded",
            Level::Unhealthy => "unhealthy",
        }
    }
}

/// What the rules look at.
#[derive(Debug, Default)]
pub struct Inputs {
    pub origins_registered: usize,
    pub origins_alive: usize,
    /// Dead origins: id and seconds since their last heartbeat.
    pub dead_origins: Vec<(String, f64)>,
    /// Per shard: time since its last report (`None`: it never reported).
    pub shard_silence: Vec<Option<Duration>>,
    /// Per shard: open connections.
    pub shard_open: Vec<u64>,
    pub max_connections_per_shard: u64,
    /// How long the process has run (a shard that never reported is not silent at startup).
    pub uptime: Duration,
    pub cpu_percent: f64,
    /// Per shard: connections closed after a panic (all time) and how long ago the last one.
    pub panics: Vec<(u64, Option<Duration>)>,
    /// Per shard: connections ended as stalled (all time) and how long ago the last one.
    pub stalls: Vec<(u64, Option<Duration>)>,
    /// Redis mode with Redis not answering: for how long, and the last error.
    pub redis_down: Option<(Duration, String)>,
    /// Transcoding jobs that failed or fall behind real time while their stream is published.
    pub transcode: Vec<String>,
}

/// The verdict: a level, one line, and every active problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub level: Level,
    pub message: String,
    pub problems: Vec<String>,
}

/// Applies the rules of the module documentation.
pub fn evaluate(i: &Inputs) -> Health {
    let mut level = Level::Healthy;
    let mut problems = Vec::new();
    let mut problem = |l: Level, text: String| {
        level = level.max(l);
        problems.push(text);
    };
    if i.origins_alive == 0 {
        let text = match i.origins_registered {
            0 => "no origin registered".to_string(),
            n => format!("no origin alive ({n} registered, none heard from within the TTL)"),
        };
        problem(Level::Unhealthy, text);
    }
    for (shard, silence) in i.shard_silence.iter().enumerate() {
        let silent = match silence {
            Some(d) => Some(*d),
            None if i.uptime >= SHARD_SILENT => Some(i.uptime),
            None => None,
        };
        if let Some(d) = silent.filter(|d| *d >= SHARD_SILENT) {
            problem(Level::Degraded, format!("shard {shard} has not reported for {:.1} s", d.as_secs_f64()));
        }
    }
    for (shard, open) in i.shard_open.iter().enumerate() {
        if *open >= i.max_connections_per_shard {
            problem(Level::Degraded, format!("shard {shard} is full: {open} connections open"));
        }
    }
    if i.cpu_percent >= CPU_BUSY {
        problem(Level::Degraded, format!("CPU usage at {:.0}%", i.cpu_percent));
    }
    let troubles = [(&i.panics, "closed after a panic in its task"), (&i.stalls, "ended as stalled")];
    for (counts, what) in troubles {
        for (shard, (n, ago)) in counts.iter().enumerate() {
            if let Some(ago) = ago.filter(|a| *a < TROUBLE_RECENT) {
                let text = format!("shard {shard}: {n} connections {what} (the last {:.0} s ago)", ago.as_secs_f64());
                problem(Level::Degraded, text);
            }
        }
    }
    if let Some((down, error)) = &i.redis_down {
        let text = format!("redis unavailable for {:.0} s ({error}): new streams are refused", down.as_secs_f64());
        problem(Level::Degraded, text);
    }
    for job in &i.transcode {
        problem(Level::Degraded, job.clone());
    }
    for (id, age) in &i.dead_origins {
        problem(Level::Degraded, format!("origin {id} is dead: no heartbeat for {age:.0} s"));
    }
    let message = match problems.as_slice() {
        [] => "All systems operational".to_string(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    };
    Health { level, message, problems }
}

impl super::State {
    /// The rules of this module applied to the state now.
    pub fn health(&self, now: Instant) -> Health {
        let ttl = self.registry.ttl();
        let mut inputs = Inputs {
            max_connections_per_shard: self.config.max_connections_per_shard as u64,
            uptime: now.saturating_duration_since(self.started),
            cpu_percent: self.cpu.percent,
            ..Default::default()
        };
        for origin in self.registry.origins() {
            inputs.origins_registered += 1;
            if origin.is_alive(now, ttl) {
                inputs.origins_alive += 1;
            } else {
                let age = now.saturating_duration_since(origin.last_seen).as_secs_f64();
                inputs.dead_origins.push((origin.id.0.clone(), age));
            }
        }
        for shard in &self.shards {
            inputs.shard_silence.push(shard.last_report.map(|at| now.saturating_duration_since(at)));
            inputs.shard_open.push(shard.counters.open);
            let ago = |at: Option<Instant>| at.map(|t| now.saturating_duration_since(t));
            inputs.panics.push((shard.counters.panicked.values().sum(), ago(shard.last_panic)));
            inputs.stalls.push((shard.counters.stalled.values().sum(), ago(shard.last_stall)));
        }
        inputs.redis_down = self
            .redis
            .as_ref()
            .filter(|r| !r.status.up)
            .map(|r| (now.saturating_duration_since(r.status.since), r.status.error.clone().unwrap_or_default()));
        inputs.transcode = self.transcode.problems();
        evaluate(&inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fine() -> Inputs {
        Inputs {
            origins_registered: 2,
            origins_alive: 2,
            shard_silence: vec![Some(Duration::from_millis(400)), Some(Duration::from_millis(900))],
            shard_open: vec![3, 4],
            max_connections_per_shard: 100,
            uptime: Duration::from_secs(60),
            cpu_percent: 12.0,
            ..Default::default()
        }
    }

    #[test]
    fn healthy_when_nothing_is_wrong() {
        let h = evaluate(&fine());
        assert_eq!((h.level, h.message.as_str()), (Level::Healthy, "All systems operational"));
        assert!(h.problems.is_empty());
    }

    #[test]
    fn no_alive_origin_is_unhealthy_whatever_else_holds() {
        let h = evaluate(&Inputs { origins_registered: 0, origins_alive: 0, ..fine() });
        assert_eq!((h.level, h.message.as_str()), (Level::Unhealthy, "no origin registered"));
        let h = evaluate(&Inputs {
            origins_alive: 0,
            dead_origins: vec![("a".into(), 301.0), ("b".into(), 400.0)],
            cpu_percent: 95.0,
            ..fine()
        });
        assert_eq!(h.level, Level::Unhealthy);
        assert_eq!(h.problems.len(), 4, "{:?}", h.problems);
        assert_eq!(h.message, "no origin alive (2 registered, none heard from within the TTL) (and 3 more)");
    }

    #[test]
    fn silent_or_full_shards_busy_cpu_and_dead_origins_degrade() {
        let silent =
            evaluate(&Inputs { shard_silence: vec![Some(Duration::from_secs(1)), Some(SHARD_SILENT)], ..fine() });
        assert_eq!((silent.level, silent.message.as_str()), (Level::Degraded, "shard 1 has not reported for 3.0 s"));
        let never = evaluate(&Inputs { shard_silence: vec![None, Some(Duration::ZERO)], ..fine() });
        assert_eq!(never.problems, ["shard 0 has not reported for 60.0 s"]);
        let starting = evaluate(&Inputs { shard_silence: vec![None, None], uptime: Duration::from_secs(1), ..fine() });
        assert_eq!(starting.level, Level::Healthy, "a shard has a moment to report after startup");
        let full = evaluate(&Inputs { shard_open: vec![100, 2], ..fine() });
        assert_eq!(full.problems, ["shard 0 is full: 100 connections open"]);
        let busy = evaluate(&Inputs { cpu_percent: 95.4, ..fine() });
        assert_eq!((busy.level, busy.message.as_str()), (Level::Degraded, "CPU usage at 95%"));
        let dead = evaluate(&Inputs { dead_origins: vec![("o1".into(), 312.2)], origins_alive: 1, ..fine() });
        assert_eq!(dead.problems, ["origin o1 is dead: no heartbeat for 312 s"]);
        assert_eq!(dead.level, Level::Degraded);
    }

    #[test]
    fn a_recent_panic_or_stall_degrades_for_ten_minutes() {
        let panic = evaluate(&Inputs { panics: vec![(0, None), (2, Some(Duration::from_secs(12)))], ..fine() });
        assert_eq!(panic.level, Level::Degraded);
        assert_eq!(panic.problems, ["shard 1: 2 connections closed after a panic in its task (the last 12 s ago)"]);
        let stall = evaluate(&Inputs { stalls: vec![(1, Some(Duration::from_secs(3)))], ..fine() });
        assert_eq!(stall.problems, ["shard 0: 1 connections ended as stalled (the last 3 s ago)"]);
        let old = evaluate(&Inputs { panics: vec![(5, Some(TROUBLE_RECENT))], ..fine() });
        assert_eq!(old.level, Level::Healthy, "an old panic no longer degrades");
    }

    #[test]
    fn redis_down_degrades() {
        let down = evaluate(&Inputs { redis_down: Some((Duration::from_secs(4), "refused".into())), ..fine() });
        assert_eq!(down.level, Level::Degraded);
        assert_eq!(down.message, "redis unavailable for 4 s (refused): new streams are refused");
    }
}
