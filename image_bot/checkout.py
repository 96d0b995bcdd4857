"""Bottom layer: the files of a checkout, listed and read once, never leaving it (no Git, no
YAML, no config; used by the update stage, policy loading, the scheduler and the sync agent).

The rules (docs/security.md, "Files in the config repository"):

- a symbolic link to a regular file inside the checkout is read as that file: it is listed
  under the file's own path, so an edit goes to the file and the link is never replaced;
- every other link (leading outside the checkout or into ``.git``, dangling, looping, to a
  directory, a device or a FIFO) and every entry that is not a regular file is refused:
  reported once, never opened, never replaced;
- a file larger than ``max_file_bytes`` is refused before it is read (``stat``), and a read
  stops at the cap if the file grew meanwhile.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image_bot.errors import FileRefused, FileTooLarge

DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
YAML_NAMES = ("Kustomization",)  # YAML without an extension that kustomize (and Flux) read
_CHUNK = 1024 * 1024
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0))


# the joined copies of file lists ``Index.holding`` keeps (past that: a file at a time)
_HAYSTACK_BYTES = 32 * 1024 * 1024


class _Haystack:
    """The bytes of a list of files joined by NUL bytes (no needle holds one, so no match
    spans two files), with the offset each file starts at (one more: the end). A plain
    class: a dataclass costs ~1 ms to import, and ``validate`` imports this module."""

    __slots__ = ("found", "joined", "starts", "unreadable")

    def __init__(self, blobs: Sequence[bytes | None]) -> None:
        starts, at = [], 0
        for blob in blobs:
            starts.append(at)
            at += len(blob or b"") + 1
        starts.append(at)
        self.joined = b"\0".join(blob or b"" for blob in blobs)
        self.starts = tuple(starts)
        # files that cannot be read: always "holding" (the caller learns why from read())
        self.unreadable = tuple(i for i, blob in enumerate(blobs) if blob is None)
        self.found: dict[tuple[bytes, bool], tuple[int, ...]] = {}  # what a search found

    def holding(self, needles: tuple[bytes, ...], names: tuple[bytes, ...]) -> list[int]:
        """The positions of the files holding one of ``needles`` or ``names`` (see
        :meth:`Index.holding`), or unreadable, in order. What a needle finds is kept: every
        policy looks for the same markers."""
        found = set(self.unreadable)
        for search in _searches(needles, names):
            if search not in self.found:
                self.found[search] = self._files_with(*search)
            found.update(self.found[search])
        return sorted(found)

    def _files_with(self, needle: bytes, whole: bool) -> tuple[int, ...]:
        files = []
        joined, starts = self.joined, self.starts
        at = _find(joined, needle, 0, whole)
        while at >= 0:
            files.append(bisect.bisect_right(starts, at) - 1)
            at = _find(joined, needle, starts[files[-1] + 1], whole)  # the next file on
        return tuple(files)


# what continues a name (an image repository): a match followed by one is a longer name
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")


def _searches(needles: tuple[bytes, ...],
              names: tuple[bytes, ...]) -> list[tuple[bytes, bool]]:
    return [*((needle, False) for needle in needles), *((name, True) for name in names)]


def _find(data: bytes, needle: bytes, start: int, whole: bool) -> int:
    """Where ``needle`` first is in ``data`` from ``start`` (``whole``: as a whole name, not
    followed by a byte of a name), or -1."""
    at = data.find(needle, start)
    if whole:
        end = len(needle)
        while at >= 0 and at + end < len(data) and data[at + end] in _NAME_BYTES:
            at = data.find(needle, at + 1)
    return at


@dataclass(frozen=True, slots=True)
class Refusal:
    """An entry of the checkout that is never read, and why."""

    file: str  # relative to the checkout, forward slashes
    reason: str


class Index:
    """The files under ``root`` whose names end in ``suffixes`` (or are one of ``names``):
    listed on first use, each read at most once (one per pass: files edited afterwards are
    not seen)."""

    def __init__(self, root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 suffixes: Sequence[str] = YAML_SUFFIXES,
                 names: Sequence[str] = YAML_NAMES) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.suffixes = tuple(suffixes)
        self.names = frozenset(names)
        self.reads = 0
        self._real_root = root.resolve()
        self._listing: list[tuple[str, Path]] | None = None  # (listed name, file to read)
        self._listed: frozenset[Path] = frozenset()  # the files to read of the listing
        self._refused: dict[str, str] = {}  # every refused entry of the listing
        self._reported: dict[str, str] = {}  # those under the paths somebody asked for
        self._data: dict[Path, bytes] = {}
        self._names: dict[Path, str] = {}  # file to read → its name in the checkout
        self._mentions: dict[tuple[Path, tuple[bytes, ...]], bool] = {}
        self._chosen: dict[tuple[str, ...], list[Path]] = {}  # patterns → files (policies
        # of one repository mostly share their paths)
        self._haystacks: dict[tuple[Any, ...], _Haystack] = {}  # files → joined (holding)
        self._haystack_bytes = 0
        # what other modules work out from this pass's files, kept as long as the index
        # (the update stage's scans: the stages that share one pass scan each policy once)
        self.derived: dict[tuple[Any, ...], Any] = {}

    @classmethod
    def of(cls, root: Path, files: Mapping[str, bytes], **options: Any) -> Index:
        """An index of files held in memory (say a commit's, read from Git), named as if
        under ``root``: nothing is listed or read from disk, and only the names a listing
        would keep are listed."""
        index = cls(root, **options)
        index._listing = sorted((name, root / name) for name in files
                                if name.rpartition("/")[2].endswith(index.suffixes)
                                or name.rpartition("/")[2] in index.names)
        index._names = {path: name for name, path in index._listing}
        index._listed = frozenset(index._names)
        index._data = {path: files[name] for name, path in index._listing}
        return index

    # --- listing ----------------------------------------------------------------------------

    def files(self, patterns: Sequence[str] = ("**",)) -> list[Path]:
        """The readable files whose names match a glob of ``patterns`` (``**`` spans folders;
        a folder name covers what is inside), each once, in path order. Refused entries
        under the patterns are remembered for :attr:`refused`."""
        key = tuple(patterns)
        if key not in self._chosen:
            listing = self._list()
            for name, reason in self._refused.items():
                if matches(name, patterns):
                    self._reported.setdefault(name, reason)
            self._chosen[key] = sorted({path: None for name, path in listing
                                        if matches(name, patterns)})
        return list(self._chosen[key])

    def under(self, path: Path) -> list[Path]:
        """The readable files at ``path`` (a file, or a folder searched recursively);
        ``path`` itself is checked like any entry (a refused one is reported, not listed),
        except that a link to a folder inside the checkout, named explicitly, is followed."""
        try:
            name = self.name(path)
            if name == ".":
                return self.files()
            self._check_parents(name)
            if path.is_dir() and not path.is_symlink():
                return self.files([name])
            if path.is_symlink() and path.is_dir() and not self._check_folder_link(path):
                return self.files([path.resolve().relative_to(self._real_root).as_posix()])
            return [self.file(path)]
        except FileRefused as exc:
            self._reported.setdefault(exc.file, exc.reason)
            return []

    def file(self, path: Path) -> Path:
        """The file to read for ``path``: a regular file in the checkout or a link to one
        (then its target); raises :class:`FileRefused` for anything else. A file the
        listing holds was checked when listed."""
        if path in self._listed:
            return path
        name = self.name(path)
        self._check_parents(name)
        checked = self._check(self.root / name, name)
        if isinstance(checked, str):
            raise FileRefused(name, checked)
        return checked

    def _check_parents(self, name: str) -> None:
        parent = Path(name).parent
        if os.path.realpath(self.root / parent) != str(self._real_root / parent):
            raise FileRefused(name, "reached through a symbolic link to a folder; not read")

    @property
    def refused(self) -> tuple[Refusal, ...]:
        """Entries refused under the paths asked for so far, each once, in path order."""
        return tuple(Refusal(name, reason) for name, reason in sorted(self._reported.items()))

    def name(self, path: Path) -> str:
        """``path`` relative to the root, with forward slashes; raises :class:`FileRefused`
        when it lies outside the checkout."""
        absolute = Path(os.path.abspath(path))
        for base in (Path(os.path.abspath(self.root)), self._real_root):
            if absolute.is_relative_to(base):
                return absolute.relative_to(base).as_posix()
        raise FileRefused(str(path), "outside the checkout; not read")

    def _list(self) -> list[tuple[str, Path]]:
        if self._listing is not None:
            return self._listing
        listing: list[tuple[str, Path]] = []
        folders = [("", str(self.root))]
        while folders:  # scandir's entry types come from the folder listing: no stat per file
            prefix, folder = folders.pop()
            try:
                with os.scandir(folder) as entries:
                    ordered = sorted(entries, key=lambda e: e.name, reverse=True)
            except OSError as exc:  # e.g. a folder without read permission
                self._refused[prefix.rstrip("/") or "."] = f"cannot list: {exc.strerror}"
                continue
            for entry in ordered:
                relative = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != ".git":
                        folders.append((relative + "/", entry.path))
                elif not entry.name.endswith(self.suffixes) and entry.name not in self.names:
                    if entry.is_symlink() and os.path.isdir(entry.path):
                        reason = self._check_folder_link(Path(entry.path))
                        if reason:
                            self._refused[relative] = reason
                elif entry.is_file(follow_symlinks=False):
                    path = Path(entry.path)
                    listing.append((relative, path))
                    self._names[path] = relative
                else:
                    checked = self._check(Path(entry.path), relative)
                    if isinstance(checked, str):
                        self._refused[relative] = checked
                    else:
                        listing.append((relative, checked))
        listing.sort()
        self._listing = listing
        self._listed = frozenset(path for _, path in listing)
        return listing

    def _check_folder_link(self, path: Path) -> str | None:
        """A link to a folder is never followed; one that leaves the checkout is reported
        (one inside it is silent: its files are listed where they really are)."""
        real = path.resolve()
        if real.is_relative_to(self._real_root) and ".git" not in real.relative_to(
                self._real_root).parts:
            return None
        return "a symbolic link to a folder outside the checkout; not followed"

    def _check(self, path: Path, name: str) -> Path | str:
        """The file to read for the entry at ``path``, or why it is refused."""
        try:
            info = os.lstat(path)
        except OSError as exc:
            return f"cannot read: {exc.strerror}"
        if stat.S_ISLNK(info.st_mode):
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError):
                return "a symbolic link that leads nowhere (dangling or a loop); not read"
            if not real.is_relative_to(self._real_root):
                what = "a folder" if real.is_dir() else "a file"
                return f"a symbolic link to {what} outside the checkout; not read"
            inside = real.relative_to(self._real_root)
            if ".git" in inside.parts:
                return "a symbolic link into .git; not read"
            if not real.is_file():
                return ("a symbolic link to something that is not a regular file "
                        "(a folder, device or FIFO); not read")
            return self.root / inside
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file (a device, FIFO or socket); not read"
        return path

    # --- reading ----------------------------------------------------------------------------

    def read(self, path: Path) -> bytes:
        """The bytes of a listed file (cached); raises :class:`FileRefused` when it is
        larger than the cap or cannot be read."""
        if path not in self._data:
            self._data[path] = read_bounded(path, self.max_file_bytes, self.shown(path))
            self.reads += 1
        return self._data[path]

    def has_read(self, names: Iterable[str]) -> bool:
        """Whether this index read every one of these checkout-relative files (what it
        holds of them is then what they were before any later edit)."""
        return all(self.root / name in self._data for name in names)

    def holding(self, files: Sequence[Path], needles: tuple[bytes, ...],
                names: tuple[bytes, ...] = (), *, patterns: Sequence[str] | None = None,
                ) -> list[Path]:
        """``files`` (in order) whose bytes contain one of ``needles``, or one of ``names``
        as a whole name (``team/app`` is not in ``team/app-worker:1.0``), and those that
        cannot be read (the caller learns why from :meth:`read`).

        Every policy of a cycle searches every file of its paths, and policies mostly share
        their paths: the files of a list are joined once (:class:`_Haystack`), so a search
        is one ``bytes.find`` per hit, not a step per file. Past ``_HAYSTACK_BYTES`` of
        joined copies, files are searched one by one. ``patterns``: those ``files`` were
        listed by (:meth:`files`), a shorter key to the joined copy than every path."""
        key: tuple[Any, ...] = tuple(files) if patterns is None else (None, *patterns)
        haystack = self._haystacks.get(key)
        if haystack is None:
            blobs = [self._blob(path) for path in files]
            size = sum(len(blob) + 1 if blob is not None else 1 for blob in blobs)
            if self._haystack_bytes + size > _HAYSTACK_BYTES:
                searches = _searches(needles, names)
                return [path for path, blob in zip(files, blobs, strict=True)
                        if blob is None or any(_find(blob, needle, 0, whole) >= 0
                                               for needle, whole in searches)]
            haystack = self._haystacks[key] = _Haystack(blobs)
            self._haystack_bytes += size
        return [files[i] for i in haystack.holding(needles, names)]

    def _blob(self, path: Path) -> bytes | None:
        """The bytes of a listed file, or ``None`` when it cannot be read."""
        try:
            return self.read(path)
        except FileRefused:
            return None

    def mentions(self, path: Path, needles: tuple[bytes, ...]) -> bool:
        """Whether a file too large to read contains one of ``needles`` (streamed in
        chunks, never held whole; at most the size ``stat`` reported is read)."""
        key = (path, needles)
        if key not in self._mentions:
            self._mentions[key] = _stream_contains(path, needles)
        return self._mentions[key]

    def shown(self, path: Path) -> str:
        """How to name a file in messages: relative to the root, else the path as given."""
        if path not in self._names:
            try:
                self._names[path] = self.name(path)
            except FileRefused:
                return str(path)
        return self._names[path]

    def fingerprint(self, path: Path) -> str:
        """A hash of the names and bytes of the readable files at ``path`` (a file or a
        folder) and of the names of refused entries there, which are never read."""
        digest = hashlib.sha256()
        for file in self.under(path):
            digest.update(self.shown(file).encode() + b"\0")
            try:
                digest.update(self.read(file) + b"\0")
            except FileRefused as exc:
                digest.update(f"refused: {exc.reason}".encode() + b"\0")
        for refusal in self.refused:
            digest.update(f"{refusal.file}\0{refusal.reason}\0".encode())
        return digest.hexdigest()


def read_bounded(path: Path, limit: int, shown: str) -> bytes:
    """The bytes of the regular file ``path`` (not a link), at most ``limit`` of them, or
    :class:`FileRefused`; a FIFO or device is never read, even if it replaced the file.
    Read in chunks, so memory follows the file's size, not the limit."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise FileRefused(shown, f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(shown, "not a regular file (a device, FIFO or socket); not read")
        if info.st_size > limit:
            raise FileTooLarge(shown, too_large(limit))
        data = bytearray()
        while len(data) <= limit:  # a file that grows after stat stops at the cap
            chunk = os.read(fd, min(_CHUNK, limit + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge(shown, too_large(limit))
    return bytes(data)


def replace_atomically(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace the file at ``path`` with ``data`` (a temporary file beside it, then a rename:
    a reader or a crash never meets a half-written file); ``mode``: its permission bits
    (a new temporary file has 0600)."""
    import tempfile  # here: only writers pay for it (``validate`` reads; ~4 ms to import)

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def too_large(limit: int) -> str:
    return f"larger than {limit} bytes (limits.max_file_bytes); skipped"


def matches(relative: str, patterns: Iterable[str]) -> bool:
    """Whether the checkout-relative name matches one of the globs (``**`` spans folders;
    a plain folder name covers what is inside)."""
    return any(_matches(relative, pattern) for pattern in patterns)


def _matches(relative: str, pattern: str) -> bool:
    pattern = pattern.strip("/")
    if pattern in ("**", "**/*", "", "."):
        return True
    if fnmatch.fnmatchcase(relative, pattern):
        return True
    if pattern.endswith("/**") or pattern.endswith("/"):
        return relative.startswith(pattern.rstrip("*").rstrip("/") + "/")
    return relative.startswith(pattern + "/")


def _join(prefix: str, name: str) -> str:
    return name if prefix == "." else f"{prefix}/{name}"


def _stream_contains(path: Path, needles: tuple[bytes, ...]) -> bool:
    overlap = max((len(n) for n in needles), default=1) - 1
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        left = info.st_size
        tail = b""
        while left > 0:
            chunk = handle.read(min(_CHUNK, left))
            if not chunk:
                return False
            left -= len(chunk)
            window = tail + chunk
            if any(needle in window for needle in needles):
                return True
            tail = window[-overlap:] if overlap else b""
    return False
