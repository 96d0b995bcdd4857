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

_PLAIN_TAGS: dict[tuple[Any, str], str] = {}  # (YAML version, text) → tag
_PLAIN_TAGS_KEPT = 1 << 16


class Resolver(VersionedResolver):
    """ruamel's resolver, with the tag of each plain scalar memoised (bounded)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not ScalarNode or not implicit[0] or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        key = (self.processing_version, value)
        suffix = _PLAIN_TAGS.get(key)
        if suffix is None:
            if len(_PLAIN_TAGS) >= _PLAIN_TAGS_KEPT:
                _PLAIN_TAGS.clear()
            suffix = _PLAIN_TAGS[key] = super().resolve(kind, value, implicit).suffix
        return Tag(suffix=suffix)  # a fresh one, as ruamel's own resolver returns


class YAML(ruamel.yaml.YAML):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.Resolver is VersionedResolver:  # the safe and round-trip readers
            self.Resolver = Resolver

    def official_plug_ins(self) -> list[str]:
        return []
