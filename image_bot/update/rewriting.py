"""Splice new values into file text at the exact span of each scalar, then verify by
re-parsing that the edited values read as intended and nothing else changed.

A file is either fully edited and verified, or left untouched and reported. Files are
replaced atomically (temporary file + rename), so a crash never leaves half an edit.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from image_bot.update.result import Change, Skipped, UpdateResult
from image_bot.update.scanning import Reference

_BOM = "\ufeff"

@dataclass(frozen=True, slots=True)
class Edit:
    """Write ``new_value`` in place of ``reference`` (on behalf of ``policy``)."""

    reference: Reference
    new_value: str
    new_tag: str
    policy: str

class UnsafeEdit(Exception):
    """This file cannot be edited safely; the message says why."""

def apply(root: Path, edits: Sequence[Edit], *, write: bool = True) -> UpdateResult:
    """Apply ``edits`` under ``root``; each file is edited completely or not at all."""
    by_file: dict[str, list[Edit]] = {}
    for edit in edits:
        by_file.setdefault(edit.reference.file, []).append(edit)
    result = UpdateResult()
    for file, file_edits in sorted(by_file.items()):
        result = result.merged(_apply_file(root, file, file_edits, write=write))
    return result

def _apply_file(root: Path, file: str, edits: list[Edit], *, write: bool) -> UpdateResult:
    path = root / file
    data = path.read_bytes()
    original = data.decode("utf-8")
    bom = _BOM if original.startswith(_BOM) else ""
    text = original.removeprefix(bom)
    try:
        new_text = splice(text, edits)
        verify(text, new_text, edits)
    except UnsafeEdit as exc:
        return UpdateResult(skipped=(Skipped(file, str(exc)),))
    if new_text == text:
        return UpdateResult()
    if write:
        _replace_atomically(path, (bom + new_text).encode("utf-8"))
    changes = tuple(_change(edit) for edit in sorted(edits, key=lambda e: e.reference.start))
    diff = "".join(difflib.unified_diff(
        text.splitlines(keepends=True), new_text.splitlines(keepends=True),
        fromfile=f"a/{file}", tofile=f"b/{file}"))
    return UpdateResult(changes=changes, diffs={file: diff})

def splice(text: str, edits: Sequence[Edit]) -> str:
    """Replace each reference's span with its new value, keeping the quote style."""
    unique: dict[tuple[int, int], Edit] = {}
    for edit in edits:
        span = (edit.reference.start, edit.reference.end)
        if span in unique and unique[span].new_value != edit.new_value:
            raise UnsafeEdit(f"line {edit.reference.line}: policies {unique[span].policy!r} and "
                          f"{edit.policy!r} want different values")
        unique[span] = edit
    for (start, end), edit in sorted(unique.items(), reverse=True):
        ref = edit.reference
        quote = ref.style
        if text[start:end] != f"{quote}{ref.value}{quote}":
            raise UnsafeEdit(f"line {ref.line}: the value is written with escapes or across "
                          f"lines; not edited")
        text = f"{text[:start]}{quote}{edit.new_value}{quote}{text[end:]}"
    return text

def verify(old_text: str, new_text: str, edits: Sequence[Edit]) -> None:
    """The new text must parse to the old documents with exactly the edited values changed."""
    try:
        expected = _load(old_text)
    except YAMLError as exc:  # e.g. duplicate keys: valid to compose, ambiguous to edit
        raise UnsafeEdit(f"the file is ambiguous YAML ({_first_line(exc)}); not edited") from None
    for edit in edits:
        _set(expected, edit.reference.path, edit.new_value)
    try:
        actual = _load(new_text)
    except YAMLError as exc:
        raise UnsafeEdit(f"the edited file would not parse ({type(exc).__name__}); "
                      f"not edited") from None
    if actual != expected:
        raise UnsafeEdit("re-reading the edited file gave different values than intended; "
                      "not edited")

def _first_line(exc: YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc)
    return problem.strip().splitlines()[0]


def _load(text: str) -> list[Any]:
    return list(YAML(typ="safe", pure=True).load_all(text))

def _set(documents: list[Any], path: tuple[int | str, ...], value: str) -> None:
    node: Any = documents
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value

def _change(edit: Edit) -> Change:
    ref = edit.reference
    return Change(file=ref.file, line=ref.line, image=ref.ref.name, old=ref.value,
                  new=edit.new_value, old_tag=ref.ref.tag, new_tag=edit.new_tag,
                  policy=edit.policy)

def _replace_atomically(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

