"""image-bot: notices new container image tags, rewrites GitOps YAML with minimal edits, publishes.

The public surface is small on purpose; the stages live in subpackages and only
``image_bot.engine`` composes them.
"""

from __future__ import annotations

from image_bot.errors import ImageBotError, PermanentError, TemporaryError
from image_bot.refs import ImageRef

__all__ = ["ImageBotError", "ImageRef", "PermanentError", "TemporaryError", "__version__"]

__version__ = "0.1.0"
