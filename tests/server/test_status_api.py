"""``GET /api/status`` and ``image-bot status --json``: one document, valid against the
published schema (schema/status.schema.json) for every stage state; peers merged in;
``/metrics`` gauges of the same document (per policy, stage and agent)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

import statusworld
import testing
from image_bot import cli
from image_bot.config import models
from image_bot.engine import context, scheduling
from image_bot.server import app

SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "status.schema.json"


def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _problems(document: Any) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in _validator().iter_errors(document))


def _states(document: dict[str, Any]) -> dict[str, str]:
    return {s["policy"]: s["state"] for p in document["pipelines"] for s in p["stages"]}


def _settings(url: str, state_dir: Path, **daemon: Any) -> dict[str, Any]:
    return testing.bot_config([url], state_dir=state_dir, daemon=daemon)


@asynccontextmanager
async def _daemon(config: models.BotConfig) -> AsyncIterator[httpx.AsyncClient]:
    async with context.Engine.open(config) as engine:
        scheduler = scheduling.Scheduler(engine, polling=False)
        asgi = app.create_app(config, scheduler=scheduler, state=engine.state,
                              metrics=engine.metrics, receivers_by_name={})
        async with testing.serving(asgi, scheduler) as http:
            yield http


@pytest.fixture
def repo_url(config_repo: Callable[[dict[str, str]], str]) -> str:
    return config_repo({"policies/.keep": ""})


def test_the_document_matches_its_schema_in_every_state(repo_url: str, tmp_path: Path) -> None:
    statusworld.seed(tmp_path / "state", now=time.time())
    settings = _settings(repo_url, tmp_path / "state")

    async def go() -> dict[str, Any]:
        async with _daemon(models.BotConfig.model_validate(settings)) as http:
            local = (await http.get("/api/status?local=1")).json()
            assert local["peers"] == []
            return dict((await http.get("/api/status")).json())

    served = asyncio.run(go())
    assert _problems(served) == []
    assert _states(served) == statusworld.STATES
    assert (served["ready"], served["scheduled"], served["shard"]) == (True, 0, None)
    assert {"policies", "sync", "deployments", "events"} <= served.keys()  # kept for scripts
    config = testing.write_json(tmp_path / "bot.yaml", settings)
    printed = CliRunner().invoke(cli.main, ["status", "--json", "--config", str(config)])
    assert printed.exit_code == 0, printed.output
    document = json.loads(printed.output)
    assert _problems(document) == []
    assert _states(document) == statusworld.STATES
    assert document["summary"] == served["summary"]


def test_the_schema_refuses_what_it_does_not_document(repo_url: str, tmp_path: Path) -> None:
    statusworld.seed(tmp_path / "state", now=time.time())
    config = testing.write_json(tmp_path / "bot.yaml", _settings(repo_url, tmp_path / "state"))
    document = json.loads(CliRunner().invoke(
        cli.main, ["status", "--json", "--config", str(config)]).output)
    stage = document["pipelines"][0]["stages"][0]
    stage["state"] = "exploded"
    stage["agents"][0]["health"] = "Fine"
    del document["summary"]["failing"]
    assert _problems(document) == [
        "pipelines/0/stages/0/agents/0/health: 'Fine' is not one of ['Healthy', "
        "'Progressing', 'Degraded', 'Missing', 'Unknown']",
        "pipelines/0/stages/0/state: 'exploded' is not one of ['failed', 'unmatched', "
        "'suspended', 'degraded', 'waiting', 'pending', 'promoting', 'declined', 'current']",
        "summary: 'failing' is a required property"]


def test_peers_are_merged_and_one_that_does_not_answer_is_shown(
        repo_url: str, tmp_path: Path) -> None:
    statusworld.seed(tmp_path / "peer", now=time.time())
    peer_config = testing.write_json(tmp_path / "peer.yaml", _settings(repo_url,
                                                                       tmp_path / "peer"))
    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    dead = f"http://127.0.0.1:{silent.getsockname()[1]}"

    async def go(peer: str) -> tuple[dict[str, Any], dict[str, Any], str, float]:
        settings = _settings(repo_url, tmp_path / "state", peers=[peer, dead],
                             peer_timeout=0.5)
        async with _daemon(models.BotConfig.model_validate(settings)) as http:
            local = (await http.get("/api/status?local=1")).json()
            started = time.monotonic()
            merged = (await http.get("/api/status")).json()
            seconds = time.monotonic() - started
            page = (await http.get("/")).text
            return local, merged, page, seconds

    with silent, testing.webhook_daemon(peer_config, tmp_path / "peer.log") as peer:
        local, merged, page, seconds = asyncio.run(go(peer))
        config = testing.write_json(tmp_path / "bot.yaml", _settings(
            repo_url, tmp_path / "state", peers=[peer], peer_timeout=2))
        alone = CliRunner().invoke(cli.main, ["status", "--json", "--config", str(config)])
        merged_by_cli = CliRunner().invoke(cli.main, ["status", "--json", "--peers",
                                                      "--config", str(config)])
    assert json.loads(alone.output)["pipelines"] == []  # the state dir alone: no network
    assert _states(json.loads(merged_by_cli.output)) == statusworld.STATES
    assert local["pipelines"] == [] and local["peers"] == []
    assert _states(merged) == statusworld.STATES
    assert merged["summary"]["total"] == 8
    assert [(p["url"], p["ok"], p["error"]) for p in merged["peers"]] == [
        (peer, True, None), (dead, False, "no answer within 0.5 s")]
    assert seconds < 3, "a silent peer held the page"
    assert _problems(merged) == []
    assert {a["agent"] for a in merged["sync"]} == {"dev-docker", "staging-docker",
                                                    "prod-docker", "api-docker"}
    assert f"peer <code>{dead}</code> did not answer" in page
    assert 'id="stage-web-staging"' in page


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_have_a_gauge_per_policy_stage_and_agent(repo_url: str, tmp_path: Path) -> None:
    now = time.time()
    statusworld.seed(tmp_path / "state", now=now)
    settings = _settings(repo_url, tmp_path / "state")

    async def go() -> str:
        async with _daemon(models.BotConfig.model_validate(settings)) as http:
            return (await http.get("/metrics")).text

    samples = _samples(asyncio.run(go()))

    def value(name: str, **labels: str) -> float:
        found = [v for (n, ls), v in samples.items()
                 if n == name and set(labels.items()) <= ls]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    for policy, state in statusworld.STATES.items():  # one-hot: 1 for its state only
        assert value("image_bot_policy_status", policy=policy, status=state) == 1
        assert sum(v for (n, ls), v in samples.items() if n == "image_bot_policy_status"
                   and ("policy", policy) in ls) == 1
    billing = value("image_bot_policy_last_success_timestamp_seconds", policy="billing")
    assert billing < value("image_bot_policy_last_run_timestamp_seconds", policy="billing")
    assert value("image_bot_policy_deploy_seconds", policy="web-dev",
                 phase="commit_to_deployed") == 180.0
    assert value("image_bot_policy_deploy_seconds", policy="web-dev",
                 phase="push_to_commit") == 4.0
    assert value("image_bot_stage_in_sync", policy="web-dev", agent="dev-docker") == 1
    assert value("image_bot_stage_in_sync", policy="api", agent="api-docker") == 0
    assert value("image_bot_stage_healthy", policy="api", agent="api-docker") == 0
    assert value("image_bot_agent_in_sync", agent="staging-docker") == 1
    assert value("image_bot_agent_healthy", agent="api-docker") == 0
    assert value("image_bot_agent_stale", agent="api-docker") == 0
    assert value("image_bot_agent_last_pass_timestamp_seconds",
                 agent="dev-docker") == pytest.approx(now - 10)
