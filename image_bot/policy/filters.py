"""Tag filters: ``pattern`` with ``extract``, ``exclude`` and signature tags (pure; no I/O).

A filter turns a tag into the *value* a strategy orders (the tag itself, or what ``extract``
builds from the pattern's groups), or rejects it with the rule that did. The tag that gets
written is always the original tag.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

# cosign signatures, attestations and SBOMs are tags too, but never something to deploy
SIGNATURE_GLOBS = ("*.sig", "*.att", "*.sbom", "sha256-*")
# the same globs as suffixes and prefixes: str.endswith/startswith cost a tenth of fnmatch,
# which then runs only to name the glob of a tag that is a signature
SIGNATURE_SUFFIXES = tuple(glob[1:] for glob in SIGNATURE_GLOBS if glob.startswith("*"))
SIGNATURE_PREFIXES = tuple(glob[:-1] for glob in SIGNATURE_GLOBS if glob.endswith("*"))
_TEMPLATE = re.compile(r"\$(?:(\$)|(\d+)|([A-Za-z_]\w*)|\{(\w+)\})")


class FilterError(ValueError):
    """A filter setting that cannot work; ``key`` names it (``filter.pattern``…)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Rejected:
    rule: str  # "signature", "exclude" or "pattern"
    detail: str


@dataclass(frozen=True, slots=True)
class Filter:
    """Built once from the spec; ``apply`` is then a pure function of the tag."""

    pattern: re.Pattern[str] | None = None
    extract: str | None = None
    exclude: tuple[str, ...] = ()
    include_signatures: bool = False

    def apply(self, tag: str) -> str | Rejected:
        """The value to order for ``tag``, or why the tag is not a candidate."""
        if not self.include_signatures and is_signature(tag):
            for glob in SIGNATURE_GLOBS:
                if fnmatch.fnmatchcase(tag, glob):
                    return Rejected("signature", f"a signature/attestation tag ({glob})")
        for entry in self.exclude:
            if _excluded(entry, tag):
                return Rejected("exclude", f"excluded by {entry!r}")
        if self.pattern is None:
            return tag
        match = self.pattern.search(tag)
        if match is None:
            return Rejected("pattern", f"does not match pattern {self.pattern.pattern!r}")
        return expand(self.extract, match) if self.extract else tag


def is_signature(tag: str) -> bool:
    """Whether ``tag`` matches one of :data:`SIGNATURE_GLOBS`."""
    return tag.endswith(SIGNATURE_SUFFIXES) or tag.startswith(SIGNATURE_PREFIXES)


def build(*, pattern: str | None, extract: str | None, exclude: list[str],
          include_signatures: bool) -> Filter:
    """Compile the settings, or raise :class:`FilterError` naming the bad key."""
    compiled = None
    if pattern is not None:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise FilterError("filter.pattern", f"invalid regular expression {pattern!r}: "
                                                f"{exc}") from None
    if extract is not None:
        if compiled is None:
            raise FilterError("filter.extract", "extract needs a pattern to take groups from")
        _check_template(extract, compiled)
    for index, entry in enumerate(exclude):
        if entry.startswith("regex:"):
            try:
                re.compile(entry.removeprefix("regex:"))
            except re.error as exc:
                raise FilterError(f"filter.exclude[{index}]",
                                  f"invalid regular expression {entry!r}: {exc}") from None
    return Filter(compiled, extract, tuple(exclude), include_signatures)


def _excluded(entry: str, tag: str) -> bool:
    if entry.startswith("regex:"):
        return re.search(entry.removeprefix("regex:"), tag) is not None
    return fnmatch.fnmatchcase(tag, entry)


def _check_template(template: str, pattern: re.Pattern[str]) -> None:
    for match in _TEMPLATE.finditer(template):
        escaped, number, name, braced = match.groups()
        if escaped:
            continue
        group = number or name or braced
        known = (int(group) <= pattern.groups) if group.isdigit() else (group in
                                                                          pattern.groupindex)
        if not known:
            raise FilterError("filter.extract", f"{match[0]!r} names no group of the pattern "
                                                f"{pattern.pattern!r}")
    if not _TEMPLATE.search(template):
        raise FilterError("filter.extract", f"{template!r} uses no group: write $1, $name or "
                                            f"${{name}}")


def expand(template: str, match: re.Match[str]) -> str:
    """``$1``, ``$name``, ``${name}`` replaced by the groups (``$$`` is a dollar sign)."""

    def one(found: re.Match[str]) -> str:
        escaped, number, name, braced = found.groups()
        if escaped:
            return "$"
        group = match.group(int(number) if number else (name or braced))
        return group or ""

    return _TEMPLATE.sub(one, template)
