"""Potential architectures, their registry and checkpoints."""
