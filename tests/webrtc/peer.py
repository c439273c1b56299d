#!/usr/bin/env python3
"""Real WebRTC peers for tests/webrtc_proxy.rs, built on aiortc (PyPI; scripts/test.sh installs
the pinned version into target/py).

    peer.py origin --sites N
        A WHIP/WHEP origin with N sites. Each site is one registered "origin server": its own
        HTTP API port and its own WebRTC UDP port, both chosen by the kernel and printed on the
        first stdout line: {"event": "ready", "sites": [{"api": P, "rtc": U}, ...]}.
        POST /rtc/v1/whip/?app=A&stream=S  (offer -> 201 answer, absolute Location)
        POST /rtc/v1/whep/?app=A&stream=S  (offer -> 201 answer; sends the newest WHIP video)
        DELETE <Location>                  (closes that session, 200)
        GET /stats                         (what the origin saw, JSON; asked directly, not
                                            through the proxy)
        The WHEP sites relay the video of the newest WHIP publisher of any site (aiortc's
        MediaRelay), so every frame a WHEP player counts came from a WHIP publisher.

    peer.py publish --url URL --seconds S
        WHIP: sends a 160x120 30 fps video track (VP8) for S seconds, then DELETEs its
        resource through the Location it was given (made absolute against URL).

    peer.py play --url URL --seconds S
        WHEP: receives one video track and counts decoded frames for S seconds.

    peer.py offer --url URL --seconds S [--connect-after A] [--delete-after D]
        WHIP, late or never: posts the offer (a video track, as publish) but does not apply the
        answer, so no STUN check, DTLS or media goes until it does: after A seconds with
        --connect-after (ICE starts then: "connected", and video until S), never without. With
        --delete-after it DELETEs its resource after D seconds ("deleted"). Ends after S
        seconds ("done").

Every event goes to stdout as one JSON object a line, flushed at once: "answer" (status,
Location, Content-Type, the answer's a=candidate lines, the USERNAME of the client's
connectivity checks), "state" (ICE/connection states),
"connected" (local and remote address of the nominated ICE pair), "frames" (a count, every
half second), "deleted" (the DELETE's status), "done". A failure is {"event": "error", ...}
and exit status 1.

How ICE is kept honest on one machine:
- aioice gathers host candidates on every interface except 127.0.0.1; here it gathers on
  127.0.0.1 only (nothing leaves loopback) and no STUN server is asked (aiortc's default is a
  public one).
- An origin site binds its one ICE socket on its registered WebRTC port.
- The origin never learns a usable client address from the offer: it rewrites the offer's
  candidates to a local socket that it never reads, as if the client were behind a NAT. It can
  only answer connectivity checks where they came from, which is the proxy. The client's only
  remote candidate is the one in the answer, which the proxy rewrote to itself. So ICE, DTLS
  and SRTP can only flow through the proxy, and "connected" shows which addresses they used.
"""

import argparse
import asyncio
import contextvars
import fractions
import itertools
import json
import re
import socket
import sys
import time
import ssl
import urllib.parse

import aioice.ice
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from av import VideoFrame

# Loopback only (aioice leaves 127.0.0.1 out of its host candidates).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

# The port the next ICE socket created in this context binds (an origin site's WebRTC port).
BIND_PORT: contextvars.ContextVar = contextvars.ContextVar("bind_port", default=None)

MAX_BODY = 256 * 1024


def emit(event, **fields):
    print(json.dumps({"event": event, "t": round(time.monotonic(), 3), **fields}), flush=True)


def pin_ice_ports(loop):
    """aioice binds its host sockets on port 0; in a context with BIND_PORT set, bind that."""
    original = loop.create_datagram_endpoint

    async def create(factory, local_addr=None, **kwargs):
        port = BIND_PORT.get()
        if port is not None and local_addr == ("127.0.0.1", 0):
            local_addr = ("127.0.0.1", port)
        return await original(factory, local_addr=local_addr, **kwargs)

    loop.create_datagram_endpoint = create


def config():
    return RTCConfiguration(iceServers=[])


def candidates(sdp):
    return [line.strip() for line in sdp.splitlines() if line.startswith("a=candidate:")]


def ufrag(sdp):
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.split(":", 1)[1].strip()
    return None


def nominated_pair(pc):
    """(local, remote) "ip:port" of the nominated ICE pair of the first transceiver, or None."""
    for t in pc.getTransceivers():
        try:
            conn = t.sender.transport.transport.iceGatherer._connection
        except AttributeError:
            continue
        for pair in conn._nominated.values():
            local = pair.protocol.local_candidate
            remote = pair.remote_candidate
            return f"{local.host}:{local.port}", f"{remote.host}:{remote.port}"
    return None


class TestPattern(MediaStreamTrack):
    """160x120 frames at 30 fps whose brightness changes every frame (so each encodes to
    something)."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.sent = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        else:
            delay = self.start + self.sent / 30 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = VideoFrame(width=160, height=120, format="yuv420p")
        luma = bytes([(self.sent * 7) % 256]) * frame.planes[0].buffer_size
        frame.planes[0].update(luma)
        for p in frame.planes[1:]:
            p.update(bytes([128]) * p.buffer_size)
        frame.pts = self.sent * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent += 1
        return frame


# ---------------------------------------------------------------- HTTP, both directions


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    if length > MAX_BODY:
        raise ValueError("body too large")
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


def response(status, body=b"", headers=()):
    reason = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 500: "Error"}.get(status, "X")
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# The CA file an https:// signalling URL is verified against (--cafile; tests/tls.rs).
TLS = {"cafile": None}


async def http(method, url, body=b"", content_type=None, timeout=15):
    """One HTTP/1.1 request (Connection: close), over TLS for https://: (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    tls = ssl.create_default_context(cafile=TLS["cafile"]) if u.scheme == "https" else None
    reader, writer = await asyncio.wait_for(asyncio.open_connection(u.hostname, u.port, ssl=tls), timeout)
    target = u.path + ("?" + u.query if u.query else "")
    head = [f"{method} {target} HTTP/1.1", f"Host: {u.netloc}", "Connection: close", f"Content-Length: {len(body)}"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(-1), timeout)
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        rest = rest[: int(headers["content-length"])]
    return status, headers, rest


# ---------------------------------------------------------------- origin


class Origin:
    def __init__(self, n):
        self.relay = MediaRelay()
        self.source = None  # the newest WHIP video track
        self.whip_frames = 0
        self.sessions = {}  # id -> dict(pc, site, api, ...)
        self.by_site = {}  # site index -> session id (one session per site: one ICE port)
        self.requests = []
        self.ids = itertools.count(1)
        self.sites = []
        self.placeholders = {}
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.n = n
        self.lock = asyncio.Lock()

    def hold(self, i):
        """Keeps site i's WebRTC port bound while no session uses it."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", self.sites[i]["rtc"]))
        self.placeholders[i] = s

    def release(self, i):
        s = self.placeholders.pop(i, None)
        if s:
            s.close()

    async def start(self):
        for i in range(self.n):
            server = await asyncio.start_server(lambda r, w, i=i: self.serve(i, r, w), "127.0.0.1", 0)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            self.sites.append({"api": server.sockets[0].getsockname()[1], "rtc": s.getsockname()[1], "server": server})
            self.placeholders[i] = s
        emit("ready", sites=[{"api": s["api"], "rtc": s["rtc"]} for s in self.sites])

    def unreachable(self, sdp):
        """The offer with every candidate pointing at the sink (see the module doc)."""
        sink = self.sink.getsockname()[1]
        pattern = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )\S+ \d+( typ .*)$")
        out = []
        for line in sdp.split("\r\n"):
            m = pattern.match(line)
            out.append(f"{m.group(1)}127.0.0.1 {sink}{m.group(2)}" if m else line)
        return "\r\n".join(out)

    async def close_session(self, sid):
        s = self.sessions.get(sid)
        if not s or s["closed"]:
            return False
        s["closed"] = True
        await s["pc"].close()
        if self.by_site.get(s["site"]) == sid:
            del self.by_site[s["site"]]
            self.hold(s["site"])
        return True

    async def serve(self, site, reader, writer):
        try:
            method, target, headers, body = await read_request(reader)
            u = urllib.parse.urlsplit(target)
            q = dict(urllib.parse.parse_qsl(u.query))
            self.requests.append({"site": site, "method": method, "target": target,
                                  "content_type": headers.get("content-type")})
            path = u.path.rstrip("/")
            if method == "GET" and path == "/stats":
                out = json.dumps(self.stats()).encode()
                reply = response(200, out, [("Content-Type", "application/json")])
            elif method == "POST" and path in ("/rtc/v1/whip", "/rtc/v1/whep"):
                reply = await self.offer(site, path.endswith("whip"), q, body.decode())
            elif method == "DELETE" and path in ("/rtc/v1/whip", "/rtc/v1/whep"):
                closed = await self.close_session(int(q.get("session", "0") or 0))
                reply = response(200 if closed else 404)
            else:
                reply = response(404)
        except Exception as e:  # noqa: BLE001 - a test peer reports, never dies on a request
            emit("error", where="origin request", error=repr(e))
            reply = response(500, repr(e).encode())
        writer.write(reply)
        try:
            await writer.drain()
        finally:
            writer.close()

    async def offer(self, site, whip, q, sdp):
        if not whip and self.source is None:
            return response(404, b"no publisher")
        async with self.lock:
            old = self.by_site.get(site)
            if old:
                await self.close_session(old)
            sid = next(self.ids)
            pc = RTCPeerConnection(config())
            session = {"pc": pc, "site": site, "whip": whip, "stream": q.get("stream"), "closed": False,
                       "frames": 0, "pair": None}
            self.sessions[sid] = session
            self.by_site[site] = sid

            @pc.on("connectionstatechange")
            async def changed():
                emit("state", site=site, session=sid, state=pc.connectionState)
                if pc.connectionState == "connected":
                    session["pair"] = nominated_pair(pc)

            if whip:
                @pc.on("track")
                def on_track(track):
                    if track.kind == "video":
                        self.source = track
                        asyncio.ensure_future(self.count(self.relay.subscribe(track, buffered=False), session))
            self.release(site)
            token = BIND_PORT.set(self.sites[site]["rtc"])
            try:
                await pc.setRemoteDescription(RTCSessionDescription(self.unreachable(sdp), "offer"))
                if not whip:
                    pc.addTrack(self.relay.subscribe(self.source, buffered=False))
                await pc.setLocalDescription(await pc.createAnswer())
            finally:
                BIND_PORT.reset(token)
            api = self.sites[site]["api"]
            kind = "whip" if whip else "whep"
            query = urllib.parse.urlencode({"app": q.get("app", ""), "stream": q.get("stream", ""), "session": sid})
            location = f"http://127.0.0.1:{api}/rtc/v1/{kind}/?{query}"
            return response(201, pc.localDescription.sdp.encode(),
                            [("Content-Type", "application/sdp"), ("Location", location)])

    async def count(self, track, session):
        while True:
            try:
                await track.recv()
            except Exception:  # noqa: BLE001 - the track ended
                return
            self.whip_frames += 1
            session["frames"] += 1

    def stats(self):
        return {
            "whip_frames": self.whip_frames,
            "sessions": [
                {"id": k, "site": s["site"], "whip": s["whip"], "stream": s["stream"], "closed": s["closed"],
                 "state": s["pc"].connectionState, "frames": s["frames"],
                 "pair": s["pair"] or nominated_pair(s["pc"])}
                for k, s in self.sessions.items()
            ],
            "requests": self.requests,
            "rtc_ports": [s["rtc"] for s in self.sites],
            "sink": self.sink.getsockname()[1],
        }


async def run_origin(args):
    origin = Origin(args.sites)
    await origin.start()
    await asyncio.Event().wait()


# ---------------------------------------------------------------- clients


async def negotiate(pc, url, apply=True):
    """Posts the offer; applies the answer unless told not to. Returns (Location, answer)."""
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, body = await http("POST", url, pc.localDescription.sdp.encode(), "application/sdp")
    answer = body.decode(errors="replace")
    emit("answer", status=status, location=headers.get("location"), content_type=headers.get("content-type"),
         candidates=candidates(answer), offer_candidates=candidates(pc.localDescription.sdp),
         # The USERNAME of this client's connectivity checks: answer ufrag, then its own.
         username=f"{ufrag(answer)}:{ufrag(pc.localDescription.sdp)}",
         body=answer if status >= 300 else None)
    if status not in (200, 201):
        raise RuntimeError(f"signalling answered {status}: {answer[:300]}")
    if apply:
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return headers.get("location"), answer


async def watch_connected(pc, deadline):
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    async def changed():
        emit("state", state=pc.connectionState, ice=pc.iceConnectionState)
        if pc.connectionState == "connected":
            connected.set()

    if pc.connectionState == "connected":
        connected.set()
    try:
        await asyncio.wait_for(connected.wait(), deadline)
    except asyncio.TimeoutError:
        raise RuntimeError(f"not connected after {deadline} s: {pc.connectionState}/{pc.iceConnectionState}")
    pair = nominated_pair(pc)
    emit("connected", local=pair and pair[0], remote=pair and pair[1])


async def finish(pc, url, location):
    if location:
        status, _, _ = await http("DELETE", urllib.parse.urljoin(url, location))
        emit("deleted", status=status, url=urllib.parse.urljoin(url, location))
    await pc.close()


async def run_publish(args):
    pc = RTCPeerConnection(config())
    track = TestPattern()
    pc.addTrack(track)
    location, _ = await negotiate(pc, args.url)
    await watch_connected(pc, 15)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        emit("frames", n=track.sent, state=pc.connectionState)
    await finish(pc, args.url, location)
    emit("done", frames=track.sent)


async def run_play(args):
    pc = RTCPeerConnection(config())
    pc.addTransceiver("video", direction="recvonly")
    got = {"n": 0, "size": None}

    @pc.on("track")
    def on_track(track):
        async def count():
            while True:
                try:
                    frame = await track.recv()
                except Exception:  # noqa: BLE001 - the track ended
                    return
                got["n"] += 1
                got["size"] = [frame.width, frame.height]
        asyncio.ensure_future(count())

    location, _ = await negotiate(pc, args.url)
    await watch_connected(pc, 15)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        emit("frames", n=got["n"], size=got["size"], state=pc.connectionState)
    await finish(pc, args.url, location)
    emit("done", frames=got["n"])


async def run_offer(args):
    pc = RTCPeerConnection(config())
    track = TestPattern()
    pc.addTrack(track)
    start = time.monotonic()
    location, answer = await negotiate(pc, args.url, apply=False)

    async def connect():
        await asyncio.sleep(max(0, start + args.connect_after - time.monotonic()))
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await watch_connected(pc, 15)

    async def delete():
        await asyncio.sleep(max(0, start + args.delete_after - time.monotonic()))
        status, _, _ = await http("DELETE", urllib.parse.urljoin(args.url, location))
        emit("deleted", status=status)

    jobs = []
    if args.connect_after is not None:
        jobs.append(connect())
    if args.delete_after is not None and location:
        jobs.append(delete())
    await asyncio.gather(*jobs)
    while time.monotonic() < start + args.seconds:
        await asyncio.sleep(0.5)
        emit("frames", n=track.sent, state=pc.connectionState)
    await pc.close()
    emit("done", frames=track.sent)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    o = sub.add_parser("origin")
    o.add_argument("--sites", type=int, default=1)
    for name in ("publish", "play", "offer"):
        c = sub.add_parser(name)
        c.add_argument("--url", required=True)
        c.add_argument("--seconds", type=float, default=10)
        c.add_argument("--cafile", help="CA certificate for an https:// URL")
        if name == "offer":
            c.add_argument("--connect-after", type=float, help="apply the answer after this many seconds")
            c.add_argument("--delete-after", type=float, help="DELETE the resource after this many seconds")
    args = parser.parse_args()
    TLS["cafile"] = getattr(args, "cafile", None)
    run = {"origin": run_origin, "publish": run_publish, "play": run_play, "offer": run_offer}[args.mode]

    async def top():
        pin_ice_ports(asyncio.get_running_loop())
        await run(args)

    try:
        asyncio.run(top())
    except KeyboardInterrupt:
        pass
    except Exception as e:  # noqa: BLE001 - reported to the test as an event
        emit("error", where=args.mode, error=repr(e))
        sys.exit(1)


if __name__ == "__main__":
    main()
