"""Train a committee: K runs of one config with seeds ``seed + k``, one after another.

``equiforce train config.yaml --committee K`` writes ``<run_dir>/member_<k>/``
(each an ordinary run directory: ``best.pt``, ``last.pt``, ``metrics.csv``, ...)
and ``<run_dir>/committee.json``. Members differ in their initialisation and
data order (``training.seed``) and share the train/validation split
(``data.split_seed``), so their validation errors compare. The same command
run again continues where it stopped: finished members are kept, an interrupted
one resumes from its ``last.pt``, the rest start. Load the result with
:func:`equiforce.uncertainty.load_ensemble` (``equiforce eval/md --model
<run_dir>``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from equiforce.atomic import atomic_write_text
from equiforce.config import EquiforceConfig
from equiforce.train.distributed import INTERRUPTED
from equiforce.train.launch import RunDirError, resume, train
from equiforce.train.rundir import RunDir
from equiforce.uncertainty.load import COMMITTEE_FILE


def config_fingerprint(config: EquiforceConfig) -> str:
    """SHA-256 of the data and model sections: what every member must share.

    The training section is left out on purpose: a committee may be continued
    with a longer budget or another learning rate, and the seeds differ per
    member anyway. A changed model or dataset, however, would leave members of
    two different committees side by side in one directory.
    """
    # defaults left out: a new optional key in a later version changes nothing
    shared = config.model_dump(
        mode="json", include={"data", "model"}, exclude_defaults=True
    )
    text = json.dumps(shared, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def member_config(config: EquiforceConfig, k: int) -> EquiforceConfig:
    """``config`` with ``training.seed`` shifted by ``k`` (member k's config)."""
    t = config.training
    return config.model_copy(
        update={"training": t.model_copy(update={"seed": t.seed + k})}
    )


def _state(run: RunDir) -> str:
    """``done``, ``interrupted`` (resumable), ``started`` (nothing trained) or ``new``."""
    if run.final_metrics.exists():
        stop = json.loads(run.final_metrics.read_text()).get("stop")
        if stop != INTERRUPTED:
            return "done"
    if run.last.exists() and run.config.exists():
        return "interrupted"
    return "started" if run.path.exists() else "new"


def train_committee(
    config: EquiforceConfig,
    run_dir: str | Path,
    n_members: int,
    progress: bool = True,
) -> tuple[list[Path], bool]:
    """Train (or continue) a committee of ``n_members`` runs in ``run_dir``.

    Args:
        config: the shared config; member k trains with ``training.seed + k``.
        run_dir: committee folder (``member_<k>/`` inside).
        n_members: committee size K ≥ 2.
        progress: show progress.

    Returns:
        (``best.pt`` of every finished member, whether a member was interrupted:
        then the same call continues it).

    Raises:
        RunDirError: ``run_dir`` holds a committee of another size or seed, or
            one trained with another data or model section.
    """
    if n_members < 2:
        raise ValueError(
            f"--committee: a committee needs K ≥ 2 members, got {n_members}"
        )
    root = Path(run_dir)
    record = {
        "n_members": n_members,
        "seed": config.training.seed,
        "config": config_fingerprint(config),
    }
    _check_record(root, record)
    root.mkdir(parents=True, exist_ok=True)
    members = [f"member_{k}" for k in range(n_members)]
    atomic_write_text(
        root / COMMITTEE_FILE,
        json.dumps(record | {"members": [f"{m}/best.pt" for m in members]}, indent=1)
        + "\n",
    )
    bests: list[Path] = []
    for k, name in enumerate(members):
        run = RunDir(root / name)
        state = _state(run)
        if state == "done":
            bests.append(run.best)
            continue
        if state == "interrupted":
            best = resume(run.path, progress=progress)
        else:
            if state == "started":  # stopped before its first last.pt: start again
                shutil.rmtree(run.path)
            best = train(member_config(config, k), run.path, progress=progress)
        if _state(run) != "done":
            return bests, True
        bests.append(Path(best))
    return bests, False


def _check_record(root: Path, record: dict) -> None:
    path = root / COMMITTEE_FILE
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if old.get("config", record["config"]) != record["config"]:
        raise RunDirError(
            f"{path}: holds a committee trained with another data or model section "
            f"(fingerprint {old['config']}, this config {record['config']}); its "
            "finished members would be mixed with new ones: choose another --run-dir"
        )
    if {k: old.get(k) for k in ("n_members", "seed")} != {
        k: record[k] for k in ("n_members", "seed")
    }:
        raise RunDirError(
            f"{path}: holds a committee of {old.get('n_members')} members from seed "
            f"{old.get('seed')}, not {record['n_members']} from seed "
            f"{record['seed']}; choose another --run-dir"
        )
