#!/usr/bin/env python3
"""Fan-out of a local stream (issue 20): streamgate as the origin itself (--local-origin on)
against nginx-rtmp serving the same stream as an origin (SRS is not installed here; nginx-rtmp
stands in for it), the same run for both: 1 paced publisher (1280x720, about 2 Mbit/s) and N
RTMP players from streamgate-load. Reports each server's CPU seconds per GiB delivered and its
memory (peak RSS, RSS growth per player), and streamgate / nginx-rtmp as ratios.

Usage: perf/local_fanout.py [--players 300] [--duration 30] [--shards N] [--merge-write D] [--strace S] [--profile S]
(needs target/release binaries, nginx with the rtmp module, ffmpeg; --strace and --profile need
strace and perf). --shards N runs streamgate with N shards (default: one per CPU);
--merge-write D gives it --edge-merge-write D (merged writes, as SRS's mw_latency). --strace S counts
each server's system calls for S seconds and --profile S samples streamgate with perf for S seconds,
both after the measured window (they slow what they watch), the load generator still running.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import run as bench  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "target/release/streamgate")
LOAD = os.path.join(ROOT, "target/release/streamgate-load")


# The port, CPU and memory helpers of the relay scenarios.
free_port, wait_port, cpu_seconds, status_kib = bench.free_port, bench.wait_port, bench.cpu_seconds, bench.status_kib


def make_flv(tmp):
    path = os.path.join(tmp, "media.flv")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-c:v", "libx264",
                    "-preset", "ultrafast", "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M", "-g", "50",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-t", "30", "-f", "flv", path],
                   check=True)
    return path


def nginx(tmp):
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    os.makedirs(os.path.join(tmp, "logs"), exist_ok=True)
    with open(conf, "w") as f:
        f.write(f"""load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_rlimit_nofile 20000;
error_log {tmp}/logs/error.log;
pid {tmp}/nginx.pid;
events {{ worker_connections 10000; }}
rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 60000; application live {{ live on; }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-p", tmp, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def streamgate(tmp, shards=None, merge_write=None):
    port, api = free_port(), free_port()
    log = open(os.path.join(tmp, "streamgate.log"), "w")
    proc = subprocess.Popen(
        [PROXY, "--rtmp-server", f"127.0.0.1:{port}", "--http-server", f"127.0.0.1:{free_port()}",
         "--http-api", f"127.0.0.1:{free_port()}", "--webrtc-server", f"127.0.0.1:{free_port()}",
         "--srt-server", f"127.0.0.1:{free_port()}", "--system-api", f"127.0.0.1:{api}",
         "--grpc", f"127.0.0.1:{free_port()}", "--local-origin", "on", "--local-hls-jobs", "0",
         "--transcode", "off", "--max-bitrate", "0", "--log-level", "warn",
         "--local-hls-dir", os.path.join(tmp, "hls")] + (["--shards", str(shards)] if shards else [])
        + (["--edge-merge-write", merge_write] if merge_write else []),
        stdout=subprocess.DEVNULL, stderr=log)
    wait_port(port)
    proc.api = api
    return proc, port


def ring_kib(api):
    """The memory the local stream's rings hold now (each shard's `edge.cache_bytes`, what
    --edge-cache-bytes bounds), from /api/v1/shards."""
    with urllib.request.urlopen(f"http://127.0.0.1:{api}/api/v1/shards", timeout=5) as r:
        return sum(s["edge"]["cache_bytes"] for s in json.loads(r.read())["shards"]) // 1024


def cpu_split(pid):
    """(user, system) CPU seconds of every thread of pid, and its context switches."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    switches = sum(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if "ctxt_switches" in line)
    return int(fields[11]) / bench.TICK, int(fields[12]) / bench.TICK, switches


def run(name, proc, port, flv, players, duration, strace=None, profile=None):
    extra = (strace or 0) + (profile or 0)
    split0 = cpu_split(proc.pid)
    args = [LOAD, "--url", f"rtmp://127.0.0.1:{port}/live", "--duration", str(duration + extra), "--json",
            "--publishers", "1", "--paced", "--players", str(players), "--ramp-per-sec", "150", "--flv", flv]
    cpu0, rss0 = cpu_seconds(proc.pid), status_kib(proc.pid, "VmRSS")
    gen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rings = None
    t0 = time.time()
    if getattr(proc, "api", None):
        # Near the end of the window, every player still connected.
        time.sleep(max(1, duration - 3))
        rings = ring_kib(proc.api)
    time.sleep(max(0, duration - (time.time() - t0)))
    # The window: what the load generator reports covers it and what follows, so the server's
    # CPU is read at its end and scaled to the bytes the players received in it.
    cpu_window = cpu_seconds(proc.pid) - cpu0
    split = [b - a for a, b in zip(split0, cpu_split(proc.pid))]
    traced = {}
    if strace:
        traced["syscalls"] = bench.strace_counts(proc.pid, strace, os.path.dirname(flv))
    if profile:
        data = os.path.join(os.path.dirname(flv), f"perf-{proc.pid}.data")
        subprocess.run(["perf", "record", "-q", "-F", "999", "-g", "-p", str(proc.pid), "-o", data, "--",
                        "sleep", str(profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "sym",
                              "--percent-limit", "0.7", "-g", "none"], capture_output=True, text=True).stdout
        traced["profile"] = [line.strip() for line in rep.splitlines() if line.strip() and not line.startswith("#")][:40]
    stdout, stderr = gen.communicate(timeout=duration + extra + 120)
    if gen.returncode != 0:
        raise RuntimeError(f"{name}: load generator failed: {stderr[-2000:]}")
    load = json.loads(stdout.strip().splitlines()[-1])
    share = duration / max(1e-9, load.get("seconds", duration))
    row = {"target": name, "load": load, "cpu_s": cpu_window if extra else cpu_seconds(proc.pid) - cpu0,
           "peak_rss_kib": status_kib(proc.pid, "VmHWM"), "rss_growth_kib": status_kib(proc.pid, "VmRSS") - rss0}
    row.update(traced)
    row["user_s"], row["system_s"], row["context_switches"] = split
    gib = load.get("bytes_received", 0) * (share if extra else 1) / 2**30
    row["cpu_s_per_gib"] = row["cpu_s"] / gib if gib else float("nan")
    row["rss_per_player_kib"] = row["rss_growth_kib"] / max(1, players)
    # The shared rings (one per shard holding the stream) are reported apart, as perf/run.py
    # does for the edge; nginx-rtmp's own stream buffers stay in its growth.
    row["ring_kib"] = rings
    row["rss_per_player_less_rings_kib"] = (row["rss_growth_kib"] - (rings or 0)) / max(1, players)
    proc.terminate()
    proc.wait(timeout=30)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--players", type=int, default=300)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--shards", type=int, default=None)
    ap.add_argument("--merge-write", default=None, help="streamgate's --edge-merge-write (e.g. 100ms)")
    ap.add_argument("--strace", type=int, default=None)
    ap.add_argument("--profile", type=int, default=None)
    opts = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="local-fanout-") as tmp:
        flv = make_flv(tmp)
        for name, start in (("nginx-rtmp", nginx), ("streamgate local", lambda t: streamgate(t, opts.shards, opts.merge_write))):
            print(f"running {name} ...", file=sys.stderr)
            proc, port = start(tmp)
            rows.append(run(name, proc, port, flv, opts.players, opts.duration, opts.strace, opts.profile))
    lines = [f"## local fan-out: 1 paced publisher (1280x720, about 2 Mbit/s), {opts.players} RTMP players, "
             f"{opts.duration} s", "",
             f"{time.strftime('%Y-%m-%dT%H:%M:%S')}, {os.cpu_count()} CPUs, all processes on the same machine.", "",
             "| server | CPU-s | CPU-s/GiB | received MiB/s | peak RSS MiB | RSS growth/player KiB | rings MiB | RSS growth less rings/player KiB | video fps/player | players without media at end | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["load"]
        rings = "-" if r["ring_kib"] is None else f"{r['ring_kib'] / 1024:.1f}"
        lines.append(f"| {r['target']} | {r['cpu_s']:.2f} | {r['cpu_s_per_gib']:.3f} | "
                     f"{s.get('bytes_received', 0) / 2**20 / max(1e-9, s.get('seconds', 1)):.1f} | "
                     f"{r['peak_rss_kib'] / 1024:.1f} | {r['rss_per_player_kib']:.1f} | "
                     f"{rings} | "
                     f"{r['rss_per_player_less_rings_kib']:.1f} | "
                     f"{s.get('video_fps_per_player', 0):.1f} | {s.get('players_without_media_at_end', '?')} | "
                     f"{json.dumps(s.get('errors', {}))} |")
    ours, theirs = rows[1], rows[0]
    for r in rows:
        lines.append(f"- {r['target']}: user {r['user_s']:.2f} s, system {r['system_s']:.2f} s, "
                     f"{r['context_switches']} context switches in the window")
    lines += ["", f"- CPU per GiB, streamgate local / nginx-rtmp: {ours['cpu_s_per_gib'] / theirs['cpu_s_per_gib']:.2f}",
              f"- RSS growth per player, streamgate local / nginx-rtmp: "
              f"{ours['rss_per_player_kib'] / max(1e-9, theirs['rss_per_player_kib']):.2f}",
              f"- RSS growth per player less the shared rings, streamgate local / nginx-rtmp (its growth whole): "
              f"{ours['rss_per_player_less_rings_kib'] / max(1e-9, theirs['rss_per_player_kib']):.2f}",
              f"- peak RSS, streamgate local / nginx-rtmp: {ours['peak_rss_kib'] / max(1, theirs['peak_rss_kib']):.2f}",
              ""]
    for r in rows:
        if r.get("syscalls"):
            top = sorted(r["syscalls"].items(), key=lambda kv: -kv[1])[:8]
            lines.append(f"- {r['target']} system calls in {opts.strace} s: " + ", ".join(f"{k} {v}" for k, v in top))
        if r.get("profile"):
            lines += [f"- {r['target']} profile ({opts.profile} s, perf, self time by symbol):", "", "```"]
            lines += r["profile"] + ["```"]
    lines += ["", "<details><summary>raw</summary>", "", "```json", json.dumps(rows, indent=1), "```", "</details>"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
