"""Image references: parse, format and normalise ``host/repo:tag@digest`` (pure; no I/O).

Follows the grammar of distribution/reference: the first path component is a registry
host when it contains a ``.`` or ``:`` or is ``localhost``; otherwise the image lives on
Docker Hub, where one-component names are official images under ``library/``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
r"""A tag, as the OCI distribution spec writes it (ASCII; a Python ``\w`` would take any
letter, and in pydantic's Rust regex engine costs ~70 ms to compile)."""
_TAG = re.compile(TAG)
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_SPACE = re.compile(r"\s")


def is_tag(text: str) -> bool:
    """Whether ``text`` is a valid tag (the whole of it)."""
    return _TAG.fullmatch(text) is not None


def is_digest(text: str) -> bool:
    """Whether ``text`` is a digest (``algorithm:hex``, the whole of it)."""
    return _DIGEST.fullmatch(text) is not None


class InvalidReference(ValueError):
    """The text is not a valid image reference."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed image reference. ``host`` and ``repository`` are normalised."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``host/repository``: the identity of the image, without tag or digest."""
        return f"{self.host}/{self.repository}"

    def with_tag(self, tag: str | None, digest: str | None = None) -> ImageRef:
        return ImageRef(self.host, self.repository, tag, digest)

    def same_image(self, other: ImageRef) -> bool:
        return self.host == other.host and self.repository == other.repository

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> ImageRef:
    """Parse ``text`` into a normalised :class:`ImageRef` or raise :class:`InvalidReference`.

    Memoised up to 512 characters (an ``ImageRef`` is immutable; a cycle reads each
    policy's image, and each reference in its files, many times): a longer text is parsed
    each time, so the memo holds at most 4,096 short texts whatever a repository holds."""
    return _parse_short(text) if len(text) <= 512 else _parse(text)


@functools.lru_cache(maxsize=4096)
def _parse_short(text: str) -> ImageRef:
    return _parse(text)


def _parse(text: str) -> ImageRef:
    rest = text.strip()
    if not rest or _SPACE.search(rest):
        raise InvalidReference(f"not an image reference: {text!r}")
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not is_digest(digest):
            raise InvalidReference(f"invalid digest in {text!r}")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not is_tag(tag):
            raise InvalidReference(f"invalid tag in {text!r}")
    host, repository = _split_host(rest)
    if not repository or not all(_COMPONENT.match(c) for c in repository.split("/")):
        raise InvalidReference(f"invalid repository name in {text!r}")
    return ImageRef(host, repository, tag, digest)


def normalise_host(host: str) -> str:
    host = host.lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def _split_host(name: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host = normalise_host(first)
        repository = remainder
    else:
        host, repository = DOCKER_HUB, name
    if host == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return host, repository


def replace_tag(text: str, new_tag: str) -> str:
    """``text`` (a reference as the user wrote it) with its tag replaced by ``new_tag``.

    Keeps the user's spelling of host and repository (``nginx`` stays ``nginx``, not
    ``docker.io/library/nginx``); drops a digest, which belongs to the old tag.
    """
    name = text.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return f"{name}:{new_tag}"
