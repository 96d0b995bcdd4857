"""Manifests, indexes and image configs: parsing and platform resolution (pure; no I/O).

Understands Docker v2 schema 2 manifests and manifest lists, OCI manifests and indexes.
Index entries for ``unknown/unknown`` (buildkit attestations) are not platforms.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
DEFAULT_PLATFORM = "linux/amd64"


class InvalidManifest(ValueError):
    """The bytes are not a manifest we understand (the caller names registry and image)."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What a policy may need to know about one tag."""

    digest: str                       # the tag's manifest (the index, for multi-arch)
    created: datetime | None
    labels: dict[str, str]
    platforms: tuple[str, ...]        # "os/arch[/variant]"


@dataclass(frozen=True, slots=True)
class Entry:
    digest: str
    platform: str


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    entries: tuple[Entry, ...] = ()   # an index
    config_digest: str | None = None  # an image manifest

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify(data: bytes, digest: str) -> bool:
    """Whether ``data`` hashes to ``digest`` (unknown algorithms cannot be checked: False)."""
    algorithm, _, _ = digest.partition(":")
    if algorithm not in {"sha256", "sha512"}:
        return False
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}" == digest


def parse(data: bytes, content_type: str = "") -> Manifest:
    body = _json_object(data, "manifest")
    media_type = body.get("mediaType") or _base_type(content_type)
    if "manifests" in body or media_type in INDEX_TYPES:
        return Manifest(media_type if media_type in INDEX_TYPES else OCI_INDEX,
                        entries=_entries(body))
    config = body.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
        raise InvalidManifest(f"manifest ({media_type or 'no media type'}) has no config "
                              f"digest")
    return Manifest(media_type if media_type in IMAGE_TYPES else OCI_MANIFEST,
                    config_digest=config["digest"])


def _entries(body: dict[str, Any]) -> tuple[Entry, ...]:
    manifests = body.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidManifest("index has no 'manifests' array")
    entries = []
    for item in manifests:
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
            raise InvalidManifest("index entry without a digest")
        entries.append(Entry(item["digest"], _platform(item.get("platform") or {})))
    return tuple(entries)


def platforms(manifest: Manifest) -> tuple[str, ...]:
    return tuple(dict.fromkeys(e.platform for e in manifest.entries
                               if e.platform and not e.platform.startswith("unknown/")))


def resolve(manifest: Manifest, platform: str | None) -> Entry | None:
    """The index entry for ``platform`` (default: linux/amd64, else the first real one)."""
    candidates = [e for e in manifest.entries if e.platform in platforms(manifest)]
    wanted = normalise_platform(platform or DEFAULT_PLATFORM)
    for entry in candidates:
        if normalise_platform(entry.platform) == wanted:
            return entry
    if platform is None and candidates:
        return candidates[0]
    return None


def normalise_platform(platform: str) -> str:
    """``linux/arm64/v8`` ≡ ``linux/arm64``; ``linux/arm`` ≡ ``linux/arm/v7``."""
    parts = platform.lower().split("/")
    if parts[1:2] == ["arm64"] and parts[2:] == ["v8"]:
        parts = parts[:2]
    if parts[1:] == ["arm"]:
        parts.append("v7")
    return "/".join(parts)


def _platform(spec: dict[str, Any]) -> str:
    os_name, arch = spec.get("os"), spec.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return ""
    variant = spec.get("variant")
    return f"{os_name}/{arch}" + (f"/{variant}" if isinstance(variant, str) and variant else "")


@dataclass(frozen=True, slots=True)
class Config:
    created: datetime | None
    labels: dict[str, str]
    platform: str


def parse_config(data: bytes) -> Config:
    body = _json_object(data, "image config")
    inner = body.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    if not isinstance(labels, dict):
        labels = {}
    return Config(_timestamp(body.get("created")),
                  {str(k): str(v) for k, v in labels.items()}, _platform(body))


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Go writes nanoseconds; Python reads at most microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits):]}"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except RecursionError:
        raise InvalidManifest(f"{what} is JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        head = data[:64].decode("utf-8", "replace").strip()
        looks = "an HTML page" if head.lower().startswith(("<!doctype", "<html")) else "not JSON"
        raise InvalidManifest(f"{what} is {looks}") from None
    if not isinstance(body, dict):
        raise InvalidManifest(f"{what} is not a JSON object")
    return body


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()
