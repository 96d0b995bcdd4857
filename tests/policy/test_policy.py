"""Tag selection (pure): ranges with npm semantics, versions, and the current-tag rules."""

from __future__ import annotations

import pytest
import semver

from image_bot.config import models
from image_bot.policy import ranges, strategies, versions


@pytest.mark.parametrize(("text", "version", "expected"), [
    ("^1.0", "1.1.0", True), ("^1.0", "2.0.0", False), ("^1.0", "1.5.0-rc.1", False),
    ("^0.2.3", "0.2.9", True), ("^0.2.3", "0.3.0", False), ("^0.0.3", "0.0.4", False),
    (">=1.2 <2", "1.9.9", True), (">=1.2 <2", "2.0.0-rc.1", False), ("~1.2", "1.2.7", True),
    ("~1.2", "1.3.0", False), ("~1", "1.9.0", True), ("1.x", "1.9.0", True),
    ("1.2.x", "1.3.0", False), ("*", "3.0.0", True), ("", "0.0.1", True),
    ("1.2 - 1.4", "1.4.9", True), ("1.2 - 1.4", "1.5.0", False),
    ("1.2.3 - 2.3.4", "2.3.4", True), ("1.2.3 - 2.3.4", "2.3.5", False),
    ("<1 || >=3", "3.1.0", True), ("<1 || >=3", "2.0.0", False),
    (">=1.0.0-rc.1 <2", "1.0.0-rc.2", True), (">=1.0.0-rc.1 <2", "1.1.0-rc.1", False),
    (">1.2", "1.2.9", False), (">1.2", "1.3.0", True), ("<=1.2", "1.2.9", True),
    ("<=1.2", "1.3.0", False), ("<1.2", "1.1.9", True), ("<1.2", "1.2.0-rc.1", False),
    ("= 1.2.3", "1.2.3", True), ("v1.2.3", "1.2.3", True),
])
def test_range_contains(text: str, version: str, expected: bool) -> None:
    assert ranges.parse(text).contains(semver.Version.parse(version)) is expected


def test_prerelease_flag_admits_prereleases() -> None:
    assert ranges.parse("^1.0").contains(semver.Version.parse("1.5.0-rc.1"), prerelease=True)


@pytest.mark.parametrize(("text", "version", "prerelease", "expected"), [
    ("*", "0.0.0-rc.0", True, True), ("*", "0.0.0-rc.0", False, False),
    ("1.x", "1.0.0-rc.1", True, True), ("1.x", "1.0.0-rc.1", False, False),
    ("^1.2", "1.2.0-rc.1", True, True), ("^1.2.3", "1.2.3-rc.1", True, False),
    ("~1.2", "1.2.0-0", True, True), ("1.2 - 1.4", "1.2.0-beta", True, True),
    ("1.2.3 - 1.4", "1.2.3-beta", True, False), (">=1.2", "1.2.0-rc.1", True, True),
    ("^1.2.3-rc.1", "1.2.3-rc.2", False, True), ("^1.2.3-rc.1", "1.2.4-rc.1", False, False),
])
def test_partial_versions_start_below_their_prereleases(text: str, version: str,
                                                       prerelease: bool,
                                                       expected: bool) -> None:
    parsed = semver.Version.parse(version)
    assert ranges.parse(text).contains(parsed, prerelease=prerelease) is expected


@pytest.mark.parametrize(("text", "message"), [
    (">>1", "invalid semver range '>>1': '>1' is not a version (at character 2)"),
    ("^1.2.a", "invalid semver range '^1.2.a': '1.2.a' is not a version (at character 2)"),
    ("1.2-rc1", "invalid semver range '1.2-rc1': a pre-release needs x.y.z in '1.2-rc1' "
                "(at character 1)"),
    (">=1.0, <2.x.y", "invalid semver range '>=1.0, <2.x.y': '2.x.y' is not a version "
                      "(at character 9)"),
    ("1.0 || >=2.0, <3.0.0.1", "invalid semver range '1.0 || >=2.0, <3.0.0.1': '3.0.0.1' is "
                               "not a version (at character 16)"),
])
def test_invalid_ranges_name_the_text(text: str, message: str) -> None:
    with pytest.raises(ranges.RangeError) as caught:
        ranges.parse(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(("tag", "expected"), [
    ("1.2.3", (semver.Version(1, 2, 3), 3)), ("v1.2", (semver.Version(1, 2, 0), 2)),
    ("V8", (semver.Version(8, 0, 0), 1)),
    ("1.0.0-rc.1+build.5", (semver.Version(1, 0, 0, "rc.1"), 3)),
    ("latest", None), ("1.2.3.4.5", None), ("sha-abc123", None),
])
def test_version_parsing(tag: str, expected: tuple[semver.Version, int] | None) -> None:
    parsed = versions.parse(tag)
    assert (parsed and (parsed.version, parsed.precision)) == expected


def _policy(range_text: str, prerelease: bool = False) -> strategies.Policy:
    spec = models.PolicySpec.model_validate({
        "image": "ghcr.io/x/app",
        "select": {"semver": {"range": range_text, "prerelease": prerelease}},
    })
    return strategies.build(spec)


def test_select_highest_in_range() -> None:
    decision = _policy("^1.0").select(["1.0.0", "1.1.0", "2.0.0", "latest", "1.2.0-rc.1"],
                                      current="1.0.0")
    assert (decision.tag, decision.reason) == (
        "1.1.0", "1.1.0 is the highest version in '^1.0' (current 1.0.0)")
    assert (decision.winner, decision.runner_up, decision.ranked) == (
        "1.1.0", "1.0.0", ("1.1.0", "1.0.0"))
    assert [(e.tag, e.rule) for e in decision.excluded] == [
        ("1.2.0-rc.1", "prerelease"), ("2.0.0", "range"), ("latest", "not-a-version")]


def test_select_never_downgrades() -> None:
    decision = _policy("^1.0").select(["1.0.0", "1.1.0"], current="1.5.0")
    assert decision.tag is None
    assert decision.reason == ("nothing newer than current 1.5.0, and no downgrade "
                               "(excluded: 2 downgrade)")
    assert decision.excluded == (
        strategies.Excluded("1.0.0", "downgrade",
                            "lower than current 1.5.0 (allow with allow-downgrade: true)"),
        strategies.Excluded("1.1.0", "downgrade",
                            "lower than current 1.5.0 (allow with allow-downgrade: true)"))


def test_select_current_is_latest() -> None:
    decision = _policy("^1.0").select(["1.0.0", "1.1.0"], current="1.1.0")
    assert (decision.tag, decision.winner, decision.reason) == (
        None, "1.1.0", "current 1.1.0 is already the highest version in '^1.0'")


def test_select_nothing_in_range() -> None:
    decision = _policy("^3").select(["1.0.0", "2.0.0"], current="1.0.0")
    assert (decision.tag, decision.reason) == (None, "no tag qualifies (excluded: 2 range)")


def test_build_reports_the_key_of_a_bad_range() -> None:
    with pytest.raises(strategies.InvalidSpec) as caught:
        _policy("not a range")
    assert caught.value.key == "spec.select.semver.range"


@pytest.mark.parametrize(("text", "version", "expected"), [
    (">=1.0, <2.0", "1.5.0", True), (">=1.0, <2.0", "2.0.0", False),
    (">=1.0, <2.0", "0.9.0", False), (">=1.0,<2.0", "1.0.0", True),
    (">= 1.2, < 1.4 || 2.x", "2.1.0", True), (">= 1.2, < 1.4 || 2.x", "1.4.0", False),
])
def test_commas_mean_and_as_in_masterminds(text: str, version: str, expected: bool) -> None:
    assert ranges.parse(text).contains(semver.Version.parse(version)) is expected
