"""``equiforce export``: a model file that runs with torch alone (no equiforce).

For engines and programs that cannot import equiforce (OpenMM, LAMMPS, C++): the
model's energy path, traced with the forces and virial inside
(:mod:`equiforce.accel.export`), saved as a TorchScript module
(``torch.jit.load`` / ``torch::jit::load``) or an AOTInductor package
(``torch._inductor.aoti_load_package`` / ``AOTIModelPackageLoader``). The file
carries its metadata (cutoff, elements, dtype, versions, interface, units) as
JSON readable with torch alone; :func:`read_metadata` reads it (and tells an
export from any other file) without loading the model. Interface and examples:
``docs/engines/export.md``.
"""

from __future__ import annotations

import copy
import datetime
import json
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from equiforce.accel import export as core
from equiforce.errors import EquiforceError
from equiforce.models.base import PotentialModel
from equiforce.models.checkpoint import load_checkpoint
from equiforce.models.registry import model_from_payload
from equiforce.version import __version__

Format = Literal["torchscript", "aoti"]
FORMATS: tuple[str, ...] = ("torchscript", "aoti")

#: AOTInductor build time, seconds: about ``a + b * graph nodes`` on a shared
#: 2-core EPYC (tiny So3krates, 452 nodes: 32 s; default So3krates, 739 nodes:
#: 41-50 s), for the notice before a build.
_AOTI_SECONDS = (9.0, 0.05)


class ExportError(EquiforceError):
    """A bad export request, or a file that is not an equiforce export."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        path: the file.
        metadata: the metadata stored in it.
        trace_seconds: tracing the energy path.
        build_seconds: scripting (torchscript) or compiling (aoti) and writing.
    """

    path: Path
    metadata: dict
    trace_seconds: float
    build_seconds: float


def model_elements(model: PotentialModel, statistics: dict) -> list[int]:
    """Elements a model knows: its training statistics' E0 keys, else nonzero E0.

    Raises:
        ExportError: neither says (a model built without data statistics).
    """
    e0 = statistics.get("e0") or {}
    if e0:
        return sorted(int(z) for z in e0)
    known = model.known_elements()
    if known:
        return sorted(known)
    raise ExportError(
        "the model file does not say which elements it was trained on (no data "
        "statistics, E0 all zero): give them with --elements, e.g. H,C,O"
    )


def parse_elements(text: str) -> list[int]:
    """``"H,C,8"`` -> ``[1, 6, 8]`` (symbols or atomic numbers)."""
    from ase.data import atomic_numbers

    out = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        if item.isdigit() and 0 < int(item) < 119:
            out.append(int(item))
        elif item in atomic_numbers and atomic_numbers[item] > 0:
            out.append(atomic_numbers[item])
        else:
            raise ExportError(f"unknown element {item!r} in --elements {text!r}")
    if not out:
        raise ExportError("--elements is empty")
    return sorted(set(out))


def build_metadata(model: PotentialModel, elements: Sequence[int], fmt: Format) -> dict:
    """The JSON metadata stored in an export (see ``docs/engines/export.md``)."""
    from ase.data import chemical_symbols

    dtype = next(iter(model.parameters())).dtype
    meta = {
        "format": core.EXPORT_FORMAT,
        "container": fmt,
        "equiforce_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model_name": model.model_name,
        "model_config": model.config.model_dump(mode="json") if model.config else {},
        "cutoff": model.cutoff,
        "elements": list(elements),
        "element_symbols": [chemical_symbols[z] for z in elements],
        "dtype": str(dtype).removeprefix("torch."),
        "device": "cpu",
        "units": {"length": "Å", "energy": "eV", "force": "eV/Å", "virial": "eV"},
        "neighbor_list": (
            "every pair i != j with |r_j - r_i + shift| < cutoff, in both "
            "directions; shift = Cartesian periodic image vector (S·cell), Å"
        ),
        **core.interface(),
    }
    if fmt == "aoti":
        meta["input_checks"] = (
            "dtypes and shapes are checked only with AOTI_RUNTIME_CHECK_INPUTS=1 "
            "in the environment; elements always"
        )
    return meta


def _load(
    model_or_path: PotentialModel | str | Path, dtype: torch.dtype | None
) -> tuple[PotentialModel, dict]:
    """(model on the CPU in ``dtype``, its training statistics).

    A model object is copied: ``.to()`` and ``.eval()`` would change the caller's.
    """
    if isinstance(model_or_path, PotentialModel):
        model = copy.deepcopy(model_or_path).cpu()
        return (model.to(dtype=dtype) if dtype else model).eval(), {}
    payload = load_checkpoint(model_or_path)
    model = model_from_payload(payload, device="cpu", dtype=dtype)
    return model, dict(payload.get("statistics") or {})


def export_model(
    model_or_path: PotentialModel | str | Path,
    fmt: Format,
    out: str | Path,
    *,
    dtype: torch.dtype | None = None,
    elements: Sequence[int] | None = None,
    notice: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write ``model_or_path`` as a torch-only file.

    Args:
        model_or_path: a model or a model file (checkpoint).
        fmt: ``"torchscript"`` or ``"aoti"``.
        out: the file to write (atomically).
        dtype: compute dtype of the export; default: the model's.
        elements: atomic numbers the export accepts; default: the training
            statistics' elements (:func:`model_elements`).
        notice: receives progress lines (default: stderr).

    Raises:
        ExportError: unknown format, unknown elements.
        CheckpointError: ``model_or_path`` is not an equiforce model file.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, got {fmt!r}")
    say = notice or (lambda line: print(line, file=sys.stderr, flush=True))
    model, statistics = _load(model_or_path, dtype)
    elements = sorted(set(elements)) if elements else model_elements(model, statistics)
    if any(not 0 < z < 119 for z in elements):
        raise ExportError(f"elements must be atomic numbers 1..118, got {elements}")
    meta = build_metadata(model, elements, fmt)
    start = time.perf_counter()
    gm, example = core.trace_model(model, elements)
    traced = time.perf_counter()
    path = Path(out)
    if fmt == "torchscript":
        module = core.to_torchscript(gm, example[0].dtype, elements)
        core.save_torchscript(module, meta, path)
    else:
        a, b = _AOTI_SECONDS
        guess = a + b * len(gm.graph.nodes)
        say(f"equiforce: compiling the AOTInductor library, about {guess:.0f} s")
        core.build_aoti(gm, example, meta, path)
    return ExportResult(path, meta, traced - start, time.perf_counter() - traced)


def read_metadata(path: str | Path) -> dict:
    """The metadata of an export, read from the archive without loading the model.

    Raises:
        ExportError: the file is missing or not an equiforce export.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            hit = [n for n in names if n.endswith(f"extra/{core.METADATA_NAME}")]
            if hit:
                return json.loads(archive.read(hit[0]))
            for name in (n for n in names if n.endswith("metadata.json")):
                entry = json.loads(archive.read(name)).get(core.METADATA_NAME)
                if entry:
                    return json.loads(entry)
    except zipfile.BadZipFile:
        raise ExportError(
            f"{path}: not an equiforce export (not a TorchScript or .pt2 archive)"
        ) from None
    raise ExportError(
        f"{path}: not an equiforce export (a torch archive without "
        f"{core.METADATA_NAME} metadata)"
    )
