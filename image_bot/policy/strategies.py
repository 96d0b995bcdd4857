"""Selection strategies: build a policy from its spec once, then ``select`` is pure.

The decision respects the current tag: never a downgrade, and a decision says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from image_bot.config import models
from image_bot.policy import ranges, versions


class InvalidSpec(ValueError):
    """A policy spec that validated structurally but means nothing (e.g. a bad range)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one current tag: ``tag`` to write, or ``None`` with the reason."""

    tag: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class SemverPolicy:
    range: ranges.Range
    prerelease: bool

    def select(self, tags: Iterable[str], *, current: str | None = None) -> Decision:
        candidates = [
            parsed for parsed in map(versions.parse, set(tags))
            if parsed and self.range.contains(parsed.version, prerelease=self.prerelease)
        ]
        if not candidates:
            return Decision(None, f"no tag matches semver range {self.range.text!r}")
        best = max(candidates, key=versions.TagVersion.sort_key)
        now = versions.parse(current) if current else None
        if current == best.tag:
            return Decision(None, f"{current} is the latest tag in {self.range.text!r}")
        if now and now.version >= best.version:
            return Decision(None, f"current {current} is not older than {best.tag}; no downgrade")
        return Decision(best.tag, f"{best.tag} is the highest tag in {self.range.text!r}")


Policy = SemverPolicy


def build(spec: models.PolicySpec) -> Policy:
    """Turn a validated spec into a policy, or raise :class:`InvalidSpec` naming the key."""
    semver_select = spec.select.semver
    try:
        parsed = ranges.parse(semver_select.range)
    except ranges.RangeError as exc:
        raise InvalidSpec("spec.select.semver.range", str(exc)) from None
    return SemverPolicy(range=parsed, prerelease=semver_select.prerelease)
