#!/usr/bin/env python3
"""Attacks a streamgate binary's limits on loopback and prints what it cost the proxy.

    python3 perf/limits.py [BINARY] [--seconds S]

Three attacks, each on a fresh proxy (--http-request-timeout 60s):

- grpc: 5000 idle TCP connections to the gRPC port (non-blocking connects, never a byte sent),
  with the descriptor limit the proxy set itself;
- grpc-low: the same with its limit lowered from outside (prlimit, soft and hard) to what it
  holds after startup plus 64;
- http: 500 idle TCP connections to the HTTP stream port, with the lowered limit.

For each: the proxy's CPU over S seconds (utime+stime of all its threads, /proc/PID/stat), the
descriptors it holds, how many log lines mention EMFILE, the System API's answer time during
the attack (a 3 s timeout) and after the idle clients left. After they left, the script waits
6 s (an episode ends at an accept that works 5 s after its last failure) and connects once to
every listener, then counts the "accepting again" lines. Needs prlimit (util-linux).
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf("SC_CLK_TCK")


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / HZ


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def api_time(port, timeout):
    t0 = time.time()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /api/v1/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = s.recv(100)
            if not data.startswith(b"HTTP/1.1 200"):
                return f"answered {data[:20]!r}"
    except OSError as e:
        return f"no answer ({e.__class__.__name__} after {time.time() - t0:.1f} s)"
    return f"{(time.time() - t0) * 1000:.0f} ms"


def start(binary, workdir, extra):
    ports = {name: free_port() for name in ["rtmp", "http", "api", "grpc", "sys"]}
    udp = {name: free_port(socket.SOCK_DGRAM) for name in ["srt", "rtc"]}
    log = open(os.path.join(workdir, "log"), "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "STREAMGATE_"))}
    args = [
        binary,
        "--rtmp-server", f"127.0.0.1:{ports['rtmp']}",
        "--http-server", f"127.0.0.1:{ports['http']}",
        "--http-api", f"127.0.0.1:{ports['api']}",
        "--grpc", f"127.0.0.1:{ports['grpc']}",
        "--system-api", f"127.0.0.1:{ports['sys']}",
        "--srt-server", f"127.0.0.1:{udp['srt']}",
        "--webrtc-server", f"127.0.0.1:{udp['rtc']}",
        *extra,
    ]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.time() + 20
    while time.time() < deadline and " started: " not in open(log.name).read():
        time.sleep(0.05)
    return proc, ports, log.name


def poke(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.recv(100)
    except OSError:
        pass


def attack(binary, name, seconds):
    with tempfile.TemporaryDirectory() as workdir:
        proc, ports, log = start(binary, workdir, ["--http-request-timeout", "60s"])
        try:
            time.sleep(0.5)
            if name == "grpc":
                limit = int(open(f"/proc/{proc.pid}/limits").read().split("Max open files")[1].split()[0])
            else:
                limit = fds(proc.pid) + 64
                subprocess.run(["prlimit", "--pid", str(proc.pid), f"--nofile={limit}:{limit}"], check=True)
            target, count = (ports["http"], 500) if name == "http" else (ports["grpc"], 5000)
            socks = []
            for _ in range(count):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", target))
                socks.append(s)
            time.sleep(1)
            c0 = cpu_seconds(proc.pid)
            during = api_time(ports["sys"], 3)
            time.sleep(max(0, seconds - 3))
            used = cpu_seconds(proc.pid) - c0
            held = fds(proc.pid)
            for s in socks:
                s.close()
            time.sleep(6)
            for port in [ports["grpc"], ports["sys"]] + [ports["http"]] * 20:
                poke(port)
            after = api_time(ports["sys"], 5)
            time.sleep(0.5)
            text = open(log).read()
            emfile = sum("Too many open files" in line for line in text.splitlines())
            again = sum("accepting again" in line for line in text.splitlines())
            print(
                f"{name:8} {binary}: CPU {used:.2f} s over {seconds} s ({used / seconds * 100:.0f}% of a core), "
                f"{held} descriptors (limit {limit}), {emfile} EMFILE log lines, {again} 'accepting again', "
                f"System API during: {during}, after: {after}, {len(text.splitlines())} log lines in all"
            )
        finally:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.path.join(os.path.dirname(__file__), "..", "target", "release", "streamgate")
    parser.add_argument("binary", nargs="?", default=default)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found; cargo build --release first")
    for name in ["grpc", "grpc-low", "http"]:
        attack(args.binary, name, args.seconds)


if __name__ == "__main__":
    main()
