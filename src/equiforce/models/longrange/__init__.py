"""Physical long-range energy terms (SO3LR): ZBL, electrostatics, dispersion.

Each term returns per-atom energies (n_atoms,) in eV, so that
:mod:`equiforce.energy` gives forces, stress and the named per-term outputs
(``energy:zbl``, ``energy:electrostatics``, ``energy:dispersion``). ZBL runs on
the short-range pairs; electrostatics and dispersion on the long-range pairs of
:class:`~equiforce.data.graph.AtomicGraph` (``lr_edge_index``) with per-atom
charges and Hirshfeld ratios that a model predicts
(:class:`equiforce.models.so3lr.SO3LR`). In 3D-periodic cells electrostatics
is an Ewald/PME sum through torch-pme (:class:`PeriodicCoulomb`). Given
``lr_vectors=None``, electrostatics and dispersion compute the pair vectors
themselves, in chunks of pairs for large structures
(:mod:`~equiforce.models.longrange.pair_chunks`: 100,000 atoms have 7·10⁷
pairs). Equations and reference code: ``global-interactions.md`` §3.
"""

from equiforce.models.longrange.dispersion import Dispersion
from equiforce.models.longrange.electrostatics import Electrostatics, conserve_charge
from equiforce.models.longrange.ewald import PeriodicCoulomb
from equiforce.models.longrange.zbl import ZBLRepulsion

__all__ = [
    "Dispersion",
    "Electrostatics",
    "PeriodicCoulomb",
    "ZBLRepulsion",
    "conserve_charge",
]
