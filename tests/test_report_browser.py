"""report.html in a real headless Chromium: it renders, no console error, every image loaded; a screenshot.

The browser is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
ending in NUL on file descriptors 3 and 4), which needs nothing but the standard library: no selenium,
no playwright, no websocket client. The test skips with a reason where no Chromium is installed;
`.ci/run` installs Debian's `chromium` package so that CI runs it.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from gpuroof.report import write_report

try:
    from test_plots import make_synthetic_run
except ImportError:  # tests/ imported as a package
    from tests.test_plots import make_synthetic_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--remote-debugging-pipe")


#: Moves two inherited descriptors to 3 and 4 (via high numbers, so neither clobbers the other), then
#: becomes the browser.
TRAMPOLINE = (
    "import fcntl, os, sys\n"
    "r, w = (fcntl.fcntl(int(a), fcntl.F_DUPFD, 64) for a in sys.argv[1:3])\n"
    "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def find_browser() -> str | None:
    env = os.environ.get("GPUROOF_CHROMIUM")
    if env:
        return env
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, exe: str, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.profile = tempfile.mkdtemp(prefix="gpuroof-chromium-")
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()
        # the browser reads commands on fd 3 and writes replies on fd 4: a tiny trampoline puts our pipes there
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, str(to_browser_r), str(from_browser_w), exe, *FLAGS,
             f"--user-data-dir={self.profile}", "--window-size=1280,900", "about:blank"],
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self, deadline: float | None = None) -> dict:
        deadline = deadline or time.monotonic() + self.timeout_s
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for the browser")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise BrowserError(f"browser closed the pipe (exit {self.proc.poll()})")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def wait_event(self, method: str) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.monotonic() + self.timeout_s
        while True:
            e = self._read(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def open_page(self) -> None:
        """A fresh tab; events from here on belong to it."""
        self.session = None
        self.events = []
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # only the group this test started
            self.proc.wait(timeout=10)
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def load_in_browser(b: Chromium, page: Path, screenshot: Path) -> dict:
    """Open `page` in a new tab; return console errors, image states, the page text; save a full-page PNG."""
    b.open_page()
    b.send("Page.navigate", {"url": page.resolve().as_uri()})
    b.wait_event("Page.loadEventFired")
    images = b.send("Runtime.evaluate", {"returnByValue": True, "expression": """
        Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth,
                                               h: i.naturalHeight, shown: i.getBoundingClientRect().width}))
    """})["result"]["value"]
    info = b.send("Runtime.evaluate", {"returnByValue": True, "expression": """
        ({title: document.title, text: document.body.innerText, scripts: document.scripts.length,
          h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
          width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight})
    """})["result"]["value"]
    metrics = b.send("Page.getLayoutMetrics")
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                             "clip": {"x": 0, "y": 0, "width": size["width"],
                                                      "height": size["height"], "scale": 1}})
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    time.sleep(0.2)  # let late console messages arrive
    while True:
        ready, _, _ = select.select([b._r], [], [], 0)
        if not ready and b"\0" not in b._buf:
            break
        b.events.append(b._read())
    errors = []
    for e in b.events:
        if e.get("sessionId") != b.session:
            continue
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append(f"{d.get('text')} {(d.get('exception') or {}).get('description', '')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            errors.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return {"errors": errors, "images": images, **info}


needs_browser = pytest.mark.skipif(find_browser() is None, reason="no Chromium installed (Debian: apt-get "
                                   "install chromium; or set GPUROOF_CHROMIUM to a Chrome binary)")


@pytest.fixture(scope="module")
def browser():
    exe = find_browser()
    assert exe
    b = Chromium(exe)
    try:
        yield b
    finally:
        b.close()


@needs_browser
@pytest.mark.parametrize("kind", ["synthetic-gpu", "real-cpu"])
def test_report_renders_in_headless_chromium(kind, browser, tmp_path, request):
    # the real run is the session's one measurement (tests/conftest.py), made only when asked for
    run = make_synthetic_run(tmp_path / "run") if kind == "synthetic-gpu" else request.getfixturevalue("cpu_run").path
    page = write_report(run, tmp_path / "report.html")
    shot = tmp_path / f"report-{kind}.png"
    got = load_in_browser(browser, page, shot)
    keep_screenshot(shot)
    assert got["errors"] == [], got["errors"]
    assert got["scripts"] == 0
    expected = 3 + (run / "hierarchy.csv").exists() + (run / "workloads.csv").exists()  # (+ hierarchy, lost time)
    assert len(got["images"]) == expected
    for img in got["images"]:
        assert img["complete"] and img["w"] > 300 and img["h"] > 200 and img["shown"] > 300, img
    assert got["h2"][:4] == ["Verdict", "Warnings", "Ceilings: measured against theoretical", "Figures"]
    assert "Command and versions" in got["h2"]
    assert got["width"] <= 1300  # nothing forces a horizontal scroll at 1280 px
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


@needs_browser
def test_the_browser_check_sees_a_broken_image_and_a_script_error(browser, tmp_path):
    """The checks above would catch a broken page: prove it on one."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>'
                    '<body><img src="data:image/png;base64,AAAA" alt="bad"><img src="missing.png" alt="gone">'
                    "<script>console.error('boom'); undefined_function();</script></body></html>")
    got = load_in_browser(browser, page, tmp_path / "broken.png")
    assert any("boom" in e for e in got["errors"]) and any("undefined_function" in e for e in got["errors"])
    assert any("ERR_FILE_NOT_FOUND" in e for e in got["errors"])  # the missing file
    assert [img["w"] for img in got["images"]] == [0, 0]


#: Text laid out by the browser, measured from its own line boxes: what sticks out of the page or out
#: of a box that hides overflow (clipped), and which lines of two different text nodes cover each other.
MEASURE_TEXT = """
(() => {
  const W = document.documentElement.clientWidth, out = {clipped: [], overlaps: [], lines: 0};
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const rects = [];
  for (let n = walker.nextNode(), i = 0; n; n = walker.nextNode(), i++) {
    if (!n.textContent.trim()) continue;
    const el = n.parentElement;
    if (el.closest('details:not([open])') || getComputedStyle(el).visibility === 'hidden') continue;
    const scroller = el.closest('.scroll, pre');  // scrolls on purpose: reachable, not clipped
    const r = document.createRange(); r.selectNodeContents(n);
    for (const b of r.getClientRects()) {
      if (b.width < 1 || b.height < 1) continue;
      rects.push({i, b, t: n.textContent.trim().slice(0, 40)});
      if (!scroller && (b.right > W + 0.5 || b.left < -0.5)) out.clipped.push(n.textContent.trim().slice(0, 60));
    }
    for (let a = el; a && a !== document.body; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (/(hidden|clip)/.test(s.overflowX + s.overflowY) && (a.scrollWidth > a.clientWidth + 1 ||
          a.scrollHeight > a.clientHeight + 1)) { out.clipped.push(n.textContent.trim().slice(0, 60)); break; }
    }
  }
  out.lines = rects.length;
  for (let x = 0; x < rects.length; x++) for (let y = x + 1; y < rects.length; y++) {
    const p = rects[x], q = rects[y];
    if (p.i === q.i) continue;
    const w = Math.min(p.b.right, q.b.right) - Math.max(p.b.left, q.b.left);
    const h = Math.min(p.b.bottom, q.b.bottom) - Math.max(p.b.top, q.b.top);
    if (w > 1 && h > 2) out.overlaps.push([p.t, q.t]);
  }
  out.images = Array.from(document.images).map(i => {  // scaled to fit, never cropped or stretched
    const b = i.getBoundingClientRect();
    return {alt: i.alt, inside: b.left >= -0.5 && b.right <= W + 0.5, width: b.width,
            ratio: Math.abs(b.width / b.height - i.naturalWidth / i.naturalHeight) / (i.naturalWidth / i.naturalHeight)};
  });
  out.scrollWidth = document.documentElement.scrollWidth;
  out.width = W;
  out.verdictTop = document.getElementById('verdict').getBoundingClientRect().top;
  return out;
})()
"""


def keep_screenshot(shot: Path) -> None:
    """To look at one: GPUROOF_SCREENSHOT_DIR=/tmp/shots pytest tests/test_report_browser.py."""
    keep = os.environ.get("GPUROOF_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)


def assert_laid_out(got: dict, width: int, images: int) -> None:
    """What `measure_at_width` saw: text neither clipped nor overlapping, no sideways scroll, the
    verdict on the first screen, and every figure whole (inside the page, its aspect ratio kept)."""
    assert got["lines"] > 100  # the measurement saw the page's text
    assert got["clipped"] == [], got["clipped"][:5]
    assert got["overlaps"] == [], got["overlaps"][:5]
    assert got["scrollWidth"] <= width
    assert got["verdictTop"] < 200
    assert len(got["images"]) == images
    for img in got["images"]:
        assert img["inside"] and img["ratio"] < 0.01 and img["width"] > 0.6 * min(width, 1200) - 60, img


def measure_at_width(b: Chromium, page: Path, width: int, screenshot: Path) -> dict:
    """Load `page` in a window `width` CSS px wide; measure its text; save a full-page screenshot."""
    b.open_page()
    b.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                   "mobile": False})
    b.send("Page.navigate", {"url": page.resolve().as_uri()})
    b.wait_event("Page.loadEventFired")
    got = b.send("Runtime.evaluate", {"returnByValue": True, "expression": MEASURE_TEXT})["result"]["value"]
    size = b.send("Page.getLayoutMetrics").get("cssContentSize")
    shot = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                             "clip": {"x": 0, "y": 0, "width": size["width"],
                                                      "height": size["height"], "scale": 1}})
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return got


@needs_browser
@pytest.mark.parametrize("width", [1400, 800])
def test_report_text_is_neither_clipped_nor_overlapping(width, browser, tmp_path):
    """At 1,400 and 800 CSS px: no text runs off the page or out of a box that hides overflow, no two
    lines of text cover each other, the page never scrolls sideways, and the verdict comes first."""
    run = make_synthetic_run(tmp_path / "run")
    page = write_report(run, tmp_path / "report.html")
    shot = tmp_path / f"report-{width}.png"
    got = measure_at_width(browser, page, width, shot)
    keep_screenshot(shot)
    assert_laid_out(got, width, 5)  # roofline, lost time, sweep, telemetry, hierarchy


@needs_browser
def test_the_text_measurement_sees_clipped_and_overlapping_text(browser, tmp_path):
    """The measurement above would catch a broken layout: prove it on one."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>'
                    '<h2 id="verdict">v</h2><div style="width:60px;overflow:hidden;white-space:nowrap">'
                    'a sentence far too long for its box</div><p style="position:relative">first line here</p>'
                    '<p style="position:relative;top:-34px">second line on top</p>'
                    '<p style="white-space:nowrap">' + "wide " * 400 + "</p></body></html>")
    got = measure_at_width(browser, page, 800, tmp_path / "bad.png")
    assert any(c.startswith("a sentence far too long") for c in got["clipped"])
    assert any(c.startswith("wide wide") for c in got["clipped"])
    assert ["first line here", "second line on top"] in got["overlaps"]
    assert got["scrollWidth"] > 800


# ----------------------------------------------------------------------------- the lab page


@needs_browser
@pytest.mark.parametrize("width", [1400, 800])
def test_lab_page_text_is_neither_clipped_nor_overlapping(width, browser, tmp_path):
    """`gpuroof report DIR` of many runs (committed real CPU runs, a degraded copy, the synthetic H100
    fixture), at 1,400 and 800 CSS px: no text clipped or overlapping, no sideways scroll of the page,
    the flagged runs first, every figure whole, every link to a run's report resolving."""
    try:
        from test_lab import CPU_RUNS, make_lab
    except ImportError:
        from tests.test_lab import CPU_RUNS, make_lab
    from gpuroof.lab import write_lab

    if not CPU_RUNS:
        pytest.skip("results/ holds no device with three complete CPU runs")
    page = write_lab(make_lab(tmp_path / "lab", days=True))
    shot = tmp_path / f"lab-{width}.png"
    got = measure_at_width(browser, page, width, shot)
    keep_screenshot(shot)
    assert_laid_out(got, width, 3)  # rooflines, per ceiling, over time; the flagged runs on the first screen
    loaded = load_in_browser(browser, page, tmp_path / "lab-load.png")
    assert loaded["errors"] == [] and loaded["scripts"] == 0
    assert all(i["complete"] and i["w"] > 300 for i in loaded["images"])
    assert loaded["h2"][0] == "Flagged first" and "Every run" in loaded["h2"]
    assert "degraded-copy" in loaded["text"] and "synthetic-h100-fixture" in loaded["text"]
