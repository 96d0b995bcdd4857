"""Engine, agent reports: an agent posts each pass to the daemon; the daemon checks and keeps it.

Both ends of ``POST /api/agents/<name>/report``: :func:`post` (the agent, after each pass;
a daemon that is down never fails the pass) and :func:`parse` (the daemon, after the
signature and size checks: a strict reading of the body, a :class:`Malformed` otherwise).
The body is ``{"interval": seconds, "report": SyncReport.to_dict()}``, signed with
HMAC-SHA256 of the shared secret in ``X-Signature-256`` (never sent itself).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from image_bot import logs, refs
from image_bot.sync import status

log = logs.logger("sync")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SIGNATURE_HEADER = "X-Signature-256"
MAX_SERVICES = 5000
_TEXT_LIMIT = 4096


class Malformed(ValueError):
    """The body is not an agent report (HTTP 400); the message names the field."""


@dataclass(frozen=True, slots=True)
class Posted:
    report: status.SyncReport
    interval: float


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body(report: status.SyncReport, *, interval: float) -> bytes:
    return json.dumps({"interval": interval, "report": report.to_dict()},
                      sort_keys=True).encode()


def post(url: str, secret: str, report: status.SyncReport, *, interval: float,
         timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> bool:
    """Send one pass to the daemon; False (and a warning without the secret) when it failed."""
    data = body(report, interval=interval)
    try:
        with httpx.Client(timeout=timeout, transport=transport) as http:
            answer = http.post(url, content=data, headers={
                "Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, data)})
    except httpx.HTTPError as exc:
        log.warning("could not report to %s: %s", _clean(url), type(exc).__name__)
        return False
    if answer.status_code >= 300:
        log.warning("report refused by %s: HTTP %d", _clean(url), answer.status_code)
        return False
    return True


def _clean(url: str) -> str:
    parts = httpx.URL(url)
    return str(parts.copy_with(userinfo=b"", query=None))


def parse(name: str, raw: bytes) -> Posted:
    """The report in ``raw``, posted for agent ``name``, or :class:`Malformed`."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Malformed("body is not JSON") from None
    data = _object(data, "body")
    interval = data.get("interval")
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not (
            0 < interval <= 7 * 86400):
        raise Malformed("interval: expected seconds between passes (0 < interval ≤ 7 days)")
    report = _object(data.get("report"), "report")
    agent = _text(report.get("agent"), "report.agent")
    if agent != name:
        raise Malformed(f"report.agent: {agent!r} does not match the URL's agent {name!r}")
    services = report.get("services", [])
    if not isinstance(services, list) or len(services) > MAX_SERVICES:
        raise Malformed(f"report.services: expected a list of at most {MAX_SERVICES}")
    parsed = status.SyncReport(
        agent=agent, target=_text(report.get("target"), "report.target"),
        repository=_text(report.get("repository"), "report.repository"),
        branch=_text(report.get("branch"), "report.branch"),
        path=_text(report.get("path"), "report.path"),
        revision=_optional(report.get("revision"), "report.revision"),
        started_at=_number(report.get("started_at", 0.0), "report.started_at"),
        finished_at=_number(report.get("finished_at", 0.0), "report.finished_at"),
        services=tuple(_service(s, f"report.services[{i}]") for i, s in enumerate(services)),
        errors=_texts(report.get("errors", []), "report.errors"),
        removed=_texts(report.get("removed", []), "report.removed"))
    return Posted(parsed, float(interval))


def _service(value: Any, where: str) -> status.ServiceStatus:
    data = _object(value, where)
    sync, health = data.get("sync"), data.get("health")
    if sync not in status.SYNC_STATES:
        raise Malformed(f"{where}.sync: expected one of {', '.join(status.SYNC_STATES)}")
    if health not in status.HEALTH_STATES:
        raise Malformed(f"{where}.health: expected one of {', '.join(status.HEALTH_STATES)}")
    return status.ServiceStatus(
        application=_text(data.get("application"), f"{where}.application"),
        service=_text(data.get("service"), f"{where}.service"), sync=sync, health=health,
        revision=_optional(data.get("revision"), f"{where}.revision"),
        image=_optional(data.get("image"), f"{where}.image"),
        config_hash=_optional(data.get("config_hash"), f"{where}.config_hash"),
        action=_text(data.get("action", "none"), f"{where}.action"),
        drift=_optional(data.get("drift"), f"{where}.drift"),
        error=_optional(data.get("error"), f"{where}.error"),
        failed_hash=_optional(data.get("failed_hash"), f"{where}.failed_hash"))


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{where}: expected an object")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _TEXT_LIMIT:
        raise Malformed(f"{where}: expected a non-empty string (at most {_TEXT_LIMIT})")
    return value


def _optional(value: Any, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"{where}: expected a number")
    return float(value)


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Malformed(f"{where}: expected a list of strings")
    return tuple(_text(v, f"{where}[{i}]") for i, v in enumerate(value))


# --- the daemon's view --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """One agent as the daemon last heard from it."""

    report: status.SyncReport
    interval: float
    received_at: float
    stale: bool
    via: str = "http"  # or "state-dir": an agent sharing the daemon's state dir

    def to_dict(self) -> dict[str, Any]:
        if self.via != "http":  # a status file: what the agent wrote, nothing more
            return self.report.to_dict()
        return {**self.report.to_dict(), "interval": self.interval,
                "received_at": self.received_at, "stale": self.stale, "via": self.via}


def agents(rows: list[tuple[str, dict[str, Any], float, float]], *, now: float,
           stale_after: int) -> list[AgentStatus]:
    """The stored reports (``State.agent_reports``), each marked stale when the agent has
    been silent for more than ``stale_after`` of its own intervals."""
    found = []
    for _, data, interval, at in rows:
        try:
            report = status.SyncReport.from_dict(data)
        except (TypeError, ValueError):
            continue  # written by another version: a cache, skip it
        found.append(AgentStatus(report, interval, at, now - at > stale_after * interval))
    return found


# --- which bot updates a report speaks of ---------------------------------------------------


def same_repository(a: str, b: str) -> bool:
    """Two spellings of one repository URL (case, ``.git``, a trailing slash)."""

    def clean(url: str) -> str:
        return url.strip().rstrip("/").removesuffix(".git").lower()
    return clean(a) == clean(b)


def covers(path: str, files: Sequence[str]) -> bool:
    """Whether an agent applying ``path`` of the repository deploys any of ``files``."""
    base = path.strip().strip("/")
    if base in ("", "."):
        return True
    return any(f == base or f.startswith(base + "/") for f in files)


def images(text: str | None) -> list[tuple[str, str | None]]:
    """(name, tag) of each image a service runs: one (Docker), or several joined with ", "
    (a Kubernetes workload's containers)."""
    found = []
    for part in (text or "").split(","):
        try:
            ref = refs.parse(part.strip())
        except refs.InvalidReference:
            continue
        found.append((ref.name, ref.tag))
    return found
