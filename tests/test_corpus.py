"""The vendored real-world YAML corpus is complete and byte-exact (no ../shared at test time)."""

from __future__ import annotations

import json

from conftest import CORPUS, ROOT


def test_the_corpus_is_vendored_inside_the_repository() -> None:
    assert CORPUS.is_dir(), f"corpus missing at {CORPUS}"
    assert ROOT in CORPUS.resolve().parents


def test_every_indexed_file_is_present_with_its_line_endings() -> None:
    """index.json lists each file and whether it uses CRLF: a checkout that converted line
    endings (or dropped a file, e.g. through .gitignore) fails here, not deep in a test."""
    index = json.loads((CORPUS / "index.json").read_text())
    on_disk = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*")
               if p.suffix in (".yaml", ".yml")}
    assert on_disk == {entry["path"] for entry in index}
    for entry in index:
        data = (CORPUS / entry["path"]).read_bytes()
        assert (b"\r\n" in data) == entry["crlf"], entry["path"]
        if entry["crlf"]:
            assert data.count(b"\n") == data.count(b"\r\n"), entry["path"]


def test_every_source_repository_has_its_licence_text() -> None:
    sources = (CORPUS / "SOURCES.md").read_text()
    licences = {p.name for p in (CORPUS / "LICENSES").iterdir()}
    assert licences == {"Apache-2.0.txt", "CC0-1.0.txt", "WTFPL-onedr0p__home-ops.txt"}
    for owner_repo in sorted(p.name for p in CORPUS.iterdir() if p.is_dir() and "__" in p.name):
        assert owner_repo.replace("__", "/") in sources, owner_repo
