"""`image-bot status` and the status page, the page checked in headless Debian Chromium.

The page test saves a screenshot to tests/artifacts/status-page.png (gitignored).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli
from image_bot.engine import history, locking, syncing, waking
from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport
from image_bot.errors import StateDirLocked
from image_bot.state import State
from image_bot.sync import status as sync_status

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
REPOSITORY = "http://git.local/config.git"


def _seed(state_dir: Path) -> None:
    """Two runs: web updated then current, api failing on its second run."""
    first = RepositoryReport(REPOSITORY, "main", outcomes=(
        PolicyOutcome("web", "policies/web.yaml", "updated", "1.0.0 → 1.1.0 in 1 place(s)",
                      image="reg.local/team/web", current="1.0.0", latest="1.1.0"),
        PolicyOutcome("api", "policies/api.yaml", "current", "2.0.0 is the latest tag",
                      image="reg.local/team/api", current="2.0.0", latest="2.0.0"),
    ), commits=("0123456789abcdef",))
    second = RepositoryReport(REPOSITORY, "main", outcomes=(
        PolicyOutcome("api", "policies/api.yaml", "failed",
                      "registry reg.local unreachable while reading team/api: ConnectError",
                      image="reg.local/team/api"),
    ))
    with State.in_dir(state_dir) as state:
        history.record(state, CycleReport((first,)), trigger="interval", seconds=0.4)
        history.record(state, CycleReport((second,)), trigger="webhook", seconds=0.2)


def _seed_sync(state_dir: Path) -> None:
    """What `image-bot sync` leaves when it shares the state dir: one agent's last pass."""
    report = sync_status.SyncReport(
        agent="edge-docker", target="docker", repository=REPOSITORY, branch="main",
        path="deploy/", revision="fedcba9876543210", started_at=time.time() - 3,
        finished_at=time.time() - 2, services=(
            sync_status.ServiceStatus("shop", "web", "Synced", "Healthy",
                                      image="reg.local/team/web:1.1.0"),
            sync_status.ServiceStatus("shop", "worker", "OutOfSync", "Degraded",
                                      error="container exited with code 3"),
        ))
    sync_status.write(syncing.status_dir(state_dir) / "edge-docker.json", report)


def _config(tmp_path: Path, url: str = REPOSITORY, **extra: object) -> Path:
    settings = {"state_dir": tmp_path / "state", **extra}  # a test may name its own
    return testing.write_json(tmp_path / "bot.yaml", testing.bot_config([url], **settings))


def test_history_keeps_what_a_failed_scan_cannot_know(tmp_path: Path) -> None:
    _seed(tmp_path / "state")
    with State.in_dir(tmp_path / "state") as state:
        web, api = sorted(history.statuses(state), key=lambda row: row.policy, reverse=True)
        kinds = [event["kind"] for event in history.recent_events(state)]
    assert (web.policy, web.current, web.latest, web.status) == ("web", "1.1.0", "1.1.0",
                                                                 "updated")
    assert (api.current, api.latest, api.status) == ("2.0.0", "2.0.0", "failed")
    assert api.last_error is not None and api.last_error.startswith("registry reg.local")
    assert kinds == ["scan", "error", "scan", "commit"]


def test_status_command_table_and_json(tmp_path: Path) -> None:
    _seed(tmp_path / "state")
    config = str(_config(tmp_path))
    as_json = CliRunner().invoke(cli.main, ["status", "--json", "--config", config])
    assert as_json.exit_code == 0, as_json.output
    rows = {row["policy"]: row for row in json.loads(as_json.output)["policies"]}
    assert rows["web"]["current"] == "1.1.0" and rows["api"]["status"] == "failed"
    table = CliRunner(env={"COLUMNS": "220"}).invoke(cli.main, ["status", "--config", config])
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert any("web" in line and "1.1.0" in line and "current" in line for line in lines)
    assert any("api" in line and "failed" in line for line in lines)
    assert "unreachable" in table.output


def test_status_with_no_history_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["status", "--config", str(_config(tmp_path))])
    assert result.exit_code == 0
    assert result.output.startswith("no policy has run yet")


def test_the_state_dir_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    with locking.hold(tmp_path, purpose="daemon"):
        message = rf"state dir {tmp_path} is in use by pid {os.getpid()} \(daemon, "
        with pytest.raises(StateDirLocked, match=message), \
                locking.hold(tmp_path, purpose="run --once"):
            pass  # pragma: no cover
        result = CliRunner().invoke(cli.main, ["plan", "--config", str(_config(
            tmp_path, **{"state_dir": str(tmp_path)}))])
        assert result.exit_code == 3
    with locking.hold(tmp_path, purpose="again"):  # released when the holder is done
        pass


@pytest.mark.e2e
def test_status_page_in_headless_chromium(tmp_path: Path, git_server: devservers.GitServer,
                                          config_repo: Callable[[dict[str, str]], str]) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run `make deps`"
    url = config_repo({"policies/README.md": "no policies yet\n"})
    _seed(tmp_path / "state")
    _seed_sync(tmp_path / "state")
    port = devservers.free_port()
    config = _config(tmp_path, url)
    log = tmp_path / "daemon.log"
    with log.open("wb") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "image_bot", "webhook", "--config", str(config),
             "--listen", f"127.0.0.1:{port}"], stderr=stderr)
    try:
        devservers.wait_for_port(port, timeout=30)
        page = f"http://127.0.0.1:{port}/"
        assert httpx.get(page).status_code == 200
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]
        dom = subprocess.run([chromium, *flags, "--dump-dom", page], capture_output=True,
                             text=True, timeout=90, check=True).stdout
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        shot.unlink(missing_ok=True)
        subprocess.run([chromium, *flags, "--window-size=1280,1000", f"--screenshot={shot}",
                        page], capture_output=True, timeout=90, check=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, log.read_text()[-4000:]
    assert "<title>image-bot status</title>" in dom
    assert dom.count("<tr") >= 3 + 4  # headers, two policies, events
    for text in ("web", "reg.local/team/web", "1.1.0", "api", "failed",
                 "registry reg.local unreachable", "commit", "edge-docker", "OutOfSync",
                 "container exited with code 3", "fedcba987654"):
        assert text in dom
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_forge_push_wakes_a_sync_agent_sleeping_between_passes(tmp_path: Path) -> None:
    sleep = waking.sleeper(tmp_path, poll=0.02)
    started = time.monotonic()
    sleep(0.1)  # nobody asks: the whole interval
    assert time.monotonic() - started >= 0.1
    timer = threading.Timer(0.2, waking.request_sync, args=(tmp_path,))
    timer.start()
    started = time.monotonic()
    sleep(30)
    assert time.monotonic() - started < 5
    timer.join()
