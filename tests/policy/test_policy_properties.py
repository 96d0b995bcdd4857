"""Ordering invariants of policy selection, checked with generated tags (hypothesis).

Total order and determinism (any input order, duplicates), never a downgrade, the variant
family and precision kept, the winner ranks above every other eligible tag; and the fast
paths (tuple keys, compiled ranges, memoised parses) agree with what they replace.
"""

from __future__ import annotations

import dataclasses
import operator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import semver
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from image_bot.config import models
from image_bot.policy import filters, ranges, strategies, versions

NOW = datetime(2026, 6, 1, tzinfo=UTC)
VARIANTS = ["", "alpine", "alpine3.19", "alpine3.20", "slim", "ls3", "ls12", "bookworm"]
PRES = ["", "rc", "rc.", "beta", "alpha.", "pre", "1"]

numbers = st.lists(st.integers(0, 12), min_size=1, max_size=4)


@st.composite
def version_tags(draw: st.DrawFn) -> str:
    tag = draw(st.sampled_from(["", "v"])) + ".".join(map(str, draw(numbers)))
    pre = draw(st.sampled_from(PRES))
    if pre:
        tag += f"-{pre}{draw(st.integers(0, 12))}" if pre[-1] in ".rcea" else f"-{pre}"
    variant = draw(st.sampled_from(VARIANTS))
    if variant:
        tag += f"-{variant}"
    if draw(st.booleans()) and draw(st.booleans()):
        tag += f"+b{draw(st.integers(0, 9))}"
    return tag


junk = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True)
tag_lists = st.lists(st.one_of(version_tags(), version_tags(), junk), max_size=25)


def policy(**fields: Any) -> strategies.Policy:
    fields.setdefault("select", {"semver": {"range": "*", "prerelease": True}})
    return strategies.build(models.PolicySpec.model_validate({"image": "x/app", **fields}))


SEMVER = policy()
ANY_VARIANT = policy(variant="any", precision="any")
NUMERICAL = policy(select={"numerical": {}})
ALPHA_DESC = policy(select={"alphabetical": {"order": "desc"}})
POLICIES = [SEMVER, ANY_VARIANT, NUMERICAL, ALPHA_DESC, policy(**{"allow-downgrade": True})]


@settings(max_examples=300, deadline=None)
@given(tag_lists, st.one_of(st.none(), version_tags()), st.randoms(use_true_random=False),
       st.sampled_from(POLICIES))
def test_deterministic_whatever_the_input_order(tags: list[str], current: str | None,
                                                rnd: Any, p: strategies.Policy) -> None:
    shuffled = [*tags, *tags[: len(tags) // 2]]
    rnd.shuffle(shuffled)
    assert p.select(tags, current=current, now=NOW) == p.select(shuffled, current=current,
                                                                now=NOW)


@settings(max_examples=300, deadline=None)
@given(tag_lists, st.one_of(st.none(), version_tags()), st.sampled_from(POLICIES),
       st.booleans())
def test_an_ordered_list_decides_as_the_raw_one(tags: list[str], current: str | None,
                                               p: strategies.Policy, explain: bool) -> None:
    # a registry's list as the engine holds it (sorted, each once) skips the sort and
    # de-duplication: the decision must not notice
    listed = strategies.Listed(sorted(set(tags)))
    assert p.select(listed, current=current, now=NOW, explain=explain) == p.select(
        tags, current=current, now=NOW, explain=explain)


@settings(max_examples=300, deadline=None)
@given(tag_lists, st.one_of(st.none(), version_tags()), st.sampled_from(POLICIES))
def test_every_tag_is_ranked_or_excluded_once(tags: list[str], current: str | None,
                                              p: strategies.Policy) -> None:
    decision = p.select(tags, current=current, now=NOW)
    seen = [*decision.ranked, *(e.tag for e in decision.excluded)]
    assert sorted(seen) == sorted(set(tags))
    assert all(e.rule in strategies.RULES for e in decision.excluded)
    assert decision.winner == (decision.ranked[0] if decision.ranked else None)
    assert decision.tag in (None, decision.winner)


@settings(max_examples=300, deadline=None)
@given(st.lists(version_tags(), min_size=2, max_size=25))
def test_ranking_is_a_total_order_by_version(tags: list[str]) -> None:
    ranked = ANY_VARIANT.select(tags, now=NOW).ranked
    keys = [_parsed(tag).key() for tag in ranked]
    assert keys == sorted(keys, reverse=True)  # best first, never out of version order
    assert len(set(ranked)) == len(ranked)


@settings(max_examples=400, deadline=None)
@given(tag_lists, version_tags())
def test_never_a_downgrade(tags: list[str], current: str) -> None:
    for p in (SEMVER, ANY_VARIANT):
        decision = p.select(tags, current=current, now=NOW)
        if decision.tag is not None:
            assert _parsed(decision.tag).key() > _parsed(current).key()


@settings(max_examples=400, deadline=None)
@given(tag_lists, version_tags())
def test_variant_family_and_precision_kept(tags: list[str], current: str) -> None:
    decision = SEMVER.select(tags, current=current, now=NOW)
    for tag in decision.ranked:
        assert _parsed(tag).family == _parsed(current).family
        assert _parsed(tag).precision == _parsed(current).precision


@settings(max_examples=200, deadline=None)
@given(tag_lists, version_tags())
def test_update_implies_strictly_newer_in_winner_order(tags: list[str], current: str) -> None:
    decision = SEMVER.select([*tags, current], current=current, now=NOW)
    # the current tag is always eligible for itself, so a move is always upward
    assert decision.winner is not None
    assert _parsed(decision.winner).key() >= _parsed(current).key()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-50, 10**6).map(str), min_size=1, max_size=20))
def test_numerical_winner_is_the_maximum(tags: list[str]) -> None:
    decision = NUMERICAL.select(tags, now=NOW)
    assert decision.winner is not None
    assert int(decision.winner) == max(map(int, tags))


@settings(max_examples=200, deadline=None)
@given(st.lists(junk, min_size=1, max_size=20))
def test_alphabetical_desc_winner_is_the_minimum(tags: list[str]) -> None:
    kept = [t for t in tags if filters.Filter().apply(t) == t]
    decision = ALPHA_DESC.select(tags, now=NOW)
    assert decision.winner == (min(kept) if kept else None)


@settings(max_examples=300, deadline=None)
@given(version_tags())
def test_parse_reads_what_was_written(tag: str) -> None:
    parsed = _parsed(tag)
    written = tag.lstrip("vV").split("+")[0].split("-")[0]
    assert parsed.numbers == tuple(int(n) for n in written.split("."))
    assert parsed.family in {versions.family(v) for v in VARIANTS}


def _parsed(tag: str) -> versions.TagVersion:
    parsed = versions.parse(tag)
    assert parsed is not None, tag
    return parsed


# --- the fast paths agree with the slow ones -------------------------------------------
# Selection compares tuple keys instead of semver.Version objects, tests ranges compiled to
# tuple bounds, and memoises parses by tag string; each is checked against what it replaces.

identifiers = st.one_of(st.integers(0, 30).map(str), st.sampled_from(["0", "00", "007", "10"]),
                        st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True))
semvers = st.builds(
    semver.Version, st.integers(0, 3), st.integers(0, 3), st.integers(0, 3),
    st.one_of(st.none(), st.lists(identifiers, min_size=1, max_size=3).map(".".join)))
partials = st.one_of(
    st.lists(st.one_of(st.integers(0, 3).map(str), st.sampled_from(["x", "*"])),
             min_size=1, max_size=3).map(".".join),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3),
              st.sampled_from(["rc.1", "rc.2", "RC.1", "alpha", "0", "beta-2"])).map(
        lambda p: f"{p[0]}.{p[1]}.{p[2]}-{p[3]}"))
comparator_sets = st.one_of(
    st.lists(st.tuples(st.sampled_from(["", "=", ">", ">=", "<", "<=", "^", "~", "~>"]),
                       partials).map("".join), min_size=0, max_size=3).map(" ".join),
    st.tuples(partials, partials).map(" - ".join))
range_texts = st.lists(comparator_sets, min_size=1, max_size=3).map(" || ".join)
OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
             "=": operator.eq}


def _sign(number: int) -> int:
    return (number > 0) - (number < 0)


@settings(max_examples=1000, deadline=None)
@given(semvers, semvers)
def test_semver_key_orders_as_semver_compare(a: semver.Version, b: semver.Version) -> None:
    key_a, key_b = ranges.semver_key(a), ranges.semver_key(b)
    assert _sign((key_a > key_b) - (key_a < key_b)) == _sign(a.compare(b))


@settings(max_examples=500, deadline=None)
@given(st.one_of(version_tags(), st.sampled_from(["1.0.0-RC1", "2.0.0-alpha-1", "1-0",
                                                   "1.2.3-beta2.1", "1.0.0-rc.010"])))
def test_tag_keys_are_the_keys_of_their_versions(tag: str) -> None:
    parsed = _parsed(tag)
    assert parsed.semver_key == ranges.semver_key(parsed.version)
    assert parsed.key() == (parsed.release, int(not parsed.prerelease),
                            versions.prerelease_key(parsed.prerelease),
                            versions.variant_numbers(parsed.variant))


def _contains_by_comparators(r: ranges.Range, v: semver.Version, prerelease: bool) -> bool:
    """Range membership as it was before compiling: semver.Version comparisons, one a
    comparator, then the pre-release rule."""
    for comparators in r.alternatives:
        if not all(OPERATORS[c.op](v, c.version) for c in comparators):
            continue
        if v.prerelease is None or prerelease or any(
                c.explicit_pre and (c.version.major, c.version.minor, c.version.patch)
                == (v.major, v.minor, v.patch) for c in comparators):
            return True
    return False


@settings(max_examples=1000, deadline=None)
@given(range_texts, st.lists(semvers, min_size=1, max_size=8), st.booleans())
@example(">=1.2.3 >1.2.3", [semver.Version(1, 2, 3)], False)  # equal bounds: strict wins
@example("<=1.2.3 <1.2.3 || =2.0.0 >2.0.0", [semver.Version(1, 2, 3)], False)
@example(">1.2.3-rc.1 =1.2.3-rc.1", [semver.Version(1, 2, 3, "rc.2")], False)
def test_compiled_ranges_agree_with_their_comparators(text: str, vs: list[semver.Version],
                                                      prerelease: bool) -> None:
    try:
        r = ranges.parse(text)
    except ranges.RangeError:
        assume(False)
        raise
    bounds = [c.version for comparators in r.alternatives for c in comparators]
    for v in [*vs, *bounds, *(b.bump_patch() for b in bounds)]:  # the edges, and beyond
        assert r.contains(v, prerelease=prerelease) == _contains_by_comparators(r, v,
                                                                                prerelease)


@settings(max_examples=500, deadline=None)
@given(st.one_of(version_tags(), junk, st.sampled_from(["1.2.3-x.sig", "sha256-1.2.3"])))
def test_memoised_parse_is_the_parse(tag: str) -> None:
    versions.parse.cache_clear()
    first, uncached = versions.parse(tag), versions.parse.__wrapped__(tag)
    assert first == uncached and versions.parse(tag) is first
    assert versions.natural_key(tag) == versions.natural_key.__wrapped__(tag)


def test_the_reading_memo_is_bounded_and_changes_no_decision(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tags = ["1.0.0", "1.1.0", "latest", "2.0.0-rc.1", "1.2.0-alpine", "1.0.9"]
    cold = SEMVER.select(tags, current="1.0.0", now=NOW)
    monkeypatch.setattr(versions, "PARSE_CACHE_SIZE", 3)
    strategies.forget()
    for _ in range(3):  # every reading evicts another: each round reads afresh
        assert SEMVER.select(tags, current="1.0.0", now=NOW) == cold
        assert len(strategies._READINGS) == 3
    assert set(strategies._READINGS) < set(tags)
    strategies.forget()
    assert not strategies._READINGS


@settings(max_examples=300, deadline=None)
@given(tag_lists, st.one_of(st.none(), version_tags()), st.sets(st.one_of(version_tags(), junk)),
       st.sampled_from([SEMVER, ANY_VARIANT, policy(select={"semver": {"range": "^1 || 3.x"}}),
                        policy(select={"semver": {"range": ">=1.2.3-rc.1 <3"}})]))
def test_default_filter_shortcut_decides_as_the_filter(tags: list[str], current: str | None,
                                                      declined: set[str],
                                                      p: strategies.Policy) -> None:
    # the same policy with a filter that rejects nothing more takes the general path
    general = dataclasses.replace(p, filter=filters.build(
        pattern=None, extract=None, exclude=["regex:\\A\\Z"], include_signatures=False))
    tags = [*tags, *sorted(declined)[:3], "sha256-0f.sig", "1.2.3.att"]
    assert p.select(tags, current=current, declined=declined) == general.select(
        tags, current=current, declined=declined)


# long enough that the engine's best-two ranking cuts its list back more than once
long_tag_lists = st.lists(st.one_of(version_tags(), version_tags(), junk), max_size=400)
ENGINE_POLICIES = [
    SEMVER, ANY_VARIANT, policy(select={"semver": {"range": "^1 || 3.x"}}),
    policy(select={"semver": {"range": ">=1.2.3-rc.1 <3"}}), policy(precision=2),
    policy(**{"allow-downgrade": True}), policy(**{"max-bump": "minor"}),
    policy(select={"semver": {"range": "~1.2"}}, variant="alpine"),
    policy(select={"semver": {"range": "*"}}, filter={"pattern": r"^v?(?P<v>.*)$",
                                                     "extract": "$v"}),
]


@settings(max_examples=300, deadline=None)
@given(long_tag_lists, st.one_of(st.none(), version_tags()),
       st.sets(st.one_of(version_tags(), junk), max_size=5), st.randoms(use_true_random=False),
       st.sampled_from(ENGINE_POLICIES))
def test_the_engines_unexplained_decision_is_the_explained_one(
        tags: list[str], current: str | None, declined: set[str], rnd: Any,
        p: strategies.Policy) -> None:
    tags = [*tags, *sorted(declined)[:3]]
    rnd.shuffle(tags)
    full = p.select(tags, current=current, declined=declined, now=NOW)
    for prune_at in (4, 64):  # cut back often (ties with the kept tags), and seldom
        with mock.patch.object(strategies, "_PRUNE_AT", prune_at):
            fast = p.select(tags, current=current, declined=declined, now=NOW, explain=False)
        assert (fast.tag, fast.reason, fast.winner, fast.runner_up, fast.digest) == (
            full.tag, full.reason, full.winner, full.runner_up, full.digest)
        assert fast.ranked == full.ranked[:2]
        assert fast.excluded == (() if full.ranked else full.excluded)


@settings(max_examples=100, deadline=None)
@given(st.lists(version_tags(), min_size=1, max_size=300), version_tags(),
       st.lists(st.integers(0, 400), max_size=300))
def test_the_unexplained_decision_honours_min_age(tags: list[str], current: str,
                                                  ages: list[int]) -> None:
    p = policy(**{"min-age": "1h"})
    given_tags = [strategies.Candidate(tag, created=NOW - timedelta(minutes=age))
                  if (age := ages[i % len(ages)] if ages else None) is not None else tag
                  for i, tag in enumerate(tags)]
    full = p.select(given_tags, current=current, now=NOW)
    with mock.patch.object(strategies, "_PRUNE_AT", 4):
        fast = p.select(given_tags, current=current, now=NOW, explain=False)
    assert (fast.tag, fast.reason, fast.runner_up) == (full.tag, full.reason, full.runner_up)


def test_a_tag_tied_with_the_kept_runner_up_still_enters() -> None:
    # cut back after four tags to [1.0.5, 1.0.4]; v1.0.4 has 1.0.4's key but, as the
    # current tag, ranks above it: it is the runner-up, not passed over
    p = policy(**{"allow-downgrade": True})
    tags = ["1.0.2", "1.0.3", "1.0.4", "1.0.5", "v1.0.4"]
    with mock.patch.object(strategies, "_PRUNE_AT", 4):
        fast = p.select(tags, current="v1.0.4", explain=False)
    assert (fast.winner, fast.runner_up) == ("1.0.5", "v1.0.4")
    assert fast.runner_up == p.select(tags, current="v1.0.4").runner_up
