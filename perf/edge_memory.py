#!/usr/bin/env python3
"""The edge's memory per player as a slope, its shared rings set apart.

perf/run.py reports (RSS growth - rings) / connections over a whole run, which also counts
what the first players bring once (the pull, the rings' allocator slack, code paths run for the
first time). This one separates them: an nginx-rtmp origin, one paced 2 Mbit/s publisher
through `streamgate --edge on`, FIRST players (so every shard pulls) left for FILL seconds
until the rings are full; then STEPS groups of N more players (streamgate-load processes),
reading the proxy's RSS and the rings' memory (/api/v1/shards `edge.cache_bytes`) after each.
Per player: the growth of (RSS - rings) from the first reading to the last, divided by the
players added.

usage: perf/edge_memory.py [--binary PATH ...] [--players N] [--steps S] [--first F] [--fill S]
                           [--http] [--extra "--edge-cache-bytes 4MiB"]
Several --binary: measured one after the other in the same run (before/after comparisons).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402


def measure(binary, opts):
    tmp = tempfile.mkdtemp(prefix="edge-memory-")
    origin = R.Nginx(tmp)
    proxy = R.Streamgate(tmp, origin, "splice", None, binary, extra=["--edge", "on"] + opts.extra.split())
    gens = []
    try:
        flv = R.make_flv(tmp, "1280x720", "2M")
        run_for = str(opts.fill + opts.steps * (opts.players / 250 + 8) + 30)
        gens.append(subprocess.Popen([R.LOAD, "--url", f"rtmp://127.0.0.1:{proxy.port}/live", "--publishers", "1",
                                      "--paced", "--flv", flv, "--duration", run_for],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(3)
        url = f"http://127.0.0.1:{proxy.http}/live" if opts.http else f"rtmp://127.0.0.1:{proxy.port}/live"

        def players(n):
            gens.append(subprocess.Popen([R.LOAD, "--url", url, "--players", str(n), "--play-stream", "s0",
                                          "--duration", run_for, "--ramp-per-sec", "250"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def reading():
            time.sleep(1.5)  # the shards report once a second
            edge = proxy.edge_memory()
            return R.status_kib(proxy.pid, "VmRSS"), edge["ring_kib"], edge["players"]

        players(opts.first)
        time.sleep(opts.fill)
        readings = [reading()]
        for _ in range(opts.steps):
            players(opts.players)
            time.sleep(opts.players / 250 + 5)
            readings.append(reading())
        for rss, ring, n in readings:
            print(f"  {n:5d} players: RSS {rss / 1024:6.1f} MiB, rings {ring / 1024:5.1f} MiB, "
                  f"RSS - rings {(rss - ring) / 1024:6.1f} MiB")
        (rss0, ring0, n0), (rss1, ring1, n1) = readings[0], readings[-1]
        per = ((rss1 - ring1) - (rss0 - ring0)) / max(1, n1 - n0)
        print(f"{os.path.basename(binary)}: (RSS - rings) per player added: {per:.1f} KiB "
              f"({n0} -> {n1} players), rings {ring1 / 1024:.1f} MiB", flush=True)
    finally:
        for g in gens:
            g.kill()
            g.wait()
        proxy.stop()
        origin.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", help="streamgate binary (default target/release/streamgate)")
    ap.add_argument("--players", type=int, default=200, help="players added per step")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--first", type=int, default=10, help="players before the first reading")
    ap.add_argument("--fill", type=float, default=45, help="seconds for the rings to fill before it")
    ap.add_argument("--http", action="store_true", help="HTTP-FLV players instead of RTMP")
    ap.add_argument("--extra", default="", help="more streamgate flags")
    opts = ap.parse_args()
    for binary in opts.binary or [R.PROXY]:
        measure(binary, opts)


if __name__ == "__main__":
    main()
