"""What the engine remembers between runs: the last decision per policy and an event log.

Written after every real (not dry) run into :mod:`image_bot.state`; read by
``image-bot status`` and the status page. Deleting the state loses only this history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image_bot import state
from image_bot.config import models
from image_bot.engine import reporting
from image_bot.engine.report import CycleReport, PolicyOutcome
from image_bot.state import State
from image_bot.sync import status as sync_status

EVENT_LIMIT = 50


def open_state(config: models.BotConfig) -> State:
    """``state.db`` of ``config``'s state dir with the configured retention."""
    keep = config.retention
    return State.in_dir(config.state_dir, retention=state.Retention(
        max_event_age=keep.max_event_age_seconds, max_events=keep.max_events,
        max_blob_bytes=keep.max_blob_bytes))


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """One row of ``image-bot status``."""

    repository: str
    policy: str
    image: str
    current: str | None  # the tag written in Git
    latest: str | None  # the newest tag the policy accepts
    status: str  # updated, current, failed (the last outcome)
    message: str
    pull_request: str | None
    last_error: str | None
    last_error_at: float | None
    last_run: float
    declined: tuple[Declined, ...] = ()  # versions humans refused: never proposed again
    file: str = ""  # the policy document
    branch: str = ""
    files: tuple[str, ...] = ()  # the files holding its references
    upstream: str | None = None  # select.promote.from
    healthy_for: float | None = None  # select.promote.healthy-for (seconds)
    last_success_at: float | None = None  # the last run that did not fail

    def to_dict(self) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in self.__slots__}
        data["declined"] = [d.to_dict() for d in self.declined]
        data["files"] = list(self.files)
        return data


@dataclass(frozen=True, slots=True)
class Declined:
    """A version a human refused (a PR closed unmerged, a rollback), and how to undo that."""

    tag: str
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "reason": self.reason, "at": self.at}


def record(state: State, report: CycleReport, *, trigger: str,
           seconds: float) -> dict[str, int]:
    """Store every policy's decision and one event per scan, commit and failure; returns
    :func:`failed_runs` as it was before (the decisions are read once)."""
    previous = state.decisions()
    now = time.time()
    for repo in report.repositories:
        decisions = []
        prs = {policy: pr for pr in repo.pull_requests for policy in pr.policies}
        for outcome in repo.outcomes:
            if outcome.policy == "?":  # a broken document: no policy to attach it to
                state.log_event("error", {"repository": repo.repository,
                                          "message": outcome.message})
                continue
            key = _key(repo.repository, outcome.policy)
            old = previous.get(key, ({}, 0.0))[0]
            decision = {**_decision(repo.repository, outcome, old, now), "branch": repo.branch}
            if outcome.policy in prs:  # what this run did to the policy's PR
                pr = prs[outcome.policy]
                decision["pull_request"] = (pr.url or f"#{pr.number}") if pr.is_open else None
            decisions.append((key, decision))
            if outcome.status == "failed":
                state.log_event("error", {"repository": repo.repository,
                                          "policy": outcome.policy, "message": outcome.message})
        state.record_decisions(decisions)
        for sha in repo.commits:
            changed = [o.policy for o in repo.outcomes if o.status == "updated"]
            state.log_event("commit", {"repository": repo.repository, "branch": repo.branch,
                                       "commit": sha, "policies": changed})
        for t in repo.transitions:  # the deploy loop: deployed, degraded, rolled-back
            state.log_event(t.state, {
                "repository": repo.repository, "policy": t.policy, "image": t.image,
                "tag": t.tag, "commit": t.commit, "agent": t.agent, "service": t.service,
                "message": t.reason, "rollback": t.rollback_commit or t.rollback_url})
        if repo.error:
            state.log_event("error", {"repository": repo.repository, "message": repo.error})
        state.log_event("scan", {
            "repository": repo.repository, "trigger": trigger, "seconds": round(seconds, 3),
            "policies": len(repo.outcomes),
            "updated": sum(1 for o in repo.outcomes if o.status == "updated"),
            "failed": sum(1 for o in repo.outcomes if o.status == "failed") + bool(repo.error),
        })
    return _streaks(previous)


def failed_runs(state: State) -> dict[str, int]:
    """``repository#policy`` → how many runs in a row it failed (0: the last one worked)."""
    return _streaks(state.decisions())


def _streaks(decisions: dict[str, tuple[dict[str, Any], float]]) -> dict[str, int]:
    return {key: data.get("failed_runs", 0) for key, (data, _) in decisions.items()}


def _key(repository: str, policy: str) -> str:
    return f"{repository}#{policy}"


def _decision(repository: str, outcome: PolicyOutcome, old: dict[str, Any],
              now: float) -> dict[str, Any]:
    failed = outcome.status == "failed"
    stale = failed or outcome.status == "suspended"  # knows nothing new about the tags
    current = outcome.latest if outcome.status == "updated" else outcome.current
    return {
        "repository": repository, "policy": outcome.policy, "file": outcome.file,
        "image": outcome.image or old.get("image", ""),
        # a failed or suspended scan knows nothing new about the tags: keep what we knew
        "current": old.get("current") if stale else current,
        "latest": old.get("latest") if stale else outcome.latest,
        "status": outcome.status, "message": outcome.message,
        "pull_request": old.get("pull_request"),
        "last_error": outcome.message if failed else old.get("last_error"),
        "last_error_at": now if failed else old.get("last_error_at"),
        # in a row; a suspended policy neither fails nor recovers
        "failed_runs": old.get("failed_runs", 0) + 1 if failed
        else old.get("failed_runs", 0) if stale else 0,
        # a suspended policy counts as working: a paused policy is not a failing one
        "last_success_at": old.get("last_success_at") if failed else now,
        **_stage(outcome, old),
    }


def _stage(outcome: PolicyOutcome, old: dict[str, Any]) -> dict[str, Any]:
    """Where the policy sits in its pipeline (the status page); a run that did not get as
    far as reading its files (failed, suspended) keeps what the last one found."""
    scanned = outcome.status not in ("failed", "suspended")
    files = list(outcome.files) if scanned or outcome.files else old.get("files", [])
    if outcome.upstream or scanned:
        return {"files": files, "upstream": outcome.upstream,
                "healthy_for": outcome.healthy_for}
    return {"files": files, "upstream": old.get("upstream"),
            "healthy_for": old.get("healthy_for")}


def statuses(state: State) -> list[PolicyStatus]:
    """Every policy the state knows, sorted by repository and name."""
    declined: dict[tuple[str, str], list[Declined]] = {}
    for policy, image, tag, reason, at in state.declines():
        declined.setdefault((policy, image), []).append(Declined(tag, reason, at))
    rows = []
    for data, at in state.decisions().values():
        if "repository" not in data:  # written by something else than this module
            continue
        rows.append(PolicyStatus(
            repository=data["repository"], policy=data["policy"], image=data.get("image", ""),
            current=data.get("current"), latest=data.get("latest"),
            status=data.get("status", "?"), message=data.get("message", ""),
            pull_request=data.get("pull_request"), last_error=data.get("last_error"),
            last_error_at=data.get("last_error_at"), last_run=at,
            declined=tuple(declined.get((data["policy"], data.get("image", "")), ())),
            file=data.get("file", ""), branch=data.get("branch", ""),
            files=tuple(data.get("files") or ()), upstream=data.get("upstream"),
            healthy_for=data.get("healthy_for"), last_success_at=data.get("last_success_at")))
    return sorted(rows, key=lambda row: (row.repository, row.policy))


def recent_events(state: State, limit: int = EVENT_LIMIT) -> list[dict[str, Any]]:
    return [{"at": at, "kind": kind, **data} for at, kind, data in state.events(limit)]


def agents(state: State, state_dir: Path, *, now: float,
           stale_after: int) -> list[reporting.AgentStatus]:
    """Every agent's last pass: those reporting over HTTP (stale when silent for
    ``stale_after`` of their intervals), and those sharing the state dir (a posted report
    wins for the same name)."""
    posted = reporting.agents(state.agent_reports(), now=now, stale_after=stale_after)
    names = {a.report.agent for a in posted}
    local = [reporting.AgentStatus(r, 0.0, r.finished_at, stale=False, via="state-dir")
             for r in sync_status.read_all(sync_status.folder(state_dir))
             if r.agent not in names]
    return local + posted

