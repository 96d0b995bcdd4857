"""Stages in the policy files: promote chains, cycles as errors naming the chain, and a
promote without a strategy inheriting its upstream's."""

from __future__ import annotations

from pathlib import Path

from image_bot.config import loading
from image_bot.policy import strategies
from testing import policy

IMAGE = "registry.test/team/web"


def _load(tmp_path: Path, *documents: str) -> loading.PolicySet:
    (tmp_path / "stages.yaml").write_text("---\n".join(documents))
    return loading.load_policies(tmp_path)


def test_a_chain_loads_and_a_bare_promote_takes_its_upstreams_strategy(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        policy("dev", IMAGE, select={"semver": {"range": ">=1.0.0 <3"}},
               filter={"exclude": ["^1\\.9"]}),
        policy("staging", IMAGE, select={"promote": {"from": "dev", "healthy-for": "10m"}}),
        policy("prod", IMAGE, select={"promote": {"from": "staging", "healthy-for": "1h"},
                                      "semver": {"range": "^2"}}))
    assert loaded.errors == ()
    by = {p.policy.name: p.policy.spec for p in loaded.policies}
    assert by["staging"].select.semver is not None
    assert by["staging"].select.semver.range == ">=1.0.0 <3"
    assert by["staging"].filter.exclude == ["^1\\.9"]
    assert by["staging"].select.promote is not None
    assert by["staging"].select.promote.healthy_for == "10m"
    assert by["prod"].select.semver is not None and by["prod"].select.semver.range == "^2"
    # the inherited strategy builds and ranks like the upstream's
    built = strategies.build_document(next(p for p in loaded.policies
                                           if p.policy.name == "staging"))
    assert built.select(["1.2.0", "1.9.0", "2.0.0", "3.0.0"], current="1.0.0").tag == "2.0.0"


def test_a_cycle_fails_every_policy_on_it_naming_the_chain(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        policy("a", IMAGE, select={"promote": {"from": "c"}, "semver": {"range": "*"}}),
        policy("b", IMAGE, select={"promote": {"from": "a"}, "semver": {"range": "*"}}),
        policy("c", IMAGE, select={"promote": {"from": "b"}, "semver": {"range": "*"}}),
        policy("self", IMAGE, select={"promote": {"from": "self"}, "semver": {"range": "*"}}),
        policy("ok", IMAGE))
    assert [p.policy.name for p in loaded.policies] == ["ok"]
    assert sorted(str(e) for e in loaded.errors) == [
        "==> File stages.yaml ==> At ImagePolicy(name='a') ==> At key: spec.select.promote.from:"
        " promotion cycle a → c → b → a; a stage cannot promote from itself or its downstream",
        "==> File stages.yaml ==> At ImagePolicy(name='b') ==> At key: spec.select.promote.from:"
        " promotion cycle b → a → c → b; a stage cannot promote from itself or its downstream",
        "==> File stages.yaml ==> At ImagePolicy(name='c') ==> At key: spec.select.promote.from:"
        " promotion cycle c → b → a → c; a stage cannot promote from itself or its downstream",
        "==> File stages.yaml ==> At ImagePolicy(name='self') ==> At key: "
        "spec.select.promote.from: promotion cycle self → self; a stage cannot promote from "
        "itself or its downstream",
    ]


def test_a_bare_promote_from_elsewhere_must_name_a_strategy(tmp_path: Path) -> None:
    loaded = _load(tmp_path, policy("prod", IMAGE, select={"promote": {"from": "staging"}}),
                   policy("prod-pinned", IMAGE, select={"promote": {"from": "staging"},
                                                        "semver": {"range": "^1"}}))
    assert [p.policy.name for p in loaded.policies] == ["prod-pinned"]
    assert [str(e) for e in loaded.errors] == [
        "==> File stages.yaml ==> At ImagePolicy(name='prod') ==> At key: spec.select: promote "
        "from 'staging' without a strategy needs the upstream policy in this repository's "
        "policies; name a strategy (semver, numerical, alphabetical or newest-build) next to "
        "promote"]


def test_promote_keys_are_validated(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        policy("a", IMAGE, select={"promote": {"from": "x", "healthy-for": "soon"},
                                   "semver": {"range": "*"}}),
        policy("b", IMAGE, select={"promote": {"from": "x"}, "digest": {"tag": "latest"}}),
        policy("c", IMAGE, select={"promote": {"form": "x"}, "semver": {"range": "*"}}))
    errors = [str(e) for e in loaded.errors]
    assert len(errors) == 3 and not loaded.policies
    assert "At key: spec.select.promote.healthy-for" in errors[0]
    assert "promote cannot follow a digest" in errors[1]
    assert "spec.select.promote.form: unknown key; did you mean `from`?" in errors[2]
