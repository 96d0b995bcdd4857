"""Image build step: download kubectl for the sync agent's Kubernetes target, verify its SHA-256.

Used by the Dockerfile's `kubectl` stage (the only place that downloads anything); the
release's published `.sha256` file is the reference, and a mismatch fails the build.

    python fetch_kubectl.py VERSION ARCH DEST [--base-url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

BASE_URL = "https://dl.k8s.io/release"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        return bytes(response.read())


def install(*, version: str, arch: str, dest: Path, base_url: str = BASE_URL) -> str:
    """Download, verify and write kubectl to ``dest`` (mode 0755); returns the digest."""
    url = f"{base_url}/{version}/bin/linux/{arch}/kubectl"
    binary = fetch(url)
    expected = fetch(f"{url}.sha256").decode().split()[0].strip().lower()
    actual = hashlib.sha256(binary).hexdigest()
    if actual != expected:
        raise SystemExit(f"kubectl {version} {arch}: sha256 {actual} != published {expected}")
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
    args = parser.parse_args(argv)
    digest = install(version=args.version, arch=args.arch, dest=args.dest,
                     base_url=args.base_url)
    print(f"kubectl {args.version} linux/{args.arch} sha256:{digest} -> {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
