"""Update stage, YAML as a graph: parse with positions (marks) and walk every node with every
path it is reachable by (aliases and merge keys included); knows nothing of images.

A document is composed once per text (cached) and shared by the detectors, the scan of each
policy and the writer's check of an edit. Composing uses ruamel.yaml's C parser (libyaml,
from ruamel.yaml.clib) where it is installed, about ten times faster, and the pure Python
one otherwise (and wherever libyaml refuses a text the pure parser reads, which then
decides); :func:`compose_all` makes the C parser's nodes read as the pure one's
(styles, anchors), and the corpus tests check both give identical edits.
"""

from __future__ import annotations

import collections
import copy
import functools
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import ruamel.yaml.main
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scanner import Scanner

from image_bot.config.yamlio import YAML

STR = "tag:yaml.org,2002:str"
NULL = "tag:yaml.org,2002:null"
_MERGE = "<<"
_MAX_VISITS = 200_000  # aliases can multiply a small file into a huge tree ("billion laughs")

KeyPath = tuple[int | str, ...]  # (document index, key or list index, ...)

# what YAML(typ="safe") parses with: libyaml's CParser, None without ruamel.yaml.clib
_C_PARSER = getattr(ruamel.yaml.main, "CParser", None)
PARSERS: tuple[str, ...] = ("c", "pure") if _C_PARSER is not None else ("pure",)
_parser = PARSERS[0]
_ANCHOR = re.compile(r"(?:!\S*\s+)*&([^\s,\[\]{}]+)")  # an anchor among a node's properties


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


def parser() -> str:
    """The parser in use: "c" (libyaml) or "pure"."""
    return _parser


def use_parser(name: str) -> None:
    """Compose with ``name`` ("c" or "pure") from now on (tests compare the two)."""
    global _parser
    if name not in PARSERS:
        raise ValueError(f"YAML parser {name!r} is not available here (have: {PARSERS})")
    _parser = name
    trees.cache_clear()


def compose_all(text: str) -> list[Node | None]:
    if _parser == "c":
        try:
            documents = list(YAML(typ="safe").compose_all(text))
        except YAMLError:
            pass  # libyaml refuses some YAML the pure parser reads (":" in flow scalars)
        else:
            _like_pure(text, documents)
            return documents
    return list(safe_yaml().compose_all(text))


def load_all(text: str) -> list[Any]:
    """The data of every document of ``text`` (``YAML(typ="safe").load_all``), with the
    parser in use."""
    if _parser == "c":
        try:
            return list(YAML(typ="safe").load_all(text))
        except YAMLError:
            pass  # as in compose_all: the pure parser has the last word
    return list(safe_yaml().load_all(text))


def _like_pure(text: str, documents: list[Node | None]) -> None:
    """Give the C parser's nodes what the pure parser's have: ``style`` None for plain
    scalars (not ""), and their ``anchor`` (libyaml's composer drops it)."""
    seen: set[int] = set()
    stack: list[Node] = [d for d in documents if d is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            node.style = node.style or None
        elif isinstance(node, MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
        start = node.start_mark.index
        if text[start:start + 1] in ("&", "!"):
            match = _ANCHOR.match(text, start)
            if match and match.end() <= node.end_mark.index:
                node.anchor = match[1]


class _Cache:
    """The trees of the texts read last, up to ``budget`` characters of text in all: enough
    for every file a cycle parses (it is searched once per policy, once for rollbacks and
    read again to verify an edit), bounded whatever the files."""

    def __init__(self, budget: int) -> None:
        self.budget, self.size = budget, 0
        self.lock = threading.Lock()  # cycles of several repositories may scan in threads
        self.entries: collections.OrderedDict[str, tuple[Tree | None, ...]] = (
            collections.OrderedDict())

    def __call__(self, text: str) -> tuple[Tree | None, ...]:
        with self.lock:
            found = self.entries.get(text)
            if found is not None:
                self.entries.move_to_end(text)
                return found
        found = _trees(text)
        with self.lock:
            if len(text) <= self.budget and text not in self.entries:
                self.entries[text] = found
                self.size += len(text)
                while self.size > self.budget:
                    self.size -= len(self.entries.popitem(last=False)[0])
        return found

    def cache_clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.size = 0


def _trees(text: str) -> tuple[Tree | None, ...]:
    found: list[Tree | None] = []
    for index, document in enumerate(compose_all(text)):
        if document is None:
            found.append(None)
            continue
        tree = Tree(text, document)
        tree.walk(document, (index,))
        found.append(tree)
    return tuple(found)


trees = _Cache(budget=2_000_000)
"""Each document of a text as a walked tree (None for an empty one); cached, since a file
is searched once per policy and read again to verify an edit. Raises YAMLError."""


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
        documents.append(construct(root))
    return documents


def construct(root: Node) -> Any:
    """The data of a document composed by :func:`compose_all`, as ``load_all`` builds it
    (merge keys are flattened in the nodes themselves)."""
    return safe_yaml().constructor.construct_document(root)


@functools.lru_cache(maxsize=1024)
def plain_tag(value: str) -> str:
    """The type a plain scalar with this text has: str only if YAML 1.1 and 1.2 agree."""
    tags = {_resolved(version, value) for version in ((1, 1), (1, 2))}
    return STR if tags == {STR} else min(tags - {STR})


def _resolved(version: tuple[int, int], value: str) -> str:
    """ruamel's ``VersionedResolver.resolve`` of a plain scalar, from its rules for
    ``version`` (read once): ruamel's own method extends its rule lists in place on every
    call (``resolvers += …``), so it can only be used on a fresh resolver, and building one
    (twice a value) was most of the cost."""
    rules = _rules(version)
    for tag, regexp in [*rules.get(value[0] if value else "", ()), *rules.get(None, ())]:
        if regexp.match(value):
            return str(tag)
    return STR


@functools.cache
def _rules(version: tuple[int, int]) -> dict[str | None, list[tuple[str, re.Pattern[str]]]]:
    """ruamel's implicit rules for plain scalars in YAML ``version``, by first character
    (None: rules for any), as a resolver of that version builds them; never changed."""
    rules: dict[str | None, list[tuple[str, re.Pattern[str]]]] = \
        VersionedResolver(version=version).versioned_resolver
    return {first: list(listed) for first, listed in rules.items()}


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
