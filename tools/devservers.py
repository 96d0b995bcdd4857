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
import hmac
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
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
                   htpasswd: Path | None = None, token: TokenServer | TokenAuth | None = None,
                   tls: tuple[Path, Path] | None = None,
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
    if tls:  # (certificate, key): serve HTTPS
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    if token:
        config["auth"] = {"token": {"realm": token.realm, "service": token.service,
                                    "issuer": token.issuer,
                                    "rootcertbundle": str(token.certificate)}}
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


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
RegistryAuth = httpx.Auth | tuple[str, str] | None


def _push_manifest(http: httpx.Client, base: str, name: str, reference: str | None, *,
                   platform: str = "linux/amd64", created: str, oci: bool = False,
                   labels: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Push config, one layer and a manifest for ``platform`` (by digest when ``reference``
    is None); returns (digest, size)."""
    os_name, arch, *variant = platform.split("/")
    layer = _tiny_layer(f"{name}:{reference}:{platform}:{created}\n".encode())
    layer_digest = _push_blob(http, base, name, layer)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config_doc: dict[str, Any] = {
        "architecture": arch, "os": os_name, "created": created,
        "config": {"Labels": dict(labels or {})},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if variant:
        config_doc["variant"] = variant[0]
    config = json.dumps(config_doc, sort_keys=True).encode()
    config_digest = _push_blob(http, base, name, config)
    media, config_media, layer_media = ((OCI_MANIFEST, OCI_CONFIG, OCI_LAYER) if oci else
                                        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media,
        "config": {"mediaType": config_media, "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": layer_media, "size": len(layer), "digest": layer_digest}],
    }).encode()
    reference = reference or "sha256:" + hashlib.sha256(manifest).hexdigest()
    response = http.put(f"{base}/v2/{name}/manifests/{reference}", content=manifest,
                        headers={"Content-Type": media})
    response.raise_for_status()
    return str(response.headers["Docker-Content-Digest"]), len(manifest)


def _http(auth: RegistryAuth, http: httpx.Client | None) -> contextlib.AbstractContextManager[
        httpx.Client]:
    return contextlib.nullcontext(http) if http else httpx.Client(auth=auth, timeout=30)


def push_image(base: str, name: str, tag: str, *, auth: RegistryAuth = None,
               created: str = "2026-01-01T00:00:00Z", oci: bool = False,
               labels: Mapping[str, str] | None = None, http: httpx.Client | None = None) -> str:
    """Push a one-layer image ``name:tag`` (unique per tag); returns the manifest digest."""
    with _http(auth, http) as http:
        labels = {"org.opencontainers.image.version": tag, **(labels or {})}
        return _push_manifest(http, base, name, tag, created=created, oci=oci,
                              labels=labels)[0]


def push_index(base: str, name: str, tag: str, platforms: list[str], *,
               auth: RegistryAuth = None, created: str = "2026-01-01T00:00:00Z",
               oci: bool = True, attestation: bool = False,
               http: httpx.Client | None = None) -> tuple[str, dict[str, str]]:
    """Push a multi-arch image: one manifest per platform, then an OCI index (``oci``) or a
    Docker manifest list. ``attestation`` adds a buildkit-style ``unknown/unknown`` entry.
    Returns the index digest and the child digest of each platform."""
    with _http(auth, http) as http:
        children: dict[str, str] = {}
        entries = []
        for platform in [*platforms, *(["unknown/unknown"] if attestation else [])]:
            labels = {"org.opencontainers.image.version": tag, "platform": platform}
            digest, size = _push_manifest(http, base, name, None,
                                          platform=platform, created=created, oci=oci,
                                          labels=labels)
            os_name, arch, *variant = platform.split("/")
            entry: dict[str, Any] = {"mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
                                     "size": size, "digest": digest,
                                     "platform": {"os": os_name, "architecture": arch}}
            if variant:
                entry["platform"]["variant"] = variant[0]
            entries.append(entry)
            if platform != "unknown/unknown":
                children[platform] = digest
        media = OCI_INDEX if oci else DOCKER_LIST
        index = json.dumps({"schemaVersion": 2, "mediaType": media, "manifests": entries})
        response = http.put(f"{base}/v2/{name}/manifests/{tag}", content=index.encode(),
                            headers={"Content-Type": media})
        response.raise_for_status()
        return str(response.headers["Docker-Content-Digest"]), children


# --- token server (the Docker Hub / GHCR Bearer flow) -------------------------------------


@dataclass(frozen=True)
class TokenAuth:
    """What the registry needs to trust a token server (one running in another process)."""

    realm: str
    certificate: Path
    service: str = "image-bot-tests"
    issuer: str = "image-bot-token-server"


@dataclass(frozen=True)
class TokenRequest:
    method: str
    user: str | None
    scopes: tuple[str, ...]


@dataclass
class TokenServer:
    """Issues RS256 JWTs for ``docker-registry``'s ``auth.token`` (x5c header, access claim).

    Users in ``users`` get pull and push everywhere; anonymous clients get pull on
    repositories under ``public/``. ``identity_tokens`` maps OAuth2 refresh tokens (the
    Docker config's ``identitytoken``) to users. Every request is recorded in ``requests``.
    """

    server: ThreadingHTTPServer
    thread: threading.Thread
    certificate: Path
    key: Any
    cert_der: bytes
    users: dict[str, str]
    identity_tokens: dict[str, str] = field(default_factory=dict)
    expires_in: int = 300
    service: str = "image-bot-tests"
    issuer: str = "image-bot-token-server"
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # every token, to prove none leaks

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def issue(self, user: str | None, scopes: list[str]) -> str:
        import jwt  # dev dependency: only the test suite signs tokens

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = {"pull", "push"} if user else (
                {"pull"} if repo.startswith("public/") else set())
            granted = [a for a in wanted if a in allowed or (a == "*" and user)]
            access.append({"type": kind, "name": repo, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service,
                  "exp": now + self.expires_in, "nbf": now - 5, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        headers = {"x5c": [base64.b64encode(self.cert_der).decode()]}
        token = str(jwt.encode(claims, self.key, algorithm="RS256", headers=headers))
        self.issued.append(token)
        return token


class _TokenHandler(BaseHTTPRequestHandler):
    owner: TokenServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(self.path).query)
        user = self._basic_user()
        if user == "":
            return self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
        scopes = query.get("scope", [])
        self.owner.requests.append(TokenRequest("GET", user, tuple(scopes)))
        token = self.owner.issue(user, scopes)
        self._answer(200, {"token": token, "access_token": token,
                           "expires_in": self.owner.expires_in})

    def do_POST(self) -> None:
        from urllib.parse import parse_qs

        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        user: str | None = None
        if form.get("grant_type") == "refresh_token":
            user = self.owner.identity_tokens.get(form.get("refresh_token", ""))
        elif form.get("grant_type") == "password":
            name = form.get("username", "")
            if self.owner.users.get(name) == form.get("password"):
                user = name
        scopes = form.get("scope", "").split()
        self.owner.requests.append(TokenRequest("POST", user, tuple(scopes)))
        if user is None or not form.get("client_id"):
            return self._answer(401, {"error": "invalid_grant"})
        self._answer(200, {"access_token": self.owner.issue(user, scopes),
                           "expires_in": self.owner.expires_in})

    def _basic_user(self) -> str | None:
        """The authenticated user; None when anonymous; "" when the password is wrong."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return name if self.owner.users.get(name) == password else ""

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_token_server(directory: Path, users: Mapping[str, str], *,
                       port: int | None = None) -> TokenServer:
    """Start a token server on loopback; its signing certificate is written to ``directory``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "image-bot token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    certificate = directory / "token-signer.pem"
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    handler = type("TokenHandler", (_TokenHandler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", port or 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    owner = TokenServer(server, thread, certificate, key,
                        cert.public_bytes(serialization.Encoding.DER), dict(users))
    handler.owner = owner
    thread.start()
    return owner


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1: (ca.pem, server.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("image-bot test CA"))
          .issuer_name(name("image-bot test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name("127.0.0.1"))
              .issuer_name(ca.subject).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=30))
              .add_extension(x509.SubjectAlternativeName(
                  [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class BearerAuth(httpx.Auth):
    """httpx auth for pushing seed images through the token flow (Basic to the realm)."""

    def __init__(self, username: str, password: str) -> None:
        raw = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._basic = f"Basic {raw}"
        self._tokens: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Any:
        repository = _repository_of(request.url.path)
        if repository in self._tokens:
            request.headers["Authorization"] = f"Bearer {self._tokens[repository]}"
        response = yield request
        if response.status_code != 401:
            return
        params = dict(_CHALLENGE_PARAM.findall(response.headers.get("WWW-Authenticate", "")))
        token_response = yield httpx.Request("GET", params["realm"], params={
            "service": params.get("service", ""), "scope": params.get("scope", "")},
            headers={"Authorization": self._basic})
        token_response.read()
        self._tokens[repository] = token_response.json()["token"]
        request.headers["Authorization"] = f"Bearer {self._tokens[repository]}"
        yield request


def _repository_of(path: str) -> str:
    name = path.removeprefix("/v2/")
    for marker in ("/manifests/", "/blobs/", "/tags/"):
        if marker in name:
            return name.split(marker, 1)[0]
    return name


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "httpd", "sleep", "cat", "echo", "true", "false", "wget", "ls", "env")


def _busybox_layer(name: str, tag: str) -> bytes:
    """One layer: static busybox, a few applet links, and /www/index.html naming the image."""
    if not BUSYBOX.exists():
        raise RuntimeError("busybox-static is not installed (apt-get install busybox-static)")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for directory in ("bin", "www", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if directory == "tmp" \
                else 0o755, 0
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode, link.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            tar.addfile(link)
        page = f"{name}:{tag}\n".encode()
        info = tarfile.TarInfo("www/index.html")
        info.size, info.mode, info.mtime = len(page), 0o644, 0
        tar.addfile(info, io.BytesIO(page))
    return gzip.compress(raw.getvalue(), mtime=0)


def push_busybox_image(base: str, name: str, tag: str, *,
                       entrypoint: list[str] | None = None,
                       cmd: list[str] | None = None,
                       auth: tuple[str, str] | None = None) -> str:
    """Push a runnable one-layer busybox image ``name:tag``; returns the manifest digest.

    ``/www/index.html`` holds ``name:tag``, so ``httpd -h /www`` shows which version runs.
    An ``entrypoint`` of ``["false"]`` makes an image whose containers exit at once.
    """
    with httpx.Client(auth=auth, timeout=60) as http:
        layer = _busybox_layer(name, tag)
        layer_digest = _push_blob(http, base, name, layer)
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
        container: dict[str, Any] = {
            "Env": ["PATH=/bin", f"IMAGE_VERSION={tag}"],
            "Cmd": cmd or ["sleep", "3600"],
            "Labels": {"org.opencontainers.image.version": tag},
        }
        if entrypoint:
            container["Entrypoint"] = entrypoint
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": container, "rootfs": {"type": "layers", "diff_ids": [diff_id]},
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


# --- Docker Engine ----------------------------------------------------------------------


@dataclass
class Dockerd:
    process: subprocess.Popen[bytes]
    directory: Path
    log: Path

    @property
    def socket(self) -> Path:
        return self.directory / "docker.sock"

    @property
    def host(self) -> str:
        """The value for ``DOCKER_HOST``."""
        return f"unix://{self.socket}"

    def stop(self) -> None:
        """Stop every container, then the daemon, then remove its files."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            ids = subprocess.run(["docker", "-H", self.host, "ps", "-aq"], capture_output=True,
                                 text=True, timeout=30).stdout.split()
            if ids:
                subprocess.run(["docker", "-H", self.host, "rm", "-f", *ids],
                               capture_output=True, timeout=60)
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for mount in _mounts_under(self.directory):  # vfs leaves none; be safe with overlay
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def _mounts_under(directory: Path) -> list[str]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return sorted((p for p in points if p.startswith(str(directory))), reverse=True)


def start_dockerd(*, timeout: float = 30.0, storage_driver: str = "vfs") -> Dockerd:
    """Start a private ``dockerd`` (no bridge, no iptables, vfs) on its own socket.

    Its files live in a short /tmp directory because unix socket paths are limited to 108
    bytes and dockerd puts containerd's sockets under the exec root. ``overlay2`` (where the
    filesystem allows it) makes image builds far faster: vfs copies the whole rootfs per step.
    """
    binary = shutil.which("dockerd")
    if not binary:
        raise RuntimeError("dockerd is not installed (apt-get install docker.io)")
    directory = Path(tempfile.mkdtemp(prefix="ib-dockerd-", dir="/tmp"))
    log = directory / "dockerd.log"
    command = [binary, "--data-root", str(directory / "data"),
               "--exec-root", str(directory / "exec"), "--pidfile", str(directory / "pid"),
               "-H", f"unix://{directory / 'docker.sock'}", "--iptables=false",
               "--ip-masq=false", "--bridge=none", f"--storage-driver={storage_driver}"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    daemon = Dockerd(process, directory, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if daemon.socket.exists() and _docker_ping(daemon.socket):
            return daemon
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:]
    daemon.stop()
    raise RuntimeError(f"dockerd did not start: {tail}")


def _docker_ping(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(1)
            client.connect(str(sock))
            client.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in client.recv(64)
    except OSError:
        return False


# --- Kubernetes API emulator (kmock) ------------------------------------------------------


@dataclass
class KubeEmulator:
    """kmock's ``KubernetesEmulator`` on loopback, in a thread with its own event loop.

    No API server can run here; this is an emulator (naive merges, no controllers), patched
    where kubectl needs more than kmock 0.8 gives: core ``groupVersion``, list ``kind``,
    server-side apply creating objects, ``metadata.uid``, and ``labelSelector`` on lists.
    Tests that use it are marked ``emulator``.
    """

    emulator: Any
    url: str
    kubeconfig: Path
    loop: Any
    thread: threading.Thread
    stop_event: Any

    def objects(self) -> dict[tuple[str, str | None, str], dict[str, Any]]:
        """Live objects as ``(plural, namespace, name) → object``."""
        found = {}
        for (resource, namespace, name), obj in list(self.emulator.objects.items()):
            if not obj.deleted:
                found[(resource.plural, namespace, name)] = json.loads(json.dumps(obj.raw))
        return found

    def patch(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Change an object behind kubectl's back: a hand edit, or a controller's status."""
        import asyncio

        async def apply() -> None:
            async with self.emulator._lock:
                for (resource, ns, obj_name), obj in list(self.emulator.objects.items()):
                    if (resource.plural, ns, obj_name) == (plural, namespace, name):
                        obj.patch(dict(patch))
                        return
            raise KeyError((plural, namespace, name))

        asyncio.run_coroutine_threadsafe(apply(), self.loop).result(10)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(10)


def _kube_emulator_class() -> Any:
    import uuid

    import kmock
    from kmock._internal import enums

    class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
        async def _handle(self, request: Any) -> Any:
            if request.resource is not None and request.name and (
                    request.action == enums.action.UPDATE):
                if request.params.get("dryRun"):  # kubectl diff: answer, store nothing
                    return await self._dry_run(request)
                await self._upsert(request)
            return await super()._handle(request)

        async def _dry_run(self, request: Any) -> Any:
            import aiohttp.web

            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                live = {} if key not in self._objects or self._objects[key].deleted else (
                    json.loads(json.dumps(self._objects[key].raw)))
            return aiohttp.web.json_response(_merge(live, request.data or {}))

        async def _upsert(self, request: Any) -> None:
            """Server-side apply is a PATCH that creates; every object gets a uid."""
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if request.action == enums.action.UPDATE and (
                        key not in self._objects or self._objects[key].deleted):
                    data = json.loads(json.dumps(request.data or {}))
                    data.setdefault("metadata", {})["uid"] = str(uuid.uuid4())
                    if key in self._objects:
                        self._objects[key].create(data)
                    else:
                        self._objects[key] = data

        async def _serve_version(self, request: Any) -> Any:
            payload = await super()._serve_version(request)
            if request.resource.group == "":
                payload["groupVersion"] = request.resource.version  # kmock says "/v1"
            return payload

        async def _serve_list(self, request: Any) -> Any:
            payload = await super()._serve_list(request)
            selector = dict(part.split("=", 1) for part in str(
                request.params.get("labelSelector", "")).split(",") if "=" in part)
            payload["items"] = [item for item in payload["items"] if all(
                (item.get("metadata", {}).get("labels") or {}).get(k) == v
                for k, v in selector.items())]
            payload.setdefault("kind", "List")
            payload.setdefault("apiVersion", "v1")
            return payload

    return Emulator


def _merge(base: Any, patch: Any) -> Any:
    """The emulator's naive merge: mappings merge, everything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in patch.items()}}
    return patch


def start_kube_emulator(directory: Path) -> KubeEmulator:
    """Start the emulator on a free loopback port and write a kubeconfig for it."""
    import asyncio

    import kmock

    ready: dict[str, Any] = {}
    started = threading.Event()

    async def serve() -> None:
        emulator = _kube_emulator_class()()
        with warnings.catch_warnings():  # kmock 0.8 reads its bundle with a deprecated API
            warnings.filterwarnings("ignore", "read_binary is deprecated", DeprecationWarning)
            emulator.resources.load_bundled()
        stop_event = asyncio.Event()
        async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
            ready.update(emulator=emulator, url=str(server.url).rstrip("/"),
                         loop=asyncio.get_running_loop(), stop_event=stop_event)
            started.set()
            await stop_event.wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by start_kube_emulator, not lost in a thread
            ready["error"] = exc
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not started.wait(30) or "error" in ready:
        raise RuntimeError(f"the Kubernetes emulator did not start: {ready.get('error')!r}")
    directory.mkdir(parents=True, exist_ok=True)
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": ready["url"]}}],
        "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                      "namespace": "default"}}],
    }))
    return KubeEmulator(ready["emulator"], ready["url"], kubeconfig, ready["loop"], thread,
                        ready["stop_event"])


def kubectl_binary() -> str | None:
    """``$DEVSERVERS_KUBECTL``, kubectl on the PATH, or the copy ``make`` unpacks into
    .tools/ (from npm)."""
    found = os.environ.get("DEVSERVERS_KUBECTL") or shutil.which("kubectl")
    local = Path(__file__).resolve().parent.parent / ".tools" / "kubectl" / "kubectl"
    return found or (str(local) if local.exists() else None)


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


@dataclass
class SshServer:
    """A private ``sshd`` on loopback that lets one key in as the current user (git over SSH)."""

    process: subprocess.Popen[bytes]
    port: int
    client_key: Path  # the private key the bot is given
    known_hosts: Path  # vouches for the server's host key

    def url(self, bare: Path) -> str:
        return f"ssh://{_user()}@127.0.0.1:{self.port}{bare}"

    def stop(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def sshd_binary() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd",) if os.access(p, os.X_OK)), None)


def start_sshd(directory: Path) -> SshServer:
    """``sshd -D`` on a free loopback port with its own host key and one authorised client key
    (Debian ``openssh-server``; no PAM, no passwords)."""
    binary = sshd_binary()
    if binary is None:
        raise RuntimeError("sshd is not installed (Debian package openssh-server)")
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(directory / name)], check=True)
    authorized = directory / "authorized_keys"
    authorized.write_bytes((directory / "client.pub").read_bytes())
    authorized.chmod(0o600)
    port = free_port()
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {directory / 'host'}",
        f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "StrictModes no", f"PidFile {directory / 'sshd.pid'}", ""]))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    process = subprocess.Popen([binary, "-D", "-e", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    host_key = " ".join((directory / "host.pub").read_text().split()[:2])
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    return SshServer(process, port, directory / "client", known_hosts)


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


# --- notifications ----------------------------------------------------------------------


class HookReceiver:
    """A local HTTP receiver for image-bot's signed JSON notifications: it checks every
    ``X-Image-Bot-Signature-256`` against ``secret`` and keeps the events that match."""

    def __init__(self, secret: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(secret.encode(), body,
                                                hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-Image-Bot-Signature-256", ""),
                                           expected):
                    hooks.bad_signatures += 1
                    self.send_response(401)
                else:
                    hooks.events.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
