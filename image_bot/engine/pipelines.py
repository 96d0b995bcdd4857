"""Engine, the single pane of glass: every image as a pipeline of stages, from state rows.

Pure: built from what the state DB and the agents already hold (the last decision per
policy with its declines, the deploy loop's tracked updates, the agents' last reports) and
``now``; never Git, a registry or the clock. One document serves the status page,
``/api/status`` and ``image-bot status``::

    image → the registry's newest eligible tag
          → per stage (a policy; ordered by its select.promote chain, upstream first):
            tag in Git, repository, file, open PR, state, promotion from upstream
            → per agent covering the stage: revision and tag running, sync/health, since

A stage's *state* is the first that holds, in :data:`STATES` order of precedence:
failed, unmatched, suspended, degraded, waiting, pending, promoting, declined, current.
Peers' documents (sharded daemons) merge with :func:`merge` into the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from image_bot.engine import promotion, reporting
from image_bot.engine.history import PolicyStatus
from image_bot.sync import status as sync_status

STATES = ("failed", "unmatched", "suspended", "degraded", "waiting", "pending", "promoting",
          "declined", "current")
"""Every stage state, most urgent first."""
SUMMARY = {"up_to_date": ("current", "declined"), "pending": ("pending", "promoting", "waiting"),
           "degraded": ("degraded",), "failing": ("failed", "unmatched"),
           "suspended": ("suspended",)}
"""The counters at the top of the page: which stage states each one counts."""
_PROPOSING = ("proposed", "planned", "blocked")  # a newer tag chosen, not on the branch yet
_BAD_HEALTH = ("Degraded", "Missing")
_BAD_UPDATES = ("degraded", "degraded-kept")


@dataclass(frozen=True, slots=True)
class Links:
    """A repository's web pages (from its forge config): commit and source links."""

    web: str  # https://github.com/org/config
    kind: str  # github | gitlab

    def commit(self, sha: str) -> str:
        return f"{self.web}{'/-' if self.kind == 'gitlab' else ''}/commit/{sha}"

    def file(self, path: str, branch: str) -> str:
        return f"{self.web}{'/-' if self.kind == 'gitlab' else ''}/blob/{branch}/{path}"


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as it concerns one stage."""

    agent: str
    target: str
    revision: str | None
    tags: tuple[str, ...]  # the stage's image tags its services run
    sync: str
    health: str
    since: float | None  # when it reached this tag's verdict (deployed, degraded)
    seen_at: float  # its last pass
    stale: bool
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "target": self.target, "revision": self.revision,
                "tag": ", ".join(self.tags) or None, "sync": self.sync,
                "health": self.health, "since": self.since, "seen_at": self.seen_at,
                "stale": self.stale, "error": self.error}


@dataclass(frozen=True, slots=True)
class Stage:
    """One policy of a pipeline: what Git says, what is on its way, what the agents run."""

    row: PolicyStatus
    state: str
    reason: str  # why this state, for people
    promotion: str | None  # "1.4.2 healthy in staging for 42 m; eligible for prod in 18 m"
    update: Mapping[str, Any] | None  # the newest tracked update of this policy
    agents: tuple[AgentView, ...]
    links: Links | None

    def to_dict(self) -> dict[str, Any]:
        r = self.row
        pr = r.pull_request
        return {
            "policy": r.policy, "repository": r.repository, "branch": r.branch,
            "file": r.file, "files": list(r.files), "image": r.image, "tag": r.current,
            "latest": r.latest, "state": self.state, "reason": self.reason,
            "status": r.status, "message": r.message, "pull_request": pr,
            "pull_request_url": pr if pr and pr.startswith(("http://", "https://")) else None,
            "source_url": self.links.file(r.file, r.branch or "HEAD")
            if self.links and r.file else None,
            "upstream": r.upstream, "healthy_for": r.healthy_for,
            "promotion": self.promotion, "declined": [d.to_dict() for d in r.declined],
            "last_run": r.last_run, "last_success_at": r.last_success_at,
            "last_error": r.last_error,
            "last_error_at": r.last_error_at, "update": self._update(),
            "agents": [a.to_dict() for a in self.agents],
        }

    def _update(self) -> dict[str, Any] | None:
        u = self.update
        if u is None:
            return None
        pushed, committed = u.get("pushed_at"), u.get("committed_at")
        deployed = [a.get("at") for a in (u.get("agents") or {}).values()
                    if a.get("state") == "deployed" and a.get("at")]
        return {"tag": u.get("tag"), "old_tag": u.get("old_tag"), "commit": u.get("commit"),
                "commit_url": self.links.commit(u["commit"])
                if self.links and u.get("commit") else None,
                "state": u.get("state"), "committed_at": committed,
                "push_to_commit": round(committed - pushed, 3)
                if pushed and committed else None,
                "commit_to_deployed": round(max(deployed) - committed, 3)
                if deployed and committed else None}


def stages(rows: Sequence[PolicyStatus], *, updates: Iterable[Mapping[str, Any]],
           agents: Sequence[reporting.AgentStatus], now: float,
           links: Mapping[str, Links] | None = None) -> list[Stage]:
    """Every policy the state knows as a stage, with its state, agents and promotion."""
    tracked = list(updates)
    by_name = {r.policy: r for r in rows}
    found = []
    for row in rows:
        newest = _newest_update(tracked, row)
        covering = tuple(_agent(a, row, newest) for a in agents if _covers(a, row, tracked))
        note, soaking = _promotion(row, by_name.get(row.upstream or ""), tracked, now)
        state, reason = _state(row, newest, covering, soaking)
        found.append(Stage(row, state, reason, note, newest, covering,
                           (links or {}).get(row.repository)))
    return found


def document(found: Iterable[Stage]) -> dict[str, Any]:
    """The ``summary`` and ``pipelines`` of the status document."""
    return assemble([s.to_dict() for s in found])


def assemble(stage_dicts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Stages (as in the document) grouped by image, each chain upstream first, counted."""
    by_image: dict[str, list[Mapping[str, Any]]] = {}
    for stage in stage_dicts:
        by_image.setdefault(stage["image"], []).append(stage)
    pipelines: list[dict[str, Any]] = []
    for image, members in sorted(by_image.items()):
        chain = _ordered(members)
        roots = [s for s in chain if not s.get("upstream")]
        pipelines.append({"image": image, "newest": roots[0]["latest"] if roots else None,
                          "stages": chain})
    states = [s["state"] for p in pipelines for s in p["stages"]]
    return {"summary": summary(states), "pipelines": pipelines}


def summary(states: Sequence[str]) -> dict[str, Any]:
    """The counters at the top: up to date, pending, degraded, failing (and suspended)."""
    counts = {name: sum(1 for s in states if s in members) for name, members in SUMMARY.items()}
    return {**counts, "total": len(states),
            "states": {state: states.count(state) for state in STATES if state in states}}


def merge(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several daemons' ``pipelines`` as one (a stage two of them know: the newer run)."""
    newest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for doc in documents:
        for pipeline in doc.get("pipelines", []):
            for stage in pipeline.get("stages", []):
                key = (stage["repository"], stage["policy"])
                if key not in newest or stage["last_run"] > newest[key]["last_run"]:
                    newest[key] = stage
    return assemble(newest.values())


# --- one stage ----------------------------------------------------------------------------


def _state(row: PolicyStatus, update: Mapping[str, Any] | None,
           covering: Sequence[AgentView],
           soaking: tuple[str, float, float] | None) -> tuple[str, str]:
    """The first state that holds, most urgent first (:data:`STATES`), and why."""
    if row.status in ("failed", "unmatched", "suspended"):
        return row.status, row.last_error if row.status == "failed" and row.last_error \
            else row.message
    bad = _degraded(update, covering)
    if bad:
        return "degraded", bad
    if row.status == "waiting":
        return "waiting", row.message
    pending = _pending(row, update, followed=bool(covering))
    if pending:
        return "pending", pending
    if soaking and soaking[0] != row.current:
        return "promoting", f"{soaking[0]} soaking upstream in {row.upstream}"
    declined = _declined(row, update)
    if declined:
        return "declined", declined
    return "current", f"{row.current} is the newest eligible tag" if row.current else ""


def _degraded(update: Mapping[str, Any] | None, covering: Sequence[AgentView]) -> str:
    if update is not None and update.get("state") in _BAD_UPDATES:
        why = update.get("reason") or "degraded"
        return f"{update.get('tag')} degraded on {update.get('degraded_by') or 'an agent'}: {why}"
    for agent in covering:
        if agent.stale:
            return f"agent {agent.agent} is silent (stale)"
        if agent.tags and agent.health in _BAD_HEALTH:  # its services of this image
            return f"{agent.agent}: {agent.health}" + (f": {agent.error}" if agent.error else "")
    return ""


def _pending(row: PolicyStatus, update: Mapping[str, Any] | None, *, followed: bool) -> str:
    """A newer tag on its way: proposed, chosen, or committed and not yet deployed by the
    agents (``followed``: some agent deploys the stage; without one nothing ever will)."""
    if row.pull_request:
        return f"{row.latest or 'an update'} proposed in {row.pull_request}"
    if row.status in _PROPOSING or (row.latest and row.current and row.latest != row.current):
        return f"{row.current} → {row.latest}: {row.message}".strip(": ")
    if followed and update is not None and update.get("state") == "committed":
        return f"{update.get('tag')} committed, waiting for the agents"
    return ""


def _declined(row: PolicyStatus, update: Mapping[str, Any] | None) -> str:
    """The newest thing that happened to the stage is a refusal (a closed PR, a rollback)."""
    if not row.declined:
        return ""
    last = max(row.declined, key=lambda d: d.at)
    committed = float((update or {}).get("committed_at") or 0)
    if last.at < committed or last.tag == row.current:
        return ""
    return f"{last.tag} declined: {last.reason}"


def _newest_update(updates: Sequence[Mapping[str, Any]],
                   row: PolicyStatus) -> Mapping[str, Any] | None:
    mine = [u for u in updates if u.get("policy") == row.policy and u.get("image") == row.image
            and reporting.same_repository(str(u.get("repository", "")), row.repository)]
    return max(mine, key=lambda u: float(u.get("committed_at") or 0), default=None)


def _promotion(row: PolicyStatus, upstream: PolicyStatus | None,
               updates: Sequence[Mapping[str, Any]],
               now: float) -> tuple[str | None, tuple[str, float, float] | None]:
    """The promotion sentence of a promoting stage, and the tag soaking upstream (if any)."""
    if not row.upstream:
        return None, None
    declined = [d.tag for d in upstream.declined] if upstream else []
    # as the engine reads it: the upstream policy's updates, whatever image it watches (a
    # promotion may cross registries: the same tags under another name)
    found = promotion.of(row.upstream, row.healthy_for or 0.0, updates, declined=declined,
                         now=now)
    return found.note(row.policy), found.soaking[0] if found.soaking else None


# --- agents -------------------------------------------------------------------------------


def _covers(agent: reporting.AgentStatus, row: PolicyStatus,
            updates: Sequence[Mapping[str, Any]]) -> bool:
    """An agent judged this policy's updates, or applies the files holding its references
    (with no files known yet: it runs the image from the same repository)."""
    report = agent.report
    if any(report.agent in (u.get("agents") or {}) for u in updates
           if u.get("policy") == row.policy and u.get("image") == row.image):
        return True
    if not reporting.same_repository(report.repository, row.repository) or (
            row.branch and report.branch != row.branch):
        return False
    if row.files:
        return reporting.covers(report.path, row.files)
    return bool(_running(report, row.image))


def _running(report: sync_status.SyncReport,
             image: str) -> list[tuple[sync_status.ServiceStatus, str | None]]:
    return [(s, tag) for s in report.services for name, tag in reporting.images(s.image)
            if name == image]


def _agent(agent: reporting.AgentStatus, row: PolicyStatus,
           update: Mapping[str, Any] | None) -> AgentView:
    report = agent.report
    running = _running(report, row.image)
    services = tuple(s for s, _ in running) or report.services
    worst = sync_status.summary(sync_status.SyncReport(
        report.agent, report.target, report.repository, report.branch, report.path,
        services=services, errors=report.errors))
    verdict = ((update or {}).get("agents") or {}).get(report.agent) or {}
    tags = tuple(dict.fromkeys(tag for _, tag in running if tag))
    errors = [s.error for s in services if s.error] + list(report.errors)
    return AgentView(report.agent, report.target, report.revision, tags, worst["sync"],
                     worst["health"], verdict.get("at") if verdict else None,
                     report.finished_at or agent.received_at, agent.stale,
                     errors[0] if errors else None)


# --- chains -------------------------------------------------------------------------------


def _ordered(members: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Stages upstream first: each root (no upstream here) followed by its downstream
    chain, depth first; roots and siblings by name."""
    names = {s["policy"] for s in members}
    below: dict[str, list[Mapping[str, Any]]] = {}
    roots = []
    for stage in sorted(members, key=lambda s: (s["policy"], s["repository"])):
        parent = str(stage.get("upstream") or "")
        if parent in names and parent != stage["policy"]:
            below.setdefault(parent, []).append(stage)
        else:
            roots.append(stage)
    done: list[Mapping[str, Any]] = []
    placed: set[int] = set()

    def visit(stage: Mapping[str, Any]) -> None:
        if id(stage) in placed:
            return
        placed.add(id(stage))
        done.append(stage)
        for child in below.get(stage["policy"], []):
            visit(child)

    for root in roots:
        visit(root)
    return done + [s for s in members if id(s) not in placed]  # a cycle (a config error)
