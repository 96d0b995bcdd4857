"""Engine, stages: which tags an upstream stage ran healthy long enough to promote.

Pure over the deploy loop's tracked updates (``engine/tracking.py`` rows in the state DB):
never touches Git, the registry or the clock (``now`` is passed in). A tag *ran healthy*
upstream from the moment every agent that judged its update reported it deployed (Synced +
Healthy on that tag) until the upstream policy's next update replaced it in Git; it is
*eligible* once that span reaches ``healthy-for``. A tag that was ever degraded or rolled
back upstream, or that the upstream policy declined, is never eligible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_HEALTHY = ("deployed",)
_POISONED = ("degraded", "rolled-back", "degraded-kept")


@dataclass(frozen=True, slots=True)
class Run:
    """One tag's time in the upstream stage."""

    tag: str
    healthy_since: float | None  # None: never deployed on every agent
    until: float | None  # when a newer update replaced it in Git (None: still there)
    poisoned: str | None = None  # why it can never be promoted
    agents: tuple[str, ...] = ()

    def healthy_for(self, now: float) -> float:
        if self.healthy_since is None or self.poisoned:
            return 0.0
        return max(0.0, (self.until if self.until is not None else now) - self.healthy_since)


@dataclass(frozen=True, slots=True)
class Promotion:
    """What a promoting policy may choose from, and how to say it."""

    upstream: str
    healthy_for: float  # seconds required
    eligible: frozenset[str]
    soaking: tuple[tuple[str, float, float], ...]  # (tag, healthy so far, seconds left)
    blocked: tuple[tuple[str, str], ...]  # (tag, why never)
    soaked: tuple[tuple[str, float], ...] = ()  # (eligible tag, seconds it ran healthy)
    known: bool = True  # the upstream is a policy of this repository, or tracked

    def note(self, stage: str | None = None) -> str:
        """One line for the outcome, the status page and ``status`` (``stage``: the
        promoting policy, named in "eligible for STAGE in 18 m")."""
        parts = []
        target = f"for {stage} " if stage else ""
        for tag, so_far, left in self.soaking[:1]:
            parts.append(f"{tag} healthy in {self.upstream} for {_human(so_far)}; eligible "
                         f"{target}in {_human(left)}")
        if self.eligible:
            parts.append(f"eligible from {self.upstream}: {', '.join(sorted(self.eligible))}")
        for tag, why in self.blocked[:1]:
            parts.append(f"{tag} is never promoted: {why}")
        if parts:
            return "; ".join(parts)
        if not self.known:
            return (f"no policy {self.upstream!r} is known: not in this repository, and "
                    f"nothing it wrote is tracked (check select.promote.from)")
        return f"nothing has run healthy in {self.upstream} yet"

    def explain(self, tag: str) -> str | None:
        """Why ``tag`` may ship (for a PR body): None when it is not an eligible tag."""
        healthy = dict(self.soaked).get(tag)
        if healthy is None:
            return None
        return (f"{tag} ran healthy in {self.upstream} for {_human(healthy)} (at least "
                f"{_human(self.healthy_for)} required)")

    def next_change(self) -> float | None:
        """Seconds until the next soaking tag becomes eligible (to schedule a scan)."""
        return min((left for _, _, left in self.soaking), default=None)


def runs(updates: Iterable[Mapping[str, Any]], policy: str, *,
         declined: Iterable[str] = ()) -> dict[str, Run]:
    """Every tag ``policy`` wrote, by tag: its best healthy run, or why it is poisoned."""
    mine = sorted((u for u in updates if u.get("policy") == policy),
                  key=lambda u: float(u.get("committed_at") or 0))
    found: dict[str, Run] = {}
    for index, update in enumerate(mine):
        tag = str(update["tag"])
        later = [float(u.get("committed_at") or 0) for u in mine[index + 1:]
                 if u.get("tag") != tag]
        run = Run(tag, _healthy_since(update), min(later, default=None),
                  agents=tuple(sorted(update.get("agents") or {})))
        if update.get("state") in _POISONED:
            run = Run(tag, None, None, poisoned=_why(update), agents=run.agents)
        found[tag] = _better(found.get(tag), run)
    for tag in declined:  # a rollback's own reason says more than its decline
        if tag not in found or not found[tag].poisoned:
            found[tag] = Run(tag, None, None, poisoned=f"declined in {policy}")
    return found


def promotion(upstream: str, healthy_for: float, upstream_runs: Mapping[str, Run], *,
              now: float, known: bool = True) -> Promotion:
    soaked, soaking, blocked = [], [], []
    for run in upstream_runs.values():
        if run.poisoned:
            blocked.append((run.tag, run.poisoned))
        elif run.healthy_since is None:
            continue
        elif run.healthy_for(now) >= healthy_for:
            soaked.append((run.tag, run.healthy_for(now)))
        elif run.until is None:  # still running upstream: it will get there
            so_far = run.healthy_for(now)
            soaking.append((run.tag, so_far, healthy_for - so_far))
    return Promotion(upstream, healthy_for, frozenset(tag for tag, _ in soaked),
                     tuple(sorted(soaking, key=lambda s: s[2])), tuple(blocked),
                     tuple(soaked), known)


def of(upstream: str, healthy_for: float, updates: Iterable[Mapping[str, Any]], *,
       declined: Iterable[str], now: float, known: bool = True) -> Promotion:
    """What a stage promoting from ``upstream`` may choose, from the tracked updates and
    the upstream's declined tags (the engine and the status page read it alike)."""
    return promotion(upstream, healthy_for, runs(updates, upstream, declined=declined),
                     now=now, known=known)


def narrowed(tags: Sequence[Any], allowed: frozenset[str]) -> list[Any]:
    """The registry's tags (strings or candidates with a ``tag``) the promotion allows."""
    return [t for t in tags if (t if isinstance(t, str) else t.tag) in allowed]


def _healthy_since(update: Mapping[str, Any]) -> float | None:
    agents = update.get("agents") or {}
    if update.get("state") not in _HEALTHY or not agents:
        return None
    if any(a.get("state") != "deployed" for a in agents.values()):
        return None
    return max(float(a.get("at") or 0) for a in agents.values())


def _why(update: Mapping[str, Any]) -> str:
    agent = update.get("degraded_by") or "an agent"
    reason = update.get("reason") or (update.get("rollback") or {}).get("reason") or ""
    state = "rolled back" if update.get("state") == "rolled-back" else "degraded"
    return f"{state} in {update.get('policy')} ({agent}{': ' + reason if reason else ''})"


def _better(seen: Run | None, run: Run) -> Run:
    """Of two runs of the same tag: a poisoned one (once bad, always bad), else the longer."""
    if seen is None or run.poisoned:
        return run
    if seen.poisoned or run.healthy_since is None:
        return seen
    if seen.healthy_since is None:
        return run
    return max(seen, run, key=lambda r: r.healthy_for(math.inf))


def _human(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} m"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} m" if minutes else f"{hours} h"
    return f"{seconds // 86400} d"
