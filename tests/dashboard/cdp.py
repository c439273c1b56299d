#!/usr/bin/env python3
"""Drives headless Chromium over the DevTools protocol for tests/dashboard.rs.

Chromium is started with --remote-debugging-pipe (the protocol's messages, NUL-terminated
JSON, on its file descriptors 3 and 4), so no WebSocket client and no debugging port are
needed. The test talks to this script in JSON lines (the loop is lines.py, shared with
bidi.py), one command on stdin, one answer on stdout:

  {"cmd": "open", "url": U, "width": W, "height": H, "mobile": false}  -> {"ok": true}
  {"cmd": "eval", "expr": JS}           -> {"ok": true, "value": ...}  (promises awaited)
  {"cmd": "viewport", "width": W, "height": H, "mobile": true}        -> {"ok": true}
  {"cmd": "screenshot", "path": P}      -> {"ok": true}  (the whole page, PNG)
  {"cmd": "errors"}                     -> {"ok": true, "value": [every console error so far]}
  {"cmd": "quit"}

Console errors are collected from the moment the page opens: console.error/assert calls,
uncaught exceptions and the browser's own error entries (failed loads, CSP violations).
Any failure answers {"ok": false, "error": ...}.
"""
import base64
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading

from lines import end, serve

TIMEOUT = 30


class Browser:
    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="streamgate-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def plumb():
            # Move both ends above 4 first, so neither is overwritten by the other's dup2.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            for fd, target in zip(high, (3, 4)):
                os.dup2(fd, target)
                os.set_inheritable(target, True)

        args = [
            chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            "--user-data-dir=" + self.profile, "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--disable-dev-shm-usage", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
            "--hide-scrollbars",
            # WebRTC on loopback (the tests' only interface), with plain host candidates.
            "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
            "about:blank",
        ]
        self.proc = subprocess.Popen(args, preexec_fn=plumb,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.profile, "chromium.log"), "wb"),
                                     close_fds=False)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.next_id = 0
        self.waiting = {}
        self.events = []
        self.errors = []
        self.cond = threading.Condition()
        threading.Thread(target=self.read, daemon=True).start()
        self.session = None

    def read(self):
        buf = b""
        while True:
            chunk = os.read(self.from_browser, 65536)
            if not chunk:
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self.cond:
                    if "id" in msg:
                        self.waiting[msg["id"]] = msg
                    else:
                        self.event(msg)
                    self.cond.notify_all()

    def event(self, msg):
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.errors.append("console." + p["type"] + ": " + text)
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append("log (" + e.get("source", "") + "): " + e.get("text", "") + " " + e.get("url", ""))
        self.events.append(method)

    def send(self, method, params=None, session=True):
        with self.cond:
            self.next_id += 1
            ident = self.next_id
        msg = {"id": ident, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        with self.cond:
            if not self.cond.wait_for(lambda: ident in self.waiting or getattr(self, "closed", False), TIMEOUT):
                raise RuntimeError(method + ": no answer in %d s" % TIMEOUT)
            if ident not in self.waiting:
                raise RuntimeError(method + ": chromium exited")
            reply = self.waiting.pop(ident)
        if "error" in reply:
            raise RuntimeError(method + ": " + json.dumps(reply["error"]))
        return reply.get("result", {})

    def attach(self):
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target = page["targetId"] if page else self.send("Target.createTarget", {"url": "about:blank"}, False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(domain + ".enable")

    def viewport(self, c):
        self.send("Emulation.setDeviceMetricsOverride", {
            "width": c.get("width", 1280), "height": c.get("height", 900),
            "deviceScaleFactor": 1, "mobile": bool(c.get("mobile", False)),
        })

    def open(self, c):
        if not self.session:
            self.attach()
        self.viewport(c)
        with self.cond:
            self.events.clear()
        self.send("Page.navigate", {"url": c["url"]})
        with self.cond:
            if not self.cond.wait_for(lambda: "Page.loadEventFired" in self.events, TIMEOUT):
                raise RuntimeError("the page did not load in %d s" % TIMEOUT)

    def evaluate(self, expr):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise RuntimeError("eval: " + d.get("exception", {}).get("description", d.get("text", "")))
        return r.get("result", {}).get("value")

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def quit(self):
        try:
            self.send("Browser.close", session=False)
        except Exception:
            pass
        end(self.proc)
        subprocess.run(["rm", "-rf", self.profile])


def main():
    browser = Browser(sys.argv[1] if len(sys.argv) > 1 else "chromium")
    serve(browser)


if __name__ == "__main__":
    main()
