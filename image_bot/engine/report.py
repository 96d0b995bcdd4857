"""What a cycle did, per repository and per policy: the value the CLI prints (pure data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["updated", "planned", "current", "failed", "proposed", "blocked"]


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    policy: str
    file: str
    status: Status
    message: str
    image: str | None = None
    changes: tuple[dict[str, Any], ...] = ()
    current: str | None = None  # the tag written in Git before this run (for status)
    latest: str | None = None  # the tag the policy chose, or ``current`` when it is the best


@dataclass(frozen=True, slots=True)
class RepositoryReport:
    repository: str
    branch: str
    outcomes: tuple[PolicyOutcome, ...] = ()
    commits: tuple[str, ...] = ()
    skipped: tuple[dict[str, str], ...] = ()
    diff: str = ""
    error: str | None = None
    pull_requests: tuple[dict[str, Any], ...] = ()  # branch, action, number, url, message

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.status != "failed" for o in self.outcomes)


@dataclass(frozen=True, slots=True)
class CycleReport:
    repositories: tuple[RepositoryReport, ...] = field(default_factory=tuple)
    dry_run: bool = False
    registry_requests: int = 0

    @property
    def ok(self) -> bool:
        return all(repo.ok for repo in self.repositories)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data
