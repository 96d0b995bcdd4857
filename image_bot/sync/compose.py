"""Sync stage, desired state: Compose files under the sync path → frozen ``Application`` values.

Pure parsing of files in a checkout (no Docker, no Git). Supports the common subset of the
Compose spec; an unsupported or malformed key fails its whole file with a breadcrumb, so the
agent never deploys something other than what the file says. Variables (``${X}``) are not
interpolated.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from image_bot import checkout as checkouts
from image_bot import refs
from image_bot.config.loading import breadcrumb
from image_bot.errors import ConfigError, FileRefused

SUFFIXES = (".yaml", ".yml")
_DEFAULT_FILE_STEMS = {"compose", "docker-compose"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT_NS = {"us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
            "h": 3_600_000_000_000}
_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
SERVICE_KEYS = frozenset({
    "image", "command", "entrypoint", "environment", "env_file", "ports", "volumes",
    "networks", "network_mode", "restart", "labels", "healthcheck", "depends_on", "user",
    "working_dir",
})
_TOP_KEYS = frozenset({"services", "volumes", "networks", "version", "name"})


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


@dataclass(frozen=True, slots=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_ns: int = 0
    timeout_ns: int = 0
    retries: int = 0
    start_period_ns: int = 0


@dataclass(frozen=True, slots=True)
class Service:
    """One service as the agent will run it: every value already normalised."""

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

    @property
    def container_name(self) -> str:
        return f"{self.project}-{self.name}"

    @property
    def config_hash(self) -> str:
        """A stable digest of everything that shapes the container (not the Git revision)."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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
    error: str


@dataclass(frozen=True, slots=True)
class DesiredState:
    applications: tuple[Application, ...] = ()
    broken: tuple[Broken, ...] = field(default_factory=tuple)


def load(checkout: Path, path: str, *,
         max_file_bytes: int = checkouts.DEFAULT_MAX_FILE_BYTES) -> DesiredState:
    """Every Compose file (a YAML mapping with ``services``) under ``checkout/path``, read
    through a checkout index: a link out of the checkout, a device or a file over the cap
    is a broken application, never read."""
    base = (checkout / path).resolve()
    if not base.is_relative_to(checkout.resolve()):
        raise ConfigError(f"sync path {path!r} leaves the repository")
    if not base.exists():
        raise ConfigError(f"sync path {path!r} does not exist in the repository")
    index = checkouts.Index(checkout, max_file_bytes=max_file_bytes, suffixes=SUFFIXES)
    files = index.under(checkout / path)
    apps: list[Application] = []
    broken = [Broken(project_name(Path(r.file)), r.file, f"{breadcrumb(r.file)}: {r.reason}")
              for r in index.refused]
    for file in files:
        display = index.name(file)
        name = project_name(file)
        try:
            document = _read(index, file, display)
            if document is None:
                continue
            apps.append(_application(document, name=name, file=display, directory=file.parent,
                                     index=index))
        except ConfigError as exc:
            broken.append(Broken(name, display, str(exc)))
    _check_unique(apps, broken)
    return DesiredState(tuple(apps), tuple(broken))


def project_name(file: Path) -> str:
    """``web/compose.yaml`` → ``web``; ``web.yaml`` → ``web``; ``compose.yaml`` → dir name."""
    raw = file.parent.name if file.stem in _DEFAULT_FILE_STEMS else file.stem
    return re.sub(r"[^a-z0-9_.-]+", "-", raw.lower()).strip("-._") or "default"


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


def _read(index: checkouts.Index, file: Path, display: str) -> dict[str, Any] | None:
    try:
        text = index.read(file).decode("utf-8")
    except FileRefused as exc:
        raise ConfigError(f"{breadcrumb(display)}: {exc.reason}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{breadcrumb(display)}: not UTF-8 text") from None
    try:
        documents = list(YAML(typ="safe", pure=True).load_all(text))
    except YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{breadcrumb(display)}: not valid YAML: {problem}") from None
    mappings = [d for d in documents if isinstance(d, dict) and "services" in d]
    if not mappings:
        return None
    if len(documents) != 1:
        raise ConfigError(f"{breadcrumb(display)}: a Compose file holds one YAML document")
    return mappings[0]


def _application(document: Mapping[str, Any], *, name: str, file: str,
                 directory: Path, index: checkouts.Index) -> Application:
    unknown = sorted(k for k in document if k not in _TOP_KEYS and not str(k).startswith("x-"))
    if unknown:
        raise ConfigError(f"{breadcrumb(file, None, unknown[0])}: not supported by the sync "
                          f"agent (supported: {', '.join(sorted(_TOP_KEYS))})")
    services = document.get("services")
    if not isinstance(services, dict) or not services:
        raise ConfigError(f"{breadcrumb(file, None, 'services')}: expected a mapping of "
                          f"services")
    volumes = _names(document.get("volumes"), file, "volumes")
    networks = _names(document.get("networks"), file, "networks")
    context = _Context(project=name, file=file, directory=directory, index=index,
                       volumes=frozenset(volumes), networks=frozenset(networks))
    parsed = {str(key): _service(context, str(key), value) for key, value in services.items()}
    ordered = _in_dependency_order(parsed, file)
    return Application(name, file, ordered, tuple(f"{name}_{v}" for v in volumes),
                       tuple(f"{name}_{n}" for n in networks))


def _names(value: Any, file: str, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ConfigError(f"{breadcrumb(file, None, key)}: expected a mapping")
    for name, options in value.items():
        if options not in (None, {}):
            raise ConfigError(f"{breadcrumb(file, None, f'{key}.{name}')}: options are not "
                              f"supported (only named {key} with defaults)")
    return [str(name) for name in value]


@dataclass(frozen=True, slots=True)
class _Context:
    project: str
    file: str
    directory: Path
    index: checkouts.Index  # env files are read through it: never from outside the checkout
    volumes: frozenset[str]
    networks: frozenset[str]

    def error(self, service: str, key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{breadcrumb(self.file, f'service {service!r}', key)}: {message}")


def _service(ctx: _Context, name: str, spec: Any) -> Service:
    if not _NAME.match(name):
        raise ctx.error(name, None, "service names use a-z, 0-9, '_', '.', '-'")
    if not isinstance(spec, dict):
        raise ctx.error(name, None, "expected a mapping")
    unknown = sorted(str(k) for k in spec if k not in SERVICE_KEYS and not str(k).startswith(
        "x-"))
    if unknown:
        raise ctx.error(name, unknown[0], "not supported by the sync agent (supported: "
                        f"{', '.join(sorted(SERVICE_KEYS))})")
    image = spec.get("image")
    if not isinstance(image, str) or not image:
        raise ctx.error(name, "image", "required (the sync agent does not build images)")
    try:
        refs.parse(image)
    except refs.InvalidReference as exc:
        raise ctx.error(name, "image", str(exc)) from None
    network_mode = _optional_str(ctx, name, spec, "network_mode")
    networks = _service_networks(ctx, name, spec.get("networks"))
    if network_mode and networks:
        raise ctx.error(name, "networks", "cannot be combined with network_mode")
    return Service(
        project=ctx.project, name=name, image=image,
        command=_argv(ctx, name, spec, "command"),
        entrypoint=_argv(ctx, name, spec, "entrypoint"),
        environment=_environment(ctx, name, spec),
        ports=tuple(_port(ctx, name, i, p) for i, p in enumerate(_list(ctx, name, spec,
                                                                         "ports"))),
        mounts=tuple(_mount(ctx, name, i, v) for i, v in enumerate(_list(ctx, name, spec,
                                                                         "volumes"))),
        networks=networks, network_mode=network_mode,
        restart=_restart(ctx, name, spec.get("restart", "no")),
        labels=_pairs(ctx, name, spec.get("labels"), "labels"),
        healthcheck=_healthcheck(ctx, name, spec.get("healthcheck")),
        depends_on=_depends_on(ctx, name, spec.get("depends_on")),
        user=_optional_str(ctx, name, spec, "user"),
        working_dir=_optional_str(ctx, name, spec, "working_dir"),
    )


def _optional_str(ctx: _Context, name: str, spec: Mapping[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ctx.error(name, key, "expected a string")
    return value


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


def _list(ctx: _Context, name: str, spec: Mapping[str, Any], key: str) -> list[Any]:
    value = spec.get(key) or []
    if not isinstance(value, list):
        raise ctx.error(name, key, "expected a list")
    return value


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
    for index, relative in enumerate([files] if isinstance(files, str) else files):
        if not isinstance(relative, str):
            raise ctx.error(name, f"env_file[{index}]", "expected a file path")
        merged.update(_read_env_file(ctx, name, relative))
    merged.update(_pairs(ctx, name, spec.get("environment"), "environment"))
    return tuple(sorted(merged.items()))


def _read_env_file(ctx: _Context, name: str, relative: str) -> dict[str, str]:
    try:
        text = ctx.index.read(ctx.index.file(ctx.directory / relative)).decode("utf-8")
    except FileRefused as exc:
        detail = exc.reason.removeprefix("cannot read: ")
        raise ctx.error(name, "env_file", f"cannot read {relative}: {detail}") from None
    except UnicodeDecodeError:
        raise ctx.error(name, "env_file", f"{relative}: not UTF-8 text") from None
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


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
        return Mount("bind", str((ctx.directory / Path(source).expanduser()).resolve()),
                     target, read_only)
    if source not in ctx.volumes:
        raise ctx.error(name, key, f"named volume {source!r} is not declared in the top-level "
                        f"volumes")
    return Mount("volume", f"{ctx.project}_{source}", target, read_only)


def _service_networks(ctx: _Context, name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    names = list(value) if isinstance(value, dict | list) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ctx.error(name, "networks", "expected a list of network names")
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
    """Compose durations (``1m30s``, ``500ms``) in nanoseconds; 0 when absent."""
    if value is None:
        return 0
    text = str(value)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ctx.error(name, key, f"{value!r} is not a duration like 30s or 1m30s")
    return int(sum(float(n) * _UNIT_NS[u] for n, u in parts))


def _depends_on(ctx: _Context, name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | dict) and all(isinstance(v, str) for v in value):
        return tuple(sorted(value))
    raise ctx.error(name, "depends_on", "expected a list of service names")


def _in_dependency_order(services: Mapping[str, Service], file: str) -> tuple[Service, ...]:
    """Dependencies first (Kahn's algorithm, ties by name); a cycle or unknown name fails."""
    for service in services.values():
        for dependency in service.depends_on:
            if dependency not in services:
                where = breadcrumb(file, f"service {service.name!r}", "depends_on")
                raise ConfigError(f"{where}: no service {dependency!r}")
    done: list[Service] = []
    waiting = dict(services)
    while waiting:
        ready = sorted(n for n, s in waiting.items()
                       if all(d not in waiting for d in s.depends_on))
        if not ready:
            raise ConfigError(f"{breadcrumb(file, None, 'depends_on')}: dependency cycle "
                              f"between {', '.join(sorted(waiting))}")
        done += [waiting.pop(n) for n in ready]
    return tuple(done)
