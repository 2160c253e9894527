"""Adapters that run equiforce models inside other engines (torch-sim, OpenMM, LAMMPS).

Each module wraps an :class:`equiforce.potential.Potential` and imports its engine
only inside, so ``import equiforce`` never needs an optional engine installed.
"""
