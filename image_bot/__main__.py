"""Entry point for ``python -m image_bot``; delegates to the CLI and does nothing else."""

from __future__ import annotations

from image_bot.cli import main

if __name__ == "__main__":
    main()
