"""Registry stage: talks the OCI distribution API (network I/O); knows nothing of Git or YAML."""
