"""Update stage, detectors: which scalars of a walked YAML document name an image (plain
``image:`` values, Helm image maps, kustomize ``images:``, marker comments); pure reading
of a tree, never of files.

What counts as a reference (see docs/references.md):

- any ``image:`` key whose string value names the image (Kubernetes pod specs at any depth,
  Compose ``services.*.image``, Helm ``image: "repo:tag"``);
- Helm-style maps ``{registry?, repository|repo, tag|version?, digest?}`` anywhere (the
  ``name``/``image`` spellings of the repository only under a key that mentions "image");
- kustomize ``images:`` entries (``name``, ``newName``, ``newTag``, ``digest``);
- marker comments ``# {"$imagepolicy": "NAME[:tag|:name|:digest]"}`` (or ``"image-bot"``
  as the key) on the line of a value; they win over everything detected automatically.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from image_bot import refs
from image_bot.update import yamlgraph
from image_bot.update.yamlgraph import KeyPath

_REPOSITORY_KEYS = ("repository", "repo")
_NAME_KEYS = ("name", "image")  # repository spellings accepted under an "image"-ish key
_TAG_KEYS = ("tag", "version")
_MARKER = re.compile(r'#\s*\{\s*"(?:\$imagepolicy|image-bot)"\s*:\s*"([^"]+)"\s*\}')
_PARTS = {"tag": "tag", "name": "name", "digest": "digest"}
_PROPERTIES = re.compile(r"^(?:(?:&|!)\S*\s+)+$")  # an anchor and/or tag before a scalar

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


def mentions(text: str, image: refs.ImageRef, policy: str | None,
             namespace: str | None = None) -> bool:
    """The pre-filter: could ``text`` hold a reference? (False means: certainly not.)"""
    if image.repository.removeprefix("library/") in text:
        return True
    return policy is not None and policy in text and any(
        marker_names(m[1], policy, namespace) for m in _MARKER.finditer(text))


def references_in(text: str, image: refs.ImageRef, file: str, *,
                  policy: str | None = None,
                  namespace: str | None = None) -> Iterator[Reference]:
    """References to ``image`` in every document of ``text``; raises YAMLError if unparsable.

    Markers count for ``policy``: ``NAME`` or Flux's ``NAMESPACE:NAME`` (a namespace must be
    the policy's ``metadata.namespace`` when the policy declares one)."""
    # every marker keeps its scalar from automatic detection; those of another policy (or
    # of this name in another namespace) are kept under "" (no policy has that name)
    markers = {} if policy is None else {
        line: (name if name == policy and (marked_ns is None or namespace is None
                                           or marked_ns == namespace) else "", role)
        for line, (marked_ns, name, role) in _markers(text).items()}
    for tree in yamlgraph.trees(text):
        if tree is not None and not _is_own_document(tree.root):
            yield from _Finder(tree, image, file, policy, markers).references()


def marker_names(setter: str, policy: str, namespace: str | None) -> bool:
    """Whether the marker text ``setter`` names the policy ``policy`` (in ``namespace``)."""
    marked_ns, name, _ = _marker_policy(setter)
    return name == policy and (marked_ns is None or namespace is None or marked_ns == namespace)


def markers_in(text: str) -> list[tuple[int, str, str | None, str]]:
    """Every marker of ``text``: (1-based line, the marker as written, namespace, policy)."""
    return [(text.count("\n", 0, m.start()) + 1, m[1], *_marker_policy(m[1])[:2])
            for m in _MARKER.finditer(text)]


def _is_own_document(node: Node) -> bool:
    """image-bot's own documents (an ImagePolicy's ``spec.image``) name images, but they
    are configuration, never references to rewrite."""
    if not isinstance(node, MappingNode):
        return False
    return any(isinstance(k, ScalarNode) and k.value == "apiVersion"
               and isinstance(v, ScalarNode) and str(v.value).startswith("image-bot/")
               for k, v in node.value)


# --- the detectors: every reference in a tree, to any image --------------------------------


def detections(tree: yamlgraph.Tree) -> list[_Draft]:
    """Every reference in the document, to any image (computed once per tree)."""
    if "detections" not in tree.memo:
        tree.memo["detections"] = list(_detect(tree))
    found: list[_Draft] = tree.memo["detections"]
    return found


def _detect(tree: yamlgraph.Tree) -> Iterator[_Draft]:
    for mapping in list(tree.mappings.values()):
        helm = _helm(tree, mapping)
        if helm is not None:
            yield helm
        yield from _image_keys(mapping, helm)
    yield from _kustomize(tree)


def _image_keys(mapping: MappingNode, helm: _Draft | None) -> Iterator[_Draft]:
    """``image: repo:tag`` (pods, Compose, Helm values that write the whole reference)."""
    for key, value in mapping.value:
        if (isinstance(key, ScalarNode) and key.value == "image"
                and isinstance(value, ScalarNode) and yamlgraph.is_str(value)
                and (helm is None or value not in helm.nodes)):
            parsed = _as_ref(value.value)
            if parsed:
                draft = _Draft("image", mapping, None, named=parsed)
                draft.add("image", key.value, value)
                draft.ref = parsed
                yield draft


def _helm(tree: yamlgraph.Tree, mapping: MappingNode) -> _Draft | None:
    """``{registry?, repository, tag?, digest?}`` maps (Helm values)."""
    if _kustomize_entry(tree, mapping):
        return None
    entries = _scalar_entries(mapping, merged=True)
    repo_key = next((k for k in _REPOSITORY_KEYS if k in entries), None)
    if repo_key is None and _image_context(tree, mapping):
        repo_key = next((k for k in _NAME_KEYS if k in entries), None)
    tag_key = next((k for k in _TAG_KEYS if k in entries), None)
    if repo_key is None or (tag_key is None and "digest" not in entries):
        return None
    registry = entries.get("registry")
    name = entries[repo_key].value
    if registry is not None and registry.value:
        name = f"{registry.value.rstrip('/')}/{name}"
    parsed = _as_ref(name) if yamlgraph.is_str(entries[repo_key]) else None
    if parsed is None:
        return None
    draft = _Draft("helm", mapping, None, named=parsed)
    draft.add("name", repo_key, entries[repo_key])
    if tag_key is not None:
        draft.add("tag", tag_key, entries[tag_key])
    if "digest" in entries:
        draft.add("digest", "digest", entries["digest"])
    return draft


def _image_context(tree: yamlgraph.Tree, mapping: MappingNode) -> bool:
    for path in tree.paths.get(id(mapping), []):
        keys = [k for k in path[1:] if isinstance(k, str)]
        if keys and "image" in keys[-1].lower():
            return True
    return False


def _kustomize_entry(tree: yamlgraph.Tree, mapping: MappingNode) -> bool:
    """An item of a top-level ``images:`` list (kustomize's image transformer)."""
    return any(len(p) == 3 and p[1] == "images" and isinstance(p[2], int)
               for p in tree.paths[id(mapping)])


def _kustomize(tree: yamlgraph.Tree) -> Iterator[_Draft]:
    """kustomize ``images:`` entries (``name``/``newName`` with ``newTag`` and/or ``digest``)."""
    for mapping in tree.mappings.values():
        if not _kustomize_entry(tree, mapping):
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


# --- one search: the detections of one image, plus the markers of one policy --------------


@dataclass
class _Finder:
    tree: yamlgraph.Tree
    image: refs.ImageRef
    file: str
    policy: str | None
    markers: dict[int, tuple[str, Role]]  # 0-based line → (policy, role)

    def references(self) -> list[Reference]:
        marked = self._marked_scalars()
        drafts = self._marker_references(marked) + [
            draft for draft in detections(self.tree)
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

    def claims(self, tree: yamlgraph.Tree) -> set[KeyPath]:
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


def _field(tree: yamlgraph.Tree, role: Role, node: ScalarNode, key: ScalarNode | None) -> Field:
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
    if f is None or (not f.style and yamlgraph.plain_tag(f.value) == yamlgraph.NULL):
        return None
    return f.value


def _entries(node: MappingNode | SequenceNode) -> Iterator[tuple[str | int, Node]]:
    if isinstance(node, SequenceNode):
        yield from enumerate(node.value)
        return
    for key, value in node.value:
        if isinstance(key, ScalarNode):
            yield key.value, value


def _scalar_entries(mapping: MappingNode, *, merged: bool = False,
                    depth: int = 0) -> dict[str, ScalarNode]:
    """The mapping's scalar values by key; with ``merged``, also those it inherits through
    merge keys (``<<: *app``), its own keys and earlier sources winning, as YAML reads them:
    a Helm map that inherits its repository is a reference of that image, and each of its
    scalars is spliced where it is written."""
    own = {k.value: v for k, v in mapping.value
           if isinstance(k, ScalarNode) and isinstance(v, ScalarNode) and k.value != "<<"}
    if not merged or depth > 8:
        return own
    for key, value in mapping.value:
        if isinstance(key, ScalarNode) and key.value == "<<" and str(key.tag).endswith(":merge"):
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                if isinstance(source, MappingNode):
                    inherited = _scalar_entries(source, merged=True, depth=depth + 1)
                    own.update({k: v for k, v in inherited.items() if k not in own})
    return own


def _markers(text: str) -> dict[int, tuple[str | None, str, Role]]:
    found: dict[int, tuple[str | None, str, Role]] = {}
    for match in _MARKER.finditer(text):
        line = text.count("\n", 0, match.start())
        found[line] = _marker_policy(match[1])
    return found


def _marker_policy(setter: str) -> tuple[str | None, str, Role]:
    """``NAME``, ``NAME:tag`` … or Flux's ``NAMESPACE:NAME[:part]`` → (namespace, policy,
    role)."""
    parts = setter.split(":")
    role: Role = "image"
    if len(parts) > 1 and parts[-1] in _PARTS:
        role = _PARTS[parts.pop()]  # type: ignore[assignment]
    namespace = parts[-2] if len(parts) > 1 else None
    return namespace, parts[-1], role


def _as_ref(value: object) -> refs.ImageRef | None:
    if not isinstance(value, str):
        return None
    try:
        return refs.parse(value)
    except refs.InvalidReference:
        return None

