"""Semver ranges with npm semantics: ``>=1.2 <2``, ``^1.2``, ``~1.2``, ``1.x``, ``*``,
hyphen ranges and ``||`` alternatives, plus Masterminds' ``,`` for AND (pure).

A pre-release version satisfies a range only when the caller allows pre-releases or a
comparator of the same alternative names a pre-release of the same major.minor.patch.

``parse`` compiles each alternative once into tuple bounds (:class:`_Bounds`), so testing a
version is a few native tuple comparisons on its :func:`semver_key`; the comparators stay
for what they say.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import semver

# semver precedence as a tuple: major, minor, patch, 1 for a release (0 for a pre-release),
# then per pre-release identifier (0, number, "") or (1, 0, word): numbers numerically and
# below words, a longer set above its prefix (semver 11); build metadata does not count
Key = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]
_PARTIAL = re.compile(
    r"^[vV=]?(?P<major>\d+|[xX*])?(?:\.(?P<minor>\d+|[xX*]))?(?:\.(?P<patch>\d+|[xX*]))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$"
)
_LOWEST = semver.Version(0, 0, 0, prerelease="0")
_COMPARATOR = re.compile(r"^(?P<op>>=|<=|>|<|=|\^|~>?|)\s*(?P<version>\S*)$")


class RangeError(ValueError):
    """The range text does not parse."""


def semver_key(version: semver.Version) -> Key:
    """The precedence of ``version`` as a tuple: compares as ``semver.Version.compare``."""
    pre = tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                for part in version.prerelease.split(".")) if version.prerelease else ()
    return (version.major, version.minor, version.patch, 0 if pre else 1, pre)


@dataclass(frozen=True, slots=True)
class _Comparator:
    op: str
    version: semver.Version
    explicit_pre: bool  # the user wrote a pre-release here (not a synthetic ``-0`` bound)
    key: Key = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", semver_key(self.version))


class _Bounds(NamedTuple):
    """One alternative compiled: the tightest lower and upper bound (``None``: none) with
    their tests, and the major.minor.patch whose pre-releases the alternative names."""

    low: Key | None
    above_low: Callable[[Key, Key], bool]
    high: Key | None
    below_high: Callable[[Key, Key], bool]
    prerelease_of: frozenset[tuple[int, ...]]

    @classmethod
    def of(cls, comparators: tuple[_Comparator, ...]) -> _Bounds:
        low = high = None
        for c in comparators:
            # "=" is both bounds; on equal keys the exclusive bound is the tighter one
            if c.op in {">=", ">", "="}:
                low = _tighter(low, c, operator.gt, ">")
            if c.op in {"<=", "<", "="}:
                high = _tighter(high, c, operator.lt, "<")
        return cls(None if low is None else low.key,
                   operator.gt if low and low.op == ">" else operator.ge,
                   None if high is None else high.key,
                   operator.lt if high and high.op == "<" else operator.le,
                   frozenset(c.key[:3] for c in comparators if c.explicit_pre))


def _tighter(bound: _Comparator | None, c: _Comparator,
             above: Callable[[Key, Key], bool], strict: str) -> _Comparator:
    if bound is None or above(c.key, bound.key):
        return c
    return c if c.key == bound.key and c.op == strict else bound


@dataclass(frozen=True, slots=True)
class Range:
    text: str
    alternatives: tuple[tuple[_Comparator, ...], ...]
    # contains_key(key, prerelease): the alternatives compiled into one function
    contains_key: Callable[[Key, bool], bool] = field(init=False, repr=False, compare=False)
    # one alternative's bounds, for loops that test them inline (no call per version)
    only: _Bounds | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bounds = tuple(_Bounds.of(cs) for cs in self.alternatives)
        object.__setattr__(self, "contains_key", _compile(bounds))
        object.__setattr__(self, "only", bounds[0] if len(bounds) == 1 else None)

    def contains(self, version: semver.Version, *, prerelease: bool = False) -> bool:
        return self.contains_key(semver_key(version), prerelease)


def _compile(alternatives: tuple[_Bounds, ...]) -> Callable[[Key, bool], bool]:
    """A membership test for a version's :func:`semver_key`: the hot path of selection, so
    one call per tag, and none per comparator when the range has one alternative."""
    if len(alternatives) == 1:
        (low, above_low, high, below_high, prerelease_of), = alternatives

        def within(key: Key, prerelease: bool) -> bool:
            return ((low is None or above_low(key, low)) and (high is None or
                                                              below_high(key, high))
                    and (key[3] == 1 or prerelease or key[:3] in prerelease_of))

        return within
    tests = tuple(_compile((bounds,)) for bounds in alternatives)
    return lambda key, prerelease: any(test(key, prerelease) for test in tests)


@dataclass(frozen=True, slots=True)
class _Partial:
    numbers: tuple[int, ...]  # the components written as numbers, left to right
    pre: str | None

    def floor(self) -> semver.Version:
        major, minor, patch = (*self.numbers, 0, 0, 0)[:3]
        return semver.Version(major, minor, patch, prerelease=self.pre)

    def low(self) -> semver.Version:
        """The lowest version covered: a partial ``1.2`` starts at ``1.2.0-0``, so allowed
        pre-releases of ``1.2.0`` are inside it (npm's includePrerelease)."""
        return self.floor() if len(self.numbers) == 3 else self.floor().replace(prerelease="0")

    def next_up(self) -> semver.Version:
        """The first version above everything this partial covers (``1.2`` → ``1.3.0-0``)."""
        if len(self.numbers) == 1:
            return semver.Version(self.numbers[0] + 1, 0, 0, prerelease="0")
        major, minor = self.numbers[:2]
        return semver.Version(major, minor + 1, 0, prerelease="0")


def parse(text: str) -> Range:
    """Parse an npm-style range or raise :class:`RangeError` naming the bad part and the
    character it starts at. Commas within an alternative mean AND, as Masterminds (Flux,
    Argo CD Image Updater, Keel) reads them: ``>=1.0, <2.0`` is ``>=1.0 <2.0``.

    Memoised up to 256 characters (a range is immutable; a fleet's policies repeat a few
    ranges): the memo holds at most 1,024 short texts."""
    return _parse_short(text) if len(text) <= 256 else _parse(text)


@functools.lru_cache(maxsize=1024)
def _parse_short(text: str) -> Range:
    return _parse(text)


def _parse(text: str) -> Range:
    alternatives: list[tuple[_Comparator, ...]] = []
    offset = 0
    for part in text.split("||"):
        alternatives.append(_parse_set(part.replace(",", " ").strip(), _Where(text, offset)))
        offset += len(part) + 2
    return Range(text=text, alternatives=tuple(alternatives))


@dataclass(slots=True)
class _Where:
    """The whole range text and a cursor into it, to say where a bad part starts."""

    whole: str
    cursor: int

    def error(self, problem: str, part: str) -> RangeError:
        found = self.whole.find(part, self.cursor) if part else -1
        at = f" (at character {found + 1})" if found >= 0 else ""
        return RangeError(f"invalid semver range {self.whole!r}: {problem}{at}")

    def advance(self, part: str) -> None:
        found = self.whole.find(part, self.cursor)
        if found >= 0:
            self.cursor = found + len(part)


def _parse_set(text: str, where: _Where) -> tuple[_Comparator, ...]:
    hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
    if hyphen:
        low = _partial(hyphen[1], where)
        where.advance(hyphen[1])
        return _hyphen(low, _partial(hyphen[2], where))
    tokens = re.sub(r"(>=|<=|>|<|=|\^|~>?)\s+", r"\1", text).split()
    if not tokens:
        return (_Comparator(">=", _LOWEST, False),)
    comparators: list[_Comparator] = []
    for token in tokens:
        match = _COMPARATOR.match(token)
        if not match:
            raise where.error(f"cannot read {token!r}", token)
        comparators.extend(_desugar(match["op"], _partial(match["version"], where)))
        where.advance(match["version"])
    return tuple(comparators)


def _partial(text: str, where: _Where) -> _Partial:
    match = _PARTIAL.match(text)
    if not match or text in {"v", "V"}:
        raise where.error(f"{text!r} is not a version", text)
    numbers: list[int] = []
    for name in ("major", "minor", "patch"):
        part = match[name]
        if part is None or not part.isdigit():
            break
        numbers.append(int(part))
    if match["pre"] and len(numbers) < 3:
        raise where.error(f"a pre-release needs x.y.z in {text!r}", text)
    return _Partial(tuple(numbers), match["pre"])


def _cmp(op: str, version: semver.Version, explicit: bool = False) -> _Comparator:
    return _Comparator(op, version, explicit and version.prerelease is not None)


def _desugar(op: str, p: _Partial) -> list[_Comparator]:
    n = len(p.numbers)
    if n == 0:
        return [_cmp(">=", _LOWEST)] if op not in {"<", ">"} else [_cmp("<", _LOWEST)]
    if op == "^":
        return [_cmp(">=", p.low(), n == 3), _cmp("<", _caret_ceiling(p))]
    if op in {"~", "~>"}:
        ceiling = _Partial(p.numbers[:2], None).next_up() if n > 1 else p.next_up()
        return [_cmp(">=", p.low(), n == 3), _cmp("<", ceiling)]
    if n == 3:
        return [_cmp(op or "=", p.floor(), True)]
    # a partial version stands for the whole span it covers
    if op in {"", "="}:
        return [_cmp(">=", p.low()), _cmp("<", p.next_up())]
    if op == ">":
        return [_cmp(">=", p.next_up().replace(prerelease=None))]
    if op == "<=":
        return [_cmp("<", p.next_up())]
    if op == "<":
        return [_cmp("<", p.floor().replace(prerelease="0"))]
    return [_cmp(">=", p.low())]


def _caret_ceiling(p: _Partial) -> semver.Version:
    major, minor, patch = (*p.numbers, 0, 0)[:3]
    if major > 0 or len(p.numbers) == 1:
        return semver.Version(major + 1, 0, 0, prerelease="0")
    if minor > 0 or len(p.numbers) == 2:
        return semver.Version(0, minor + 1, 0, prerelease="0")
    return semver.Version(0, 0, patch + 1, prerelease="0")


def _hyphen(low: _Partial, high: _Partial) -> tuple[_Comparator, ...]:
    lower = _cmp(">=", low.low(), len(low.numbers) == 3)
    if not high.numbers:
        return (lower,)
    if len(high.numbers) == 3:
        return (lower, _cmp("<=", high.floor(), True))
    return (lower, _cmp("<", high.next_up()))
