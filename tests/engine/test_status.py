"""`image-bot status` and the history it reads (the page in headless Chromium:
tests/server/test_status_page.py)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import testing
from image_bot import cli
from image_bot.engine import history, locking, waking
from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport
from image_bot.errors import StateDirLocked
from image_bot.state import State

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


def test_a_suspended_policy_keeps_its_tags_and_failure_streak(tmp_path: Path) -> None:
    _seed(tmp_path / "state")
    suspended = RepositoryReport(REPOSITORY, "main", outcomes=(
        PolicyOutcome("api", "policies/api.yaml", "suspended", "spec.suspend: true",
                      image="reg.local/team/api"),))
    with State.in_dir(tmp_path / "state") as state:
        history.record(state, CycleReport((suspended,)), trigger="interval", seconds=0.1)
        api = next(row for row in history.statuses(state) if row.policy == "api")
        streaks = history.failed_runs(state)
    assert (api.current, api.latest, api.status, api.message) == (
        "2.0.0", "2.0.0", "suspended", "spec.suspend: true")
    assert streaks[f"{REPOSITORY}#api"] == 1  # neither failed again nor recovered


def test_recording_a_run_returns_the_failure_streaks_it_started_from(tmp_path: Path) -> None:
    failed = RepositoryReport(REPOSITORY, "main", outcomes=(
        PolicyOutcome("api", "policies/api.yaml", "failed", "registry down",
                      image="reg.local/team/api"),))
    with State.in_dir(tmp_path) as state:
        first = history.record(state, CycleReport((failed,)), trigger="interval", seconds=0.1)
        second = history.record(state, CycleReport((failed,)), trigger="interval", seconds=0.1)
        after = history.failed_runs(state)
    assert (first, second, after) == ({}, {f"{REPOSITORY}#api": 1}, {f"{REPOSITORY}#api": 2})


def test_a_run_that_read_no_files_keeps_the_stage_where_it_was(tmp_path: Path) -> None:
    scanned = PolicyOutcome("prod", "policies/prod.yaml", "current", image="reg.local/web",
                            current="1.0.0", files=("deploy/prod/web.yaml",),
                            upstream="staging", healthy_for=600.0)
    broken = PolicyOutcome("prod", "policies/prod.yaml", "failed", "policy does not load",
                           image="reg.local/web")
    with State.in_dir(tmp_path) as state:
        history.record(state, CycleReport((RepositoryReport(REPOSITORY, "main",
                                                             outcomes=(scanned,)),)),
                       trigger="interval", seconds=0.1)
        history.record(state, CycleReport((RepositoryReport(REPOSITORY, "main",
                                                             outcomes=(broken,)),)),
                       trigger="interval", seconds=0.1)
        [row] = history.statuses(state)
    assert (row.status, row.files, row.upstream, row.healthy_for, row.branch) == (
        "failed", ("deploy/prod/web.yaml",), "staging", 600.0, "main")
    assert row.last_success_at is not None and row.last_error_at is not None
    assert row.last_success_at < row.last_error_at


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
