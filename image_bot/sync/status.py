"""Sync stage, result: what one pass found and did, per application and service (pure data).

The agent writes the last report to a status file (atomically) so ``image-bot sync status``
and a restarted agent see it; reading never needs Docker or Git.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from image_bot import checkout

SyncState = Literal["Synced", "OutOfSync"]
Health = Literal["Healthy", "Progressing", "Degraded", "Missing", "Unknown"]
SYNC_STATES: tuple[SyncState, ...] = ("Synced", "OutOfSync")
HEALTH_STATES: tuple[Health, ...] = ("Healthy", "Progressing", "Degraded", "Missing", "Unknown")


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One service (Docker) or object (Kubernetes) after a pass.

    ``failed_hash`` remembers a desired config that failed and was rolled back: the agent
    does not retry it until Git changes it again (no crash loop every interval).
    """

    application: str
    service: str
    sync: SyncState
    health: Health
    revision: str | None = None
    image: str | None = None
    config_hash: str | None = None
    action: str = "none"
    drift: str | None = None
    error: str | None = None
    failed_hash: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.application, self.service)

    @property
    def ok(self) -> bool:
        return self.sync == "Synced" and self.health == "Healthy" and not self.error


@dataclass(frozen=True, slots=True)
class SyncReport:
    agent: str
    target: str
    repository: str
    branch: str
    path: str
    revision: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    services: tuple[ServiceStatus, ...] = ()
    errors: tuple[str, ...] = ()  # whole-pass or whole-file problems (fetch, invalid file)
    removed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors and all(s.ok for s in self.services)

    @property
    def previous(self) -> dict[tuple[str, str], ServiceStatus]:
        return {s.key: s for s in self.services}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["summary"] = summary(self)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyncReport:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["services"] = tuple(ServiceStatus(**s) for s in data.get("services", ()))
        fields["errors"] = tuple(data.get("errors", ()))
        fields["removed"] = tuple(data.get("removed", ()))
        return cls(**fields)

    def with_errors(self, *errors: str) -> SyncReport:
        return replace(self, errors=self.errors + errors)


@dataclass(frozen=True, slots=True)
class TargetResult:
    """What a target returns from one pass; the agent wraps it into a ``SyncReport``."""

    services: tuple[ServiceStatus, ...] = ()
    errors: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def summary(report: SyncReport) -> dict[str, Any]:
    """The worst state over all services: what a dashboard shows first."""
    sync: SyncState = "Synced"
    if report.errors or any(s.sync == "OutOfSync" for s in report.services):
        sync = "OutOfSync"
    order = ["Healthy", "Unknown", "Progressing", "Missing", "Degraded"]
    health = max((s.health for s in report.services), key=order.index, default="Healthy")
    return {"sync": sync, "health": health, "services": len(report.services)}


def folder(state_dir: Path) -> Path:
    """Where agents sharing ``state_dir`` write their status files (one per agent)."""
    return state_dir / "sync" / "status"


def write(path: Path, report: SyncReport) -> None:
    """Replace the status file atomically (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkout.replace_atomically(path, json.dumps(report.to_dict(), indent=2,
                                                 sort_keys=True).encode("utf-8"))


def read(path: Path) -> SyncReport | None:
    """The last report, or ``None`` when there is none or it cannot be read (a cache)."""
    try:
        return SyncReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def read_all(directory: Path) -> list[SyncReport]:
    if not directory.is_dir():
        return []
    reports = (read(p) for p in sorted(directory.glob("*.json")))
    return [r for r in reports if r is not None]
