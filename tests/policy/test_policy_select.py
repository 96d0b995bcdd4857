"""Selection (policy.strategies): every strategy, filter and safety rule, as tables.

Each row is a documented rule of docs/policies.md or a classic trap from other tools' bug
trackers (rc9 above rc10, 1.0 not a version, -alpine "updated" to Debian, pre-releases).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from image_bot.config import models
from image_bot.policy import strategies

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NGINX = ["1.25.3", "1.25.3-alpine", "1.25.3-alpine3.19", "1.26.0", "1.26.0-alpine3.19",
         "1.27.0", "1.27.0-alpine", "1.27.0-alpine3.20", "1.27.0-slim", "1.27", "1.27-alpine",
         "1", "1-alpine", "mainline", "latest", "stable-alpine", "1.27.0.sig",
         "sha256-4f3c.sig", "sha256-4f3c.att"]
PRE = ["1.0.0-rc9", "1.0.0-rc10", "0.9.0"]


def policy(**fields: Any) -> strategies.Policy:
    fields.setdefault("select", {"semver": {"range": "*"}})
    return strategies.build(models.PolicySpec.model_validate({"image": "ghcr.io/x/app",
                                                              **fields}))


def semver(range_text: str = "*", prerelease: bool = False, **fields: Any) -> dict[str, Any]:
    return {"select": {"semver": {"range": range_text, "prerelease": prerelease}}, **fields}


# (fields, tags, current, tag to write, winner)
SEMVER_CASES: list[tuple[str, dict[str, Any], list[str], str | None, str | None, str | None]] = [
    # variants keep the current family; precision follows the current tag
    ("alpine keeps alpine", semver(), NGINX, "1.25.3-alpine3.19", "1.27.0-alpine3.20",
     "1.27.0-alpine3.20"),
    ("bare alpine moves within alpine", semver(), NGINX, "1.25.3-alpine", "1.27.0-alpine3.20",
     "1.27.0-alpine3.20"),
    ("no variant stays without", semver(), NGINX, "1.25.3", "1.27.0", "1.27.0"),
    ("two components float", semver(), NGINX, "1.25", "1.27", "1.27"),
    ("two components with variant", semver(), NGINX, "1.25-alpine", "1.27-alpine",
     "1.27-alpine"),
    ("one component", semver(), NGINX, "1", None, "1"),
    ("slim keeps slim", semver(), NGINX, "1.25.3-slim", "1.27.0-slim", "1.27.0-slim"),
    ("no current: no variant, most specific", semver(), NGINX, None, "1.27.0", "1.27.0"),
    ("variant any", semver(variant="any"), NGINX, "1.25.3", "1.27.0-alpine3.20",
     "1.27.0-alpine3.20"),
    ("explicit variant family", semver(variant="slim"), NGINX, "1.25.3", "1.27.0-slim",
     "1.27.0-slim"),
    ("explicit alpine family", semver(variant="alpine"), NGINX, "1.25.3",
     "1.27.0-alpine3.20", "1.27.0-alpine3.20"),
    ("explicit exact variant", semver(variant="alpine3.19"), NGINX, "1.25.3-alpine3.19",
     "1.26.0-alpine3.19", "1.26.0-alpine3.19"),
    ("variant none leaves alpine", semver(variant="none"), NGINX, "1.25.3-alpine", "1.27.0",
     "1.27.0"),
    ("precision any", semver(precision="any"), NGINX, "1.25", "1.27.0", "1.27.0"),
    ("precision 2", semver(precision=2), NGINX, "1.25.3", "1.27", "1.27"),
    ("precision 1: 1 is below 1.25.3", semver(precision=1), NGINX, "1.25.3", None, None),
    ("precision 1", semver(precision=1), NGINX, "0.9", "1", "1"),
    ("equal versions: most specific", semver(), ["9", "9.0", "9.0.0"], None, "9.0.0", "9.0.0"),
    ("higher suffix number wins", semver(), ["1.2.3-ls2", "1.2.3-ls3"], "1.2.3-ls2",
     "1.2.3-ls3", "1.2.3-ls3"),
    ("ls10 above ls9", semver(), ["1.2.3-ls9", "1.2.3-ls10"], "1.2.3-ls9", "1.2.3-ls10",
     "1.2.3-ls10"),
    ("no current: no variant", semver(), ["1.2.3-ls9", "1.2.4"], None, "1.2.4", "1.2.4"),
    ("ls family moves on", semver(), ["1.2.3-ls3", "1.2.4-ls1", "1.2.4"], "1.2.3-ls3",
     "1.2.4-ls1", "1.2.4-ls1"),
    ("windows variant", semver(), ["8.0-windowsservercore-ltsc2022", "8.1-nanoserver-1809",
                                   "8.1-windowsservercore-ltsc2022", "8.1"],
     "8.0-windowsservercore-ltsc2022", "8.1-windowsservercore-ltsc2022",
     "8.1-windowsservercore-ltsc2022"),
    ("bookworm keeps bookworm", semver(), ["3.11-bookworm", "3.12-bookworm", "3.12-bullseye",
                                           "3.12"], "3.11-bookworm", "3.12-bookworm",
     "3.12-bookworm"),
    # pre-releases
    ("rc10 above rc9", semver(prerelease=True), PRE, None, "1.0.0-rc10", "1.0.0-rc10"),
    ("pre-releases excluded by default", semver(), PRE, None, "0.9.0", "0.9.0"),
    ("range names a pre-release (npm)", semver(">=1.0.0-rc.1"), PRE, None, "1.0.0-rc10",
     "1.0.0-rc10"),
    ("npm rule: same version only", semver(">=1.0.0-rc.1"), ["1.0.0-rc.2", "1.1.0-rc.1"],
     None, "1.0.0-rc.2", "1.0.0-rc.2"),
    ("current pre-release moves to later rc", semver(), PRE, "1.0.0-rc9", "1.0.0-rc10",
     "1.0.0-rc10"),
    ("current pre-release moves to release", semver(), [*PRE, "1.0.0"], "1.0.0-rc9", "1.0.0",
     "1.0.0"),
    ("current pre-release, other version's rc", semver(), ["1.0.0-rc9", "1.1.0-rc.1"],
     "1.0.0-rc9", None, "1.0.0-rc9"),
    ("beta below rc", semver(prerelease=True), ["2.0.0-beta.11", "2.0.0-rc.1",
                                                "2.0.0-alpha.20"], None, "2.0.0-rc.1",
     "2.0.0-rc.1"),
    ("rc.10 above rc.9", semver(prerelease=True), ["1.0.0-rc.9", "1.0.0-rc.10"], None,
     "1.0.0-rc.10", "1.0.0-rc.10"),
    ("release above its rc", semver(prerelease=True), ["1.0.0-rc.1", "1.0.0"], None, "1.0.0",
     "1.0.0"),
    ("snapshot is a pre-release", semver(), ["2.0.0-SNAPSHOT", "1.9.0"], None, "1.9.0",
     "1.9.0"),
    ("numeric suffix is a pre-release", semver(), ["1.2.3-1", "1.2.2"], None, "1.2.2", "1.2.2"),
    # ranges
    ("caret", semver("^1.2"), ["1.2.0", "1.9.9", "2.0.0", "2.0.0-rc.1"], "1.2.0", "1.9.9",
     "1.9.9"),
    ("tilde", semver("~1.2"), ["1.2.0", "1.2.9", "1.3.0"], "1.2.0", "1.2.9", "1.2.9"),
    ("x-range patch", semver("1.2.x"), ["1.2.0", "1.2.9", "1.3.0"], None, "1.2.9", "1.2.9"),
    ("x-range minor", semver("1.x"), ["1.0.0", "1.9.0", "2.0.0"], None, "1.9.0", "1.9.0"),
    ("hyphen range", semver("1.2 - 1.4"), ["1.4.9", "1.5.0", "1.1.0"], None, "1.4.9", "1.4.9"),
    ("alternatives", semver("<1 || >=3"), ["0.9.0", "2.0.0", "3.1.0"], None, "3.1.0", "3.1.0"),
    ("numbers not text", semver(">=1.2 <2"), ["1.9.0", "1.10.0", "2.0.0-rc.1"], "1.9.0",
     "1.10.0", "1.10.0"),
    ("1.0 is a version", semver(), ["1.0", "0.9.9"], None, "1.0", "1.0"),
    ("four components", semver(), ["1.2.3.4", "1.2.3.10", "1.2.3"], None, "1.2.3.10",
     "1.2.3.10"),
    ("fourth component in a range", semver("~1.2.3"), ["1.2.3.4", "1.3.0.0"], None, "1.2.3.4",
     "1.2.3.4"),
    ("v prefix", semver(), ["v1.9.0", "v1.10.0"], None, "v1.10.0", "v1.10.0"),
    ("mixed prefix", semver(), ["v1.9.0", "1.10.0"], "v1.9.0", "1.10.0", "1.10.0"),
    ("build metadata ignored, tie by text", semver(), ["1.0.0+build.2", "1.0.0+build.10"],
     None, "1.0.0+build.10", "1.0.0+build.10"),
    ("tie: no prefix first", semver(), ["1.2.3", "v1.2.3"], None, "1.2.3", "1.2.3"),
    ("tie: current first", semver(), ["1.2.3", "v1.2.3"], "v1.2.3", None, "v1.2.3"),
    ("same version unlisted current", semver(), ["v1.2.3"], "1.2.3", None, "v1.2.3"),
    ("calver", semver(), ["2024.01.15", "2024.1.9", "2023.12.31"], "2023.12.31", "2024.01.15",
     "2024.01.15"),
    # a floating current tag keeps its flavour (docs/policies.md, "Floating tags")
    ("floating alpine keeps alpine", semver(), NGINX, "alpine", "1.27.0-alpine3.20",
     "1.27.0-alpine3.20"),
    ("floating slim keeps slim", semver(), NGINX, "slim", "1.27.0-slim", "1.27.0-slim"),
    ("floating stable-alpine keeps alpine", semver(), NGINX, "stable-alpine",
     "1.27.0-alpine3.20", "1.27.0-alpine3.20"),
    ("floating flavour no version has", semver(), ["1.0.0", "2.0.0"], "bookworm", None, None),
    ("floating alpine, variant none opts in", semver(variant="none"), NGINX, "alpine",
     "1.27.0", "1.27.0"),
    ("latest current is not a version", semver(), ["1.0.0", "latest"], "latest", "1.0.0",
     "1.0.0"),
    # downgrades
    ("never downgrade", semver(), ["1.0.0", "1.5.0"], "2.0.0", None, None),
    ("allow-downgrade", semver(**{"allow-downgrade": True}), ["1.0.0", "1.5.0"], "2.0.0",
     "1.5.0", "1.5.0"),
    ("allow-downgrade keeps the highest", semver(**{"allow-downgrade": True}),
     ["1.0.0", "2.0.0"], "2.0.0", None, "2.0.0"),
    ("no downgrade below current variant", semver(), ["1.27.0-alpine"], "1.27.0-alpine3.20",
     None, None),
    # max-bump
    ("max-bump patch", semver(**{"max-bump": "patch"}), ["1.2.4", "1.3.0", "2.0.0"], "1.2.3",
     "1.2.4", "1.2.4"),
    ("max-bump minor", semver(**{"max-bump": "minor"}), ["1.2.4", "1.3.0", "2.0.0"], "1.2.3",
     "1.3.0", "1.3.0"),
    ("max-bump major", semver(**{"max-bump": "major"}), ["1.2.4", "1.3.0", "2.0.0"], "1.2.3",
     "2.0.0", "2.0.0"),
    ("no max-bump", semver(), ["1.2.4", "1.3.0", "2.0.0"], "1.2.3", "2.0.0", "2.0.0"),
    ("minor never crosses a major", semver(**{"max-bump": "minor"}), ["2.0.0"], "1.9.0", None,
     None),
    ("max-bump without current", semver(**{"max-bump": "patch"}), ["1.2.4", "2.0.0"], None,
     "2.0.0", "2.0.0"),
    ("max-bump patch, fourth component", semver(**{"max-bump": "patch"}),
     ["1.2.3.5", "1.2.4.0"], "1.2.3.4", "1.2.4.0", "1.2.4.0"),
    # filters
    ("signature tags excluded", semver(), ["1.0.0", "sha256-1.0.1", "1.0.1.sig"], None,
     "1.0.0", "1.0.0"),
    ("exclude glob", semver(filter={"exclude": ["*-debug", "1.3.*"]}),
     ["1.2.0", "1.2.1-debug", "1.3.0"], None, "1.2.0", "1.2.0"),
    ("exclude regex", semver(filter={"exclude": ["regex:^1\\.3"]}), ["1.2.0", "1.3.0"], None,
     "1.2.0", "1.2.0"),
    ("pattern extract", semver(filter={"pattern": r"^release-(\d+\.\d+\.\d+)$",
                                       "extract": "$1"}),
     ["release-1.9.0", "release-1.10.0", "1.11.0", "release-1.12.0-debug"], "release-1.9.0",
     "release-1.10.0", "release-1.10.0"),
    ("pattern unanchored", semver(filter={"pattern": r"(?P<v>\d+\.\d+\.\d+)",
                                          "extract": "${v}"}),
     ["app-1.2.3-linux", "app-1.3.0-linux", "nightly"], None, "app-1.3.0-linux",
     "app-1.3.0-linux"),
    ("pattern without extract", semver(filter={"pattern": "^v"}), ["v1.0.0", "2.0.0"], None,
     "v1.0.0", "v1.0.0"),
]


@pytest.mark.parametrize(("name", "fields", "tags", "current", "tag", "winner"), SEMVER_CASES,
                         ids=[c[0] for c in SEMVER_CASES])
def test_semver_table(name: str, fields: dict[str, Any], tags: list[str], current: str | None,
                      tag: str | None, winner: str | None) -> None:
    decision = policy(**fields).select(tags, current=current, now=NOW)
    assert (decision.tag, decision.winner) == (tag, winner), decision.reason


def test_nginx_alpine_explained() -> None:
    decision = policy().select(NGINX, current="1.25.3-alpine3.19", now=NOW)
    assert decision.reason == ("1.27.0-alpine3.20 is the highest version in '*' "
                               "(current 1.25.3-alpine3.19)")
    assert decision.runner_up == "1.27.0-alpine"
    assert decision.ranked == ("1.27.0-alpine3.20", "1.27.0-alpine", "1.26.0-alpine3.19",
                               "1.25.3-alpine3.19")
    rules = {e.tag: (e.rule, e.detail) for e in decision.excluded}
    assert rules["1.27.0"] == ("variant", "no variant, not the current family 'alpine'")
    assert rules["1.27.0-slim"] == ("variant", "variant 'slim', not the current family "
                                               "'alpine'")
    assert rules["1.27-alpine"] == ("precision", "has 2 numeric component(s), not 3 "
                                                 "(precision: current)")
    assert rules["latest"] == ("not-a-version", "'latest' is not a version")
    assert rules["1.25.3-alpine"] == ("downgrade", "lower than current 1.25.3-alpine3.19 "
                                                   "(allow with allow-downgrade: true)")
    assert rules["1.27.0.sig"] == ("signature", "a signature/attestation tag (*.sig)")
    assert rules["sha256-4f3c.att"] == ("signature", "a signature/attestation tag (*.att)")
    assert len(decision.excluded) + len(decision.ranked) == len(NGINX)


def test_no_variant_current_excludes_variants_with_reason() -> None:
    decision = policy().select(["1.27.0-alpine", "1.26.0"], current="1.25.3", now=NOW)
    assert decision.tag == "1.26.0"
    assert decision.excluded == (strategies.Excluded(
        "1.27.0-alpine", "variant", "has variant 'alpine'; the current tag has none"),)


def test_explicit_variant_reason() -> None:
    decision = policy(variant="slim").select(["1.27.0-alpine"], current="1.25.3", now=NOW)
    assert decision.excluded == (strategies.Excluded(
        "1.27.0-alpine", "variant", "variant 'alpine', not 'slim' (variant: slim)"),)


# (rule, fields, tags, current, detail of the first exclusion)
RULES: list[tuple[str, dict[str, Any], list[str], str | None, str]] = [
    ("signature", semver(), ["x.sig"], None, "a signature/attestation tag (*.sig)"),
    ("signature", semver(), ["sha256-abc"], None, "a signature/attestation tag (sha256-*)"),
    ("signature", semver(), ["app.sbom"], None, "a signature/attestation tag (*.sbom)"),
    ("exclude", semver(filter={"exclude": ["*-rc*"]}), ["1.0.0-rc1"], None,
     "excluded by '*-rc*'"),
    ("exclude", semver(filter={"exclude": ["regex:^v"]}), ["v1"], None,
     "excluded by 'regex:^v'"),
    ("pattern", semver(filter={"pattern": "^v"}), ["1.0.0"], None,
     "does not match pattern '^v'"),
    ("not-a-version", semver(), ["latest"], None, "'latest' is not a version"),
    ("not-a-version", semver(filter={"pattern": "^b-(.*)$", "extract": "$1"}), ["b-x"], None,
     "'x' is not a version"),
    ("range", semver("^2"), ["1.0.0"], None, "not in range '^2'"),
    ("prerelease", semver(), ["1.0.0-rc1"], None,
     "a pre-release (allow with prerelease: true, or name one in the range)"),
    ("precision", semver(), ["1.3"], "1.2.0", "has 2 numeric component(s), not 3 "
                                             "(precision: current)"),
    ("precision", semver(precision=1), ["1.3"], None, "has 2 numeric component(s), not 1 "
                                                      "(precision: 1)"),
    ("downgrade", semver(), ["1.0.0"], "1.1.0",
     "lower than current 1.1.0 (allow with allow-downgrade: true)"),
    ("max-bump", semver(**{"max-bump": "minor"}), ["2.0.0"], "1.0.0",
     "a major bump from 1.0.0 (max-bump: minor)"),
    ("max-bump", semver(**{"max-bump": "patch"}), ["1.1.0"], "1.0.0",
     "a minor bump from 1.0.0 (max-bump: patch)"),
    ("not-a-number", {"select": {"numerical": {}}}, ["v1"], None, "'v1' is not a number"),
    ("no-created", {"select": {"newest-build": {}}}, ["a"], None, "creation time unknown"),
    ("not-followed", {"select": {"digest": {"tag": "latest"}}}, ["1.0"], None,
     "the policy follows 'latest'"),
    ("min-age", semver(**{"min-age": "1h"}), ["1.0.0"], None,
     "creation time unknown; min-age needs it"),
    ("platforms", semver(platforms=["linux/arm64"]), ["1.0.0"], None, "platforms unknown"),
]


@pytest.mark.parametrize(("rule", "fields", "tags", "current", "detail"), RULES)
def test_every_rule_says_why(rule: str, fields: dict[str, Any], tags: list[str],
                             current: str | None, detail: str) -> None:
    decision = policy(**fields).select(tags, current=current, now=NOW)
    assert decision.excluded[0] == strategies.Excluded(tags[0], rule, detail)
    assert rule in strategies.RULES


def test_declined_versions_are_skipped() -> None:
    chosen = policy().select(["1.2.0", "1.3.0"], current="1.2.0", now=NOW, declined={"1.3.0"})
    assert (chosen.tag, chosen.reason) == (None, "current 1.2.0 is already the highest "
                                                 "version in '*'")
    assert chosen.excluded == (strategies.Excluded(
        "1.3.0", "declined", "declined before (for example a closed pull request); a newer "
                             "tag will be proposed"),)
    newer = policy().select(["1.2.0", "1.3.0", "1.3.1"], current="1.2.0", now=NOW,
                            declined={"1.3.0"})
    assert newer.tag == "1.3.1"


@pytest.mark.parametrize(("tag", "fields", "rule"), [
    ("sha256-0f.sig", semver(), "signature"),  # filter rules come before declined
    ("1.0.0-x.sig", semver(), "signature"),
    ("latest", semver(), "declined"),  # declined comes before not-a-version
    ("latest", {**semver(), "filter": {"exclude": ["nightly"]}}, "declined"),
    ("2.0.0", semver("^1"), "declined"),  # and before the range
    ("nightly", {**semver(), "filter": {"exclude": ["nightly"]}}, "exclude"),
])
def test_the_first_failing_rule_is_the_one_reported(tag: str, fields: dict[str, Any],
                                                    rule: str) -> None:
    decision = policy(**fields).select([tag, "1.0.0"], current="1.0.0", declined={tag})
    assert [(e.tag, e.rule) for e in decision.excluded] == [(tag, rule)]


def test_declined_never_excludes_the_current_tag() -> None:
    decision = policy().select(["1.2.0", "1.1.0"], current="1.2.0", now=NOW,
                               declined={"1.2.0"})
    assert (decision.tag, decision.winner) == (None, "1.2.0")


def _aged(tag: str, hours: float, **more: Any) -> strategies.Candidate:
    return strategies.Candidate(tag, created=NOW - timedelta(hours=hours), **more)


def test_min_age() -> None:
    tags = [_aged("1.0.0", 240), _aged("1.1.0", 1), _aged("1.0.1", 30)]
    decision = policy(**{"min-age": "1d"}).select(tags, current="1.0.0", now=NOW)
    assert (decision.tag, decision.ranked) == ("1.0.1", ("1.0.1", "1.0.0"))
    assert decision.excluded == (strategies.Excluded("1.1.0", "min-age",
                                                     "only 1h old (min-age 1d)"),)


def test_min_age_boundary_is_inclusive() -> None:
    decision = policy(**{"min-age": "2h"}).select([_aged("1.0.0", 2)], now=NOW)
    assert decision.tag == "1.0.0"


def test_min_age_needs_now() -> None:
    with pytest.raises(TypeError, match="needs `now`"):
        policy(**{"min-age": "1h"}).select(["1.0.0"])


def test_platforms() -> None:
    both = ("linux/amd64", "linux/arm64")
    tags = [strategies.Candidate("1.0.1", platforms=both),
            strategies.Candidate("1.1.0", platforms=("linux/amd64",)),
            strategies.Candidate("1.2.0")]
    decision = policy(platforms=list(both)).select(tags, current="1.0.0", now=NOW)
    assert decision.tag == "1.0.1"
    assert [(e.tag, e.detail) for e in decision.excluded] == [
        ("1.1.0", "lacks platform(s) linux/arm64"), ("1.2.0", "platforms unknown")]


# numerical, alphabetical: (fields, tags, current, tag to write)
ORDERED_CASES: list[tuple[str, dict[str, Any], list[str], str | None, str | None]] = [
    ("numerical asc", {"select": {"numerical": {"order": "asc"}}}, ["1", "2", "10", "abc"],
     None, "10"),
    ("numerical default asc", {"select": {"numerical": {}}}, ["9", "10"], None, "10"),
    ("numerical desc", {"select": {"numerical": {"order": "desc"}}}, ["1", "2", "10"], None,
     "1"),
    ("numerical decimals", {"select": {"numerical": {}}}, ["1.5", "1.10"], None, "1.5"),
    ("numerical negative", {"select": {"numerical": {}}}, ["-5", "-1"], None, "-1"),
    ("numerical tie by tag", {"select": {"numerical": {}}}, ["07", "7"], None, "7"),
    ("numerical extract", {"select": {"numerical": {}},
                           "filter": {"pattern": r"^build-(\d+)$", "extract": "$1"}},
     ["build-9", "build-10", "build-100-debug", "100"], None, "build-10"),
    ("numerical extract desc", {"select": {"numerical": {"order": "desc"}},
                                "filter": {"pattern": r"^build-(\d+)$", "extract": "$1"}},
     ["build-9", "build-10"], None, "build-9"),
    ("numerical no downgrade", {"select": {"numerical": {}}}, ["5", "9"], "10", None),
    ("numerical update", {"select": {"numerical": {}}}, ["5", "9", "12"], "10", "12"),
    ("numerical desc no downgrade", {"select": {"numerical": {"order": "desc"}}}, ["5", "9"],
     "3", None),
    ("numerical allow-downgrade", {"select": {"numerical": {}}, "allow-downgrade": True},
     ["5", "9"], "10", "9"),
    ("alphabetical asc", {"select": {"alphabetical": {}}}, ["a", "c", "b"], None, "c"),
    ("alphabetical desc", {"select": {"alphabetical": {"order": "desc"}}}, ["b", "a", "c"],
     None, "a"),
    ("alphabetical desc prefix", {"select": {"alphabetical": {"order": "desc"}}},
     ["abc", "ab"], None, "ab"),
    ("alphabetical asc prefix", {"select": {"alphabetical": {}}}, ["abc", "ab"], None, "abc"),
    ("alphabetical is not numeric", {"select": {"alphabetical": {}}}, ["9", "10"], None, "9"),
    ("alphabetical timestamps", {"select": {"alphabetical": {}},
                                 "filter": {"pattern": r"^main-[0-9a-f]+-(?P<ts>\d+)$",
                                            "extract": "$ts"}},
     ["main-def456-1700000500", "main-abc123-1700000000", "pr-9-1800000000"], None,
     "main-def456-1700000500"),
    ("alphabetical no downgrade", {"select": {"alphabetical": {}}}, ["a", "b"], "c", None),
    ("alphabetical same value current first", {"select": {"alphabetical": {}},
                                               "filter": {"pattern": "^x-(.)", "extract": "$1"}},
     ["x-a1", "x-a2"], "x-a1", None),
]


@pytest.mark.parametrize(("name", "fields", "tags", "current", "tag"), ORDERED_CASES,
                         ids=[c[0] for c in ORDERED_CASES])
def test_ordered_table(name: str, fields: dict[str, Any], tags: list[str], current: str | None,
                       tag: str | None) -> None:
    assert policy(**fields).select(tags, current=current, now=NOW).tag == tag


def test_newest_build() -> None:
    tags = [_aged("a", 5), _aged("b", 1), _aged("c", 3), strategies.Candidate("d")]
    decision = policy(select={"newest-build": {}}).select(tags, now=NOW)
    assert (decision.tag, decision.ranked) == ("b", ("b", "c", "a"))
    assert decision.reason == "b is the newest build (created 2026-06-01T11:00:00+00:00)"
    assert decision.excluded == (strategies.Excluded("d", "no-created",
                                                     "creation time unknown"),)


def test_newest_build_ties_by_tag_name() -> None:
    tags = [_aged("main-9", 1), _aged("main-10", 1), _aged("main-1", 1)]
    decision = policy(select={"newest-build": {}}).select(tags, now=NOW)
    assert decision.ranked == ("main-10", "main-9", "main-1")


def test_newest_build_no_downgrade_and_update() -> None:
    tags = [_aged("old", 9), _aged("cur", 5), _aged("new", 1)]
    p = policy(select={"newest-build": {}})
    assert p.select(tags, current="cur", now=NOW).tag == "new"
    stale = p.select(tags[:2], current="cur", now=NOW)
    assert (stale.tag, stale.winner) == (None, "cur")
    assert [(e.tag, e.rule) for e in stale.excluded] == [("old", "downgrade")]


DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


@pytest.mark.parametrize(("current", "current_digest", "tag", "reason"), [
    ("latest", DIGEST_A, None, f"latest still points to {DIGEST_A}"),
    ("latest", DIGEST_B, "latest", f"latest points to {DIGEST_A}"),
    ("latest", None, "latest", f"latest points to {DIGEST_A}"),
    ("1.0", None, "latest", f"latest points to {DIGEST_A}"),
    (None, None, "latest", f"latest points to {DIGEST_A}"),
])
def test_digest_follows_one_tag(current: str | None, current_digest: str | None,
                                tag: str | None, reason: str) -> None:
    tags = [strategies.Candidate("latest", digest=DIGEST_A),
            strategies.Candidate("1.0", digest=DIGEST_B)]
    decision = policy(select={"digest": {"tag": "latest"}}).select(
        tags, current=current, current_digest=current_digest, now=NOW)
    assert (decision.tag, decision.reason, decision.digest) == (tag, reason, DIGEST_A)
    assert decision.winner == "latest"


@pytest.mark.parametrize(("tags", "reason"), [
    (["1.0"], "tag 'latest' not found"),
    (["latest"], "digest of latest unknown"),
])
def test_digest_missing(tags: list[str], reason: str) -> None:
    decision = policy(select={"digest": {"tag": "latest"}}).select(tags, now=NOW)
    assert (decision.tag, decision.reason) == (None, reason)


def test_digest_respects_min_age() -> None:
    young = _aged("stable", 0.5, digest=DIGEST_A)
    decision = policy(select={"digest": {"tag": "stable"}}, **{"min-age": "1h"}).select(
        [young], current="stable", current_digest=DIGEST_B, now=NOW)
    assert (decision.tag, decision.reason) == (
        None, "stable is not eligible: only 30m old (min-age 1h)")


@pytest.mark.parametrize(("tags", "reason"), [
    ([], "the image has no tags"),
    (["latest", "1.0.0-rc1", "x.sig"],
     "no tag qualifies (excluded: 1 signature, 1 not-a-version, 1 prerelease)"),
])
def test_nothing_qualifies(tags: list[str], reason: str) -> None:
    decision = policy().select(tags, now=NOW)
    assert (decision.tag, decision.winner, decision.reason) == (None, None, reason)


def test_reason_for_allowed_downgrade() -> None:
    decision = policy(**{"allow-downgrade": True}).select(["1.0.0"], current="2.0.0", now=NOW)
    assert decision.reason == ("1.0.0 is the highest version in '*' (current 2.0.0); a "
                               "downgrade, allowed by allow-downgrade")


def test_reason_when_equal_to_unlisted_current() -> None:
    decision = policy().select(["v1.2.3"], current="1.2.3", now=NOW)
    assert decision.reason == "v1.2.3 is the highest version in '*' and no newer than " \
                              "current 1.2.3"


def test_input_order_and_duplicates_do_not_matter() -> None:
    forward = policy().select(NGINX, current="1.25.3", now=NOW)
    backward = policy().select([*reversed(NGINX), *NGINX], current="1.25.3", now=NOW)
    assert forward == backward


@pytest.mark.parametrize(("fields", "needs"), [
    (semver(), frozenset()),
    ({"select": {"newest-build": {}}}, frozenset({"created"})),
    (semver(**{"min-age": "30m"}), frozenset({"created"})),
    (semver(**{"min-age": "0s"}), frozenset()),
    ({"select": {"digest": {"tag": "latest"}}}, frozenset({"digest"})),
    (semver(platforms=["linux/amd64"]), frozenset({"platforms"})),
    ({"select": {"newest-build": {}}, "platforms": ["linux/arm64/v8"]},
     frozenset({"created", "platforms"})),
])
def test_needs(fields: dict[str, Any], needs: frozenset[str]) -> None:
    assert policy(**fields).needs == needs


def test_worth_fetching_only_the_tags_the_policy_keeps() -> None:
    assert policy().worth_fetching(NGINX) == [
        "1", "1-alpine", "1.25.3", "1.25.3-alpine", "1.25.3-alpine3.19", "1.26.0",
        "1.26.0-alpine3.19", "1.27", "1.27-alpine", "1.27.0", "1.27.0-alpine",
        "1.27.0-alpine3.20", "1.27.0-slim"]
    assert policy(select={"digest": {"tag": "latest"}}).worth_fetching(NGINX) == ["latest"]
    assert policy(select={"numerical": {}}).worth_fetching(["1", "x"]) == ["1"]


# (fields, key, message) for specs that validate structurally but cannot work
INVALID: list[tuple[dict[str, Any], str, str]] = [
    (semver(">>1"), "spec.select.semver.range",
     "invalid semver range '>>1': '>1' is not a version (at character 2)"),
    (semver(filter={"pattern": "("}), "spec.filter.pattern",
     "invalid regular expression '(': missing ), unterminated subpattern at position 0"),
    (semver(filter={"extract": "$1"}), "spec.filter.extract",
     "extract needs a pattern to take groups from"),
    (semver(filter={"pattern": "(a)", "extract": "$2"}), "spec.filter.extract",
     "'$2' names no group of the pattern '(a)'"),
    (semver(filter={"pattern": "(?P<v>a)", "extract": "${w}"}), "spec.filter.extract",
     "'${w}' names no group of the pattern '(?P<v>a)'"),
    (semver(filter={"pattern": "(a)", "extract": "v1"}), "spec.filter.extract",
     "'v1' uses no group: write $1, $name or ${name}"),
    (semver(filter={"exclude": ["ok", "regex:["]}), "spec.filter.exclude[1]",
     "invalid regular expression 'regex:[': unterminated character set at position 0"),
    ({"select": {"numerical": {}}, "variant": "alpine"}, "spec.variant",
     "variant applies to the semver strategy only, not numerical"),
    ({"select": {"alphabetical": {}}, "precision": "any"}, "spec.precision",
     "precision applies to the semver strategy only, not alphabetical"),
    ({"select": {"newest-build": {}}, "max-bump": "minor"}, "spec.max-bump",
     "max-bump applies to the semver strategy only, not newest-build"),
    ({"select": {"digest": {"tag": "latest"}}, "filter": {"pattern": "x"}}, "spec.filter",
     "the digest strategy follows one tag; a filter has nothing to choose from"),
]


@pytest.mark.parametrize(("fields", "key", "message"), INVALID)
def test_invalid_specs_name_the_key(fields: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(strategies.InvalidSpec) as caught:
        policy(**fields)
    assert (caught.value.key, str(caught.value)) == (key, message)


@pytest.mark.parametrize(("template", "tag", "value"), [
    ("$1", "build-42", "42"), ("$name", "build-42", "42"), ("${name}", "build-42", "42"),
    ("${name}-x", "build-42", "42-x"), ("$$$1", "build-42", "$42"), ("$0", "build-42",
                                                                     "build-42"),
])
def test_extract_templates(template: str, tag: str, value: str) -> None:
    p = policy(select={"alphabetical": {}},
               filter={"pattern": r"build-(?P<name>\d+)", "extract": template})
    assert p.filter_value(tag) == value
