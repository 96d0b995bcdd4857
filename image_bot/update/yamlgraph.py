"""Update stage, YAML as a graph: parse with positions (marks) and walk every node with every
path it is reachable by (aliases and merge keys included); knows nothing of images.

A document is composed once per text (cached) and shared by the detectors, the scan of each
policy and the writer's check of an edit.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scanner import Scanner

STR = "tag:yaml.org,2002:str"
NULL = "tag:yaml.org,2002:null"
_MERGE = "<<"
_MAX_VISITS = 200_000  # aliases can multiply a small file into a huge tree ("billion laughs")

KeyPath = tuple[int | str, ...]  # (document index, key or list index, ...)


class TooDeep(YAMLError):
    problem = "aliases expand to too many nodes"


@dataclass
class Tree:
    """One document: its root node and, by node id, every path the node is reachable by."""

    text: str
    root: Node
    paths: dict[int, list[KeyPath]] = field(default_factory=dict)
    mappings: dict[int, MappingNode] = field(default_factory=dict)
    sequences: dict[int, SequenceNode] = field(default_factory=dict)
    values: dict[int, ScalarNode] = field(default_factory=dict)  # scalars that are values
    visits: int = 0
    merges: bool = False
    memo: dict[str, Any] = field(default_factory=dict)  # what readers computed once per tree

    def walk(self, node: Node, path: KeyPath, stack: tuple[int, ...] = ()) -> None:
        self.visits += 1
        if self.visits > _MAX_VISITS or id(node) in stack:
            raise TooDeep("aliases expand to too many nodes")
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


class _Scanner(Scanner):
    """ruamel's scanner, except that tabs before a trailing comment or at the end of a line
    are whitespace in block context too, as YAML 1.2 (and kubectl's go-yaml) reads them:
    ``image: x:1.0<TAB># note``. Tabs that indent or separate tokens stay errors."""

    def scan_to_next_token(self) -> Any:
        super().scan_to_next_token()
        peek = self.reader.peek
        while peek() == "\t" and not self.flow_level:  # rare: one comparison per token
            ahead = 1
            while peek(ahead) in " \t":
                ahead += 1
            if peek(ahead) not in "#\0\r\n\x85\u2028\u2029":
                return  # a tab before a token: ruamel's error stands
            self.reader.forward(ahead)
            super().scan_to_next_token()


def safe_yaml() -> YAML:
    """A pure, safe YAML reader with the tab rule of :class:`_Scanner` (every reader of the
    update stage parses with it: the scan, the check of an edit)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Scanner = _Scanner
    return yaml


def compose_all(text: str) -> list[Node | None]:
    return list(safe_yaml().compose_all(text))


@functools.lru_cache(maxsize=128)
def trees(text: str) -> tuple[Tree | None, ...]:
    """Each document of ``text`` as a walked tree (None for an empty one); cached, since a
    file is searched once per policy and read again to verify an edit. Raises YAMLError."""
    found: list[Tree | None] = []
    for index, document in enumerate(compose_all(text)):
        if document is None:
            found.append(None)
            continue
        tree = Tree(text, document)
        tree.walk(document, (index,))
        found.append(tree)
    return tuple(found)


def load_documents(text: str) -> list[Any]:
    """The data of every document, as ``YAML(typ="safe").load_all`` reads it, built from the
    parse the scan already made (the writer compares it with the re-read edited text)."""
    documents: list[Any] = []
    for tree in trees(text):
        if tree is None:
            documents.append(None)
            continue
        # constructing flattens merge keys in place: keep the cached nodes as they were
        root = copy.deepcopy(tree.root) if tree.merges else tree.root
        documents.append(safe_yaml().constructor.construct_document(root))
    return documents


@functools.lru_cache(maxsize=1024)
def plain_tag(value: str) -> str:
    """The type a plain scalar with this text has: str only if YAML 1.1 and 1.2 agree.

    Fresh resolvers each time: ruamel's ``resolve`` extends its own rule lists in place.
    """
    tags = {str(VersionedResolver(version=version).resolve(ScalarNode, value, (True, False)))
            for version in ((1, 1), (1, 2))}
    return STR if tags == {STR} else min(tags - {STR})


def plain_reads_as_string(value: str) -> bool:
    """Whether ``value`` written plain reads as this string under YAML 1.1 and 1.2."""
    return plain_tag(value) == STR


def is_str(node: ScalarNode) -> bool:
    return bool(node.style) or node.tag == STR or plain_reads_as_string(node.value)


def problem(exc: YAMLError) -> str:
    """What went wrong and where, in one line (``found … at line 3``)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    return f"{getattr(exc, 'problem', None) or type(exc).__name__}{where}"
