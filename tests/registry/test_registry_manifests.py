"""Digests and image metadata against the real registry: single-arch, OCI index, manifest
list; everything addressed by digest comes from the state store the second time."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import devservers
from image_bot import refs
from image_bot.config import models
from image_bot.errors import ImageNotFound, RegistryUnavailable
from image_bot.registry import client as registry_client
from image_bot.registry import manifests
from image_bot.state import State

CREATED = "2026-03-04T05:06:07.123456789Z"
CREATED_AT = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def _image(server: devservers.Registry, name: str) -> refs.ImageRef:
    return refs.parse(f"{server.host}/{name}")


def _info(server: devservers.Registry, name: str, tag: str, *, state: State | None = None,
          **options: Any) -> tuple[manifests.ImageInfo, registry_client.RegistryClient]:
    async def go() -> tuple[manifests.ImageInfo, registry_client.RegistryClient]:
        settings = [models.RegistryConfig(host=server.host, insecure=True)]
        async with registry_client.RegistryClient(settings, state=state, attempts=1) as client:
            return await client.image_info(_image(server, name), tag, **options), client

    return asyncio.run(go())


@pytest.mark.parametrize("oci", [False, True], ids=["docker-v2", "oci"])
def test_single_arch_image(registry: devservers.Registry, oci: bool) -> None:
    name = f"meta/single-{uuid.uuid4().hex[:8]}"
    digest = devservers.push_image(registry.url, name, "1.2.3", created=CREATED, oci=oci,
                                   labels={"org.opencontainers.image.revision": "abc123"})

    info, client = _info(registry, name, "1.2.3")

    assert info == manifests.ImageInfo(
        digest=digest, created=CREATED_AT,
        labels={"org.opencontainers.image.version": "1.2.3",
                "org.opencontainers.image.revision": "abc123"},
        platforms=("linux/amd64",))
    assert client.counts == {"ping": 1, "manifest-head": 1, "manifest": 1, "blob": 1}


def test_digest_is_a_head_request_only(registry: devservers.Registry) -> None:
    name = f"meta/head-{uuid.uuid4().hex[:8]}"
    digest = devservers.push_image(registry.url, name, "1.0.0")

    async def go() -> tuple[str, registry_client.RegistryClient]:
        settings = [models.RegistryConfig(host=registry.host, insecure=True)]
        async with registry_client.RegistryClient(settings) as client:
            return await client.digest(_image(registry, name), "1.0.0"), client

    found, client = asyncio.run(go())

    assert found == digest
    assert client.counts == {"ping": 1, "manifest-head": 1}


@pytest.mark.parametrize("oci", [True, False], ids=["oci-index", "docker-manifest-list"])
def test_multi_arch_index_resolves_platforms(registry: devservers.Registry, oci: bool) -> None:
    name = f"meta/multi-{uuid.uuid4().hex[:8]}"
    platforms = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]
    index, children = devservers.push_index(registry.url, name, "2.0.0", platforms,
                                            created=CREATED, oci=oci, attestation=oci)

    default, _ = _info(registry, name, "2.0.0")
    arm64, _ = _info(registry, name, "2.0.0", platform="linux/arm64")
    arm, _ = _info(registry, name, "2.0.0", platform="linux/arm")

    assert default.digest == arm64.digest == index  # the tag's digest is the index
    assert default.platforms == ("linux/amd64", "linux/arm64/v8", "linux/arm/v7")
    assert default.labels["platform"] == "linux/amd64"
    assert arm64.labels["platform"] == "linux/arm64/v8"
    assert arm.labels["platform"] == "linux/arm/v7"
    assert default.created == CREATED_AT
    assert set(children) == set(platforms)


def test_missing_platform_names_what_there_is(registry: devservers.Registry) -> None:
    name = f"meta/noplat-{uuid.uuid4().hex[:8]}"
    devservers.push_index(registry.url, name, "1.0", ["linux/amd64", "linux/arm64"])

    with pytest.raises(ImageNotFound) as missing:
        _info(registry, name, "1.0", platform="linux/s390x")

    assert str(missing.value) == (f"registry {registry.host}, image {name}:1.0: no "
                                  f"linux/s390x image (it has linux/amd64, linux/arm64)")


def test_immutable_data_comes_from_the_state_store_the_second_time(
    registry: devservers.Registry, tmp_path: Path,
) -> None:
    name = f"meta/cached-{uuid.uuid4().hex[:8]}"
    index, children = devservers.push_index(registry.url, name, "3.0.0",
                                            ["linux/amd64", "linux/arm64"])

    with State(tmp_path / "state.db") as state:
        first, cold = _info(registry, name, "3.0.0", state=state)
        second, warm = _info(registry, name, "3.0.0", state=state)
        cached = state.get_blob(children["linux/amd64"], "manifest")

    assert first == second and first.digest == index
    assert cold.counts == {"ping": 1, "manifest-head": 1, "manifest": 2, "blob": 1}
    assert warm.counts == {"ping": 1, "manifest-head": 1}  # only the tag → digest lookup
    assert cached is not None and manifests.sha256(cached) == children["linux/amd64"]


def test_image_info_through_the_token_flow(
    token_registry: devservers.Registry, token_server: devservers.TokenServer,
) -> None:
    name = f"public/meta-{uuid.uuid4().hex[:8]}"
    push = devservers.BearerAuth("tester", "s3cret-pw")
    index, _ = devservers.push_index(token_registry.url, name, "1.0.0",
                                     ["linux/amd64", "linux/arm64"], auth=push)

    info, client = _info(token_registry, name, "1.0.0", platform="linux/arm64")

    assert info.digest == index and info.labels["platform"] == "linux/arm64"
    assert client.counts == {"ping": 1, "token": 1, "manifest-head": 1, "manifest": 2,
                             "blob": 1}


def test_https_registry_with_a_private_ca_bundle(tmp_path: Path) -> None:
    ca, certificate, key = devservers.make_tls(tmp_path / "tls")
    server = devservers.start_registry(tmp_path / "tls-registry", tls=(certificate, key))
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as http:
            devservers.push_image(f"https://{server.host}", "secure/app", "1.0.0", http=http)
        image = refs.parse(f"{server.host}/secure/app")

        async def tags(**settings: Any) -> list[str]:
            config = [models.RegistryConfig(host=server.host, **settings)]
            async with registry_client.RegistryClient(config, attempts=1) as client:
                return await client.list_tags(image)

        trusted = asyncio.run(tags(ca_bundle=ca))
        with pytest.raises(RegistryUnavailable) as untrusted:
            asyncio.run(tags())
    finally:
        server.stop()

    assert trusted == ["1.0.0"]
    assert str(untrusted.value) == (
        f"registry {server.host} unreachable while reading secure/app: TLS certificate not "
        f"trusted; set `ca_bundle` for this registry")


@pytest.mark.parametrize(("host", "why"), [
    (None, "TLS handshake failed — a plain-HTTP registry? set `insecure: true` for this "
           "registry"),
    ("no-such-registry.invalid", "cannot resolve host (DNS)"),
])
def test_unreachable_registries_say_why(registry: devservers.Registry, host: str | None,
                                        why: str) -> None:
    host = host or registry.host  # the plain-HTTP registry, asked over HTTPS
    image = refs.parse(f"{host}/team/app")

    async def tags() -> list[str]:
        async with registry_client.RegistryClient([models.RegistryConfig(host=host)],
                                                  attempts=1) as client:
            return await client.list_tags(image)

    with pytest.raises(RegistryUnavailable) as caught:
        asyncio.run(tags())

    assert str(caught.value) == f"registry {host} unreachable while reading team/app: {why}"


def test_a_manifest_nested_deeper_than_the_recursion_limit_is_invalid() -> None:
    with pytest.raises(manifests.InvalidManifest, match="manifest is JSON nested too deeply"):
        manifests.parse(b"[" * 100_000 + b"]" * 100_000)
