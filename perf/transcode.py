#!/usr/bin/env python3
"""The transcode scenario: the same live 720p30 stream through streamgate's in-process ladder
(--transcode on) and through the ffmpeg CLI doing the same ladder with the same settings, one
after the other in one run, against one nginx-rtmp origin.

Both play the stream from the origin while ffmpeg publishes a 1280x720 30 fps file in real time
(-re): decode once, 720p unscaled + 480p + 360p (bicubic), libx264 with the same preset, bit
rates, 2 s GOP (keyint_min = GOP, no scene cut, forced IDR on segment boundaries), AAC 128k
stereo, the dash muxer with hls_playlist=1 (2 s segments). Reported per target:

  cpu_s          CPU seconds of the transcoding process over the run (streamgate: the whole
                 proxy, which also relays the publish; the CLI: its rusage)
  frames         video frames encoded per rung (a job behind real time drops frames; the CLI
                 lags and is stopped 5 s after the publisher left)
  cpu_s_per_min  cpu_s per encoded frame, times 30 fps x 60 s: one output minute of the ladder
  speed          output seconds (frames / 30) per CPU second times the CPUs: how many times real
                 time the machine's cores could carry
  first_segment  seconds from the publish's start to each rung's first playable segment
                 (its playlist lists a segment)
  dropped        frames dropped to keep up (streamgate's job; the CLI never drops, it lags)

usage: perf/transcode.py [--seconds 30] [--preset veryfast] [--out PATH|-]
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import run  # noqa: E402  (the origin, ports and CPU helpers of the relay scenarios)

RUNGS = [("720p", 1280, 720, 3000), ("480p", 854, 480, 1500), ("360p", 640, 360, 800)]
FPS = 30
SEGMENT = 2


def make_source(tmp, seconds):
    path = os.path.join(tmp, f"src-720p30-{seconds}s.flv")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:v", "libx264", "-preset", "veryfast",
         "-b:v", "4M", "-maxrate", "4M", "-bufsize", "8M", "-g", str(FPS * SEGMENT), "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-t", str(seconds), "-f", "flv", path], check=True)
    return path


def publish(src, url):
    return subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-i", src, "-c", "copy", "-f", "flv", url],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def watch_first_segments(folder, t0, stop):
    """Seconds from t0 until each rung's playlist lists a segment."""
    found = {}

    def loop():
        while not stop.is_set() and len(found) < len(RUNGS):
            for i in range(len(RUNGS)):
                if i in found:
                    continue
                try:
                    with open(os.path.join(folder, f"media_{i}.m3u8")) as f:
                        if "#EXTINF" in f.read():
                            found[i] = time.time() - t0
                except OSError:
                    pass
            time.sleep(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return found, thread


def cli_command(url, out, preset):
    split = "[0:v]split=3[v0][v1][v2];[v1]scale=854:480:flags=bicubic[s1];[v2]scale=640:360:flags=bicubic[s2]"
    gop = str(FPS * SEGMENT)
    cmd = ["ffmpeg", "-hide_banner", "-v", "error", "-stats", "-i", url, "-filter_complex", split,
           "-map", "[v0]", "-map", "[s1]", "-map", "[s2]", "-map", "0:a",
           "-c:v", "libx264", "-preset", preset, "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
           "-forced-idr", "1", "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT})", "-pix_fmt", "yuv420p",
           # The frames as they come, as the in-process job encodes them (no duplicates for gaps).
           "-fps_mode", "passthrough"]
    for i, (_, _, _, kbps) in enumerate(RUNGS):
        cmd += [f"-b:v:{i}", f"{kbps}k", f"-maxrate:v:{i}", f"{kbps}k", f"-bufsize:v:{i}", f"{kbps * 2}k"]
    cmd += ["-c:a", "aac", "-b:a", "128k", "-ac", "2",
            "-f", "dash", "-seg_duration", str(SEGMENT), "-use_template", "1", "-use_timeline", "1",
            "-window_size", "6", "-extra_window_size", "4", "-remove_at_exit", "0",
            "-adaptation_sets", "id=0,streams=v id=1,streams=a", "-hls_playlist", "1",
            "-hls_master_name", "master.m3u8", os.path.join(out, "manifest.mpd")]
    return cmd


def stop_cli(proc):
    """SIGINT, as a user's q; if the CLI is still running 10 s later (it can hang in a blocking
    read of the RTMP input), SIGTERM, then SIGKILL. Returns wait4's status and usage."""
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        proc.send_signal(sig)
        end = time.time() + wait
        while time.time() < end:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                return status, usage
            time.sleep(0.1)
    _, status, usage = os.wait4(proc.pid, 0)
    return status, usage


def run_cli(tmp, origin, src, seconds, preset):
    out = os.path.join(tmp, "cli")
    os.makedirs(out)
    url = f"rtmp://127.0.0.1:{origin.port}/live/cli"
    t0 = time.time()
    pub = publish(src, url)
    stop = threading.Event()
    found, watcher = watch_first_segments(out, t0, stop)
    log = open(os.path.join(tmp, "cli.log"), "w")
    cpu, status = 0.0, None
    deadline = time.time() + 20
    start = lambda: subprocess.Popen(cli_command(url, out, preset), stdin=subprocess.DEVNULL,  # noqa: E731
                                     stdout=subprocess.DEVNULL, stderr=log)
    proc, ended = start(), None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            cpu += usage.ru_utime + usage.ru_stime
            if os.path.exists(os.path.join(out, "manifest.mpd")) or time.time() > deadline:
                break
            time.sleep(0.2)  # not published yet: the CLI cannot play it, try again
            proc = start()
            continue
        if ended is None and pub.poll() is not None:
            ended = time.time()
        if ended is not None and time.time() - ended > 5:
            # nginx-rtmp keeps a player connected after the publisher left: stop the CLI as a
            # user would (q / SIGINT), so it flushes its encoders and writes the trailer.
            status, usage = stop_cli(proc)
            cpu += usage.ru_utime + usage.ru_stime
            break
        time.sleep(0.1)
    pub.wait(timeout=seconds + 60)
    stop.set()
    watcher.join()
    log.close()
    frames = re.findall(r"frame=\s*(\d+)", open(os.path.join(tmp, "cli.log")).read())
    return {"target": "ffmpeg CLI", "cpu_s": cpu, "first_segment": found, "dropped": None,
            "exit": f"exit {os.waitstatus_to_exitcode(status)} (stopped)", "job_speed": None,
            "frames": int(frames[-1]) if frames else 0}


def run_streamgate(tmp, origin, src, seconds, preset):
    out = os.path.join(tmp, "abr")
    rtmp, http, api = run.free_port(), run.free_port(), run.free_port()
    log = open(os.path.join(tmp, "streamgate.log"), "w")
    proc = subprocess.Popen(
        [run.PROXY, "--rtmp-server", f"127.0.0.1:{rtmp}", "--http-server", f"127.0.0.1:{http}",
         "--http-api", f"127.0.0.1:{run.free_port()}", "--webrtc-server", f"127.0.0.1:{run.free_port()}",
         "--srt-server", f"127.0.0.1:{run.free_port()}", "--system-api", f"127.0.0.1:{api}",
         "--grpc", f"127.0.0.1:{run.free_port()}", "--log-level", "warn",
         "--transcode", "on", "--transcode-dir", out, "--transcode-grace", "120s", "--preset", preset],
        stdout=subprocess.DEVNULL, stderr=log)
    run.wait_port(api)
    body = json.dumps({"ip": "127.0.0.1", "server": "bench", "service": "origin", "pid": "1",
                       **origin.registration()}).encode()
    urllib.request.urlopen(f"http://127.0.0.1:{api}/api/v1/srs/register", body, timeout=5).read()
    run.wait_port(rtmp)
    cpu0 = run.cpu_seconds(proc.pid)
    t0 = time.time()
    pub = publish(src, f"rtmp://127.0.0.1:{rtmp}/live/bench")
    stop = threading.Event()
    found, watcher = watch_first_segments(os.path.join(out, "bench"), t0, stop)
    pub.wait(timeout=seconds + 60)
    job = {}
    deadline = time.time() + 30
    while time.time() < deadline:
        streams = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{api}/api/v1/streams", timeout=5).read())
        job = next((s["transcode"] for s in streams.get("streams", []) if s.get("transcode")), {}) or {}
        if job.get("status") in ("complete", "error"):
            break
        time.sleep(0.2)
    cpu = run.cpu_seconds(proc.pid) - cpu0
    stop.set()
    watcher.join()
    proc.terminate()
    proc.wait(timeout=30)
    return {"target": "streamgate --transcode", "cpu_s": cpu, "first_segment": found,
            "dropped": job.get("dropped_frames"), "exit": job.get("status"), "job_speed": job.get("speed"),
            "frames": job.get("frames", 0)}


def table(rows, seconds, preset):
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    lines = [f"## transcode: 720p30 source, {seconds} s, preset {preset}, {cores} CPUs, load average "
             f"{load:.1f} at the end ({datetime.datetime.now().isoformat(timespec='seconds')})", "",
             "| target | CPU-s | frames encoded (per rung) | CPU-s per output minute | speed on all cores | "
             "job speed (media s per busy s) | dropped frames | first segment 720p / 480p / 360p (s from publish) | end |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        # Per frame encoded (a job behind real time drops frames, the CLI lags and may be
        # stopped before the end): CPU-s for 60 s of 30 fps output, and output seconds per
        # second of all cores.
        frames = max(r["frames"], 1)
        per_min = r["cpu_s"] / frames * FPS * 60
        speed = (frames / FPS) / (r["cpu_s"] / cores) if r["cpu_s"] else 0
        first = " / ".join(f"{r['first_segment'][i]:.1f}" if i in r["first_segment"] else "-" for i in range(len(RUNGS)))
        job_speed = "-" if r["job_speed"] is None else f"{r['job_speed']:.2f}"
        dropped = "-" if r["dropped"] is None else str(r["dropped"])
        lines.append(f"| {r['target']} | {r['cpu_s']:.1f} | {r['frames']} | {per_min:.1f} | {speed:.2f}x | {job_speed} | "
                     f"{dropped} | {first} | {r['exit']} |")
    if len(rows) == 2 and rows[1]["cpu_s"] and rows[0]["frames"] and rows[1]["frames"]:
        ratio = (rows[0]["cpu_s"] / rows[0]["frames"]) / (rows[1]["cpu_s"] / rows[1]["frames"])
        lines += ["", f"streamgate / CLI CPU-seconds per encoded frame: {ratio:.2f}"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--out")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="streamgate-transcode-")
    origin = run.Nginx(tmp)
    try:
        src = make_source(tmp, a.seconds)
        rows = [run_streamgate(tmp, origin, src, a.seconds, a.preset), run_cli(tmp, origin, src, a.seconds, a.preset)]
    finally:
        origin.stop()
    text = table(rows, a.seconds, a.preset)
    print(text)
    out = a.out or os.path.join(os.path.dirname(__file__), "results", f"{datetime.date.today()}-transcode.md")
    if out != "-":
        with open(out, "a") as f:
            f.write(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
