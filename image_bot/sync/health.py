"""Sync stage, health: judge a container's state, and wait until it settles (no Docker here).

``assess`` is a pure function of one observation; ``wait`` polls an ``observe`` callable with
an injected clock, so both are tested without an engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from image_bot.sync.status import Health


@dataclass(frozen=True, slots=True)
class Observation:
    """The parts of ``docker inspect``'s ``State`` that decide health."""

    status: str  # created, running, restarting, exited, dead, paused, removing
    health: str | None  # starting, healthy, unhealthy; None without a healthcheck
    restart_count: int
    exit_code: int
    running_for: float  # seconds since StartedAt (0 when not running)
    error: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    health: Health
    reason: str


def assess(seen: Observation, *, min_running: float, baseline_restarts: int = 0,
           completes: bool = False) -> Verdict:
    """Healthy, Progressing or Degraded, with the reason a human needs.

    ``completes``: a job others wait for (``service_completed_successfully``): it is
    Healthy once it exited with code 0, Progressing while it runs.
    """
    if completes and seen.status == "exited" and seen.exit_code == 0:
        return Verdict("Healthy", "completed successfully")
    if completes and seen.status == "running" and seen.restart_count <= baseline_restarts:
        return Verdict("Progressing", "running until it completes")
    if seen.status in ("exited", "dead"):
        detail = f": {seen.error}" if seen.error else ""
        return Verdict("Degraded", f"container exited with code {seen.exit_code}{detail}")
    if seen.status == "restarting" or seen.restart_count > baseline_restarts:
        return Verdict("Degraded", f"container keeps restarting (exit code {seen.exit_code}, "
                       f"{seen.restart_count} restart(s))")
    if seen.status != "running":
        return Verdict("Progressing", f"container is {seen.status}")
    if seen.health == "unhealthy":
        return Verdict("Degraded", "healthcheck reports unhealthy")
    if seen.health is not None:
        ok = seen.health == "healthy"
        return Verdict("Healthy" if ok else "Progressing", f"healthcheck: {seen.health}")
    if seen.running_for >= min_running:
        return Verdict("Healthy", f"running for {seen.running_for:.0f}s")
    return Verdict("Progressing", f"running for {seen.running_for:.1f}s of {min_running:g}s")


def wait(observe: Callable[[], Observation], *, min_running: float, timeout: float,
         baseline_restarts: int = 0, completes: bool = False, poll: float = 0.25,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> Verdict:
    """Poll until the container is Healthy or Degraded; Degraded after ``timeout`` seconds."""
    deadline = clock() + timeout
    while True:
        verdict = assess(observe(), min_running=min_running,
                         baseline_restarts=baseline_restarts, completes=completes)
        if verdict.health != "Progressing":
            return verdict
        if clock() >= deadline:
            return Verdict("Degraded", f"not healthy after {timeout:g}s ({verdict.reason})")
        sleep(poll)
