"""Update stage on its own, for ``image-bot set-image``: point every reference to an image
under some paths at a given tag or digest (local files only; no registry, no Git, no policy).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from image_bot import checkout, refs
from image_bot.update import rewriting, scanning
from image_bot.update.result import Skipped, UpdateResult


class InvalidAssignment(ValueError):
    """An ``IMAGE=REF`` argument that does not say what to write."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """``IMAGE=REF``: find ``image``, write ``tag`` and/or ``digest`` (and ``name``, to rename)."""

    text: str
    image: refs.ImageRef
    tag: str | None
    digest: str | None
    name: str | None  # None keeps each reference's own spelling of the image


@dataclass(frozen=True, slots=True)
class Outcome:
    result: UpdateResult  # what changed (or would change, on a dry run)
    unreadable: tuple[Skipped, ...]  # files that mention the image but do not parse
    refused: tuple[Skipped, ...]  # files with references that could not be edited safely
    unmatched: tuple[Assignment, ...] = ()  # assignments that found no reference at all


def parse_assignment(text: str) -> Assignment:
    """``IMAGE=repo:tag``, ``IMAGE=repo@digest``, ``IMAGE=repo:tag@digest`` or ``IMAGE=TAG``."""
    image_text, sep, ref_text = text.partition("=")
    if not sep or not image_text or not ref_text:
        raise InvalidAssignment(f"{text!r}: expected IMAGE=REF, e.g. ghcr.io/acme/web=1.2.3")
    try:
        image = refs.parse(image_text)
    except refs.InvalidReference as exc:
        raise InvalidAssignment(f"{text!r}: {exc}") from None
    if image.tag or image.digest:
        raise InvalidAssignment(f"{text!r}: name the image without a tag or digest before '='")
    name_text, _, digest_text = ref_text.partition("@")
    if ":" not in name_text and "/" not in name_text and not _names(name_text, image):
        if not refs.is_tag(name_text):  # a bare tag (or tag@digest): same repository
            raise InvalidAssignment(f"{text!r}: {name_text!r} is not a valid tag")
        ref_text = f"{image.name}:{name_text}" + (f"@{digest_text}" if digest_text else "")
        name_text = image.name
    try:
        # "IMAGE=@sha256:…" means the same repository, by digest
        new = refs.parse(ref_text if name_text else f"{image.name}{ref_text}")
    except refs.InvalidReference as exc:
        raise InvalidAssignment(f"{text!r}: {exc}") from None
    if not new.tag and not new.digest:
        raise InvalidAssignment(f"{text!r}: the new reference needs a tag or a digest")
    name = None if new.same_image(image) else _strip_tag(name_text)
    return Assignment(text, image, new.tag, new.digest, name)


def _names(text: str, image: refs.ImageRef) -> bool:
    try:
        return refs.parse(text).same_image(image)
    except refs.InvalidReference:
        return False


def _strip_tag(name: str) -> str:
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def set_images(root: Path, paths: Sequence[Path], assignments: Sequence[Assignment], *,
               write: bool = True,
               max_file_bytes: int = checkout.DEFAULT_MAX_FILE_BYTES) -> Outcome:
    """Rewrite every reference under ``paths`` (named relative to ``root``).

    Files are listed and read through a checkout index: ``root`` when a path lies under it,
    otherwise the path's own folder; nothing outside it is read through a link.
    """
    indexes: dict[Path, checkout.Index] = {}
    listed: dict[tuple[int, Path], checkout.Index] = {}
    for path in paths:
        base = _checkout_of(root, path)
        index = indexes.setdefault(base, checkout.Index(base, max_file_bytes=max_file_bytes))
        listed.update({(id(index), file): index for file in index.under(path)})
    unreadable: dict[Skipped, None] = {
        Skipped(_shown(index.root / r.file, root), r.reason): None
        for index in indexes.values() for r in index.refused}
    edits: list[rewriting.Edit] = []
    unmatched: list[Assignment] = []
    for assignment in assignments:
        found = len(edits)
        for index in indexes.values():
            files = [file for (owner, file) in listed if owner == id(index)]
            scan = scanning.scan_files(index, files, assignment.image, shown=root)
            unreadable.update(dict.fromkeys(scan.skipped))
            edits += [rewriting.Edit(reference, assignment.tag, "set-image",
                                     digest=assignment.digest, name=assignment.name)
                      for reference in scan.references]
        if len(edits) == found:
            unmatched.append(assignment)
    result = rewriting.apply(root, edits, write=write, max_file_bytes=max_file_bytes)
    return Outcome(result, tuple(unreadable), result.skipped, tuple(unmatched))


def _checkout_of(root: Path, path: Path) -> Path:
    """The folder whose files ``path`` may reach: ``root``, or the path's own folder."""
    absolute = Path(os.path.abspath(path))
    for base in (Path(os.path.abspath(root)), root.resolve()):
        if absolute.is_relative_to(base):
            return root
    return path if path.is_dir() and not path.is_symlink() else path.parent


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
