#!/usr/bin/env python3
"""Drives headless Firefox over WebDriver BiDi for tests/dashboard.rs, with the same JSON-lines
commands as cdp.py (one command on stdin, one answer on stdout):

  {"cmd": "open", "url": U, "width": W, "height": H}  -> {"ok": true}
  {"cmd": "eval", "expr": JS}           -> {"ok": true, "value": ...}  (promises awaited)
  {"cmd": "viewport", "width": W, "height": H}       -> {"ok": true}
  {"cmd": "screenshot", "path": P}      -> {"ok": true}  (the whole page, PNG)
  {"cmd": "errors"}                     -> {"ok": true, "value": [every console error so far]}
  {"cmd": "quit"}

Firefox is started with --remote-debugging-port=0 and says on stderr which port its BiDi
WebSocket took; this script connects to ws://127.0.0.1:PORT/session (the `websockets` package)
and opens a session; lines.py answers the commands. Console errors are the log.entryAdded events of level error: console.error
calls and uncaught exceptions (and unhandled rejections), from the moment the session starts.
Firefox has no phone emulation over BiDi: "viewport" sets the window's CSS size only ("mobile"
is ignored). Any failure answers {"ok": false, "error": ...}.
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from websockets.sync.client import connect

from lines import end, serve

TIMEOUT = 30

# Prefs for a quiet, local-only test profile: no first-run pages, updates, telemetry or remote
# lookups (the tests have no network), and media that may start without a user gesture.
PREFS = {
    "app.update.disabledForTesting": True,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "app.normandy.enabled": False,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.eme.enabled": False,
    "media.gmp-manager.updateEnabled": False,
}


class Browser:
    def __init__(self, firefox):
        self.profile = tempfile.mkdtemp(prefix="streamgate-firefox-")
        with open(os.path.join(self.profile, "user.js"), "w") as f:
            for name, value in PREFS.items():
                f.write("user_pref(%s, %s);\n" % (json.dumps(name), json.dumps(value)))
        args = [firefox, "--headless", "--no-remote", "--profile", self.profile,
                "--remote-debugging-port=0", "about:blank"]
        env = dict(os.environ, MOZ_CRASHREPORTER_DISABLE="1")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        self.log = open(os.path.join(self.profile, "firefox.log"), "wb")
        found = threading.Event()
        self.url = None

        def stderr():
            # Firefox's own chatter goes to the profile's log; the line naming the port is read.
            for line in self.proc.stderr:
                self.log.write(line)
                m = re.search(rb"WebDriver BiDi listening on (ws://\S+)", line)
                if m and not found.is_set():
                    self.url = m.group(1).decode()
                    found.set()
            found.set()

        threading.Thread(target=stderr, daemon=True).start()
        self.next_id = 0
        self.waiting = {}
        self.errors = []
        self.closed = False
        self.cond = threading.Condition()
        self.ws = None
        try:
            if not found.wait(TIMEOUT) or not self.url:
                raise RuntimeError("firefox did not open its BiDi port in %d s" % TIMEOUT)
            self.ws = connect(self.url + "/session", max_size=64 << 20, open_timeout=TIMEOUT)
            threading.Thread(target=self.read, daemon=True).start()
            self.send("session.new", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": True}}})
            self.send("session.subscribe", {"events": ["log.entryAdded"]})
            self.context = self.send("browsingContext.getTree", {"maxDepth": 0})["contexts"][0]["context"]
        except Exception:
            self.quit()
            raise

    def read(self):
        try:
            for raw in self.ws:
                msg = json.loads(raw)
                with self.cond:
                    if msg.get("type") in ("success", "error") and "id" in msg:
                        self.waiting[msg["id"]] = msg
                    elif msg.get("method") == "log.entryAdded":
                        self.entry(msg["params"])
                    self.cond.notify_all()
        except Exception:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def entry(self, e):
        if e.get("level") != "error":
            return
        if e.get("type") == "console":
            text = " ".join(describe(a) for a in e.get("args", [])) or e.get("text", "")
            self.errors.append("console." + e.get("method", "error") + ": " + text)
        else:
            self.errors.append(e.get("type", "log") + ": " + (e.get("text") or ""))

    def send(self, method, params):
        with self.cond:
            self.next_id += 1
            ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        with self.cond:
            if not self.cond.wait_for(lambda: ident in self.waiting or self.closed, TIMEOUT):
                raise RuntimeError(method + ": no answer in %d s" % TIMEOUT)
            if ident not in self.waiting:
                raise RuntimeError(method + ": firefox closed the connection")
            reply = self.waiting.pop(ident)
        if reply["type"] == "error":
            raise RuntimeError(method + ": " + reply.get("error", "") + ": " + reply.get("message", ""))
        return reply.get("result", {})

    def viewport(self, c):
        self.send("browsingContext.setViewport", {
            "context": self.context,
            "viewport": {"width": c.get("width", 1280), "height": c.get("height", 900)},
            "devicePixelRatio": 1,
        })

    def open(self, c):
        self.viewport(c)
        self.send("browsingContext.navigate", {"context": self.context, "url": c["url"], "wait": "complete"})

    def evaluate(self, expr):
        r = self.send("script.evaluate", {
            "expression": expr, "target": {"context": self.context}, "awaitPromise": True,
            "resultOwnership": "none", "userActivation": True,
        })
        if r.get("type") == "exception":
            d = r.get("exceptionDetails", {})
            raise RuntimeError("eval: " + d.get("text", "") + " " + describe(d.get("exception", {})))
        return value(r.get("result", {}))

    def screenshot(self, path):
        data = self.send("browsingContext.captureScreenshot", {"context": self.context, "origin": "document"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def quit(self):
        if self.ws is not None:
            try:
                self.send("browser.close", {})
            except Exception:
                pass
            try:
                self.ws.close()
            except Exception:
                pass
        end(self.proc)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def value(v):
    """A BiDi RemoteValue as JSON (what CDP's returnByValue gives): primitives, arrays and plain
    objects; anything else (nodes, functions) as None."""
    t = v.get("type")
    if t in ("string", "boolean"):
        return v["value"]
    if t == "number":
        n = v["value"]
        return None if n in ("NaN", "Infinity", "-Infinity") else (0 if n == "-0" else n)
    if t == "array":
        return [value(x) for x in v.get("value", [])]
    if t == "object":
        return {k if isinstance(k, str) else str(value(k)): value(x) for k, x in v.get("value", [])}
    return None


def describe(v):
    """A RemoteValue as text for an error message."""
    if v.get("type") in ("string", "number", "boolean"):
        return str(v["value"])
    if v.get("type") == "error":
        return "Error"
    return v.get("type", "")


def main():
    started = time.monotonic()
    try:
        browser = Browser(sys.argv[1] if len(sys.argv) > 1 else "firefox-esr")
    except Exception as e:
        sys.stdout.write(json.dumps({"ok": False, "error": "start: %s (after %.1f s)" % (e, time.monotonic() - started)}) + "\n")
        sys.stdout.flush()
        return
    serve(browser)


if __name__ == "__main__":
    main()
