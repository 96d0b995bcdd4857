"""The Dockerfile's kubectl download step, against a local HTTP server with the release layout."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fetch_kubectl.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_kubectl", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def release(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A directory served over HTTP like the Kubernetes release bucket."""
    root = tmp_path / "release"
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


def _publish(root: Path, body: bytes, published_digest: str) -> None:
    folder = root / "v1.30.10" / "bin" / "linux" / "amd64"
    folder.mkdir(parents=True)
    (folder / "kubectl").write_bytes(body)
    (folder / "kubectl.sha256").write_text(published_digest + "\n")


def test_verified_binary_is_installed_executable(release: tuple[str, Path],
                                                 tmp_path: Path) -> None:
    url, root = release
    body = b"\x7fELF pretend kubectl"
    _publish(root, body, hashlib.sha256(body).hexdigest())
    dest = tmp_path / "kubectl"
    digest = _load().install(version="v1.30.10", arch="amd64", dest=dest, base_url=url)
    assert digest == hashlib.sha256(body).hexdigest()
    assert dest.read_bytes() == body
    assert dest.stat().st_mode & 0o777 == 0o755


def test_checksum_mismatch_fails_and_writes_nothing(release: tuple[str, Path],
                                                    tmp_path: Path) -> None:
    url, root = release
    _publish(root, b"tampered", "0" * 64)
    dest = tmp_path / "kubectl"
    with pytest.raises(SystemExit) as failed:
        _load().install(version="v1.30.10", arch="amd64", dest=dest, base_url=url)
    assert str(failed.value).startswith("kubectl v1.30.10 amd64: sha256 ")
    assert str(failed.value).endswith(f"!= published {'0' * 64}")
    assert list(tmp_path.glob("kubectl*")) == []


# --- --file: a binary already in the build context, checked against a pinned digest -------


def test_file_matching_the_pinned_digest_is_installed(tmp_path: Path) -> None:
    source = tmp_path / "context-kubectl"
    source.write_bytes(b"\x7fELF pretend kubectl v1.30.0")
    dest = tmp_path / "kubectl"
    code = _load().main(["v1.30.0", "amd64", str(dest), "--file", str(source),
                         "--sha256", hashlib.sha256(source.read_bytes()).hexdigest().upper()])
    assert code == 0
    assert dest.read_bytes() == source.read_bytes()
    assert dest.stat().st_mode & 0o777 == 0o755


def test_file_with_another_digest_fails_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "context-kubectl"
    source.write_bytes(b"not the pinned binary")
    dest = tmp_path / "out" / "kubectl"
    dest.parent.mkdir()
    with pytest.raises(SystemExit) as failed:
        _load().main(["v1.30.0", "amd64", str(dest), "--file", str(source),
                      "--sha256", "ab" * 32])
    assert str(failed.value) == (
        f"kubectl v1.30.0 amd64 from {source}: sha256 "
        f"{hashlib.sha256(b'not the pinned binary').hexdigest()} != pinned {'ab' * 32}")
    assert list(dest.parent.iterdir()) == []


@pytest.mark.parametrize("digest", ["abc", "g" * 64, "ab" * 33])
def test_file_needs_a_well_formed_digest(tmp_path: Path, digest: str) -> None:
    source = tmp_path / "context-kubectl"
    source.write_bytes(b"kubectl")
    with pytest.raises(SystemExit) as failed:
        _load().install_file(version="v1.30.0", arch="amd64", source=source, sha256=digest,
                             dest=tmp_path / "kubectl")
    assert str(failed.value) == f"kubectl v1.30.0 amd64: --sha256 {digest!r} is not a SHA-256"
    assert not (tmp_path / "kubectl").exists()


def test_file_without_a_digest_is_a_usage_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "context-kubectl"
    source.write_bytes(b"kubectl")
    with pytest.raises(SystemExit) as failed:
        _load().main(["v1.30.0", "amd64", str(tmp_path / "kubectl"), "--file", str(source)])
    assert failed.value.code == 2
    assert "--file needs --sha256" in capsys.readouterr().err
    assert not (tmp_path / "kubectl").exists()


def test_file_over_the_size_limit_is_refused(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load()
    monkeypatch.setattr(module, "MAX_BYTES", 8)
    source = tmp_path / "context-kubectl"
    source.write_bytes(b"123456789")
    with pytest.raises(SystemExit) as failed:
        module.install_file(version="v1.30.0", arch="amd64", source=source,
                            sha256=hashlib.sha256(b"123456789").hexdigest(),
                            dest=tmp_path / "kubectl")
    assert str(failed.value) == (f"kubectl v1.30.0 amd64: {source} is 9 bytes (limit 8)")
    assert not (tmp_path / "kubectl").exists()


def test_download_over_the_size_limit_is_refused(release: tuple[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = release
    _publish(root, b"123456789", hashlib.sha256(b"123456789").hexdigest())
    module = _load()
    monkeypatch.setattr(module, "MAX_BYTES", 8)
    with pytest.raises(SystemExit) as failed:
        module.install(version="v1.30.10", arch="amd64", dest=tmp_path / "kubectl",
                       base_url=url)
    assert str(failed.value).endswith("/v1.30.10/bin/linux/amd64/kubectl: more than 8 bytes")
    assert not (tmp_path / "kubectl").exists()
