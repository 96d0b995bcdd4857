"""The HTTP side of the daemon: webhooks, health, metrics and the status page (Starlette).

It only enqueues work on the engine's scheduler; it never calls a registry or Git.
"""
