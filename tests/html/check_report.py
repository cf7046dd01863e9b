#!/usr/bin/python3
"""Opens rampart's HTML report in headless Chromium, as a phone, and checks what a person sees.

    check_report.py REPORT.html EXPECT.json

With RAMPART_SCREENSHOTS=DIR, saves what the phone showed at each stage as DIR/*.png.

EXPECT.json names what to look for (see tests/integration/report_html.rs):
  hosts          host names, each visible in the grid
  drifted_cell   a cell id whose verdict is drift/differs
  in_line_cell   a cell id whose verdict is in line
  diff_line      a line the drifted cell's detail shows once clicked
  escaped_text   text from the summary with <, &, " that must show as text
  unreachable    {"host", "error", "hint"}: the host's row shows the error, its detail the hint
  deep_link      {"cell", "text"}: REPORT.html#cell opens that detail on load

Prints one JSON object: {"ok", "checks": [{"name", "ok", "seen"}], "error", "chromium_log",
"seconds"}. Exits 0 when every check passed, 1 when one failed, 2 when the browser could not
be driven. Only Debian's python3 and python3-websocket; Chromium talks to us on loopback only
and is told to resolve no name and to send everything else to a dead loopback proxy, so the
report cannot load anything from outside (and a request for anything but file: fails a check).
"""

import base64
import ctypes
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import websocket

CHROMIUM = os.environ.get("RAMPART_CHROMIUM", "/usr/bin/chromium")
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True}
START_TIMEOUT = 30  # seconds for Chromium to write DevToolsActivePort
CALL_TIMEOUT = 15  # seconds for one DevTools call or event
TOTAL_TIMEOUT = 90  # seconds for everything


class DriverError(Exception):
    pass


class Cdp:
    """A DevTools protocol client over one WebSocket, with flat sessions."""

    def __init__(self, url):
        # No Origin header: Chromium refuses WebSocket clients with an unlisted origin.
        self.ws = websocket.create_connection(url, timeout=CALL_TIMEOUT, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def _recv(self, deadline, what):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DriverError(f"timed out waiting for {what}")
        self.ws.settimeout(remaining)
        try:
            return json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            raise DriverError(f"timed out waiting for {what}") from None

    def call(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:
            m = self._recv(deadline, method)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise DriverError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


class Page:
    def __init__(self, cdp, session):
        self.cdp = cdp
        self.session = session

    def call(self, method, params=None):
        return self.cdp.call(method, params, self.session)

    def js(self, expression):
        """The value of a JS expression (awaited if a promise)."""
        r = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in r:
            raise DriverError(f"JS failed: {r['exceptionDetails']}\n{expression}")
        return r["result"].get("value")

    def load(self, url):
        """Navigates and waits until that document has loaded (not a load event left over
        from the page before)."""
        self.call("Page.navigate", {"url": url})
        want = json.dumps(url)
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:
            try:
                if self.js(f'location.href === {want} && document.readyState === "complete"'):
                    return
            except DriverError:
                pass  # the old document went away in the middle of the call
            if time.monotonic() > deadline:
                raise DriverError(f"{url} did not load within {CALL_TIMEOUT} s")
            time.sleep(0.05)

    def tap(self, x, y):
        """A real click: the mouse moves there, presses and releases the left button."""
        for kind, buttons in (("mouseMoved", 0), ("mousePressed", 1), ("mouseReleased", 0)):
            self.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left" if kind != "mouseMoved" else "none",
                 "buttons": buttons, "clickCount": 1},
            )

    def screenshot(self, name):
        """Saves the screen as NAME.png when RAMPART_SCREENSHOTS names a folder."""
        folder = os.environ.get("RAMPART_SCREENSHOTS")
        if folder:
            data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
            with open(os.path.join(folder, f"{name}.png"), "wb") as f:
                f.write(base64.b64decode(data))

    def poll(self, expression, seconds=3.0):
        """Evaluates until the result's `ok` is true or time is up; returns the last result."""
        deadline = time.monotonic() + seconds
        while True:
            value = self.js(expression)
            if value.get("ok") or time.monotonic() > deadline:
                return value
            time.sleep(0.05)


# JS helpers the checks share. `seen(el)`: what a person would see of an element.
HELPERS = r"""
window.__seen = function (el) {
  if (!el) return {exists: false, visible: false};
  const r = el.getBoundingClientRect();
  // The part a person can see: inside the window and inside every box that clips it.
  let [l, t, rt, b] = [Math.max(r.left, 0), Math.max(r.top, 0),
                       Math.min(r.right, innerWidth), Math.min(r.bottom, innerHeight)];
  for (let a = el.parentElement; a; a = a.parentElement) {
    const st = getComputedStyle(a);
    if (st.overflowX !== "visible" || st.overflowY !== "visible") {
      const c = a.getBoundingClientRect();
      [l, t, rt, b] = [Math.max(l, c.left), Math.max(t, c.top), Math.min(rt, c.right), Math.min(b, c.bottom)];
    }
  }
  const inView = rt - l >= 1 && b - t >= 1;
  const x = (l + rt) / 2, y = (t + b) / 2;
  const hit = inView ? document.elementFromPoint(x, y) : null;
  return {
    exists: true,
    visible: el.checkVisibility({opacityProperty: true, visibilityProperty: true}) &&
      r.width > 0 && r.height > 0,
    in_view: inView,
    on_top: !!hit && (hit === el || el.contains(hit)),
    rect: [Math.round(r.left), Math.round(r.top), Math.round(r.width), Math.round(r.height)],
    center: [x, y],
    text: (el.innerText || "").slice(0, 600),
  };
};
window.__cell = (id) => Array.from(document.querySelectorAll("a.cell")).find(a => a.dataset.cell === id) ||
  Array.from(document.querySelectorAll("a.cell")).find(a => a.getAttribute("href") === "#" + id);
window.__row = (host) => Array.from(document.querySelectorAll("tbody tr")).find(
  tr => tr.querySelector("th") && tr.querySelector("th").innerText.split("\n")[0].trim() === host);
true
"""


def run_checks(page, url, expect):
    checks = []

    def check(name, ok, seen):
        checks.append({"name": name, "ok": bool(ok), "seen": seen})

    page.js(HELPERS)
    page.screenshot("1-loaded")

    # The phone's width, and no sideways scrolling of the page; the grid scrolls by itself.
    seen = page.js("""({
      innerWidth: innerWidth,
      scrollWidth: document.documentElement.scrollWidth,
      bodyScrollWidth: document.body.scrollWidth,
      grid: (() => { const g = document.querySelector("table").parentElement;
        return {scrollWidth: g.scrollWidth, clientWidth: g.clientWidth,
                overflowX: getComputedStyle(g).overflowX}; })(),
    })""")
    check("viewport is the phone's width", seen["innerWidth"] == PHONE["width"], seen)
    check(
        "page does not scroll sideways",
        seen["scrollWidth"] <= seen["innerWidth"] and seen["bodyScrollWidth"] <= seen["innerWidth"],
        seen,
    )
    check(
        "grid scrolls sideways inside its own box",
        seen["grid"]["overflowX"] in ("auto", "scroll")
        and seen["grid"]["clientWidth"] <= seen["innerWidth"],
        seen["grid"],
    )

    # Every label readable: WCAG contrast of its text on what is behind it (3:1 at least).
    seen = page.js(r"""(() => {
      const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
      const lum = ([r, g, b]) => { const f = (v) => { v /= 255;
        return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
      const behind = (el) => { for (; el; el = el.parentElement) {
        const c = rgb(getComputedStyle(el).backgroundColor);
        if (c.length === 3 || c[3] > 0) return c; } return [255, 255, 255]; };
      const out = [];
      for (const el of document.querySelectorAll(".counts li, .badge, a.cell, td.none, th, h1")) {
        if (!el.checkVisibility() || !el.innerText.trim()) continue;
        const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(behind(el))];
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        out.push({text: el.innerText.trim().slice(0, 40), ratio: Math.round(ratio * 10) / 10});
      }
      out.sort((x, y) => x.ratio - y.ratio);
      return out;
    })()""")
    check(
        "every label is readable (contrast 3:1 or more)",
        len(seen) > 10 and all(x["ratio"] >= 3 for x in seen),
        {"labels": len(seen), "lowest": seen[:5]},
    )

    # Every host's name, on screen and not covered.
    for host in expect["hosts"]:
        seen = page.js(f"(() => {{ const r = __row({json.dumps(host)}); "
                       "return __seen(r && r.querySelector('th')); })()")
        check(f"host {host} is visible", seen["visible"] and seen["in_view"] and seen["on_top"], seen)

    # A drifted cell and an in-line cell: different colors, different words.
    seen = page.js(f"""(() => {{
      const out = {{}};
      for (const [k, id] of [["drifted", {json.dumps(expect["drifted_cell"])}],
                             ["in_line", {json.dumps(expect["in_line_cell"])}]]) {{
        const a = __cell(id);
        out[k] = a ? {{background: getComputedStyle(a.closest("td")).backgroundColor,
                      text: a.innerText}} : null;
      }}
      return out;
    }})()""")
    d, i = seen.get("drifted"), seen.get("in_line")
    transparent = ("rgba(0, 0, 0, 0)", "transparent")
    check(
        "a drifted cell's color differs from an in-line cell's",
        d and i and d["background"] != i["background"]
        and d["background"] not in transparent and i["background"] not in transparent,
        seen,
    )
    check("and so do their words", d and i and d["text"].strip() != i["text"].strip(), seen)

    # The drifted cell's detail: hidden, then a click shows it with the diff.
    cell = json.dumps(expect["drifted_cell"])
    seen = page.js(f"__seen(document.getElementById({cell}))")
    check("the detail is hidden before the click", seen["exists"] and not seen["visible"], seen)
    click_cell(page, check, expect["drifted_cell"])
    seen = page.poll(f"""(() => {{
      const s = __seen(document.getElementById({cell}));
      s.hash = decodeURIComponent(location.hash.slice(1));
      s.ok = s.visible && s.in_view && s.hash === {cell};
      return s; }})()""")
    check("a click shows the detail", seen["ok"], seen)
    page.screenshot("2-clicked")
    check(
        "the detail shows the diff",
        expect["diff_line"] in seen.get("text", "") and expect["escaped_text"] in seen.get("text", ""),
        {"want": [expect["diff_line"], expect["escaped_text"]], "text": seen.get("text")},
    )
    seen = page.js(f"""({{
      width: document.getElementById({cell}).getBoundingClientRect().width,
      page: document.documentElement.clientWidth,
      details_shown: Array.from(document.querySelectorAll("section")).filter(
        s => s.checkVisibility()).map(s => s.id),
      selected: Array.from(document.querySelectorAll("[aria-current]")).map(a => a.dataset.cell),
    }})""")
    check(
        "only that detail is shown, full width",
        seen["details_shown"] == [expect["drifted_cell"]] and seen["width"] >= seen["page"] * 0.9,
        seen,
    )
    check("the clicked cell is marked (the script ran)", seen["selected"] == [expect["drifted_cell"]], seen)
    seen = page.js("""({scripts: document.scripts.length,
      admin: document.getElementsByTagName("admin").length,
      scrollWidth: document.documentElement.scrollWidth, innerWidth: innerWidth})""")
    check("summary text stays text", seen["scripts"] == 1 and seen["admin"] == 0, seen)
    check("still no sideways scrolling with the detail open", seen["scrollWidth"] <= seen["innerWidth"], seen)

    # The unreachable host: its row says the error; its detail adds the hint.
    un = expect["unreachable"]
    page.js("scrollTo(0, 0); document.querySelector('table').parentElement.scrollLeft = 0")
    seen = page.js(f"""(() => {{ const r = __row({json.dumps(un['host'])});
      const s = __seen(r && r.querySelector('td'));
      const a = r && r.querySelector('td a');
      s.text_right = a && Math.round(a.getBoundingClientRect().right);
      s.innerWidth = innerWidth;
      return s; }})()""")
    check(
        f"unreachable {un['host']} shows its whole error on screen",
        seen["visible"] and seen["in_view"] and un["error"] in seen.get("text", "")
        and seen["text_right"] is not None and seen["text_right"] <= seen["innerWidth"],
        seen,
    )
    if seen["visible"]:
        page.js(f"__row({json.dumps(un['host'])}).querySelector('td')"
                ".scrollIntoView({block: 'center', inline: 'nearest'})")
        seen = page.js(f"__seen(__row({json.dumps(un['host'])}).querySelector('td a'))")
        check("its error cell can be clicked (on screen, not covered)", seen["in_view"] and seen["on_top"], seen)
        x, y = seen["center"]
        page.tap(x, y)
        seen = page.poll(f"""(() => {{
          const want = __row({json.dumps(un['host'])}).querySelector('td a').getAttribute('href');
          const id = decodeURIComponent(location.hash.slice(1));
          const s = __seen(id && document.getElementById(id));
          s.hash = id; s.ok = s.visible && location.hash === want; return s; }})()""")
        page.screenshot("3-unreachable")
        check(
            "its detail shows the error and the hint",
            seen["ok"] and un["error"] in seen.get("text", "") and un["hint"] in seen.get("text", ""),
            seen,
        )

    # A deep link opens its detail on load.
    deep = expect["deep_link"]
    page.load("about:blank")
    page.load(url + "#" + deep["cell"])
    page.js(HELPERS)
    cell = json.dumps(deep["cell"])
    seen = page.poll(f"""(() => {{
      const s = __seen(document.getElementById({cell}));
      s.selected = Array.from(document.querySelectorAll("[aria-current]")).map(a => a.dataset.cell);
      s.ok = s.visible && s.in_view;
      return s; }})()""")
    page.screenshot("4-deep-link")
    check(
        "a deep link opens that detail on load",
        seen["visible"] and seen["in_view"] and deep["text"] in seen.get("text", "")
        and seen["selected"] == [deep["cell"]],
        seen,
    )
    return checks


def click_cell(page, check, cell_id):
    cell = json.dumps(cell_id)
    page.js(f"__cell({cell}).scrollIntoView({{block: 'center', inline: 'center'}})")
    seen = page.js(f"__seen(__cell({cell}))")
    check(f"cell {cell_id} can be clicked (on screen, not covered)", seen["in_view"] and seen["on_top"], seen)
    x, y = seen["center"]
    page.tap(x, y)


def wait_for_port(proc, user_data):
    path = os.path.join(user_data, "DevToolsActivePort")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DriverError(f"chromium exited with {proc.returncode} before it was ready")
        try:
            with open(path) as f:
                lines = f.read().split("\n")
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                return int(lines[0]), lines[1].strip()
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise DriverError(f"chromium wrote no {path} within {START_TIMEOUT} s")


def become_subreaper():
    """Chromium's helpers outlive its main process by a moment; as their subreaper we reap
    them ourselves instead of leaving zombies to init (Linux prctl PR_SET_CHILD_SUBREAPER)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def stop(proc):
    """Ends Chromium and its helpers (they share the process group we started it in), then
    waits for every child we have, helpers included."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid == 0:
            time.sleep(0.02)


def on_alarm(signum, frame):
    raise DriverError(f"the whole check took more than {TOTAL_TIMEOUT} s")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    report = pathlib.Path(sys.argv[1]).resolve()
    with open(sys.argv[2]) as f:
        expect = json.load(f)
    url = report.as_uri()

    started = time.monotonic()
    result = {"ok": False, "checks": [], "error": None, "requests": [], "console": []}
    work = tempfile.mkdtemp(prefix="rampart-chromium-")
    user_data = os.path.join(work, "profile")
    log_path = os.path.join(work, "chromium.log")
    proc = cdp = None
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_alarm)
    signal.alarm(TOTAL_TIMEOUT)
    become_subreaper()
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    CHROMIUM,
                    "--headless=new",
                    "--no-sandbox",  # tests run as root
                    f"--user-data-dir={user_data}",
                    "--remote-debugging-port=0",  # Chromium picks a free port on 127.0.0.1
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-gpu",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-default-apps",
                    "--disable-features=Translate,MediaRouter,OptimizationHints",
                    "--password-store=basic",
                    "--use-mock-keychain",
                    "--mute-audio",
                    # Nothing may leave the machine: no name resolves, no proxy answers.
                    "--host-resolver-rules=MAP * ~NOTFOUND",
                    "--proxy-server=127.0.0.1:9",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        port, browser_path = wait_for_port(proc, user_data)
        cdp = Cdp(f"ws://127.0.0.1:{port}{browser_path}")
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(cdp, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", PHONE)
        page.load(url)
        result["checks"] = run_checks(page, url, expect)

        # What the page asked for and complained about, from the events seen on the way.
        for m in cdp.events:
            p = m.get("params", {})
            if m.get("method") == "Network.requestWillBeSent":
                result["requests"].append(p["request"]["url"][:200])
            elif m.get("method") == "Log.entryAdded":
                e = p["entry"]
                result["console"].append(f"{e.get('level')}: {e.get('text')}")
            elif m.get("method") == "Runtime.exceptionThrown":
                result["console"].append(f"exception: {p['exceptionDetails'].get('text')}")
            elif m.get("method") == "Runtime.consoleAPICalled" and p.get("type") == "error":
                result["console"].append(f"console.error: {p.get('args')}")
        outside = [u for u in result["requests"] if not u.startswith(("file:", "about:", "data:"))]
        result["checks"].append({
            "name": "the report loads nothing from outside",
            "ok": not outside,
            "seen": result["requests"],
        })
        errors = [c for c in result["console"] if c.startswith(("error", "exception", "console.error"))]
        result["checks"].append({
            "name": "no errors in the console (a blocked script or style, say)",
            "ok": not errors,
            "seen": result["console"],
        })
        result["ok"] = all(c["ok"] for c in result["checks"])
        try:
            cdp.call("Browser.close")
        except DriverError:
            pass
    except Exception as e:  # report everything, as JSON, then clean up
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        signal.alarm(0)
        if cdp:
            cdp.close()
        if proc:
            stop(proc)
        try:
            with open(log_path, "rb") as f:
                log = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            log = []
        if result["error"] or not result["ok"]:
            noise = ("dbus", "zygote", "Fontconfig")
            result["chromium_log"] = [line for line in log if line and not any(n in line for n in noise)][-30:]
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(result, indent=2))
    if result["error"]:
        return 2
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
