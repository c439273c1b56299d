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

Per player: the least-squares slope of (RSS - rings) over the players at each reading (RSS
moves in steps of MiBs as the allocator commits memory, which a slope over several readings
evens out), and the plain first-to-last difference. `--targets haproxy,nginx` measure HAProxy
before the same origin, and nginx-rtmp serving the players itself, the same way.

usage: perf/edge_memory.py [--targets edge,local,haproxy,nginx] [--binary PATH ...] [--players N]
                           [--steps S] [--first F] [--fill S] [--http] [--rate 2M]
                           [--extra "--edge-cache-bytes 4MiB"]
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


def slope(points):
    """Least-squares slope of (x, y) points: y per x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def measure(target, binary, opts):
    """One target's readings: `edge` (streamgate --edge on before an nginx-rtmp origin), `local`
    (streamgate --local-origin on, the publisher terminated by it), `haproxy` (HAProxy in TCP
    mode before the origin) or `nginx` (players straight to the nginx-rtmp origin; its worker's
    RSS)."""
    tmp = tempfile.mkdtemp(prefix="edge-memory-")
    origin = R.Nginx(tmp)
    proxy = None
    gens = []
    try:
        if target == "edge":
            proxy = R.Streamgate(tmp, origin, "splice", None, binary, extra=["--edge", "on"] + opts.extra.split())
            port, pids = proxy.port, lambda: [proxy.pid]
        elif target == "local":
            proxy = R.Streamgate(tmp, origin, "splice", None, binary,
                                 extra=["--local-origin", "on"] + opts.extra.split())
            port, pids = proxy.port, lambda: [proxy.pid]
        elif target == "haproxy":
            proxy = R.Haproxy(tmp, origin.port)
            port, pids = proxy.port, lambda: [proxy.pid]
        else:
            port, pids = origin.port, origin.worker_pids
        flv = R.make_flv(tmp, "1280x720", opts.rate)
        run_for = str(opts.fill + opts.steps * (opts.players / 250 + 8) + 30)
        gens.append(subprocess.Popen([R.LOAD, "--url", f"rtmp://127.0.0.1:{port}/live", "--publishers", "1",
                                      "--paced", "--flv", flv, "--duration", run_for],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(3)
        http = opts.http and target in ("edge", "local")
        url = f"http://127.0.0.1:{proxy.http}/live" if http else f"rtmp://127.0.0.1:{port}/live"

        def players(n):
            gens.append(subprocess.Popen([R.LOAD, "--url", url, "--players", str(n), "--play-stream", "s0",
                                          "--duration", run_for, "--ramp-per-sec", "250"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def reading(n):
            time.sleep(1.5)  # the shards report once a second
            rss = sum(R.status_kib(pid, "VmRSS") for pid in pids())
            if hasattr(proxy, "edge_memory"):
                edge = proxy.edge_memory()
                return rss, edge["ring_kib"], edge["players"]
            return rss, 0, n

        players(opts.first)
        time.sleep(opts.fill)
        readings = [reading(opts.first)]
        for step in range(opts.steps):
            players(opts.players)
            time.sleep(opts.players / 250 + 5)
            readings.append(reading(opts.first + (step + 1) * opts.players))
        name = target if target in ("haproxy", "nginx") else f"{target} ({os.path.basename(binary)})"
        for rss, ring, n in readings:
            print(f"  {name}: {n:5d} players: RSS {rss / 1024:6.1f} MiB, rings {ring / 1024:5.1f} MiB, "
                  f"RSS - rings {(rss - ring) / 1024:6.1f} MiB")
        (rss0, ring0, n0), (rss1, ring1, n1) = readings[0], readings[-1]
        per = ((rss1 - ring1) - (rss0 - ring0)) / max(1, n1 - n0)
        fitted = slope([(n, rss - ring) for rss, ring, n in readings])
        print(f"{name}: (RSS - rings) per player added: {per:.1f} KiB first to last, {fitted:.1f} KiB fitted "
              f"over {len(readings)} readings ({n0} -> {n1} players), rings {ring1 / 1024:.1f} MiB", flush=True)
        return fitted
    finally:
        for g in gens:
            g.kill()
            g.wait()
        if proxy:
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
    ap.add_argument("--rate", default="2M", help="the publisher's video bit rate (ffmpeg's -b:v)")
    ap.add_argument("--targets", default="edge",
                    help="comma-separated: edge, local (streamgate --local-origin on), haproxy, nginx (the origin "
                         "serving the players itself); edge and local once per --binary")
    opts = ap.parse_args()
    results = []
    for target in opts.targets.split(","):
        for binary in (opts.binary or [R.PROXY]) if target in ("edge", "local") else [None]:
            results.append((target, binary, measure(target, binary, opts)))
    print("\nfitted KiB per player added:")
    for target, binary, per in results:
        print(f"  {target}{' ' + os.path.basename(binary) if binary else ''}: {per:.1f}")


if __name__ == "__main__":
    main()
