"""The contract between update and publish: what changed where, and what was skipped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Change:
    """One value rewritten in one file."""

    file: str  # path relative to the checkout root, with forward slashes
    line: int  # 1-based
    image: str  # host/repository
    old: str  # the scalar as written: "ghcr.io/x/app:1.0.0", or "1.0.0" for a Helm tag:
    new: str  # the scalar as it reads after the edit
    old_tag: str | None
    new_tag: str
    policy: str
    new_digest: str | None = None  # set when the digest was written too (pin-digest)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file or value that was left untouched, and why."""

    file: str
    reason: str


@dataclass(frozen=True, slots=True)
class UpdateResult:
    changes: tuple[Change, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    diffs: dict[str, str] = field(default_factory=dict)  # file → unified diff of the edit

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(change.file for change in self.changes))

    def __bool__(self) -> bool:
        return bool(self.changes)

    def merged(self, other: UpdateResult) -> UpdateResult:
        return UpdateResult.joined((self, other))

    @staticmethod
    def joined(results: Sequence[UpdateResult]) -> UpdateResult:
        """All of ``results`` in one (a later diff of a file wins), built once: merging
        them one by one copies what is gathered so far each time."""
        return UpdateResult(tuple(c for r in results for c in r.changes),
                            tuple(s for r in results for s in r.skipped),
                            {f: d for r in results for f, d in r.diffs.items()})
