"""The writer against golden directories: ``original/`` edited must equal ``expected/`` byte for
byte. Each ``tests/golden/<case>/case.json`` names the image, the new tag, the policy (for
marker comments), the digest the registry would answer and whether pin-digest is on, and the
files the writer must refuse (left untouched, with the reason).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from image_bot import refs
from image_bot.update import rewriting, scanning

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, tmp_path: Path) -> None:
    spec = json.loads((GOLDEN / case / "case.json").read_text())
    work = tmp_path / "repo"
    shutil.copytree(GOLDEN / case / "original", work)
    scan = scanning.find(work, refs.parse(spec["image"]), ["**"], policy=spec.get("policy"))
    edits = [rewriting.Edit(reference, spec["tag"], spec.get("policy", "p"),
                            digest=spec["digest"] if spec.get("pin_digest")
                            or rewriting.needs_digest(reference) else None)
             for reference in scan.references]

    result = rewriting.apply(work, edits)

    assert _files(work) == _files(GOLDEN / case / "expected")
    skipped = [(s.file, s.reason) for s in scan.skipped + result.skipped]
    expected_skips = [tuple(pair) for pair in spec.get("skipped", [])]
    assert len(skipped) == len(expected_skips)
    for (file, reason), (want_file, want_reason) in zip(skipped, expected_skips, strict=True):
        assert file == want_file
        assert reason.startswith(want_reason)
    changed = {f for f, data in _files(work).items()
               if data != (GOLDEN / case / "original" / f).read_bytes()}
    assert set(result.files) == changed


def test_every_golden_case_has_an_expected_tree() -> None:
    assert len(CASES) >= 15
    for case in CASES:
        assert (GOLDEN / case / "expected").is_dir(), case
        assert (GOLDEN / case / "case.json").is_file(), case
