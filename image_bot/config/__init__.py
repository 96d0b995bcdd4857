"""Bot settings and policy documents: models and loading (bottom layer; no network, no Git)."""
