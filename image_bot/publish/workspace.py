"""One cached clone per config repository, hard-reset to the remote tip at every cycle.

The clone never holds unpushed work, so deleting it or crashing mid-cycle loses nothing.
Credentials reach git only through the environment of each git process: HTTPS passwords
through ``GIT_ASKPASS`` (a script in the state dir that echoes environment variables, so
the secret is in no file and on no command line), SSH keys through ``GIT_SSH_COMMAND``.
The remote URL stored in ``.git/config`` never carries a password, and credential helpers
are switched off so git cannot save one. Git errors are translated here, scrubbed.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import stat
import subprocess
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import git

from image_bot.errors import AuthError, ImageBotError, PublishError, TemporaryError

# userinfo ends at the LAST "@" of the authority, which ends at the first "/", "?" or "#"
# (RFC 3986; ``urllib.parse.urlsplit`` agrees), so a literal "@" in a password is covered
_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")
_ASKPASS = """#!/bin/sh
# image-bot: answers git's credential prompts from the environment (holds no secret itself)
case "$1" in
  Username*) printf '%s\\n' "$IMAGE_BOT_GIT_USERNAME" ;;
  *) printf '%s\\n' "$IMAGE_BOT_GIT_PASSWORD" ;;
esac
"""


_PATHS_PER_COMMAND = 500  # file names on one git command line (ARG_MAX is ~2 MB)


@dataclass(frozen=True, slots=True)
class Author:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """How git authenticates to the remote; the password never appears in ``repr``."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssh_key_file: Path | None = None
    ssh_known_hosts_file: Path | None = None


def split_credentials(url: str, credentials: Credentials) -> tuple[str, Credentials]:
    """The URL without ``user:password@`` and the credentials (explicit ones win)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc or parts.scheme not in ("http", "https"):
        return url, credentials
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=host))
    return clean, Credentials(
        username=credentials.username or urllib.parse.unquote(user) or None,
        password=credentials.password or urllib.parse.unquote(password) or None,
        ssh_key_file=credentials.ssh_key_file,
        ssh_known_hosts_file=credentials.ssh_known_hosts_file)


def _secret_forms(password: str | None) -> tuple[str, ...]:
    """The password as given and percent-encoded (the form a URL in a message would hold)."""
    if not password:
        return ()
    return tuple(dict.fromkeys((password, urllib.parse.quote(password, safe=""))))


def git_environment(credentials: Credentials, askpass: Path) -> dict[str, str]:
    """Environment for every git process: no prompts, no credential helpers, our secrets."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_COUNT": "1",
           "GIT_CONFIG_KEY_0": "credential.helper", "GIT_CONFIG_VALUE_0": ""}
    if credentials.password is not None:
        env |= {"GIT_ASKPASS": str(askpass),
                "IMAGE_BOT_GIT_USERNAME": credentials.username or "x-access-token",
                "IMAGE_BOT_GIT_PASSWORD": credentials.password}
    if credentials.ssh_key_file or credentials.ssh_known_hosts_file:
        command = ["ssh", "-o", "BatchMode=yes"]
        if credentials.ssh_key_file:
            command += ["-i", str(credentials.ssh_key_file), "-o", "IdentitiesOnly=yes"]
        if credentials.ssh_known_hosts_file:
            command += ["-o", f"UserKnownHostsFile={credentials.ssh_known_hosts_file}",
                        "-o", "StrictHostKeyChecking=yes"]
        env["GIT_SSH_COMMAND"] = shlex.join(command)
    return env


def _write_askpass(state_dir: Path) -> Path:
    path = state_dir / "git-askpass.sh"
    state_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != _ASKPASS:
        path.write_text(_ASKPASS)
    path.chmod(stat.S_IRWXU)
    return path


class Workspace:
    """A working copy of ``branch`` of ``url`` inside ``state_dir``."""

    def __init__(self, repo: git.Repo, *, url: str, branch: str,
                 secrets: tuple[str, ...] = ()) -> None:
        self.repo = repo
        self.url = url
        self.branch = branch
        self._secrets = tuple(s for s in secrets if s)
        self._reset_to: str | None = None  # the commit the last reset left HEAD on

    @property
    def root(self) -> Path:
        return Path(self.repo.working_tree_dir or ".")

    @property
    def head(self) -> str:
        """The sha HEAD points to, read from the clone's files (no git process)."""
        return str(git.SymbolicReference.dereference_recursive(self.repo, "HEAD"))

    @property
    def target(self) -> str:
        """The remote-tracking ref of the target branch."""
        return f"refs/remotes/origin/{self.branch}"

    def target_sha(self) -> str | None:
        """The sha :attr:`target` points to (read from the clone's files), None if none."""
        try:
            return str(git.SymbolicReference.dereference_recursive(self.repo, self.target))
        except ValueError:
            return None

    @classmethod
    def open(cls, url: str, branch: str, state_dir: Path,
             credentials: Credentials | None = None) -> Workspace:
        """Clone ``url`` (once) and reset the working copy to the tip of ``branch``."""
        clean, creds = split_credentials(url, credentials or Credentials())
        env = git_environment(creds, _write_askpass(state_dir))
        path = location(clean, state_dir)
        secrets = _secret_forms(creds.password)
        try:
            repo = _existing_clone(path, clean) or _clone(clean, path, env)
            repo.git.update_environment(**env)
            workspace = cls(repo, url=clean, branch=branch, secrets=secrets)
            workspace.refresh()
        except git.GitCommandError as exc:
            raise translate(exc, clean, f"fetching branch {branch!r}", secrets) from None
        return workspace

    def run(self, *args: str, env: Mapping[str, str] | None = None, doing: str = "") -> str:
        """Run one git command in the clone; failures become our errors, scrubbed."""
        try:
            return str(self.repo.git.execute(["git", *args], env=env))
        except git.GitCommandError as exc:
            raise self._failed(exc, args, doing) from None

    def run_meanwhile(self, *args: str, meanwhile: Callable[[], None],
                      env: Mapping[str, str] | None = None, doing: str = "",
                      failed: Callable[[git.GitCommandError], Exception] | None = None,
                      ) -> None:
        """:meth:`run` of a command that prints little (its output is read at the end),
        calling ``meanwhile`` in this thread once git has started: git works in its own
        process meanwhile. Git is waited for in any case; what ``meanwhile`` raises wins
        over a failure of git. ``failed`` turns a failure of git (its output in the error)
        into the error raised, instead of :meth:`run`'s translation."""
        try:
            started = self.repo.git.execute(["git", *args], env=env, as_process=True)
        except git.GitCommandError as exc:
            raise self._failed(exc, args, doing) from None
        process = started.proc
        assert process is not None, "as_process: the process as started"
        failure: BaseException | None = None
        try:
            meanwhile()
        except BaseException as exc:  # raised once git is done
            failure = exc
        stdout, stderr = process.communicate()  # waits, and closes the pipes
        if failure is not None:
            raise failure
        if process.returncode:
            error = git.GitCommandError(["git", *args], process.returncode, stderr, stdout)
            raise failed(error) if failed else self._failed(error, args, doing)

    def _failed(self, exc: git.GitCommandError, args: Sequence[str], doing: str) -> Exception:
        """A failed git command of :meth:`run` as our error, scrubbed."""
        return translate(exc, self.url, doing or f"git {args[0]}", self._secrets)

    def files_at(self, revision: str, files: Sequence[str], *,
                 max_bytes: int) -> dict[str, bytes]:
        """``files`` as they are at ``revision``: one ``git ls-tree`` for their blobs, then
        all of them through one ``git cat-file --batch`` (not a ``git show`` each, nor a
        round trip each). Files missing there (or no such revision: the parent of a root
        commit), not regular files, or larger than ``max_bytes`` are left out."""
        listing = ""
        for start in range(0, len(files), _PATHS_PER_COMMAND):  # within the argument limit
            try:
                listing += self.run("ls-tree", "-r", "-l", "-z", revision, "--",
                                    *files[start:start + _PATHS_PER_COMMAND]) + "\0"
            except ImageBotError:  # no such revision
                return {}
        blobs: dict[str, str] = {}  # path → blob
        for entry in filter(None, listing.split("\0")):
            meta, _, path = entry.partition("\t")
            mode, kind, sha, size = meta.split()
            if kind == "blob" and mode in ("100644", "100755") and int(size) <= max_bytes:
                blobs[path] = sha
        contents = self._blobs(blobs.values()) if blobs else {}
        return {path: contents[sha] for path, sha in blobs.items()}

    def _blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """Blobs by sha, read by one ``git cat-file --batch`` (each is ``<sha> blob <size>``,
        its bytes, a newline)."""
        wanted = list(dict.fromkeys(shas))
        done = subprocess.run(["git", "cat-file", "--batch"], cwd=self.root, check=False,
                              input="".join(f"{sha}\n" for sha in wanted).encode(),
                              capture_output=True)
        if done.returncode:
            raise PublishError(f"git {redact(self.url)}: reading {len(wanted)} files from "
                               f"Git failed: {self.scrub(done.stderr.decode(errors='replace'))}")
        out, at, found = done.stdout, 0, {}
        for sha in wanted:
            end = out.find(b"\n", at)
            header = out[at:end].split() if end >= 0 else []
            if len(header) != 3 or header[0].decode() != sha or header[1] != b"blob":
                raise PublishError(f"git {redact(self.url)}: unexpected answer from git "
                                   f"cat-file for {sha}: {out[at:end][:100]!r}")
            size = int(header[2])
            found[sha] = out[end + 1:end + 1 + size]
            if len(found[sha]) != size:
                raise PublishError(f"git {redact(self.url)}: git cat-file ended inside {sha}")
            at = end + 1 + size + 1
        return found

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def refresh(self) -> None:
        """Fetch and hard-reset to the remote tip, dropping anything left from before."""
        self.run("fetch", "--prune", "origin",
                 f"+refs/heads/{self.branch}:{self.target}", doing=f"fetching {self.branch!r}")
        self.reset()

    def reset(self) -> None:
        """Make the working copy exactly the fetched target tip, on the target branch."""
        self.run("checkout", "-q", "-f", "-B", self.branch, self.target)
        self.run("clean", "-q", "-fdx")
        self._reset_to = self.head

    def on_reset_tip(self) -> bool:
        """Whether HEAD is still this branch at the commit the last :meth:`reset` left it on
        (read from the clone's files). Another workspace of the same clone (another branch
        of the same URL) or a commit moves HEAD; edits in the working tree are not seen
        here: the caller knows whether it wrote."""
        head = self.repo.head
        return (self._reset_to is not None and not head.is_detached
                and head.reference.path == f"refs/heads/{self.branch}"
                and self.head == self._reset_to)

    def fetch_branch(self, name: str) -> str | None:
        """Fetch ``name`` from the remote: its tip, or None when it does not exist."""
        tracking = f"refs/remotes/origin/{name}"
        listed = self.run("ls-remote", "origin", f"refs/heads/{name}",
                          doing=f"looking up branch {name!r}").split()
        if not listed:
            self.run("update-ref", "-d", tracking)
            return None
        self.run("fetch", "origin", f"+refs/heads/{name}:{tracking}",
                 doing=f"fetching branch {name!r}")
        return self.run("rev-parse", tracking).strip()


def location(url: str, state_dir: Path) -> Path:
    """Where :meth:`Workspace.open` keeps the clone of ``url`` (which may not exist yet)."""
    return state_dir / "repos" / _directory_name(url)


def _directory_name(url: str) -> str:
    clean = redact(url)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", clean.rstrip("/").rsplit("/", 1)[-1])[:40]
    return f"{name}-{hashlib.sha256(clean.encode()).hexdigest()[:12]}"


def _existing_clone(path: Path, url: str) -> git.Repo | None:
    if not path.exists():
        return None
    try:
        repo = git.Repo(path)
        if repo.remotes.origin.url == url:
            return repo
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, AttributeError, ValueError):
        pass
    shutil.rmtree(path)  # a cache: anything unexpected is simply rebuilt
    return None


def _clone(url: str, path: Path, env: Mapping[str, str]) -> git.Repo:
    path.parent.mkdir(parents=True, exist_ok=True)
    return git.Repo.clone_from(url, path, env=env, no_checkout=True)


def redact(text: str) -> str:
    """Remove ``user:password@`` from every URL in ``text``."""
    return _USERINFO.sub("", text)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without URL credentials and without any of ``secrets``."""
    text = redact(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def translate(exc: git.GitCommandError, url: str, doing: str,
              secrets: tuple[str, ...] = ()) -> Exception:
    """A Git failure as one of our errors, without credentials."""
    stderr = scrub(str(exc.stderr or ""), secrets).strip().replace("\n", " ")
    stderr = re.sub(r"^stderr:\s*", "", stderr).strip("' ")
    where = f"git {redact(url)}: {doing} failed"
    lowered = stderr.lower()
    if ("authentication failed" in lowered or "403" in lowered or "401" in lowered
            or "could not read username" in lowered or "permission denied" in lowered
            or "host key verification failed" in lowered):
        return AuthError(f"{where}: authentication refused ({stderr[:200]})")
    if "couldn't find remote ref" in lowered or "not found" in lowered:
        return PublishError(f"{where}: {stderr}")
    return TemporaryError(f"{where}: {stderr}")
