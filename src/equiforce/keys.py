"""Names of model outputs and training targets: one place, with shapes and units.

Internal units everywhere in equiforce: energy eV, length Å, time fs, mass amu,
charge e. Stress is σ = (1/V) ∂E/∂ε in eV/Å³, the convention of ASE's
``Atoms.get_stress`` (3x3 here; Voigt order only at the ASE boundary).
"""

from typing import Final

ENERGY: Final[str] = "energy"  # (n_graphs,) eV, total potential energy
FORCES: Final[str] = "forces"  # (n_atoms, 3) eV/Å, -dE/dr
STRESS: Final[str] = "stress"  # (n_graphs, 3, 3) eV/Å³, (1/V) dE/dε
ATOMIC_ENERGIES: Final[str] = "atomic_energies"  # (n_atoms,) eV, incl. E0 shift

# Per-structure inputs of models that take them (SO3LR): ``AtomicGraph.charge`` /
# ``.spin``, ``atoms.info`` keys of the readers and the calculator.
CHARGE: Final[str] = "charge"  # (n_graphs,) e, total charge Q
SPIN: Final[str] = "spin"  # (n_graphs,) total spin S (2S unpaired electrons)

# Electrostatic properties: outputs of models with charge heads (SO3LR) and
# optional training labels.
CHARGES: Final[str] = "charges"  # (n_atoms,) e, partial charges (output only)
DIPOLE: Final[str] = "dipole"  # (n_graphs, 3) e·Å, Σ_i q_i r_i
HIRSHFELD_RATIOS: Final[str] = "hirshfeld_ratios"  # (n_atoms,) V_eff/V_free, 1

# Uncertainty of an ensemble (a committee of models or a multi-head model,
# ``equiforce.uncertainty``): the spread of its K members around their mean,
# sqrt((1/K) Σ_k |x_k − x̄|²) (population std; for forces over the 3-vector).
# A latent uncertainty (one model, ``uncertainty.latent``) gives the per-atom
# force keys as its predicted RMS force error, and no ENERGY_STD.
ENERGY_STD: Final[str] = "energy_std"  # (n_graphs,) eV
FORCES_STD: Final[str] = "forces_std"  # (n_atoms,) eV/Å, per atom
FORCES_STD_MAX: Final[str] = "forces_std_max"  # (n_graphs,) eV/Å, max over atoms
ENERGY_MEMBERS: Final[str] = "energy_members"  # (K, n_graphs) eV, each member
FORCES_MEMBERS: Final[str] = "forces_members"  # (K, n_atoms, 3) eV/Å, each member
ENERGY_HEADS: Final[str] = "energy_heads"  # (K, n_graphs) eV, heads (training)
LATENT_DISTANCE: Final[str] = "latent_distance"  # (n_atoms,) 1, ≈ 1 on training atoms
#: a model's final per-atom invariant features (the readout's input), returned by
#: the compiled backends when asked (``CompiledPotential(features=True)``) and
#: by an energy term that reports them; not an energy term itself
NODE_FEATURES: Final[str] = "node_features"  # (n_atoms, F)
#: Uncertainty outputs, for front ends that pass them on.
UNCERTAINTY_KEYS: Final[tuple[str, ...]] = (ENERGY_STD, FORCES_STD, FORCES_STD_MAX)

#: Targets a dataset may carry, with the level they live on.
GRAPH_TARGETS: Final[tuple[str, ...]] = (ENERGY, STRESS, DIPOLE)
NODE_TARGETS: Final[tuple[str, ...]] = (FORCES, HIRSHFELD_RATIOS)
ALL_TARGETS: Final[tuple[str, ...]] = (ENERGY, FORCES, STRESS, DIPOLE, HIRSHFELD_RATIOS)

#: Separator of a term's name in its output keys (``energy:local``).
TERM_SEPARATOR: Final[str] = ":"


def term_energy(name: str) -> str:
    """Key of energy term ``name``'s total: (n_graphs,) eV."""
    return f"{ENERGY}{TERM_SEPARATOR}{name}"


def term_atomic_energies(name: str) -> str:
    """Key of energy term ``name``'s per-atom values: (n_atoms,) eV."""
    return f"{ATOMIC_ENERGIES}{TERM_SEPARATOR}{name}"


def term_name(key: str) -> str | None:
    """The term of a per-atom term key (``atomic_energies:<name>``), else None."""
    prefix = ATOMIC_ENERGIES + TERM_SEPARATOR
    return key[len(prefix) :] if key.startswith(prefix) else None
