"""Tag parsing: which tags are versions, and how they compare (pure; no I/O).

A version tag is an optional ``v``/``V`` prefix, one to four numeric components, then an
optional suffix after ``-`` and optional build metadata after ``+`` (ignored for ordering).
The suffix is split on ``-`` into segments; a segment made only of pre-release words
(alpha, beta, rc, pre, preview, dev, snapshot, canary, nightly, m, a, b, each with an
optional dot and number) or of numbers is a *pre-release*; the first other segment starts the
*variant* (``alpine3.20``, ``slim``, ``windowsservercore-ltsc2022``), which runs to the end
except for later pre-release-word segments. A variant's *family* is the variant without its
digits and dots (``alpine3.20`` → ``alpine``). ``docs/policies.md`` is the reference.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

import semver

_TAG = re.compile(
    r"^[vV]?(?P<numbers>\d+(?:\.\d+){0,3})"
    r"(?:-(?P<suffix>[0-9A-Za-z_.-]+))?(?:\+(?P<build>[0-9A-Za-z.-]+))?$"
)
_SEGMENT = re.compile(r"^[0-9A-Za-z_]+(?:\.[0-9A-Za-z_]+)*$")
PRERELEASE_WORDS = ("alpha", "beta", "rc", "pre", "preview", "dev", "snapshot", "canary",
                    "nightly", "m", "a", "b")
_PRE_IDENTIFIER = rf"(?:(?:{'|'.join(PRERELEASE_WORDS)})\d*|\d+)"
# a segment made only of pre-release identifiers, dot-separated
_PRE_SEGMENT = re.compile(rf"^{_PRE_IDENTIFIER}(?:\.{_PRE_IDENTIFIER})*$", re.IGNORECASE)
_CHUNK = re.compile(r"\d+|[A-Za-z_]+")
_NOT_FAMILY = re.compile(r"[\d.]")
_DIGITS = re.compile(r"\d+")
_RUNS = re.compile(r"\d+|\D+")

# an identifier of a pre-release: numbers sort below words (semver rule 11)
PreKey = tuple[tuple[int, int, str], ...]


# distinct tag strings whose parse is kept, across policies and cycles (≤ 0.6 KB each with
# the cache's own entry: 20 MB at most)
PARSE_CACHE_SIZE = 1 << 15

# semver precedence as a tuple compared natively: major, minor, patch, 1 for a release and
# 0 for a pre-release, then the pre-release identifiers (see ``prerelease_key``)
SemverKey = tuple[int, int, int, int, PreKey]


RankKey = tuple[tuple[int, int, int, int], int, PreKey, tuple[int, ...]]


class TagVersion(NamedTuple):
    """A tag read as a version: numbers, pre-release, variant and how precise it was.

    Built by :func:`parse` only: the fields after ``build`` derive from the others, once per
    tag string (parses are shared), so ranking reads attributes and compares tuples. A named
    tuple because a frozen dataclass of ten fields costs three times as much to build.
    """

    tag: str
    numbers: tuple[int, ...]  # as written: 1 to 4 components
    prerelease: tuple[str | int, ...]  # ``rc10`` and ``rc.10`` both give ("rc", 10)
    variant: str
    build: str
    precision: int  # how many numbers were written
    release: tuple[int, int, int, int]  # the numbers padded with zeros (1.2 → 1.2.0.0)
    family: str  # the variant without digits and dots (see :func:`family`)
    rank_key: RankKey  # see ``key``
    semver_key: SemverKey  # the precedence of ``version``, for ranges

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    @property
    def version(self) -> semver.Version:
        """The semver version used by ranges: three components and the pre-release.

        A fourth component does not take part in range matching (``1.2.3.4`` is ``1.2.3``).
        ``semver_key`` is its precedence, for comparing without building it.
        """
        major, minor, patch = self.release[:3]
        pre = ".".join(str(part) for part in self.prerelease) or None
        return semver.Version(major, minor, patch, prerelease=pre)

    def key(self) -> RankKey:
        """What decides "newer": numbers, release over pre-release, pre-release, variant number.

        Two tags with equal keys name the same version (``1.2.3`` and ``v1.2.3``); the
        caller breaks such ties (precision, then the tag text).
        """
        return self.rank_key


_PADDING = ((), (0, 0, 0), (0, 0), (0,), ())  # by precision: what makes four components


def _version(tag: str, numbers: tuple[int, ...], prerelease: tuple[str | int, ...],
             variant: str, build: str) -> TagVersion:
    # the cold path of every new tag: no generator, no slicing of padded copies
    precision = len(numbers)
    release: tuple[int, int, int, int] = numbers + _PADDING[precision]  # type: ignore[assignment]
    pre, is_release = (prerelease_key(prerelease), 0) if prerelease else ((), 1)
    kin, spins = (family(variant), variant_numbers(variant)) if variant else ("", ())
    return _NEW(TagVersion, (tag, numbers, prerelease, variant, build, precision, release, kin,
                             (release, is_release, pre, spins), (*release[:3], is_release, pre)))


_NEW = tuple.__new__  # TagVersion(...) goes through a Python __new__: twice the cost


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse(tag: str) -> TagVersion | None:
    """The version ``tag`` names, or ``None`` when it is not a version tag.

    Memoised by tag string (bounded, least recently used out): the same tags come back for
    every policy of an image and every cycle. ``parse.__wrapped__`` is the uncached parse.
    """
    match = _TAG.match(tag)
    if not match:
        return None
    written, suffix, build = match.groups()
    numbers = tuple(map(int, written.split(".")))
    if not suffix:
        return _version(tag, numbers, (), "", build or "")
    prerelease: list[str | int] = []
    variant: list[str] = []
    for segment in suffix.split("-"):
        if not _SEGMENT.match(segment):
            return None
        if _PRE_SEGMENT.match(segment) and not (variant and segment.isdigit()):
            prerelease.extend(split_identifiers(segment))
        else:
            variant.append(segment)
    return _version(tag, numbers, tuple(prerelease), "-".join(variant), build or "")


def split_identifiers(segment: str) -> list[str | int]:
    """``rc.10`` → ``["rc", 10]``; ``rc10`` → ``["rc", 10]``; ``beta2.1`` → ``["beta", 2, 1]``."""
    parts: list[str | int] = []
    for identifier in segment.split("."):
        for chunk in _CHUNK.findall(identifier):
            parts.append(int(chunk) if chunk.isdigit() else chunk.lower())
    return parts


def prerelease_key(prerelease: tuple[str | int, ...]) -> PreKey:
    """Semver precedence of pre-release identifiers: numbers numerically and below words."""
    if not prerelease:
        return ()
    return tuple((1, 0, part) if isinstance(part, str) else (0, part, "") for part in prerelease)


def family(variant: str) -> str:
    """The variant without digits and dots: ``alpine3.20`` → ``alpine``, ``ls12`` → ``ls``."""
    return _NOT_FAMILY.sub("", variant) if variant else ""


def variant_numbers(variant: str) -> tuple[int, ...]:
    """The numbers in a variant, for "higher suffix wins": ``alpine3.20`` → ``(3, 20)``."""
    return tuple(map(int, _DIGITS.findall(variant))) if variant else ()


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE // 4)  # ranked tags only, ~0.5 KB each
def natural_key(text: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Order text with its digit runs read as numbers (``build9`` < ``build10``).

    Digit runs sort above letters (``1.2.3`` above ``v1.2.3``); texts that read the same
    (``1.02`` and ``1.2``) are finally ordered by their characters, so the order is total.
    """
    chunks = tuple([(1, int(chunk), "") if chunk.isdigit() else (0, 0, chunk)
                    for chunk in _RUNS.findall(text)])
    return (chunks, text)


UPDATE_TYPES = ("major", "minor", "patch", "pre-release", "digest", "other")
"""What kind of move an update is (publish rules and messages read it): ``digest`` keeps the
tag (a rebuilt image), ``pre-release`` moves to a pre-release, ``other`` is not two versions."""


def update_type(old: str | None, new: str) -> str:
    """``major``, ``minor``, ``patch``, ``pre-release``, ``digest`` or ``other`` for
    ``old`` → ``new`` (the first number that differs decides; a fourth counts as patch)."""
    if old == new:
        return "digest"
    before, after = parse(old) if old else None, parse(new)
    if before is None or after is None:
        return "other"
    if after.is_prerelease:
        return "pre-release"
    for kind, was, now in zip(("major", "minor", "patch", "patch"), before.release,
                              after.release, strict=True):
        if was != now:
            return kind
    return "patch"  # the same numbers, from a pre-release to its release
