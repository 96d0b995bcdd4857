"""Selection strategies: build a policy from its spec once, then ``select`` is pure.

``build(spec)`` validates what the models cannot (ranges, regexes, combinations) and raises
:class:`InvalidSpec` naming the key. ``Policy.select`` takes the tags (optionally with
creation time, digest and platforms), the current tag, an injected ``now`` and the declined
tags, and returns a :class:`Decision`: the tag to write (or ``None``), the winner, the
runner-up, the ranking and, for every excluded tag, the rule that excluded it. No network,
no files, no clock. ``docs/policies.md`` is the reference for every rule below.

Selection is the hot path of a cycle: what a tag string reads as (its version, or why it
is excluded) is memoised across policies and cycles in bounded caches, which changes no
answer; ``forget`` empties them.
"""

from __future__ import annotations

import collections
import dataclasses
import decimal
import operator
import threading
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from image_bot.config import durations, loading, models
from image_bot.errors import ConfigError
from image_bot.policy import filters, ranges, versions

Need = Literal["created", "digest", "platforms"]
Key = tuple[Any, ...]

# the rules, in the order they are checked; the first that fails is reported
RULES = ("signature", "exclude", "pattern", "declined", "not-followed", "not-a-version",
         "not-a-number", "no-created", "range", "prerelease", "variant", "precision",
         "downgrade", "max-bump", "min-age", "platforms")


class InvalidSpec(ValueError):
    """A policy spec that validated structurally but means nothing (e.g. a bad range)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Candidate:
    """A tag with what the registry told about it (``None``: not fetched)."""

    tag: str
    created: datetime | None = None
    digest: str | None = None
    platforms: tuple[str, ...] | None = None


class Excluded(NamedTuple):
    """Why a tag is not a candidate (a named tuple: a decision holds one per such tag, and a
    frozen dataclass costs three times as much to build)."""

    tag: str
    rule: str  # one of RULES
    detail: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one current tag.

    ``tag`` is what to write (``None``: keep the current tag); ``digest`` is set by the
    digest strategy. ``winner`` is the best eligible tag even when it is the current one.
    """

    tag: str | None
    reason: str
    winner: str | None = None
    runner_up: str | None = None
    ranked: tuple[str, ...] = ()
    excluded: tuple[Excluded, ...] = ()
    digest: str | None = None


class _Ranked(NamedTuple):
    """An eligible tag; ranking sorts on the first three fields, best last."""

    key: Key  # what decides "newer"; equal keys are the same version
    is_current: bool  # on equal keys the current tag ranks first (no pointless move)
    tie: Key  # precision and tag text: order only, never a reason to move
    tag: str
    candidate: Candidate | None  # None: a bare tag, nothing known about it
    version: versions.TagVersion | None = None  # semver strategy only


@dataclass(frozen=True, slots=True)
class _Current:
    tag: str
    key: Key | None  # None: the current tag means nothing to this strategy
    version: versions.TagVersion | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A built policy. ``needs`` says which image metadata ``select`` uses."""

    strategy: str
    filter: filters.Filter
    range: ranges.Range | None = None
    prerelease: bool = False
    order: Literal["asc", "desc"] = "asc"
    follow: str | None = None
    variant: str | None = None
    precision: Literal["current", "any", 1, 2, 3, 4] = "current"
    allow_downgrade: bool = False
    min_age: timedelta = timedelta(0)
    max_bump: Literal["major", "minor", "patch"] | None = None
    platforms: tuple[str, ...] = ()
    needs: frozenset[Need] = field(default_factory=frozenset)

    def select(self, tags: Iterable[str | Candidate], *, current: str | None = None,
               current_digest: str | None = None, now: datetime | None = None,
               declined: Iterable[str] = (), explain: bool = True) -> Decision:
        """Rank ``tags`` and decide what replaces ``current`` (pure: same input, same answer).

        ``explain=False`` (the engine) gives the same ``tag``, ``reason``, ``winner``,
        ``runner_up`` and ``digest`` without the explanation: a semver policy then ranks
        only the best two and builds no exclusions (``ranked`` holds those two and
        ``excluded`` stays empty), unless no tag qualifies, when the reason counts them.
        """
        if self.min_age and now is None:
            raise TypeError("select() needs `now` for a policy with min-age")
        names, meta = _candidates(tags)
        if self.strategy == "digest":
            return self._follow(names, meta, current, current_digest, now, frozenset(declined))
        here = self._current(current, meta)
        refused = frozenset(declined)
        if self.strategy == "semver":
            ranked, excluded = self._rank_versions(names, meta, here, now, refused,
                                                   keep=None if explain else 2)
            if not ranked and not explain:  # the reason counts the exclusions
                ranked, excluded = self._rank_versions(names, meta, here, now, refused)
        else:
            ranked, excluded = self._rank(names, meta, here, now, refused)
        ranked.sort(key=_RANKING, reverse=True)
        return self._decide(ranked, excluded, here, has_tags=bool(names))

    def worth_fetching(self, tags: Iterable[str]) -> list[str]:
        """The tags whose metadata ``select`` could use: those the filter and strategy keep.

        The engine fetches image metadata (``needs``) for these only, not for every tag.
        """
        if self.strategy == "digest":
            return [self.follow] if self.follow in set(tags) else []
        kept = []
        for tag in sorted(set(tags)):
            value = self.filter.apply(tag)
            if isinstance(value, filters.Rejected):
                continue
            if self.strategy == "semver" and versions.parse(value) is None:
                continue
            if self.strategy == "numerical" and _number(value) is None:
                continue
            kept.append(tag)
        return kept

    # --- ranking ------------------------------------------------------------------------

    def _rank(self, names: list[str], meta: dict[str, Candidate], here: _Current | None,
              now: datetime | None,
              declined: frozenset[str]) -> tuple[list[_Ranked], list[Excluded]]:
        ranked: list[_Ranked] = []
        excluded: list[Excluded] = []
        for tag in names:
            verdict = self._judge(tag, meta.get(tag), here, now, declined)
            if isinstance(verdict, Excluded):
                excluded.append(verdict)
            else:
                ranked.append(verdict)
        return ranked, excluded

    def _judge(self, tag: str, candidate: Candidate | None, here: _Current | None,
               now: datetime | None, declined: frozenset[str]) -> _Ranked | Excluded:
        value = self.filter.apply(tag)
        if isinstance(value, filters.Rejected):
            return Excluded(tag, value.rule, value.detail)
        if tag in declined and (here is None or tag != here.tag):
            return _declined(tag)
        ranked = self._keyed(tag, candidate, value, here)
        if isinstance(ranked, Excluded):
            return ranked
        return self._safety(ranked, here, now)

    def _keyed(self, tag: str, candidate: Candidate | None, value: str,
               here: _Current | None) -> _Ranked | Excluded:
        is_current = here is not None and tag == here.tag
        if self.strategy == "numerical":
            number = _number(value)
            if number is None:
                return Excluded(tag, "not-a-number", f"{value!r} is not a number")
            return _Ranked((number if self.order == "asc" else -number,), is_current,
                           (versions.natural_key(tag),), tag, candidate)
        if self.strategy == "alphabetical":
            return _Ranked((_text_key(value, self.order),), is_current,
                           (versions.natural_key(tag),), tag, candidate)
        if candidate is None or candidate.created is None:
            return Excluded(tag, "no-created", "creation time unknown")
        return _Ranked((candidate.created.timestamp(),), is_current,
                       (versions.natural_key(tag),), tag, candidate)

    def _rank_versions(self, names: list[str], meta: dict[str, Candidate],
                       here: _Current | None, now: datetime | None,
                       declined: frozenset[str], *,
                       keep: int | None = None) -> tuple[list[_Ranked], list[Excluded]]:
        """``_rank`` for the semver strategy: the rules of ``_judge`` in the same order, with
        the common outcomes inlined in one loop (no call per tag but the memoised parse) and
        the rare ones (details, max-bump, min-age, platforms) in methods.

        ``keep``: rank only the best ``keep`` tags and record no exclusions (the engine's
        decision, which needs the winner and the runner-up): a tag that ranks below the
        ``keep``-th best so far is passed over before any rule, and the ranking is cut back
        to ``keep`` whenever it reaches ``_PRUNE_AT`` tags.

        This loop is the hot path of a cycle (measured by bench/policy_select.py and
        bench/fleet_memory.py).
        """
        # 1. what does not change from tag to tag
        assert self.range is not None
        tag_filter, contains, natural_key = self.filter, self.range.contains_key, (
            versions.natural_key)
        prerelease, out_of_range = self.prerelease, f"not in range {self.range.text!r}"
        # one alternative (most ranges): its bounds tested inline, as ``contains`` would
        single = self.range.only is not None
        low, above_low, high, below_high, prerelease_of = self.range.only or _NO_BOUNDS
        default_filter = tag_filter == _DEFAULT_FILTER
        current = here.version if here else None
        current_tag = here.tag if here else None
        same_family = self._family_wanted(current)
        if self.variant is None and current is None and current_tag:
            same_family = self._floating_family(current_tag, names)
        named_variant = self.variant if self.variant not in {None, "none", "any"} else None
        wanted = self._wanted_precision(current)
        floor = here.key if here and not self.allow_downgrade else None
        lower = _lower_than(current_tag)
        more = bool(self.max_bump or self.min_age or self.platforms)
        ranked: list[_Ranked] = []
        excluded: list[Excluded] = []
        explain = keep is None
        prune_at = -1 if keep is None else max(_PRUNE_AT, 2 * keep)
        beaten: Key | None = None  # with ``keep``: the rank key of the keep-th best so far
        # named tuples built with tuple.__new__: Excluded(...) costs twice as much
        exclude, new, known = excluded.append, tuple.__new__, _READINGS.get
        # 2. each tag: the first rule that fails excludes it. Ranking the best few, go from
        # the end of the sorted names: newer versions mostly sort last, so the cut-off rises
        # early and most tags are passed over after one comparison (any order decides alike)
        for tag in names if explain else reversed(names):
            reading = (known(tag) or _reading(tag)) if default_filter else self._read(tag)
            if reading.__class__ is Excluded:  # (isinstance costs twice as much)
                if explain:
                    if declined and tag in declined and tag != current_tag and (
                            reading.rule == "not-a-version"):
                        reading = _declined(tag)  # the declined rule comes before the parse
                    exclude(reading)
                continue
            parsed: versions.TagVersion = reading  # type: ignore[assignment]  # not Excluded
            if beaten is not None and parsed.rank_key < beaten:
                continue  # ranks below the best ``keep``, eligible or not
            if declined and tag in declined and tag != current_tag:
                if explain:
                    exclude(_declined(tag))
                continue
            key = parsed.semver_key
            if not ((low is None or above_low(key, low)) and (  # contains(key, prerelease)
                    high is None or below_high(key, high)) and (
                    key[3] or prerelease or key[:3] in prerelease_of) if single else contains(
                    key, prerelease)) and not (
                    key[3] == 0 and self._moves_within_prerelease(parsed, current)):
                if explain:
                    exclude(self._out_of_range(tag, parsed) if key[3] == 0 else new(
                        Excluded, (tag, "range", out_of_range)))
                continue
            if (parsed.family != same_family if same_family is not None else (
                    named_variant is not None and parsed.variant != named_variant
                    and parsed.family != named_variant)):
                if explain:
                    exclude(Excluded(tag, "variant", self._variant_problem(
                        parsed, current, same_family or "")))
                continue
            if wanted is not None and parsed.precision != wanted:
                if explain:
                    exclude(Excluded(tag, "precision",
                                     self._precision_problem(parsed, wanted)))
                continue
            if not more and floor is not None and parsed.rank_key < floor:
                if explain:
                    exclude(new(Excluded, (tag, "downgrade", lower)))
                continue
            entry: _Ranked = new(_Ranked, (parsed.rank_key, tag == current_tag, (
                parsed.precision, natural_key(tag)), tag, meta.get(tag), parsed))
            if more:  # the safety rules, downgrade first
                verdict = self._safety(entry, here, now)
                if isinstance(verdict, Excluded):
                    if explain:
                        exclude(verdict)
                    continue
            ranked.append(entry)
            if len(ranked) == prune_at:
                beaten = _cut(ranked, typing.cast(int, keep))
        if keep is not None and len(ranked) > keep:
            _cut(ranked, keep)
        return ranked, excluded

    def _read(self, tag: str) -> versions.TagVersion | Excluded:
        """The filter rules, then the version ``tag`` names (``_reading`` for this policy's
        filter)."""
        value = self.filter.apply(tag)
        if isinstance(value, filters.Rejected):
            return Excluded(tag, value.rule, value.detail)
        parsed = versions.parse(value)
        return parsed or Excluded(tag, "not-a-version", f"{value!r} is not a version")

    def _moves_within_prerelease(self, parsed: versions.TagVersion,
                                 current: versions.TagVersion | None) -> bool:
        """A pre-release current tag may move to later pre-releases of the same version."""
        assert self.range is not None
        return (current is not None and current.is_prerelease and parsed.is_prerelease
                and current.release[:3] == parsed.release[:3]
                and self.range.contains_key(parsed.semver_key, True))

    def _out_of_range(self, tag: str, parsed: versions.TagVersion) -> Excluded:
        assert self.range is not None
        if self.range.contains_key(parsed.semver_key, True):
            return Excluded(tag, "prerelease", "a pre-release (allow with prerelease: true, "
                                               "or name one in the range)")
        return Excluded(tag, "range", f"not in range {self.range.text!r}")

    def _family_wanted(self, current: versions.TagVersion | None) -> str | None:
        """The variant family every tag must have (``None``: no such rule)."""
        if self.variant is None:
            return current.family if current else ""
        return "" if self.variant == "none" else None

    def _floating_family(self, current_tag: str, names: list[str]) -> str:
        """The flavour a floating current tag (no version: ``alpine``, ``stable-slim``) keeps:
        its text, or its last ``-`` part, when a version tag carries it as its family
        (``alpine`` → ``X.Y.Z-alpine``). ``latest`` moves to plain versions; any other word
        is its own family, which no version has: the tag is left alone unless the policy
        names a ``variant`` (never a flavour dropped silently)."""
        text = self.filter_value(current_tag)
        if text == "latest":
            return ""
        wanted = [versions.family(text), versions.family(text.rpartition("-")[2])]
        carried = {parsed.family for tag in names
                   if (parsed := versions.parse(self.filter_value(tag))) is not None}
        return next((family for family in wanted if family and family in carried),
                    wanted[0] or text)

    def _precision_problem(self, parsed: versions.TagVersion, wanted: int) -> str:
        return (f"has {parsed.precision} numeric component(s), not {wanted} "
                f"(precision: {self.precision})")

    def _variant_problem(self, parsed: versions.TagVersion,
                         current: versions.TagVersion | None, floating: str = "") -> str:
        """Why ``parsed`` fails the variant rule (``_rank_versions`` checked that it does)."""
        shown = f"variant {parsed.variant!r}" if parsed.variant else "no variant"
        if self.variant is None or self.variant == "none":
            family = current.family if (current and self.variant is None) else ""
            if self.variant is None and current is None and floating:
                return (f"{shown}, not {floating!r}, the flavour of the floating current tag "
                        f"(set `variant:` to move it elsewhere)")
            if not family:
                return f"has variant {parsed.variant!r}; the current tag has none"
            return f"{shown}, not the current family {family!r}"
        return f"{shown}, not {self.variant!r} (variant: {self.variant})"

    def _wanted_precision(self, current: versions.TagVersion | None) -> int | None:
        if self.precision == "any":
            return None
        if self.precision == "current":
            return current.precision if current else None
        return self.precision

    def _safety(self, ranked: _Ranked, here: _Current | None,
                now: datetime | None) -> _Ranked | Excluded:
        tag = ranked.tag
        candidate = ranked.candidate or Candidate(tag)
        if here and here.key is not None and ranked.key < here.key and not self.allow_downgrade:
            return _downgrade(tag, here.tag)
        bump = self._bump_problem(ranked, here)
        if bump:
            return Excluded(tag, "max-bump", bump)
        if self.min_age:
            assert now is not None
            if candidate.created is None:
                return Excluded(tag, "min-age", "creation time unknown; min-age needs it")
            age = now - candidate.created
            if age < self.min_age:
                return Excluded(tag, "min-age", f"only {_span(age)} old (min-age "
                                                f"{_span(self.min_age)})")
        if self.platforms:
            if candidate.platforms is None:
                return Excluded(tag, "platforms", "platforms unknown")
            missing = [p for p in self.platforms if p not in candidate.platforms]
            if missing:
                return Excluded(tag, "platforms", f"lacks platform(s) {', '.join(missing)}")
        return ranked

    def _bump_problem(self, ranked: _Ranked, here: _Current | None) -> str | None:
        new, old = ranked.version, here.version if here else None
        if self.max_bump is None or here is None or new is None or old is None:
            return None
        if here.key is None or ranked.key <= here.key:
            return None
        if new.release[0] != old.release[0]:
            kind = "major"
        elif new.release[1] != old.release[1]:
            kind = "minor"
        else:
            kind = "patch"
        allowed = {"major": ("major", "minor", "patch"), "minor": ("minor", "patch"),
                   "patch": ("patch",)}[self.max_bump]
        if kind in allowed:
            return None
        return f"a {kind} bump from {here.tag} (max-bump: {self.max_bump})"

    def filter_value(self, tag: str) -> str:
        """The value of ``tag`` after pattern and extract (the tag itself when unmatched)."""
        if self.filter.pattern is None:
            return tag
        match = self.filter.pattern.search(tag)
        if match is None or not self.filter.extract:
            return tag
        return filters.expand(self.filter.extract, match)

    def _current(self, current: str | None, meta: dict[str, Candidate]) -> _Current | None:
        """How the current tag ranks; exclusions do not apply to it, pattern/extract do."""
        if current is None:
            return None
        value = self.filter_value(current)
        if self.strategy == "semver":
            parsed = versions.parse(value)
            return _Current(current, parsed.key() if parsed else None, parsed)
        if self.strategy == "numerical":
            number = _number(value)
            key = None if number is None else (number if self.order == "asc" else -number,)
            return _Current(current, key)
        if self.strategy == "alphabetical":
            return _Current(current, (_text_key(value, self.order),))
        listed = meta.get(current)
        created = listed.created if listed else None
        return _Current(current, (created.timestamp(),) if created else None)

    # --- deciding -----------------------------------------------------------------------

    def _decide(self, ranked: list[_Ranked], excluded: list[Excluded], here: _Current | None,
                *, has_tags: bool) -> Decision:
        order = tuple(r.tag for r in ranked)

        def decision(tag: str | None, reason: str) -> Decision:
            return Decision(tag, reason, winner=order[0] if order else None,
                            runner_up=order[1] if len(order) > 1 else None,
                            ranked=order, excluded=tuple(excluded))

        if not ranked:
            if not has_tags:
                return decision(None, "the image has no tags")
            if here and any(e.rule == "downgrade" for e in excluded):
                return decision(None, f"nothing newer than current {here.tag}, and no "
                                      f"downgrade (excluded: {_summary(excluded)})")
            return decision(None, f"no tag qualifies (excluded: {_summary(excluded)})")
        best = ranked[0]
        winner, what = best.tag, self._what(best)
        if here is None:
            return decision(winner, f"{winner} is the {what}")
        if winner == here.tag:
            return decision(None, f"current {winner} is already the {what}")
        if here.key is not None and best.key == here.key:
            return decision(None, f"{winner} is the {what} and no newer than current "
                                  f"{here.tag}")
        moved = f"{winner} is the {what} (current {here.tag})"
        if here.key is not None and best.key < here.key:
            moved += "; a downgrade, allowed by allow-downgrade"
        return decision(winner, moved)

    def _what(self, best: _Ranked) -> str:
        if self.strategy == "semver":
            assert self.range is not None
            return f"highest version in {self.range.text!r}"
        if self.strategy == "numerical":
            return "highest number" if self.order == "asc" else "lowest number"
        if self.strategy == "alphabetical":
            return "last tag alphabetically" if self.order == "asc" else (
                "first tag alphabetically")
        created = best.candidate.created if best.candidate else None
        return f"newest build (created {created.isoformat() if created else '?'})"

    def _follow(self, names: list[str], meta: dict[str, Candidate], current: str | None,
                current_digest: str | None, now: datetime | None,
                declined: frozenset[str]) -> Decision:
        assert self.follow is not None
        excluded = [Excluded(tag, "not-followed", f"the policy follows {self.follow!r}")
                    for tag in names if tag != self.follow]
        if len(excluded) == len(names):
            return Decision(None, f"tag {self.follow!r} not found", excluded=tuple(excluded))
        followed = meta.get(self.follow) or Candidate(self.follow)
        verdict = self._safety(_Ranked((), False, (), followed.tag, followed), None, now)
        if isinstance(verdict, Excluded):
            return Decision(None, f"{self.follow} is not eligible: {verdict.detail}",
                            excluded=(*excluded, verdict))
        if followed.digest is None:
            return Decision(None, f"digest of {self.follow} unknown", excluded=tuple(excluded))
        ranked = Decision(None, "", winner=self.follow, ranked=(self.follow,),
                          excluded=tuple(excluded), digest=followed.digest)
        if current == self.follow and current_digest == followed.digest:
            return dataclasses.replace(
                ranked, reason=f"{self.follow} still points to {followed.digest}")
        return dataclasses.replace(ranked, tag=self.follow,
                                   reason=f"{self.follow} points to {followed.digest}")


_DEFAULT_FILTER = filters.Filter()
_NO_BOUNDS = (None, operator.ge, None, operator.le, frozenset[tuple[int, ...]]())


# tag → what the default filter and the parse make of it (``_reading``)
_READINGS: dict[str, versions.TagVersion | Excluded] = {}
_READING_LOCK = threading.Lock()  # a miss may evict; threads decide too (publish rules)


def _reading(tag: str) -> versions.TagVersion | Excluded:
    """What the default filter and the parse make of ``tag``: its version, or why it is
    excluded (a signature, or not a version).

    The parse memo of the policies with the default filter (most): by tag string, shared
    by every policy and cycle, bounded (the oldest entry out), so a known tag costs one
    dict lookup (the hot loop calls ``_READINGS.get`` itself: an ``lru_cache`` hit costs
    half as much again, keeping its order). It parses uncached: a tag takes one entry.
    """
    found = _READINGS.get(tag)
    if found is not None:
        return found
    rejected = _DEFAULT_FILTER.apply(tag)
    if isinstance(rejected, filters.Rejected):
        found = Excluded(tag, rejected.rule, rejected.detail)
    else:
        found = versions.parse.__wrapped__(tag) or Excluded(
            tag, "not-a-version", f"{tag!r} is not a version")
    with _READING_LOCK:
        if len(_READINGS) >= versions.PARSE_CACHE_SIZE:
            del _READINGS[next(iter(_READINGS))]
        _READINGS[tag] = found
    return found


def forget() -> None:
    """Empty the memos (tag readings, parses, natural keys): for benchmarks and tests."""
    with _READING_LOCK:
        _READINGS.clear()
    versions.parse.cache_clear()
    versions.natural_key.cache_clear()


# ranking order, best last: the key, the current tag on equal keys, then the tie-break
_RANKING = operator.itemgetter(0, 1, 2)

# ranking only the best few: how many eligible tags gather before they are cut back
_PRUNE_AT = 16


def _cut(ranked: list[_Ranked], keep: int) -> Key:
    """Keep the best ``keep`` of ``ranked`` (best first); returns the rank key of the last
    kept, below which no tag can enter."""
    ranked.sort(key=_RANKING, reverse=True)
    del ranked[keep:]
    return ranked[-1].key


class Ordered(Sequence[str]):
    """Tags that iterate once each and in ascending order (a registry's list as
    ``RegistryClient.list_tags`` returns it): ``select`` takes them as they are, without
    sorting and de-duplicating them again."""

    __slots__ = ()


class Listed(Ordered):
    """A list of tags its maker knows to be sorted and each once (``list_tags``' answer),
    as it is."""

    __slots__ = ("_tags",)

    def __init__(self, tags: list[str]) -> None:
        self._tags = tags

    def __len__(self) -> int:
        return len(self._tags)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tags)

    @typing.overload
    def __getitem__(self, index: int) -> str: ...
    @typing.overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._tags[index]


def _candidates(tags: Iterable[str | Candidate]) -> tuple[list[str], dict[str, Candidate]]:
    """The tags de-duplicated and sorted, so the input order never matters, and what is
    known about those given as :class:`Candidate` (the last mention of a tag wins)."""
    if isinstance(tags, Ordered):
        return list(tags), {}
    items = tags if isinstance(tags, list | tuple) else list(tags)
    # bare tags, the usual case, cost a sort: a Candidate among them makes the sort raise
    # (every item is compared at least once), as does more than one Candidate. Sorting
    # before de-duplicating keeps a registry's sorted list sorted: a tenth of the cost.
    try:
        names = list(dict.fromkeys(sorted(typing.cast(list[str], items))))
    except TypeError:
        names = []
    if len(names) > 1 or (names and isinstance(names[0], str)):
        return names, {}
    last = {(c.tag if isinstance(c, Candidate) else c): c for c in items}
    return sorted(last), {tag: c for tag, c in last.items() if isinstance(c, Candidate)}


def _declined(tag: str) -> Excluded:
    return Excluded(tag, "declined", "declined before (for example a closed pull request); a "
                                     "newer tag will be proposed")


def _downgrade(tag: str, current: str | None) -> Excluded:
    return Excluded(tag, "downgrade", _lower_than(current))


def _lower_than(current: str | None) -> str:
    return f"lower than current {current} (allow with allow-downgrade: true)"


def _number(value: str) -> decimal.Decimal | None:
    text = value.strip()
    if not text or not all(ch.isdigit() or ch in ".-+" for ch in text):
        return None
    try:
        number = decimal.Decimal(text)
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() else None


def _text_key(value: str, order: str) -> tuple[int, ...]:
    """Code points, so ``desc`` can negate them (the trailing 1 puts "ab" above "abc")."""
    points = tuple(ord(ch) for ch in value)
    return points if order == "asc" else (*(-p for p in points), 1)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds}s"


def _summary(excluded: list[Excluded]) -> str:
    counts = collections.Counter(e.rule for e in excluded)
    return ", ".join(f"{counts[rule]} {rule}" for rule in RULES if counts[rule])


def build_document(loaded: loading.LoadedPolicy) -> Policy:
    """The policy of a loaded ``ImagePolicy`` document, or a :class:`ConfigError` with the
    document's breadcrumb (the one builder ``validate`` and the engine share)."""
    try:
        return build(loaded.policy.spec)
    except InvalidSpec as exc:
        raise ConfigError(f"{loaded.where(exc.key)}: {exc}") from None


def build(spec: models.PolicySpec) -> Policy:
    """Turn a validated spec into a policy, or raise :class:`InvalidSpec` naming the key."""
    select = spec.select
    if not select.chosen:  # loading fills it in from the upstream stage when it can
        raise InvalidSpec("spec.select", "promote needs a strategy to rank the promoted tags")
    strategy = select.strategy
    try:
        tag_filter = filters.build(pattern=spec.filter.pattern, extract=spec.filter.extract,
                                   exclude=spec.filter.exclude,
                                   include_signatures=spec.filter.include_signatures)
    except filters.FilterError as exc:
        raise InvalidSpec(f"spec.{exc.key}", str(exc)) from None
    _check_combinations(spec, strategy)
    min_age = timedelta(seconds=durations.parse(spec.min_age))
    needs: set[Need] = set()
    if strategy == "newest-build" or min_age:
        needs.add("created")
    if strategy == "digest":
        needs.add("digest")
    if spec.platforms:
        needs.add("platforms")
    common: dict[str, Any] = {
        "strategy": strategy, "filter": tag_filter, "variant": spec.variant,
        "precision": spec.precision, "allow_downgrade": spec.allow_downgrade,
        "min_age": min_age, "max_bump": spec.max_bump, "platforms": tuple(spec.platforms),
        "needs": frozenset(needs),
    }
    if select.semver is not None:
        try:
            parsed = ranges.parse(select.semver.range)
        except ranges.RangeError as exc:
            raise InvalidSpec("spec.select.semver.range", str(exc)) from None
        return Policy(range=parsed, prerelease=select.semver.prerelease, **common)
    ordered = select.numerical or select.alphabetical
    if ordered is not None:
        return Policy(order=ordered.order, **common)
    if select.digest is not None:
        return Policy(follow=select.digest.tag, **common)
    return Policy(**common)


def _check_combinations(spec: models.PolicySpec, strategy: str) -> None:
    """Settings that only mean something for versions are refused elsewhere, not ignored."""
    if strategy == "semver":
        return
    for key, value, default in (("variant", spec.variant, None),
                                ("precision", spec.precision, "current"),
                                ("max-bump", spec.max_bump, None)):
        if value != default:
            raise InvalidSpec(f"spec.{key}", f"{key} applies to the semver strategy only, "
                                             f"not {strategy}")
    if strategy == "digest" and (spec.filter.pattern or spec.filter.exclude):
        raise InvalidSpec("spec.filter", "the digest strategy follows one tag; a filter "
                                         "has nothing to choose from")
