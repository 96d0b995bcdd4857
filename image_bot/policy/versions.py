"""Tag parsing: which tags are versions, and how they compare (pure).

A version tag is an optional ``v``/``V`` prefix, one to three numeric components, an
optional pre-release after ``-`` and optional build metadata after ``+`` (ignored for
ordering). Missing components count as zero; ``precision`` remembers how many were written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import semver

_TAG = re.compile(
    r"^[vV]?(?P<major>0|[1-9]\d*)(?:\.(?P<minor>0|[1-9]\d*))?(?:\.(?P<patch>0|[1-9]\d*))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+(?P<build>[0-9A-Za-z.-]+))?$"
)


@dataclass(frozen=True, slots=True)
class TagVersion:
    """A tag read as a version. Orders by version, then by precision (more specific first)."""

    tag: str
    version: semver.Version
    precision: int

    @property
    def is_prerelease(self) -> bool:
        return self.version.prerelease is not None

    def sort_key(self) -> tuple[semver.Version, int]:
        return (self.version, self.precision)


def parse(tag: str) -> TagVersion | None:
    """The version ``tag`` names, or ``None`` when it is not a version tag."""
    match = _TAG.match(tag)
    if not match:
        return None
    parts = [match["major"], match["minor"], match["patch"]]
    precision = sum(part is not None for part in parts)
    major, minor, patch = (int(part or 0) for part in parts)
    version = semver.Version(major, minor, patch, prerelease=match["pre"], build=match["build"])
    return TagVersion(tag=tag, version=version, precision=precision)
