"""Publish stage: a cached Git workspace, commits and pushes (Git I/O; knows no registry)."""
