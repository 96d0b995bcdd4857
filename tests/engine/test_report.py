"""What a cycle reports (engine.report): combining the reports of a repository's batches."""

from __future__ import annotations

from image_bot.engine.report import CycleReport, PolicyOutcome, RepositoryReport
from image_bot.update.result import Skipped


def test_a_file_skipped_by_two_batches_is_reported_once() -> None:
    link = Skipped("deploy/secret.yaml", "a symbolic link to a file outside the checkout")
    other = Skipped("deploy/big.yaml", "larger than 4194304 bytes")
    commit = RepositoryReport("repo", "main", skipped=(link,))
    proposals = RepositoryReport("repo", "main", skipped=(link, other))
    assert commit.combined(proposals).skipped == (link, other)


def test_a_cycle_reports_repr_is_short_whatever_its_outcomes() -> None:
    """asyncio.run builds the repr of its task's result (restoring the SIGINT handler): a
    cycle's report says what it is without listing every outcome."""
    outcomes = tuple(PolicyOutcome(f"p{i}", f"policies/p{i}.yaml", "planned")
                     for i in range(200))
    report = CycleReport((RepositoryReport("https://git.example/config.git", "main",
                                           outcomes=outcomes),), dry_run=True,
                         registry_requests=201)
    assert repr(report) == ("CycleReport(repositories=[https://git.example/config.git], "
                            "dry_run=True, registry_requests=201, ok=True)")
