"""The writer: byte-exact splices, verification, and real-world YAML from the corpus."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

import testing
from conftest import CORPUS
from image_bot import refs
from image_bot.update import rewriting, scanning, yamlgraph

APP = refs.parse("ghcr.io/team/app")
DIGEST = "sha256:" + "d" * 64


def _edit_all(root: Path, tag: str, image: refs.ImageRef = APP, *,
              digest: str | None = None, in_place: bool = False) -> rewriting.UpdateResult:
    scan = scanning.find(root, image, ["**"])
    edits = [rewriting.Edit(r, tag, "p", digest=digest) for r in scan.references]
    return rewriting.apply(root, edits, in_place=in_place)


@pytest.mark.parametrize("style", ["{v}", "'{v}'", '"{v}"'])
def test_quote_style_and_comments_are_kept(tmp_path: Path, style: str) -> None:
    value = style.format(v="ghcr.io/team/app:1.0.0")
    text = f"# top\nspec:\n  containers:\n    - image: {value}  # pinned\n      name: a\n"
    (tmp_path / "d.yaml").write_text(text)

    result = _edit_all(tmp_path, "1.1.0")

    assert (tmp_path / "d.yaml").read_text() == text.replace("1.0.0", "1.1.0")
    assert [(c.file, c.line, c.old_tag, c.new_tag) for c in result.changes] == [
        ("d.yaml", 4, "1.0.0", "1.1.0")]


def test_other_images_and_look_alikes_are_untouched(tmp_path: Path) -> None:
    text = ("image: ghcr.io/team/app-extra:1.0.0\nx:\n  image: ghcr.io/other/app:1.0.0\n"
            "y: ghcr.io/team/app:1.0.0\nz: {image: ghcr.io/team/app:1.0.0}\n")
    (tmp_path / "d.yaml").write_text(text)

    _edit_all(tmp_path, "2.0.0")

    assert (tmp_path / "d.yaml").read_text() == text.replace(
        "z: {image: ghcr.io/team/app:1.0.0}", "z: {image: ghcr.io/team/app:2.0.0}")


@pytest.mark.parametrize(("tag", "written"), [
    ("1.10", '"1.10"'), ("3.0", '"3.0"'), ("1e3", '"1e3"'), ("true", '"true"'),
    ("yes", '"yes"'), ("010", '"010"'), ("1.2.3", "1.2.3"), ("v1.10", "v1.10")])
def test_a_plain_tag_is_quoted_only_when_it_would_not_read_as_a_string(
        tmp_path: Path, tag: str, written: str) -> None:
    (tmp_path / "v.yaml").write_text("image:\n  repository: ghcr.io/team/app\n  tag: 1.0.0\n")

    _edit_all(tmp_path, tag)

    assert (tmp_path / "v.yaml").read_text() == (
        f"image:\n  repository: ghcr.io/team/app\n  tag: {written}\n")
    loaded = YAML(typ="safe", pure=True).load((tmp_path / "v.yaml").read_text())
    assert loaded["image"]["tag"] == tag


def test_a_file_that_does_not_change_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("image: ghcr.io/team/app:1.0.0\n")
    before = path.stat()

    result = _edit_all(tmp_path, "1.0.0")

    assert not result.changes and not result.skipped
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_an_edited_file_is_replaced_atomically_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("image: ghcr.io/team/app:1.0.0\n")
    path.chmod(0o640)
    inode = path.stat().st_ino

    _edit_all(tmp_path, "1.1.0")

    assert path.read_text() == "image: ghcr.io/team/app:1.1.0\n"
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.yaml"]  # no temporary left


def test_in_the_bots_clone_a_file_is_overwritten_where_it_is(tmp_path: Path) -> None:
    longer, shorter = tmp_path / "a.yaml", tmp_path / "b.yaml"
    longer.write_text("image: ghcr.io/team/app:1.0.0\n")
    shorter.write_text("image: ghcr.io/team/app:1.0.0-rc.1  # next\n")
    shorter.chmod(0o640)
    inodes = {p: p.stat().st_ino for p in (longer, shorter)}

    result = _edit_all(tmp_path, "1.10.0", in_place=True)

    assert longer.read_text() == "image: ghcr.io/team/app:1.10.0\n"
    assert shorter.read_text() == "image: ghcr.io/team/app:1.10.0  # next\n"  # no old tail
    assert {p: p.stat().st_ino for p in (longer, shorter)} == inodes  # the same files
    assert shorter.stat().st_mode & 0o777 == 0o640
    assert sorted(result.files) == ["a.yaml", "b.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b.yaml"]


def test_in_the_bots_clone_a_hard_linked_file_is_replaced_not_written_through(
        tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    path = tmp_path / "deploy" / "d.yaml"
    path.write_text("image: ghcr.io/team/app:1.0.0\n")
    other = tmp_path / "elsewhere.txt"  # outside the edit's paths, the same inode
    other.hardlink_to(path)

    scan = scanning.find(tmp_path, APP, ["deploy/**"])
    rewriting.apply(tmp_path, [rewriting.Edit(r, "1.1.0", "p") for r in scan.references],
                    in_place=True)

    assert path.read_text() == "image: ghcr.io/team/app:1.1.0\n"
    assert other.read_text() == "image: ghcr.io/team/app:1.0.0\n"  # left as it was
    assert path.stat().st_nlink == 1


def test_pin_digest_on_a_helm_map_without_a_digest_key_is_refused(tmp_path: Path) -> None:
    text = "image:\n  repository: ghcr.io/team/app\n  tag: 1.0.0\n"
    (tmp_path / "v.yaml").write_text(text)

    result = _edit_all(tmp_path, "1.1.0", digest=DIGEST)

    assert [(s.file, s.reason) for s in result.skipped] == [(
        "v.yaml", 'line 2: cannot pin a digest: this helm reference has no digest field; '
                  'add `digest: ""` next to its tag')]
    assert (tmp_path / "v.yaml").read_text() == text


def test_without_pin_digest_a_stale_digest_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text(f"a:\n  image: ghcr.io/team/app:1.0@{DIGEST}\n"
                                     f"b:\n  image:\n    repository: ghcr.io/team/app\n"
                                     f"    tag: '1.0'\n    digest: {DIGEST}\n")
    _edit_all(tmp_path, "1.1")
    assert (tmp_path / "d.yaml").read_text() == (
        "a:\n  image: ghcr.io/team/app:1.1\nb:\n  image:\n    repository: ghcr.io/team/app\n"
        "    tag: '1.1'\n    digest: \"\"\n")


def test_a_digest_only_reference_needs_a_digest(tmp_path: Path) -> None:
    text = f"images:\n- name: ghcr.io/team/app\n  digest: {DIGEST}\n"
    (tmp_path / "kustomization.yaml").write_text(text)
    scan = scanning.find(tmp_path, APP, ["**"])
    assert [rewriting.needs_digest(r) for r in scan.references] == [True]

    result = _edit_all(tmp_path, "1.1.0")

    assert result.skipped[0].reason == ("line 3: this kustomize reference is written as a "
                                        "digest; it needs the digest of the new tag")
    assert (tmp_path / "kustomization.yaml").read_text() == text


def test_two_policies_wanting_different_values_for_one_scalar_are_refused(
        tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text("image: ghcr.io/team/app:1.0.0\n")
    [reference] = scanning.find(tmp_path, APP, ["**"]).references
    result = rewriting.apply(tmp_path, [rewriting.Edit(reference, "1.1.0", "a"),
                                        rewriting.Edit(reference, "1.2.0", "b")])
    assert result.skipped[0].reason == "line 1: policies 'a' and 'b' want different values"


def test_unparsable_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("a:\n  image: ghcr.io/team/app:1\n b: [\n")
    scan = scanning.find(tmp_path, APP, ["**"])
    assert scan.references == ()
    assert [s.file for s in scan.skipped] == ["t.yaml"]
    assert scan.skipped[0].reason.startswith("does not parse as YAML")


def test_only_files_mentioning_the_repository_or_a_marker_are_parsed(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("a: [\n")  # would not parse, but is never read
    (tmp_path / "plain.yaml").write_text("image: ghcr.io/other/thing:1\n")
    (tmp_path / "app.yaml").write_text("image: ghcr.io/team/app:1\n")
    (tmp_path / "marked.yaml").write_text('v: 1.0.0 # {"$imagepolicy": "web:tag"}\n')
    (tmp_path / "other-marker.yaml").write_text('v: 1.0.0 # {"$imagepolicy": "api:tag"}\n')

    scan = scanning.find(tmp_path, APP, ["**"], policy="web")

    assert scan.parsed == 2
    assert sorted((r.file, r.kind) for r in scan.references) == [
        ("app.yaml", "image"), ("marked.yaml", "marker")]
    assert scan.skipped == ()


def test_paths_limit_where_references_are_found(tmp_path: Path) -> None:
    for folder in ("apps/a", "apps/b", "other"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "d.yaml").write_text("image: ghcr.io/team/app:1\n")
    scan = scanning.find(tmp_path, APP, ["apps/a/**", "other"])
    assert sorted(r.file for r in scan.references) == ["apps/a/d.yaml", "other/d.yaml"]


def test_an_index_lists_and_reads_the_checkout_once_for_every_policy(tmp_path: Path) -> None:
    for folder in ("apps/a", "apps/b"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "d.yaml").write_text(
            "containers:\n  - image: ghcr.io/team/app:1\n  - image: ghcr.io/team/api:1\n")
    (tmp_path / "apps/a/m.yaml").write_text('v: 1.0.0 # {"$imagepolicy": "api:tag"}\n')
    index = scanning.Index(tmp_path)
    api = refs.parse("ghcr.io/team/api")
    searches = [(APP, ["**"], None), (api, ["apps/a/**"], "api"), (api, ["**"], "api")]

    with_index = [scanning.find(tmp_path, image, paths, policy=policy, index=index)
                  for image, paths, policy in searches]

    assert index.reads == 3  # each file once, though three searches looked at them
    assert with_index == [scanning.find(tmp_path, image, paths, policy=policy)
                          for image, paths, policy in searches]
    assert [sorted((r.file, r.kind) for r in scan.references) for scan in with_index] == [
        [("apps/a/d.yaml", "image"), ("apps/b/d.yaml", "image")],
        [("apps/a/d.yaml", "image"), ("apps/a/m.yaml", "marker")],
        [("apps/a/d.yaml", "image"), ("apps/a/m.yaml", "marker"), ("apps/b/d.yaml", "image")]]


def test_an_edit_given_the_pass_index_reads_no_file_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.yaml").write_text("image: ghcr.io/team/app:1.0.0  # a\n")
    (tmp_path / "b.yaml").write_text("image: ghcr.io/team/app:1.0.0  # b\n")
    index = scanning.Index(tmp_path)
    edits = [rewriting.Edit(r, "1.1.0", "p")
             for r in scanning.find(tmp_path, APP, ["**"], index=index).references]
    reads = index.reads

    def refused(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("a file read again")

    monkeypatch.setattr(rewriting.checkout, "read_bounded", refused)
    trial = rewriting.prepare(tmp_path, edits, index=index)
    result = rewriting.apply(tmp_path, edits, prepared=trial, index=index)

    assert index.reads == reads == 2
    assert result.files == ("a.yaml", "b.yaml")
    assert (tmp_path / "b.yaml").read_text() == "image: ghcr.io/team/app:1.1.0  # b\n"
    with pytest.raises(ValueError, match="the index reads"):
        rewriting.prepare(tmp_path / "elsewhere", edits, index=index)


def test_a_file_already_as_decided_is_not_read_again_but_still_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.yaml").write_text("image: ghcr.io/team/app:1.1.0\n")
    (tmp_path / "twice.yaml").write_text("image: ghcr.io/team/app:1.1.0\nimage: x\n")
    edits = [rewriting.Edit(r, "1.1.0", "p")
             for r in scanning.find(tmp_path, APP, ["a.yaml"]).references]
    reread = testing.recorded(monkeypatch, rewriting, "_reread")

    trial = rewriting.prepare(tmp_path, edits)

    assert reread == []  # nothing to write: the text reads as it did
    assert trial["a.yaml"].new_text == trial["a.yaml"].text and not trial["a.yaml"].skipped
    ambiguous = [rewriting.Edit(r, "1.1.0", "p")
                 for r in scanning.find(tmp_path, APP, ["twice.yaml"]).references]
    [skipped] = [p.skipped for p in rewriting.prepare(tmp_path, ambiguous).values()]
    assert skipped is not None and "ambiguous YAML" in skipped.reason
    rewriting.prepare(tmp_path, [dataclasses.replace(edits[0], tag="1.2.0")])
    assert len(reread) == 1  # a write: read again


def test_alias_bombs_are_refused_not_expanded(tmp_path: Path) -> None:
    lines = ["a0: &a0 [image: ghcr.io/team/app:1]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    scan = scanning.find(tmp_path, APP, ["**"])
    assert [s.reason for s in scan.skipped] == [
        "does not parse as YAML: aliases expand to too many nodes"]


# --- the corpus: real files from public config repositories, read in place ----------------


def _corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml"))


_NAMED = re.compile(r"""(?:image|repository|repo|name|newName):\s*["']?([\w./:@-]+)""")
_MARKER = re.compile(r'"(?:\$imagepolicy|image-bot)"\s*:\s*"([^"]+)"')
_NOWHERE = refs.parse("example.invalid/nothing")
_SMALL = 20_000  # characters


def _fingerprint() -> dict[str, tuple[int, int, str]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size,
                     hashlib.sha256(p.read_bytes()).hexdigest()) for p in _corpus_files()}


def _references(text: str, name: str) -> list[scanning.Reference]:
    """Every reference in ``text``: to each image it names, and for each marker's policy."""
    images = set()
    for match in _NAMED.finditer(text):
        with contextlib.suppress(refs.InvalidReference):
            images.add(refs.parse(match[1]).with_tag(None))
    found: dict[tuple[int, ...], scanning.Reference] = {}
    searches = [(image, None) for image in sorted(images, key=str)]
    searches += [(_NOWHERE, m[1].split(":")[-2] if m[1].count(":") > 1 or m[1].endswith(
        (":tag", ":name", ":digest")) else m[1].split(":")[-1]) for m in _MARKER.finditer(text)]
    for image, policy in searches:
        for reference in scanning.references_in(text, image, name, policy=policy):
            found.setdefault(tuple(f.start for f in reference.fields), reference)
    return list(found.values())


def _leaf_differences(old: Any, new: Any, path: tuple[Any, ...] = ()) -> set[tuple[Any, ...]]:
    if isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys():
        return {d for key in old for d in _leaf_differences(old[key], new[key], (*path, key))}
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return {d for i, (a, b) in enumerate(zip(old, new, strict=True))
                for d in _leaf_differences(a, b, (*path, i))}
    return set() if old == new else {path}


def _differing_region(old: str, new: str) -> tuple[int, int]:
    """Offsets in ``old`` of the part that differs from ``new`` (common prefix/suffix cut)."""
    prefix = _common(old, new)
    suffix = _common(old[prefix:][::-1], new[prefix:][::-1])
    return prefix, len(old) - suffix


def _common(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))


def _check_edit(text: str, references: list[scanning.Reference]) -> tuple[int, str | None]:
    """Point every reference at 9.9.9; check bytes and data independently of the writer."""
    edits = [rewriting.Edit(r, "9.9.9", "p",
                            digest=DIGEST if rewriting.needs_digest(r) else None)
             for r in references]
    try:
        writes = rewriting.plan(text, edits)
        new_text = rewriting.splice(text, writes)
        rewriting.verify(text, new_text, writes)
    except rewriting.UnsafeEdit as exc:
        return 0, str(exc)
    spans = [(w.field.start, w.field.end) for w in writes]
    # the bytes: same lines, and on each changed line the difference lies inside a span
    old_lines, new_lines = text.splitlines(keepends=True), new_text.splitlines(keepends=True)
    assert len(old_lines) == len(new_lines)
    offset = 0
    for old, new in zip(old_lines, new_lines, strict=True):
        if old != new:
            first, last = _differing_region(old, new)
            assert any(s <= offset + first and offset + last <= e for s, e in spans), old
        offset += len(old)
    # the data: re-read, exactly the edited values differ, and they read as intended
    yaml = YAML(typ="safe", pure=True)
    old_docs, new_docs = list(yaml.load_all(text)), list(yaml.load_all(new_text))
    wanted = {path: w.value for w in writes for path in w.field.paths}
    assert _leaf_differences(old_docs, new_docs) <= set(wanted)
    for path, value in wanted.items():
        node: Any = new_docs
        for key in path:
            node = node[key]
        assert node == value
    return len(writes), None


def test_corpus_every_reference_edit_verifies_and_touches_only_the_value() -> None:
    """Rewrite every reference of every kind in the real-world corpus to a new tag."""
    files = _corpus_files()
    assert len(files) > 50, f"corpus missing at {CORPUS}"
    before = _fingerprint()
    edited, singles, kinds = 0, 0, set()
    refused: list[str] = []
    for source in files:
        text = scanning.read_text(source)
        assert text is not None
        try:
            references = _references(text, source.name)
        except YAMLError:
            continue  # Helm templates and the like: the scanner reports them as skipped
        kinds |= {r.kind for r in references}
        editable = [r for r in references if not r.problem]
        count, problem = _check_edit(text, editable)  # all at once, as the bot would
        edited += count
        if problem:
            refused.append(f"{source.relative_to(CORPUS)}: {problem}")
        elif len(text) < _SMALL:  # and one by one, where re-reading is cheap
            singles += sum(_check_edit(text, [r])[0] for r in editable)
    assert _fingerprint() == before, "the corpus must never be written"
    assert kinds == {"image", "helm", "kustomize", "marker"}
    assert edited > 500
    assert singles > 300
    # the only refusals are files whose keys repeat (ambiguous to re-read, so never edited)
    assert refused, "expected the corpus file with duplicate keys to be refused"
    assert all("found duplicate key" in reason for reason in refused), refused


def test_a_cycle_worth_of_files_is_composed_once_across_scans(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollback check and the update each scan every file: the second scan reuses the
    first one's parse, also for a few hundred files."""
    for i in range(300):
        (tmp_path / f"d{i}.yaml").write_text(f"image: ghcr.io/team/app:1.0.{i}\n")
    composed = testing.recorded(monkeypatch, yamlgraph, "compose_all")
    yamlgraph.trees.cache_clear()
    index = scanning.Index(tmp_path)

    first = scanning.find(tmp_path, APP, ["**"], index=index)
    second = scanning.find(tmp_path, APP, ["**"], index=index)

    assert first == second and len(first.references) == 300
    assert len(composed) == 300


def test_a_tab_before_a_trailing_comment_is_valid_yaml(tmp_path: Path) -> None:
    text = ("spec:\n  containers:\n    - image: ghcr.io/team/app:1.0.0\t# note\n"
            "      name: a \t\t# another\n    - image: ghcr.io/team/app:1.0.0\t\n")
    (tmp_path / "d.yaml").write_text(text)

    result = _edit_all(tmp_path, "1.1.0")

    assert result.skipped == ()
    assert (tmp_path / "d.yaml").read_text() == text.replace("1.0.0", "1.1.0")
    assert [c.line for c in result.changes] == [3, 5]


def test_helm_maps_sharing_an_anchor_through_a_merge_key_are_each_edited(
        tmp_path: Path) -> None:
    text = ("images:\n  app: &app {repository: ghcr.io/team/app, tag: v1.0.0}\n"
            "  sidecar: {<<: *app, tag: v1.0.0}   # same image, its own tag\n"
            "  worker:\n    <<: *app\n    pullPolicy: Always\n")
    (tmp_path / "values.yaml").write_text(text)

    result = _edit_all(tmp_path, "v1.1.0")

    assert result.skipped == ()
    assert (tmp_path / "values.yaml").read_text() == text.replace("v1.0.0", "v1.1.0")
    assert sorted(c.line for c in result.changes) == [2, 3]


def test_a_merged_tag_shared_with_another_image_is_still_refused(tmp_path: Path) -> None:
    text = ("app: &app {repository: ghcr.io/team/app, tag: v1.0.0}\n"
            "other: {<<: *app, repository: ghcr.io/team/other}\n")
    (tmp_path / "values.yaml").write_text(text)

    result = _edit_all(tmp_path, "v1.1.0")

    assert [s.reason for s in result.skipped] == [
        "line 1: the value is also used at document 1: other.tag, which is not a reference "
        "to ghcr.io/team/app; not edited"]
    assert (tmp_path / "values.yaml").read_text() == text


@pytest.mark.parametrize(("namespace", "found"), [
    (None, True), ("staging", True), ("flux-system", False)])
def test_a_flux_marker_names_a_policy_in_its_namespace(tmp_path: Path, namespace: str | None,
                                                        found: bool) -> None:
    text = ('spec:\n  image: docker.io/stefanprodan/podinfo:5.0.0'
            ' # {"$imagepolicy": "staging:web"}\n')
    (tmp_path / "app.yaml").write_text(text)

    scan = scanning.find(tmp_path, APP, ["**"], policy="web", namespace=namespace)

    assert [r.kind for r in scan.references] == (["marker"] if found else [])


def test_a_kustomization_without_extension_is_scanned_and_renamed_by_name_markers(
        tmp_path: Path) -> None:
    text = ("images:\n- name: podinfo\n"
            '  newName: docker.io/stefanprodan/podinfo # {"$imagepolicy": "flux-system:web:name"}\n'
            '  newTag: 5.0.0 # {"$imagepolicy": "flux-system:web:tag"}\n')
    (tmp_path / "Kustomization").write_text(text)

    scan = scanning.find(tmp_path, APP, ["**"], policy="web", namespace="flux-system")
    edits = [rewriting.Edit(r, "1.1.0", "web") for r in scan.references]
    result = rewriting.apply(tmp_path, edits)

    assert result.skipped == ()
    assert (tmp_path / "Kustomization").read_text() == text.replace(
        "docker.io/stefanprodan/podinfo", "ghcr.io/team/app").replace("5.0.0", "1.1.0")
