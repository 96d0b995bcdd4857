"""Webhook payloads → scan requests: authenticate, then parse each format (pure; no I/O).

One entry per receiver kind in ``KINDS`` (adding a format is one function and one line):

======================  =========================================  =======================
kind                    payload                                    authentication
======================  =========================================  =======================
``distribution``        registry notifications (``events[]``)      ``Authorization: Bearer``
``dockerhub``           Docker Hub ``push_data`` + ``repository``  ``?token=`` in the URL
``github``              ``package``/``registry_package`` (GHCR);   ``X-Hub-Signature-256``
                        ``push`` → policy reload                   HMAC-SHA256
``gitlab``              registry ``events[]``; ``Push Hook`` →     ``X-Gitlab-Token``
                        policy reload
``harbor``              ``PUSH_ARTIFACT`` ``event_data.resources``  ``Authorization``
``quay``                ``docker_url`` + ``updated_tags``          ``?token=`` in the URL
``generic``             ``{"image": ..., "tag": ...}``             ``X-Signature-256`` HMAC
                                                                   (optionally over
                                                                   ``X-Signature-Timestamp``)
======================  =========================================  =======================

Replays: :func:`replay_key` names what makes a signed request unique (its signature, which
covers the body, and for ``generic`` the timestamp too) and :func:`signed_time` the time the
sender signed; ``server.replay`` refuses a key seen within the window and a signed time
outside it. Token kinds sign nothing, so nothing distinguishes a replay from a new event.

Secrets are compared with :func:`hmac.compare_digest` (constant time). Nothing here logs
or echoes a secret or a request body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from image_bot import refs


class Unauthorized(Exception):
    """Missing or wrong signature / token (HTTP 401)."""


TIMESTAMP_HEADER = "x-signature-timestamp"


class MalformedPayload(ValueError):
    """The body is not the format this receiver expects (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Push:
    """A tag pushed to an image (``image`` is the normalised ``host/repository``)."""

    image: str
    tag: str | None


@dataclass(frozen=True, slots=True)
class Parsed:
    pushes: tuple[Push, ...] = ()
    reload: bool = False  # a Git push to a config repository: re-read the policies
    note: str = ""  # why nothing was taken (ping, other event kinds)


@dataclass(frozen=True, slots=True)
class Request:
    """What a receiver may look at: lower-cased headers, query parameters, raw body."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


# --- authentication -----------------------------------------------------------------------


def _hmac_sha256(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _check_signature(request: Request, secret: str, *headers: str,
                     signed: bytes | None = None) -> None:
    expected = _hmac_sha256(secret, request.body if signed is None else signed).encode()
    for header in headers:
        given = request.headers.get(header)
        if given is not None:
            if hmac.compare_digest(given.strip().lower().encode(), expected):
                return
            raise Unauthorized(f"{header}: signature does not match")
    raise Unauthorized(f"missing {' or '.join(headers)} signature")


def _check_token(request: Request, secret: str, *, header: str = "authorization",
                 query: bool = False) -> None:
    candidates = []
    value = request.headers.get(header)
    if value is not None:
        scheme, _, rest = value.strip().partition(" ")
        candidates += [value.strip(), rest.strip()] if scheme.lower() in (
            "bearer", "token") else [value.strip()]
    if query and "token" in request.query:
        candidates.append(request.query["token"])
    if not candidates:
        raise Unauthorized(f"missing {header} header" + (" or ?token=" if query else ""))
    wanted = secret.encode()
    # every candidate is compared, so timing does not reveal which one matched
    if not any([hmac.compare_digest(c.encode(), wanted) for c in candidates]):
        raise Unauthorized("token does not match")


def authenticate(kind: str, request: Request, secret: str) -> None:
    """Raise :class:`Unauthorized` unless ``request`` carries ``secret`` the way ``kind`` does."""
    if kind == "github":
        _check_signature(request, secret, "x-hub-signature-256")
    elif kind == "generic":
        stamp = request.headers.get(TIMESTAMP_HEADER)
        signed = None if stamp is None else stamp.strip().encode() + b"." + request.body
        _check_signature(request, secret, "x-signature-256", "x-hub-signature-256",
                         signed=signed)
    elif kind == "gitlab":
        _check_token(request, secret, header="x-gitlab-token")
    elif kind in ("dockerhub", "quay"):
        _check_token(request, secret, query=True)
    else:  # distribution, harbor
        _check_token(request, secret)


def replay_key(kind: str, request: Request) -> str | None:
    """What makes an authenticated request unique, or None when nothing signed does.

    GitHub signs the body only (``X-GitHub-Delivery`` is not signed, so a replay can carry
    any delivery id), and each delivery's body is unique: its signature is the key. A
    ``generic`` request is keyed only when it signs a timestamp: a CI job may well send the
    same body twice on purpose.
    """
    if kind == "github":
        return request.headers.get("x-hub-signature-256", "").strip().lower() or None
    if kind == "generic" and TIMESTAMP_HEADER in request.headers:
        signature = (request.headers.get("x-signature-256")
                     or request.headers.get("x-hub-signature-256") or "")
        return signature.strip().lower() or None
    return None


def signed_time(kind: str, request: Request) -> float | None:
    """The Unix time the sender signed (``generic`` with ``X-Signature-Timestamp``)."""
    stamp = request.headers.get(TIMESTAMP_HEADER) if kind == "generic" else None
    if stamp is None:
        return None
    if not stamp.strip().isdigit():
        raise Unauthorized(f"{TIMESTAMP_HEADER}: expected Unix seconds")
    return float(stamp.strip())


# --- payloads -----------------------------------------------------------------------------


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedPayload("body is not JSON") from None
    except RecursionError:  # ``[[[[…`` deeper than the interpreter's recursion limit
        raise MalformedPayload("body is JSON nested too deeply") from None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{where}: expected an object")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedPayload(f"{where}: expected a non-empty string")
    return value


def _image(name: str, where: str) -> refs.ImageRef:
    try:
        return refs.parse(name)
    except refs.InvalidReference as exc:
        raise MalformedPayload(f"{where}: {exc}") from None


def _push(name: str, tag: str | None, where: str) -> Push:
    ref = _image(name, where)
    return Push(ref.name, tag or ref.tag)


def _with_host(host: str | None, repository: str) -> str:
    return f"{host}/{repository}" if host else repository


def distribution(request: Request, registry: str | None) -> Parsed:
    """Registry notifications: ``{"events": [{"action": "push", "target": {...}}]}``."""
    body = _object(_json(request.body), "body")
    events = body.get("events")
    if not isinstance(events, list):
        raise MalformedPayload("events: expected a list")
    pushes = []
    for number, raw in enumerate(events):
        event = _object(raw, f"events[{number}]")
        target = _object(event.get("target"), f"events[{number}].target")
        if event.get("action") != "push" or not target.get("tag"):
            continue  # pulls, deletes, and the untagged child manifests of an index
        repository = _text(target.get("repository"), f"events[{number}].target.repository")
        source = event.get("request")
        host = registry or (source.get("host") if isinstance(source, dict) else None)
        if not isinstance(host, str) or not host:
            raise MalformedPayload(f"events[{number}].request.host: missing (or set the "
                                   f"receiver's registry)")
        pushes.append(_push(_with_host(host, repository), _text(
            target["tag"], f"events[{number}].target.tag"), f"events[{number}]"))
    return Parsed(tuple(pushes), note="" if pushes else "no tagged push in the events")


def dockerhub(request: Request, registry: str | None) -> Parsed:
    """Docker Hub: ``{"push_data": {"tag": ...}, "repository": {"repo_name": "ns/app"}}``."""
    body = _object(_json(request.body), "body")
    push_data = _object(body.get("push_data"), "push_data")
    repository = _object(body.get("repository"), "repository")
    name = _text(repository.get("repo_name"), "repository.repo_name")
    tag = _text(push_data.get("tag"), "push_data.tag")
    return Parsed((_push(_with_host(registry or refs.DOCKER_HUB, name), tag, "repository"),))


def github(request: Request, registry: str | None) -> Parsed:
    """GitHub: ``package``/``registry_package`` events (GHCR) and ``push`` events."""
    event = request.headers.get("x-github-event", "")
    body = _object(_json(request.body), "body")
    if event == "push":
        return Parsed(reload=True)
    if event not in ("package", "registry_package"):
        return Parsed(note=f"GitHub event {event or '(none)'!r} is not a package push")
    package = _object(body.get("package") or body.get("registry_package"), "package")
    version = _object(package.get("package_version"), "package.package_version")
    metadata = version.get("container_metadata")
    tag_info = metadata.get("tag") if isinstance(metadata, dict) else None
    tag = tag_info.get("name") if isinstance(tag_info, dict) else None
    if not tag:
        return Parsed(note="package version without a tag")
    url = version.get("package_url")
    if isinstance(url, str) and url:
        return Parsed((_push(url.split("@", 1)[0], str(tag), "package_version.package_url"),))
    owner = _object(package.get("owner"), "package.owner")
    name = f"{_text(owner.get('login'), 'package.owner.login')}/" \
           f"{_text(package.get('name'), 'package.name')}".lower()
    return Parsed((_push(_with_host(registry or "ghcr.io", name), str(tag), "package"),))


def gitlab(request: Request, registry: str | None) -> Parsed:
    """GitLab: ``Push Hook`` → reload; container registry notifications → pushes."""
    event = request.headers.get("x-gitlab-event", "")
    if event in ("Push Hook", "Tag Push Hook"):
        _object(_json(request.body), "body")
        return Parsed(reload=True)
    if event and event != "Registry Hook":
        return Parsed(note=f"GitLab event {event!r} is not a push")
    return distribution(request, registry)


def harbor(request: Request, registry: str | None) -> Parsed:
    """Harbor: ``{"type": "PUSH_ARTIFACT", "event_data": {"resources": [...]}}``."""
    body = _object(_json(request.body), "body")
    kind = body.get("type")
    if kind not in ("PUSH_ARTIFACT", "pushImage"):
        return Parsed(note=f"Harbor event {kind!r} is not a push")
    data = _object(body.get("event_data"), "event_data")
    resources = data.get("resources")
    if not isinstance(resources, list):
        raise MalformedPayload("event_data.resources: expected a list")
    pushes = []
    for number, raw in enumerate(resources):
        resource = _object(raw, f"event_data.resources[{number}]")
        url = _text(resource.get("resource_url"), f"event_data.resources[{number}].resource_url")
        tag = resource.get("tag") if isinstance(resource.get("tag"), str) else None
        pushes.append(_push(url.split("@", 1)[0], tag, f"event_data.resources[{number}]"))
    return Parsed(tuple(p for p in pushes if p.tag))


def quay(request: Request, registry: str | None) -> Parsed:
    """Quay: ``{"docker_url": "quay.io/ns/app", "updated_tags": ["1.2.3"]}``."""
    body = _object(_json(request.body), "body")
    name = _text(body.get("docker_url"), "docker_url")
    tags = body.get("updated_tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise MalformedPayload("updated_tags: expected a list of tags")
    return Parsed(tuple(_push(name, tag, "docker_url") for tag in tags))


def generic(request: Request, registry: str | None) -> Parsed:
    """Anything that can sign: ``{"image": "host/app", "tag": "1.2.3"}``."""
    body = _object(_json(request.body), "body")
    name = _text(body.get("image"), "image")
    tag = body.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise MalformedPayload("tag: expected a string")
    return Parsed((_push(_with_host(registry, name) if registry and "/" not in name else name,
                         tag, "image"),))


Parser = Callable[[Request, str | None], Parsed]
KINDS: dict[str, Parser] = {
    "distribution": distribution,
    "dockerhub": dockerhub,
    "github": github,
    "gitlab": gitlab,
    "harbor": harbor,
    "quay": quay,
    "generic": generic,
}


def parse(kind: str, request: Request, registry: str | None = None) -> Parsed:
    """The scan requests in a payload of ``kind``, or :class:`MalformedPayload`."""
    return KINDS[kind](request, registry)
