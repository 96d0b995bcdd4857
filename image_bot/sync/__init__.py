"""Sync stage: make a Docker host or a Kubernetes cluster match the config repository."""
