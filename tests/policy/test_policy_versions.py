"""Tag parsing and version order (policy.versions): tables of the documented rules and traps."""

from __future__ import annotations

import pytest

from image_bot.policy import versions

# tag → (numbers, pre-release identifiers, variant, family); None: not a version tag
PARSED: list[tuple[str, tuple[tuple[int, ...], tuple[str | int, ...], str, str] | None]] = [
    ("1", ((1,), (), "", "")),
    ("1.2", ((1, 2), (), "", "")),
    ("1.2.3", ((1, 2, 3), (), "", "")),
    ("1.2.3.4", ((1, 2, 3, 4), (), "", "")),
    ("v1.2.3", ((1, 2, 3), (), "", "")),
    ("V1.2.3", ((1, 2, 3), (), "", "")),
    ("v8", ((8,), (), "", "")),
    ("0.0.0", ((0, 0, 0), (), "", "")),
    ("2024.01.15", ((2024, 1, 15), (), "", "")),
    ("20240115", ((20240115,), (), "", "")),
    ("1.0.0-rc.1", ((1, 0, 0), ("rc", 1), "", "")),
    ("1.0.0-rc1", ((1, 0, 0), ("rc", 1), "", "")),
    ("1.0.0-RC1", ((1, 0, 0), ("rc", 1), "", "")),
    ("1.0.0-rc10", ((1, 0, 0), ("rc", 10), "", "")),
    ("1.0.0-alpha", ((1, 0, 0), ("alpha",), "", "")),
    ("1.0.0-alpha.beta", ((1, 0, 0), ("alpha", "beta"), "", "")),
    ("1.0.0-beta.2", ((1, 0, 0), ("beta", 2), "", "")),
    ("1.0.0-beta2.1", ((1, 0, 0), ("beta", 2, 1), "", "")),
    ("1.0.0-pre", ((1, 0, 0), ("pre",), "", "")),
    ("1.0.0-preview.3", ((1, 0, 0), ("preview", 3), "", "")),
    ("1.0.0-dev", ((1, 0, 0), ("dev",), "", "")),
    ("1.0.0-snapshot", ((1, 0, 0), ("snapshot",), "", "")),
    ("1.0.0-SNAPSHOT", ((1, 0, 0), ("snapshot",), "", "")),
    ("1.0.0-canary.7", ((1, 0, 0), ("canary", 7), "", "")),
    ("1.0.0-nightly", ((1, 0, 0), ("nightly",), "", "")),
    ("1.0.0-m1", ((1, 0, 0), ("m", 1), "", "")),
    ("1.0.0-a1", ((1, 0, 0), ("a", 1), "", "")),
    ("1.0.0-b2", ((1, 0, 0), ("b", 2), "", "")),
    ("1.0.0-0", ((1, 0, 0), (0,), "", "")),
    ("1.0.0-20240115", ((1, 0, 0), (20240115,), "", "")),
    ("2.0.0-alpha-1", ((2, 0, 0), ("alpha", 1), "", "")),
    ("1.0.0-rc.1+build.5", ((1, 0, 0), ("rc", 1), "", "")),
    ("1.2.3+build.5", ((1, 2, 3), (), "", "")),
    ("1.25.3-alpine", ((1, 25, 3), (), "alpine", "alpine")),
    ("1.25.3-alpine3.19", ((1, 25, 3), (), "alpine3.19", "alpine")),
    ("1.27.0-alpine3.20", ((1, 27, 0), (), "alpine3.20", "alpine")),
    ("1.25-slim", ((1, 25), (), "slim", "slim")),
    ("12.1-bookworm", ((12, 1), (), "bookworm", "bookworm")),
    ("3.12.1-slim-bookworm", ((3, 12, 1), (), "slim-bookworm", "slim-bookworm")),
    ("1.2.3-ls12", ((1, 2, 3), (), "ls12", "ls")),
    ("8.0-windowsservercore-ltsc2022", ((8, 0), (), "windowsservercore-ltsc2022",
                                        "windowsservercore-ltsc")),
    ("1.2.3-debian-11-r0", ((1, 2, 3), (), "debian-11-r0", "debian--r")),
    ("1.2.3-r1", ((1, 2, 3), (), "r1", "r")),
    ("1.0.0-rc.1-alpine", ((1, 0, 0), ("rc", 1), "alpine", "alpine")),
    ("1.0.0-beta1-alpine3.19", ((1, 0, 0), ("beta", 1), "alpine3.19", "alpine")),
    ("2.0.0-alpine-rc1", ((2, 0, 0), ("rc", 1), "alpine", "alpine")),
    ("17-jdk", ((17,), (), "jdk", "jdk")),
    ("17.0.2_8-jdk", None),
    ("1.2.3-jdk_17", ((1, 2, 3), (), "jdk_17", "jdk_")),
    ("v1.2.3-alpha", ((1, 2, 3), ("alpha",), "", "")),
    ("latest", None), ("stable", None), ("main", None), ("edge", None),
    ("sha-abc123", None), ("abc1234", None), ("8d3f2a1", None), ("v", None), ("", None),
    ("1.2.3.4.5", None), ("1.2.", None), (".1.2", None), ("1..2", None), ("1.2.3-", None),
    ("1.2.3-.rc", None), ("1.2.3-rc..1", None), ("1.2.3+", None), ("-1.2.3", None),
    ("1.2.3 ", None), ("x1.2.3", None), ("1.2.3-alpine--3", None),
]


@pytest.mark.parametrize(("tag", "expected"), PARSED)
def test_parse(tag: str,
               expected: tuple[tuple[int, ...], tuple[str | int, ...], str, str] | None) -> None:
    parsed = versions.parse(tag)
    got = parsed and (parsed.numbers, parsed.prerelease, parsed.variant, parsed.family)
    assert got == expected


# (lower, higher): each pair strictly ordered by the version key
ORDERED = [
    ("1.0.0-rc9", "1.0.0-rc10"),            # letters split from digits
    ("1.0.0-rc.9", "1.0.0-rc.10"),          # numeric identifiers numerically
    ("1.0.0-rc9", "1.0.0-rc.10"),           # both spellings on one scale
    ("1.0.0-alpha", "1.0.0-alpha.1"),       # semver: a longer set is higher
    ("1.0.0-alpha.1", "1.0.0-alpha.beta"),  # numbers below words
    ("1.0.0-alpha.beta", "1.0.0-beta"),
    ("1.0.0-beta", "1.0.0-beta.2"),
    ("1.0.0-beta.2", "1.0.0-beta.11"),
    ("1.0.0-beta.11", "1.0.0-rc.1"),
    ("1.0.0-rc.1", "1.0.0"),                # a release is above its pre-releases
    ("1.0.0-0", "1.0.0-alpha"),
    ("1.0.0-RC1", "1.0.0-rc2"),             # case does not matter
    ("0.9.9", "1.0.0-rc.1"),
    ("1.9.0", "1.10.0"),                    # numbers, not text
    ("1.2.9", "1.2.10"),
    ("9", "10"),
    ("1.2.3", "1.2.3.1"),                   # a fourth component counts
    ("1.2.3.9", "1.2.3.10"),
    ("1.2.3.4", "1.2.4"),
    ("1.2.3-ls2", "1.2.3-ls3"),             # equal versions: the higher suffix number wins
    ("1.2.3-ls9", "1.2.3-ls10"),
    ("1.27.0-alpine", "1.27.0-alpine3.20"),
    ("1.27.0-alpine3.19", "1.27.0-alpine3.20"),
    ("1.26.9-alpine3.20", "1.27.0-alpine3.19"),  # the version first, then the suffix
    ("1.0.0-rc.1-alpine", "1.0.0-alpine"),
    ("2024.01.15", "2024.1.16"),
    ("v1.9.0", "1.10.0"),
    ("0.0.1", "0.1"),
]


@pytest.mark.parametrize(("lower", "higher"), ORDERED)
def test_order(lower: str, higher: str) -> None:
    low, high = versions.parse(lower), versions.parse(higher)
    assert low is not None and high is not None
    assert low.key() < high.key()
    assert high.key() > low.key()


# same version key: the caller breaks the tie (precision, then the tag text)
SAME = [("1.2.3", "v1.2.3"), ("1.2.3", "1.2.3+build.7"), ("1.0.0-rc1", "1.0.0-rc.1"),
        ("9", "9.0"), ("9.0", "9.0.0"), ("1.2.3", "1.2.3.0"), ("1.02.3", "1.2.3"),
        ("1.0.0-RC1", "1.0.0-rc1"), ("1.2.3-alpine", "1.2.3-slim")]


@pytest.mark.parametrize(("one", "other"), SAME)
def test_equal_keys(one: str, other: str) -> None:
    a, b = versions.parse(one), versions.parse(other)
    assert a is not None and b is not None
    assert a.key() == b.key()


@pytest.mark.parametrize(("tag", "version"), [
    ("1.2.3.4", "1.2.3"), ("1.2", "1.2.0"), ("v7", "7.0.0"), ("1.0.0-rc10", "1.0.0-rc.10"),
    ("1.0.0-beta2-alpine", "1.0.0-beta.2"), ("1.25.3-alpine3.19", "1.25.3"),
])
def test_semver_version_for_ranges(tag: str, version: str) -> None:
    parsed = versions.parse(tag)
    assert parsed is not None and str(parsed.version) == version


@pytest.mark.parametrize(("variant", "family", "numbers"), [
    ("alpine3.20", "alpine", (3, 20)), ("ls12", "ls", (12,)), ("slim", "slim", ()),
    ("bookworm", "bookworm", ()), ("windowsservercore-ltsc2022", "windowsservercore-ltsc",
                                   (2022,)), ("", "", ()),
])
def test_family_and_numbers(variant: str, family: str, numbers: tuple[int, ...]) -> None:
    assert versions.family(variant) == family
    assert versions.variant_numbers(variant) == numbers


@pytest.mark.parametrize(("low", "high"), [
    ("build9", "build10"), ("a", "b"), ("v1.2.3", "1.2.3"), ("x-2", "x-10"), ("1", "1a"),
    ("1.02", "1.2"), ("A", "a"),
])
def test_natural_key(low: str, high: str) -> None:
    assert versions.natural_key(low) < versions.natural_key(high)
