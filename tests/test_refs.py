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


@pytest.mark.parametrize("text", ["", "UPPER/case", "a b", "app:", "app@sha256:12", "x:-bad",
                                  "app:v\u00e9", "app:\u0661", "app:" + "a" * 129])
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


@pytest.mark.parametrize(("text", "valid"), [
    ("1.25", True), ("_x", True), ("A-b_c.d", True), ("a" * 128, True), ("a" * 129, False),
    ("-1", False), (".1", False), ("v\u00e9", False), ("\u0661", False), ("1.0\n", False),
    ("", False),
])
def test_tags_follow_the_oci_grammar(text: str, valid: bool) -> None:
    """``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``, ASCII only (``\\w`` would take any letter
    or digit of any script, which no registry accepts), the whole text."""
    assert refs.is_tag(text) is valid


def test_only_short_texts_are_memoised() -> None:
    refs._parse_short.cache_clear()
    short = "ghcr.io/acme/web:1.0"
    assert refs.parse(short) is refs.parse(short)  # memoised: one object
    long = "reg.example/" + "/".join(["a"] * 400) + ":1.0"  # valid, 800+ characters
    assert refs.parse(long) == refs.parse(long)
    assert refs.parse(long) is not refs.parse(long)  # parsed each time
    assert refs._parse_short.cache_info().currsize == 1
