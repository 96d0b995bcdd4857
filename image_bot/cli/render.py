"""What the commands print: tables for people, one JSON document for scripts, errors on stderr.

Renders values it is given and decides nothing. Tables are plain aligned columns
(:func:`table`); the engine's helpers are imported inside the functions that need them, so
plain-text and JSON output (`validate`, `set-image`, `test`) never pay for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from image_bot.engine.operating import DeclinedVersion, Operation
    from image_bot.engine.report import CycleReport
    from image_bot.policy.strategies import Decision
    from image_bot.sync.status import SyncReport
    from image_bot.update.setting import Outcome

STATUS_STYLE = {"updated": "green", "planned": "cyan", "current": "dim", "unmatched": "yellow",
                "failed": "red", "proposed": "green", "blocked": "yellow", "waiting": "cyan",
                "suspended": "magenta"}
STATE_COLOUR = {"current": "green", "declined": "green", "pending": "yellow",
                "promoting": "cyan", "waiting": "cyan", "degraded": "red", "failed": "red",
                "unmatched": "yellow", "suspended": "white"}
SYNC_STYLE = {"Synced": "green", "OutOfSync": "yellow", "Healthy": "green",
              "Progressing": "cyan", "Degraded": "red", "Missing": "red", "Unknown": "dim"}


def report(cycle: CycleReport, *, as_json: bool, strict: bool = False) -> None:
    """A cycle (`run --once`, `plan`): per repository its diff (plan), a table, commits."""
    if as_json:
        click.echo(json.dumps(cycle.to_dict(), indent=2))
        return
    for repo in cycle.repositories:
        if cycle.dry_run and repo.diff:
            click.echo(repo.diff, nl=False)
        if repo.outcomes:  # a failure's reason is printed once, on stderr
            table(f"{repo.repository} ({repo.branch})", ("policy", "status", "details"), [
                (o.policy, (o.status, STATUS_STYLE[o.status]),
                 "(error below)" if o.status == "failed" and o.error else o.message)
                for o in repo.outcomes])
        elsewhere = dict(repo.pushed_to)  # push-branch commits
        for commit in repo.commits:
            click.echo(f"committed {commit[:12]} and pushed to "
                       f"{elsewhere.get(commit, repo.branch)}")
        for skipped in repo.skipped:
            click.echo(f"{click.style('skipped', fg='yellow')} {skipped.file}: "
                       f"{skipped.reason}")
    failures(cycle, strict=strict)  # the errors, each once


Cell = str | tuple[str, str]  # a text, or a text and its colour


def table(title: str, columns: tuple[str, ...], rows: list[tuple[Cell, ...]]) -> None:
    """A titled table as kubectl and docker print them: a header of upper-case names, one
    line a row, columns two spaces apart and the last one as long as it is (a terminal
    wraps it; ``grep`` and ``awk`` read a row as one line). Cells are printed as written,
    coloured only on a terminal. Aligned by the width a terminal gives each character (a
    CJK character takes two columns)."""
    from rich.cells import cell_len  # the display width of a text (not all of rich)

    texts = [[" ".join((c if isinstance(c, str) else c[0]).splitlines()) for c in row]
             for row in rows]  # a row stays one line
    widths = [max([len(name), *(cell_len(row[i]) for row in texts)])
              for i, name in enumerate(columns[:-1])]
    click.echo(title)
    click.secho("  ".join([*(name.upper().ljust(w) for name, w in zip(
        columns, widths, strict=False)), columns[-1].upper()]), bold=True)
    for row, text in zip(rows, texts, strict=True):
        last = max((i for i, shown in enumerate(text) if shown), default=0)  # no trailing blanks
        cells = []
        for i, (cell, shown) in enumerate(zip(row[:last + 1], text, strict=False)):
            padded = shown if i == last else shown + " " * (widths[i] - cell_len(shown))
            cells.append(padded if isinstance(cell, str) else _styled(padded, cell[1]))
        click.echo("  ".join(cells))


def _styled(text: str, colour: str) -> str:
    return click.style(text, dim=True) if colour == "dim" else click.style(text, fg=colour)


def exit_code(cycle: CycleReport, *, strict: bool) -> int:
    """0 when every policy ran; 1 when one failed, or (``--strict``) found nothing to update."""
    if not cycle.ok or (strict and cycle.unmatched):
        return 1
    return 0


def failures(cycle: CycleReport, *, strict: bool = False) -> None:
    """Failures also go to stderr, one line each, so scripts and CI logs show them; with
    ``--strict`` a policy that matched nothing is one too."""
    for repo in cycle.repositories:
        lines: list[Any] = [f"error: {o.policy}: {o.message}" for o in repo.outcomes
                            if o.status == "failed" or (strict and o.status == "unmatched")]
        if repo.error:
            lines.append(f"error: {repo.repository}: {repo.error}")
        for line in lines:
            click.echo(line, err=True)


def status_document(document: dict[str, Any], *, state_dir: Path, as_json: bool) -> None:
    """`status`: the counters, then each image's pipeline, a stage and its agents a block."""
    from image_bot.server import page

    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    if not document["pipelines"]:
        click.echo(f"no policy has run yet (state dir {state_dir})")
        return
    counts = document["summary"]
    click.echo(" · ".join(f"{counts[key]} {label}" for key, label in page.COUNTERS))
    for peer in document.get("peers", []):
        if not peer["ok"]:
            click.secho(f"peer {peer['url']} did not answer: {peer['error']}", fg="red")
    for pipeline in document["pipelines"]:
        click.echo(f"\n{pipeline['image']}  (newest eligible: {pipeline['newest'] or '—'})")
        for stage in pipeline["stages"]:
            _stage(stage, page.ago)


def _stage(stage: dict[str, Any], ago: Any) -> None:
    tag = stage["tag"] or "—"
    if stage["latest"] and stage["latest"] != stage["tag"]:
        tag += f" → {stage['latest']}"
    click.echo(f"  {stage['policy']:<16} " + click.style(
        f"{stage['state']:<10}", fg=STATE_COLOUR.get(stage["state"]), bold=True)
        + f" {tag}   {stage['repository']} ({stage['branch'] or '?'}) {stage['file']}")
    lines = []
    if stage["upstream"]:
        lines.append(f"from {stage['upstream']}: {stage['promotion']}")
    if stage["reason"]:
        lines.append(stage["reason"])
    if stage["pull_request"]:
        lines.append(f"open PR: {stage['pull_request']}")
    for agent in stage["agents"]:
        since = f" since {ago(agent['since'])}" if agent["since"] else ""
        stale = " (stale)" if agent["stale"] else ""
        lines.append(f"agent {agent['agent']}: runs {agent['tag'] or '—'}, {agent['sync']}, "
                     f"{agent['health']}{since}{stale} @ {(agent['revision'] or '-')[:12]}")
    for line in lines:
        click.echo(f"{'':<19}{line}")


def operation(done: Operation, *, as_json: bool) -> None:
    """`promote` and `rollback`: the cycle (its diff on a dry run), then what was declined."""
    if as_json:
        click.echo(json.dumps(done.to_dict(), indent=2))
        return
    report(done.report, as_json=False)
    o, outcome = done.override, done.outcome
    if outcome is not None and outcome.status == "current":
        click.echo(f"{o.policy} already has {o.tag}: nothing to write")
    for tag in done.declined:
        click.echo(f"declined {tag}: {o.policy} will not propose it again "
                   f"(image-bot declines clear {o.policy} {tag} takes that back)")


def declines(rows: list[DeclinedVersion], *, as_json: bool) -> None:
    """`declines list`: one row per declined version."""
    from image_bot.server import page

    if as_json:
        click.echo(json.dumps({"declines": [row.to_dict() for row in rows]}, indent=2))
        return
    if not rows:
        click.echo("no declined versions")
        return
    table("declined versions", ("policy", "tag", "image", "since", "why"), [
        (row.policy, row.tag, row.image, page.ago(row.at), row.reason) for row in rows])


def cleared(rows: list[DeclinedVersion], *, policy: str, as_json: bool) -> None:
    """`declines clear`: the versions it cleared."""
    if as_json:
        click.echo(json.dumps({"cleared": [row.to_dict() for row in rows]}, indent=2))
        return
    if not rows:
        click.echo(f"{policy} has no declined versions")
    for row in rows:
        click.echo(f"cleared {row.policy} {row.tag}: it may be proposed again")


def validation(count: int, problems: list[str], *, as_json: bool) -> None:
    """`validate`: one line per problem on stderr, then a count."""
    if as_json:
        click.echo(json.dumps({"ok": not problems, "policies": count, "problems": problems}))
        return
    for problem in problems:
        click.echo(problem, err=True)
    click.echo(f"{count} valid polic{'y' if count == 1 else 'ies'}, "
               f"{len(problems)} problem(s)")


def set_image(outcome: Outcome, *, dry_run: bool, as_json: bool,
              allow_none: bool = False) -> None:
    """`set-image`: the files it changed (or would), the diff on a dry run, what it refused,
    and each IMAGE=REF that matched no reference."""
    result = outcome.result
    if as_json:
        click.echo(json.dumps({
            "unmatched": [a.text for a in outcome.unmatched],
            "dry_run": dry_run, "files": list(result.files),
            "changes": [{"file": c.file, "line": c.line, "image": c.image, "old": c.old,
                         "new": c.new} for c in result.changes],
            "skipped": [{"file": s.file, "reason": s.reason} for s in outcome.unreadable],
            "refused": [{"file": s.file, "reason": s.reason} for s in outcome.refused],
        }, indent=2))
        return
    for file in result.files:
        click.echo(f"{'would update' if dry_run else 'updated'} {file}")
    if dry_run:
        click.echo("".join(result.diffs.values()), nl=False)
    for skipped in outcome.unreadable:
        click.echo(f"skipped {skipped.file}: {skipped.reason}", err=True)
    for refused in outcome.refused:
        click.echo(f"error: {refused.file}: {refused.reason}", err=True)
    for assignment in outcome.unmatched:
        click.echo(f"{'warning' if allow_none else 'error'}: {assignment.text}: no reference "
                   f"to {assignment.image.name} under the given paths", err=True)


def sync_reports(reports: list[SyncReport], *, as_json: bool) -> None:
    """`sync` and `sync status`: a table per agent pass, errors also on stderr."""
    if as_json:
        click.echo(json.dumps({"agents": [r.to_dict() for r in reports]}, indent=2))
        return
    for sync_report in reports:
        revision = (sync_report.revision or "-")[:12]
        table(f"{sync_report.agent}: {sync_report.repository} ({sync_report.branch}) "
              f"{sync_report.path} → {sync_report.target} @ {revision}",
              ("application", "service", "sync", "health", "revision", "details"), [
                  (s.application, s.service, (s.sync, SYNC_STYLE[s.sync]),
                   (s.health, SYNC_STYLE[s.health]), (s.revision or "-")[:12],
                   "; ".join(x for x in (s.action if s.action != "none" else "", s.drift,
                                         s.error) if x))
                  for s in sync_report.services])
        for removed in sync_report.removed:
            click.echo(f"removed {removed} (not in Git any more)")
        for error in sync_report.errors:
            click.echo(f"{click.style('error:', fg='red')} {error}")
            click.echo(f"error: {error}", err=True)


def decision(chosen: Decision, *, as_json: bool, explain: bool) -> None:
    """`test`: the chosen tag on stdout (nothing when none qualifies), the reason on stderr."""
    from image_bot.engine import ranking

    if as_json:
        click.echo(json.dumps(ranking.to_json(chosen, explain=explain), indent=2))
        return
    if explain:
        for line in ranking.explanation(chosen):
            click.echo(line, err=True)
    else:
        click.echo(chosen.reason, err=True)
    tag = ranking.written(chosen)
    if tag:
        click.echo(tag)


def request(method: str, url: str, status: int, seconds: float) -> None:
    """One line per registry request for ``test --verbose`` (the URL is already redacted)."""
    shown = status if status else "no answer"
    click.echo(f"{method} {url} → {shown} ({seconds * 1000:.0f} ms)", err=True)
