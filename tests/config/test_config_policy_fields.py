"""Policy spec fields of the policy stage (select, filter, variant, precision, safety rules):
kebab-case keys and breadcrumb errors that name the key (whole messages)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from image_bot import cli
from image_bot.config import durations, loading, models

HEAD = """\
apiVersion: image-bot/v1
kind: ImagePolicy
metadata: {name: web}
spec:
  image: ghcr.io/x/web
"""
WHERE = "==> File p.yaml ==> At ImagePolicy(name='web') ==> At key: "


def _errors(tmp_path: Path, spec: str) -> list[str]:
    (tmp_path / "p.yaml").write_text(HEAD + spec)
    return [str(e) for e in loading.load_policies(tmp_path).errors]


def test_every_field_in_kebab_case(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(HEAD + """\
  select: {numerical: {order: desc}}
  filter:
    pattern: '^build-(?P<n>\\d+)$'
    extract: '$n'
    exclude: ['*-debug', 'regex:^tmp-']
    include-signatures: true
  allow-downgrade: true
  min-age: 2h
  platforms: [linux/amd64, linux/arm64/v8]
""")
    policy_set = loading.load_policies(tmp_path)
    assert policy_set.errors == ()
    spec = policy_set.policies[0].policy.spec
    assert spec.select.strategy == "numerical"
    assert spec.select.numerical == models.OrderSelect(order="desc")
    assert spec.filter == models.Filter(pattern=r"^build-(?P<n>\d+)$", extract="$n",
                                        exclude=["*-debug", "regex:^tmp-"],
                                        include_signatures=True)
    assert (spec.allow_downgrade, spec.min_age, spec.platforms) == (
        True, "2h", ["linux/amd64", "linux/arm64/v8"])


@pytest.mark.parametrize(("spec", "message"), [
    ("  select: {semver: {range: '^1'}, numerical: {}}\n",
     "spec.select: choose exactly one strategy of semver, numerical, alphabetical, "
     "newest-build, digest (got semver and numerical)"),
    ("  select: {}\n",
     "spec.select: choose exactly one strategy of semver, numerical, alphabetical, "
     "newest-build, digest (got none)"),
    ("  select: {newest_build: {}, digest: {tag: latest}}\n",
     "spec.select: choose exactly one strategy of semver, numerical, alphabetical, "
     "newest-build, digest (got newest-build and digest)"),
    ("  select: {numerical: {order: up}}\n",
     "spec.select.numerical.order: Input should be 'asc' or 'desc'"),
    ("  select: {digest: {}}\n", "spec.select.digest.tag: Field required"),
    ("  select: {digest: {tag: 'no tag'}}\n",
     "spec.select.digest.tag: String should match pattern "
     "'^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'"),
    ("  select: {digest: {tag: 'v\u00e9'}}\n",  # tags are ASCII (OCI distribution spec)
     "spec.select.digest.tag: String should match pattern "
     "'^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'"),
    ("  select: {semver: {range: '^1'}}\n  filter: {patern: x}\n",
     "spec.filter.patern: unknown key; did you mean `pattern`?"),
    ("  select: {semver: {range: '^1'}}\n  min-age: 5 minutes\n",
     "spec.min-age: '5 minutes' is not a duration: write for example 90s, 15m, 2h or 7d"),
    ("  select: {semver: {range: '^1'}}\n  max-bump: huge\n",
     "spec.max-bump: Input should be 'major', 'minor' or 'patch'"),
    ("  select: {semver: {range: '^1'}}\n  precision: 5\n",
     "spec.precision: Input should be 'current', 'any', 1, 2, 3 or 4"),
    ("  select: {semver: {range: '^1'}}\n  platforms: [linux]\n",
     "spec.platforms: 'linux' is not OS/ARCH[/VARIANT] (for example linux/amd64 or "
     "linux/arm64/v8)"),
    ("  select: {semver: {range: '^1'}}\n  allow-downgrade: maybe\n",
     "spec.allow-downgrade: Input should be a valid boolean, unable to interpret input"),
])
def test_model_errors_are_breadcrumbs(tmp_path: Path, spec: str, message: str) -> None:
    assert _errors(tmp_path, spec) == [WHERE + message]


@pytest.mark.parametrize(("spec", "message"), [
    ("  select: {semver: {range: '^1'}}\n  filter: {pattern: '('}\n",
     "spec.filter.pattern: invalid regular expression '(': missing ), unterminated "
     "subpattern at position 0"),
    ("  select: {semver: {range: '^1'}}\n  filter: {pattern: '(a)', extract: '$2'}\n",
     "spec.filter.extract: '$2' names no group of the pattern '(a)'"),
    ("  select: {alphabetical: {}}\n  variant: alpine\n",
     "spec.variant: variant applies to the semver strategy only, not alphabetical"),
    ("  select: {semver: {range: '>=1 <<2'}}\n",
     "spec.select.semver.range: invalid semver range '>=1 <<2': '<2' is not a version "
     "(at character 6)"),
])
def test_validate_reports_policy_errors_with_the_key(tmp_path: Path, spec: str,
                                                     message: str) -> None:
    (tmp_path / "p.yaml").write_text(HEAD + spec)
    result = CliRunner().invoke(cli.main, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == WHERE + message


@pytest.mark.parametrize(("text", "seconds"), [
    ("0s", 0.0), ("90s", 90.0), ("15m", 900.0), ("1.5h", 5400.0), ("7d", 604800.0),
    ("250ms", 0.25), ("1m30s", 90.0), ("1h0m5s", 3605.0), ("0", 0.0),
])
def test_duration_seconds(text: str, seconds: float) -> None:
    assert durations.parse(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "", "5", "1.5", "m", "1x", "-1s", "1s 2m"])
def test_one_duration_grammar_refuses(text: str) -> None:
    with pytest.raises(durations.InvalidDuration,
                       match=f"{re.escape(repr(text))} is not a duration: write for example"):
        durations.parse(text)


@pytest.mark.parametrize(("publish", "key", "words"), [
    ("{schedule: ['after 25:00']}", "spec.publish.schedule", "25:00 is not a time of day"),
    ("{timezone: Mars/Olympus}", "spec.publish.timezone", "'Mars/Olympus' is not a known"),
    ("{rules: [{update: huge, mode: commit}]}", "spec.publish.rules[0].update[0]", "'major'"),
    ("{rules: [{update: patch, auto-merge: maybe}]}", "spec.publish.rules[0].auto-merge",
     "valid boolean"),
    ("{rules: [{update: patch, schedule: ['on funday']}]}",
     "spec.publish.rules[0].schedule", "'funday' is not weekdays")])
def test_publish_rules_and_schedules_name_the_key(tmp_path: Path, publish: str, key: str,
                                                  words: str) -> None:
    [error] = _errors(tmp_path, f"  select: {{semver: {{range: '^1'}}}}\n  publish: {publish}\n")
    assert error.startswith(WHERE + key), error
    assert words in error
