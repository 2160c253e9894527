"""``equiforce train --committee K``: seeds, layout, resume; a multi-head run trains."""

import json
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from _train_helpers import make_tiny_config  # noqa: E402

from equiforce.cli import main  # noqa: E402
from equiforce.uncertainty import Committee, HeadEnsemble, load_ensemble  # noqa: E402


def _write(tmp_path, **model_overrides) -> Path:
    raw = make_tiny_config(max_steps=10, valid_interval=5)
    raw["model"]["overrides"].update(model_overrides)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_committee_members_have_own_seeds_and_resume(tmp_path):
    # fails if members share a seed (identical weights) or if a rerun retrains
    cfg = _write(tmp_path)
    run = tmp_path / "run"
    argv = ["train", str(cfg), "--committee", "2", "--run-dir", str(run), "--quiet"]
    assert main(argv) == 0
    seeds = [
        yaml.safe_load((run / f"member_{k}/config.resolved.yaml").read_text())[
            "training"
        ]["seed"]
        for k in range(2)
    ]
    assert seeds == [0, 1]
    record = json.loads((run / "committee.json").read_text())
    assert record["members"] == ["member_0/best.pt", "member_1/best.pt"]
    c = load_ensemble(run)
    assert isinstance(c, Committee)
    w0, w1 = (m.embedding.weight for m in c.members)
    assert not torch.equal(w0, w1)
    stamp = (run / "member_1/best.pt").stat().st_mtime_ns
    assert main(argv) == 0  # finished members are kept, not retrained
    assert (run / "member_1/best.pt").stat().st_mtime_ns == stamp
    other = ["train", str(cfg), "--committee", "3", "--run-dir", str(run), "--quiet"]
    assert main(other) == 2  # another size into the same folder is refused
    # another model section into the same folder is refused before anything is
    # trained (fails if committee.json does not record the config): the finished
    # members would otherwise sit beside members of a different model
    changed = ["train", str(_write(tmp_path, readout_heads=2)), "--committee", "2"]
    assert main([*changed, "--run-dir", str(run), "--quiet"]) == 2
    assert (run / "member_1/best.pt").stat().st_mtime_ns == stamp


def test_multi_head_run_trains_and_loads_as_heads(tmp_path):
    cfg = _write(tmp_path, readout_heads=3)
    run = tmp_path / "heads"
    assert main(["train", str(cfg), "--run-dir", str(run), "--quiet"]) == 0
    assert isinstance(load_ensemble(run / "best.pt"), HeadEnsemble)
