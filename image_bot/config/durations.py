"""The one duration grammar of image-bot (pure): config, policies, flags and Compose files.

A duration is ``0`` or one or more ``<number><unit>`` parts, Go style: ``500ms``, ``30s``,
``5m``, ``1.5h``, ``7d``, ``1m30s``. Units: ``us``, ``ms``, ``s``, ``m``, ``h``, ``d``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(us|µs|ms|s|m|h|d)")
_WHOLE = re.compile(rf"^(?:0|(?:{_PART.pattern})+)$")
EXAMPLES = "90s, 15m, 2h or 7d"


class InvalidDuration(ValueError):
    """The text does not follow the duration grammar."""


def parse(text: str) -> float:
    """``"1m30s"`` → ``90.0`` seconds, or :class:`InvalidDuration`."""
    stripped = text.strip()
    if not _WHOLE.match(stripped):
        raise InvalidDuration(f"{text!r} is not a duration: write for example {EXAMPLES}")
    return sum(float(number) * UNITS[unit] for number, unit in _PART.findall(stripped))


def _checked(text: str) -> str:
    parse(text)
    return text


Duration = Annotated[str, AfterValidator(_checked),
                     Field(json_schema_extra={"pattern": _WHOLE.pattern})]
"""A model field holding a duration: validated with this grammar, kept as written."""
