"""The cycle table prints names and messages as written (no rich markup read from them)."""

from __future__ import annotations

import time

import pytest

from image_bot.cli import render
from image_bot.engine.operating import DeclinedVersion
from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport
from image_bot.update.result import Skipped


def test_brackets_in_a_message_are_printed_not_read_as_markup(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line a row
    note = "kept [bold]1.0.0[/] (registries[].max_tags)"
    outcome = PolicyOutcome("web", "policies/web.yaml", "current", note=note)
    cycle = CycleReport((RepositoryReport("config", "main", outcomes=(outcome,)),))
    render.report(cycle, as_json=False)
    row = next(line for line in capsys.readouterr().out.splitlines() if "web" in line)
    assert row == f"web     current  {note}"


def test_a_table_aligns_by_display_width_and_keeps_a_row_on_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    long = "why " * 60 + "end"  # longer than any terminal: a terminal wraps it, grep sees one line
    render.table("title", ("name", "state", "why"), [
        ("日本", ("ok", "green"), "short"), ("a-longer-name", ("failed", "red"), long),
        ("x", ("", "dim"), ""), ("y", ("ok", "green"), "two\nlines")])
    assert capsys.readouterr().out.splitlines() == [
        "title",
        "NAME           STATE   WHY",
        "日本           ok      short",  # two wide characters take four columns
        f"a-longer-name  failed  {long}",
        "x",
        "y              ok      two lines"]


def test_an_operators_reason_and_a_skipped_file_are_printed_as_written(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    reason = "rollback: [red]broke[/] checkout"
    render.declines([DeclinedVersion("web", "registry/web", "1.2.0", reason, time.time())],
                    as_json=False)
    skipped = Skipped("deploy/[x].yaml", "a symbolic link to a file outside the checkout")
    cycle = CycleReport((RepositoryReport("config", "main", skipped=(skipped,)),))
    render.report(cycle, as_json=False)
    out = capsys.readouterr().out
    assert reason in out
    assert "skipped deploy/[x].yaml: a symbolic link" in out
