"""A state dir holding one stage in each state the status page shows; asserts nothing.

Written through the engine's own writers (``history.record`` for decisions, ``State`` for
tracked updates, declines and agent reports), times relative to ``now``:

- ``reg.local/shop/web``, a three-stage chain: ``web-dev`` *current* on 1.4.2 (healthy on
  ``dev-docker`` for 42 minutes), ``web-staging`` *promoting* (promotes from web-dev after
  1 h 30 s: 1.4.2 eligible in 18 minutes), ``web-prod`` *pending* (PR #7 for 1.4.1, promoted
  from web-staging);
- ``api`` *degraded* (2.1.0 Degraded on ``api-docker``), ``worker`` *declined* (3.1.0's
  PR closed), ``cron`` *suspended*, ``billing`` *failed*, ``ghost`` *unmatched*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from image_bot.engine import history, tracking
from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport
from image_bot.state import State
from image_bot.sync import status as sync_status

REPOSITORY = "https://github.com/acme/config.git"
FORGE = {"kind": "github", "project": "acme/config"}
PR = "https://github.com/acme/config/pull/7"
MINUTE = 60.0
HEALTHY_FOR = 3630.0  # web-staging's soak: 1 h, and 30 s for a slow machine to show the page
STATES = {"web-dev": "current", "web-staging": "promoting", "web-prod": "pending",
          "api": "degraded", "worker": "declined", "cron": "suspended", "billing": "failed",
          "ghost": "unmatched"}


def _outcome(policy: str, status: str, image: str, tag: str | None, *,
             latest: str | None = None, note: str = "", stage: str = "",
             upstream: str | None = None, healthy_for: float | None = None) -> PolicyOutcome:
    return PolicyOutcome(
        policy, f"policies/{policy}.yaml", status, note,
        image=f"reg.local/shop/{image}", current=tag, latest=latest or tag,
        files=(f"deploy/{stage or policy}/compose.yaml",) if status != "unmatched" else (),
        upstream=upstream, healthy_for=healthy_for)


def _update(state: State, policy: str, image: str, tag: str, old: str, *, commit: str,
            committed_at: float, state_name: str, agents: dict[str, Any],
            stage: str = "", reason: str = "", degraded_by: str | None = None) -> None:
    name = f"reg.local/shop/{image}"
    state.put_update(tracking.key(REPOSITORY, commit, policy, name), {
        "repository": REPOSITORY, "branch": "main", "commit": commit, "policy": policy,
        "image": name, "tag": tag, "old_tag": old, "old_digest": None,
        "files": [f"deploy/{stage or policy}/compose.yaml"], "committed_at": committed_at,
        "pushed_at": committed_at - 4.0, "state": state_name, "latest": True,
        "agents": agents, "reason": reason, "rollback": None, "degraded_by": degraded_by})


def _agent(state: State, name: str, stage: str, image: str, tag: str, *, now: float,
           health: str = "Healthy", error: str | None = None) -> None:
    report = sync_status.SyncReport(
        agent=name, target="docker", repository=REPOSITORY, branch="main",
        path=f"deploy/{stage}", revision="fedcba9876543210" + name.encode().hex()[:8],
        started_at=now - 12, finished_at=now - 10, services=(sync_status.ServiceStatus(
            stage, image, "Synced" if health == "Healthy" else "OutOfSync", health,
            image=f"reg.local/shop/{image}:{tag}", error=error),))
    state.put_agent_report(name, report.to_dict(), interval=30.0, at=now - 10)


def seed(state_dir: Path, *, now: float) -> None:
    """Write the world into ``state_dir`` (decisions are dated by the real clock)."""
    outcomes = (
        _outcome("web-dev", "current", "web", "1.4.2", stage="dev"),
        _outcome("web-staging", "current", "web", "1.4.1", stage="staging",
                 note="1.4.2 healthy in web-dev for 42 m; eligible in 18 m",
                 upstream="web-dev", healthy_for=HEALTHY_FOR),
        _outcome("web-prod", "proposed", "web", "1.4.0", latest="1.4.1", stage="prod",
                 upstream="web-staging", healthy_for=600.0),
        _outcome("api", "current", "api", "2.1.0"),
        _outcome("worker", "current", "worker", "3.0.0"),
        _outcome("cron", "suspended", "cron", "0.9.0", note="suspended (spec.suspend)"),
        _outcome("ghost", "unmatched", "ghost", None,
                 note="no references to reg.local/shop/ghost in deploy/**"),
        _outcome("billing", "current", "billing", "5.0.0"),
    )
    failing = (PolicyOutcome("billing", "policies/billing.yaml", "failed",
                             "registry reg.local unreachable while reading shop/billing",
                             image="reg.local/shop/billing"),)
    with State.in_dir(state_dir) as state:
        history.record(state, CycleReport((RepositoryReport(REPOSITORY, "main",
                                                             outcomes=outcomes),)),
                       trigger="interval", seconds=0.3)
        history.record(state, CycleReport((RepositoryReport(REPOSITORY, "main",
                                                             outcomes=failing),)),
                       trigger="interval", seconds=0.1)
        decisions = state.decisions()
        prod = decisions[f"{REPOSITORY}#web-prod"][0]
        state.record_decisions([(f"{REPOSITORY}#web-prod", {**prod, "pull_request": PR})])
        _seed_updates(state, now=now)
        state.decline("worker", "reg.local/shop/worker", "3.1.0",
                      "pull request #5 closed without merge")
        _agent(state, "dev-docker", "dev", "web", "1.4.2", now=now)
        _agent(state, "staging-docker", "staging", "web", "1.4.1", now=now)
        _agent(state, "prod-docker", "prod", "web", "1.4.0", now=now)
        _agent(state, "api-docker", "api", "api", "2.1.0", now=now, health="Degraded",
               error="container exited with code 3")


def _seed_updates(state: State, *, now: float) -> None:
    deployed = {"state": "deployed", "service": "web", "reason": "", "revision": "f" * 40}
    _update(state, "web-dev", "web", "1.4.2", "1.4.1", commit="a1" * 20,
            committed_at=now - 45 * MINUTE, state_name="deployed", stage="dev",
            agents={"dev-docker": {**deployed, "at": now - 42 * MINUTE}})
    _update(state, "web-staging", "web", "1.4.1", "1.4.0", commit="b2" * 20,
            committed_at=now - 3 * 3600, state_name="deployed", stage="staging",
            agents={"staging-docker": {**deployed, "at": now - 3 * 3600 + 30}})
    _update(state, "api", "api", "2.1.0", "2.0.0", commit="c3" * 20,
            committed_at=now - 20 * MINUTE, state_name="degraded", degraded_by="api-docker",
            reason="container exited with code 3",
            agents={"api-docker": {"state": "degraded", "service": "api",
                                   "reason": "container exited with code 3",
                                   "revision": "f" * 40, "at": now - 18 * MINUTE}})
    _update(state, "worker", "worker", "3.0.0", "2.9.0", commit="d4" * 20,
            committed_at=now - 2 * 86400, state_name="deployed",
            agents={})
