"""Each kind of report opens from disk in headless Chromium, offline, with no errors and real charts.

Chromium is driven over the Chrome DevTools Protocol (a websocket on 127.0.0.1, the `websockets`
package Prefect already depends on): the network is switched off (offline emulation plus an
unreachable proxy), every console message, exception and request is recorded, the page's SVG
charts are measured in the DOM, and a full-page screenshot is written to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from websockets.sync.client import connect

from etl.synthetic import history as f
from reports import build

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    # Any request that escapes offline emulation goes to a proxy that is not there and fails.
    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    svg: dict[str, Any] = field(default_factory=dict)
    title: str = ""


class Chromium:
    """One headless Chromium with a DevTools websocket to a single page target."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                    timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=10)
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})  # type: ignore[no-any-return]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        if any(e.get("method") == event for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            self.events.append(message)
            if message.get("method") == event:
                return
        raise TimeoutError(event)

    def open(self, path: Path, screenshot: Path) -> PageReport:
        """Load ``path`` offline; return what happened and write a full-page PNG."""
        self.events.clear()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Network.emulateNetworkConditions", offline=True, latency=0,
                  downloadThroughput=-1, uploadThroughput=-1)
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        report = PageReport()
        svg = self.call("Runtime.evaluate", returnByValue=True, expression="""(() => {
            const svgs = Array.from(document.querySelectorAll('svg'));
            const drawn = svgs.filter(s => {
                const r = s.getBoundingClientRect();
                return r.width > 20 && r.height > 20 &&
                       s.querySelectorAll('rect,polyline,circle,line,path').length > 2;
            });
            return {total: svgs.length, drawn: drawn.length,
                    marks: svgs.reduce((n, s) => n + s.querySelectorAll('rect,polyline').length, 0),
                    scripts: document.querySelectorAll('script').length,
                    text: document.body.innerText.length};
        })()""")
        report.svg = svg["result"]["value"]
        report.title = self.call("Runtime.evaluate", expression="document.title",
                                 returnByValue=True)["result"]["value"]
        metrics = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1280,
                               "height": min(float(metrics["height"]), 6000.0), "scale": 1})
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                report.console_errors.append(json.dumps(params.get("args"))[:300])
            elif method == "Runtime.exceptionThrown":
                report.exceptions.append(json.dumps(params.get("exceptionDetails"))[:300])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                report.console_errors.append(params["entry"].get("text", "")[:300])
            elif method == "Network.requestWillBeSent":
                report.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                report.failed_requests.append(f"{params.get('errorText')} {params.get('type')}")
        return report

    def close(self) -> None:
        try:
            if hasattr(self, "ws"):
                self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def require_chromium() -> str:
    """Chromium's path; skip the test without it (fail on CI, which installs it)."""
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs it: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return executable


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    executable = require_chromium()
    # Chromium helpers may still be writing the profile as it exits: tolerate leftovers.
    with tempfile.TemporaryDirectory(prefix="ser-chromium-", ignore_cleanup_errors=True) as profile:
        browser = Chromium(executable, Path(profile))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def written_reports(db_session: Session, tmp_path: Path) -> dict[str, Path]:
    """One report of each kind over factory data, with a hostile call name in the batch."""
    s = db_session
    clips = f.make_corpus(s, n_actors=10, seed=3)
    fs = f.make_feature_set(s)
    old = f.make_model_version(s, clip_ids=clips, feature_set_id=fs, skill=0.55, seed=4)
    f.promote(s, old)
    new = f.make_model_version(s, clip_ids=clips, feature_set_id=fs, skill=0.75, seed=5)
    day = dt.date(2026, 3, 14)
    f.make_history(s, model_version_id=old, last_date=day, days=10, n_calls=12)
    ids = f.make_batch(s, model_version_id=old, batch_date=day, n_calls=120, seed=6,
                       call_names=["<script>alert(1)</script>.wav"])
    escalated = s.execute(text(
        "SELECT call_id FROM call_summaries WHERE escalated AND call_id = ANY(:ids) "
        "ORDER BY longest_negative_streak_s DESC LIMIT 1"), {"ids": ids.call_ids}).scalar_one()
    out = tmp_path / "reports"
    paths = {
        "call": build.call_report(s, escalated, out),
        "model": build.model_report(s, new, out),
        "batch": build.batch_report(s, day, out),
    }
    paths["index"] = build.index_report(out)
    return paths


def test_every_report_opens_offline_without_errors(chromium: Chromium,
                                                   written_reports: dict[str, Path]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    min_charts = {"model": 6, "batch": 4, "call": 2, "index": 0}
    for kind, path in written_reports.items():
        shot = ARTIFACTS / f"report-{kind}.png"
        page = chromium.open(path, shot)
        assert page.console_errors == [], (kind, page.console_errors)
        assert page.exceptions == [], (kind, page.exceptions)
        assert page.failed_requests == [], (kind, page.failed_requests)
        # The only request is the page itself; no image, font, script or style is fetched.
        assert [u for u in page.requests if not u.startswith(("file:", "data:"))] == [], kind
        assert page.svg["scripts"] == 0, kind  # the call named <script> stayed text
        assert page.svg["drawn"] >= min_charts[kind], (kind, page.svg)
        if kind != "index":
            assert page.svg["marks"] > 20, (kind, page.svg)
        assert page.title and page.svg["text"] > 200, kind
        assert shot.stat().st_size > 10_000, kind  # a real picture, not a blank page
