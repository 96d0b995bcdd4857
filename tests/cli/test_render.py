"""The cycle table prints names and messages as written (no rich markup read from them)."""

from __future__ import annotations

import pytest

from image_bot.cli import render
from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport


def test_brackets_in_a_message_are_printed_not_read_as_markup(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line a row
    note = "kept [bold]1.0.0[/] (registries[].max_tags)"
    outcome = PolicyOutcome("web", "policies/web.yaml", "current", note=note)
    cycle = CycleReport((RepositoryReport("config", "main", outcomes=(outcome,)),))
    render.report(cycle, as_json=False)
    row = next(line for line in capsys.readouterr().out.splitlines() if "web" in line)
    assert [cell.strip() for cell in row.split("│")[1:4]] == ["web", "current", note]
