"""Files → validated config objects; every error reads as a breadcrumb to the bad key.

Example message (one line)::

    ==> File policies/api.yaml ==> At ImagePolicy(name='api')
        ==> At key: spec.select.semver.range: Field required
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import ruamel.yaml
from ruamel.yaml.error import YAMLError

from image_bot import checkout
from image_bot.config import models
from image_bot.config.yamlio import YAML, CParser
from image_bot.errors import ConfigError, FileRefused


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A validated policy and where it came from (for breadcrumbs)."""

    policy: models.ImagePolicy
    file: str
    document: int

    def where(self, key: str | None = None) -> str:
        return breadcrumb(self.file, f"ImagePolicy(name={self.policy.name!r})", key)


class PolicyInvalid(ConfigError):
    """A policy document that names itself but does not validate: the table still shows its
    name and file."""

    def __init__(self, message: str, *, policy: str, file: str) -> None:
        super().__init__(message)
        self.policy = policy
        self.file = file


@dataclass(frozen=True, slots=True)
class PolicySet:
    policies: tuple[LoadedPolicy, ...]
    errors: tuple[ConfigError, ...]


def breadcrumb(file: str, at: str | None = None, key: str | None = None) -> str:
    parts = [f"==> File {file}"]
    if at:
        parts.append(f"==> At {at}")
    if key:
        parts.append(f"==> At key: {key}")
    return " ".join(parts)


def load_bot_config(path: Path) -> models.BotConfig:
    """Load and validate the bot config file, or raise :class:`ConfigError`."""
    documents = _read_documents(path, str(path))
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise ConfigError(f"{breadcrumb(str(path))}: expected one YAML mapping")
    try:
        config = models.BotConfig.model_validate(documents[0])
    except pydantic.ValidationError as exc:
        raise ConfigError(_first_error(exc, str(path), None)) from None
    if not config.state_dir.is_absolute():
        config = config.model_copy(update={"state_dir": path.parent.resolve() / config.state_dir})
    registries = [_resolve_registry_paths(r, path.parent.resolve()) for r in config.registries]
    return config.model_copy(update={"registries": registries})


def _resolve_registry_paths(registry: models.RegistryConfig,
                            base: Path) -> models.RegistryConfig:
    """Relative ``ca_bundle``, ``credentials_file`` and ``docker_config`` are relative to the
    bot config file, like ``state_dir``."""
    update: dict[str, Path] = {}
    for key in ("ca_bundle", "credentials_file", "docker_config"):
        value = getattr(registry, key)
        if isinstance(value, Path) and not value.expanduser().is_absolute():
            update[key] = base / value
        elif isinstance(value, Path):
            update[key] = value.expanduser()
    return registry.model_copy(update=update) if update else registry


Parsed = dict[tuple[str, str], list[models.ImagePolicy | ConfigError | None]]
"""What :func:`load_policies` made of each policy file, by (file, text): given again, a file
whose text is the same is not parsed and validated again."""


class Documents:
    """The YAML documents of policy files by the SHA-256 of their text, kept in a JSON file
    between runs (a ``run --once`` is a new process each time): a file whose text did not
    change is validated again, not parsed again (parsing is ~3/4 of loading a policy).

    Only documents JSON keeps exactly are kept (mappings with string keys, lists, strings,
    numbers, booleans, null; a YAML timestamp or binary is parsed every time). The file
    holds the documents of the files the last load read, nothing older; one written by
    another format or YAML reader, unreadable or larger than ``_DOCUMENTS_MAX_BYTES`` is
    ignored and replaced."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._known: dict[str, list[Any]] = {}  # from the file, or parsed by a load before
        self._used: dict[str, list[Any]] = {}  # read by the load under way, and keepable
        if path is not None:
            self._known = _read_documents_file(path)
        self._saved = frozenset(self._known)  # what the file holds

    def of(self, text: str, shown: str) -> list[Any]:
        """The documents of ``text`` (the file ``shown``): kept, or parsed (raises
        :class:`ConfigError`)."""
        key = _key(text)
        found = self._used.get(key)
        if found is None:
            found = self._known.get(key)
        if found is None:
            found = _parse_documents(text, shown)
            if not _plain(found):
                return found
        self._used[key] = found
        return found

    def keep(self, text: str) -> None:
        """Keep the documents of ``text`` without asking for them (a file whose policies the
        caller has at hand); never parses."""
        key = _key(text)
        if key not in self._used and key in self._known:
            self._used[key] = self._known[key]

    def next_load(self) -> None:
        """What is read from now on replaces what was read so far in the file (the files
        read ahead of a fetch, then the fetched ones): both stay at hand until then."""
        self._known |= self._used
        self._used = {}

    def save(self) -> None:
        """Keep the documents of the last load for the next run (written only when they
        are not what the file holds)."""
        if self.path is None or self._used.keys() == self._saved:
            return
        data = json.dumps({"format": _DOCUMENTS_FORMAT, "documents": self._used},
                          separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        checkout.replace_atomically(self.path, data.encode())
        self._saved = frozenset(self._used)


# what the kept documents were read by: another format, ruamel.yaml or parser is a miss
# (bump the number when what a text loads to changes)
_DOCUMENTS_FORMAT = f"1 ruamel.yaml {ruamel.yaml.__version__} {'c' if CParser else 'pure'}"
_DOCUMENTS_MAX_BYTES = 64 * 1024 * 1024


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_documents_file(path: Path) -> dict[str, list[Any]]:
    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read(_DOCUMENTS_MAX_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _DOCUMENTS_FORMAT:
        return {}
    documents = data.get("documents")
    if not isinstance(documents, dict):
        return {}
    return {key: value for key, value in documents.items() if isinstance(value, list)}


def _plain(value: Any) -> bool:
    """Whether JSON gives ``value`` back exactly (same types: a YAML bool stays a bool)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            if not all(type(key) is str for key in item):
                return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind not in (str, int, float, bool, type(None)):
            return False
    return True


def load_policies(directory: Path, *, display_root: Path | None = None,
                  root: Path | None = None,
                  max_file_bytes: int = checkout.DEFAULT_MAX_FILE_BYTES,
                  parsed: Parsed | None = None,
                  documents: Documents | None = None) -> PolicySet:
    """Load every ImagePolicy under ``directory``; broken ones become errors, not exceptions.

    Files are read only inside ``root`` (default: ``display_root``, the checkout, when
    ``directory`` is in it, else ``directory`` itself): a policy file that is a link out of
    it, a device, or larger than ``max_file_bytes`` is never read and becomes an error
    naming the file. ``parsed`` is filled with each file's documents; a file found in it
    with the same text is taken from there (files are always read: only equal bytes are
    reused). ``documents``: what the files' texts parse to, kept between runs.
    """
    files_of = _files_of(directory, display_root, root, max_file_bytes)
    shown_root = display_root or _base(directory)
    loaded: list[LoadedPolicy] = []
    errors: list[ConfigError] = []
    seen: dict[str, str] = {}
    parse = documents.of if documents is not None else _parse_documents
    files = _policy_files(directory, files_of, _display(directory, shown_root))
    errors += [ConfigError(f"{breadcrumb(_display(files_of.root / r.file, shown_root))}: "
                           f"{r.reason}") for r in files_of.refused]
    for file in files:
        shown = _display(file, shown_root)
        try:
            text = read_text(files_of, file, shown, encoding="utf-8-sig")
        except ConfigError as exc:
            errors.append(exc)
            continue
        found = parsed.get((shown, text)) if parsed is not None else None
        if found is None:
            found = _policies_in(text, shown, parse)
            if parsed is not None:
                parsed[shown, text] = found
        elif documents is not None:
            documents.keep(text)
        for index, policy in enumerate(found, start=1):
            if isinstance(policy, ConfigError):
                errors.append(policy)
                continue
            if policy is None:
                continue
            here = LoadedPolicy(policy, shown, index)
            if policy.name in seen:
                errors.append(
                    ConfigError(f"{here.where('metadata.name')}: duplicate name, "
                                f"first defined in {seen[policy.name]}")
                )
                continue
            seen[policy.name] = shown
            loaded.append(here)
    return _with_stages(loaded, errors)


def _policies_in(text: str, shown: str,
                 parse: Callable[[str, str], list[Any]],
                 ) -> list[models.ImagePolicy | ConfigError | None]:
    """Each document of a policy file: its policy, its error, or None (not a policy)."""
    try:
        documents = parse(text, shown)
    except ConfigError as exc:
        return [exc]
    found: list[models.ImagePolicy | ConfigError | None] = []
    for index, document in enumerate(documents, start=1):
        try:
            found.append(_validate_policy(document, shown, index))
        except ConfigError as exc:
            found.append(exc)
    return found


def _with_stages(loaded: Sequence[LoadedPolicy], errors: Sequence[ConfigError]) -> PolicySet:
    """Promotion chains checked as a whole: a cycle fails every policy on it (naming the
    chain), and a ``promote`` without a strategy takes its upstream's (``select`` and
    ``filter``) when the upstream is in this set; otherwise it is an error."""
    by_name = {p.policy.name: p for p in loaded}
    bad: dict[str, ConfigError] = {}
    for here in loaded:
        chain = _upstream_chain(here.policy.name, by_name)
        if chain[-1] in chain[:-1]:
            cycle = chain[chain.index(chain[-1]):]
            bad[here.policy.name] = PolicyInvalid(
                f"{here.where('spec.select.promote.from')}: promotion cycle "
                f"{' → '.join(cycle)}; a stage cannot promote from itself or its "
                f"downstream", policy=here.policy.name, file=here.file)
    resolved = []
    for here in loaded:
        if here.policy.name in bad:
            continue
        try:
            resolved.append(_inherit(here, chain=_upstream_chain(here.policy.name, by_name),
                                     by_name=by_name))
        except ConfigError as exc:
            bad[here.policy.name] = exc
    return PolicySet(tuple(resolved), (*errors, *bad.values()))


def _upstream_chain(name: str, by_name: dict[str, LoadedPolicy]) -> list[str]:
    """``name``, its upstream, that one's upstream…: ends at a policy without ``promote``,
    one outside the set, or the first repeated name (a cycle)."""
    chain = [name]
    while (here := by_name.get(chain[-1])) is not None \
            and (promote := here.policy.spec.select.promote) is not None:
        chain.append(promote.from_)
        if chain[-1] in chain[:-1]:
            break
    return chain


def _inherit(here: LoadedPolicy, *, chain: list[str],
             by_name: dict[str, LoadedPolicy]) -> LoadedPolicy:
    spec = here.policy.spec
    if spec.select.promote is None or spec.select.chosen:
        return here
    source = next((by_name[n] for n in chain[1:] if n in by_name
                   and by_name[n].policy.spec.select.chosen), None)
    if source is None:
        raise PolicyInvalid(
            f"{here.where('spec.select')}: promote from {spec.select.promote.from_!r} "
            f"without a strategy needs the upstream policy in this repository's policies; "
            f"name a strategy (semver, numerical, alphabetical or newest-build) next to "
            f"promote", policy=here.policy.name, file=here.file)
    upstream = source.policy.spec
    if upstream.select.digest is not None:
        raise PolicyInvalid(
            f"{here.where('spec.select.promote')}: {source.policy.name!r} follows a digest; "
            f"promote versions (name a strategy next to promote)",
            policy=here.policy.name, file=here.file)
    select = upstream.select.model_copy(update={"promote": spec.select.promote})
    inherited = spec.model_copy(update={"select": select} | (
        {"filter": upstream.filter} if "filter" not in spec.model_fields_set else {}))
    return dataclasses.replace(here, policy=here.policy.model_copy(update={"spec": inherited}))


def fingerprint(directory: Path, *, display_root: Path | None = None,
                max_file_bytes: int = checkout.DEFAULT_MAX_FILE_BYTES) -> str:
    """A hash of the policy files :func:`load_policies` would read (names and bytes)."""
    return _files_of(directory, display_root, None, max_file_bytes).fingerprint(directory)


def _files_of(directory: Path, display_root: Path | None, root: Path | None,
              max_file_bytes: int) -> checkout.Index:
    if root is None:  # an absolute policies path (a mounted ConfigMap) is its own root
        inside = display_root is not None and _inside(directory, display_root)
        root = display_root if display_root is not None and inside else _base(directory)
    return checkout.Index(root, max_file_bytes=max_file_bytes)


def _base(directory: Path) -> Path:
    return directory if directory.is_dir() and not directory.is_symlink() else directory.parent


def _policy_files(directory: Path, index: checkout.Index, shown: str) -> Iterable[Path]:
    if not directory.exists() and not directory.is_symlink():
        raise ConfigError(f"==> Directory {shown}: policy directory does not exist")
    return index.under(directory)


def read_text(index: checkout.Index, file: Path, shown: str, *,
              encoding: str = "utf-8") -> str:
    """A file of a checkout as text, read through ``index`` (never through a link out of
    it, never a device, never past its cap), or a :class:`ConfigError` naming ``shown``:
    policy files here, Compose and manifest files in the sync agent."""
    try:
        return index.read(index.file(file)).decode(encoding)
    except FileRefused as exc:
        raise ConfigError(f"{breadcrumb(shown)}: {exc.reason}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{breadcrumb(shown)}: not UTF-8 text") from None


def _inside(path: Path, root: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root))


def _display(file: Path, root: Path) -> str:
    try:
        return str(file.relative_to(root))
    except ValueError:
        return str(file)


def _read_documents(path: Path, shown: str) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{breadcrumb(shown)}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{breadcrumb(shown)}: not UTF-8 text") from None
    return _parse_documents(text, shown)


def _parse_documents(text: str, shown: str) -> list[Any]:
    try:  # libyaml's parser where ruamel.yaml.clib is installed: ~5 × faster
        return [doc for doc in YAML(typ="safe").load_all(text) if doc is not None]
    except YAMLError:
        pass  # libyaml refuses some YAML the pure parser reads (":" in flow scalars); the
        # pure parser has the last word, and its messages
    try:
        return [doc for doc in YAML(typ="safe", pure=True).load_all(text) if doc is not None]
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{breadcrumb(shown)}: invalid YAML{where}: {problem}") from None


def _validate_policy(document: Any, shown: str, index: int) -> models.ImagePolicy | None:
    if not isinstance(document, dict):
        raise ConfigError(f"{breadcrumb(shown, f'document {index}')}: expected a mapping")
    api = str(document.get("apiVersion", ""))
    if document.get("kind") != "ImagePolicy" and not api.startswith("image-bot/"):
        return None  # some other document kept next to the policies; not ours
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    at = f"ImagePolicy(name={name!r})" if name else f"document {index}"
    try:
        return models.ImagePolicy.model_validate(document)
    except pydantic.ValidationError as exc:
        if isinstance(name, str) and name:
            raise PolicyInvalid(_first_error(exc, shown, at), policy=name,
                                file=shown) from None
        raise ConfigError(_first_error(exc, shown, at)) from None


def _first_error(exc: pydantic.ValidationError, shown: str, at: str | None) -> str:
    """One line listing every problem (each once, with its key); an unknown key gets the
    nearest known one (``did you mean `semver`?``)."""
    problems: dict[str, None] = {}
    for error in exc.errors():
        key = _key_path(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and error["loc"]:
            message = "unknown key" + _did_you_mean(str(error["loc"][-1]))
        problems.setdefault(f"==> At key: {key}: {message}" if key else message)
    first, *rest = problems
    text = f"{breadcrumb(shown, at)} {first}" if first.startswith("==>") else (
        f"{breadcrumb(shown, at)}: {first}")
    return "; ".join([text, *rest])


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, _known_keys(), n=1, cutoff=0.7)
    return f"; did you mean `{close[0]}`?" if close else ""


@functools.cache
def _known_keys() -> tuple[str, ...]:
    """Every key a config or policy document may use (field aliases and names)."""
    keys: set[str] = set()
    for value in vars(models).values():
        if isinstance(value, type) and issubclass(value, pydantic.BaseModel):
            for name, info in value.model_fields.items():
                keys.add(info.alias or name)
    return tuple(sorted(keys))


def _key_path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
