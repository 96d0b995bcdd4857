"""The status page served by the real daemon (``image-bot webhook``), opened in headless
Debian Chromium at desktop (1280 px) and phone (390 px) width: what it shows for each stage
state, that the phone layout never scrolls sideways, and that it refreshes itself in place.

Screenshots are kept as test artifacts in tests/artifacts/ (gitignored):
status-page-desktop.png and status-page-phone.png.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import devservers
import statusworld
import testing
from image_bot.engine import history
from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport
from image_bot.server import page
from image_bot.state import State

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
PHONE = 390
# a page of the test's own, on the daemon's origin (through the proxy below), that loads the
# status page in a phone-wide frame and writes down how wide its content is
PROBE = f"""<!doctype html><html><body style="margin:0">
<iframe id="frame" src="/" style="width:{PHONE}px;height:844px;border:0"></iframe>
<script>
document.getElementById("frame").addEventListener("load", () => {{
  const page = document.getElementById("frame").contentDocument.documentElement;
  const out = document.createElement("pre");
  out.id = "measure";
  out.textContent = JSON.stringify({{scrollWidth: page.scrollWidth,
                                    clientWidth: page.clientWidth}});
  document.body.appendChild(out);
}});
</script></body></html>"""


@contextmanager
def _same_origin_probe(daemon: str,
                       before_second_page: Callable[[], None] = lambda: None) -> Iterator[str]:
    """A proxy to the daemon that also serves ``/probe.html``: its URL. The page's second
    request (its live refresh) is forwarded after ``before_second_page`` ran."""
    pages = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/":
                pages.append(self.path)
                if len(pages) == 2:
                    before_second_page()
            if self.path == "/probe.html":
                body, kind = PROBE.encode(), "text/html; charset=utf-8"
            else:
                answer = httpx.get(daemon + self.path, timeout=10)
                body, kind = answer.content, answer.headers["content-type"]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _chromium(tmp_path: Path, *args: str) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run `make deps`"
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True,
                          timeout=90, check=True).stdout


def _screenshot(tmp_path: Path, url: str, name: str, *, width: int, height: int) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    _chromium(tmp_path, f"--window-size={width},{height}", f"--screenshot={shot}", url)
    return shot


def _png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int(struct.unpack(">I", data[16:20])[0])


def _stage(dom: str, policy: str) -> str:
    """The stage's ``<li>`` as Chromium rendered it."""
    found = re.search(rf'<li class="stage [a-z]+" id="stage-{policy}".*?</li>\s*(?=<li class|'
                      r"</ol>)", dom, re.S)
    assert found, f"no stage {policy} on the page"
    return re.sub(r"\s+", " ", found.group(0))


def _seeded(tmp_path: Path, config_repo: Callable[[dict[str, str]], str]) -> Path:
    """A bot config whose state dir holds one stage in each state (tools/statusworld.py)."""
    url = config_repo({"policies/.keep": ""})
    statusworld.seed(tmp_path / "state", now=time.time())
    return testing.write_json(tmp_path / "bot.yaml", testing.bot_config(
        [{"url": url}], state_dir=tmp_path / "state"))


@pytest.mark.e2e
def test_the_page_shows_every_stage_state_at_desktop_and_phone_width(
        tmp_path: Path, git_server: devservers.GitServer,
        config_repo: Callable[[dict[str, str]], str]) -> None:
    config = _seeded(tmp_path, config_repo)
    with testing.webhook_daemon(config, tmp_path / "daemon.log") as daemon:
        dom = _chromium(tmp_path, "--window-size=1280,1000", "--dump-dom", f"{daemon}/")
        desktop = _screenshot(tmp_path, f"{daemon}/", "status-page-desktop.png",
                              width=1280, height=2200)
        phone = _screenshot(tmp_path, f"{daemon}/", "status-page-phone.png",
                            width=PHONE, height=4200)
        with _same_origin_probe(daemon) as probe:
            measured = _chromium(tmp_path, "--window-size=800,900",
                                 "--virtual-time-budget=10000", "--dump-dom",
                                 f"{probe}/probe.html")
    # 1. every stage, in its state, with what makes it that state
    for policy, state in statusworld.STATES.items():
        assert f'id="stage-{policy}" data-state="{state}"' in dom, policy
    web = re.findall(r'id="stage-(web-[a-z]+)"', dom)
    assert web == ["web-dev", "web-staging", "web-prod"]  # the promote chain, upstream first
    flat = re.sub(r"\s+", " ", dom)
    assert 'newest eligible in the registry: <code class="newest">1.4.2</code>' in flat
    staging = _stage(dom, "web-staging")
    assert ("from <b>web-dev</b>: 1.4.2 healthy in web-dev for 42 m; eligible for "
            "web-staging in 18 m") in staging
    assert "<b>staging-docker</b> runs <code>1.4.1</code>" in staging
    prod = _stage(dom, "web-prod")
    assert f'<a class="pr" href="{statusworld.PR}">{statusworld.PR}</a>' in prod
    assert "<code class=\"tag\">1.4.0</code> → <code>1.4.1</code>" in prod
    api = _stage(dom, "api")
    assert "2.1.0 degraded on api-docker: container exited with code 3" in api
    assert '<span class="pill bad">Degraded</span>' in api
    assert "3.1.0 declined: pull request #5 closed without merge" in _stage(dom, "worker")
    assert "suspended (spec.suspend)" in _stage(dom, "cron")
    assert "registry reg.local unreachable" in _stage(dom, "billing")
    dev = _stage(dom, "web-dev")
    assert "<b>dev-docker</b> runs <code>1.4.2</code>" in dev and "since 42m ago" in dev
    # 2. counters on top; the failing and the unmatched policy stand out
    counters = dict(re.findall(r'id="count-([a-z_]+)"> <b>(\d+)</b>', flat))
    assert counters == {"up_to_date": "2", "pending": "2", "degraded": "1", "failing": "2",
                        "suspended": "1"}
    banners = re.findall(r'class="banner bad attention"><b>([a-z-]+)</b> ([a-z ]+):', flat)
    assert sorted(banners) == [("billing", "failed"), ("ghost", "matches no file")]
    # 3. screenshots at both widths; the phone layout never scrolls sideways
    assert (_png_width(desktop), _png_width(phone)) == (1280, PHONE)
    assert desktop.stat().st_size > 20_000 and phone.stat().st_size > 20_000
    found = re.search(r'<pre id="measure">(.*?)</pre>', measured)
    assert found, measured[-2000:]
    widths = json.loads(found.group(1))
    assert widths["clientWidth"] == PHONE
    assert widths["scrollWidth"] <= PHONE, widths


@pytest.mark.e2e
def test_the_page_refreshes_itself_in_place(
        tmp_path: Path, git_server: devservers.GitServer,
        config_repo: Callable[[dict[str, str]], str]) -> None:
    config = _seeded(tmp_path, config_repo)

    def billing_recovers() -> None:
        with State.in_dir(tmp_path / "state") as state:
            history.record(state, CycleReport((RepositoryReport(statusworld.REPOSITORY, "main",
                outcomes=(PolicyOutcome("billing", "policies/billing.yaml", "current",
                                        image="reg.local/shop/billing", current="5.0.1"),)),)),
                trigger="interval", seconds=0.1)

    with testing.webhook_daemon(config, tmp_path / "daemon.log") as daemon, \
            _same_origin_probe(daemon, billing_recovers) as proxy:
        dom = _chromium(tmp_path, "--window-size=1280,1000",
                        f"--virtual-time-budget={(page.REFRESH + 5) * 1000}", "--dump-dom",
                        f"{proxy}/")
    assert 'id="stage-billing" data-state="current"' in dom  # the refreshed content
    assert dom.count('id="pane"') == 1
