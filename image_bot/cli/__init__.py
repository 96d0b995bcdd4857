"""Command line: the `image-bot` group; one module per command, imported only when it runs.

Must import nothing but click (and image_bot's light top level): `image-bot --help` and a
`validate` in a pre-commit hook pay for no registry, Git, Docker or HTTP library. Errors become
exit codes in one place, :mod:`image_bot.cli.errors`.
"""

from __future__ import annotations

import click

from image_bot import __version__
from image_bot.cli import errors, lazy

# name → where the command lives and its help's first paragraph (a test keeps them equal).
COMMANDS = {
    "declines": lazy.Lazy("image_bot.cli.declines:declines",
                          "List or clear declined versions: tags a policy will not propose "
                          "again."),
    "import": lazy.Lazy("image_bot.cli.import_:import_group",
                        "Convert Flux or Argo CD Image Updater objects into image-bot "
                        "policies."),
    "plan": lazy.Lazy("image_bot.cli.plan:plan",
                      "Show what `run` would change, as a diff, without committing anything."),
    "promote": lazy.Lazy("image_bot.cli.promote:promote",
                         "Write TAG for POLICY now, through Git, skipping the policy's own "
                         "checks."),
    "rollback": lazy.Lazy("image_bot.cli.rollback:rollback",
                          "Write the previous tag of POLICY back through Git and decline the "
                          "one it replaces."),
    "run": lazy.Lazy("image_bot.cli.run:run", "Update image references, commit and push."),
    "set-image": lazy.Lazy("image_bot.cli.set_image:set_image",
                           "Point every reference to IMAGE under PATH (files or folders) at "
                           "REF."),
    "status": lazy.Lazy("image_bot.cli.status:status",
                        "Each image as a pipeline: its stages (tag in Git, PR, state) and the "
                        "agents running them."),
    "sync": lazy.Lazy("image_bot.cli.sync:sync",
                      "Apply the config repository to a Docker host (or Kubernetes) and keep "
                      "it there."),
    "test": lazy.Lazy("image_bot.cli.test:test_command",
                      "Rank the tags of IMAGE with a policy given as flags and print the "
                      "chosen tag."),
    "validate": lazy.Lazy("image_bot.cli.validate:validate",
                          "Check policy files under PATH (a file or directory) and the bot "
                          "config."),
    "webhook": lazy.Lazy("image_bot.cli.run:webhook",
                         "Serve the webhook receiver alone: scan only when a registry says an "
                         "image changed."),
}


class _Main(lazy.LazyGroup):
    """The top-level group: a command returns its exit code, or raises and errors maps it."""

    def invoke(self, ctx: click.Context) -> object:
        with errors.handled():
            code = super().invoke(ctx)
        if isinstance(code, int) and code != errors.EXIT_OK:
            ctx.exit(code)
        return code


@click.group(cls=_Main, lazy_subcommands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="image-bot")
def main() -> None:
    """image-bot: keep image tags in a GitOps repository up to date.

    \b
    Typical use:
      image-bot validate --config bot.yaml        check the config and the policies
      image-bot plan --config bot.yaml            show what would change (a diff)
      image-bot run --once --config bot.yaml      update the YAML, commit and push
      image-bot run --config bot.yaml             the daemon: intervals, webhooks, /metrics
      image-bot status --config bot.yaml          each image from registry to agents
      image-bot promote web 1.4.2 --reason WHY    write a tag now (commit or PR)
      image-bot rollback web --reason WHY         the previous tag back; the bad one declined

    Policies (kind: ImagePolicy) live in the config repository; see README.md.
    """
