"""Find references to an image in YAML files: every ``image:`` key whose string value names
it, in every document of every file under the policy's paths (pure reading; no writes).

Each reference records the exact character span of its scalar in the decoded text, so the
writer can splice without re-dumping, and the key path, so the writer can verify its edit.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from image_bot import refs
from image_bot.update.result import Skipped

_YAML_SUFFIXES = (".yaml", ".yml")
_IMAGE_KEYS = frozenset({"image"})
KeyPath = tuple[int | str, ...]  # (document index, key or list index, ...)


@dataclass(frozen=True, slots=True)
class Reference:
    """One scalar naming the image, with the span of its source text."""

    file: str
    line: int  # 1-based
    start: int  # character offsets into the decoded text (without a BOM)
    end: int
    style: str  # "" (plain), "'" or '"'
    value: str
    ref: refs.ImageRef
    path: KeyPath


@dataclass(frozen=True, slots=True)
class Scan:
    references: tuple[Reference, ...]
    skipped: tuple[Skipped, ...]


def candidate_files(root: Path, patterns: Sequence[str]) -> list[Path]:
    """YAML files under ``root`` matching any glob in ``patterns`` (``**`` spans folders)."""
    files = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in _YAML_SUFFIXES or ".git" in path.relative_to(root).parts:
            continue
        relative = path.relative_to(root).as_posix()
        if any(_matches(relative, pattern) for pattern in patterns) and path.is_file():
            files.append(path)
    return files


def _matches(relative: str, pattern: str) -> bool:
    pattern = pattern.strip("/")
    if fnmatch.fnmatchcase(relative, pattern):
        return True
    if pattern.endswith("/**") or pattern.endswith("/"):
        return relative.startswith(pattern.rstrip("*").rstrip("/") + "/")
    return relative.startswith(pattern + "/")  # a plain directory name covers what is inside


def find(root: Path, image: refs.ImageRef, patterns: Sequence[str]) -> Scan:
    """All references to ``image`` in YAML files under ``root`` matching ``patterns``."""
    needle = image.repository.removeprefix("library/")
    found: list[Reference] = []
    skipped: list[Skipped] = []
    for path in candidate_files(root, patterns):
        relative = path.relative_to(root).as_posix()
        text = read_text(path)
        if text is None:
            skipped.append(Skipped(relative, "not UTF-8 text"))
            continue
        if needle not in text:
            continue  # cheap filter: most files never need parsing
        try:
            found.extend(references_in(text, image, relative))
        except YAMLError as exc:
            skipped.append(Skipped(relative, f"does not parse as YAML: {_problem(exc)}"))
    return Scan(tuple(found), tuple(skipped))


def read_text(path: Path) -> str | None:
    """The file as text with any BOM removed (the writer puts it back), or None."""
    try:
        return path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None


def references_in(text: str, image: refs.ImageRef, file: str) -> Iterator[Reference]:
    for index, document in enumerate(compose_all(text)):
        if document is not None:
            for path, node in _image_scalars(document, (index,)):
                ref = _as_ref(node.value)
                if ref and ref.same_image(image):
                    yield Reference(
                        file=file, line=node.start_mark.line + 1,
                        start=node.start_mark.index, end=node.end_mark.index,
                        style=node.style or "", value=node.value, ref=ref, path=path,
                    )


def compose_all(text: str) -> list[Node | None]:
    return list(YAML(typ="safe", pure=True).compose_all(text))


def _image_scalars(node: Node, path: KeyPath) -> Iterator[tuple[KeyPath, ScalarNode]]:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                continue
            here = (*path, key.value)
            if key.value in _IMAGE_KEYS and isinstance(value, ScalarNode):
                yield here, value
            else:
                yield from _image_scalars(value, here)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield from _image_scalars(item, (*path, i))


def _as_ref(value: object) -> refs.ImageRef | None:
    if not isinstance(value, str):
        return None
    try:
        return refs.parse(value)
    except refs.InvalidReference:
        return None


def _problem(exc: YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    return f"{getattr(exc, 'problem', None) or type(exc).__name__}{where}"
