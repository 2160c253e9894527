"""Fine-tuning from a model file: ``model.init_from``, ``freeze``, ``e0``, ``add_elements``.

The starting file is a tiny float64 So3krates with random (non-zero) weights and
per-element scale/shift, built with another seed than the run's, so that a run
ignoring ``init_from`` starts visibly elsewhere.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _train_helpers import ETHANOL, TINY_MODEL, make_tiny_config

from equiforce.config import ConfigError, load_config
from equiforce.models.checkpoint import load_checkpoint, save_model
from equiforce.models.registry import build_model, load_model, pretrained_path
from equiforce.train import trainer as trainer_module
from equiforce.train.finetune import known_elements
from equiforce.train.launch import resume, train

FILE_MODEL = {
    **TINY_MODEL,
    "zero_init_readout": False,
    "per_element_scale_shift": True,
}
#: file E0 (eV): H and C known, and O too unless a test drops it
FILE_E0 = {1: -13.6, 6: -1029.0, 8: -2041.0}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def _file_model(e0: dict[int, float]):
    model = build_model("so3krates", dtype=torch.float64, seed=7, e0=e0, **FILE_MODEL)
    with torch.no_grad():  # per-element scale moved from 1, as after training
        model.scale[list(e0)] += 0.1
    return model


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "start.pt"
    save_model(_file_model(FILE_E0), path)
    return path


def _raw(init_from, steps=4, **model):
    raw = make_tiny_config(max_steps=steps, valid_interval=2, dtype="float64")
    raw["model"] = {"init_from": str(init_from), **model}
    return raw


def _train(write_config, tmp_path, raw, name="run"):
    config = load_config(write_config(raw))
    train(config, tmp_path / name, progress=False)
    return tmp_path / name


def test_first_step_predicts_like_the_file(tmp_path, write_config, model_file):
    """Catches: the run starting from fresh weights, or from a changed E0 (keep)."""
    seen = []
    original = trainer_module.Trainer._gradients

    def spy(self, indices):
        if self.step == 0:
            batch = self.data.train.batch(indices)
            seen.append((batch, self.model(batch, create_graph=False)))
        return original(self, indices)

    trainer_module.Trainer._gradients = spy
    try:
        _train(write_config, tmp_path, _raw(model_file, steps=1, e0="keep"))
    finally:
        trainer_module.Trainer._gradients = original
    batch, got = seen[0]
    want = load_model(model_file, dtype=torch.float64)(batch, create_graph=False)
    torch.testing.assert_close(got["energy"], want["energy"], rtol=1e-12, atol=0)
    torch.testing.assert_close(got["forces"], want["forces"], rtol=1e-10, atol=1e-12)
    fresh = build_model("so3krates", dtype=torch.float64, seed=0, **FILE_MODEL)
    assert not torch.allclose(fresh(batch)["forces"], want["forces"])


def test_frozen_parameters_stay_and_the_others_move(tmp_path, write_config, model_file):
    """Catches: frozen weights updated (by Adam, EMA or weight decay), or nothing trained."""
    raw = _raw(model_file, steps=5, freeze=["embedding.*", "layers.0.filter_*"])
    run = _train(write_config, tmp_path, raw)
    start = load_checkpoint(model_file)["state_dict"]
    state = load_checkpoint(run / "last.pt")
    moved = state["training_state"]["model"]
    frozen = [k for k in start if k == "embedding.weight" or ".filter_" in k]
    assert len(frozen) > 4
    for k in frozen:  # raw weights and the EMA written to last.pt
        assert torch.equal(moved[k], start[k]), k
        assert torch.equal(state["state_dict"][k], start[k]), k
    for k in ("readout.0.weight", "layers.0.q1.weight", "scale"):
        assert not torch.equal(moved[k], start[k]), k
    n_opt = len(state["training_state"]["optimizer"]["param_groups"][0]["params"])
    n_all = len(dict(load_model(model_file).named_parameters()))
    assert n_opt == n_all - len(frozen)


def test_freeze_pattern_matching_nothing_is_an_error(
    tmp_path, write_config, model_file
):
    raw = _raw(model_file, freeze=["embeding.*"])
    with pytest.raises(ConfigError, match=r"model.freeze: 'embeding\.\*'"):
        _train(write_config, tmp_path, raw)
    assert not (tmp_path / "run").exists()  # refused before writing the run


def _composition(store):
    """(n_frames, 3) counts of H, C, O per frame."""
    return np.stack(
        [
            np.bincount(store.frame_index[store.numbers == z], minlength=len(store))
            for z in (1, 6, 8)
        ],
        axis=1,
    )


def test_e0_keep_and_refit(tmp_path, write_config, model_file):
    """keep: the file's E0 exactly; refit: least squares of E_ref − network energy.

    Catches: refit against the raw energies (ignoring the model's prediction), the
    file's E0 changed under keep, or no refit at all.
    """
    from equiforce.data.dataset import FrameStore, GraphDataset
    from equiforce.data.io import read as read_frames

    keep = _train(write_config, tmp_path, _raw(model_file, steps=1, e0="keep"), "keep")
    refit = _train(
        write_config, tmp_path, _raw(model_file, steps=1, e0="refit"), "refit"
    )
    file_e0 = load_checkpoint(model_file)["state_dict"]["e0"]
    assert torch.equal(load_checkpoint(keep / "init.pt")["state_dict"]["e0"], file_e0)

    e0 = load_checkpoint(refit / "init.pt")["state_dict"]["e0"]
    assert not torch.allclose(e0[[1, 6, 8]], file_e0[[1, 6, 8]])
    # the refitted start has zero mean energy error on the training split
    splits = json.loads((refit / "splits.json").read_text())
    frames = read_frames(str(ETHANOL), energy_unit="kcal/mol", index="0:40")
    store = FrameStore.from_atoms(frames).subset(splits["train"])
    ds = GraphDataset(store, 5.0, torch.float64)
    start = load_model(refit / "init.pt", dtype=torch.float64)
    pred = start(ds.batch(range(len(ds))), compute_forces=False)["energy"].numpy()
    assert abs(np.mean(store.energy - pred)) < 1e-6 * abs(store.energy).mean()
    # and E0 is the minimum-norm least-squares solution (one composition here)
    network = pred - _composition(store) @ e0[[1, 6, 8]].numpy()
    sol, *_ = np.linalg.lstsq(
        _composition(store).astype(float), store.energy - network, rcond=None
    )
    np.testing.assert_allclose(e0[[1, 6, 8]].numpy(), sol, rtol=1e-9)
    assert load_checkpoint(refit / "init.pt")["statistics"]["finetune"]["e0"] == "refit"


def test_missing_element_errors_or_is_added(tmp_path, write_config):
    """Catches: silently training an element the file never saw, or wrong fresh rows."""
    path = tmp_path / "no_oxygen.pt"
    save_model(_file_model({1: -13.6, 6: -1029.0}), path)  # knows H and C only
    with pytest.raises(ConfigError, match=r"model.add_elements: .*O \(8\)"):
        _train(write_config, tmp_path, _raw(path, steps=1))

    raw = _raw(path, steps=1, e0="keep", add_elements=True)
    run = _train(write_config, tmp_path, raw)
    start = load_checkpoint(path)["state_dict"]
    init = load_checkpoint(run / "init.pt")["state_dict"]
    fresh = build_model(
        "so3krates", dtype=torch.float64, seed=0, **FILE_MODEL
    ).state_dict()
    for name in ("embedding.weight", "scale", "shift"):
        torch.testing.assert_close(init[name][8], fresh[name][8], rtol=0, atol=0)
        torch.testing.assert_close(
            init[name][[1, 6]], start[name][[1, 6]], rtol=0, atol=0
        )
    assert torch.equal(init["e0"][[1, 6]], start["e0"][[1, 6]])  # keep: file's E0
    assert init["e0"][8] < -100  # O fitted from the energies (~ -2,000 eV)
    stats = load_checkpoint(run / "init.pt")["statistics"]
    assert stats["finetune"]["added_elements"] == [8]
    assert set(stats["e0"]) == {"1", "6", "8"}


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from equiforce.config import load_config
    from equiforce.train import launch
    from equiforce.train import trainer as T

    original = T.Trainer.train_step
    def step_then_die(self, *args):
        if self.step == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args)
    T.Trainer.train_step = step_then_die
    launch.train(load_config(sys.argv[1]), sys.argv[2], progress=False)
    """
)


def test_resume_after_kill_continues_without_the_file(
    tmp_path, write_config, model_file
):
    """Catches: resume re-reading init_from (here deleted) or restarting from it."""
    raw = _raw(model_file, steps=12, freeze=["embedding.*"])
    raw["training"] |= {"checkpoint_interval": 4, "valid_interval": 4}
    path = write_config(raw)
    ref = tmp_path / "ref"
    train(load_config(path), ref, progress=False)
    killed = tmp_path / "killed"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(path), str(killed), "6"],
        env=dict(os.environ, PYTHONHASHSEED="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint(killed / "last.pt")["training_state"]["step"] == 4
    model_file.unlink()  # init_from is read at the first start only
    resume(killed, progress=False)
    a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(killed / "last.pt")
    assert b["training_state"]["step"] == 12
    for k, v in a["training_state"]["model"].items():
        torch.testing.assert_close(
            b["training_state"]["model"][k], v, rtol=1e-9, atol=1e-12
        )


def test_name_or_architecture_mismatch_is_a_config_error(
    tmp_path, write_config, model_file
):
    with pytest.raises(ConfigError, match=r"model.name: 'schnet'.*'so3krates'"):
        load_config(write_config(_raw(model_file, name="schnet")))
    with pytest.raises(ConfigError, match=r"model.overrides.num_features: 32 here.*16"):
        load_config(write_config(_raw(model_file, overrides={"num_features": 32})))
    # agreeing keys are fine, and the section holds the file's architecture
    ok = load_config(
        write_config(_raw(model_file, name="so3krates", overrides={"degrees": [1, 2]}))
    )
    assert (
        ok.model.resolved.num_features == 16
        and ok.model.resolved.per_element_scale_shift
    )
    with pytest.raises(ConfigError, match="model.init_from: .*does not exist"):
        load_config(write_config(_raw(tmp_path / "nope.pt")))
    raw = make_tiny_config()
    raw["model"]["freeze"] = ["embedding.*"]
    with pytest.raises(ConfigError, match="needs model.init_from"):
        load_config(write_config(raw))


def test_so3lr_knows_its_training_elements():
    """SO3LR's released file: H, C, N, O, F, P, S, Cl (per-element scales moved)."""
    payload = load_checkpoint(pretrained_path("so3lr"))
    model = load_model("so3lr")
    assert known_elements(payload, model) == {1, 6, 7, 8, 9, 15, 16, 17}


def test_so3lr_fine_tunes_from_the_pretrained_file(tmp_path, write_config):
    """SO3LR (long-range pairs in the batches) starts at the pretrained forces."""
    seen = []
    original = trainer_module.Trainer._gradients

    def spy(self, indices):
        if self.step == 0:
            batch = self.data.train.batch(indices)
            seen.append((batch, self.model(batch, create_graph=False)))
        return original(self, indices)

    raw = _raw("so3lr", steps=2, freeze=["layers.0.*", "embedding.*"])
    raw["training"] |= {"batch_size": 2, "dtype": "float32"}
    raw["data"] |= {"n_train": 6, "n_valid": 2}
    raw["data"]["train"]["index"] = "0:8"
    trainer_module.Trainer._gradients = spy
    try:
        run = _train(write_config, tmp_path, raw)
    finally:
        trainer_module.Trainer._gradients = original
    batch, got = seen[0]
    assert batch.lr_edge_index is not None
    want = load_model("so3lr")(batch, create_graph=False)
    torch.testing.assert_close(got["forces"], want["forces"], rtol=1e-5, atol=1e-5)
    # refit E0 puts the start on the DFT energies (so3lr's own E0 are zero)
    assert load_checkpoint(run / "init.pt")["state_dict"]["e0"][6] != 0
    assert load_model(run / "best.pt").model_name == "so3lr"
