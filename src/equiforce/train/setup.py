"""From a config to ready-to-train data and model: read, filter, split, statistics.

Split indices always refer to frames of the training file (after its ``index``
slice), so ``splits.json`` in a run directory reproduces the split exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from equiforce.config import DataConfig, DataSource, EquiforceConfig
from equiforce.config_labels import LABEL_WEIGHTS
from equiforce.data.dataset import (
    FrameStore,
    GraphDataset,
    e0_from_isolated_atoms,
    e0_least_squares,
    e0_table,
    frame_filter_mask,
    random_split,
    read_split_file,
    statistics,
)
from equiforce.models.base import PotentialModel
from equiforce.models.registry import build_model
from equiforce.train.progress import Reporter

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class PreparedData:
    """Datasets and the bookkeeping a run directory records."""

    train: GraphDataset
    valid: GraphDataset
    splits: dict[str, list[int]]
    statistics: dict


def read_source(
    source: DataSource, report: Reporter, needed: Sequence[str] = ()
) -> FrameStore:
    """Read one data file into a :class:`FrameStore` (with progress).

    Prints which labels the frames carry; a label in ``needed`` that some frame
    lacks is a :class:`~equiforce.data.io.DataError` naming the first such frame.
    """
    from equiforce.data.io import label_summary, read

    with report.status(f"reading {source.path}"):
        frames = read(source.path, **source.read_kwargs())
    report.print(label_summary(source.path, frames))
    check_labels(source.path, frames, needed)
    with report.bar(f"packing {len(frames)} frames", len(frames)) as advance:
        return FrameStore.from_atoms(frames, progress=advance)


def needed_labels(config: EquiforceConfig) -> tuple[str, ...]:
    """Labels the loss weights and the config does not declare optional."""
    t = config.training
    weights = {name: getattr(t, w) for name, w in LABEL_WEIGHTS.items()}
    return tuple(
        name
        for name, w in weights.items()
        if w > 0 and name not in config.data.optional_labels
    )


def check_labels(path: str, frames: Sequence, needed: Sequence[str]) -> None:
    """Raise a DataError if a frame lacks a label in ``needed`` (the fault policy)."""
    from equiforce.data.io import DataError, label_counts

    lacking = label_counts(frames)
    for name in needed:
        if lacking[name]:
            n, bad = len(frames), lacking[name]
            raise DataError(
                path,
                bad[0],
                name,
                f"missing in {len(bad)} of {n} frames, but the loss weights it "
                f"(training.{LABEL_WEIGHTS[name]} > 0): add the label, select frames "
                f"with the file's index, set training.{LABEL_WEIGHTS[name]}: 0, or list "
                f"{name} in data.optional_labels to train on the frames that have it",
            )


def filtered_indices(
    store: FrameStore, data: DataConfig, name: str, report: Reporter
) -> np.ndarray:
    """Indices of the frames that pass the data.min_distance/max_force filters."""
    keep, dropped = frame_filter_mask(store, data.min_distance, data.max_force)
    if any(dropped.values()):
        report.print(
            f"{name}: dropped {dropped['min_distance']} frames with "
            f"d < {data.min_distance} Å "
            f"and {dropped['max_force']} with |F| > {data.max_force} eV/Å"
        )
    return np.nonzero(keep)[0]


def make_splits(
    data: DataConfig, train_store: FrameStore, kept: np.ndarray
) -> dict[str, list[int]]:
    """Train/valid indices into the training file (valid empty with a valid file)."""
    if data.split_file:
        split = read_split_file(data.split_file, len(train_store))
        ok = np.isin(split["train"], kept), np.isin(split["valid"], kept)
        return {
            "train": split["train"][ok[0]].tolist(),
            "valid": split["valid"][ok[1]].tolist(),
        }
    n_valid = 0 if data.valid is not None else data.n_valid
    split = random_split(len(kept), data.n_train, n_valid, data.split_seed)
    return {k: kept[v].tolist() for k, v in split.items()}


def compute_e0(data: DataConfig, train_store: FrameStore) -> dict[int, float]:
    """Per-element reference energies from the configured source."""
    if data.e0 == "zero":
        return {int(z): 0.0 for z in np.unique(train_store.numbers)}
    if data.e0 == "isolated_atoms":
        from equiforce.data.io import read

        return e0_from_isolated_atoms(read(data.isolated_atoms))
    return e0_least_squares(train_store)


def with_data_statistics(config: EquiforceConfig, stats: dict) -> EquiforceConfig:
    """``config`` with the model fields the training data fill in.

    So3krates' ``message_normalization='avg_num_neighbors'`` without a value
    takes the training split's mean neighbour count.
    """
    model = config.model.resolved
    if (
        getattr(model, "message_normalization", None) == "avg_num_neighbors"
        and model.avg_num_neighbors is None
    ):
        section = config.model.with_model(avg_num_neighbors=stats["avg_num_neighbors"])
        return config.model_copy(update={"model": section})
    return config


def build_training_model(
    config: EquiforceConfig, stats: dict | None
) -> tuple[PotentialModel, EquiforceConfig]:
    """The freshly initialised model of a run (seeded, in the training dtype).

    Args:
        config: validated config.
        stats: the run's data statistics (E0 and neighbour counts); None: no E0.

    Returns:
        (model, ``config`` with the model fields the statistics filled in).
    """
    t = config.training
    e0 = None
    if stats is not None:
        config = with_data_statistics(config, stats)
        e0 = e0_table({int(z): v for z, v in stats["e0"].items()})
    model = build_model(
        config.model.name,
        None,
        dtype=DTYPES[t.dtype],
        seed=t.seed,
        e0=e0,
        **config.model.resolved.model_dump(),
    )
    return model, config


def prepare_data(
    config: EquiforceConfig,
    cutoff: float,
    report: Reporter,
    splits: dict[str, list[int]] | None = None,
    stats: dict | None = None,
) -> PreparedData:
    """Read, filter and split the data; compute statistics on the training split.

    Args:
        config: validated config.
        cutoff: neighbour cutoff of the model, Å.
        report: progress reporter.
        splits: reuse these indices (resume); default: make them.
        stats: reuse these statistics (resume); default: compute them.
    """
    data = config.data
    dtype = DTYPES[config.training.dtype]
    needed = needed_labels(config)
    store = read_source(data.train, report, needed)
    if splits is None:
        splits = make_splits(
            data, store, filtered_indices(store, data, "train", report)
        )
    train_store = store.subset(splits["train"])
    if data.valid is not None:
        vstore = read_source(data.valid, report, needed)
        valid_store = vstore.subset(filtered_indices(vstore, data, "valid", report))
    else:
        valid_store = store.subset(splits["valid"])
    if not len(valid_store):
        raise ValueError("no validation frames: set data.n_valid > 0 or data.valid")
    lr_cutoff = getattr(config.model.resolved, "long_range_cutoff", None)  # SO3LR
    train = GraphDataset(train_store, cutoff, dtype, lr_cutoff)
    valid = GraphDataset(valid_store, cutoff, dtype, lr_cutoff)
    with report.bar("building neighbour lists", len(train) + len(valid)) as advance:
        train.build_all(advance)
        valid.build_all(advance)
    if stats is None:
        stats = statistics(train, compute_e0(data, train_store))
    return PreparedData(train, valid, splits, stats)


def eval_batches(dataset: GraphDataset, batch_size: int) -> Callable:
    """A function returning an iterator of consecutive batches of ``dataset``."""

    def batches():
        for start in range(0, len(dataset), batch_size):
            yield dataset.batch(range(start, min(start + batch_size, len(dataset))))

    return batches
