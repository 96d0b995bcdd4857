"""Real servers for tests and the demo: Debian's docker-registry and git smart HTTP.

Used by ``tests/conftest.py`` (in-process helpers) and by ``make demo`` (the CLI below).
Nothing here is part of the image-bot package.

    python tools/devservers.py registry --dir D --port 5000
    python tools/devservers.py git --root D --port 8081
    python tools/devservers.py seed --registry http://127.0.0.1:5000 --image app --tag 1.0.0
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --- container registry -------------------------------------------------------------------


@dataclass
class Registry:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    log: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_registry(directory: Path, *, port: int | None = None,
                   htpasswd: Path | None = None,
                   extra: Mapping[str, Any] | None = None) -> Registry:
    """Start ``docker-registry serve`` on loopback with its storage under ``directory``."""
    binary = shutil.which("docker-registry")
    if not binary:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(directory / "data")},
                    "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "image-bot-tests", "path": str(htpasswd)}}
    config.update(extra or {})
    config_file = directory / "config.yml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    log = directory / "registry.log"
    with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen([binary, "serve", str(config_file)],
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"registry did not start: {log.read_text()[-2000:]}") from None
    return Registry(process, port, directory, log)


def write_htpasswd(path: Path, username: str, password: str) -> Path:
    line = subprocess.run(["htpasswd", "-Bbn", username, password], check=True,
                          capture_output=True, text=True).stdout.strip()
    path.write_text(line + "\n")
    return path


def _tiny_layer(content: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(content), 0
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def _push_blob(http: httpx.Client, base: str, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if http.head(f"{base}/v2/{name}/blobs/{digest}").status_code == 200:
        return digest
    start = http.post(f"{base}/v2/{name}/blobs/uploads/")
    start.raise_for_status()
    location = start.headers["Location"]
    if location.startswith("/"):
        location = base + location
    separator = "&" if "?" in location else "?"
    # the digest is appended to the URL string: params= would drop the upload's _state
    done = http.put(f"{location}{separator}digest={digest}", content=data,
                    headers={"Content-Type": "application/octet-stream"})
    done.raise_for_status()
    return digest


def push_image(base: str, name: str, tag: str, *, auth: tuple[str, str] | None = None,
               created: str = "2026-01-01T00:00:00Z") -> str:
    """Push a one-layer image ``name:tag`` (unique per tag); returns the manifest digest."""
    with httpx.Client(auth=auth, timeout=30) as http:
        layer = _tiny_layer(f"{name}:{tag}\n".encode())
        layer_digest = _push_blob(http, base, name, layer)
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": created,
            "config": {"Labels": {"org.opencontainers.image.version": tag}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }, sort_keys=True).encode()
        config_digest = _push_blob(http, base, name, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
            "layers": [{"mediaType": DOCKER_LAYER, "size": len(layer), "digest": layer_digest}],
        }).encode()
        response = http.put(f"{base}/v2/{name}/manifests/{tag}", content=manifest,
                            headers={"Content-Type": DOCKER_MANIFEST})
        response.raise_for_status()
        return str(response.headers["Docker-Content-Digest"])


# --- git over smart HTTP -----------------------------------------------------------------


@dataclass
class GitServer:
    server: ThreadingHTTPServer
    root: Path
    thread: threading.Thread
    pushes: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, repo: str, *, credentials: str | None = None) -> str:
        userinfo = f"{credentials}@" if credentials else ""
        return f"http://{userinfo}127.0.0.1:{self.port}/{repo}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _GitHandler(BaseHTTPRequestHandler):
    """CGI bridge to ``git http-backend`` (de-chunks request bodies, which CGI cannot take)."""

    server_version = "image-bot-devgit/1"
    root: Path
    credentials: str | None = None  # "user:password" required when set

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _authorized(self) -> str | None:
        if not self.credentials:
            return ""

        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            decoded = base64.b64decode(header[6:]).decode()
            if secrets.compare_digest(decoded, self.credentials):
                return decoded.split(":", 1)[0]
        return None

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _backend(self) -> None:
        user = self._authorized()
        if user is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": user or "anonymous", "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.root),
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        result = subprocess.run(["git", "http-backend"], input=body, env=env,
                                capture_output=True, check=False)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = result.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def start_git_server(root: Path, *, port: int | None = None,
                     credentials: str | None = None) -> GitServer:
    """Serve the bare repositories under ``root`` over smart HTTP (push enabled)."""
    handler = type("Handler", (_GitHandler,), {"root": root, "credentials": credentials})
    server = ThreadingHTTPServer(("127.0.0.1", port or 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return GitServer(server, root, thread)


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@localhost",
           "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@localhost"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True, env=env).stdout


def create_repo(root: Path, name: str, files: Mapping[str, str | bytes], *,
                branch: str = "main") -> Path:
    """A bare repo ``root/name`` with one commit holding ``files``; push over HTTP enabled."""
    bare = root / name
    git("init", "--bare", "-q", "-b", branch, str(bare), cwd=root)
    git("config", "http.receivepack", "true", cwd=bare)
    work = root / f".seed-{name}"
    git("clone", "-q", str(bare), str(work), cwd=root)
    for relative, content in files.items():
        target = work / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_bytes(content.encode())
    git("checkout", "-q", "-b", branch, cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "initial config", cwd=work)
    git("push", "-q", "origin", branch, cwd=work)
    shutil.rmtree(work)
    return bare


# --- command line (for make demo) --------------------------------------------------------



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("registry", help="run docker-registry on loopback")
    reg.add_argument("--dir", type=Path, required=True)
    reg.add_argument("--port", type=int, required=True)
    srv = sub.add_parser("git", help="serve bare repositories over smart HTTP")
    srv.add_argument("--root", type=Path, required=True)
    srv.add_argument("--port", type=int, required=True)
    seed = sub.add_parser("seed", help="push a tiny image tag to a registry")
    seed.add_argument("--registry", required=True)
    seed.add_argument("--image", required=True)
    seed.add_argument("--tag", action="append", required=True)
    args = parser.parse_args(argv)
    if args.command == "registry":
        registry = start_registry(args.dir, port=args.port)
        try:
            registry.process.wait()
        finally:
            registry.stop()
    elif args.command == "git":
        server = start_git_server(args.root, port=args.port)
        try:
            server.thread.join()
        finally:
            server.stop()
    else:
        for tag in args.tag:
            print(f"pushed {args.image}:{tag} {push_image(args.registry, args.image, tag)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
