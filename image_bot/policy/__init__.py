"""Tag selection: pure functions from a list of tags (and the current tag) to a decision.

No network, no files, no clock except an injected ``now``.
"""
