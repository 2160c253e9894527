"""Molecular dynamics: state, integrators, force providers, runner, observers."""
