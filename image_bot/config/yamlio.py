"""ruamel.yaml's ``YAML`` as every YAML reader of image-bot builds it: without the plug-in
search, and with plain scalars' tags memoised.

- Each ``ruamel.yaml.YAML()`` globs ruamel's install folder for plug-ins
  (``*/__plug_in__.py``) when it is built: ~35 µs, and a cycle builds one per text it
  parses (policies, manifests, the check of each edit). image-bot uses no plug-in.
- The parsers ask the resolver for the tag of every plain scalar they compose (about a
  quarter of composing a small file with libyaml); the answer depends only on the YAML
  version and the text, and a cycle's files repeat most keys and values.
"""

from __future__ import annotations

from typing import Any

import ruamel.yaml
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tag import Tag

_PLAIN_TAGS: dict[tuple[Any, str], Tag] = {}  # (YAML version, text) → tag
_PLAIN_TAGS_KEPT = 1 << 16
_SHARED: dict[str, Tag] = {}  # tag name → the one Tag object every node with it shares


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

    def official_plug_ins(self) -> list[str]:
        return []
