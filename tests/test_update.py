"""The writer: byte-exact splices, verification, and real-world YAML from the corpus."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from ruamel.yaml.error import YAMLError

from conftest import CORPUS
from image_bot import refs
from image_bot.update import rewriting, scanning

APP = refs.parse("ghcr.io/team/app")


def _edit_all(root: Path, tag: str, image: refs.ImageRef = APP) -> rewriting.UpdateResult:
    scan = scanning.find(root, image, ["**"])
    edits = [rewriting.Edit(r, refs.replace_tag(r.value, tag), tag, "p")
             for r in scan.references]
    return rewriting.apply(root, edits)


@pytest.mark.parametrize("style", ["{v}", "'{v}'", '"{v}"'])
def test_quote_style_and_comments_are_kept(tmp_path: Path, style: str) -> None:
    value = style.format(v="ghcr.io/team/app:1.0.0")
    text = f"# top\nspec:\n  containers:\n    - image: {value}  # pinned\n      name: a\n"
    (tmp_path / "d.yaml").write_text(text)

    result = _edit_all(tmp_path, "1.1.0")

    assert (tmp_path / "d.yaml").read_text() == text.replace("1.0.0", "1.1.0")
    assert [(c.file, c.line, c.old_tag, c.new_tag) for c in result.changes] == [
        ("d.yaml", 4, "1.0.0", "1.1.0")]


def test_other_images_and_look_alikes_are_untouched(tmp_path: Path) -> None:
    text = ("image: ghcr.io/team/app-extra:1.0.0\nx:\n  image: ghcr.io/other/app:1.0.0\n"
            "y: ghcr.io/team/app:1.0.0\nz: {image: ghcr.io/team/app:1.0.0}\n")
    (tmp_path / "d.yaml").write_text(text)

    _edit_all(tmp_path, "2.0.0")

    assert (tmp_path / "d.yaml").read_text() == text.replace(
        "z: {image: ghcr.io/team/app:1.0.0}", "z: {image: ghcr.io/team/app:2.0.0}")


def test_escaped_value_is_reported_and_file_untouched(tmp_path: Path) -> None:
    text = 'image: "ghcr.io/team/app:1.0\\x2E0"\n'
    (tmp_path / "d.yaml").write_text(text)

    result = _edit_all(tmp_path, "2.0.0")

    assert not result.changes
    assert [(s.file, s.reason) for s in result.skipped] == [
        ("d.yaml", "line 1: the value is written with escapes or across lines; not edited")]
    assert (tmp_path / "d.yaml").read_text() == text


def test_unparsable_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("a:\n  image: ghcr.io/team/app:1\n b: [\n")
    scan = scanning.find(tmp_path, APP, ["**"])
    assert scan.references == ()
    assert [s.file for s in scan.skipped] == ["t.yaml"]
    assert scan.skipped[0].reason.startswith("does not parse as YAML")


def test_paths_limit_where_references_are_found(tmp_path: Path) -> None:
    for folder in ("apps/a", "apps/b", "other"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "d.yaml").write_text("image: ghcr.io/team/app:1\n")
    scan = scanning.find(tmp_path, APP, ["apps/a/**", "other"])
    assert sorted(r.file for r in scan.references) == ["apps/a/d.yaml", "other/d.yaml"]


def _corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml"))


_IMAGE_LINE = re.compile(r"""image:\s*["']?([\w./:@-]+)""")


def test_corpus_every_image_edit_verifies_and_touches_only_the_value() -> None:
    """Rewrite every ``image:`` reference in the real-world corpus to a new tag."""
    files = _corpus_files()
    assert len(files) > 50, f"corpus missing at {CORPUS}"
    edited = 0
    refused: list[str] = []
    for source in files:
        text = scanning.read_text(source)
        assert text is not None
        images = set()
        for match in _IMAGE_LINE.finditer(text):
            with contextlib.suppress(refs.InvalidReference):
                images.add(refs.parse(match[1]).with_tag(None))
        for image in sorted(images, key=str):
            try:
                found = list(scanning.references_in(text, image, source.name))
            except YAMLError:
                continue  # Helm templates and the like: the scanner reports them as skipped
            edits = [rewriting.Edit(r, refs.replace_tag(r.value, "9.9.9"), "9.9.9", "p")
                     for r in found if "\\" not in text[r.start:r.end]]
            new_text = rewriting.splice(text, edits)
            try:
                rewriting.verify(text, new_text, edits)  # raises if anything else changed
            except rewriting.UnsafeEdit as exc:
                refused.append(f"{source.relative_to(CORPUS)}: {exc}")
                continue
            old_lines, new_lines = text.splitlines(), new_text.splitlines()
            assert len(old_lines) == len(new_lines)
            changed = {i + 1 for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True))
                       if a != b}
            assert changed <= {e.reference.line for e in edits}, source
            edited += len(edits)
    assert edited > 100
    # the only refusals are files whose keys repeat (ambiguous to re-read, so never edited)
    assert refused, "expected the corpus file with duplicate keys to be refused"
    assert all("found duplicate key" in reason for reason in refused), refused
