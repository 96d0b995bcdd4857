"""``yamlio.Constructor`` builds the data ruamel's ``SafeConstructor`` builds (and raises
what it raises), with either parser: over every document of the vendored corpus and the
YAML features it hands back to ruamel."""

from __future__ import annotations

import math
from typing import Any

import pytest
import ruamel.yaml
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.resolver import VersionedResolver

import testing
from conftest import CORPUS
from image_bot.config import yamlio

PARSERS = [False, True] if getattr(ruamel.yaml.main, "CParser", None) else [True]

TRICKY = {
    "aliases": "base: &b {a: 1}\none: *b\ntwo: *b\n",
    "merge key": "base: &b {a: 1, b: 2}\nthis:\n  <<: *b\n  b: 3\n",
    "merge list": "x: &x {a: 1}\ny: &y {b: 2}\nz:\n  <<: [*x, *y]\n  c: 3\n",
    "duplicate key": "a: 1\nb: 2\na: 3\n",
    "one and true are one key": "1: a\ntrue: b\n",
    "value key": "=: the value\nother: 1\n",
    "timestamp": "when: 2026-12-01T10:00:00Z\nday: 2026-12-01\n",
    "binary": "data: !!binary aGVsbG8=\n",
    "set": "s: !!set {a, b}\n",
    "omap": "o: !!omap [a: 1, b: 2]\n",
    "sequence key": "? [a, b]\n: pair\n",
    "mapping key": "? {a: 1}\n: pair\n",
    "null key": "~: nothing\nnull: again\n",
    "numbers": "i: 0x1F\no: 0o17\nf: 1.5e3\nn: .nan\ninf: -.inf\nu: 1_000\nz: 0\n",
    "yaml 1.1": "%YAML 1.1\n---\non: yes\noctal: 017\nsexa: 1:30\nf: 1e3\n",
    "explicit tags": "a: !!str 12\nb: !!int '7'\nc: !!float '2'\nd: !!null ''\n",
    "unknown tag": "a: !custom thing\n",
    "bool words": "a: true\nb: False\nc: yes\n",
    "str tag on a mapping": "a: !!str {b: 1}\n",
    "deep": "a: " + "[" * 300 + "]" * 300 + "\n",
    "several documents": "a: 1\n---\n- x\n- {y: [1, 2.5, null, true]}\n---\n",
    "empty": "",
    "recursive": "a: &a [*a]\n",
}


def _load(text: str, *, pure: bool, ours: bool) -> tuple[str, Any]:
    yaml = (yamlio.YAML if ours else ruamel.yaml.YAML)(typ="safe", pure=pure)
    try:
        return "data", list(yaml.load_all(text))
    except Exception as exc:  # the errors must be the same too
        return "error", (type(exc).__name__, str(exc))


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN and a recursive structure compared by its shape."""
    try:
        if a == b:
            return True
    except RecursionError:
        pass
    if isinstance(a, float) and isinstance(b, float):
        return math.isnan(a) and math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(x is a or _same(x, y) for x, y in zip(a, b,
                                                                            strict=True))
    return repr(a) == repr(b)


def _compare(text: str, pure: bool) -> None:
    theirs, ours = (_load(text, pure=pure, ours=o) for o in (False, True))
    assert theirs[0] == ours[0], (theirs, ours)
    assert _same(theirs[1], ours[1]), (theirs, ours)


@pytest.mark.parametrize("pure", PARSERS)
def test_every_corpus_document_is_built_as_ruamel_builds_it(pure: bool) -> None:
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert len(files) > 50, f"corpus missing at {CORPUS}"
    for path in files:
        _compare(path.read_text(encoding="utf-8"), pure)


@pytest.mark.parametrize("pure", PARSERS)
@pytest.mark.parametrize("name", sorted(TRICKY))
def test_what_ruamel_builds_itself_comes_out_the_same(name: str, pure: bool) -> None:
    _compare(TRICKY[name], pure)


@pytest.mark.parametrize("pure", PARSERS)
def test_plain_manifests_never_reach_ruamels_constructor(
        pure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Argo CD's HA install (60 documents: CRDs, RBAC, Deployments) and a Pod with every
    # scalar type the fast path builds
    documents = [(CORPUS / "argoproj__argo-cd/manifests/ha/namespace-install.yaml").read_text(
        encoding="utf-8"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x, labels: {a: 'b'}}\nspec:\n"
        "  replicas: 3\n  containers:\n  - {name: c, image: 'reg/app:1.0', "
        "args: [--x, '1'], enabled: true, ratio: 0.5, none: null}\n"]
    calls = testing.recorded(monkeypatch, SafeConstructor, "construct_document")
    built = [list(yamlio.YAML(typ="safe", pure=pure).load_all(d)) for d in documents]
    assert len(built[0]) > 50 and built[1][0]["spec"]["replicas"] == 3
    assert calls == []
    for name in ("merge key", "aliases"):
        list(yamlio.YAML(typ="safe", pure=pure).load_all(TRICKY[name]))
    # merge keys, and nodes aliases share (ruamel builds them once: "billion laughs"
    # expand to a few objects, not to billions), go to ruamel's own constructor
    assert len(calls) == 2


@pytest.mark.parametrize("pure", PARSERS)
def test_the_resolvers_table_of_a_yaml_version_is_built_once_for_every_text(
        pure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """ruamel builds its table of implicit resolvers per resolver, and with libyaml each
    text read has a resolver of its own; here each version's table is built once."""
    built: list[Any] = []
    add = VersionedResolver.add_version_implicit_resolver

    def counting(self: VersionedResolver, version: Any, *args: Any) -> None:
        built.append(version)
        add(self, version, *args)

    monkeypatch.setattr(VersionedResolver, "add_version_implicit_resolver", counting)
    monkeypatch.setattr(yamlio, "_TABLES", {})
    monkeypatch.setattr(yamlio, "_PLAIN_TAGS", {})  # every scalar new: each text resolves
    def read(i: int) -> list[Any]:
        return list(yamlio.YAML(typ="safe", pure=pure).load_all(f"a{i}: yes\nb{i}: {i}.5\n"))

    first = read(0)
    once = len(built)
    others = [read(i) for i in range(1, 20)]
    old = list(yamlio.YAML(typ="safe", pure=pure).load_all("%YAML 1.1\n---\nc: yes\n"))

    assert [first, *others] == [[{f"a{i}": "yes", f"b{i}": i + 0.5}] for i in range(20)]
    assert once > 0 and set(built[:once]) == {(1, 2)}  # one table, once
    assert len(built) == once or not set(built[once:]) & {(1, 2)}  # not for the others
    if pure:  # the directive's version: its own table, once
        assert old == [{"c": True}]
        assert built[once:] and set(built[once:]) == {(1, 1)}
    else:  # libyaml reports no directive: the table already built
        assert old == [{"c": "yes"}]
        assert len(built) == once
