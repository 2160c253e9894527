"""So3krates: the SO(3)-equivariant transformer with Euclidean variables.

References: Frank, Unke, Müller, NeurIPS 2022 (arXiv 2205.14276); Frank, Unke,
Müller, Chmiela, Nat. Commun. 15, 6539 (2024). Equations follow
``so3krates-spec.md`` (mlff v1.0 ``SO3kratesSparse``).

The package: :mod:`.config` (hyperparameters and presets), :mod:`.layer` (one
attention layer and the degree contraction), :mod:`.model` (embedding, layers,
readout: the maths) and :mod:`.fast` (what only makes calls faster: filter
tables, node projections kept between calls, edge chunks for very large graphs).

Symbols → code names:

=========  ==================  ===========================
paper      code                shape
=========  ==================  ===========================
f_i        ``features``        (n_atoms, F)
x_i        ``ev``              (n_atoms, m_tot)
r_ij       ``edge_vectors``    (n_edges, 3)
K_ij       ``rbf``             (n_edges, K)
Y_ij       ``sph``             (n_edges, m_tot)
φ(d_ij)    ``phi``             (n_edges,)
c(x)       ``contract(ev)``    (·, |L|)
=========  ==================  ===========================
"""

from equiforce.models.so3krates.config import PRESETS, So3kratesConfig
from equiforce.models.so3krates.layer import DegreeContraction, So3kratesLayer
from equiforce.models.so3krates.model import So3krates

__all__ = [
    "PRESETS",
    "DegreeContraction",
    "So3krates",
    "So3kratesConfig",
    "So3kratesLayer",
]
