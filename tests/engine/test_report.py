"""What a cycle reports (engine.report): combining the reports of a repository's batches."""

from __future__ import annotations

from image_bot.engine.report import RepositoryReport
from image_bot.update.result import Skipped


def test_a_file_skipped_by_two_batches_is_reported_once() -> None:
    link = Skipped("deploy/secret.yaml", "a symbolic link to a file outside the checkout")
    other = Skipped("deploy/big.yaml", "larger than 4194304 bytes")
    commit = RepositoryReport("repo", "main", skipped=(link,))
    proposals = RepositoryReport("repo", "main", skipped=(link, other))
    assert commit.combined(proposals).skipped == (link, other)
