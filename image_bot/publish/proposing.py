"""Pull-request mode: one bot branch per policy or group, one PR/MR per branch.

The branch is rebuilt from the target tip (one bot commit on top) and force-pushed with a
lease, and only when the proposed change differs from what the branch already holds. A
human commit on the branch stops the bot there (it says so once, in the PR). A PR the bot
closes itself carries a marker so that it is not mistaken for a human "no".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from image_bot.errors import PublishError
from image_bot.publish import committing, forges, messages
from image_bot.publish import workspace as workspaces

Action = Literal["opened", "updated", "unchanged", "blocked", "closed", "none"]


@dataclass(frozen=True, slots=True)
class Proposal:
    """What the engine asks for: the edited files (already in the working tree) and the PR."""

    branch: str
    files: tuple[str, ...]
    message: str
    spec: forges.PullRequestSpec
    #: the spec with what costs forge requests (release notes), asked for only when the PR
    #: is opened or its proposal changes
    complete: Callable[[], forges.PullRequestSpec] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    message: str
    number: int | None = None
    url: str | None = None
    pushed: str | None = None


@dataclass(frozen=True, slots=True)
class Declined:
    policy: str
    image: str
    tag: str
    reason: str


def branch_name(key: str) -> str:
    """The deterministic bot branch for a policy name or a group."""
    return committing.BOT_PREFIX + re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-.")


def declined(forge: forges.Forge, branch: str, base: str) -> list[Declined]:
    """Versions proposed by PRs of ``branch`` that a human closed without merging."""
    found = []
    for pr in forge.closed_unmerged(branch, base):
        if messages.WITHDRAWN in pr.body or messages.CLEARED in pr.body:
            continue  # closed by the bot itself, or the "no" was taken back (dashboard)
        found += [Declined(policy, image, tag, f"PR #{pr.number} closed without merging")
                  for policy, image, tag in messages.proposed(pr.body)]
    return found


def propose(ws: workspaces.Workspace, forge: forges.Forge, proposal: Proposal,
            identity: committing.Identity) -> Outcome:
    """Rebuild the bot branch with the working tree's edits and open or update its PR."""
    # 1. what is there now: the remote branch, its authors, the open PR (a ticked rebase box
    # asks for the branch to be rebuilt, other people's commits included)
    tip = ws.fetch_branch(proposal.branch)
    humans = _human_commits(ws, tip, identity.author.email) if tip else []
    pr = forge.find_open(proposal.branch, proposal.spec.base)
    rebase = pr is not None and messages.rebase_requested(pr.body)
    if humans and not rebase:
        return _blocked(forge, pr, proposal.branch, humans)
    # 2. one bot commit on the target tip (the working tree already holds the edits)
    ws.run("checkout", "-q", "--detach")
    sha = committing.commit(ws, proposal.files, proposal.message, identity)
    if sha is None:
        return Outcome("none", "nothing to propose: the target already has it")
    # 3. push only when the branch does not already propose exactly this
    pushed = None
    if rebase or not (tip and _same_change(ws, tip, sha, proposal.files)):
        committing.push_leased(ws, proposal.branch, sha, tip)
        pushed = sha
    # 4. the PR: open it, or bring it up to date in place (auto-merge follows the new
    # proposal: consent given for a patch is not consent for a major)
    spec = proposal.spec
    if pr is None:
        spec = proposal.complete() if proposal.complete else spec
        pr = forge.open(spec)
        return Outcome("opened", f"opened #{pr.number}", pr.number, pr.url, pushed)
    missing = tuple(label for label in spec.labels if label not in pr.labels)
    if (rebase or pr.title != spec.title or missing
            or messages.proposed(pr.body) != messages.proposed(spec.body)):
        spec = proposal.complete() if proposal.complete else spec
        forge.update(pr, title=spec.title, body=spec.body, add_labels=missing)  # box cleared
        if pr.auto_merge != spec.auto_merge:
            forge.set_auto_merge(pr, spec.auto_merge)
        if spec.reviewers and messages.proposed(pr.body) != messages.proposed(spec.body):
            forge.request_reviewers(pr, spec.reviewers)  # a rule may ask more for a major
        how = "rebased on request" if rebase else "updated"
        return Outcome("updated", f"{how} #{pr.number}", pr.number, pr.url, pushed)
    return Outcome("unchanged", f"#{pr.number} is up to date", pr.number, pr.url, pushed)


def replace_branch(ws: workspaces.Workspace, branch: str, sha: str, bot_email: str) -> bool:
    """Commit mode's ``push-branch``: make ``branch`` the target plus the bot's commits ending
    in ``sha``, force-pushed with a lease, while it holds nothing but the bot's commits beyond
    the target. Returns whether it pushed (not when the branch already has this content)."""
    tip = ws.fetch_branch(branch)
    humans = _human_commits(ws, tip, bot_email) if tip else []
    if humans:
        raise PublishError(f"git {workspaces.redact(ws.url)}: left {branch!r} alone: it has "
                           f"commits image-bot did not make ({', '.join(humans[:5])}); merge "
                           f"or delete the branch to let image-bot start over")
    if tip and ws.repo.is_ancestor(ws.repo.commit(ws.target), ws.repo.commit(tip)) and (
            ws.run("rev-parse", f"{tip}^{{tree}}") == ws.run("rev-parse", f"{sha}^{{tree}}")):
        return False  # the target plus the same change: pushing would only churn
    committing.push_leased(ws, branch, sha, tip, owned=True)
    return True


def withdraw(ws: workspaces.Workspace, forge: forges.Forge, branch: str, base: str, *,
             reason: str, bot_email: str) -> Outcome:
    """Close the open PR of ``branch`` (and delete the branch) when it is no longer needed."""
    pr = forge.find_open(branch, base)
    if pr is None:
        return Outcome("none", "nothing to propose")
    tip = ws.fetch_branch(branch)
    humans = _human_commits(ws, tip, bot_email) if tip else []
    if humans:
        return _blocked(forge, pr, branch, humans)
    forge.comment(pr, f"image-bot is closing this: {reason}.")
    forge.close(pr, body=f"{pr.body.rstrip()}\n\n{messages.WITHDRAWN}\n")
    if tip:
        committing.push_leased(ws, branch, None, tip)
    return Outcome("closed", f"closed #{pr.number}: {reason}", pr.number, pr.url)


def clear_decline(forge: forges.Forge, number: int) -> None:
    """Mark closed PR ``number`` so that it no longer declines what it proposed."""
    pr = forge.pull(number)
    if pr.state == "open" or messages.CLEARED in pr.body:
        return
    forge.update(pr, title=pr.title, body=f"{pr.body.rstrip()}\n\n{messages.CLEARED}\n",
                 add_labels=())


def _blocked(forge: forges.Forge, pr: forges.PullRequest | None, branch: str,
             humans: Sequence[str]) -> Outcome:
    text = (f"image-bot stopped updating `{branch}`: it has commits that image-bot did not "
            f"make ({', '.join(humans[:5])}). Merge or close this PR, delete the branch, or "
            f"tick the rebase box in the description to let image-bot start over. "
            f"{messages.HUMAN_NOTICE}")
    if pr is not None and not any(messages.HUMAN_NOTICE in c for c in forge.comments(pr)):
        forge.comment(pr, text)
    where = f"#{pr.number}" if pr else branch
    return Outcome("blocked", f"{where}: left alone, it has commits by someone else "
                   f"({', '.join(humans[:5])})", pr.number if pr else None,
                   pr.url if pr else None)


def _human_commits(ws: workspaces.Workspace, tip: str, bot_email: str) -> list[str]:
    log = ws.run("log", "--format=%H%x1f%an%x1f%ae", f"{ws.target}..{tip}")
    humans = []
    for line in log.splitlines():
        sha, name, email = [*line.split("\x1f"), "", ""][:3]
        if email.lower() != bot_email.lower():
            humans.append(f"{sha[:12]} by {name}")
    return humans


def _same_change(ws: workspaces.Workspace, tip: str, sha: str, files: Sequence[str]) -> bool:
    """True when ``tip`` is one commit on an ancestor of the target changing exactly ``files``
    to the same content as ``sha`` (so pushing would change nothing that matters)."""
    parents = ws.run("rev-list", "--parents", "-n", "1", tip).split()
    if len(parents) != 2 or not ws.repo.is_ancestor(ws.repo.commit(parents[1]),
                                                    ws.repo.commit(ws.target)):
        return False
    touched = set(ws.run("diff", "--name-only", parents[1], tip).split("\n")) - {""}
    if touched != set(files):
        return False
    return not ws.run("diff", "--name-only", tip, sha, "--", *files).strip()
