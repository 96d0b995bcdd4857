"""Sync stage, desired state: Compose files under the sync path → frozen ``Application`` values.

Pure parsing of files in a checkout (no Docker, no Git): interpolation from the agent's
environment and a ``.env`` beside the file, ``*.override.yaml`` merged in, the official
Compose JSON schema (vendored in ``schema/``) checked, then the keys the agent supports
normalised. Every problem of a file is reported at once, each with its service and key; a
file with any problem is refused whole, so the agent never deploys something other than
what the file says.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml.error import YAMLError

from image_bot import checkout as checkouts
from image_bot import refs
from image_bot.config import durations, loading
from image_bot.config.loading import breadcrumb
from image_bot.config.yamlio import YAML
from image_bot.errors import ConfigError, FileRefused

SUFFIXES = (".yaml", ".yml")
OVERRIDE = ".override"  # compose.override.yaml is merged into compose.yaml
MAX_FILE_BYTES = 1 << 20  # a Compose, .env or env_file
MAX_CONFIG_BYTES = 16 << 20  # a file behind configs:/secrets: (hashed, never read whole)
MAX_NESTING = 16  # ${A:-${B:-...}} depth
_SCHEMA = Path(__file__).with_name("schema") / "compose-spec.json"
_DEFAULT_FILE_STEMS = {"compose", "docker-compose"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_VARIABLE = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_BRACED = re.compile(r"([_A-Za-z][_A-Za-z0-9]*)(?:(:?[-?+])(.*))?", re.S)
_NS = 1_000_000_000  # nanoseconds in a second (Docker's durations)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
SERVICE_KEYS = frozenset({
    "image", "command", "entrypoint", "environment", "env_file", "ports", "volumes",
    "networks", "network_mode", "restart", "labels", "healthcheck", "depends_on", "user",
    "working_dir", "container_name", "deploy", "mem_limit", "mem_reservation", "cpus",
    "logging", "extra_hosts", "dns", "dns_search", "ulimits", "cap_add", "cap_drop",
    "security_opt", "read_only", "tmpfs", "init", "stop_signal", "stop_grace_period",
    "hostname", "domainname", "shm_size", "sysctls", "pid", "ipc", "profiles", "configs",
    "secrets", "privileged", "tty", "stdin_open", "expose",
})
_TOP_KEYS = frozenset({"services", "volumes", "networks", "version", "name", "configs",
                       "secrets"})
_HASH_EXCLUDED = frozenset({"conditions", "completes"})  # ordering, not the container
# Fields added to the hashed dataclasses since containers were first labelled with a hash:
# left out of the hash while unset, so upgrading the agent recreates nothing.
_ADDED = {"Mount": frozenset({"digest"}), "Service": frozenset({
    "container", "mem_limit", "mem_reservation", "nano_cpus", "shm_size", "log_driver",
    "log_options", "extra_hosts", "dns", "dns_search", "ulimits", "cap_add", "cap_drop",
    "security_opt", "read_only", "privileged", "tty", "stdin_open", "init", "tmpfs",
    "stop_signal", "stop_grace_period", "hostname", "domainname", "sysctls", "pid", "ipc",
    "expose"})}


@dataclass(frozen=True, slots=True)
class Port:
    container: str  # "80/tcp"
    host_ip: str
    host_port: str


@dataclass(frozen=True, slots=True)
class Mount:
    type: str  # "bind" or "volume"
    source: str  # absolute path for binds, project-scoped name for volumes
    target: str
    read_only: bool = False
    digest: str = ""  # configs/secrets: the file's content, so an edit recreates


@dataclass(frozen=True, slots=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_ns: int = 0
    timeout_ns: int = 0
    retries: int = 0
    start_period_ns: int = 0


@dataclass(frozen=True, slots=True)
class Ulimit:
    name: str
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class Service:
    """One service as the agent will run it: every value already interpolated and normalised.

    A field at its default does not enter :attr:`config_hash`, so a new optional key in a
    later version of the agent does not recreate containers that do not use it.
    """

    project: str
    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: tuple[tuple[str, str], ...] = ()
    ports: tuple[Port, ...] = ()
    mounts: tuple[Mount, ...] = ()
    networks: tuple[str, ...] = ()
    network_mode: str | None = None
    restart: str = "no"
    labels: tuple[tuple[str, str], ...] = ()
    healthcheck: Healthcheck | None = None
    depends_on: tuple[str, ...] = ()
    user: str | None = None
    working_dir: str | None = None
    container: str | None = None  # container_name
    conditions: tuple[tuple[str, str], ...] = ()  # (dependency, condition), sorted
    completes: bool = False  # a dependent waits for it to exit 0
    mem_limit: int | None = None
    mem_reservation: int | None = None
    nano_cpus: int | None = None
    shm_size: int | None = None
    log_driver: str | None = None
    log_options: tuple[tuple[str, str], ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    ulimits: tuple[Ulimit, ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    read_only: bool = False
    privileged: bool = False
    tty: bool = False
    stdin_open: bool = False
    init: bool | None = None
    tmpfs: tuple[str, ...] = ()
    stop_signal: str | None = None
    stop_grace_period: int | None = None  # seconds
    hostname: str | None = None
    domainname: str | None = None
    sysctls: tuple[tuple[str, str], ...] = ()
    pid: str | None = None
    ipc: str | None = None
    expose: tuple[str, ...] = ()

    @property
    def container_name(self) -> str:
        return self.container or f"{self.project}-{self.name}"

    @property
    def config_hash(self) -> str:
        """A stable digest of everything that shapes the container (not the Git revision)."""
        canonical = json.dumps(_canonical(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    """Dataclasses as mappings (as ``asdict``); a field added after the first release
    (``_ADDED``) only when it is set, ordering-only fields never."""
    if is_dataclass(value) and not isinstance(value, type):
        added = _ADDED.get(type(value).__name__, frozenset())
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value)
                if f.name not in _HASH_EXCLUDED
                and (f.name not in added or getattr(value, f.name) != f.default)}
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Application:
    """One Compose file: a project whose services are in ``depends_on`` order."""

    name: str
    file: str
    services: tuple[Service, ...]
    volumes: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Broken:
    """A Compose file that could not be used: its project is left exactly as it runs."""

    name: str
    file: str
    error: str  # every problem of the file, one per line


@dataclass(frozen=True, slots=True)
class DesiredState:
    applications: tuple[Application, ...] = ()
    broken: tuple[Broken, ...] = field(default_factory=tuple)


class _Problems(Exception):
    """Several problems of one file, each a full breadcrumb line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load(checkout: Path, path: str, *, environ: Mapping[str, str] | None = None,
         max_file_bytes: int = checkouts.DEFAULT_MAX_FILE_BYTES) -> DesiredState:
    """Every Compose file (a YAML mapping with ``services``) under ``checkout/path``, read
    through a checkout index: a link out of the checkout, a device or a file over the cap
    is a broken application, never read.

    ``environ`` (default: the agent's environment) wins over each file's ``.env``.
    """
    root = checkout.resolve()
    base = (checkout / path).resolve()
    if not base.is_relative_to(root):
        raise ConfigError(f"sync path {path!r} leaves the repository")
    if not base.exists():
        raise ConfigError(f"sync path {path!r} does not exist in the repository")
    index = checkouts.Index(checkout, max_file_bytes=max_file_bytes, suffixes=SUFFIXES)
    files = index.under(checkout / path)
    present = set(files)
    apps: list[Application] = []
    broken = [Broken(project_name(Path(r.file)), r.file, f"{breadcrumb(r.file)}: {r.reason}")
              for r in index.refused]
    for file in files:
        if _override_base(file) in present:
            continue  # merged into its base file below
        display = index.name(file)
        name = project_name(file)
        overrides = [p for p in files if _override_base(p) == file]
        try:
            document = _read(index, file, display)
            if document is None:
                continue
            apps.append(_application(document, overrides, name=name, file=display,
                                     directory=file.parent, root=root, index=index,
                                     environ=os.environ if environ is None else environ))
        except ConfigError as exc:
            broken.append(Broken(name, display, str(exc)))
    _check_unique(apps, broken)
    return DesiredState(tuple(apps), tuple(broken))


def project_name(file: Path) -> str:
    """``web/compose.yaml`` → ``web``; ``web.yaml`` → ``web``; ``compose.yaml`` → dir name."""
    raw = file.parent.name if file.stem in _DEFAULT_FILE_STEMS else file.stem
    return re.sub(r"[^a-z0-9_.-]+", "-", raw.lower()).strip("-._") or "default"


def _override_base(file: Path) -> Path | None:
    """``compose.override.yaml`` → ``compose.yaml`` (either suffix); else ``None``."""
    if not file.stem.endswith(OVERRIDE):
        return None
    stem = file.stem.removesuffix(OVERRIDE)
    for suffix in SUFFIXES:
        candidate = file.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _check_unique(apps: list[Application], broken: list[Broken]) -> None:
    """Two files naming one project would fight over its containers: both are broken."""
    files: dict[str, list[str]] = {}
    for app in apps:
        files.setdefault(app.name, []).append(app.file)
    for app in [a for a in apps if len(files[a.name]) > 1]:
        apps.remove(app)
        others = ", ".join(f for f in files[app.name] if f != app.file)
        broken.append(Broken(app.name, app.file, f"{breadcrumb(app.file)}: project name "
                             f"{app.name!r} is also used by {others}"))


def _read_text(index: checkouts.Index, file: Path, display: str,
               limit: int = MAX_FILE_BYTES) -> str:
    """A file of the checkout as text, through the index: never through a link out of the
    checkout, never a device, never more than ``limit`` bytes."""
    text = loading.read_text(index, file, display)
    if len(text.encode("utf-8")) > limit:
        raise ConfigError(f"{breadcrumb(display)}: larger than {limit} bytes")
    return text


def _read(index: checkouts.Index, file: Path, display: str, *,
          override: bool = False) -> dict[str, Any] | None:
    try:
        documents = list(YAML(typ="safe", pure=True).load_all(
            _read_text(index, file, display)))
    except YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{breadcrumb(display)}: not valid YAML: {problem}") from None
    mappings = [d for d in documents if isinstance(d, dict) and (override or "services" in d)]
    if not mappings:
        if override:
            raise ConfigError(f"{breadcrumb(display)}: an override file holds one mapping")
        return None
    if len(documents) != 1:
        raise ConfigError(f"{breadcrumb(display)}: a Compose file holds one YAML document")
    return mappings[0]


# --- interpolation ----------------------------------------------------------------------


class _InterpolationError(Exception):
    pass


def read_env_text(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export``, quotes and ``#`` comments allowed), as Compose."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value[: value.index(" #")].rstrip()
        values[key.strip()] = value
    return values


def interpolate(text: str, env: Mapping[str, str], *, depth: int = 0) -> str:
    """``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?e}``, ``${VAR?e}``,
    ``${VAR:+a}``, ``${VAR+a}`` and ``$$``, as Compose does (an unset variable is empty)."""
    if depth > MAX_NESTING:
        raise _InterpolationError(f"nested deeper than {MAX_NESTING} levels")
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        following = text[i + 1: i + 2]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "{":
            end = _closing_brace(text, i + 2)
            out.append(_braced(text[i + 2: end], env, depth))
            i = end + 1
        elif match := _VARIABLE.match(text, i + 1):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            raise _InterpolationError("'$' must be followed by a variable name or '{' (write "
                                      "'$$' for a literal '$')")
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise _InterpolationError(f"'${{{text[start:start + 20]}' has no closing '}}'")


def _braced(body: str, env: Mapping[str, str], depth: int) -> str:
    match = _BRACED.fullmatch(body)
    if not match:
        raise _InterpolationError(f"'${{{body[:40]}}}' is not ${{VAR}}, ${{VAR:-default}}, "
                                  f"${{VAR:?error}} or similar")
    name, operator, argument = match.groups()
    value = env.get(name)
    if operator is None:
        return value or ""
    empty_counts = operator.startswith(":")
    is_set = value is not None and (value != "" or not empty_counts)
    if operator.endswith("-"):
        return value if is_set and value is not None else interpolate(argument, env,
                                                                      depth=depth + 1)
    if operator.endswith("+"):
        return interpolate(argument, env, depth=depth + 1) if is_set else ""
    if not is_set:  # ? and :?
        detail = interpolate(argument, env, depth=depth + 1) if argument else ""
        state = "unset or empty" if empty_counts else "unset"
        raise _InterpolationError(f"required variable {name} is {state}"
                                  + (f": {detail}" if detail else ""))
    return value or ""


def _interpolate_tree(value: Any, env: Mapping[str, str], file: str, path: list[str | int],
                      problems: list[str]) -> Any:
    if isinstance(value, str):
        try:
            return interpolate(value, env)
        except _InterpolationError as exc:
            problems.append(f"{_where(file, path)}: {exc}")
            return value
    if isinstance(value, dict):
        return {k: _interpolate_tree(v, env, file, [*path, str(k)], problems)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_tree(v, env, file, [*path, i], problems)
                for i, v in enumerate(value)]
    return value


def _where(file: str, path: list[str | int]) -> str:
    """A breadcrumb for a path in the document: service and key when under ``services``."""
    keys = list(path)
    service = None
    if len(keys) >= 2 and keys[0] == "services":
        service = f"service {keys[1]!r}"
        keys = keys[2:]
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return breadcrumb(file, service, text or None)


# --- merging override files -------------------------------------------------------------

_REPLACED = {"command", "entrypoint", "healthcheck.test"}
_AS_MAPPING = {"environment", "labels", "extra_hosts", "sysctls"}


def _merge(base: Any, override: Any, path: str = "") -> Any:
    """Compose's merge: mappings merge, lists append (volumes/ports keyed), scalars replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            child = f"{path}.{key}" if path else str(key)
            merged[key] = _merge(base[key], value, _generic(child)) if key in base else value
        return merged
    leaf = path.rsplit(".", 1)[-1]
    if leaf in _AS_MAPPING and isinstance(base, list | dict):
        return {**_as_mapping(base), **_as_mapping(override)}
    if isinstance(base, list) and isinstance(override, list) and path not in _REPLACED \
            and leaf not in ("command", "entrypoint"):
        if leaf == "volumes":
            by_target = {_volume_target(v): v for v in base}
            by_target.update({_volume_target(v): v for v in override})
            return list(by_target.values())
        return base + [v for v in override if v not in base]
    return override


def _generic(path: str) -> str:
    """``services.web.volumes`` → ``volumes``: merge rules do not depend on service names."""
    parts = path.split(".")
    return ".".join(parts[2:]) if len(parts) > 2 and parts[0] == "services" else path


def _as_mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(v).split("=", 1)[0]: str(v).split("=", 1)[1] if "=" in str(v) else None
                for v in value}
    return {}


def _volume_target(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("target"))
    parts = str(value).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


# --- schema ---------------------------------------------------------------------------------


@functools.cache
def _validator() -> Any:
    schema = json.loads(_SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


@functools.cache
def _service_schema_keys() -> frozenset[str]:
    return frozenset(_validator().schema["definitions"]["service"]["properties"])


def _schema_problems(document: Mapping[str, Any], file: str) -> list[str]:
    """Every place the document breaks the official Compose schema (values never echoed)."""
    problems = []
    for error in sorted(_validator().iter_errors(document), key=lambda e: list(map(
            str, e.absolute_path))):
        path: list[str | int] = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            patterns = error.schema.get("patternProperties", {})
            unexpected = [k for k in error.instance if k not in known
                          and not any(re.search(p, str(k)) for p in patterns)]
            problems += [f"{_where(file, [*path, str(key)])}: not a Compose key" for key in
                         unexpected]
            continue
        problems.append(f"{_where(file, path)}: {_describe(error)}")
    return problems


def _describe(error: Any) -> str:
    kind, expected = error.validator, error.validator_value
    if kind == "type":
        return f"expected {' or '.join(expected) if isinstance(expected, list) else expected}"
    if kind == "enum":
        return f"expected one of {', '.join(map(str, expected))}"
    if kind == "required":
        return str(error.message)
    if kind in ("oneOf", "anyOf"):
        types = sorted({str(s.get("type")) for s in expected if isinstance(s, dict)
                        and isinstance(s.get("type"), str)})
        return f"expected {' or '.join(types)}" if types else "not a valid value here"
    if kind == "pattern":
        return f"does not match the pattern {expected}"
    return f"fails the schema's {kind} check ({expected})"


# --- one application --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    project: str
    file: str
    directory: Path
    root: Path
    index: checkouts.Index  # files are read through it: never from outside the checkout
    volumes: Mapping[str, str]  # declared name → engine name ("" when external)
    networks: frozenset[str]
    configs: Mapping[str, Path | None]
    secrets: Mapping[str, Path | None]

    def error(self, service: str, key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{breadcrumb(self.file, f'service {service!r}', key)}: {message}")


def _application(document: Mapping[str, Any], overrides: list[Path], *, name: str, file: str,
                 directory: Path, root: Path, index: checkouts.Index,
                 environ: Mapping[str, str]) -> Application:
    """Interpolate, merge, validate, normalise; raise one ConfigError with every problem."""
    # 1. variables: the agent's environment wins over .env beside the file
    problems: list[str] = []
    dotenv = directory / ".env"
    env: dict[str, str] = {}
    if dotenv.is_file():
        env.update(read_env_text(_read_text(index, dotenv, _display(dotenv, root))))
    env.update(environ)
    # 2. interpolate each file, then merge overrides in order
    merged = _interpolate_tree(document, env, file, [], problems)
    for path in overrides:
        shown = _display(path, root)
        override = _read(index, path, shown, override=True)
        merged = _merge(merged, _interpolate_tree(override, env, shown, [], problems))
    if problems:
        raise ConfigError("\n".join(problems))
    # 3. the official schema; once the shape is right, what the agent supports and the
    # values, all reported together
    problems = _schema_problems(merged, file) + _unsupported(merged, file)
    if len(problems) > len(_unsupported(merged, file)):  # the shape is wrong: stop here
        raise ConfigError("\n".join(problems))
    profiles = {p.strip() for p in env.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    try:
        app = _build(merged, name=name, file=file, directory=directory, root=root,
                     index=index, profiles=profiles)
    except _Problems as exc:
        problems += exc.lines
    if problems:
        raise ConfigError("\n".join(problems))
    return app


def _display(path: Path, root: Path) -> str:
    resolved = path.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(path)


_DEPLOY_KEYS = {"resources"}
_RESOURCE_KEYS = {"limits": {"cpus", "memory"}, "reservations": {"cpus", "memory"}}
_HEALTH_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}


def _unsupported(document: Mapping[str, Any], file: str) -> list[str]:
    """Compose keys the agent does not run (the schema already refused unknown ones)."""
    problems = [f"{breadcrumb(file, None, str(k))}: not supported by the sync agent"
                for k in document if k not in _TOP_KEYS and not str(k).startswith("x-")
                and k in _validator().schema["properties"]]
    for name, spec in _mapping(document.get("services")).items():
        if not isinstance(spec, dict):
            continue
        here = f"service {name!r}"
        for key in spec:
            key = str(key)
            if key == "build":
                problems.append(f"{breadcrumb(file, here, 'build')}: the sync agent does not "
                                f"build images (build images in CI; give an `image:`)")
            elif key not in SERVICE_KEYS and key in _service_schema_keys():
                problems.append(f"{breadcrumb(file, here, key)}: not supported by the sync "
                                f"agent")
        deploy = _mapping(spec.get("deploy"))
        for key in deploy:
            if key not in _DEPLOY_KEYS:
                problems.append(f"{breadcrumb(file, here, f'deploy.{key}')}: not supported by "
                                f"the sync agent (only deploy.resources limits/reservations)")
        for kind, values in _mapping(deploy.get("resources")).items():
            allowed = _RESOURCE_KEYS.get(kind, set())
            for key in _mapping(values):
                if key not in allowed:
                    problems.append(f"{breadcrumb(file, here, f'deploy.resources.{kind}.{key}')}"
                                    f": not supported by the sync agent (cpus and memory only)")
        for key in _mapping(spec.get("healthcheck")):
            if key not in _HEALTH_KEYS:
                problems.append(f"{breadcrumb(file, here, f'healthcheck.{key}')}: not "
                                f"supported by the sync agent")
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _build(document: Mapping[str, Any], *, name: str, file: str, directory: Path, root: Path,
           index: checkouts.Index, profiles: set[str]) -> Application:
    problems: list[str] = []

    def top(key: str, read: Callable[[], Any], default: Any) -> Any:
        try:
            return read()
        except ConfigError as exc:
            problems.append(str(exc))
            return default

    volumes = top("volumes", lambda: _volumes(document.get("volumes"), file, name), {})
    networks = top("networks", lambda: _names(document.get("networks"), file, "networks"), [])
    configs = _files(document.get("configs"), file, "configs", directory, index, problems)
    secrets = _files(document.get("secrets"), file, "secrets", directory, index, problems)
    context = _Context(project=name, file=file, directory=directory, root=root, index=index,
                       volumes=volumes, networks=frozenset(networks), configs=configs,
                       secrets=secrets)
    parsed: dict[str, Service] = {}
    inactive: dict[str, list[str]] = {}
    for key, value in document["services"].items():
        wanted = [str(p) for p in (value or {}).get("profiles") or []]
        if wanted and not profiles.intersection(wanted):
            inactive[str(key)] = wanted
            continue
        try:
            parsed[str(key)] = _service(context, str(key), value)
        except _Problems as exc:
            problems += exc.lines
    if problems:
        raise _Problems(problems)
    ordered = _in_dependency_order(parsed, inactive, file)
    names = [s.container_name for s in ordered]
    for service in ordered:
        if names.count(service.container_name) > 1:
            problems.append(f"{breadcrumb(file, f'service {service.name!r}', 'container_name')}"
                            f": {service.container_name!r} is used by another service")
    if problems:
        raise _Problems(problems)
    return Application(name, file, ordered,
                       tuple(sorted(v for v in volumes.values()
                                    if not v.startswith("external:"))),
                       tuple(f"{name}_{n}" for n in networks))


def _names(value: Any, file: str, key: str) -> list[str]:
    if value is None:
        return []
    for name, options in value.items():
        if options not in (None, {}):
            raise ConfigError(f"{breadcrumb(file, None, f'{key}.{name}')}: options are not "
                              f"supported (only named {key} with defaults)")
    return [str(name) for name in value]


def _volumes(value: Any, file: str, project: str) -> dict[str, str]:
    """Declared volumes → engine names: ``<project>_<name>``, or ``name:``; external: as is."""
    result = {}
    for name, options in (value or {}).items():
        options = options or {}
        extra = sorted(set(options) - {"name", "external"})
        if extra:
            raise ConfigError(f"{breadcrumb(file, None, f'volumes.{name}.{extra[0]}')}: not "
                              f"supported by the sync agent (name and external only)")
        if options.get("external"):  # exists already; never created by the agent
            result[str(name)] = f"external:{options.get('name') or name}"
        else:
            result[str(name)] = str(options.get("name") or f"{project}_{name}")
    return result


def _files(value: Any, file: str, key: str, directory: Path, index: checkouts.Index,
           problems: list[str]) -> dict[str, Path | None]:
    """Top-level ``configs``/``secrets`` from files inside the checkout (``None``: broken,
    already reported)."""
    result: dict[str, Path | None] = {}
    for name, options in (value or {}).items():
        options = options or {}
        source = options.get("file")
        where = breadcrumb(file, None, f"{key}.{name}")
        result[str(name)] = None
        if not isinstance(source, str) or set(options) - {"file", "name"}:
            problems.append(f"{where}: only `file:` {key} are supported by the sync agent")
            continue
        path = (directory / source).resolve()
        if not path.is_relative_to(index.root.resolve()):
            problems.append(f"{where}.file: {source!r} is outside the repository")
        elif not path.is_file():
            problems.append(f"{where}.file: no file {source!r}")
        else:
            try:  # a link, a device or a FIFO inside the checkout is not mounted either
                result[str(name)] = index.file(directory / source)
            except FileRefused as exc:
                problems.append(f"{where}.file: {source!r}: {exc.reason}")
    return result


def _service(ctx: _Context, name: str, spec: Any) -> Service:
    """Every key parsed; all problems of the service raised together."""
    problems: list[str] = []

    def take(read: Callable[[], Any], default: Any = None) -> Any:
        try:
            return read()
        except ConfigError as exc:
            problems.append(str(exc))
            return default

    if not _NAME.match(name):
        problems.append(str(ctx.error(name, None, "service names use a-z, 0-9, '_', '.', '-'")))
    image = spec.get("image")
    if "build" in spec and not image:
        image = ""  # reported with build
    elif not isinstance(image, str) or not image:
        problems.append(str(ctx.error(name, "image", "required (the sync agent does not "
                                      "build images)")))
        image = ""
    else:
        try:
            refs.parse(image)
        except refs.InvalidReference as exc:
            problems.append(str(ctx.error(name, "image", str(exc))))
    network_mode = take(lambda: _optional_str(ctx, name, spec, "network_mode"))
    networks = take(lambda: _service_networks(ctx, name, spec.get("networks")), ())
    if network_mode and networks:
        problems.append(str(ctx.error(name, "networks", "cannot be combined with "
                                      "network_mode")))
    limits = (spec.get("deploy") or {}).get("resources") or {}
    depends, conditions = take(lambda: _depends_on(ctx, name, spec.get("depends_on")), ((), ()))
    values: dict[str, Any] = dict(
        command=take(lambda: _argv(ctx, name, spec, "command")),
        entrypoint=take(lambda: _argv(ctx, name, spec, "entrypoint")),
        environment=take(lambda: _environment(ctx, name, spec), ()),
        ports=take(lambda: tuple(_port(ctx, name, i, p) for i, p in enumerate(
            spec.get("ports") or [])), ()),
        mounts=take(lambda: _mounts(ctx, name, spec), ()),
        restart=take(lambda: _restart(ctx, name, spec.get("restart", "no")), "no"),
        labels=take(lambda: _pairs(ctx, name, spec.get("labels"), "labels"), ()),
        healthcheck=take(lambda: _healthcheck(ctx, name, spec.get("healthcheck"))),
        user=take(lambda: _optional_str(ctx, name, spec, "user")),
        working_dir=take(lambda: _optional_str(ctx, name, spec, "working_dir")),
        container=take(lambda: _optional_str(ctx, name, spec, "container_name")),
        mem_limit=take(lambda: _one_of(ctx, name, "memory limit", [
            ("mem_limit", _size(ctx, name, spec.get("mem_limit"), "mem_limit")),
            ("deploy.resources.limits.memory", _size(
                ctx, name, (limits.get("limits") or {}).get("memory"),
                "deploy.resources.limits.memory"))])),
        mem_reservation=take(lambda: _one_of(ctx, name, "memory reservation", [
            ("mem_reservation", _size(ctx, name, spec.get("mem_reservation"),
                                      "mem_reservation")),
            ("deploy.resources.reservations.memory", _size(
                ctx, name, (limits.get("reservations") or {}).get("memory"),
                "deploy.resources.reservations.memory"))])),
        nano_cpus=take(lambda: _one_of(ctx, name, "CPU limit", [
            ("cpus", _cpus(ctx, name, spec.get("cpus"), "cpus")),
            ("deploy.resources.limits.cpus", _cpus(
                ctx, name, (limits.get("limits") or {}).get("cpus"),
                "deploy.resources.limits.cpus"))])),
        shm_size=take(lambda: _size(ctx, name, spec.get("shm_size"), "shm_size")),
        log_driver=take(lambda: _log_driver(ctx, name, spec.get("logging"))),
        log_options=take(lambda: _pairs(ctx, name, (spec.get("logging") or {}).get("options"),
                                        "logging.options"), ()),
        extra_hosts=take(lambda: _extra_hosts(ctx, name, spec.get("extra_hosts")), ()),
        dns=take(lambda: _strings(ctx, name, spec, "dns"), ()),
        dns_search=take(lambda: _strings(ctx, name, spec, "dns_search"), ()),
        ulimits=take(lambda: _ulimits(ctx, name, spec.get("ulimits")), ()),
        cap_add=take(lambda: _strings(ctx, name, spec, "cap_add"), ()),
        cap_drop=take(lambda: _strings(ctx, name, spec, "cap_drop"), ()),
        security_opt=take(lambda: _strings(ctx, name, spec, "security_opt"), ()),
        tmpfs=take(lambda: _strings(ctx, name, spec, "tmpfs"), ()),
        expose=take(lambda: tuple(sorted(_expose(v) for v in spec.get("expose") or [])), ()),
        read_only=bool(spec.get("read_only", False)),
        privileged=bool(spec.get("privileged", False)),
        tty=bool(spec.get("tty", False)),
        stdin_open=bool(spec.get("stdin_open", False)),
        init=spec.get("init") if isinstance(spec.get("init"), bool) else None,
        stop_signal=take(lambda: _optional_str(ctx, name, spec, "stop_signal")),
        stop_grace_period=take(lambda: _grace(ctx, name, spec.get("stop_grace_period"))),
        hostname=take(lambda: _optional_str(ctx, name, spec, "hostname")),
        domainname=take(lambda: _optional_str(ctx, name, spec, "domainname")),
        sysctls=take(lambda: _pairs(ctx, name, spec.get("sysctls"), "sysctls"), ()),
        pid=take(lambda: _optional_str(ctx, name, spec, "pid")),
        ipc=take(lambda: _optional_str(ctx, name, spec, "ipc")),
    )
    if problems:
        raise _Problems(problems)
    return Service(project=ctx.project, name=name, image=image, networks=networks,
                   network_mode=network_mode, depends_on=depends, conditions=conditions,
                   **values)


def _optional_str(ctx: _Context, name: str, spec: Mapping[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ctx.error(name, key, "expected a string")
    return value


def _strings(ctx: _Context, name: str, spec: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = spec.get(key)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ctx.error(name, key, "expected a string or a list of strings")
    return tuple(items)


def _expose(value: Any) -> str:
    text = str(value)
    return text if "/" in text else f"{text}/tcp"


def _argv(ctx: _Context, name: str, spec: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ctx.error(name, key, str(exc)) from None
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return tuple(str(v) for v in value)
    raise ctx.error(name, key, "expected a string or a list of strings")


def _pairs(ctx: _Context, name: str, value: Any, key: str) -> tuple[tuple[str, str], ...]:
    """``{K: V}`` or ``["K=V"]`` (Compose allows both) as sorted pairs."""
    if value is None:
        return ()
    items: Iterable[tuple[str, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [(v.split("=", 1)[0], v.split("=", 1)[1] if "=" in v else "") for v in value]
    else:
        raise ctx.error(name, key, "expected a mapping or a list of KEY=VALUE strings")
    pairs = {}
    for k, v in items:
        if isinstance(v, dict | list):
            raise ctx.error(name, f"{key}.{k}", "expected a scalar value")
        pairs[str(k)] = "" if v is None else _scalar(v)
    return tuple(sorted(pairs.items()))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _environment(ctx: _Context, name: str, spec: Mapping[str, Any]) -> tuple[tuple[str, str],
                                                                             ...]:
    merged: dict[str, str] = {}
    files = spec.get("env_file") or []
    for index, entry in enumerate([files] if isinstance(files, str) else files):
        relative = entry.get("path") if isinstance(entry, dict) else entry
        required = entry.get("required", True) if isinstance(entry, dict) else True
        if not isinstance(relative, str):
            raise ctx.error(name, f"env_file[{index}]", "expected a file path")
        merged.update(_read_env_file(ctx, name, relative, required=bool(required)))
    merged.update(_pairs(ctx, name, spec.get("environment"), "environment"))
    return tuple(sorted(merged.items()))


def _read_env_file(ctx: _Context, name: str, relative: str, *,
                   required: bool) -> dict[str, str]:
    path = (ctx.directory / relative).resolve()
    if not path.is_relative_to(ctx.root):
        raise ctx.error(name, "env_file", f"{relative} is outside the repository")
    if not path.exists() and not required:
        return {}
    try:
        data = ctx.index.read(ctx.index.file(ctx.directory / relative))
    except FileRefused as exc:
        reason = exc.reason.removeprefix("cannot read: ")
        raise ctx.error(name, "env_file", f"cannot read {relative}: {reason}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ctx.error(name, "env_file", f"{relative} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return read_env_text(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ctx.error(name, "env_file", f"cannot read {relative}: not UTF-8 text") from None


def _port(ctx: _Context, name: str, index: int, value: Any) -> Port:
    key = f"ports[{index}]"
    if isinstance(value, dict):
        target, published = value.get("target"), value.get("published")
        if not isinstance(target, int) or published is None:
            raise ctx.error(name, key, "long syntax needs target (a number) and published")
        return Port(f"{target}/{value.get('protocol', 'tcp')}", str(value.get("host_ip", "")),
                    str(published))
    match = re.fullmatch(r"(?:(?:(\[[^\]]+\]|[\d.]+):)?(\d+):)?(\d+)(?:/(tcp|udp))?",
                         str(value))
    if not match:
        raise ctx.error(name, key, f"{value!r} is not HOST_IP:HOST_PORT:PORT[/PROTO]")
    host_ip, host_port, container, proto = match.groups()
    return Port(f"{container}/{proto or 'tcp'}", (host_ip or "").strip("[]"),
                host_port or "")


def _mounts(ctx: _Context, name: str, spec: Mapping[str, Any]) -> tuple[Mount, ...]:
    """Volumes, then configs and secrets as read-only binds of their files (as Compose)."""
    problems = []
    mounts = []
    for index, value in enumerate(spec.get("volumes") or []):
        try:
            mounts.append(_mount(ctx, name, index, value))
        except ConfigError as exc:
            problems.append(str(exc))
    for kind, declared, default_dir in (("configs", ctx.configs, "/"),
                                        ("secrets", ctx.secrets, "/run/secrets/")):
        for index, value in enumerate(spec.get(kind) or []):
            source = value.get("source") if isinstance(value, dict) else value
            target = value.get("target") if isinstance(value, dict) else None
            if source not in declared:
                problems.append(str(ctx.error(name, f"{kind}[{index}]", f"{source!r} is not "
                                              f"declared in the top-level {kind}")))
                continue
            if isinstance(value, dict) and set(value) - {"source", "target"}:
                problems.append(str(ctx.error(name, f"{kind}[{index}]", "only source and "
                                              "target are supported by the sync agent")))
                continue
            target = str(target or source)
            if not target.startswith("/"):
                target = default_dir + target
            path = declared[str(source)]
            if path is None:
                continue  # its top-level entry is broken and reported
            mounts.append(Mount("bind", str(path), target, True, digest=_digest(path)))
    if problems:
        raise ConfigError("\n".join(problems))
    return tuple(mounts)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(MAX_CONFIG_BYTES + 1))
    return digest.hexdigest()[:16]


def _mount(ctx: _Context, name: str, index: int, value: Any) -> Mount:
    key = f"volumes[{index}]"
    if isinstance(value, dict):
        kind, source, target = value.get("type"), value.get("source"), value.get("target")
        read_only = bool(value.get("read_only", False))
    elif isinstance(value, str):
        parts = value.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise ctx.error(name, key, f"{value!r} is not SOURCE:TARGET[:ro|rw]")
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        read_only = len(parts) == 3 and parts[2] == "ro"
    else:
        raise ctx.error(name, key, "expected a string or a mapping")
    if kind not in ("bind", "volume") or not isinstance(source, str) or not isinstance(
            target, str) or not target.startswith("/"):
        raise ctx.error(name, key, "needs type bind or volume, a source and an absolute target")
    if kind == "bind":
        if source.startswith("~"):
            raise ctx.error(name, key, f"{source!r}: '~' would be the agent's home; give an "
                            f"absolute path or one relative to the Compose file")
        resolved = (ctx.directory / source).resolve()
        if not Path(source).is_absolute() and not resolved.is_relative_to(ctx.root):
            raise ctx.error(name, key, f"{source!r} resolves outside the repository (relative "
                            f"bind sources must stay inside the checkout; give an absolute "
                            f"host path)")
        return Mount("bind", str(resolved), target, read_only)
    if source not in ctx.volumes:
        raise ctx.error(name, key, f"named volume {source!r} is not declared in the top-level "
                        f"volumes")
    engine_name = ctx.volumes[source].removeprefix("external:")
    return Mount("volume", engine_name, target, read_only)


def _service_networks(ctx: _Context, name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    names = list(value) if isinstance(value, dict | list) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ctx.error(name, "networks", "expected a list of network names")
    if isinstance(value, dict) and any(v not in (None, {}) for v in value.values()):
        raise ctx.error(name, "networks", "network options (aliases, addresses) are not "
                        "supported by the sync agent")
    for network in names:
        if network not in ctx.networks:
            raise ctx.error(name, "networks", f"network {network!r} is not declared in the "
                            f"top-level networks")
    return tuple(f"{ctx.project}_{n}" for n in names)


def _restart(ctx: _Context, name: str, value: Any) -> str:
    text = "no" if value is False else str(value)
    if not _RESTART.match(text):
        raise ctx.error(name, "restart", f"{value!r} is not no, always, unless-stopped or "
                        f"on-failure[:N]")
    return text


def _healthcheck(ctx: _Context, name: str, value: Any) -> Healthcheck | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ctx.error(name, "healthcheck", "expected a mapping")
    if value.get("disable"):
        return Healthcheck(("NONE",))
    test = value.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not isinstance(test, list) or not test or not all(isinstance(t, str) for t in test):
        raise ctx.error(name, "healthcheck.test", "expected a command string or a list")
    retries = value.get("retries", 0)
    if not isinstance(retries, int):
        raise ctx.error(name, "healthcheck.retries", "expected a number")

    def duration(key: str) -> int:
        return _duration(ctx, name, value.get(key), f"healthcheck.{key}")

    return Healthcheck(tuple(test), interval_ns=duration("interval"),
                       timeout_ns=duration("timeout"), retries=retries,
                       start_period_ns=duration("start_period"))


def _duration(ctx: _Context, name: str, value: Any, key: str) -> int:
    """Compose durations (``1m30s``, ``500ms``; a bare number is seconds) in nanoseconds."""
    if value is None:
        return 0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * _NS)
    try:  # the one duration grammar of image-bot, which is Compose's (Go's) own
        return round(durations.parse(str(value)) * _NS)
    except durations.InvalidDuration as exc:
        raise ctx.error(name, key, str(exc)) from None


def _grace(ctx: _Context, name: str, value: Any) -> int | None:
    if value is None:
        return None
    nanoseconds = _duration(ctx, name, value, "stop_grace_period")
    return -(-nanoseconds // _NS)  # whole seconds, rounded up


def _size(ctx: _Context, name: str, value: Any, key: str) -> int | None:
    """``512m``, ``1g``, ``1.5GB`` or a byte count, as Docker reads them."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ctx.error(name, key, f"{value!r} is not a size like 512m or 1g")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def _cpus(ctx: _Context, name: str, value: Any, key: str) -> int | None:
    if value is None:
        return None
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ctx.error(name, key, f"{value!r} is not a number of CPUs") from None
    if cpus < 0:
        raise ctx.error(name, key, "must not be negative")
    return round(cpus * 1_000_000_000) or None


def _one_of(ctx: _Context, name: str, what: str, options: list[tuple[str, int | None]]
            ) -> int | None:
    """``mem_limit`` and ``deploy.resources.limits.memory`` must agree when both are set."""
    given = {key: value for key, value in options if value is not None}
    if len(set(given.values())) > 1:
        raise ctx.error(name, " and ".join(given), f"two different {what}s")
    return next(iter(given.values()), None)


def _log_driver(ctx: _Context, name: str, value: Any) -> str | None:
    if value is None:
        return None
    driver = value.get("driver")
    if driver is not None and not isinstance(driver, str):
        raise ctx.error(name, "logging.driver", "expected a string")
    return driver or "json-file"


def _extra_hosts(ctx: _Context, name: str, value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        pairs = []
        for index, entry in enumerate(value):
            text = str(entry)
            host, separator, address = text.partition("=") if "=" in text else \
                text.partition(":")
            if not separator or not host or not address:
                raise ctx.error(name, f"extra_hosts[{index}]", f"{text!r} is not HOST:IP")
            pairs.append((host, address.strip("[]")))
    return tuple(sorted(pairs))


def _ulimits(ctx: _Context, name: str, value: Any) -> tuple[Ulimit, ...]:
    result = []
    for limit, setting in (value or {}).items():
        soft: Any = setting.get("soft") if isinstance(setting, dict) else setting
        hard: Any = setting.get("hard") if isinstance(setting, dict) else setting
        try:
            result.append(Ulimit(str(limit), int(soft), int(hard)))
        except (TypeError, ValueError):
            raise ctx.error(name, f"ulimits.{limit}", "expected a number or soft and hard "
                            "numbers") from None
    return tuple(sorted(result, key=lambda u: u.name))


def _depends_on(ctx: _Context, name: str, value: Any
                ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Short (a list: ``service_started``) and long form (``condition:`` per dependency)."""
    if value is None:
        return (), ()
    if isinstance(value, list):
        conditions = {str(v): "service_started" for v in value}
    else:
        conditions = {}
        for dependency, options in value.items():
            condition = (options or {}).get("condition", "service_started")
            if condition not in CONDITIONS:
                raise ctx.error(name, f"depends_on.{dependency}.condition", f"{condition!r} "
                                f"is not {', '.join(CONDITIONS)}")
            conditions[str(dependency)] = condition
    return tuple(sorted(conditions)), tuple(sorted(conditions.items()))


def _in_dependency_order(services: Mapping[str, Service], inactive: Mapping[str, list[str]],
                         file: str) -> tuple[Service, ...]:
    """Dependencies first (Kahn's algorithm, ties by name); a cycle or unknown name fails.

    A service another one waits to complete (``service_completed_successfully``) is marked
    ``completes``: exit code 0 is its healthy end.
    """
    problems = []
    for service in services.values():
        for dependency in service.depends_on:
            if dependency not in services:
                where = breadcrumb(file, f"service {service.name!r}", "depends_on")
                problem = f"no service {dependency!r}"
                if dependency in inactive:
                    problem = (f"{dependency!r} is only in profile(s) "
                               f"{', '.join(inactive[dependency])}, which are not active "
                               f"(COMPOSE_PROFILES)")
                problems.append(f"{where}: {problem}")
    if problems:
        raise _Problems(problems)
    jobs = {d for s in services.values() for d, c in s.conditions
            if c == "service_completed_successfully"}
    done: list[Service] = []
    waiting = dict(services)
    while waiting:
        ready = sorted(n for n, s in waiting.items()
                       if all(d not in waiting for d in s.depends_on))
        if not ready:
            raise _Problems([f"{breadcrumb(file, None, 'depends_on')}: dependency cycle "
                             f"between {', '.join(sorted(waiting))}"])
        for ready_name in ready:
            service = waiting.pop(ready_name)
            if ready_name in jobs:
                service = Service(**{**{f.name: getattr(service, f.name)
                                        for f in fields(service)}, "completes": True})
            done.append(service)
    return tuple(done)
