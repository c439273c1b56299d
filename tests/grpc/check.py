"""Asserts what the proxy's gRPC ModuleService and /metrics say about one published stream.

Usage: check.py GRPC_ADDR METRICS_URL STREAM_KEY
The stubs (marchproxy.proto.module_pb2*) must be importable (PYTHONPATH).
Prints one line per check; exits non-zero with the reason on the first failure.
"""

import sys
import time
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families
from marchproxy.proto import module_pb2, module_pb2_grpc


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain"):
            fail(f"/metrics Content-Type {ctype!r}")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def main():
    addr, metrics_url, key = sys.argv[1:4]
    with grpc.insecure_channel(addr) as channel:
        stub = module_pb2_grpc.ModuleServiceStub(channel)
        status = stub.GetStatus(module_pb2.Empty(), timeout=10)
        print(f"status: {status}".replace("\n", " "))
        if status.module_name != "rtmp-proxy" or not status.version:
            fail(f"module name/version: {status.module_name!r} {status.version!r}")
        if status.status != "healthy":
            fail(f"status {status.status!r} with one alive origin and one stream")
        if status.active_streams != 1 or status.total_bytes_in <= 0:
            fail(f"active_streams {status.active_streams}, bytes in {status.total_bytes_in}")
        if not status.uptime.endswith("s"):
            fail(f"uptime {status.uptime!r}")

        routes = stub.GetRoutes(module_pb2.Empty(), timeout=10).routes
        print(f"routes: {list(routes)}".replace("\n", " "))
        route = next((r for r in routes if r.stream_key == key), None)
        if route is None:
            fail(f"{key} not in GetRoutes: {[r.stream_key for r in routes]}")
        # The test publisher: 640x360 x264 ultrafast at 25 fps plus 64 kbit/s AAC.
        if not 50 <= route.input_bitrate <= 20000:
            fail(f"input_bitrate {route.input_bitrate} kbps is not plausible")
        if route.input_resolution != 360:
            fail(f"input_resolution {route.input_resolution}, published 360")
        if route.status != "active" or not route.source.startswith("rtmp://127.0.0.1:"):
            fail(f"status {route.status!r} source {route.source!r}")
        if route.encoder != "" or len(route.profiles) != 0 or route.bytes_processed <= 0:
            fail(f"encoder {route.encoder!r} profiles {list(route.profiles)} bytes {route.bytes_processed}")

        m = stub.GetMetrics(module_pb2.Empty(), timeout=10)
        print(f"metrics: {m}".replace("\n", " "))
        sm = next((s for s in m.streams if s.stream_key == key), None)
        if sm is None:
            fail(f"{key} not in GetMetrics")
        if not 20.0 <= sm.fps <= 30.0:
            fail(f"fps {sm.fps}, published 25")
        if sm.duration <= 0.0 or sm.dropped_frames != 0 or sm.encoder_speed != 0:
            fail(f"duration {sm.duration} dropped {sm.dropped_frames} speed {sm.encoder_speed}")
        if m.memory_mb <= 0 or not 0 <= m.cpu_percent <= 100 or m.gpu_percent != 0:
            fail(f"memory {m.memory_mb} cpu {m.cpu_percent} gpu {m.gpu_percent}")

        h = stub.HealthCheck(module_pb2.Empty(), timeout=10)
        print(f"health: {h}".replace("\n", " "))
        if h.status != "healthy" or h.message != "All systems operational" or list(h.errors):
            fail(f"health {h.status!r} {h.message!r} {list(h.errors)}")
        if not 0 <= h.response_time_ms < 1000:
            fail(f"response_time_ms {h.response_time_ms}")

    stream = (("stream", key),)
    first = scrape(metrics_url)
    time.sleep(2.5)
    second = scrape(metrics_url)
    for name in ("streamgate_stream_received_bytes_total",):
        a, b = first.get((name, stream)), second.get((name, stream))
        if a is None or b is None or not b > a:
            fail(f"{name} for {key} did not grow between scrapes: {a} -> {b}")
        print(f"{name}: {a} -> {b}")
    rtmp_in = (("protocol", "rtmp"),)
    a = first.get(("streamgate_received_bytes_total", rtmp_in))
    b = second.get(("streamgate_received_bytes_total", rtmp_in))
    if a is None or b is None or not b > a:
        fail(f"streamgate_received_bytes_total{{protocol=rtmp}}: {a} -> {b}")
    fps = second.get(("streamgate_stream_fps", stream))
    if fps is None or not 20 <= fps <= 30:
        fail(f"streamgate_stream_fps {fps}")
    if second.get(("streamgate_sessions", (("protocol", "rtmp"), ("role", "publish")))) != 1:
        fail("streamgate_sessions{rtmp,publish} is not 1")
    if second.get(("streamgate_health", (("level", "healthy"),))) != 1:
        fail("streamgate_health{level=healthy} is not 1")
    if second.get(("process_resident_memory_bytes", ())) is None:
        fail("no process_resident_memory_bytes")
    ups = [v for (n, _), v in second.items() if n == "streamgate_origin_up"]
    if ups != [1]:
        fail(f"streamgate_origin_up {ups}")
    print("OK")


if __name__ == "__main__":
    main()
