#!/usr/bin/env python3
"""Runs one benchmark scenario side by side against the same origin (nginx-rtmp for RTMP,
`streamgate-load origin-flv` for HTTP-FLV: nginx-rtmp serves no HTTP-FLV):

  direct   the load generator talks to the origin itself (the floor)
  splice   through streamgate --edge off --relay splice --relay-batch 0s (the 1:1 relay,
           unbatched; the edge is streamgate's default since 2026-12-07)
  copy     through streamgate --edge off --relay copy --relay-batch 0s
  splice-batch, copy-batch   the same with --relay-batch BATCH (--batch, default 10ms; the
           proxy's own default is 20ms since 2026-12-07, so --batch 20ms is its default setup)
  edge     through streamgate --edge on: one origin pull per stream and shard, players served
           from the shard's shared buffers (RTMP and HTTP-FLV players; against origin-flv, which
           serves only HTTP-FLV, with --edge-pull http-flv); streamgate's default
  haproxy  through HAProxy in TCP mode (what a user would otherwise deploy)
  baseline streamgate --relay splice from another build (--baseline BINARY, e.g. the
           integration branch's), for before/after comparisons in one run
  baseline-edge  the same build with --edge on

For each it records the proxy's CPU seconds (utime+stime of all its threads, from /proc) and
CPU-seconds per GiB delivered, peak RSS, its RSS growth per connection at the end of the
window (players still connected; for the edge less its shared rings, whose memory is read from
its /api/v1/shards and reported apart), throughput, setup rate and time-to-first-media
percentiles from the load generator's JSON summary, plus the generator's and the origin's own
CPU (for origin-flv also its /stats: players dropped, worst pacing lateness, so a run shows
whether the origin kept up). The markdown table (with the streamgate/HAProxy ratios) is
appended to perf/results/<date>-<commit>.md (or --out) and printed.

Usage: perf/run.py SCENARIO [--duration S] [--targets direct,splice,copy,edge,haproxy]
                            [--batch 10ms] [--load-args "..."] [--players-with load|rtmpdump]
                            [--strace S] [--profile S] [--out PATH|-]

--players-with rtmpdump (RTMP scenarios with players): the load generator only publishes and
the players are rtmpdump (librtmp) processes, a player that reads the way real ones do (smaller
reads, acknowledgements) rather than the generator's. They join at --ramp-per-sec; the proxy's
CPU and the bytes the players wrote (files in /dev/shm) are measured over --duration once every
player plays; setup and first-media times are not measured. --strace S and --profile S then
count the proxy's system calls (per MiB delivered) and sample its hottest symbols for S seconds;
with --flamegraph DIR the samples are also drawn as DIR/<target>.svg (needs inferno:
cargo install inferno).
Scenarios: fanout, bulk, churn, idle, httpflv, httpflv-churn, edge-churn (see SCENARIOS below).
A short smoke run that keeps perf/results/ clean:
  perf/run.py httpflv --duration 10 --load-args "--players 50" --out -
"""

import argparse
import datetime
import functools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "target/release/streamgate")
LOAD = os.path.join(ROOT, "target/release/streamgate-load")
TICK = os.sysconf("SC_CLK_TCK")

# Each scenario: what the FLV is, the load generator's arguments (besides --url/--json; later
# flags given with --load-args override these), and the origin: "rtmp" (nginx-rtmp, the
# generator publishes the FLV) or "flv" (origin-flv paces the FLV itself, players use HTTP-FLV).
SCENARIOS = {
    "fanout": {
        "about": "1 publisher at about 2 Mbit/s (paced), 500 RTMP players",
        "flv": ("1280x720", "2M"),
        "args": ["--publishers", "1", "--paced", "--players", "500", "--ramp-per-sec", "250"],
        "duration": 60,
    },
    "bulk": {
        "about": "1 unpaced publisher to 1 player: the most bytes per second one stream carries",
        "flv": ("1280x720", "8M"),
        "args": ["--publishers", "1", "--players", "1"],
        "duration": 20,
    },
    "churn": {
        "about": "50 concurrent connectors: connect, play to first media byte, close, repeat",
        "flv": ("640x360", "1M"),
        "args": ["--publishers", "1", "--paced", "--churn", "50"],
        "duration": 20,
    },
    "idle": {
        "about": "5000 connected RTMP players on a stream with no media",
        "flv": None,
        "args": ["--players", "5000", "--play-stream", "paused", "--ramp-per-sec", "1000"],
        "duration": 15,
    },
    "httpflv": {
        "about": "1 stream at about 2 Mbit/s (paced by the HTTP-FLV origin), 500 HTTP-FLV players",
        "flv": ("1280x720", "2M"),
        "origin": "flv",
        "args": ["--players", "500", "--ramp-per-sec", "250"],
        "duration": 60,
    },
    "edge-churn": {
        "about": "50 concurrent connectors joining a stream already pulled: connect, play to first media, close",
        "flv": ("640x360", "1M"),
        "args": ["--publishers", "1", "--paced", "--players", "1", "--churn", "50"],
        "duration": 20,
    },
    "httpflv-churn": {
        "about": "50 concurrent HTTP-FLV connectors: connect, GET, first media tag, close, repeat",
        "flv": ("640x360", "1M"),
        "origin": "flv",
        "args": ["--churn", "50"],
        "duration": 20,
    },
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def cpu_seconds(pid):
    """utime + stime of every thread of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid, field):
    """A memory field of /proc/PID/status in KiB: VmRSS (now) or VmHWM (peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def window_memory(proxy, rss0, samples=5, every=0.3):
    """The proxy's memory at the end of the measured window, its players still connected: RSS
    growth since the window began and, for the edge, its shared rings (`edge_ring_kib`, read
    from its API) so they can be reported apart from the per-player memory. RSS moves by a few
    MiB as the allocator returns freed pages (the rings free and allocate all the time), so it
    is read `samples` times `every` seconds apart and the reading whose growth less the rings
    is the median is kept (`rss_samples_kib` keeps them all)."""
    readings = []
    for i in range(samples):
        if i:
            time.sleep(every)
        reading = {"growth": status_kib(proxy.pid, "VmRSS") - rss0}
        if hasattr(proxy, "edge_memory"):
            try:
                edge = proxy.edge_memory()
            except (OSError, ValueError, KeyError) as e:
                print(f"could not read the edge's ring memory: {e}", file=sys.stderr)
            else:
                reading["ring"], reading["players"] = edge["ring_kib"], edge["players"]
        readings.append(reading)
    readings.sort(key=lambda r: r["growth"] - r.get("ring", 0))
    mid = readings[len(readings) // 2]
    mem = {"proxy_peak_rss_kib": status_kib(proxy.pid, "VmHWM"), "proxy_rss_growth_kib": mid["growth"],
           "rss_samples_kib": [r["growth"] for r in readings]}
    if "ring" in mid:
        mem["edge_ring_kib"], mem["edge_players"] = mid["ring"], mid["players"]
    return mem


class Nginx:
    """nginx-rtmp: the RTMP origin."""
    protocol = "rtmp"

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "nginx")
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.port = free_port()
        conf = f"""load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
worker_rlimit_nofile 65536;
daemon on;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 20000; }}
rtmp {{ server {{ listen 127.0.0.1:{self.port}; chunk_size 4096;
    application live {{ live on; record off; }} }} }}
"""
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        subprocess.run(["nginx", "-p", self.dir, "-c", self.conf], check=True)
        wait_port(self.port)

    def worker_pids(self):
        out = subprocess.run(["pgrep", "-f", f"nginx: worker process"], capture_output=True, text=True).stdout
        master = int(open(os.path.join(self.dir, "nginx.pid")).read())
        pids = []
        for pid in out.split():
            try:
                if int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(pid))
            except OSError:
                pass
        return pids

    def cpu(self):
        return sum(cpu_seconds(p) for p in self.worker_pids())

    def stop(self):
        subprocess.run(["nginx", "-p", self.dir, "-c", self.conf, "-s", "quit"], stderr=subprocess.DEVNULL)

    def registration(self):
        return {"rtmp": [str(self.port)]}

    def stats(self):
        return None


class FlvOrigin:
    """`streamgate-load origin-flv`: the HTTP-FLV origin, pacing the FLV file itself."""
    protocol = "http"

    def __init__(self, tmp, flv):
        self.port = free_port()
        self.log = open(os.path.join(tmp, "origin-flv.log"), "w")
        self.proc = subprocess.Popen([LOAD, "origin-flv", "--listen", f"127.0.0.1:{self.port}", "--flv", flv,
                                      "--report-every", "5"], stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(self.port)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def registration(self):
        # The registration needs an RTMP endpoint: a closed port (no RTMP client goes there).
        return {"rtmp": [str(free_port())], "http": [str(self.port)]}

    def stats(self):
        """The origin's counters; reading them restarts its worst-lateness figure."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return json.loads(r.read())


# streamgate targets: relay mode, optionally with --relay-batch.
RELAYS = ("splice", "copy", "splice-batch", "copy-batch")


@functools.cache
def knows_flag(binary, flag):
    """Whether `binary --help` lists `flag` (a baseline build may predate it)."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    return f"{flag} " in out


class Streamgate:
    def __init__(self, tmp, origin, relay, batch=None, binary=PROXY, extra=()):
        rtmp, http, self.api = free_port(), free_port(), free_port()
        # Without --edge in `extra` this is a relay target: the edge is on by default since
        # 2026-12-07, so it is turned off (builds before the flag relay anyway).
        if "--edge" not in extra and knows_flag(binary, "--edge"):
            extra = ["--edge", "off"] + list(extra)
        self.port = http if origin.protocol == "http" else rtmp
        self.http = http
        self.log = open(os.path.join(tmp, f"streamgate-{relay}.log"), "w")
        # Every listener on a port of its own, so nothing else on the machine is in the way.
        self.proc = subprocess.Popen(
            [binary, "--rtmp-server", f"127.0.0.1:{rtmp}", "--http-server", f"127.0.0.1:{http}",
             "--http-api", f"127.0.0.1:{free_port()}", "--webrtc-server", f"127.0.0.1:{free_port()}",
             "--srt-server", f"127.0.0.1:{free_port()}", "--system-api", f"127.0.0.1:{self.api}",
             "--relay", relay, "--log-level", "warn",
             # The bulk scenario publishes unpaced, far above RTMP_MAX_BITRATE's default 10 Mbit/s.
             # The splice and copy targets are the unbatched relays (--relay-batch is 20ms by
             # default since 2026-12-07); the *-batch targets pass theirs.
             "--max-bitrate", "0", "--relay-batch", batch or "0s"] + list(extra),
            stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(self.api)
        body = json.dumps({"ip": "127.0.0.1", "server": "bench", "service": "origin", "pid": "1",
                           **origin.registration()}).encode()
        urllib.request.urlopen(f"http://127.0.0.1:{self.api}/api/v1/srs/register", body, timeout=5).read()
        wait_port(self.port)
        self.pid = self.proc.pid

    def edge_memory(self):
        """The edge's shared rings now, from /api/v1/shards: the memory they hold (each shard's
        `edge.cache_bytes`, what --edge-cache-bytes bounds: entries and their wire forms) and
        the players they serve. The shards report once a second."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api}/api/v1/shards", timeout=5) as r:
            shards = json.loads(r.read())["shards"]
        return {"ring_kib": sum(s["edge"]["cache_bytes"] for s in shards) // 1024,
                "players": sum(s["edge"]["players"] for s in shards)}

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Haproxy:
    def __init__(self, tmp, origin_port):
        self.port = free_port()
        cfg = os.path.join(tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    maxconn 9000
    nbthread {os.cpu_count()}
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend front
    bind 127.0.0.1:{self.port}
    default_backend origin
backend origin
    server o1 127.0.0.1:{origin_port}
""")
        self.proc = subprocess.Popen(["haproxy", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.pid = self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def make_flv(tmp, size, rate):
    path = os.path.join(tmp, f"media-{size}-{rate}.flv")
    if not os.path.exists(path):
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-c:v", "libx264", "-preset", "ultrafast",
             "-b:v", rate, "-maxrate", rate, "-bufsize", rate, "-g", "50", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "64k", "-t", "30", "-f", "flv", path], check=True)
    return path


def last_value(args, flag, default):
    """The last value given to `flag` in an argument list."""
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]
    return values[-1] if values else default


# --flamegraph DIR: where run_rtmpdump_players draws its perf samples.
FLAMEGRAPH_DIR = None


def flamegraph(data, svg, title):
    """Draws perf samples (`perf record -g`) as a flame graph with inferno."""
    script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True).stdout
    folded = subprocess.run(["inferno-collapse-perf"], input=script, capture_output=True, text=True).stdout
    with open(svg, "w") as out:
        subprocess.run(["inferno-flamegraph", "--title", title], input=folded, stdout=out, text=True, check=True)
    print(f"flame graph: {svg}", file=sys.stderr)


def strace_counts(pid, seconds, tmp):
    """Syscall counts of every thread of pid over `seconds` (strace -c -f), as {name: calls}."""
    out = os.path.join(tmp, f"strace-{pid}.txt")
    tracer = subprocess.Popen(["strace", "-c", "-f", "-q", "-p", str(pid), "-o", out],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    counts = {}
    for line in open(out):
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts


def run_rtmpdump_players(name, tmp, origin, port, proxy, args, duration, strace, profile=None):
    """The scenario's players as rtmpdump (librtmp) processes instead of the load generator's
    own: the generator only publishes. Measures the proxy's CPU and the bytes the players wrote
    over a window that starts once every player is connected and playing."""
    players = int(last_value(args, "--players", "0"))
    ramp = float(last_value(args, "--ramp-per-sec", "250"))
    args = args + ["--players", "0", "--duration", str(duration + players / ramp + 15 + (strace or 0) + (profile or 0))]
    stream = last_value(args, "--stream-prefix", "s") + "0"
    publisher = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out_dir = tempfile.mkdtemp(prefix="players-", dir="/dev/shm" if os.path.isdir("/dev/shm") else tmp)
    procs = []
    try:
        time.sleep(3)  # the publish is up
        url = f"rtmp://127.0.0.1:{port}/live/{stream}"
        for i in range(players):
            procs.append(subprocess.Popen(["rtmpdump", "-q", "-v", "-r", url, "-o", os.path.join(out_dir, f"{i}.flv")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1 / ramp)
        time.sleep(5)  # every player past its GOP burst

        def written():
            return sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
        pid = proxy.pid if proxy else None
        cpu0, bytes0, t0 = (cpu_seconds(pid) if pid else 0.0), written(), time.time()
        rss0 = status_kib(pid, "VmRSS") if pid else 0
        origin_cpu0 = origin.cpu()
        time.sleep(duration)
        cpu1, bytes1, t1 = (cpu_seconds(pid) if pid else 0.0), written(), time.time()
        alive = sum(1 for p in procs if p.poll() is None)
        row = {"target": name, "origin_cpu_s": origin.cpu() - origin_cpu0, "players_with": "rtmpdump",
               "load": {"bytes_received": bytes1 - bytes0, "seconds": t1 - t0, "connections_opened": players,
                        "players": players, "publishers": 1, "protocol": "rtmp",
                        "errors": {"players_gone": players - alive} if alive < players else {}}}
        if pid:
            row["proxy_cpu_s"] = cpu1 - cpu0
            row.update(window_memory(proxy, rss0))
            if profile:
                data = os.path.join(tmp, f"perf-{name}.data")
                subprocess.run(["perf", "record", "-q", "-F", "999", "-g", "-p", str(pid), "-o", data, "--",
                                "sleep", str(profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if FLAMEGRAPH_DIR:
                    flamegraph(data, os.path.join(FLAMEGRAPH_DIR, f"{name}.svg"), name)
                rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "sym",
                                      "--percent-limit", "1", "-g", "none"], capture_output=True, text=True).stdout
                row["profile"] = [l.strip() for l in rep.splitlines() if l.strip() and not l.startswith("#")][:25]
            if strace:
                b0 = written()
                row["syscalls"] = strace_counts(pid, strace, tmp)
                row["strace_bytes"] = written() - b0
        return row
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        publisher.kill()
        publisher.wait()
        shutil.rmtree(out_dir, ignore_errors=True)
        if proxy:
            proxy.stop()


def run_target(name, scenario, tmp, origin, duration, load_args, batch, baseline=None, players_with="load",
               strace=None, profile=None, merge_write="100ms"):
    proxy = None
    if name == "baseline":
        if not baseline:
            raise RuntimeError("target baseline needs --baseline BINARY")
        proxy = Streamgate(tmp, origin, "splice", None, baseline)
        port = proxy.port
    elif name in RELAYS:
        relay, batched = name.split("-")[0], name.endswith("-batch")
        proxy = Streamgate(tmp, origin, relay, batch if batched else None)
        port = proxy.port
    elif name in ("edge", "edge-merge", "baseline-edge"):
        if name == "baseline-edge" and not baseline:
            raise RuntimeError("target baseline-edge needs --baseline BINARY")
        pull = ["--edge-pull", "http-flv"] if origin.protocol == "http" else []
        merge = ["--edge-merge-write", merge_write] if name == "edge-merge" else []
        proxy = Streamgate(tmp, origin, "splice", None, baseline if name == "baseline-edge" else PROXY,
                           extra=["--edge", "on"] + pull + merge)
        port = proxy.port
    elif name == "haproxy":
        proxy = Haproxy(tmp, origin.port)
        port = proxy.port
    else:
        port = origin.port
    args = [LOAD, "--url", f"{origin.protocol}://127.0.0.1:{port}/live", "--duration", str(duration), "--json"]
    args += scenario["args"] + load_args
    if scenario["flv"] and origin.protocol == "rtmp":
        args += ["--flv", make_flv(tmp, *scenario["flv"])]
    if players_with == "rtmpdump":
        return run_rtmpdump_players(name, tmp, origin, port, proxy, args, duration, strace, profile)
    cpu0 = cpu_seconds(proxy.pid) if proxy else 0.0
    rss0 = status_kib(proxy.pid, "VmRSS") if proxy else 0
    origin_cpu0, origin_stats0 = origin.cpu(), origin.stats()
    gen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = None
    try:
        # Memory is read just before the generator's window ends, its players still connected.
        stdout, stderr = gen.communicate(timeout=max(1.0, duration - 3))
    except subprocess.TimeoutExpired:
        memory = window_memory(proxy, rss0) if proxy else None
        stdout, stderr = gen.communicate(timeout=duration + 120)
    if gen.returncode != 0:
        raise RuntimeError(f"{name}: load generator failed: {stderr[-2000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    row = {"target": name, "load": summary, "origin_cpu_s": origin.cpu() - origin_cpu0}
    if origin_stats0 is not None:
        after = origin.stats()
        row["origin_stats"] = {k: (v - origin_stats0.get(k, 0) if k not in ("clients", "late_max_ms", "stream_ms",
                                                                           "max_rss_kib") else v)
                               for k, v in after.items()}
    if proxy:
        row["proxy_cpu_s"] = cpu_seconds(proxy.pid) - cpu0
        row.update(memory or window_memory(proxy, rss0))
        proxy.stop()
    return row


def origin_lines(rows):
    """For origin-flv: whether it kept up in each run (CPU share, drops, pacing lateness)."""
    lines = []
    for r in rows:
        o = r.get("origin_stats")
        if o is None:
            continue
        secs = max(1e-9, r["load"].get("seconds", 1))
        dropped = o.get("dropped_lagging", 0) + o.get("dropped_stalled", 0)
        late, share = o.get("late_max_ms", 0), 100 * r["origin_cpu_s"] / secs
        if share >= 80:
            verdict = "ORIGIN SATURATED (near a full core): the numbers measure it, not the proxy"
        elif dropped > 0:
            verdict = "players dropped: the path to them (proxy or generator) fell behind"
        elif late >= 50:
            verdict = "pacing fell behind while the origin used little CPU: the machine was busy"
        else:
            verdict = "kept up"
        lines.append(f"- origin-flv during {r['target']}: {r['origin_cpu_s']:.2f} CPU-s "
                     f"({share:.0f}% of one core), {o.get('bytes_sent', 0) / 2**20:.0f} MiB sent, "
                     f"players dropped {o.get('dropped_lagging', 0)} lagging / {o.get('dropped_stalled', 0)} stalled, "
                     f"{o.get('late_tags', 0)} tags sent 10+ ms late, worst {late:.1f} ms: {verdict}")
    return lines


def fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(scenario_name, rows):
    lines = [
        "| target | proxy CPU-s | proxy CPU-s/GiB | proxy CPU-ms/setup | received MiB/s | setups/s | first media p50/p90/p99 ms | proxy peak RSS MiB | proxy RSS/conn KiB (ring excluded) | edge ring MiB | loadgen CPU-s | origin CPU-s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["load"]
        gib = s.get("bytes_received", 0) / 2**30
        cpu = r.get("proxy_cpu_s")
        per_gib = cpu / gib if cpu is not None and gib > 0 else None
        conns = max(1, s.get("connections_opened", 1))
        setups = (s.get("setups_per_sec") or 0) * s.get("seconds", 0)
        per_setup = cpu * 1000 / setups if cpu is not None and setups > 0 else None
        growth, ring = per_player_growth(r), r.get("edge_ring_kib")
        if r.get("players_with") == "rtmpdump":
            growth = None  # its window starts with every player connected: no growth per player
        ttf = s.get("first_media_ms", {})
        lines.append("| " + " | ".join([
            r["target"], fmt(cpu), fmt(per_gib, 3), fmt(per_setup, 3), fmt(s.get("bytes_received", 0) / 2**20 / max(1e-9, s.get("seconds", 1)), 1),
            fmt(s.get("setups_per_sec"), 1),
            "/".join(fmt(ttf.get(k), 1) for k in ("p50", "p90", "p99")),
            fmt(r["proxy_peak_rss_kib"] / 1024, 1) if "proxy_peak_rss_kib" in r else "-",
            fmt(growth / conns, 1) if growth is not None else "-",
            fmt(ring / 1024, 1) if ring is not None else "-",
            fmt(s.get("cpu_seconds")), fmt(r["origin_cpu_s"]), json.dumps(s.get("errors", {})),
        ]) + " |")
    by = {r["target"]: r for r in rows}
    ratios = []
    if "baseline" in by and "splice" in by:
        # Targets may repeat (baseline,splice,baseline,splice): compare the means of their runs.
        def mean(target, f):
            values = [f(r) for r in rows if r["target"] == target]
            return sum(values) / len(values)
        setups = lambda r: r["load"].get("setups_per_sec") or 0
        cpu_ms = lambda r: r["proxy_cpu_s"] * 1000 / max(1e-9, setups(r) * r["load"].get("seconds", 0))
        sa, sb = mean("splice", setups), mean("baseline", setups)
        if sb > 0:
            ratios.append(f"- setups per second (mean of each target's runs), streamgate splice / baseline build: "
                          f"{sa:.0f} / {sb:.0f} = {sa / sb:.2f}")
            ratios.append(f"- proxy CPU-ms per setup (mean), streamgate splice / baseline build: "
                          f"{mean('splice', cpu_ms):.3f} / {mean('baseline', cpu_ms):.3f} = "
                          f"{mean('splice', cpu_ms) / mean('baseline', cpu_ms):.2f}")
    for relay in RELAYS + ("edge", "edge-merge", "baseline-edge"):
        if relay in by and "haproxy" in by:
            a, b = by[relay], by["haproxy"]
            ga, gb = a["load"].get("bytes_received", 0) / 2**30, b["load"].get("bytes_received", 0) / 2**30
            if ga > 0 and gb > 0 and b["proxy_cpu_s"] > 0:
                ratios.append(f"- CPU per GiB, streamgate {relay} / HAProxy: "
                              f"{(a['proxy_cpu_s'] / ga) / (b['proxy_cpu_s'] / gb):.2f}")
            sa, sb = a["load"].get("setups_per_sec"), b["load"].get("setups_per_sec")
            if sa and sb:
                ratios.append(f"- setups per second, streamgate {relay} / HAProxy: {sa / sb:.2f}")
            ca, cb = max(1, a["load"].get("connections_opened", 1)), max(1, b["load"].get("connections_opened", 1))
            ga_rss, gb_rss = per_player_growth(a), per_player_growth(b)
            if a.get("players_with") != "rtmpdump" and ga_rss is not None and gb_rss is not None and "connections_opened" in a["load"]:
                ring = (f"; the edge's shared rings {a['edge_ring_kib'] / 1024:.1f} MiB apart"
                        if "edge_ring_kib" in a else "")
                ratio = f" = {(ga_rss / ca) / (gb_rss / cb):.2f}" if gb_rss > 0 else ""
                ratios.append(f"- RSS growth per connection (shared rings excluded), streamgate {relay} / HAProxy: "
                              f"{ga_rss / ca:.1f} / {gb_rss / cb:.1f} KiB{ratio}{ring}")
            tb = b["load"].get("bytes_received", 0)
            if tb > 0:
                ratios.append(f"- bytes received, streamgate {relay} / HAProxy: {a['load'].get('bytes_received', 0) / tb:.2f}")
            pa, pb = a["load"].get("first_media_ms", {}).get("p99"), b["load"].get("first_media_ms", {}).get("p99")
            pd = by.get("direct", {}).get("load", {}).get("first_media_ms", {}).get("p99")
            if pa is not None and pd is not None:
                ratios.append(f"- added first-media p99 over direct, streamgate {relay}: {pa - pd:.2f} ms")
            if pa is not None and pb is not None and pd is not None:
                pass
    return "\n".join(lines + [""] + ratios + origin_lines(rows) + syscall_lines(rows))


def per_player_growth(row):
    """The proxy's RSS growth over the window less the edge's shared rings (KiB), or None."""
    growth = row.get("proxy_rss_growth_kib")
    return None if growth is None else growth - row.get("edge_ring_kib", 0)


def syscall_lines(rows):
    """With --strace: the proxy's most frequent system calls per MiB delivered."""
    lines = []
    for r in rows:
        calls, mib = r.get("syscalls"), r.get("strace_bytes", 0) / 2**20
        if not calls or mib <= 0:
            continue
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        lines.append(f"- system calls per MiB delivered, {r['target']} (strace -c -f): " +
                     ", ".join(f"{k} {v / mib:.1f}" for k, v in top) +
                     f"; all {sum(calls.values()) / mib:.1f}")
    return lines




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--duration", type=int)
    ap.add_argument("--targets", default="direct,splice,copy,haproxy",
                    help="comma-separated: direct, splice, copy, splice-batch, copy-batch (streamgate with "
                         "--relay-batch BATCH), edge (streamgate --edge on), edge-merge (--edge on --edge-merge-write MERGE), haproxy, baseline and "
                         "baseline-edge (--baseline BINARY, --relay splice or --edge on)")
    ap.add_argument("--players-with", choices=("load", "rtmpdump"), default="load",
                    help="who plays: the load generator's players (default) or rtmpdump processes")
    ap.add_argument("--baseline", help="another streamgate binary, run as target baseline (--relay splice)")
    ap.add_argument("--batch", default="10ms", help="--relay-batch of the *-batch targets (default 10ms)")
    ap.add_argument("--merge-write", default="100ms", help="--edge-merge-write of the edge-merge target (default 100ms)")
    ap.add_argument("--load-args", default="",
                    help="extra streamgate-load flags for every target, after the scenario's (so they override "
                         "them: --players 50 for a smoke run), e.g. --quickack (the generator then acknowledges "
                         "at once, so its own delayed ACKs do not dominate first-media times)")
    ap.add_argument("--strace", type=int, metavar="SECONDS",
                    help="with --players-with rtmpdump: after the measured window, count the proxy's system calls "
                         "for SECONDS with strace -c -f (slows it, so outside the window) and report them per MiB")
    ap.add_argument("--profile", type=int, metavar="SECONDS",
                    help="with --players-with rtmpdump: after the measured window, sample the proxy with perf record "
                         "-g for SECONDS and keep its hottest symbols in the raw section")
    ap.add_argument("--flamegraph", metavar="DIR",
                    help="with --profile: also draw each target's samples as DIR/<target>.svg (inferno)")
    ap.add_argument("--out", help="file to append the section to (default perf/results/<date>-<commit>.md); "
                                  "- only prints it (smoke runs)")
    opts = ap.parse_args()
    global FLAMEGRAPH_DIR
    FLAMEGRAPH_DIR = opts.flamegraph
    if FLAMEGRAPH_DIR:
        os.makedirs(FLAMEGRAPH_DIR, exist_ok=True)
    scenario = SCENARIOS[opts.scenario]
    duration = opts.duration or scenario["duration"]
    for tool in (PROXY, LOAD):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: run `cargo build --release --bins` first")
    tmp = tempfile.mkdtemp(prefix="streamgate-perf-")
    origin = None
    rows = []
    try:
        if scenario.get("origin") == "flv":
            origin = FlvOrigin(tmp, make_flv(tmp, *scenario["flv"]))
        else:
            origin = Nginx(tmp)
        for target in opts.targets.split(","):
            print(f"running {opts.scenario} against {target} for {duration}s ...", file=sys.stderr)
            rows.append(run_target(target, scenario, tmp, origin, duration, opts.load_args.split(), opts.batch,
                                   opts.baseline, opts.players_with, opts.strace, opts.profile, opts.merge_write))
    finally:
        if origin:
            origin.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    date = datetime.date.today().isoformat()
    extra = f" (load generator also given `{opts.load_args}`)" if opts.load_args else ""
    if opts.players_with == "rtmpdump":
        extra += "; players: rtmpdump processes"
        if scenario.get("origin") == "flv":
            sys.exit("--players-with rtmpdump needs an RTMP scenario")
    ran = rows[0]["load"] if rows else {}
    counts = ", ".join(f"{ran.get(k, 0)} {k}" for k in ("publishers", "players", "churn"))
    header = (f"## {opts.scenario}: {scenario['about']}, {duration} s{extra}\n\n"
              f"{datetime.datetime.now().isoformat(timespec='seconds')}, commit {commit}, {platform.node()}, "
              f"kernel {platform.release()}, {os.cpu_count()} CPUs; all processes on the same machine; "
              f"load generator ran {counts} ({ran.get('protocol', 'rtmp')}).\n")
    text = header + "\n" + table(opts.scenario, rows) + "\n\n<details><summary>raw</summary>\n\n```json\n" + \
        json.dumps(rows, indent=1) + "\n```\n</details>\n\n"
    print(text)
    if opts.out == "-":
        return
    path = opts.out or os.path.join(ROOT, f"perf/results/{date}-{commit}.md")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(text)
    print(f"appended to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
