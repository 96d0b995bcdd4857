"""Which policies a run covers: all, those of some images (webhooks), or one shard (pure).

A shard is chosen by a stable hash of the repository and the policy name, so every
instance of an Indexed Job or of N replicas agrees on who owns a policy without talking
to the others, and adding a policy never moves the existing ones between shards
(for a fixed N).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class InvalidShard(ValueError):
    """``--shard`` or the Job completion variables do not name a shard."""


@dataclass(frozen=True, slots=True)
class Shard:
    index: int  # 0-based
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InvalidShard(f"shard {self.index}/{self.count}: need 0 <= I < N and N >= 1")

    def owns(self, repository: str, policy: str) -> bool:
        return shard_of(repository, policy, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(repository: str, policy: str, count: int) -> int:
    """The shard (0..count-1) of a policy: stable across processes, machines and versions."""
    digest = hashlib.sha256(f"{repository}\0{policy}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """``"I/N"`` (0-based index) → :class:`Shard`, or :class:`InvalidShard`."""
    match = _SHARD.match(text)
    if not match:
        raise InvalidShard(f"shard {text!r}: expected I/N, for example 0/3")
    return Shard(int(match[1]), int(match[2]))


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard of a Kubernetes Indexed Job (``JOB_COMPLETION_INDEX``/``JOB_COMPLETIONS``)."""
    env = os.environ if env is None else env
    index, count = env.get("JOB_COMPLETION_INDEX"), env.get("JOB_COMPLETIONS")
    if not index or not count:
        return None
    return parse_shard(f"{index}/{count}")


@dataclass(frozen=True, slots=True)
class Selection:
    """A filter on (repository, policy, image); ``None`` fields do not filter."""

    images: frozenset[str] | None = None  # ``host/repository`` names
    policies: frozenset[str] | None = None
    shard: Shard | None = None

    def covers(self, repository: str, policy: str, image: str) -> bool:
        if self.images is not None and image not in self.images:
            return False
        if self.policies is not None and policy not in self.policies:
            return False
        return self.shard is None or self.shard.owns(repository, policy)

    @property
    def reports_load_errors(self) -> bool:
        """Broken policy files are reported by full runs only (by shard 0 when sharded)."""
        whole = self.images is None and self.policies is None
        return whole and (self.shard is None or self.shard.index == 0)


EVERYTHING = Selection()
