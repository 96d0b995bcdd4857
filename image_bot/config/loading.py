"""Files → validated config objects; every error reads as a breadcrumb to the bad key.

Example message (one line)::

    ==> File policies/api.yaml ==> At ImagePolicy(name='api')
        ==> At key: spec.select.semver.range: Field required
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from image_bot.config import models
from image_bot.errors import ConfigError

_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A validated policy and where it came from (for breadcrumbs)."""

    policy: models.ImagePolicy
    file: str
    document: int

    def where(self, key: str | None = None) -> str:
        return breadcrumb(self.file, f"ImagePolicy(name={self.policy.name!r})", key)


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


def load_policies(directory: Path, *, display_root: Path | None = None) -> PolicySet:
    """Load every ImagePolicy under ``directory``; broken ones become errors, not exceptions."""
    root = display_root or (directory if directory.is_dir() else directory.parent)
    loaded: list[LoadedPolicy] = []
    errors: list[ConfigError] = []
    seen: dict[str, str] = {}
    for file in _policy_files(directory):
        shown = _display(file, root)
        try:
            documents = _read_documents(file, shown)
        except ConfigError as exc:
            errors.append(exc)
            continue
        for index, document in enumerate(documents, start=1):
            try:
                policy = _validate_policy(document, shown, index)
            except ConfigError as exc:
                errors.append(exc)
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
    return PolicySet(tuple(loaded), tuple(errors))


def _policy_files(directory: Path) -> Iterable[Path]:
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise ConfigError(f"==> Directory {directory}: policy directory does not exist")
    return sorted(p for p in directory.rglob("*") if p.suffix in _YAML_SUFFIXES and p.is_file())


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
        raise ConfigError(_first_error(exc, shown, at)) from None


def _first_error(exc: pydantic.ValidationError, shown: str, at: str | None) -> str:
    """One line for the first problem; more problems are counted, not listed."""
    errors = exc.errors()
    first = errors[0]
    key = _key_path(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{breadcrumb(shown, at, key or None)}: {message}{more}"


def _key_path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
