"""The C (libyaml) and pure Python YAML parsers give the scanner and the writer identical
references and identical edits: over the vendored real-world corpus and the golden cases.
And the type of a plain scalar is ruamel's resolver's, for YAML 1.1 and 1.2."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver
from test_update import DIGEST, _corpus_files, _references

from conftest import CORPUS
from image_bot import refs
from image_bot.update import rewriting, scanning, yamlgraph

needs_c = pytest.mark.skipif("c" not in yamlgraph.PARSERS,
                             reason="ruamel.yaml.clib is not installed")


@pytest.fixture
def restore_parser() -> Iterator[None]:
    before = yamlgraph.parser()
    yield
    yamlgraph.use_parser(before)


def _outcome(text: str, name: str, image: refs.ImageRef | None = None) -> tuple[Any, ...]:
    """Everything the bot takes from a file: its references (to ``image``, or to every image
    it seems to name) and the edit of all of them."""
    try:
        references = (_references(text, name) if image is None
                      else list(scanning.references_in(text, image, name)))
    except YAMLError as exc:
        return ("unparsable", yamlgraph.problem(exc))
    editable = [r for r in references if not r.problem]
    edits = [rewriting.Edit(r, "9.9.9", "p", digest=DIGEST if rewriting.needs_digest(r)
                            else None) for r in editable]
    try:
        writes = rewriting.plan(text, edits)
        new_text = rewriting.splice(text, writes)
        rewriting.verify(text, new_text, writes)
    except rewriting.UnsafeEdit as exc:
        return (references, "refused", str(exc))
    return (references, new_text, [rewriting._change(w) for w in writes])


@needs_c
@pytest.mark.usefixtures("restore_parser")
def test_the_corpus_reads_and_edits_the_same_with_either_parser() -> None:
    files = _corpus_files()
    assert len(files) > 50, f"corpus missing at {CORPUS}"
    compared = 0
    for source in files:
        text = scanning.read_text(source)
        assert text is not None
        outcomes = []
        for parser in ("c", "pure"):
            yamlgraph.use_parser(parser)
            outcomes.append(_outcome(text, source.name))
        assert outcomes[0] == outcomes[1], source.relative_to(CORPUS)
        compared += outcomes[0][0] != "unparsable"
    assert compared > 400


@needs_c
@pytest.mark.usefixtures("restore_parser")
@pytest.mark.parametrize("text", [
    "image: &img nginx:1.0\nb:\n  image: *img\n",  # an anchored value, aliased
    "x: &m {image: nginx:1.0}\ny:\n  <<: *m\n",  # an anchored mapping, merged
    "image: !!str &i nginx:1.0\n",  # properties before the value
    "image: nginx\ntag:\n",  # an empty value: written after the colon
    "z: {image: nginx:1.0}\n",  # libyaml refuses ":" in a flow scalar
])
def test_anchors_styles_and_empty_values_read_the_same(text: str) -> None:
    outcomes = []
    for parser in ("c", "pure"):
        yamlgraph.use_parser(parser)
        outcomes.append(_outcome(text, "f.yaml", refs.parse("nginx")))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0], "expected a reference"


def test_an_unknown_parser_is_refused() -> None:
    with pytest.raises(ValueError, match="not available"):
        yamlgraph.use_parser("fast")


@pytest.mark.usefixtures("restore_parser")
def test_memoised_plain_tags_follow_the_yaml_version_of_each_text() -> None:
    # the resolver remembers each plain scalar's tag by YAML version and text: a 1.1
    # document read between two 1.2 ones keeps its own booleans, and nothing leaks back
    yamlgraph.use_parser("pure")  # libyaml's composer reads every document as 1.2
    tags = []
    for text in ("key: yes\n", "%YAML 1.1\n---\nkey: yes\n", "key: yes\n"):
        (document,) = yamlgraph.compose_all(text)
        tags.append(str(document.value[0][1].tag))
    assert tags == [yamlgraph.STR, "tag:yaml.org,2002:bool", yamlgraph.STR]


_PLAIN_TRICKY = ["", "1.0", "1.10", "yes", "No", "ON", "off", "y", "~", "null", "0o17", "017",
                 "0x1F", "1_000", "190:20:30", "1e3", ".inf", "-.Inf", ".NaN", "true", "True",
                 "2024-01-01", "2001-12-14t21:59:43.10-05:00", "<<", "=", "+1", "-0", "0b101",
                 "3.", ".5", "nginx:1.25", "ghcr.io/team/app:1.0.0@sha256:" + "d" * 64,
                 "v1.2.3", "latest", "1.0.0-rc.1"]


def _fresh_resolver_tag(value: str) -> str:
    """ruamel's own answer, from fresh resolvers (its ``resolve`` grows its rule lists)."""
    tags = {str(VersionedResolver(version=version).resolve(ScalarNode, value, (True, False)))
            for version in ((1, 1), (1, 2))}
    return yamlgraph.STR if tags == {yamlgraph.STR} else min(tags - {yamlgraph.STR})


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.sampled_from(_PLAIN_TRICKY),
                 st.text(alphabet="0123456789.:+-_eExXoObB~yYnNtTrRuUlLfFaAsS ", max_size=12),
                 st.text(max_size=8)))
def test_the_type_of_a_plain_scalar_is_ruamels_for_yaml_1_1_and_1_2(value: str) -> None:
    yamlgraph.plain_tag.cache_clear()
    assert yamlgraph.plain_tag(value) == _fresh_resolver_tag(value)
    assert yamlgraph.plain_tag(value) == _fresh_resolver_tag(value)  # and again, memoised
