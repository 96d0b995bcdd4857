"""Image build step: download kubectl for the sync agent's Kubernetes target, verify its SHA-256.

Used by the Dockerfile's `kubectl` stage (the only place that downloads anything); the
release's published `.sha256` file is the reference, and a mismatch fails the build. With
`--file`, a binary already in the build context (no network) is checked against a digest
pinned in the Dockerfile instead.

    python fetch_kubectl.py VERSION ARCH DEST [--base-url URL]
    python fetch_kubectl.py VERSION ARCH DEST --file PATH --sha256 HEX
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

BASE_URL = "https://dl.k8s.io/release"
MAX_BYTES = 200 * 1024 * 1024  # kubectl is ~50 MB


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        body = bytes(response.read(MAX_BYTES + 1))
    if len(body) > MAX_BYTES:
        raise SystemExit(f"{url}: more than {MAX_BYTES} bytes")
    return body


def install(*, version: str, arch: str, dest: Path, base_url: str = BASE_URL) -> str:
    """Download, verify and write kubectl to ``dest`` (mode 0755); returns the digest."""
    url = f"{base_url}/{version}/bin/linux/{arch}/kubectl"
    binary = fetch(url)
    expected = fetch(f"{url}.sha256").decode().split()[0].strip().lower()
    return _write(binary, expected, dest, what=f"kubectl {version} {arch}", reference="published")


def install_file(*, version: str, arch: str, source: Path, sha256: str, dest: Path) -> str:
    """Verify a local kubectl against a pinned digest and write it to ``dest`` (mode 0755)."""
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise SystemExit(f"kubectl {version} {arch}: --sha256 {sha256!r} is not a SHA-256")
    size = source.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"kubectl {version} {arch}: {source} is {size} bytes "
                         f"(limit {MAX_BYTES})")
    return _write(source.read_bytes(), expected, dest,
                  what=f"kubectl {version} {arch} from {source}", reference="pinned")


def _write(binary: bytes, expected: str, dest: Path, *, what: str, reference: str) -> str:
    actual = hashlib.sha256(binary).hexdigest()
    if actual != expected:
        raise SystemExit(f"{what}: sha256 {actual} != {reference} {expected}")
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(binary)
    os.chmod(tmp, 0o755)
    tmp.replace(dest)  # never a half-written binary on the PATH
    return actual


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version")
    parser.add_argument("arch")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--base-url", default=BASE_URL)
    parser.add_argument("--file", type=Path, help="a local binary to verify instead")
    parser.add_argument("--sha256", help="the pinned digest of --file")
    args = parser.parse_args(argv)
    if args.file is not None:
        if not args.sha256:
            parser.error("--file needs --sha256")
        digest = install_file(version=args.version, arch=args.arch, source=args.file,
                              sha256=args.sha256, dest=args.dest)
    else:
        digest = install(version=args.version, arch=args.arch, dest=args.dest,
                         base_url=args.base_url)
    print(f"kubectl {args.version} linux/{args.arch} sha256:{digest} -> {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
