"""Ordering invariants of policy selection, checked with generated tags (hypothesis).

Total order and determinism (any input order, duplicates), never a downgrade, the variant
family and precision kept, the winner ranks above every other eligible tag.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from image_bot.config import models
from image_bot.policy import filters, strategies, versions

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
