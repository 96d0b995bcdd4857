"""``POST /api/agents/<name>/report`` in process, with the real scheduler and git server.

Accepted reports are stored and queue a tracking scan; a bad secret, an oversize or a
malformed body is refused (401/413/400) and changes nothing; silent agents are stale.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import devservers
import testing
from image_bot import cli
from image_bot.config import models
from image_bot.engine import context, reporting, scheduling
from image_bot.server import app
from image_bot.state import State
from image_bot.sync import status

SECRET = "agent-secret-42"


def _config(url: str, state_dir: Path, *, agents: bool = True) -> models.BotConfig:
    return models.BotConfig.model_validate({
        "repositories": [{"url": url}], "state_dir": str(state_dir),
        **({"agents": {"secret_env": "TEST_AGENT_SECRET", "max_body_bytes": 4096,
                       "stale_after": 3}} if agents else {}),
    })


def _report(url: str, *, agent: str = "edge-1", **changes: Any) -> status.SyncReport:
    report = status.SyncReport(
        agent=agent, target="docker", repository=url, branch="main", path="deploy",
        revision="0" * 40, started_at=time.time() - 1, finished_at=time.time(),
        services=(status.ServiceStatus("deploy", "web", "Synced", "Healthy",
                                       image="registry.local/web:1.0.0"),))
    return status.SyncReport(**{**{f: getattr(report, f) for f in report.__slots__},
                                **changes})


@asynccontextmanager
async def _daemon(config: models.BotConfig) -> AsyncIterator[
        tuple[httpx.AsyncClient, scheduling.Scheduler, State]]:
    async with context.Engine.open(config) as engine:
        scheduler = scheduling.Scheduler(engine, polling=False)
        secret = app.load_agent_secret(config, {"TEST_AGENT_SECRET": SECRET})
        asgi = app.create_app(config, scheduler=scheduler, state=engine.state,
                              metrics=engine.metrics, receivers_by_name={},
                              agent_secret=secret)
        async with testing.serving(asgi, scheduler) as http:
            yield http, scheduler, engine.state


async def _post(http: httpx.AsyncClient, name: str, body: bytes, *,
                secret: str = SECRET) -> httpx.Response:
    return await http.post(f"/api/agents/{name}/report", content=body, headers={
        reporting.SIGNATURE_HEADER: reporting.signature(secret, body)})


@pytest.fixture
def repo_url(config_repo: Callable[[dict[str, str]], str]) -> str:
    return config_repo({"deploy/compose.yaml": "services: {}\n", "policies/.keep": ""})


def test_a_signed_report_is_stored_and_queues_a_tracking_scan(
    repo_url: str, tmp_path: Path, git_server: devservers.GitServer,
) -> None:
    async def go() -> None:
        async with _daemon(_config(repo_url, tmp_path / "state")) as (http, scheduler, state):
            before = scheduler.scans
            body = reporting.body(_report(repo_url), interval=30)
            answer = await _post(http, "edge-1", body)
            assert (answer.status_code, answer.json()) == (202, {"tracking": True})
            [(agent, data, interval, _)] = state.agent_reports()
            assert (agent, data["revision"], interval) == ("edge-1", "0" * 40, 30.0)
            for _ in range(200):  # the tracking scan runs on the scheduler, not the request
                if scheduler.scans > before:
                    break
                await asyncio.sleep(0.05)
            assert scheduler.scans == before + 1
            shown = (await http.get("/api/status")).json()["sync"]
            assert [(a["agent"], a["stale"], a["via"]) for a in shown] == [
                ("edge-1", False, "http")]
            assert "edge-1" in (await http.get("/")).text
            metrics = (await http.get("/metrics")).text
            assert 'image_bot_agent_reports_total{outcome="accepted"} 1.0' in metrics
    asyncio.run(go())


@pytest.mark.parametrize(("case", "status_code"), [
    ("bad secret", 401), ("unsigned", 401), ("oversize", 413), ("not json", 400),
    ("other agent", 400), ("bad health", 400), ("no interval", 400), ("bad name", 400),
])
def test_refused_reports_change_nothing(repo_url: str, tmp_path: Path, case: str,
                                        status_code: int) -> None:
    good = json.loads(reporting.body(_report(repo_url), interval=30))
    name, secret, body = "edge-1", SECRET, b""
    if case == "bad secret":
        secret, body = "wrong", json.dumps(good).encode()
    elif case == "oversize":
        body = json.dumps({**good, "padding": "x" * 5000}).encode()
    elif case == "not json":
        body = b"{not json"
    elif case == "other agent":
        body = json.dumps(good).encode()
        name = "edge-2"
    elif case == "bad health":
        good["report"]["services"][0]["health"] = "Fine"
        body = json.dumps(good).encode()
    elif case == "no interval":
        body = json.dumps(good["report"]).encode()
    elif case == "bad name":
        name, body = "-edge", json.dumps(good).encode()
    elif case == "unsigned":
        body = json.dumps(good).encode()

    async def go() -> None:
        async with _daemon(_config(repo_url, tmp_path / "state")) as (http, scheduler, state):
            before = scheduler.scans
            if case == "unsigned":
                answer = await http.post("/api/agents/edge-1/report", content=body)
            else:
                answer = await _post(http, name, body, secret=secret)
            assert answer.status_code == status_code, answer.text
            assert SECRET not in answer.text
            await asyncio.sleep(0.3)  # a queued scan would have started by now
            assert state.agent_reports() == []
            assert scheduler.scans == before
    asyncio.run(go())


def test_reports_are_refused_when_the_bot_config_has_no_agents_section(
    repo_url: str, tmp_path: Path,
) -> None:
    async def go() -> None:
        async with _daemon(_config(repo_url, tmp_path / "state", agents=False)) as (
                http, _, state):
            answer = await _post(http, "edge-1", reporting.body(_report(repo_url), interval=1))
            assert answer.status_code == 404 and "agents" in answer.json()["error"]
            assert state.agent_reports() == []
    asyncio.run(go())


def test_an_agent_silent_for_more_than_stale_after_intervals_is_stale(
    repo_url: str, tmp_path: Path,
) -> None:
    async def go() -> None:
        async with _daemon(_config(repo_url, tmp_path / "state")) as (http, _, state):
            now = time.time()
            state.put_agent_report("fresh", _report(repo_url, agent="fresh").to_dict(),
                                   interval=60, at=now - 170)
            state.put_agent_report("silent", _report(repo_url, agent="silent").to_dict(),
                                   interval=60, at=now - 190)
            shown = (await http.get("/api/status")).json()["sync"]
            assert {a["agent"]: a["stale"] for a in shown} == {"fresh": False, "silent": True}
            assert "stale: silent since" in (await http.get("/")).text
    asyncio.run(go())


def test_the_agent_side_never_fails_a_pass_when_the_daemon_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = devservers.free_port()  # nothing listens there
    ok = reporting.post(f"http://user:pw@127.0.0.1:{port}/api/agents/a/report?token=t",
                        SECRET, _report("https://git.example/ops.git", agent="a"), interval=5,
                        timeout=2)
    assert ok is False
    assert "could not report" in caplog.text
    assert SECRET not in caplog.text and "pw" not in caplog.text and "token=t" not in caplog.text


@pytest.mark.parametrize(("args", "message"), [
    (["--report-to", "http://bot:8080"], "--report-to needs --report-secret-env"),
    (["--report-secret-env", "TEST_AGENT_SECRET"], "need --report-to"),
    (["--report-to", "bot:8080", "--report-secret-env", "TEST_AGENT_SECRET"],
     "is not an http(s) URL"),
    (["--report-to", "http://bot:8080", "--report-secret-env", "UNSET_VARIABLE_X"],
     "UNSET_VARIABLE_X is not set"),
])
def test_report_options_are_checked_before_any_pass(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_AGENT_SECRET", SECRET)
    result = CliRunner().invoke(cli.main, [
        "sync", "--repo", "https://git.invalid/ops.git", "--once",
        "--state-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert SECRET not in result.output
    assert not (tmp_path / "sync").exists()  # nothing fetched, nothing written
