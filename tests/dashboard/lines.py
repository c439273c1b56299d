"""The JSON-lines loop both browser drivers (cdp.py, bidi.py) answer tests/dashboard.rs with:
one command on stdin, one answer on stdout, until "quit" or the end of stdin; the browser is
closed at the end either way."""
import json
import subprocess
import sys


def serve(browser):
    """Answers the commands with `browser`'s open, evaluate, viewport, screenshot and its
    errors (a list guarded by its `cond`), then quits it."""
    try:
        for line in sys.stdin:
            c = json.loads(line)
            cmd = c.get("cmd")
            if cmd == "quit":
                break
            try:
                value = None
                if cmd == "open":
                    browser.open(c)
                elif cmd == "eval":
                    value = browser.evaluate(c["expr"])
                elif cmd == "viewport":
                    browser.viewport(c)
                elif cmd == "screenshot":
                    browser.screenshot(c["path"])
                elif cmd == "errors":
                    with browser.cond:
                        value = list(browser.errors)
                else:
                    raise RuntimeError("unknown command %r" % cmd)
                answer = {"ok": True, "value": value}
            except Exception as e:  # the test prints it
                answer = {"ok": False, "error": str(e)}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        browser.quit()


def end(proc):
    """Waits up to 5 s for the browser `proc` to exit after it was asked to, then kills it."""
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
