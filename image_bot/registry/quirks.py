"""Registries that behave differently, listed in one dict (pure data; no I/O).

Adding a registry with a quirk is one entry in ``QUIRKS``: a host suffix and what differs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Quirks:
    api_host: str | None = None        # the API lives elsewhere than the name in image refs
    max_page_size: int | None = None   # the registry refuses a larger ``n``
    page_size: int | None = None       # ``n`` to send when the config sets none


NONE = Quirks()

QUIRKS: dict[str, Quirks] = {
    # Docker Hub: images say docker.io, the API is registry-1.docker.io
    "docker.io": Quirks(api_host="registry-1.docker.io"),
    # ECR answers 100 tags a page by default and refuses n > 1000
    ".amazonaws.com": Quirks(max_page_size=1000, page_size=1000),
    ".amazonaws.com.cn": Quirks(max_page_size=1000, page_size=1000),
}


def for_host(host: str) -> Quirks:
    for suffix, quirks in QUIRKS.items():
        if host == suffix or (suffix.startswith(".") and host.endswith(suffix)):
            return quirks
    return NONE
