"""Selection strategies: build a policy from its spec once, then ``select`` is pure.

``build(spec)`` validates what the models cannot (ranges, regexes, combinations) and raises
:class:`InvalidSpec` naming the key. ``Policy.select`` takes the tags (optionally with
creation time, digest and platforms), the current tag, an injected ``now`` and the declined
tags, and returns a :class:`Decision`: the tag to write (or ``None``), the winner, the
runner-up, the ranking and, for every excluded tag, the rule that excluded it. No network,
no files, no clock. ``docs/policies.md`` is the reference for every rule below.
"""

from __future__ import annotations

import collections
import dataclasses
import decimal
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from image_bot.config import durations, models
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


@dataclass(frozen=True, slots=True)
class Excluded:
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


@dataclass(frozen=True, slots=True)
class _Ranked:
    candidate: Candidate
    key: Key  # what decides "newer"; equal keys are the same version
    tie: Key  # precision and tag text: order only, never a reason to move
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
               declined: Iterable[str] = ()) -> Decision:
        """Rank ``tags`` and decide what replaces ``current`` (pure: same input, same answer)."""
        if self.min_age and now is None:
            raise TypeError("select() needs `now` for a policy with min-age")
        candidates = _candidates(tags)
        if self.strategy == "digest":
            return self._follow(candidates, current, current_digest, now, frozenset(declined))
        here = self._current(current, candidates)
        ranked, excluded = self._rank(candidates, here, now, frozenset(declined))
        return self._decide(ranked, excluded, here, has_tags=bool(candidates))

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

    def _rank(self, candidates: list[Candidate], here: _Current | None, now: datetime | None,
              declined: frozenset[str]) -> tuple[list[_Ranked], list[Excluded]]:
        ranked: list[_Ranked] = []
        excluded: list[Excluded] = []
        for candidate in candidates:
            verdict = self._judge(candidate, here, now, declined)
            if isinstance(verdict, _Ranked):
                ranked.append(verdict)
            else:
                excluded.append(verdict)
        current_tag = here.tag if here else None
        ranked.sort(key=lambda r: (r.key, r.candidate.tag == current_tag, r.tie), reverse=True)
        return ranked, excluded

    def _judge(self, candidate: Candidate, here: _Current | None, now: datetime | None,
               declined: frozenset[str]) -> _Ranked | Excluded:
        tag = candidate.tag
        value = self.filter.apply(tag)
        if isinstance(value, filters.Rejected):
            return Excluded(tag, value.rule, value.detail)
        if tag in declined and (here is None or tag != here.tag):
            return Excluded(tag, "declined", "declined before (for example a closed pull "
                                             "request); a newer tag will be proposed")
        ranked = self._keyed(candidate, value, here)
        if isinstance(ranked, Excluded):
            return ranked
        return self._safety(ranked, here, now)

    def _keyed(self, candidate: Candidate, value: str,
               here: _Current | None) -> _Ranked | Excluded:
        tag = candidate.tag
        if self.strategy == "semver":
            return self._semver(candidate, value, here)
        if self.strategy == "numerical":
            number = _number(value)
            if number is None:
                return Excluded(tag, "not-a-number", f"{value!r} is not a number")
            return _Ranked(candidate, (number if self.order == "asc" else -number,),
                           (versions.natural_key(tag),))
        if self.strategy == "alphabetical":
            return _Ranked(candidate, (_text_key(value, self.order),),
                           (versions.natural_key(tag),))
        if candidate.created is None:
            return Excluded(tag, "no-created", "creation time unknown")
        return _Ranked(candidate, (candidate.created.timestamp(),), (versions.natural_key(tag),))

    def _semver(self, candidate: Candidate, value: str,
                here: _Current | None) -> _Ranked | Excluded:
        tag = candidate.tag
        parsed = versions.parse(value)
        if parsed is None:
            return Excluded(tag, "not-a-version", f"{value!r} is not a version")
        assert self.range is not None
        current = here.version if here else None
        if not self._in_range(parsed, current):
            if self.range.contains(parsed.version, prerelease=True):
                return Excluded(tag, "prerelease", "a pre-release (allow with prerelease: "
                                                   "true, or name one in the range)")
            return Excluded(tag, "range", f"not in range {self.range.text!r}")
        wrong_variant = self._variant_problem(parsed, current)
        if wrong_variant:
            return Excluded(tag, "variant", wrong_variant)
        wanted = self._wanted_precision(current)
        if wanted is not None and parsed.precision != wanted:
            return Excluded(tag, "precision", f"has {parsed.precision} numeric component(s), "
                                              f"not {wanted} (precision: {self.precision})")
        return _Ranked(candidate, parsed.key(), (parsed.precision, versions.natural_key(tag)),
                       parsed)

    def _in_range(self, parsed: versions.TagVersion, current: versions.TagVersion | None) -> bool:
        assert self.range is not None
        if self.range.contains(parsed.version, prerelease=self.prerelease):
            return True
        # a pre-release current tag may move to later pre-releases of the same version
        return (current is not None and current.is_prerelease and parsed.is_prerelease
                and current.release[:3] == parsed.release[:3]
                and self.range.contains(parsed.version, prerelease=True))

    def _variant_problem(self, parsed: versions.TagVersion,
                         current: versions.TagVersion | None) -> str | None:
        if self.variant == "any":
            return None
        if self.variant is None or self.variant == "none":
            family = current.family if (current and self.variant is None) else ""
            if parsed.family == family:
                return None
            if not family:
                return f"has variant {parsed.variant!r}; the current tag has none"
            shown = f"variant {parsed.variant!r}" if parsed.variant else "no variant"
            return f"{shown}, not the current family {family!r}"
        if parsed.variant == self.variant or parsed.family == self.variant:
            return None
        shown = f"variant {parsed.variant!r}" if parsed.variant else "no variant"
        return f"{shown}, not {self.variant!r} (variant: {self.variant})"

    def _wanted_precision(self, current: versions.TagVersion | None) -> int | None:
        if self.precision == "any":
            return None
        if self.precision == "current":
            return current.precision if current else None
        return self.precision

    def _safety(self, ranked: _Ranked, here: _Current | None,
                now: datetime | None) -> _Ranked | Excluded:
        candidate = ranked.candidate
        tag = candidate.tag
        if here and here.key is not None and ranked.key < here.key and not self.allow_downgrade:
            return Excluded(tag, "downgrade", f"lower than current {here.tag} (allow with "
                                              f"allow-downgrade: true)")
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

    def _current(self, current: str | None,
                 candidates: list[Candidate]) -> _Current | None:
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
        listed = next((c for c in candidates if c.tag == current), None)
        created = listed.created if listed else None
        return _Current(current, (created.timestamp(),) if created else None)

    # --- deciding -----------------------------------------------------------------------

    def _decide(self, ranked: list[_Ranked], excluded: list[Excluded], here: _Current | None,
                *, has_tags: bool) -> Decision:
        order = tuple(r.candidate.tag for r in ranked)

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
        winner, what = best.candidate.tag, self._what(best)
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
        created = best.candidate.created
        return f"newest build (created {created.isoformat() if created else '?'})"

    def _follow(self, candidates: list[Candidate], current: str | None,
                current_digest: str | None, now: datetime | None,
                declined: frozenset[str]) -> Decision:
        assert self.follow is not None
        followed = next((c for c in candidates if c.tag == self.follow), None)
        excluded = [Excluded(c.tag, "not-followed", f"the policy follows {self.follow!r}")
                    for c in candidates if c.tag != self.follow]
        if followed is None:
            return Decision(None, f"tag {self.follow!r} not found", excluded=tuple(excluded))
        verdict = self._safety(_Ranked(followed, (), ()), None, now)
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


def _candidates(tags: Iterable[str | Candidate]) -> list[Candidate]:
    """De-duplicated by tag and sorted, so the input order never matters."""
    unique = {(c.tag if isinstance(c, Candidate) else c): (
        c if isinstance(c, Candidate) else Candidate(c)) for c in tags}
    return [unique[tag] for tag in sorted(unique)]


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


def build(spec: models.PolicySpec) -> Policy:
    """Turn a validated spec into a policy, or raise :class:`InvalidSpec` naming the key."""
    select = spec.select
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
