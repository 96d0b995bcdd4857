"""Files of the config repository: links never lead out of the checkout, devices and FIFOs are
never opened, files over the cap are never read, the writer never replaces a link."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image_bot import checkout, refs
from image_bot.config import loading
from image_bot.errors import FileTooLarge
from image_bot.sync import compose
from image_bot.update import rewriting, scanning, setting

APP = refs.parse("ghcr.io/team/app")
DEPLOY = "image: ghcr.io/team/app:1.0.0\n"
POLICY = """\
apiVersion: image-bot/v1
kind: ImagePolicy
metadata: {name: %s}
spec:
  image: ghcr.io/team/app
  select: {semver: {range: "^1"}}
"""
OUTSIDE = "a symbolic link to a file outside the checkout; not read"


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    """A checkout with one real file, and a folder outside it holding a "secret"."""
    root, outside = tmp_path / "checkout", tmp_path / "outside"
    (root / "deploy").mkdir(parents=True)
    outside.mkdir()
    (root / "deploy/app.yaml").write_text(DEPLOY)
    (outside / "secret.yaml").write_text("image: ghcr.io/team/app:1.0.0\ntoken: hunter2\n")
    return root, outside


def _update(root: Path, paths: tuple[str, ...] = ("**",), **options: int) -> tuple[
        scanning.Scan, rewriting.UpdateResult, checkout.Index]:
    index = checkout.Index(root, **options)
    scan = scanning.find(root, APP, paths, policy="app", index=index)
    edits = [rewriting.Edit(r, "1.1.0", "app") for r in scan.references]
    return scan, rewriting.apply(root, edits), index


def test_a_link_to_a_file_outside_is_not_read_or_edited(tmp_path: Path) -> None:
    root, outside = _layout(tmp_path)
    (root / "deploy/secret.yaml").symlink_to(outside / "secret.yaml")

    scan, result, index = _update(root)

    assert [r.file for r in scan.references] == ["deploy/app.yaml"]
    assert result.files == ("deploy/app.yaml",)
    assert (root / "deploy/secret.yaml").is_symlink()
    assert (outside / "secret.yaml").read_text().startswith("image: ghcr.io/team/app:1.0.0")
    assert index.refused == (checkout.Refusal("deploy/secret.yaml", OUTSIDE),)
    assert scanning.refused(index).skipped == (
        scanning.Skipped("deploy/secret.yaml", OUTSIDE),)


def test_a_link_inside_the_checkout_is_read_as_its_target_and_stays_a_link(
        tmp_path: Path) -> None:
    root, _ = _layout(tmp_path)
    (root / "base").mkdir()
    (root / "base/values.yaml").write_text(DEPLOY)
    (root / "deploy/values.yaml").symlink_to("../base/values.yaml")
    (root / "deploy/again.yaml").symlink_to("app.yaml")  # the same file twice: read once

    index = checkout.Index(root)
    scan = scanning.find(root, APP, ["deploy/**"], index=index)
    result = rewriting.apply(root, [rewriting.Edit(r, "1.1.0", "app") for r in scan.references])

    assert sorted(r.file for r in scan.references) == ["base/values.yaml", "deploy/app.yaml"]
    assert index.reads == 2 and index.refused == ()
    assert (root / "deploy/values.yaml").is_symlink()
    assert os.readlink(root / "deploy/values.yaml") == "../base/values.yaml"
    assert (root / "deploy/again.yaml").is_symlink()
    assert (root / "base/values.yaml").read_text() == DEPLOY.replace("1.0.0", "1.1.0")
    assert result.files == ("base/values.yaml", "deploy/app.yaml")


def test_a_dangling_link_is_reported_not_a_crash(tmp_path: Path) -> None:
    root, _ = _layout(tmp_path)
    (root / "deploy/gone.yaml").symlink_to("nowhere.yaml")
    (root / "deploy/loop.yaml").symlink_to("loop.yaml")

    scan, result, index = _update(root)

    assert result.files == ("deploy/app.yaml",) and scan.skipped == ()
    reason = "a symbolic link that leads nowhere (dangling or a loop); not read"
    assert index.refused == (checkout.Refusal("deploy/gone.yaml", reason),
                             checkout.Refusal("deploy/loop.yaml", reason))


_SCAN_IN_A_SMALL_PROCESS = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from image_bot import checkout, refs
from image_bot.update import scanning
index = checkout.Index(Path(sys.argv[1]))
scan = scanning.find(Path(sys.argv[1]), refs.parse("ghcr.io/team/app"), ["**"], index=index)
print(sorted(r.file for r in scan.references))
for refusal in index.refused:
    print(refusal.file, refusal.reason)
"""


def test_links_to_devices_and_fifos_are_never_opened(tmp_path: Path) -> None:
    """Reading /dev/zero never ends and opening a FIFO waits for a writer: the scan runs in a
    child process with 1 GiB of address space and a timeout, so the old code fails, not hangs."""
    root, _ = _layout(tmp_path)
    (root / "deploy/zero.yaml").symlink_to("/dev/zero")
    os.mkfifo(root / "deploy/fifo.yaml")
    (root / "deploy/to-fifo.yaml").symlink_to("fifo.yaml")

    done = subprocess.run([sys.executable, "-c", _SCAN_IN_A_SMALL_PROCESS, str(root)],
                          capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "['deploy/app.yaml']",
        "deploy/fifo.yaml not a regular file (a device, FIFO or socket); not read",
        "deploy/to-fifo.yaml a symbolic link to something that is not a regular file "
        "(a folder, device or FIFO); not read",
        f"deploy/zero.yaml {OUTSIDE}"]


def test_the_writer_never_replaces_a_link(tmp_path: Path) -> None:
    root, _ = _layout(tmp_path)
    (root / "deploy/link.yaml").symlink_to("app.yaml")
    [reference] = scanning.find(root, APP, ["**"]).references
    through_link = dataclasses.replace(reference, file="deploy/link.yaml")

    result = rewriting.apply(root, [rewriting.Edit(through_link, "1.1.0", "app")])

    assert result.changes == ()
    assert result.skipped == (rewriting.Skipped(
        "deploy/link.yaml",
        "a symbolic link: image-bot never replaces a link with a file; not edited"),)
    assert (root / "deploy/link.yaml").is_symlink()
    assert (root / "deploy/app.yaml").read_text() == DEPLOY


def test_the_writer_never_writes_through_a_linked_folder(tmp_path: Path) -> None:
    root, outside = _layout(tmp_path)
    (root / "elsewhere").symlink_to(outside)
    [reference] = scanning.find(root, APP, ["**"]).references
    through_link = dataclasses.replace(reference, file="elsewhere/secret.yaml")

    result = rewriting.apply(root, [rewriting.Edit(through_link, "1.1.0", "app")])

    assert [s.reason for s in result.skipped] == [
        "reached through a symbolic link to a folder; not edited"]
    assert "1.0.0" in (outside / "secret.yaml").read_text()


def test_set_image_skips_links_out_of_the_folder(tmp_path: Path) -> None:
    root, outside = _layout(tmp_path)
    (root / "deploy/secret.yaml").symlink_to(outside / "secret.yaml")
    assignment = setting.parse_assignment("ghcr.io/team/app=1.2.0")

    outcome = setting.set_images(root, [root / "deploy"], [assignment])

    assert outcome.result.files == ("deploy/app.yaml",)
    assert outcome.unreadable == (scanning.Skipped("deploy/secret.yaml", OUTSIDE),)
    assert (root / "deploy/secret.yaml").is_symlink()
    assert "1.0.0" in (outside / "secret.yaml").read_text()


def test_policy_files_linking_outside_are_not_loaded(tmp_path: Path) -> None:
    root, outside = _layout(tmp_path)
    (root / "policies").mkdir()
    (root / "policies/ok.yaml").write_text(POLICY % "ok")
    (outside / "evil.yaml").write_text(POLICY % "evil")
    (root / "policies/evil.yaml").symlink_to(outside / "evil.yaml")
    (root / "policies/env.yaml").symlink_to("/proc/self/environ")
    (root / "policies/same.yaml").symlink_to("ok.yaml")  # inside: the same file, read once

    policy_set = loading.load_policies(root / "policies", display_root=root)

    assert [p.policy.name for p in policy_set.policies] == ["ok"]
    assert [str(e) for e in policy_set.errors] == [
        f"==> File policies/env.yaml: {OUTSIDE}", f"==> File policies/evil.yaml: {OUTSIDE}"]


def test_a_policies_path_that_links_to_a_folder_is_followed_only_inside(
        tmp_path: Path) -> None:
    root, outside = _layout(tmp_path)
    (root / "config/policies").mkdir(parents=True)
    (root / "config/policies/ok.yaml").write_text(POLICY % "ok")
    (root / "policies").symlink_to("config/policies")
    (outside / "evil.yaml").write_text(POLICY % "evil")
    (root / "evil-policies").symlink_to(outside)

    inside = loading.load_policies(root / "policies", display_root=root)
    out = loading.load_policies(root / "evil-policies", display_root=root)

    assert [p.policy.name for p in inside.policies] == ["ok"] and inside.errors == ()
    assert out.policies == ()
    assert [str(e) for e in out.errors] == [
        "==> File evil-policies: a symbolic link to a folder outside the checkout; not read"]


def test_the_policy_fingerprint_never_reads_through_a_link_out(tmp_path: Path) -> None:
    root, outside = _layout(tmp_path)
    (root / "policies").mkdir()
    (root / "policies/ok.yaml").write_text(POLICY % "ok")
    (root / "policies/evil.yaml").symlink_to(outside / "secret.yaml")
    before = loading.fingerprint(root / "policies", display_root=root)

    (outside / "secret.yaml").write_text("changed\n")

    assert loading.fingerprint(root / "policies", display_root=root) == before
    (root / "policies/ok.yaml").write_text(POLICY % "renamed")
    assert loading.fingerprint(root / "policies", display_root=root) != before


def test_a_policy_directory_mounted_from_a_configmap_keeps_working(tmp_path: Path) -> None:
    """An absolute policies path is its own boundary; Kubernetes' ..data links stay in it."""
    root, _ = _layout(tmp_path)
    mount = tmp_path / "configmap"
    (mount / "..2026_11_30").mkdir(parents=True)
    (mount / "..2026_11_30/app.yaml").write_text(POLICY % "app")
    (mount / "..data").symlink_to("..2026_11_30")
    (mount / "app.yaml").symlink_to("..data/app.yaml")

    policy_set = loading.load_policies(mount, display_root=root)

    assert [p.policy.name for p in policy_set.policies] == ["app"]
    assert policy_set.errors == ()


def test_a_file_over_the_cap_is_skipped_and_its_policy_reports_it(tmp_path: Path) -> None:
    root, _ = _layout(tmp_path)
    padding = "# " + "x" * 97 + "\n"
    (root / "deploy/big.yaml").write_text(DEPLOY + padding * 60)  # ~6 kB, mentions the image
    (root / "deploy/other.yaml").write_text("image: ghcr.io/team/other:1\n" + padding * 60)
    (root / "policies").mkdir()
    (root / "policies/big.yaml").write_text(POLICY % "big" + padding * 60)

    scan, result, index = _update(root, ("deploy/**",), max_file_bytes=4096)
    policy_set = loading.load_policies(root / "policies", display_root=root,
                                       max_file_bytes=4096)

    message = "larger than 4096 bytes (limits.max_file_bytes); skipped"
    # other.yaml is as large, but never mentions the image: not a reason to fail
    assert scan.skipped == (scanning.Skipped("deploy/big.yaml", message),)
    assert index.reads == 1  # only app.yaml was read whole
    assert [str(e) for e in policy_set.errors] == [f"==> File policies/big.yaml: {message}"]
    assert (root / "deploy/big.yaml").read_text().startswith(DEPLOY)
    assert result.files == ("deploy/app.yaml",)  # the cycle would not apply it: see e2e


def test_a_read_stops_at_the_cap_when_the_file_grew(tmp_path: Path) -> None:
    """/proc files are regular files whose stat size (0) is smaller than what they read, like a
    file that grew between stat and read."""
    path = Path("/proc/self/status")
    assert path.stat().st_size == 0
    with pytest.raises(FileTooLarge, match=r"status: larger than 16 bytes"):
        checkout.read_bounded(path, 16, "status")
    assert b"Name:" in checkout.read_bounded(path, 1 << 20, "status")


def test_compose_files_and_env_files_stay_inside_the_checkout(tmp_path: Path) -> None:
    root, outside = _layout(tmp_path)
    (root / "deploy/app.yaml").write_text("services: {web: {image: 'a:1'}}\n")
    (outside / "compose.yaml").write_text("services: {evil: {image: 'evil:1'}}\n")
    (root / "deploy/evil.yaml").symlink_to(outside / "compose.yaml")
    (root / "deploy/env.yaml").write_text(
        "services: {web: {image: 'a:1', env_file: /proc/self/environ}}\n")

    desired = compose.load(root, "deploy")

    assert [a.name for a in desired.applications] == ["app"]
    assert sorted((b.file, b.error) for b in desired.broken) == [
        ("deploy/env.yaml", "==> File deploy/env.yaml ==> At service 'web' ==> At key: "
                            "env_file: /proc/self/environ is outside the repository"),
        ("deploy/evil.yaml", f"==> File deploy/evil.yaml: {OUTSIDE}")]


def test_an_index_of_files_in_memory_lists_and_reads_only_them(tmp_path: Path) -> None:
    # a commit's files read from Git: the working tree (here a different text) is not read
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "app.yaml").write_text("image: web:2.0\n")
    index = checkout.Index.of(tmp_path, {"deploy/app.yaml": b"image: web:1.0\n",
                                         "deploy/notes.txt": b"web\n",
                                         "Kustomization": b"images: []\n"})
    assert [index.shown(p) for p in index.files()] == ["Kustomization", "deploy/app.yaml"]
    (app,) = index.files(["deploy/"])
    assert index.read(app) == b"image: web:1.0\n"
    assert index.holding(index.files(), (b"web",)) == [app]
    assert index.reads == 0


_TEXT = st.binary(max_size=40) | st.lists(st.sampled_from(
    [b"app", b"app-w", b"/app", b"app:1", b"app\n", b"x", b"\0", b" "])).map(b"".join)
_NEEDLE = st.sampled_from([b"app", b"ap", b"p:", b"x", b"app-w"]) | st.binary(
    min_size=1, max_size=4).filter(lambda b: b"\0" not in b)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TEXT, max_size=12), st.lists(_NEEDLE, max_size=2),
       st.lists(_NEEDLE, max_size=2))
def test_holding_finds_what_a_search_file_by_file_finds(blobs: list[bytes],
                                                       needles: list[bytes],
                                                       names: list[bytes]) -> None:
    # joined once (a NUL between files) or, past the byte budget, searched one by one; a
    # name counts only where no name byte follows it (app is not in app-w)
    whole = [re.compile(re.escape(n) + rb"(?![A-Za-z0-9._/-])") for n in names]
    files = {f"f{i:02}.yaml": blob for i, blob in enumerate(blobs)}
    expected = [name for name, blob in files.items() if any(n in blob for n in needles)
                or any(w.search(blob) for w in whole)]
    for budget in (checkout._HAYSTACK_BYTES, 0):
        with mock.patch.object(checkout, "_HAYSTACK_BYTES", budget):
            index = checkout.Index.of(Path("/nowhere"), files)
            for _ in range(2):  # the second search of the same list reuses the join
                found = index.holding(index.files(), tuple(needles), tuple(names))
                assert [index.shown(p) for p in found] == expected


def test_holding_keeps_a_file_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text("x" * 100)
    (tmp_path / "ours.yaml").write_text(DEPLOY)
    (tmp_path / "other.yaml").write_text("image: nginx\n")
    index = checkout.Index(tmp_path, max_file_bytes=50)
    found = index.holding(index.files(), (b"team/app",))
    assert [index.shown(p) for p in found] == ["big.yaml", "ours.yaml"]  # read() says why


@pytest.mark.parametrize("budget", [checkout._HAYSTACK_BYTES, 0])
def test_a_name_is_not_found_inside_a_longer_name(budget: int) -> None:
    files = {"worker.yaml": b"image: team/app-worker:1.0\n",
             "nested.yaml": b"image: team/app/sub:1.0\n", "ours.yaml": b"image: team/app\n",
             "both.yaml": b"a: team/app.x\nb: team/app@sha256:00\n"}
    with mock.patch.object(checkout, "_HAYSTACK_BYTES", budget):
        index = checkout.Index.of(Path("/nowhere"), files)
        found = index.holding(index.files(), (), (b"team/app",))
        assert [index.shown(p) for p in found] == ["both.yaml", "ours.yaml"]
        found = index.holding(index.files(), (b"team/app",))  # a plain needle: anywhere
        assert len(found) == 4
        overlapping = checkout.Index.of(Path("/nowhere"), {"x.yaml": b"aaa:"})
        assert overlapping.holding(overlapping.files(), (), (b"aa",))  # the second "aa"


def test_a_policys_scan_parses_no_file_of_a_longer_image_name(tmp_path: Path) -> None:
    (tmp_path / "worker.yaml").write_text("image: ghcr.io/team/app-worker:1.0.0\n")
    (tmp_path / "app.yaml").write_text(DEPLOY)
    index = checkout.Index(tmp_path)
    scan = scanning.scan_files(index, index.files(), APP, policy="app")
    assert [r.file for r in scan.references] == ["app.yaml"]
    assert scan.parsed == 1  # the worker's file was never decoded or parsed
