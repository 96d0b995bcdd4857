"""Bottom layer: the package's loggers, quiet until the application configures logging.

A library stays quiet until the application configures logging (the daemon does; a
``run --once`` prints its own report instead of log lines), so the ``image_bot`` logger gets
a ``NullHandler``. It lives here, not in the package's ``__init__``, so that commands that
never log (``validate`` in a pre-commit hook) do not import :mod:`logging` at all.
"""

from __future__ import annotations

import logging

logging.getLogger("image_bot").addHandler(logging.NullHandler())


def logger(name: str) -> logging.Logger:
    """The logger ``image_bot.<name>``."""
    return logging.getLogger(f"image_bot.{name}")
