"""The pipelines view (``engine.pipelines``) over state rows: one stage in each state, chains
upstream first, agents per stage, promotion sentences, counters, links, peers merged."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import statusworld
from image_bot.engine import history, pipelines, reporting
from image_bot.engine.history import Declined, PolicyStatus
from image_bot.state import State
from image_bot.sync import status as sync_status

LINKS = {statusworld.REPOSITORY: pipelines.Links("https://github.com/acme/config", "github")}


def _world(tmp_path: Path, *, now: float) -> dict[str, pipelines.Stage]:
    statusworld.seed(tmp_path / "state", now=now)
    with State.in_dir(tmp_path / "state") as state:
        found = pipelines.stages(
            history.statuses(state), updates=state.updates().values(),
            agents=history.agents(state, tmp_path / "state", now=now, stale_after=3),
            now=now, links=LINKS)
    return {s.row.policy: s for s in found}


@pytest.fixture
def world(tmp_path: Path) -> dict[str, pipelines.Stage]:
    return _world(tmp_path, now=time.time())


def test_each_stage_is_in_the_state_its_rows_say(world: dict[str, pipelines.Stage]) -> None:
    assert {name: s.state for name, s in world.items()} == statusworld.STATES
    reasons = {name: s.reason for name, s in world.items()}
    assert reasons["web-prod"] == f"1.4.1 proposed in {statusworld.PR}"
    assert reasons["web-staging"] == "1.4.2 soaking upstream in web-dev"
    assert reasons["api"] == ("2.1.0 degraded on api-docker: container exited with code 3")
    assert reasons["worker"] == "3.1.0 declined: pull request #5 closed without merge"
    assert reasons["billing"].startswith("registry reg.local unreachable")
    assert reasons["ghost"] == "no references to reg.local/shop/ghost in deploy/**"
    assert reasons["cron"] == "suspended (spec.suspend)"
    assert reasons["web-dev"] == "1.4.2 is the newest eligible tag"


def test_a_promoting_stage_says_how_long_its_upstream_ran_it(
        world: dict[str, pipelines.Stage]) -> None:
    assert world["web-staging"].promotion == (
        "1.4.2 healthy in web-dev for 42 m; eligible for web-staging in 18 m")
    assert world["web-prod"].promotion == "eligible from web-staging: 1.4.1"
    assert world["web-dev"].promotion is None


def test_each_stage_shows_the_agents_that_deploy_it(world: dict[str, pipelines.Stage],
                                                    ) -> None:
    agents = {name: [a.agent for a in s.agents] for name, s in world.items()}
    assert agents == {"web-dev": ["dev-docker"], "web-staging": ["staging-docker"],
                      "web-prod": ["prod-docker"], "api": ["api-docker"], "worker": [],
                      "cron": [], "billing": [], "ghost": []}
    [dev] = world["web-dev"].agents
    assert (dev.tags, dev.sync, dev.health, dev.stale) == (("1.4.2",), "Synced", "Healthy",
                                                           False)
    assert dev.since is not None and dev.seen_at - dev.since == pytest.approx(42 * 60 - 10)
    [api] = world["api"].agents
    assert (api.sync, api.health, api.error) == ("OutOfSync", "Degraded",
                                                 "container exited with code 3")


def test_the_document_chains_stages_upstream_first_and_counts_them(
        world: dict[str, pipelines.Stage]) -> None:
    document = pipelines.document(world.values())
    web = next(p for p in document["pipelines"] if p["image"] == "reg.local/shop/web")
    assert [s["policy"] for s in web["stages"]] == ["web-dev", "web-staging", "web-prod"]
    assert web["newest"] == "1.4.2"
    assert document["summary"] == {
        "up_to_date": 2, "pending": 2, "degraded": 1, "failing": 2, "suspended": 1, "total": 8,
        "states": {"failed": 1, "unmatched": 1, "suspended": 1, "degraded": 1, "pending": 1,
                   "promoting": 1, "declined": 1, "current": 1}}


def test_links_to_the_commit_the_pull_request_and_the_policy_source(
        world: dict[str, pipelines.Stage]) -> None:
    dev = world["web-dev"].to_dict()
    assert dev["update"]["commit_url"] == "https://github.com/acme/config/commit/" + "a1" * 20
    assert dev["source_url"] == ("https://github.com/acme/config/blob/main/"
                                 "policies/web-dev.yaml")
    assert dev["update"]["push_to_commit"] == 4.0
    assert dev["update"]["commit_to_deployed"] == 180.0
    assert world["web-prod"].to_dict()["pull_request_url"] == statusworld.PR
    gitlab = pipelines.Links("https://gitlab.example/group/config", "gitlab")
    assert gitlab.commit("abc") == "https://gitlab.example/group/config/-/commit/abc"


# --- hand-built rows ----------------------------------------------------------------------


def _row(policy: str, *, upstream: str | None = None, **fields: Any) -> PolicyStatus:
    values: dict[str, Any] = {
        "repository": "https://git.example/config.git", "policy": policy,
        "image": "reg.local/app", "current": "1.0.0", "latest": "1.0.0", "status": "current",
        "message": "", "pull_request": None, "last_error": None, "last_error_at": None,
        "last_run": 1000.0, "branch": "main", "files": (f"deploy/{policy}/app.yaml",),
        "upstream": upstream, "healthy_for": 60.0 if upstream else None, **fields}
    return PolicyStatus(**values)


def _state(row: PolicyStatus, *, updates: list[dict[str, Any]] | None = None,
           agents: list[reporting.AgentStatus] | None = None) -> str:
    [stage] = pipelines.stages([row], updates=updates or [], agents=agents or [], now=5000.0)
    return stage.state


@pytest.mark.parametrize(("fields", "state"), [
    ({"status": "failed", "last_error": "registry down"}, "failed"),
    ({"status": "unmatched"}, "unmatched"),
    ({"status": "suspended"}, "suspended"),
    ({"status": "waiting", "latest": "1.1.0"}, "waiting"),
    ({"status": "proposed", "latest": "1.1.0", "pull_request": "#3"}, "pending"),
    ({"status": "planned", "latest": "1.1.0"}, "pending"),
    ({"status": "current"}, "current"),
])
def test_the_last_run_alone_decides_these_states(fields: dict[str, Any], state: str) -> None:
    assert _state(_row("app", **fields)) == state


def test_a_decline_an_update_followed_is_history_not_the_state() -> None:
    declined = _row("app", declined=(Declined("1.1.0", "PR closed", 100.0),))
    update = {"repository": declined.repository, "policy": "app", "image": "reg.local/app",
              "tag": "1.2.0", "commit": "e" * 40, "committed_at": 200.0, "state": "deployed",
              "agents": {}}
    assert _state(declined) == "declined"
    assert _state(declined, updates=[update]) == "current"


def _agent(*services: sync_status.ServiceStatus, stale: bool = False,
           ) -> reporting.AgentStatus:
    report = sync_status.SyncReport(
        "edge", "docker", "https://git.example/config.git", "main", "deploy/app",
        revision="1" * 40, finished_at=100.0, services=services)
    return reporting.AgentStatus(report, 30.0, 100.0 if stale else 4990.0, stale=stale)


def _service(image: str, health: str = "Healthy") -> sync_status.ServiceStatus:
    return sync_status.ServiceStatus("app", image.split(":")[0].rsplit("/")[-1],
                                     "Synced" if health == "Healthy" else "OutOfSync",
                                     health, image=image)  # type: ignore[arg-type]


def test_committed_but_not_yet_deployed_is_pending_where_an_agent_deploys_it() -> None:
    update = {"repository": "https://git.example/config.git", "policy": "app",
              "image": "reg.local/app", "tag": "1.0.0", "commit": "e" * 40,
              "committed_at": 200.0, "state": "committed", "agents": {}}
    agent = _agent(_service("reg.local/app:0.9.0"))
    [stage] = pipelines.stages([_row("app")], updates=[update], agents=[agent], now=300.0)
    assert (stage.state, stage.reason) == ("pending", "1.0.0 committed, waiting for the agents")
    # with no agent deploying it, nothing will ever deploy it: the commit is the end
    [alone] = pipelines.stages([_row("app")], updates=[update], agents=[], now=300.0)
    assert alone.state == "current"


def test_only_the_stage_images_health_degrades_it() -> None:
    other = _agent(_service("reg.local/db:5", "Degraded"))  # deploys the folder, not the app
    assert _state(_row("app"), agents=[other]) == "current"
    broken = _agent(_service("reg.local/app:1.0.0", "Degraded"))
    assert _state(_row("app"), agents=[broken]) == "degraded"


def test_a_silent_agent_degrades_its_stage() -> None:
    assert _state(_row("app"), agents=[_agent(_service("reg.local/app:1.0.0"))]) == "current"
    silent = _agent(_service("reg.local/app:1.0.0"), stale=True)
    assert _state(_row("app"), agents=[silent]) == "degraded"


def test_chains_are_ordered_upstream_first_whatever_the_names() -> None:
    rows = [_row("a-prod", upstream="z-staging"), _row("m-dev"),
            _row("z-staging", upstream="m-dev"), _row("b-other")]
    document = pipelines.document(pipelines.stages(rows, updates=[], agents=[], now=0.0))
    [pipeline] = document["pipelines"]
    assert [s["policy"] for s in pipeline["stages"]] == ["b-other", "m-dev", "z-staging",
                                                         "a-prod"]


def test_peers_merge_into_one_document_and_the_newer_run_wins() -> None:
    def doc(*rows: PolicyStatus) -> dict[str, Any]:
        return pipelines.document(pipelines.stages(rows, updates=[], agents=[], now=0.0))

    mine = doc(_row("dev"), _row("staging", upstream="dev", status="failed",
                                 last_error="boom", last_run=1000.0))
    theirs = doc(_row("staging", upstream="dev", last_run=2000.0),
                 _row("prod", upstream="staging", status="unmatched"))
    merged = pipelines.merge([mine, theirs])
    [pipeline] = merged["pipelines"]
    assert [(s["policy"], s["state"]) for s in pipeline["stages"]] == [
        ("dev", "current"), ("staging", "current"), ("prod", "unmatched")]
    assert (merged["summary"]["up_to_date"], merged["summary"]["failing"]) == (2, 1)
