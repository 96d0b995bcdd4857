"""ruamel.yaml's ``YAML`` as every YAML reader of image-bot builds it: without the plug-in
search, with plain scalars' tags memoised and plain documents built directly.

- Each ``ruamel.yaml.YAML()`` globs ruamel's install folder for plug-ins
  (``*/__plug_in__.py``) when it is built: ~35 µs, and a cycle builds one per text it
  parses (policies, manifests, the check of each edit). image-bot uses no plug-in.
- The parsers ask the resolver for the tag of every plain scalar they compose (about a
  quarter of composing a small file with libyaml); the answer depends only on the YAML
  version and the text, and a cycle's files repeat most keys and values. The resolver's
  table of patterns for a YAML version is built once, not once per text read (ruamel
  builds one per resolver, and a reader of libyaml's is one resolver per text: ~40 µs,
  a tenth of reading a small manifest).
- The safe reader builds strings, mappings and sequences itself (:class:`Constructor`),
  and hands every other document to ruamel's constructor.
"""

from __future__ import annotations

import functools
from typing import Any

import ruamel.yaml
import ruamel.yaml.constructor
import ruamel.yaml.main
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tag import Tag

CParser: Any = getattr(ruamel.yaml.main, "CParser", None)  # None without ruamel.yaml.clib
_PLAIN_TAGS: dict[tuple[Any, str], Tag] = {}  # (YAML version, text) → tag
_PLAIN_TAGS_KEPT = 1 << 16
_SHARED: dict[str, Tag] = {}  # tag name → the one Tag object every node with it shares
_TABLES: dict[Any, Any] = {}  # YAML version → ruamel's table of implicit resolvers for it


class Resolver(VersionedResolver):
    """ruamel's resolver, with the tag of each plain scalar memoised (bounded)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fixed_version: Any = None

    @property
    def processing_version(self) -> Any:
        """ruamel's answer; with libyaml's parser, worked out once per text. There the
        resolver is part of ruamel's loader (its ``loadumper`` is itself), which has no
        scanner to report a ``%YAML`` directive: ruamel's property always falls back to the
        reader's version, after two caught AttributeErrors (a sixth of composing a small
        file)."""
        if self._fixed_version is not None:
            return self._fixed_version
        version = super().processing_version
        if self.loadumper is self:
            self._fixed_version = version
        return version

    @property
    def versioned_resolver(self) -> Any:
        """ruamel's table for the version being read, built once for every resolver (by a
        resolver of ruamel's own, fully, before any reader sees it; nothing changes it
        after)."""
        version = self.processing_version
        if isinstance(version, str):
            version = tuple(map(int, version.split(".")))
        table = _TABLES.get(version)
        if table is None:
            table = _TABLES[version] = VersionedResolver(version=version).versioned_resolver
        return table

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not ScalarNode or not implicit[0] or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        key = (self.processing_version, value)
        tag = _PLAIN_TAGS.get(key)
        if tag is None:
            if len(_PLAIN_TAGS) >= _PLAIN_TAGS_KEPT:
                _PLAIN_TAGS.clear()
            tag = _PLAIN_TAGS[key] = _shared(super().resolve(kind, value, implicit).suffix)
        return tag


def _shared(suffix: str) -> Tag:
    """One ``Tag`` per resolved tag name, its text worked out once. ruamel's resolver itself
    shares one ``Tag`` among all quoted scalars, sequences and mappings (nothing changes a
    resolved tag); a fresh one per plain scalar would decode its URI on each node's first
    ``node.tag`` (~8 µs: an eighth of loading a small policy file)."""
    tag = _SHARED.get(suffix)
    if tag is None:
        tag = _SHARED[suffix] = Tag(suffix=suffix)
        assert tag.trval == suffix  # worked out now; a resolved name has no %-escapes
    return tag


class YAML(ruamel.yaml.YAML):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.Resolver is VersionedResolver:  # the safe and round-trip readers
            self.Resolver = Resolver
        if self.Constructor is ruamel.yaml.constructor.SafeConstructor:
            self.Constructor = Constructor

    def official_plug_ins(self) -> list[str]:
        return []

    def get_constructor_parser(self, stream: Any) -> Any:
        """ruamel's, except that libyaml's loader class is built once per kind of reader,
        not once per text (``class`` statements cost ~15 µs: a sixth of composing a small
        manifest)."""
        if self.Parser is not CParser or self.Reader is not None or self.Scanner is not None:
            return super().get_constructor_parser(stream)
        loader = _c_loader(self.Constructor, self.Resolver)(
            stream, self.version, self.allow_duplicate_keys)
        self._stream, self._scanner = stream, loader
        return loader, loader


@functools.cache
def _c_loader(constructor: Any, resolver: Any) -> Any:
    """libyaml's reader, scanner, parser and composer with ``constructor`` and ``resolver``
    in one object, as ``ruamel.yaml.YAML`` assembles them for its C parser."""

    class Loader(CParser, constructor, resolver):  # type: ignore[misc]
        def __init__(self, stream: Any, version: Any, allow_duplicate_keys: bool) -> None:
            CParser.__init__(self, stream)
            self._parser = self._composer = self
            constructor.__init__(self, loader=self)
            self.allow_duplicate_keys = allow_duplicate_keys
            resolver.__init__(self, version=version, loadumper=self)

    return Loader


# --- building data from composed nodes ----------------------------------------------------

_CORE = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = f"{_CORE}str", f"{_CORE}map", f"{_CORE}seq"
_DELEGATED = frozenset(f"{_CORE}{name}" for name in ("null", "bool", "int", "float"))
_MAX_DEPTH = 200  # deeper documents go to ruamel's constructor (not recursive)


class _Fallback(Exception):
    """The document needs ruamel's constructor (aliases, merge keys, other tags, an error)."""


class Constructor(ruamel.yaml.constructor.SafeConstructor):
    """ruamel's safe constructor, building what manifests and policies hold in a third of
    the time.

    ruamel's constructor is pure Python, each node going through generic dispatch,
    generators and checks: most of reading a small file once libyaml has composed it.
    Here strings, mappings and sequences are built directly and the other core scalars
    (null, bool, int, float) by ruamel's own functions; a document with anything else (a
    node an alias shares, merge keys, any other tag, a key that is not a scalar, a repeated
    key, deep nesting) is built by ruamel's constructor whole, so its data and its errors
    are ruamel's. ``tests/update/test_yaml_construct.py`` compares the two on every
    document of the corpus."""

    def construct_document(self, node: Any) -> Any:
        try:
            return _build(node, self, set(), 0)
        except _Fallback:
            return super().construct_document(node)


def _build(node: Node, constructor: Constructor, seen: set[int], depth: int) -> Any:
    if id(node) in seen or depth > _MAX_DEPTH or getattr(node, "merge", None) is not None:
        raise _Fallback  # shared by an alias (ruamel shares one object); merged before
    seen.add(id(node))
    tag = node.ctag.trval
    if tag == _STR:
        if node.__class__ is not ScalarNode:
            raise _Fallback  # ruamel's error
        return node.value
    if tag == _MAP:
        if node.__class__ is not MappingNode:
            raise _Fallback
        data: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.__class__ is not ScalarNode:
                raise _Fallback  # ruamel's tuple keys and its unhashable-key error
            key = _build(key_node, constructor, seen, depth + 1)
            if key in data:
                raise _Fallback  # ruamel's duplicate-key error
            data[key] = _build(value_node, constructor, seen, depth + 1)
        return data
    if tag == _SEQ:
        if node.__class__ is not SequenceNode:
            raise _Fallback
        return [_build(item, constructor, seen, depth + 1) for item in node.value]
    if tag in _DELEGATED and node.__class__ is ScalarNode:
        return constructor.yaml_constructors[tag](constructor, node)
    raise _Fallback

