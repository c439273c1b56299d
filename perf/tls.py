#!/usr/bin/env python3
"""What TLS costs the proxy: the same HTTP-FLV body fetched through the HTTP stream listener and
through the HTTPS stream listener (--https-server), in one run, for each relay mode.

The origin is Python's static file server with one large .flv file (random bytes; the proxy
relays the body without reading it); the client is curl (with the test certificate, made here
with the openssl CLI). For every fetch the proxy's CPU seconds (utime+stime of all its threads,
from /proc) are read before and after, so the table gives the proxy's CPU-seconds per GiB
delivered, plain against TLS, and their ratio. Wall-clock throughput is printed too, but it is
bounded by curl and the origin on a shared machine: compare the CPU figures.

Usage: perf/tls.py [--size-mib 256] [--rounds 3] [--modes splice,copy] [--out PATH|-]
Needs target/release/streamgate (cargo build --release), curl and openssl.
"""

import argparse
import datetime
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "target/release/streamgate")
TICK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    return cert, key


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def start_origin(directory):
    handler = functools.partial(QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_proxy(tmp, relay, cert, key):
    log = open(os.path.join(tmp, f"proxy-{relay}.log"), "w+")
    args = [PROXY, "--relay", relay, "--tls-cert", cert, "--tls-key", key, "--https-server", "127.0.0.1:0"]
    for flag in ["--rtmp-server", "--http-server", "--http-api", "--webrtc-server", "--srt-server",
                 "--system-api", "--grpc"]:
        args += [flag, "127.0.0.1:0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "STREAMGATE_"))}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, cwd=tmp, env=env)
    deadline = time.time() + 20
    while time.time() < deadline:
        log.seek(0)
        line = next((l for l in log.read().splitlines() if " started: " in l), None)
        if line:
            ports = {name: int(re.search(rf"; {name} [0-9.]+:(\d+)", line).group(1))
                     for name in ["HTTP stream", "HTTPS stream", "System API"]}
            return proc, ports
        time.sleep(0.05)
    proc.kill()
    sys.exit(f"streamgate did not start: {open(log.name).read()}")


def register(api_port, http_port):
    body = json.dumps({"ip": "127.0.0.1", "server": "tls-perf", "service": "s", "pid": "1",
                       "rtmp": ["9"], "http": [str(http_port)]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/v1/srs/register", data=body, method="POST")
    urllib.request.urlopen(req, timeout=5).read()


def fetch(url, cert, size):
    """One curl fetch; returns (seconds, bytes, curl CPU seconds)."""
    t0 = time.time()
    before = os.times()
    out = subprocess.run(["curl", "-sS", "--cacert", cert, "-o", "/dev/null", "-w", "%{size_download}", url],
                         capture_output=True, text=True, check=True)
    after = os.times()
    got = int(out.stdout.strip() or 0)
    if got != size:
        sys.exit(f"{url}: got {got} of {size} bytes: {out.stderr}")
    return time.time() - t0, got, (after.children_user + after.children_system) - (before.children_user + before.children_system)


def measure(pid, url, cert, size, rounds):
    cpu0, wall, total, client = cpu_seconds(pid), 0.0, 0, 0.0
    for _ in range(rounds):
        secs, got, ccpu = fetch(url, cert, size)
        wall, total, client = wall + secs, total + got, client + ccpu
    cpu = cpu_seconds(pid) - cpu0
    return {"cpu": cpu, "gib": total / GIB, "cpu_per_gib": cpu / (total / GIB),
            "mib_s": total / (1 << 20) / wall, "client_cpu_per_gib": client / (total / GIB)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="splice,copy")
    ap.add_argument("--out")
    a = ap.parse_args()
    if not os.access(PROXY, os.X_OK):
        sys.exit(f"{PROXY} missing: cargo build --release")
    size = a.size_mib << 20
    rows = []
    with tempfile.TemporaryDirectory(prefix="tls-perf-") as tmp:
        cert, key = make_cert(tmp)
        www = os.path.join(tmp, "www", "live")
        os.makedirs(www)
        with open(os.path.join(www, "big.flv"), "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(a.size_mib):
                f.write(chunk)
        origin = start_origin(os.path.join(tmp, "www"))
        for relay in a.modes.split(","):
            proc, ports = start_proxy(tmp, relay, cert, key)
            try:
                register(ports["System API"], origin.server_address[1])
                time.sleep(0.5)
                plain = f"http://127.0.0.1:{ports['HTTP stream']}/live/big.flv"
                tls = f"https://localhost:{ports['HTTPS stream']}/live/big.flv"
                fetch(plain, cert, size)  # warm the page cache and the pin
                for name, url in [("plain", plain), ("tls", tls), ("plain again", plain), ("tls again", tls)]:
                    rows.append((relay, name, measure(proc.pid, url, cert, size, a.rounds)))
            finally:
                proc.terminate()
                proc.wait()
        origin.shutdown()
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = [f"## TLS against plain HTTP-FLV relay, {datetime.date.today()} ({commit})", "",
             f"`perf/tls.py --size-mib {a.size_mib} --rounds {a.rounds} --modes {a.modes}`: one {a.size_mib} MiB "
             f"body fetched {a.rounds} times per row with curl, through one proxy per relay mode "
             f"({os.cpu_count()} CPUs, {os.uname().release}). CPU time is counted in clock ticks "
             f"(1/{TICK} s): the plain rows rest on a few ticks.", "",
             "| relay | client | proxy CPU-s/GiB | vs plain | MiB/s (curl-bound) | curl CPU-s/GiB |",
             "|---|---|---|---|---|---|"]
    for relay, name, m in rows:
        base = next(r for rr, n, r in rows if rr == relay and n == "plain")
        ratio = m["cpu_per_gib"] / base["cpu_per_gib"] if base["cpu_per_gib"] else float("nan")
        lines.append(f"| {relay} | {name} | {m['cpu_per_gib']:.3f} | {ratio:.2f}x | {m['mib_s']:.0f} | "
                     f"{m['client_cpu_per_gib']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out != "-":
        path = a.out or os.path.join(ROOT, "perf/results", f"{datetime.date.today()}-tls.md")
        with open(path, "a") as f:
            f.write(text + "\n")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
