#!/usr/bin/env python3
"""A soak run: one live stream at an ordinary rate (25 fps H.264 + AAC, about 68 messages a
second) through the release streamgate for hours, with third-party players beside the load
generator's (fan-out), and churn beside it: every --churn-every seconds a batch of short-lived
players (RTMP and HTTP-FLV, --churn-players each) and a short-lived publisher of its own
stream come and go. It checks that nothing freezes and nothing grows.

  origin     nginx-rtmp (RTMP) and `streamgate-load origin-flv` (HTTP-FLV), registered as one
  publisher  streamgate-load, paced, to rtmp://proxy/live/soak0
  players    ffmpeg over RTMP, rtmpdump over RTMP, ffmpeg over HTTP-FLV (third-party), and
             --load-players RTMP and as many HTTP-FLV players of the load generator

Every --every seconds (10 by default) it records the proxy's resident memory, descriptors and
CPU seconds, every long-lived player's count (ffmpeg's frames, rtmpdump's media seconds) and
the churn sessions started so far, as CSV rows. Flat means no growth after the first
--warmup-minutes: the largest RSS after the warm-up minus the RSS at its end is within
--rss-slack-mib, and the descriptors at the end of the run are within --fd-slack of those at
the end of the warm-up (churn sessions open at either instant make the slack). At the end it
writes a summary to perf/results/soak-<date>-<commit>.md (or --out; - prints only) and exits 1
if a count stopped growing or memory or descriptors grew.

Usage: perf/soak.py [--hours H | --minutes M] [--relay splice|copy] [--every S]
                    [--load-players N] [--churn-every S] [--churn-players N]
                    [--warmup-minutes M] [--out PATH|-]
perf/soak.sh builds the release binaries first.
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the scenario runner's origin, proxy and /proc helpers)


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def ffmpeg_frames(progress):
    frames = 0
    try:
        with open(progress) as f:
            for line in f:
                if line.startswith("frame="):
                    frames = int(line.split("=", 1)[1])
    except (OSError, ValueError):
        pass
    return frames


def rtmpdump_ms(log):
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return 0
    for line in reversed(tail.replace("\r", "\n").splitlines()):
        if " kB / " in line and " sec" in line:
            try:
                return int(float(line.split(" kB / ")[1].split(" sec")[0]) * 1000)
            except ValueError:
                continue
    return 0


CHURN_PLAYER_S = 8
CHURN_PUBLISH_S = 20


class Churn:
    """Short-lived sessions beside the long ones: every --churn-every seconds a batch of
    --churn-players load-generator players (RTMP and HTTP-FLV in turn) of the soak stream for
    CHURN_PLAYER_S seconds, and, whenever the last one has ended, a paced publisher of its own
    stream (churn0) for CHURN_PUBLISH_S seconds."""

    def __init__(self, a, rtmp, http, flv, tmp):
        self.a, self.rtmp, self.http, self.flv = a, rtmp, http, flv
        self.log = open(os.path.join(tmp, "churn.log"), "w")
        self.live = []
        self.publisher = None
        self.sessions = 0
        self.turn = 0
        self.next = time.time()

    def spawn(self, args):
        return subprocess.Popen([run.LOAD] + args, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)

    def step(self):
        self.live = [p for p in self.live if p.poll() is None]
        if self.a.churn_players <= 0 or time.time() < self.next:
            return
        self.next += self.a.churn_every
        url = f"rtmp://127.0.0.1:{self.rtmp}/live" if self.turn % 2 == 0 else f"http://127.0.0.1:{self.http}/live"
        self.turn += 1
        self.live.append(self.spawn(["--url", url, "--players", str(self.a.churn_players), "--play-stream", "soak0",
                                     "--duration", str(CHURN_PLAYER_S), "--report-every", "60"]))
        self.sessions += self.a.churn_players
        if self.publisher is None or self.publisher.poll() is not None:
            self.publisher = self.spawn(["--url", f"rtmp://127.0.0.1:{self.rtmp}/live", "--publishers", "1",
                                         "--stream-prefix", "churn", "--flv", self.flv, "--paced",
                                         "--duration", str(CHURN_PUBLISH_S), "--report-every", "60"])
            self.sessions += 1

    def stop(self):
        for p in self.live + ([self.publisher] if self.publisher else []):
            if p.poll() is None:
                p.terminate()
        for p in self.live + ([self.publisher] if self.publisher else []):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float)
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--relay", default="splice", choices=["splice", "copy"])
    ap.add_argument("--every", type=float, default=10)
    ap.add_argument("--load-players", type=int, default=20)
    ap.add_argument("--churn-every", type=float, default=5)
    ap.add_argument("--churn-players", type=int, default=10)
    ap.add_argument("--warmup-minutes", type=float, default=3)
    ap.add_argument("--rss-slack-mib", type=float, default=16)
    ap.add_argument("--fd-slack", type=int, default=64)
    ap.add_argument("--out")
    a = ap.parse_args()
    seconds = a.hours * 3600 if a.hours else (a.minutes or 60) * 60
    tmp = tempfile.mkdtemp(prefix="streamgate-soak-")
    flv = run.make_flv(tmp, "640x360", "1M")
    procs = []

    def spawn(name, args):
        log = open(os.path.join(tmp, name + ".log"), "w")
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        procs.append(p)
        return p

    nginx = run.Nginx(tmp)
    flv_origin = run.FlvOrigin(tmp, flv)
    rtmp, http, api = run.free_port(), run.free_port(), run.free_port()
    proxy = spawn("streamgate", [
        run.PROXY, "--rtmp-server", f"127.0.0.1:{rtmp}", "--http-server", f"127.0.0.1:{http}",
        "--http-api", f"127.0.0.1:{run.free_port()}", "--webrtc-server", f"127.0.0.1:{run.free_port()}",
        "--srt-server", f"127.0.0.1:{run.free_port()}", "--system-api", f"127.0.0.1:{api}",
        "--grpc", f"127.0.0.1:{run.free_port()}", "--relay", a.relay])
    run.wait_port(api)
    body = ('{"ip":"127.0.0.1","server":"soak","service":"o","pid":"1",'
            f'"rtmp":["{nginx.port}"],"http":["{flv_origin.port}"]}}').encode()
    import urllib.request
    urllib.request.urlopen(f"http://127.0.0.1:{api}/api/v1/srs/register", body, timeout=5).read()
    run.wait_port(rtmp)
    dur = str(int(seconds) + 60)
    spawn("publisher", [run.LOAD, "--url", f"rtmp://127.0.0.1:{rtmp}/live", "--publishers", "1",
                        "--stream-prefix", "soak", "--flv", flv, "--paced", "--duration", dur, "--report-every", "60"])
    time.sleep(5)
    rtmp_url, flv_url = f"rtmp://127.0.0.1:{rtmp}/live/soak0", f"http://127.0.0.1:{http}/live/soak0.flv"
    progress = {}
    for name, url in (("ffmpeg_rtmp", rtmp_url), ("ffmpeg_flv", flv_url)):
        progress[name] = os.path.join(tmp, name + ".progress")
        spawn(name, ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", progress[name],
                     "-i", url, "-c", "copy", "-f", "flv", "-y", "/dev/null"])
    spawn("rtmpdump", ["rtmpdump", "--live", "-r", rtmp_url, "-o", "/dev/null"])
    if a.load_players:
        n = str(a.load_players)
        spawn("load_rtmp", [run.LOAD, "--url", f"rtmp://127.0.0.1:{rtmp}/live", "--players", n,
                            "--play-stream", "soak0", "--duration", dur, "--report-every", "60"])
        spawn("load_flv", [run.LOAD, "--url", f"http://127.0.0.1:{http}/live", "--players", n,
                           "--play-stream", "soak0", "--duration", dur, "--report-every", "60"])

    churn = Churn(a, rtmp, http, flv, tmp)
    rows = []
    header = "seconds,rss_kib,fds,cpu_s,ffmpeg_rtmp_frames,ffmpeg_flv_frames,rtmpdump_ms,churn_sessions"
    print(header, flush=True)
    t0 = time.time()
    stopped = []
    try:
        next_sample = t0 + a.every
        while time.time() - t0 < seconds:
            churn.step()
            time.sleep(max(0.0, min(a.churn_every, next_sample - time.time())))
            if time.time() < next_sample:
                continue
            next_sample += a.every
            pid = proxy.pid
            row = (round(time.time() - t0), run.status_kib(pid, "VmRSS"), fds(pid), round(run.cpu_seconds(pid), 2),
                   ffmpeg_frames(progress["ffmpeg_rtmp"]), ffmpeg_frames(progress["ffmpeg_flv"]),
                   rtmpdump_ms(os.path.join(tmp, "rtmpdump.log")), churn.sessions)
            if rows:
                for i, name in ((4, "ffmpeg RTMP"), (5, "ffmpeg HTTP-FLV"), (6, "rtmpdump")):
                    if row[i] <= rows[-1][i]:
                        stopped.append(f"{name} did not grow between {rows[-1][0]} s and {row[0]} s")
            rows.append(row)
            print(",".join(map(str, row)), flush=True)
    finally:
        churn.stop()
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        flv_origin.stop()
        nginx.stop()

    warmed = [r for r in rows if r[0] >= a.warmup_minutes * 60] or rows[-1:]
    warm = warmed[0]
    peak = max(r[1] for r in warmed)
    grew_kib = peak - warm[1]
    last = rows[-1]
    fd_growth = last[2] - warm[2]
    flat = grew_kib <= a.rss_slack_mib * 1024 and fd_growth <= a.fd_slack
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                            cwd=run.ROOT).stdout.strip()
    lines = [
        f"# Soak run {datetime.date.today()} ({commit}), relay {a.relay}, {seconds / 3600:.2f} h",
        "",
        "`perf/soak.sh " + " ".join(sys.argv[1:]) + "` on " + os.uname().nodename,
        "",
        f"- fan-out: one paced publisher, ffmpeg RTMP and HTTP-FLV players, rtmpdump, and "
        f"{a.load_players} RTMP + {a.load_players} HTTP-FLV load-generator players for the whole run",
        f"- churn: every {a.churn_every:g} s {a.churn_players} RTMP or HTTP-FLV players for "
        f"{CHURN_PLAYER_S} s, and a publisher of its own stream for {CHURN_PUBLISH_S} s: "
        f"{last[7]} churn sessions started",
        f"- messages per player session: about {last[4] * 68 // 25} (ffmpeg RTMP {last[4]} video frames, "
        f"HTTP-FLV {last[5]}, rtmpdump {last[6] / 1000:.0f} s of media)",
        f"- proxy RSS after the {a.warmup_minutes:g}-minute warm-up {warm[1]} KiB, at the end {last[1]} KiB, "
        f"largest since {peak} KiB (+{grew_kib} KiB); descriptors {warm[2]} -> {last[2]} "
        f"({fd_growth:+d}); CPU {last[3]:.1f} s ({last[3] / max(1, last[0]) * 100:.2f}% of a core)",
        f"- flat after the warm-up (RSS within {a.rss_slack_mib:g} MiB, descriptors within {a.fd_slack}): "
        f"{'yes' if flat else 'NO'}",
        f"- every count grew in every {a.every:.0f} s interval: {'yes' if not stopped else 'NO'}",
    ] + [f"  - {s}" for s in stopped[:20]] + ["", "```", header] + [",".join(map(str, r)) for r in rows] + ["```", ""]
    text = "\n".join(lines)
    out = a.out or os.path.join(run.ROOT, "perf/results", f"soak-{datetime.date.today()}-{commit}.md")
    if out != "-":
        with open(out, "w") as f:
            f.write(text)
    print(text)
    failed = stopped or not flat
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
