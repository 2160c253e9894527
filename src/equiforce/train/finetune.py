"""Fine-tuning: the starting model of a run with ``model.init_from``, and freezing.

A run with ``model.init_from`` starts from that file's weights (its architecture
was put into the config by :func:`equiforce.config_finetune.resolve_init_from`):

1. the training data's elements are checked against those the file knows
   (:func:`known_elements`); missing ones are an error naming them unless
   ``model.add_elements``, which gives their rows of every per-element table
   (embeddings, per-element scale/shift, charge/Hirshfeld tables) the values of
   a freshly built model of the same architecture with ``training.seed``;
2. the per-element reference energies E0 are kept (``model.e0: keep``; new
   elements are fitted with the others fixed) or refitted (``refit``): least
   squares over the training split of E_ref − (model energy without E0), so the
   starting model has no per-element energy offset on the training data. For an
   untrained model (whose network energy is zero) this is a from-scratch run's
   ``data.e0: least_squares``.

The result is written to the run directory as ``init.pt``; every process and a
resumed run rebuild from the run directory, never from ``init_from`` again.
``model.freeze`` (parameter-name globs) sets ``requires_grad=False``; the
optimiser only takes trainable parameters (:func:`equiforce.train.optimizer.make_optimizer`).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols

from equiforce.config import ConfigError, EquiforceConfig
from equiforce.config_finetune import locate_model
from equiforce.data.dataset import FrameStore, GraphDataset
from equiforce.models.base import NUM_ELEMENTS, PotentialModel
from equiforce.models.checkpoint import load_checkpoint
from equiforce.models.registry import build_model, model_from_payload
from equiforce.train.progress import Reporter
from equiforce.train.setup import DTYPES, PreparedData, eval_batches


def known_elements(payload: dict, model: PotentialModel) -> frozenset[int] | None:
    """Atomic numbers a model file was trained on; None when it cannot tell.

    In order: the E0 elements its training run recorded (``statistics['e0']``,
    one per element of the data), the elements with a nonzero E0, the elements
    whose learned per-element scale moved from its initial 1 (SO3LR's released
    file: H, C, N, O, F, P, S, Cl; an element absent from training gets no
    gradient there).
    """
    recorded = (payload.get("statistics") or {}).get("e0") or {}
    if recorded:
        return frozenset(int(z) for z in recorded)
    known = model.known_elements()
    if known is not None:
        return known
    scale = getattr(model, "scale", None)
    if isinstance(scale, torch.Tensor):
        moved = (scale.detach().cpu() != 1).nonzero().flatten().tolist()
        return frozenset(int(z) for z in moved) or None
    return None


def element_names(zs) -> str:
    """``'Br (35), I (53)'``."""
    return ", ".join(f"{chemical_symbols[z]} ({z})" for z in sorted(zs))


def per_element_tables(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers indexed by Z (first dim 119), E0 aside."""
    state = model.state_dict()
    return [
        k
        for k, v in state.items()
        if k != "e0" and v.dim() >= 1 and v.shape[0] == NUM_ELEMENTS
    ]


@torch.no_grad()
def add_element_rows(
    model: PotentialModel, config: EquiforceConfig, elements: list[int]
) -> None:
    """Give ``elements`` the per-element rows of a freshly built model (seeded)."""
    t = config.training
    fresh = build_model(
        config.model.name,
        None,
        dtype=DTYPES[t.dtype],
        seed=t.seed,
        **config.model.resolved.model_dump(),
    ).state_dict()
    state = model.state_dict()
    rows = torch.tensor(elements)
    for name in per_element_tables(model):
        state[name][rows] = fresh[name][rows].to(state[name])
    model.clear_inference_caches()


@torch.no_grad()
def network_energies(model: PotentialModel, dataset: GraphDataset) -> np.ndarray:
    """(n_frames,) float64 model energies without E0, eV."""
    model.eval()
    out = []
    for batch in eval_batches(dataset, 16)():
        pred = model(batch, compute_forces=False)
        e0 = model.e0.to(batch.positions.device)[batch.atomic_numbers]  # (n_atoms,)
        per_graph = torch.zeros_like(pred["energy"]).index_add_(
            0, batch.graph_index, e0
        )
        out.append((pred["energy"] - per_graph).cpu().numpy())
    return np.concatenate(out)


def fit_e0(
    store: FrameStore, residual: np.ndarray, elements: list[int]
) -> dict[int, float]:
    """E0 of ``elements`` minimising Σ_frames (residual − Σ_i E0[Z_i])².

    Args:
        store: the training frames.
        residual: (n_frames,) energy each frame leaves to these E0, eV (NaN: no label).
        elements: atomic numbers to fit (atoms of other elements are not counted).
    """
    ok = np.isfinite(residual)
    if not ok.any():
        raise ConfigError(
            ["model.e0: fitting E0 needs energy labels; no training frame has one"]
        )
    counts = np.zeros((len(store), len(elements)))
    for col, z in enumerate(elements):
        np.add.at(counts[:, col], store.frame_index[store.numbers == z], 1.0)
    sol, *_ = np.linalg.lstsq(counts[ok], residual[ok], rcond=None)
    return {int(z): float(e) for z, e in zip(elements, sol, strict=True)}


def initial_model(
    config: EquiforceConfig, data: PreparedData, report: Reporter
) -> tuple[PotentialModel, dict]:
    """The starting model of a fine-tuning run and its statistics.

    Args:
        config: validated config with ``model.init_from`` resolved.
        data: the run's data (E0 are fitted on ``data.train``).
        report: progress output.

    Returns:
        (model in the training dtype, ``data.statistics`` with ``e0`` replaced by
        the model's E0 of every element it knows after the run and a
        ``finetune`` record).

    Raises:
        ConfigError: elements missing from the file without ``model.add_elements``.
    """
    section = config.model
    path = locate_model(section.init_from, Path.cwd())  # absolute once resolved
    payload = load_checkpoint(path)
    model = model_from_payload(payload, dtype=DTYPES[config.training.dtype])
    known = known_elements(payload, model)
    stores = [data.train.store, data.valid.store]
    present = sorted({int(z) for s in stores for z in np.unique(s.numbers)})
    missing = [] if known is None else sorted(set(present) - known)
    if known is None:
        report.print(
            f"model.init_from {section.init_from}: the file does not say which "
            "elements it was trained on; all are accepted"
        )
    if missing and not section.add_elements:
        raise ConfigError(
            [
                f"model.add_elements: the training data have {element_names(missing)}, "
                f"which model.init_from {section.init_from} was not trained on (it "
                f"knows {element_names(known)}); set model.add_elements: true to "
                "add them with freshly initialised per-element rows"
            ]
        )
    if missing:
        add_element_rows(model, config, missing)
        report.print(f"added elements {element_names(missing)} (fresh rows)")
    train_store = data.train.store
    network = network_energies(model, data.train)
    e0 = model.e0.detach().clone()  # (119,) float64
    table = e0.numpy()
    if section.e0 == "refit":
        fitted = fit_e0(
            train_store, train_store.energy - network, present_in(train_store)
        )
    elif missing:  # keep: fit only the new elements, the file's E0 fixed
        fixed = np.bincount(
            train_store.frame_index,
            weights=table[train_store.numbers],
            minlength=len(train_store),
        )
        new = [z for z in missing if z in present_in(train_store)]
        fitted = fit_e0(train_store, train_store.energy - network - fixed, new)
    else:
        fitted = {}
    for z, v in fitted.items():
        e0[z] = v
    model.e0.copy_(e0)
    elements = sorted(set(present) | (known or set()))
    stats = dict(data.statistics)
    stats["e0"] = {str(z): float(e0[z]) for z in elements}
    stats["finetune"] = {
        "init_from": section.init_from,
        "e0": section.e0,
        "added_elements": missing,
        "e0_fitted": {str(z): v for z, v in fitted.items()},
    }
    return model, stats


def present_in(store: FrameStore) -> list[int]:
    """Sorted atomic numbers in ``store``."""
    return sorted(int(z) for z in np.unique(store.numbers))


def check_freeze(model: torch.nn.Module, patterns: tuple[str, ...]) -> None:
    """Raise a ConfigError naming a pattern of ``model.freeze`` that matches nothing."""
    names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            examples = ", ".join(names[:4])
            raise ConfigError(
                [
                    f"model.freeze: {pattern!r} matches no parameter (names look "
                    f"like {examples}, ...)"
                ]
            )


def freeze(model: torch.nn.Module, patterns: tuple[str, ...], report: Reporter):
    """Set ``requires_grad=False`` on parameters matching ``patterns``; print counts.

    Args:
        model: the model to train.
        patterns: ``fnmatch`` globs on parameter names, e.g. ``layers.0.*``.
        report: prints how many parameters stay trainable.

    Returns:
        ``model``.

    Raises:
        ConfigError: a pattern matches no parameter (names the pattern and
            examples of names).
    """
    if not patterns:
        return model
    check_freeze(model, patterns)
    frozen = trainable = 0
    for name, p in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pat) for pat in patterns):
            p.requires_grad_(False)
            frozen += p.numel()
        else:
            trainable += p.numel()
    report.print(
        f"model.freeze: {trainable:,} of {trainable + frozen:,} parameters trainable "
        f"({frozen:,} frozen)"
    )
    return model
