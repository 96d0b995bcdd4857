"""The contract between update and publish: what changed where, and what was skipped."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass


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
class Edited:
    """One file's text before and after an edit (its diff is worked out when asked for: a
    run that commits shows it only in ``--json``)."""

    file: str
    old: str
    new: str

    def diff(self) -> str:
        """The unified diff of the edit (``a/FILE`` → ``b/FILE``)."""
        return "".join(difflib.unified_diff(
            self.old.splitlines(keepends=True), self.new.splitlines(keepends=True),
            fromfile=f"a/{self.file}", tofile=f"b/{self.file}"))


@dataclass(frozen=True, slots=True)
class UpdateResult:
    changes: tuple[Change, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    edited: tuple[Edited, ...] = ()  # each file's texts, in the order edited

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(change.file for change in self.changes))

    @property
    def diffs(self) -> dict[str, str]:
        """File → unified diff of its edit (worked out now; a later edit of a file wins)."""
        return {e.file: e.diff() for e in self.edited}

    def __bool__(self) -> bool:
        return bool(self.changes)

    def merged(self, other: UpdateResult) -> UpdateResult:
        return UpdateResult.joined((self, other))

    @staticmethod
    def joined(results: Sequence[UpdateResult]) -> UpdateResult:
        """All of ``results`` in one, built once: merging them one by one copies what is
        gathered so far each time."""
        return UpdateResult(tuple(c for r in results for c in r.changes),
                            tuple(s for r in results for s in r.skipped),
                            tuple(e for r in results for e in r.edited))
