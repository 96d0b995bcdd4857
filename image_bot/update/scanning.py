"""Update stage, reading half: find every reference to an image in the YAML files of a
checkout, with the exact character span of each scalar that names it (pure reading; never
writes a file).

Three jobs, three modules: ``image_bot.checkout`` lists and reads the files once (never
leaving the checkout, never past the size cap), ``yamlgraph`` parses and walks documents,
``detecting`` says which scalars name an image (see docs/references.md). This module joins
them: a file is parsed only when its bytes mention the repository or carry a marker for the
policy, so most files of a large repository are never parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml.error import YAMLError

from image_bot import checkout, refs
from image_bot.errors import FileRefused, FileTooLarge
from image_bot.update import detecting, yamlgraph
from image_bot.update.result import Skipped, UpdateResult

# names other modules, tests and bench/ use from here
Index = checkout.Index
Field = detecting.Field
Reference = detecting.Reference
KeyPath = yamlgraph.KeyPath
mentions = detecting.mentions
references_in = detecting.references_in
load_documents = yamlgraph.load_documents
plain_reads_as_string = yamlgraph.plain_reads_as_string


@dataclass(frozen=True, slots=True)
class Scan:
    references: tuple[detecting.Reference, ...]
    skipped: tuple[Skipped, ...]  # files that may hold a reference but cannot be used
    parsed: int = 0  # files that passed the text pre-filter and were parsed


def candidate_files(root: Path, patterns: Sequence[str]) -> list[Path]:
    """YAML files under ``root`` matching any glob in ``patterns`` (``**`` spans folders)."""
    return checkout.Index(root).files(patterns)


def find(root: Path, image: refs.ImageRef, patterns: Sequence[str], *,
         policy: str | None = None, index: checkout.Index | None = None,
         namespace: str | None = None) -> Scan:
    """All references to ``image`` (or marked for ``policy``) in files under ``root``;
    with ``index``, files are listed and read once for all the policies that share it, and
    a scan asked for again (another stage of the same pass) is the one made before."""
    index = index or checkout.Index(root)
    key = ("find", image, tuple(patterns), policy, namespace)
    scan: Scan | None = index.derived.get(key)
    if scan is None:
        scan = index.derived[key] = scan_files(index, index.files(patterns), image,
                                               policy=policy, namespace=namespace,
                                               patterns=patterns)
    return scan


def scan_files(index: checkout.Index, files: Sequence[Path], image: refs.ImageRef, *,
               policy: str | None = None, shown: Path | None = None,
               namespace: str | None = None, patterns: Sequence[str] | None = None) -> Scan:
    """References in ``files`` (listed by ``index``), named relative to ``shown`` (default:
    the index's root). A file that may hold one but cannot be used is skipped: not UTF-8,
    not YAML, or larger than the cap (its bytes are searched, never held whole).
    ``patterns``: the globs ``index`` listed ``files`` by, when it did."""
    found: list[detecting.Reference] = []
    skipped: list[Skipped] = []
    parsed = 0
    name, markers = _needles(image, policy)
    needles = (name, *markers)
    # most files are never decoded
    for path in index.holding(files, markers, (name,), patterns=patterns):
        relative = index.shown(path) if shown is None else _relative(path, shown)
        try:
            data = index.read(path)
        except FileRefused as exc:
            if isinstance(exc, FileTooLarge) and not index.mentions(path, needles):
                continue  # too large, but certainly not ours
            skipped.append(Skipped(relative, exc.reason))
            continue
        text = _decode(data)
        if text is None:
            skipped.append(Skipped(relative, "not UTF-8 text"))
            continue
        if not detecting.mentions(text, image, policy, namespace):
            continue
        parsed += 1
        try:
            found.extend(detecting.references_in(text, image, relative, policy=policy,
                                                 namespace=namespace))
        except YAMLError as exc:
            skipped.append(Skipped(relative, f"does not parse as YAML: "
                                             f"{yamlgraph.problem(exc)}"))
    return Scan(tuple(found), tuple(skipped), parsed)


def refused(index: checkout.Index, patterns: Sequence[str] | None = None) -> UpdateResult:
    """The entries the scans of ``index`` came across and never read (links that leave the
    checkout, devices, ...), each once, as skipped files of the update; with ``patterns``,
    those under them only (an index several updates share)."""
    return UpdateResult(skipped=tuple(Skipped(r.file, r.reason) for r in index.refused
                                      if patterns is None or checkout.matches(r.file, patterns)))


def _needles(image: refs.ImageRef, policy: str | None) -> tuple[bytes, tuple[bytes, ...]]:
    """What a file must contain to be looked at more closely: the image's repository as a
    whole name (not ``app`` in ``app-worker``), or a marker when a policy is named."""
    repository = image.repository.removeprefix("library/").encode()
    return repository, (b"$imagepolicy", b'"image-bot"') if policy else ()


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()


def read_text(path: Path) -> str | None:
    """The file as text with any BOM removed (the writer puts it back), or None."""
    return _decode(path.read_bytes())


def _decode(data: bytes) -> str | None:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None
