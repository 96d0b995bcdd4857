"""tools/imagebuild.py's pure parts: the mirror it takes from the machine's apt sources."""

from __future__ import annotations

from pathlib import Path

import pytest

import imagebuild

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def _etc(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGE_BOT_DEBIAN_MIRROR", raising=False)


def test_deb822_sources_give_the_mirror_and_the_security_mirror(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {"sources.list.d/debian.sources": DEB822,
                          "sources.list.d/nodesource.sources.disabled-by-farm":
                          "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\n"
                          "Suites: nodistro\n"})
    assert imagebuild.apt_mirrors(etc) == imagebuild.Mirrors(
        "http://deb.debian.org/debian", "http://deb.debian.org/debian-security")


def test_one_line_sources_with_options_and_a_disabled_stanza(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {
        "sources.list": "# deb http://old.example/debian bookworm main\n"
                        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ "
                        "trixie main\n",
        "sources.list.d/off.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/\n"
                                      "Suites: trixie\n"})
    assert imagebuild.apt_mirrors(etc) == imagebuild.Mirrors("http://mirror.example/debian",
                                                             None)


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {"sources.list.d/debian.sources": "Types: deb-src\nURIs: http://x/\n"
                                                           "Suites: bookworm\n"})
    with pytest.raises(imagebuild.ImageBuildError, match=r"no Debian mirror in .*IMAGE_BOT_DEB"):
        imagebuild.apt_mirrors(etc)


def test_the_override_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_BOT_DEBIAN_MIRROR", "http://local.example/debian/")
    etc = _etc(tmp_path, {"sources.list.d/debian.sources": DEB822})
    assert imagebuild.apt_mirrors(etc).debian == "http://local.example/debian"


def test_the_images_sources_follow_the_official_layout() -> None:
    text = imagebuild.sources_for(imagebuild.Mirrors("http://m/debian", "http://m/security"))
    assert "URIs: http://m/debian\nSuites: bookworm bookworm-updates\n" in text
    assert "URIs: http://m/security\nSuites: bookworm-security\n" in text


def test_the_base_tag_is_what_the_dockerfile_starts_from() -> None:
    dockerfile = (imagebuild.ROOT / "Dockerfile").read_text()
    version = dockerfile.split("ARG PYTHON_VERSION=", 1)[1].split()[0]
    bases = {line.split()[1].replace("${PYTHON_VERSION}", version)
             for line in dockerfile.splitlines() if line.startswith("FROM ")}
    assert bases == {imagebuild.BASE_TAG}
