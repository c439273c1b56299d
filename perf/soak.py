#!/usr/bin/env python3
"""A soak run: one live stream at an ordinary rate (25 fps H.264 + AAC, about 68 messages a
second) through the release streamgate for hours, with third-party players beside the load
generator's, checking that nothing freezes and nothing grows.

  origin     nginx-rtmp (RTMP) and `streamgate-load origin-flv` (HTTP-FLV), registered as one
  publisher  streamgate-load, paced, to rtmp://proxy/live/soak0
  players    ffmpeg over RTMP, rtmpdump over RTMP, ffmpeg over HTTP-FLV (third-party), and
             --load-players RTMP and as many HTTP-FLV players of the load generator

Every --every seconds it records the proxy's resident memory, descriptors and CPU seconds and
every player's count (ffmpeg's frames, rtmpdump's media seconds), as CSV rows. At the end it
writes a summary (first and last memory and descriptors, the largest, whether every count
grew in every interval) to perf/results/soak-<date>-<commit>.md (or --out; - prints only) and
exits 1 if a count stopped growing or memory grew by more than --rss-slack-mib.

Usage: perf/soak.py [--hours H | --minutes M] [--relay splice|copy] [--every S]
                    [--load-players N] [--out PATH|-]
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float)
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--relay", default="splice", choices=["splice", "copy"])
    ap.add_argument("--every", type=float, default=60)
    ap.add_argument("--load-players", type=int, default=20)
    ap.add_argument("--rss-slack-mib", type=float, default=16)
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

    rows = []
    header = "seconds,rss_kib,fds,cpu_s,ffmpeg_rtmp_frames,ffmpeg_flv_frames,rtmpdump_ms"
    print(header, flush=True)
    t0 = time.time()
    stopped = []
    try:
        while time.time() - t0 < seconds:
            time.sleep(a.every)
            pid = proxy.pid
            row = (round(time.time() - t0), run.status_kib(pid, "VmRSS"), fds(pid), round(run.cpu_seconds(pid), 2),
                   ffmpeg_frames(progress["ffmpeg_rtmp"]), ffmpeg_frames(progress["ffmpeg_flv"]),
                   rtmpdump_ms(os.path.join(tmp, "rtmpdump.log")))
            if rows:
                for i, name in ((4, "ffmpeg RTMP"), (5, "ffmpeg HTTP-FLV"), (6, "rtmpdump")):
                    if row[i] <= rows[-1][i]:
                        stopped.append(f"{name} did not grow between {rows[-1][0]} s and {row[0]} s")
            rows.append(row)
            print(",".join(map(str, row)), flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        flv_origin.stop()
        nginx.stop()

    warm = rows[min(2, len(rows) - 1)]
    peak = max(r[1] for r in rows[2:] or rows)
    grew_kib = peak - warm[1]
    last = rows[-1]
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                            cwd=run.ROOT).stdout.strip()
    lines = [
        f"# Soak run {datetime.date.today()} ({commit}), relay {a.relay}, {seconds / 3600:.2f} h",
        "",
        "`perf/soak.sh " + " ".join(sys.argv[1:]) + "` on " + os.uname().nodename,
        "",
        f"- messages per player session: about {last[4] * 68 // 25} (ffmpeg RTMP {last[4]} video frames, "
        f"HTTP-FLV {last[5]}, rtmpdump {last[6] / 1000:.0f} s of media)",
        f"- proxy RSS after warm-up {warm[1]} KiB, at the end {last[1]} KiB, largest {peak} KiB "
        f"(+{grew_kib} KiB); descriptors {warm[2]} -> {last[2]}; CPU {last[3]:.1f} s "
        f"({last[3] / max(1, last[0]) * 100:.2f}% of a core)",
        f"- every count grew in every {a.every:.0f} s interval: {'yes' if not stopped else 'NO'}",
    ] + [f"  - {s}" for s in stopped[:20]] + ["", "```", header] + [",".join(map(str, r)) for r in rows] + ["```", ""]
    text = "\n".join(lines)
    out = a.out or os.path.join(run.ROOT, "perf/results", f"soak-{datetime.date.today()}-{commit}.md")
    if out != "-":
        with open(out, "w") as f:
            f.write(text)
    print(text)
    failed = stopped or grew_kib > a.rss_slack_mib * 1024
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
