"""The writer's check of an edit in a file of several documents reads only the edited
documents again, and still refuses every edit that would change anything else."""

from __future__ import annotations

from typing import Any

import pytest
from ruamel.yaml.error import YAMLError

import testing
from conftest import CORPUS
from image_bot import refs
from image_bot.update import detecting, rewriting, scanning, yamlgraph

APP = refs.parse("ghcr.io/team/app")
MANIFESTS = """\
# three documents; the second runs the app
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Pod
metadata: {name: app}
spec:
  containers:
    - name: app
      image: ghcr.io/team/app:1.0.0   # the one to edit
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: "fast"}
"""


def _write(text: str, written: str | None = None, value: str = "ghcr.io/team/app:2.0.0",
           ) -> list[rewriting._Write]:
    """The write to the app's image (``written``: the text put there, if not the writer's)."""
    references = list(scanning.references_in(text, APP, "f.yaml"))
    assert len(references) == 1, references
    writes = rewriting.plan(text, [rewriting.Edit(references[0], "2.0.0", "p")])
    assert [w.value for w in writes] == [value]
    if written is None:
        return writes
    return [rewriting._Write(w.edit, w.field, w.value, written) for w in writes]


def _splice_and_verify(text: str, writes: list[rewriting._Write]) -> str:
    new_text = rewriting.splice(text, writes)
    rewriting.verify(text, new_text, writes)
    return new_text


@pytest.fixture(params=yamlgraph.PARSERS)
def parser(request: pytest.FixtureRequest) -> Any:
    before = yamlgraph.parser()
    yamlgraph.use_parser(request.param)
    yield request.param
    yamlgraph.use_parser(before)


def _recording(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """The texts composed, and those read again whole."""
    return (testing.recorded(monkeypatch, yamlgraph, "compose_all"),
            testing.recorded(monkeypatch, rewriting, "_load"))


def test_only_the_edited_document_is_read_again(parser: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    yamlgraph.trees(MANIFESTS)  # the scan's parse, which the check reuses
    composed, whole = _recording(monkeypatch)
    new_text = _splice_and_verify(MANIFESTS, _write(MANIFESTS))
    assert "ghcr.io/team/app:2.0.0" in new_text
    assert whole == []  # the file was not read again as a whole
    assert len(composed) == 1
    assert composed[0].startswith("apiVersion: v1\nkind: Pod\n")
    assert "Namespace" not in composed[0] and "ConfigMap" not in composed[0]


@pytest.mark.parametrize(("written", "why"), [
    ("'ghcr.io/team/app:2.0.0", "would not parse"),  # an open quote
    ('"ghcr.io/team/app:2.0.0', "would not parse"),  # swallows the next document
    ("ghcr.io/team/app:2.0.0\n---\nextra: document", "different values"),
    ("ghcr.io/team/app:2.0.1", "different values"),  # not the value intended
    ("ghcr.io/team/app:2.0.0\n      name: other", "would not parse"),  # a repeated key
    ("[ghcr.io/team/app:2.0.0]", "different values"),  # a list, not the string
])
def test_a_wrong_write_is_refused_in_a_file_of_several_documents(
        parser: str, written: str, why: str) -> None:
    with pytest.raises(rewriting.UnsafeEdit, match=why):
        _splice_and_verify(MANIFESTS, _write(MANIFESTS, written))


def test_with_a_directive_the_whole_file_is_read_again(parser: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``%YAML``/``%TAG`` lines change how a document reads: it is never read alone."""
    text = "%YAML 1.2\n---\n" + MANIFESTS
    _, whole = _recording(monkeypatch)
    _splice_and_verify(text, _write(text))
    assert len(whole) == 1


def test_one_document_is_read_again_whole(parser: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    text = MANIFESTS.split("---\n")[1]
    _, whole = _recording(monkeypatch)
    _splice_and_verify(text, _write(text))
    assert len(whole) == 1


def test_corpus_documents_read_alone_as_in_the_whole_file(parser: str) -> None:
    """For every real-world file of several documents and every reference in it: the
    edited document read alone gives what the whole edited file gives (``_reread``'s
    soundness, on real layouts: comments, document ends, anchors, flow roots)."""
    checked = 0
    for source in sorted(CORPUS.rglob("*.y*ml")):
        text = scanning.read_text(source)
        try:
            if text is None or len(yamlgraph.trees(text)) < 2:
                continue
        except YAMLError:
            continue
        images = {draft.named for tree in yamlgraph.trees(text) if tree is not None
                  for draft in detecting.detections(tree) if draft.named is not None}
        for image in sorted(images, key=str):
            for reference in scanning.references_in(text, image, source.name):
                if reference.problem:
                    continue
                edit = rewriting.Edit(reference, "9.9.9", "p", digest=(
                    "sha256:" + "d" * 64 if rewriting.needs_digest(reference) else None))
                try:
                    writes = rewriting.plan(text, [edit])
                except rewriting.UnsafeEdit:
                    continue
                new_text = rewriting.splice(text, writes)
                expected = yamlgraph.load_documents(text)
                for w in writes:
                    for path in w.field.paths:
                        rewriting._set(expected, path, w.value)
                assert rewriting._reread(text, new_text, writes, expected) == \
                    yamlgraph.load_all(new_text), (source, reference.line)
                checked += 1
    assert checked > 120, checked  # 141 references in 2026-12
