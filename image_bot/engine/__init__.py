"""The engine: the only package that composes the stages (registry, policy, update, publish)."""
