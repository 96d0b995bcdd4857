"""Update stage, reading half: find every reference to an image in YAML files, with the exact
character span of each scalar that names it (pure reading; never writes a file).

What counts as a reference (see docs/references.md):

- any ``image:`` key whose string value names the image (Kubernetes pod specs at any depth,
  Compose ``services.*.image``, Helm ``image: "repo:tag"``);
- Helm-style maps ``{registry?, repository|repo, tag|version?, digest?}`` anywhere (the
  ``name``/``image`` spellings of the repository only under a key that mentions "image");
- kustomize ``images:`` entries (``name``, ``newName``, ``newTag``, ``digest``);
- marker comments ``# {"$imagepolicy": "NAME[:tag|:name|:digest]"}`` (or ``"image-bot"``
  as the key) on the line of a value; they win over everything detected automatically.

A file is parsed only when its text mentions the repository or carries a marker for the
policy, so most files of a large repository are never parsed.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver

from image_bot import refs
from image_bot.update.result import Skipped

_YAML_SUFFIXES = (".yaml", ".yml")
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "<<"
_MAX_VISITS = 200_000  # aliases can multiply a small file into a huge tree ("billion laughs")
_REPOSITORY_KEYS = ("repository", "repo")
_NAME_KEYS = ("name", "image")  # repository spellings accepted under an "image"-ish key
_TAG_KEYS = ("tag", "version")
_MARKER = re.compile(r'#\s*\{\s*"(?:\$imagepolicy|image-bot)"\s*:\s*"([^"]+)"\s*\}')
_PARTS = {"tag": "tag", "name": "name", "digest": "digest"}
_PROPERTIES = re.compile(r"^(?:(?:&|!)\S*\s+)+$")  # an anchor and/or tag before a scalar

KeyPath = tuple[int | str, ...]  # (document index, key or list index, ...)
Role = Literal["image", "tag", "digest", "name"]
Kind = Literal["image", "helm", "kustomize", "marker"]


@dataclass(frozen=True, slots=True)
class Field:
    """One scalar of a reference: where it is written and every place it appears in the data
    (more than one when it is anchored and used through aliases)."""

    role: Role  # image: a whole "repo:tag@digest"; tag, digest, name: one part of it
    line: int  # 1-based
    start: int  # character offsets into the decoded text (without a BOM)
    end: int
    style: str  # "" (plain), "'" or '"'; anything else cannot be spliced safely
    value: str  # the scalar's text as read (a plain 1.10 stays "1.10")
    paths: tuple[KeyPath, ...]
    anchor: str | None = None


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference to an image: one scalar (``image: repo:tag``) or several (Helm, kustomize).

    ``ref`` is what it names now (with its current tag and digest); ``target`` is the image it
    was searched for; ``problem`` says why it must not be edited (e.g. a shared anchor).
    """

    file: str
    kind: Kind
    fields: tuple[Field, ...]
    ref: refs.ImageRef
    target: refs.ImageRef
    policy: str | None = None  # the policy named by a marker comment
    problem: str | None = None

    def field(self, role: Role) -> Field | None:
        return next((f for f in self.fields if f.role == role), None)

    @property
    def line(self) -> int:
        return min(f.line for f in self.fields)

    @property
    def value(self) -> str:
        """The reference as one text: the written value, or ``name:tag@digest`` for maps."""
        whole = self.field("image")
        return whole.value if whole else str(self.ref)


@dataclass(frozen=True, slots=True)
class Scan:
    references: tuple[Reference, ...]
    skipped: tuple[Skipped, ...]
    parsed: int = 0  # files that passed the text pre-filter and were parsed


def candidate_files(root: Path, patterns: Sequence[str]) -> list[Path]:
    """YAML files under ``root`` matching any glob in ``patterns`` (``**`` spans folders)."""
    everything = any(pattern.strip("/") in ("**", "**/*", "") for pattern in patterns)
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        base = Path(folder)
        prefix = base.relative_to(root).as_posix()
        for name in sorted(names):
            if not name.endswith(_YAML_SUFFIXES):
                continue
            relative = name if prefix == "." else f"{prefix}/{name}"
            if everything or any(_matches(relative, pattern) for pattern in patterns):
                files.append(base / name)
    return sorted(files)


def yaml_files(paths: Sequence[Path]) -> list[Path]:
    """The files named in ``paths`` plus the YAML files under the directories among them."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.suffix in _YAML_SUFFIXES
                      and ".git" not in p.relative_to(path).parts and p.is_file()]
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def _matches(relative: str, pattern: str) -> bool:
    pattern = pattern.strip("/")
    if fnmatch.fnmatchcase(relative, pattern):
        return True
    if pattern.endswith("/**") or pattern.endswith("/"):
        return relative.startswith(pattern.rstrip("*").rstrip("/") + "/")
    return relative.startswith(pattern + "/")  # a plain directory name covers what is inside


class Index:
    """The YAML files under a checkout and their bytes, listed and read once and shared by
    every policy's search (one per update pass: files edited afterwards are not seen)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: list[Path] | None = None
        self._data: dict[Path, bytes] = {}
        self.reads = 0

    def files(self, patterns: Sequence[str]) -> list[Path]:
        if self._files is None:
            self._files = candidate_files(self.root, ["**"])
        everything = any(p.strip("/") in ("**", "**/*", "") for p in patterns)
        return [path for path in self._files if everything or any(
            _matches(path.relative_to(self.root).as_posix(), p) for p in patterns)]

    def read(self, path: Path) -> bytes:
        if path not in self._data:
            self._data[path] = path.read_bytes()
            self.reads += 1
        return self._data[path]


def find(root: Path, image: refs.ImageRef, patterns: Sequence[str], *,
         policy: str | None = None, index: Index | None = None) -> Scan:
    """All references to ``image`` (or marked for ``policy``) in files under ``root``;
    with ``index``, files are listed and read once for all the policies that share it."""
    if index is None:
        return scan_files(root, candidate_files(root, patterns), image, policy=policy)
    return scan_files(root, index.files(patterns), image, policy=policy, read=index.read)


def scan_files(root: Path, files: Sequence[Path], image: refs.ImageRef, *,
               policy: str | None = None,
               read: Callable[[Path], bytes] = Path.read_bytes) -> Scan:
    """References in ``files``, named relative to ``root``; unreadable files are skipped."""
    found: list[Reference] = []
    skipped: list[Skipped] = []
    parsed = 0
    needles = _needles(image, policy)
    for path in files:
        data = read(path)
        if not any(needle in data for needle in needles):
            continue  # cheap filter: most files are never decoded, let alone parsed
        relative = _relative(path, root)
        text = _decode(data)
        if text is None:
            skipped.append(Skipped(relative, "not UTF-8 text"))
            continue
        if not mentions(text, image, policy):
            continue
        parsed += 1
        try:
            found.extend(references_in(text, image, relative, policy=policy))
        except YAMLError as exc:
            skipped.append(Skipped(relative, f"does not parse as YAML: {_problem(exc)}"))
    return Scan(tuple(found), tuple(skipped), parsed)


def _needles(image: refs.ImageRef, policy: str | None) -> tuple[bytes, ...]:
    """Byte strings one of which a file must contain to be looked at more closely."""
    repository = image.repository.removeprefix("library/").encode()
    return (repository, b"$imagepolicy", b'"image-bot"') if policy else (repository,)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()


def mentions(text: str, image: refs.ImageRef, policy: str | None) -> bool:
    """The pre-filter: could ``text`` hold a reference? (False means: certainly not.)"""
    if image.repository.removeprefix("library/") in text:
        return True
    return policy is not None and policy in text and any(
        _marker_policy(m[1])[0] == policy for m in _MARKER.finditer(text))


def read_text(path: Path) -> str | None:
    """The file as text with any BOM removed (the writer puts it back), or None."""
    return _decode(path.read_bytes())


def _decode(data: bytes) -> str | None:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None


def compose_all(text: str) -> list[Node | None]:
    return list(YAML(typ="safe", pure=True).compose_all(text))


def references_in(text: str, image: refs.ImageRef, file: str, *,
                  policy: str | None = None) -> Iterator[Reference]:
    """References to ``image`` in every document of ``text``; raises YAMLError if unparsable."""
    markers = _markers(text) if policy is not None else {}
    for tree in _trees(text):
        if tree is not None and not _is_own_document(tree.root):
            yield from _Finder(tree, image, file, policy, markers).references()


def _is_own_document(node: Node) -> bool:
    """image-bot's own documents (an ImagePolicy's ``spec.image``) name images, but they
    are configuration, never references to rewrite."""
    if not isinstance(node, MappingNode):
        return False
    return any(isinstance(k, ScalarNode) and k.value == "apiVersion"
               and isinstance(v, ScalarNode) and str(v.value).startswith("image-bot/")
               for k, v in node.value)


def load_documents(text: str) -> list[Any]:
    """The data of every document, as ``YAML(typ="safe").load_all`` reads it, built from the
    parse the scan already made (the writer compares it with the re-read edited text)."""
    documents: list[Any] = []
    for tree in _trees(text):
        if tree is None:
            documents.append(None)
            continue
        # constructing flattens merge keys in place: keep the cached nodes as they were
        root = copy.deepcopy(tree.root) if tree.merges else tree.root
        documents.append(YAML(typ="safe", pure=True).constructor.construct_document(root))
    return documents


@functools.lru_cache(maxsize=128)
def _trees(text: str) -> tuple[_Tree | None, ...]:
    """Each document of ``text`` as a walked tree (None for an empty one); cached, since a
    file is searched once per policy and read again to verify an edit."""
    trees: list[_Tree | None] = []
    for index, document in enumerate(compose_all(text)):
        if document is None:
            trees.append(None)
            continue
        tree = _Tree(text, document)
        tree.walk(document, (index,))
        trees.append(tree)
    return tuple(trees)


# --- the document as a graph: every node with every path it is reachable by ---------------


@dataclass
class _Tree:
    text: str
    root: Node
    paths: dict[int, list[KeyPath]] = field(default_factory=dict)
    mappings: dict[int, MappingNode] = field(default_factory=dict)
    sequences: dict[int, SequenceNode] = field(default_factory=dict)
    values: dict[int, ScalarNode] = field(default_factory=dict)  # scalars that are values
    visits: int = 0
    merges: bool = False
    _detections: list[_Draft] | None = None

    def walk(self, node: Node, path: KeyPath, stack: tuple[int, ...] = ()) -> None:
        self.visits += 1
        if self.visits > _MAX_VISITS or id(node) in stack:
            raise _TooDeep("aliases expand to too many nodes")
        self.paths.setdefault(id(node), []).append(path)
        if isinstance(node, ScalarNode):
            self.values[id(node)] = node
        elif isinstance(node, MappingNode):
            self.mappings[id(node)] = node
            self._walk_entries(node, path, (*stack, id(node)), exclude=set())
        elif isinstance(node, SequenceNode):
            self.sequences[id(node)] = node
            for i, item in enumerate(node.value):
                self.walk(item, (*path, i), (*stack, id(node)))

    def _walk_entries(self, node: MappingNode, path: KeyPath, stack: tuple[int, ...], *,
                      exclude: set[str]) -> None:
        own = {k.value for k, _ in node.value if isinstance(k, ScalarNode) and k.value != _MERGE}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                continue
            if key.value == _MERGE and str(key.tag).endswith(":merge"):
                self.merges = True
                sources = value.value if isinstance(value, SequenceNode) else [value]
                hidden = exclude | own
                for source in sources:  # the mapping's own keys, then earlier sources, win
                    if isinstance(source, MappingNode):
                        self._walk_entries(source, path, (*stack, id(source)), exclude=hidden)
                        hidden = hidden | {k.value for k, _ in source.value
                                           if isinstance(k, ScalarNode)}
            elif key.value not in exclude:
                self.walk(value, (*path, key.value), stack)


    def detections(self) -> list[_Draft]:
        """Every reference in the document, to any image (computed once per tree)."""
        if self._detections is None:
            self._detections = list(self._detect())
        return self._detections

    def _detect(self) -> Iterator[_Draft]:
        for mapping in list(self.mappings.values()):
            helm = self._helm(mapping)
            if helm is not None:
                yield helm
            yield from self._image_keys(mapping, helm)
        yield from self._kustomize()

    def _image_keys(self, mapping: MappingNode, helm: _Draft | None) -> Iterator[_Draft]:
        for key, value in mapping.value:
            if (isinstance(key, ScalarNode) and key.value == "image"
                    and isinstance(value, ScalarNode) and _is_str(value)
                    and (helm is None or value not in helm.nodes)):
                parsed = _as_ref(value.value)
                if parsed:
                    draft = _Draft("image", mapping, None, named=parsed)
                    draft.add("image", key.value, value)
                    draft.ref = parsed
                    yield draft

    def _helm(self, mapping: MappingNode) -> _Draft | None:
        if self._kustomize_entry(mapping):
            return None
        entries = _scalar_entries(mapping)
        repo_key = next((k for k in _REPOSITORY_KEYS if k in entries), None)
        if repo_key is None and self._image_context(mapping):
            repo_key = next((k for k in _NAME_KEYS if k in entries), None)
        tag_key = next((k for k in _TAG_KEYS if k in entries), None)
        if repo_key is None or (tag_key is None and "digest" not in entries):
            return None
        registry = entries.get("registry")
        name = entries[repo_key].value
        if registry is not None and registry.value:
            name = f"{registry.value.rstrip('/')}/{name}"
        parsed = _as_ref(name) if _is_str(entries[repo_key]) else None
        if parsed is None:
            return None
        draft = _Draft("helm", mapping, None, named=parsed)
        draft.add("name", repo_key, entries[repo_key])
        if tag_key is not None:
            draft.add("tag", tag_key, entries[tag_key])
        if "digest" in entries:
            draft.add("digest", "digest", entries["digest"])
        return draft

    def _image_context(self, mapping: MappingNode) -> bool:
        for path in self.paths.get(id(mapping), []):
            keys = [k for k in path[1:] if isinstance(k, str)]
            if keys and "image" in keys[-1].lower():
                return True
        return False

    def _kustomize_entry(self, mapping: MappingNode) -> bool:
        """An item of a top-level ``images:`` list (kustomize's image transformer)."""
        return any(len(p) == 3 and p[1] == "images" and isinstance(p[2], int)
                   for p in self.paths[id(mapping)])

    def _kustomize(self) -> Iterator[_Draft]:
        for mapping in self.mappings.values():
            if not self._kustomize_entry(mapping):
                continue
            entries = _scalar_entries(mapping)
            name = entries.get("newName") or entries.get("name")
            if name is None or not ({"newTag", "digest"} & entries.keys()):
                continue
            parsed = _as_ref(name.value)
            if parsed is None:
                continue
            draft = _Draft("kustomize", mapping, None, named=parsed)
            for key, role in (("newTag", "tag"), ("digest", "digest")):
                if key in entries:
                    draft.add(role, key, entries[key])  # type: ignore[arg-type]
            yield draft



class _TooDeep(YAMLError):
    problem = "aliases expand to too many nodes"


# --- detection ------------------------------------------------------------------------------


@dataclass
class _Finder:
    tree: _Tree
    image: refs.ImageRef
    file: str
    policy: str | None
    markers: dict[int, tuple[str, Role]]  # 0-based line → (policy, role)

    def references(self) -> list[Reference]:
        marked = self._marked_scalars()
        drafts = self._marker_references(marked) + [
            draft for draft in self.tree.detections()
            if draft.named is not None and draft.named.same_image(self.image)
            and not any(id(node) in marked for node in draft.nodes)]
        claimed = {path for draft in drafts for path in draft.claims(self.tree)}
        unique: dict[tuple[int, ...], _Draft] = {}
        for draft in drafts:  # an aliased value is one reference, however often it is used
            unique.setdefault(tuple(id(node) for node in draft.nodes), draft)
        return [draft.build(self, claimed) for draft in unique.values()]

    def _marked_scalars(self) -> dict[int, tuple[str, Role]]:
        """The value scalar each marker comment belongs to: the last one on its line."""
        by_line: dict[int, ScalarNode] = {}
        for node in self.tree.values.values():
            line = node.end_mark.line
            if line in self.markers and node.start_mark.line == line and (
                    line not in by_line or node.start_mark.index > by_line[line].start_mark.index):
                by_line[line] = node
        return {id(node): self.markers[line] for line, node in by_line.items()}

    def _marker_references(self, marked: dict[int, tuple[str, Role]]) -> list[_Draft]:
        groups: dict[int, _Draft] = {}
        containers: list[MappingNode | SequenceNode] = [*self.tree.mappings.values(),
                                                        *self.tree.sequences.values()]
        for container in containers:
            for key, value in _entries(container):
                mark = marked.get(id(value))
                if mark is None or mark[0] != self.policy or not isinstance(value, ScalarNode):
                    continue
                draft = groups.setdefault(id(container),
                                          _Draft("marker", container, self.policy))
                draft.add(mark[1], key, value)
        return list(groups.values())

@dataclass
class _Draft:
    """A reference being assembled from the scalars of one mapping."""

    kind: Kind
    mapping: MappingNode | SequenceNode
    policy: str | None
    entries: list[tuple[Role, str | int, ScalarNode]] = field(default_factory=list)
    ref: refs.ImageRef | None = None  # a whole reference, as read
    named: refs.ImageRef | None = None  # the image it names (None for marker groups)

    @property
    def nodes(self) -> list[ScalarNode]:
        return [node for _, _, node in self.entries]

    def add(self, role: Role, key: str | int, node: ScalarNode) -> None:
        self.entries.append((role, key, node))

    def claims(self, tree: _Tree) -> set[KeyPath]:
        """The data paths this reference accounts for (its keys, wherever its map is used)."""
        return {(*path, key) for path in tree.paths[id(self.mapping)] for _, key, _ in
                self.entries}

    def build(self, finder: _Finder, claimed: set[KeyPath]) -> Reference:
        tree = finder.tree
        fields = tuple(_field(tree, role, node, _key_node(self.mapping, node))
                       for role, _, node in self.entries)
        ref = self.ref or _current(fields, finder.image)
        problem = None
        for f in fields:
            stray = [p for p in f.paths if p not in claimed]
            if len(f.paths) > 1 and stray and f.role != "image":  # a whole repo:tag names
                # the image wherever it is used; a shared tag may belong to other images
                problem = (f"line {f.line}: {_describe_anchor(f)} is also used at "
                           f"{_dotted(stray[0])}, which is not a reference to "
                           f"{finder.image.name}; not edited")
        return Reference(file=finder.file, kind=self.kind, fields=fields, ref=ref,
                         target=finder.image, policy=self.policy, problem=problem)


def _colon_after(text: str, key: ScalarNode | None) -> int | None:
    if key is None:
        return None
    match = re.compile(r"[ \t]*:").match(text, key.end_mark.index)
    return match.end() if match else None


def _describe_anchor(f: Field) -> str:
    return f"the anchored value &{f.anchor}" if f.anchor else "the value"


def _dotted(path: KeyPath) -> str:
    doc, *keys = path
    return f"document {int(doc) + 1}: " + ".".join(str(k) for k in keys)


def _key_node(container: MappingNode | SequenceNode, node: ScalarNode) -> ScalarNode | None:
    if isinstance(container, MappingNode):
        for key, value in container.value:
            if value is node and isinstance(key, ScalarNode):
                return key
    return None


def _field(tree: _Tree, role: Role, node: ScalarNode, key: ScalarNode | None) -> Field:
    start, end = node.start_mark.index, node.end_mark.index
    quote = node.style if node.style in ("'", '"') else ""
    written = f"{quote}{node.value}{quote}"
    raw = tree.text[start:end]
    if raw != written and raw.endswith(written) and _PROPERTIES.match(raw[: -len(written)]):
        start = end - len(written)  # skip an anchor (&a) or tag (!!str) before the value
    style = node.style or ""
    if not written:
        # an empty value ("tag:") is marked where the next token starts: write after the colon
        plain_null = not node.anchor and str(node.tag).endswith(":null")
        colon = _colon_after(tree.text, key) if plain_null else None
        start = end = colon if colon is not None else start
        style = "" if colon is not None else "empty"
    return Field(role=role, line=node.start_mark.line + 1, start=start, end=end, style=style,
                 value=node.value, paths=tuple(tree.paths[id(node)]), anchor=node.anchor)


def _current(fields: tuple[Field, ...], image: refs.ImageRef) -> refs.ImageRef:
    """What a multi-scalar reference names now: its image with the tag and digest it reads."""
    by_role = {f.role: f for f in fields}
    whole = by_role.get("image")
    if whole is not None:
        parsed = _as_ref(whole.value)
        if parsed is not None and parsed.same_image(image):
            return parsed
    tag = by_role.get("tag")
    digest = by_role.get("digest")
    tag_text = _text_or_none(tag)
    digest_text = _text_or_none(digest)
    if tag_text and "@" in tag_text:
        tag_text, _, embedded = tag_text.partition("@")
        digest_text = digest_text or embedded
    return image.with_tag(tag_text or None, digest_text or None)


def _text_or_none(f: Field | None) -> str | None:
    if f is None or (not f.style and _plain_tag(f.value) == _NULL):
        return None
    return f.value


def _entries(node: MappingNode | SequenceNode) -> Iterator[tuple[str | int, Node]]:
    if isinstance(node, SequenceNode):
        yield from enumerate(node.value)
        return
    for key, value in node.value:
        if isinstance(key, ScalarNode):
            yield key.value, value


def _scalar_entries(mapping: MappingNode) -> dict[str, ScalarNode]:
    return {k.value: v for k, v in mapping.value
            if isinstance(k, ScalarNode) and isinstance(v, ScalarNode)}


def _markers(text: str) -> dict[int, tuple[str, Role]]:
    found: dict[int, tuple[str, Role]] = {}
    for match in _MARKER.finditer(text):
        line = text.count("\n", 0, match.start())
        found[line] = _marker_policy(match[1])
    return found


def _marker_policy(setter: str) -> tuple[str, Role]:
    """``NAME``, ``NAME:tag`` … or Flux's ``NAMESPACE:NAME[:part]`` → (policy, role)."""
    parts = setter.split(":")
    role: Role = "image"
    if len(parts) > 1 and parts[-1] in _PARTS:
        role = _PARTS[parts.pop()]  # type: ignore[assignment]
    return parts[-1], role


@functools.lru_cache(maxsize=1024)
def _plain_tag(value: str) -> str:
    """The type a plain scalar with this text has: str only if YAML 1.1 and 1.2 agree.

    Fresh resolvers each time: ruamel's ``resolve`` extends its own rule lists in place.
    """
    tags = {str(VersionedResolver(version=version).resolve(ScalarNode, value, (True, False)))
            for version in ((1, 1), (1, 2))}
    return _STR if tags == {_STR} else min(tags - {_STR})


def plain_reads_as_string(value: str) -> bool:
    """Whether ``value`` written plain reads as this string under YAML 1.1 and 1.2."""
    return _plain_tag(value) == _STR


def _is_str(node: ScalarNode) -> bool:
    return bool(node.style) or node.tag == _STR or plain_reads_as_string(node.value)


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
