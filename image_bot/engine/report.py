"""What a cycle did, per repository and per policy: typed values, rendered only at the edge.

Errors stay exceptions here (their ``kind`` says whose fault they are); changes and
skipped files are the update stage's own values; ``to_dict()`` is the only place that
turns any of it into plain data (``--json``, the state DB, ``/api/status``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from image_bot.errors import ImageBotError, TemporaryError
from image_bot.update.result import Change, Edited, Skipped

Status = Literal["updated", "planned", "current", "unmatched", "failed", "proposed",
                 "blocked", "waiting", "suspended"]
"""``waiting``: an update was decided but the policy's ``publish.schedule`` window is closed
(planned, not published; the note names the window).
``unmatched``: the policy ran but found no reference to its image under its ``paths``
(a typo in ``paths``, an image written differently): a warning, a failure with ``--strict``.
``suspended``: the policy has ``spec.suspend: true``: no registry request, no edit, no
rollback (an operator's ``promote``/``rollback`` still acts on it)."""


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    policy: str
    file: str
    status: Status
    note: str = ""  # what the policy decided (its reasons), for people
    image: str | None = None
    changes: tuple[Change, ...] = ()
    current: str | None = None  # the tag written in Git before this run (for status)
    latest: str | None = None  # the tag the policy chose, or ``current`` when it is the best
    error: ImageBotError | None = None  # why it failed (status "failed")
    recheck_after: float | None = None  # seconds: a promotion soak ends then (daemon)
    files: tuple[str, ...] = ()  # the files holding the policy's references (status page)
    upstream: str | None = None  # select.promote.from: the stage it promotes from
    healthy_for: float | None = None  # select.promote.healthy-for, in seconds

    @property
    def message(self) -> str:
        """The note and the error, as one line for a table, a log or the status page."""
        return "; ".join(part for part in (self.note, str(self.error or "")) if part)

    @property
    def kind(self) -> str | None:
        """Whose fault a failure is (``config``, ``registry``, ``git``…), from the error."""
        if self.status != "failed":
            return None
        return self.error.kind if self.error is not None else "internal"

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "file": self.file, "status": self.status,
                "message": self.message, "image": self.image,
                "changes": [dataclasses.asdict(c) for c in self.changes],
                "current": self.current, "latest": self.latest, "error_kind": self.kind}


@dataclass(frozen=True, slots=True)
class PullRequestResult:
    """What happened to one bot branch's pull/merge request in this run."""

    branch: str
    action: str  # opened, updated, unchanged, closed, blocked, none
    message: str
    number: int | None = None
    url: str | None = None
    pushed: str | None = None  # the commit pushed to the bot branch, if any
    policies: tuple[str, ...] = ()  # the policies this PR proposes updates for

    @property
    def is_open(self) -> bool:
        return self.number is not None and self.action in ("opened", "updated", "unchanged",
                                                             "blocked")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Transition:
    """An update the bot committed changed state on one agent: deployed, degraded, or rolled
    back in Git (``engine.tracking``); timings in seconds, None when unknown."""

    state: Literal["deployed", "degraded", "rolled-back"]
    repository: str
    policy: str
    image: str
    old_tag: str | None
    tag: str
    commit: str
    agent: str
    service: str | None = None
    reason: str = ""
    push_to_commit: float | None = None
    commit_to_deployed: float | None = None
    rollback_commit: str | None = None  # the commit writing the previous tag back
    rollback_url: str | None = None  # or the pull request proposing it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class RepositoryReport:
    repository: str
    branch: str
    outcomes: tuple[PolicyOutcome, ...] = ()
    commits: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    edited: tuple[Edited, ...] = ()  # the files edited, for the diff (worked out if shown)
    errors: tuple[ImageBotError, ...] = ()  # the repository itself failed (fetch, push)
    pull_requests: tuple[PullRequestResult, ...] = ()
    transitions: tuple[Transition, ...] = ()  # the deploy loop (engine.tracking)
    dashboard: str | None = None  # what happened to the dashboard issue (opt-in)
    pushed_to: tuple[tuple[str, str], ...] = ()  # (commit, branch) not pushed to ``branch``

    @property
    def error(self) -> str | None:
        return "; ".join(map(str, self.errors)) or None

    @property
    def diff(self) -> str:
        """The unified diff of every edit (worked out now: only a dry run and ``--json``
        show it)."""
        return "".join(e.diff() for e in self.edited)

    @property
    def ok(self) -> bool:
        return not self.errors and all(o.status != "failed" for o in self.outcomes)

    @property
    def retry_after(self) -> float | None:
        """The soonest retry a temporary failure of this scan asked for (seconds), if any."""
        errors = [*self.errors, *(o.error for o in self.outcomes if o.error is not None)]
        delays = [e.retry_after for e in errors
                  if isinstance(e, TemporaryError) and e.retry_after is not None]
        return min(delays, default=None)

    def combined(self, other: RepositoryReport) -> RepositoryReport:
        return dataclasses.replace(
            self, outcomes=self.outcomes + other.outcomes, commits=self.commits + other.commits,
            # a link or device refused by two batches' scans is still one entry
            skipped=tuple(dict.fromkeys(self.skipped + other.skipped)),
            edited=self.edited + other.edited,
            pull_requests=self.pull_requests + other.pull_requests,
            errors=self.errors + other.errors, transitions=self.transitions + other.transitions,
            dashboard=other.dashboard or self.dashboard, pushed_to=self.pushed_to + other.pushed_to)

    def to_dict(self) -> dict[str, Any]:
        return {"repository": self.repository, "branch": self.branch,
                "outcomes": [o.to_dict() for o in self.outcomes],
                "commits": list(self.commits),
                "pushed_to": {commit: branch for commit, branch in self.pushed_to},
                "skipped": [dataclasses.asdict(s) for s in self.skipped],
                "diff": self.diff, "error": self.error,
                "error_kinds": sorted({e.kind for e in self.errors}),
                "pull_requests": [p.to_dict() for p in self.pull_requests],
                "transitions": [t.to_dict() for t in self.transitions],
                "dashboard": self.dashboard}


@dataclass(frozen=True, slots=True, repr=False)
class CycleReport:
    repositories: tuple[RepositoryReport, ...] = field(default_factory=tuple)
    dry_run: bool = False
    registry_requests: int = 0

    def __repr__(self) -> str:
        # short: asyncio.run builds the repr of its task's result when it restores the
        # SIGINT handler (CPython's signal.getsignal), ~2 ms for the full repr of 200 outcomes
        names = ", ".join(r.repository for r in self.repositories)
        return (f"CycleReport(repositories=[{names}], dry_run={self.dry_run}, "
                f"registry_requests={self.registry_requests}, ok={self.ok})")

    @property
    def ok(self) -> bool:
        return all(repo.ok for repo in self.repositories)

    @property
    def unmatched(self) -> list[PolicyOutcome]:
        """Policies that found nothing to update: what ``--strict`` fails on."""
        return [o for r in self.repositories for o in r.outcomes if o.status == "unmatched"]

    def to_dict(self) -> dict[str, Any]:
        return {"repositories": [r.to_dict() for r in self.repositories],
                "dry_run": self.dry_run, "registry_requests": self.registry_requests,
                "ok": self.ok}
