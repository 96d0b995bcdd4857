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
