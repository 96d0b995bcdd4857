"""Image references: parsing and normalisation (pure)."""

from __future__ import annotations

import pytest

from image_bot import refs


@pytest.mark.parametrize(("text", "expected"), [
    ("nginx", refs.ImageRef("docker.io", "library/nginx")),
    ("nginx:1.25", refs.ImageRef("docker.io", "library/nginx", "1.25")),
    ("docker.io/library/nginx:1.25", refs.ImageRef("docker.io", "library/nginx", "1.25")),
    ("index.docker.io/bitnami/redis:7", refs.ImageRef("docker.io", "bitnami/redis", "7")),
    ("ghcr.io/stefanprodan/podinfo:6.5.0",
     refs.ImageRef("ghcr.io", "stefanprodan/podinfo", "6.5.0")),
    ("127.0.0.1:5000/team/app", refs.ImageRef("127.0.0.1:5000", "team/app")),
    ("localhost/app:dev", refs.ImageRef("localhost", "app", "dev")),
    ("quay.io/a/b:1@sha256:" + "a" * 64,
     refs.ImageRef("quay.io", "a/b", "1", "sha256:" + "a" * 64)),
])
def test_parse(text: str, expected: refs.ImageRef) -> None:
    assert refs.parse(text) == expected


@pytest.mark.parametrize("text", ["", "UPPER/case", "a b", "app:", "app@sha256:12", "x:-bad"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(refs.InvalidReference):
        refs.parse(text)


@pytest.mark.parametrize(("text", "tag", "expected"), [
    ("nginx:1.25", "1.27", "nginx:1.27"),
    ("nginx", "1.27", "nginx:1.27"),
    ("127.0.0.1:5000/app:1.0@sha256:" + "b" * 64, "1.1", "127.0.0.1:5000/app:1.1"),
    ("127.0.0.1:5000/app", "2", "127.0.0.1:5000/app:2"),
])
def test_replace_tag_keeps_the_spelling(text: str, tag: str, expected: str) -> None:
    assert refs.replace_tag(text, tag) == expected
