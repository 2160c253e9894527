"""``equiforce export``: files that run energy+forces with torch alone.

The exported files are run in a fresh Python where ``import equiforce`` is
impossible (``torch_only_runner.py`` proves it) and compared with the ASE
calculator computed here, for two sizes with one file (ethanol, a periodic water
box), in float64 at 1e-6 relative.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from equiforce.bench import water_positions
from equiforce.calculator import EquiforceCalculator
from equiforce.cli import main as cli_main
from equiforce.data.graph import AtomicGraph
from equiforce.engines.export import (
    ExportError,
    export_model,
    parse_elements,
    read_metadata,
)
from equiforce.models.checkpoint import save_model
from equiforce.models.registry import build_model

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "torch_only_runner.py"
_spec = importlib.util.spec_from_file_location(
    "md_helpers_for_export", HERE.parent / "md" / "helpers.py"
)
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
tiny_so3krates = _helpers.tiny_so3krates

ELEMENTS = "H,C,O"


def structures() -> list[Atoms]:
    """Ethanol (open) and a periodic box of 27 waters (81 atoms)."""
    pos, numbers, length = water_positions(27)
    box = Atoms(numbers=numbers, positions=pos, cell=np.eye(3) * length, pbc=True)
    box.rattle(0.05, seed=1)
    return [molecule("CH3CH2OH"), box]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "tiny.pt"
    save_model(tiny_so3krates(), path)
    return path


@pytest.fixture(scope="module")
def reference(model_file) -> list[dict[str, np.ndarray]]:
    """Energy, forces and stress (3, 3) from the ASE calculator (float64)."""
    out = []
    for atoms in structures():
        atoms.calc = EquiforceCalculator(model_file, compile=False, skin=0.0)
        out.append(
            {
                "energy": atoms.get_potential_energy(),
                "forces": atoms.get_forces(),
                "stress": atoms.get_stress(voigt=False) if atoms.pbc.any() else None,
                "volume": atoms.get_volume() if atoms.pbc.any() else None,
            }
        )
    return out


def run_torch_only(export: Path, fmt: str, tmp_path: Path, env=None) -> dict:
    """Run ``export`` in a Python without equiforce; its outputs by structure."""
    npz = tmp_path / "structures.npz"
    arrays = {}
    for k, atoms in enumerate(structures()):
        arrays[f"positions_{k}"] = atoms.positions
        arrays[f"numbers_{k}"] = atoms.numbers
        arrays[f"cell_{k}"] = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
    np.savez(npz, **arrays)
    out = tmp_path / "out.npz"
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(export), fmt, str(npz), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # what fails here: equiforce importable (or not installed) in the subprocess
    assert report["blocked"] and report["installed"]
    return {"report": report, "results": dict(np.load(out))}


def assert_matches_calculator(results: dict, reference: list, rtol: float) -> None:
    """Energies, forces and stress of the torch-only run against the calculator."""
    for k, ref in enumerate(reference):
        energy, forces = results[f"energy_{k}"], results[f"forces_{k}"]
        assert abs(energy - ref["energy"]) <= rtol * abs(ref["energy"])
        scale = np.abs(ref["forces"]).max()
        np.testing.assert_allclose(forces, ref["forces"], rtol=0, atol=rtol * scale)
        if ref["volume"] is not None:  # stress = virial / V (ASE sign)
            stress = results[f"virial_{k}"] / ref["volume"]
            scale = np.abs(ref["stress"]).max()
            assert scale > 0
            np.testing.assert_allclose(stress, ref["stress"], atol=rtol * scale)


def test_torchscript_export_runs_without_equiforce(model_file, reference, tmp_path):
    """CLI export, then torch-only energies/forces/stress for two sizes.

    Fails if the exported graph specialised on the tracing size, if the Cartesian
    shift vectors or the virial are wrong for the periodic box, or if the file
    needs equiforce to load.
    """
    out = tmp_path / "tiny.ts.pt"
    argv = ["export", str(model_file), "--format", "torchscript", "--out", str(out)]
    assert cli_main([*argv, "--elements", ELEMENTS]) == 0
    run = run_torch_only(out, "torchscript", tmp_path)
    meta = run["report"]["metadata"]
    assert meta["elements"] == [1, 6, 8] and meta["dtype"] == "float64"
    assert meta["cutoff"] == tiny_so3krates().cutoff
    assert meta == read_metadata(out)
    assert_matches_calculator(run["results"], reference, rtol=1e-6)


def test_torchscript_float32_and_isolated_atom(model_file, tmp_path):
    """float32 export against the float32 calculator; one atom without edges."""
    out = tmp_path / "tiny32.pt"
    export_model(model_file, "torchscript", out, dtype=torch.float32, elements=[1, 8])
    module = torch.jit.load(str(out))
    for atoms in (molecule("H2O"), Atoms("H", positions=[[0.0, 0.0, 0.0]])):
        atoms.calc = EquiforceCalculator(model_file, dtype=torch.float32, compile=False)
        g = AtomicGraph.from_atoms(atoms, 5.0, dtype=torch.float32, with_targets=False)
        energy, forces, e_atom, _ = module(
            g.positions, g.atomic_numbers, g.edge_index, g.edge_shifts
        )
        assert forces.dtype == torch.float32 and energy.dtype == torch.float64
        ref = atoms.get_potential_energy()
        assert abs(energy.item() - ref) <= 1e-5 * abs(ref)
        assert abs(e_atom.sum().item() - energy.item()) < 1e-9
        np.testing.assert_allclose(forces.numpy(), atoms.get_forces(), atol=1e-5)


FAMILIES = {
    "so3krates": {"num_features": 16, "num_layers": 1, "degrees": (1, 2)},
    "schnet": {"num_features": 16, "num_interactions": 2},
    "painn": {"num_features": 16, "num_interactions": 1},
    "nequip": {"num_features": 8, "num_layers": 1, "l_max": 1},
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_scripts_and_ignores_pairs_beyond_the_cutoff(name, tmp_path):
    """Every family goes through TorchScript; a list with a 1 Å skin changes nothing.

    Fails if an operator of a family cannot be scripted, if the scripted graph
    differs from the eager model, or if pairs beyond the cutoff (which LAMMPS-style
    lists with a skin contain) contribute.
    """
    model = build_model(name, dtype=torch.float64, **FAMILIES[name])
    with torch.no_grad():  # non-zero readouts, so that the forces are not all 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = tmp_path / f"{name}.pt"
    export_model(model, "torchscript", out, elements=[1, 8])
    module = torch.jit.load(str(out))
    pos, numbers, _ = water_positions(8)  # open cluster, 24 atoms, ~9 Å across
    cluster = Atoms(numbers=numbers, positions=pos)
    ref = model(AtomicGraph.from_atoms(cluster, model.cutoff, with_targets=False))
    assert ref["forces"].abs().max() > 1e-3
    g = AtomicGraph.from_atoms(cluster, model.cutoff + 1.0, with_targets=False)
    energy, forces, _, _ = module(
        g.positions, g.atomic_numbers, g.edge_index, g.edge_shifts
    )
    torch.testing.assert_close(energy, ref["energy"][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(forces, ref["forces"], rtol=1e-9, atol=1e-10)


def test_bad_inputs_give_clear_errors(model_file, tmp_path):
    """Wrong dtype, an element outside the list, a bad edge index: named errors."""
    out = tmp_path / "tiny.pt"
    export_model(model_file, "torchscript", out, elements=[1, 6, 8])
    module = torch.jit.load(str(out))
    g = AtomicGraph.from_atoms(molecule("CH3CH2OH"), 5.0, with_targets=False)
    args = [g.positions, g.atomic_numbers, g.edge_index, g.edge_shifts]
    # a scripted module's raise reaches Python as torch.jit.Error (not a RuntimeError)
    with pytest.raises(torch.jit.Error, match="must be torch.float64"):
        module(args[0].float(), *args[1:3], args[3].float())
    numbers = g.atomic_numbers.clone()
    numbers[2] = 7
    with pytest.raises(torch.jit.Error, match=r"atomic number 7 is not in .*\(1,6,8\)"):
        module(args[0], numbers, *args[2:])
    with pytest.raises(torch.jit.Error, match="outside 0..n_atoms-1"):
        module(args[0], args[1], args[2] + 1, args[3])


def test_not_an_export_and_not_a_model(model_file, tmp_path, capsys):
    """A checkpoint, a text file and a missing file are named as not exports."""
    with pytest.raises(ExportError, match="without equiforce.json"):
        read_metadata(model_file)  # a torch zip archive, but no export
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ExportError, match="not a TorchScript or .pt2 archive"):
        read_metadata(text)
    with pytest.raises(ExportError, match="does not exist"):
        read_metadata(tmp_path / "missing.pt")
    argv = ["export", str(text), "--format", "torchscript", "--out", "x.pt"]
    assert cli_main(argv) == 2
    assert "notes.txt" in capsys.readouterr().err


def test_elements_required_when_the_model_does_not_know_them(model_file, tmp_path):
    """No training statistics and E0 all zero: the export asks for --elements."""
    with pytest.raises(ExportError, match="--elements"):
        export_model(model_file, "torchscript", tmp_path / "x.pt")
    with pytest.raises(ExportError, match="unknown element 'Xx'"):
        parse_elements("H,Xx")
    assert parse_elements("O,1,C") == [1, 6, 8]


@pytest.mark.slow
def test_aoti_export_runs_without_equiforce(
    model_file, reference, tmp_path, monkeypatch
):
    """AOTInductor package (~30 s build): torch-only results, dtype/element checks."""
    out = tmp_path / "tiny.pt2"
    argv = ["export", str(model_file), "--format", "aoti", "--out", str(out)]
    assert cli_main([*argv, "--elements", ELEMENTS]) == 0
    run = run_torch_only(out, "aoti", tmp_path)
    assert run["report"]["metadata"] == read_metadata(out)
    assert run["report"]["metadata"]["container"] == "aoti"
    assert_matches_calculator(run["results"], reference, rtol=1e-6)
    monkeypatch.setenv("AOTI_RUNTIME_CHECK_INPUTS", "1")  # AOTInductor's checks
    runner = torch._inductor.aoti_load_package(str(out))
    g = AtomicGraph.from_atoms(molecule("CH3CH2OH"), 5.0, with_targets=False)
    numbers = g.atomic_numbers.clone()
    numbers[0] = 7  # the element check is inside the compiled graph
    with pytest.raises(RuntimeError, match="outside the export's element list"):
        runner(g.positions, numbers, g.edge_index, g.edge_shifts)
    with pytest.raises(RuntimeError, match="unmatched dtype"):
        runner(g.positions.float(), g.atomic_numbers, g.edge_index, g.edge_shifts)
    with pytest.raises(RuntimeError, match="stride"):  # not contiguous
        shifts_f = g.edge_shifts.t().contiguous().t()
        runner(g.positions, g.atomic_numbers, g.edge_index, shifts_f)
    one = runner(
        g.positions[:1], g.atomic_numbers[:1], g.edge_index[:, :0], g.edge_shifts[:0]
    )
    assert one[1].abs().max() == 0  # one atom, no edges: accepted, no force
