"""Training recipes that act on models from outside (e.g. data-dependent initialisation)."""
