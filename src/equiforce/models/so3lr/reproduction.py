"""equiforce's SO3LR against so3krates-torch's, structure by structure.

The reproduction set (:func:`reproduction_set`) covers what issue 19 asks of the
port: neutral molecules (ASE's ethanol, dimethyl sulfide, chloromethane, and
rMD17 frames when the data are at hand), charged ones (acetate, Q = −1), a
contact ion pair (methylammonium acetate), a zwitterion (glycine), a 212-atom
molecule (C70H142) and a periodic water box, both with so3krates-torch's
default periodic electrostatics (the shifted kernel over images within r_lr:
equiforce's ``periodic_electrostatics: direct``) and with PME
(``water box PME``: so3krates-torch's point-charge ``use_pme`` path with its
two bugs patched, against equiforce's ``periodic_point_charges``, see
docs/so3lr.md).

:func:`compare` evaluates one structure with both codes and returns the
deviations: energy per atom, forces, each term's energy (so3krates-torch's
terms are read with forward hooks on its submodules), partial charges and
Hirshfeld ratios. Used by ``tests/models/test_so3lr.py`` and
``benchmarks/so3lr_reproduction.py``. Imports so3krates-torch inside
functions only (the ``references`` extra).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from equiforce import keys, structures
from equiforce.data.graph import AtomicGraph
from equiforce.models.base import PotentialModel

#: so3krates-torch submodule -> equiforce term whose per-atom energies it returns
REFERENCE_TERMS = {
    "atomic_energy_output_block": "local",
    "zbl_repulsion": "zbl",
    "electrostatic_potential": "electrostatics",
    "pme_electrostatic_potential": "electrostatics",
    "dispersion_potential": "dispersion",
}
#: the structure compared with PME on both sides
PME = "water box PME"


def reproduction_set(rmd17_dir: str | Path | None = None) -> dict[str, Atoms]:
    """Name -> structure; rMD17 frames (first frame of each test file) if found.

    The three small ASE molecules get N(0, 0.05 Å) noise (seeded), so that no
    force is zero by symmetry.
    """
    rng = np.random.default_rng(0)
    out: dict[str, Atoms] = {}
    for name, formula in (
        ("ethanol", "CH3CH2OH"),
        ("dimethyl sulfide", "CH3SCH3"),
        ("chloromethane", "CH3Cl"),
    ):
        atoms = molecule(formula)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        out[name] = atoms
    if rmd17_dir is not None:
        for mol in ("aspirin", "toluene"):
            path = Path(rmd17_dir) / f"rmd17_{mol}_test_01.npz"
            if path.is_file():
                data = np.load(path)
                out[f"rMD17 {mol}"] = Atoms(
                    numbers=data["nuclear_charges"], positions=data["coords"][0]
                )
    out["acetate (Q = -1)"] = structures.acetate()
    out["methylammonium acetate"] = structures.methylammonium_acetate()
    out["glycine zwitterion"] = structures.glycine_zwitterion()
    out["C70H142"] = structures.alkane(70)
    out["water box"] = structures.water_box(2)
    out[PME] = structures.water_box(2)
    return out


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """so3krates-torch builds tensors in torch's default dtype: set it, restore it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def reference_calculator(dtype: torch.dtype, pme: bool = False):
    """so3krates-torch's ``SO3LRCalculator`` (r_lr 12 Å) in ``dtype``.

    ``pme``: its ``use_pme`` point-charge electrostatics, with 0.2.1's two bugs
    patched (E_i = ½ k_e q_i V_i although torch-pme's V_i holds the ½; the full
    short-range list handed over as a half list) and a mesh fine enough to
    compare (0.3 Å, 6 nodes; its default, r_c/10 and 4 nodes, is good to only
    1e-3 eV on the water box).
    """
    from so3krates_torch.calculator.so3 import SO3LRCalculator

    name = {torch.float32: "float32", torch.float64: "float64"}[dtype]
    with default_dtype(torch.get_default_dtype()):  # the constructor sets it
        calc = SO3LRCalculator(default_dtype=name)
    if pme:
        from so3krates_torch.blocks.physical_potentials import (
            PMEElectrostaticInteraction,
        )

        model = calc.models[0]
        term = PMEElectrostaticInteraction(
            smearing=model.r_max / 5, mesh_spacing=0.3, interpolation_nodes=6
        ).to(dtype)
        term.ke = 2 * term.ke  # bug 1
        term.calculator.full_neighbor_list = True  # bug 2
        model.use_pme, model.pme_electrostatic_potential = True, term
    return calc


def equiforce_model(dtype: torch.dtype, pme: bool = False) -> PotentialModel:
    """The shipped SO3LR in ``dtype``; ``pme``: periodic point-charge PME.

    Without ``pme``, 3D-periodic cells take the ``direct`` electrostatics, the
    physics of so3krates-torch's default path.
    """
    from equiforce.models.checkpoint import load_checkpoint
    from equiforce.models.registry import model_from_payload, pretrained_path

    payload = load_checkpoint(pretrained_path("so3lr"))
    periodic = (
        {"periodic_electrostatics": "pme", "periodic_point_charges": True}
        if pme
        else {"periodic_electrostatics": "direct"}
    )
    payload["model_config"] = {**payload["model_config"], **periodic}
    return model_from_payload(payload, dtype=dtype).eval()


@dataclass
class Deviation:
    """Largest differences equiforce − so3krates-torch on one structure.

    Attributes:
        n_atoms: atoms in the structure.
        energy: |ΔE| / n_atoms, eV/atom.
        forces: max |ΔF| over atoms and components, eV/Å.
        terms: term -> |ΔE_term| / n_atoms, eV/atom (local, zbl,
            electrostatics, dispersion).
        charges: max |Δq|, e.
        hirshfeld: max |Δ Hirshfeld ratio|.
        energy_ref: so3krates-torch's energy, eV.
    """

    n_atoms: int
    energy: float
    forces: float
    terms: dict[str, float]
    charges: float
    hirshfeld: float
    energy_ref: float


def _reference(calc, atoms: Atoms, dtype: torch.dtype) -> tuple[dict, dict]:
    """so3krates-torch's results and per-term energies (eV) of ``atoms``."""
    model = calc.models[0]
    energies: dict[str, float] = {}
    handles = []
    for module_name, term in REFERENCE_TERMS.items():
        module = getattr(model, module_name, None)
        if isinstance(module, torch.nn.Module):

            def hook(_module, _args, output, term=term):
                # copied: so3krates-torch adds the terms in place afterwards
                energies[term] = float(output.detach().double().sum())

            handles.append(module.register_forward_hook(hook))
    try:
        atoms = atoms.copy()
        atoms.calc = calc
        with default_dtype(dtype):
            atoms.get_forces()
    finally:
        for h in handles:
            h.remove()
    return dict(calc.results), energies


def compare(atoms: Atoms, model: PotentialModel, calc) -> Deviation:
    """Evaluate ``atoms`` with equiforce's ``model`` and so3krates-torch's ``calc``.

    Both in the model's dtype (``calc`` must have been made in the same one).
    ``atoms.info['charge']`` is the total charge for both.
    """
    dtype = next(model.parameters()).dtype
    ref, ref_terms = _reference(calc, atoms, dtype)
    graph = AtomicGraph.from_atoms(
        atoms, model.cutoff, dtype=dtype, with_targets=False, lr_cutoff=model.lr_cutoff
    )
    out = model(graph, properties=True)
    n = len(atoms)
    e = float(out[keys.ENERGY].double().sum())
    terms = {}
    for term, e_ref in ref_terms.items():
        mine = float(out[keys.term_energy(term)].double().sum())
        if term == "local":  # so3krates-torch's readout holds the per-element shift
            mine += float(out[keys.term_energy("e0")].double().sum())
        terms[term] = abs(mine - e_ref) / n
    forces = out[keys.FORCES].detach().double().numpy()
    return Deviation(
        n_atoms=n,
        energy=abs(e - float(ref["energy"])) / n,
        forces=float(np.abs(forces - ref["forces"]).max()),
        terms=terms,
        charges=_max_diff(out[keys.CHARGES], ref["partial_charges"]),
        hirshfeld=_max_diff(out[keys.HIRSHFELD_RATIOS], ref["hirshfeld_ratios"]),
        energy_ref=float(ref["energy"]),
    )


def _max_diff(mine: torch.Tensor, ref) -> float:
    return float(np.abs(mine.detach().double().numpy() - np.asarray(ref)).max())
