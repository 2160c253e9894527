"""SO3LR (Kabylda, Frank et al., JACS 147, 33723 (2025)): So3krates + long range.

:mod:`.config` (hyperparameters; defaults = the released model), :mod:`.embedding`
(total charge and spin), :mod:`.heads` (partial charges, Hirshfeld ratios),
:mod:`.model` (the potential) and :mod:`.convert` (so3krates-torch's pretrained
file → an equiforce model file; imports so3krates-torch only inside).
The physical terms live in :mod:`equiforce.models.longrange`.
"""

from equiforce.models.so3lr.config import PRESETS, SO3LRConfig
from equiforce.models.so3lr.model import SO3LR

__all__ = ["PRESETS", "SO3LR", "SO3LRConfig"]
