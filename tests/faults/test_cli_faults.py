"""The fault policy through the command line, one test per kind of failure.

Every user-facing error names the file, the frame (as numbered in the file) and
the field and exits 2; nothing already written is lost (docs/conventions.md).
"""

import json

import numpy as np
import pytest
import torch
from fault_helpers import DATA, ethanol_frames, train_yaml, write_xyz

from equiforce.cli import main


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


# ------------------------------------------------------------ outputs mixed
def md_args(model_file, structure, out, *extra):
    return (
        "md", "--model", model_file, "--structure", structure, "--steps", 4,
        "--output-interval", 2, "--out", out, "--no-progress", *extra,
    )  # fmt: skip


def test_md_refuses_a_folder_holding_another_run(capsys, tmp_path, model_file):
    # without the refusal a second run appended to the first one's trajectory and
    # thermo.csv and replaced md_state.pt, so the first could not be resumed
    xyz = write_xyz(tmp_path / "e.xyz", ethanol_frames(1))
    out = tmp_path / "md"
    assert run(capsys, *md_args(model_file, xyz, out))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = run(capsys, *md_args(model_file, xyz, out))
    assert code == 2 and "--resume" in err and "--overwrite" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert run(capsys, *md_args(model_file, xyz, out, "--overwrite"))[0] == 0


def test_md_resume_from_a_corrupt_state_is_a_message(capsys, tmp_path, model_file):
    xyz = write_xyz(tmp_path / "e.xyz", ethanol_frames(1))
    out = tmp_path / "md"
    assert run(capsys, *md_args(model_file, xyz, out))[0] == 0
    state = out / "md_state.pt"
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2 :] = b"\0" * (len(raw) - len(raw) // 2)
    state.write_bytes(raw)
    trajectory = (out / "trajectory.xyz").read_bytes()
    code, err = run(capsys, *md_args(model_file, xyz, out, "--resume", "--steps", 8))
    assert code == 2 and "md_state.pt: cannot resume" in err, err
    assert (out / "trajectory.xyz").read_bytes() == trajectory


# ------------------------------------------------- labels missing or wrong
def test_training_without_forces_but_a_force_weight_is_refused(capsys, tmp_path):
    frames = ethanol_frames(8)
    for a in frames:
        del a.calc.results["forces"]
    data = write_xyz(tmp_path / "no_forces.xyz", frames)
    code, err = run(
        capsys, "train", train_yaml(tmp_path, data), "--run-dir", tmp_path / "r"
    )
    assert code == 2 and "frame 0: forces: missing in 8 of 8 frames" in err, err
    assert "optional_labels" in err and "forces_weight" in err


def test_a_frame_without_energy_is_named_not_skipped(capsys, tmp_path, model_file):
    frames = ethanol_frames(12)
    del frames[7].calc.results["energy"]
    data = write_xyz(tmp_path / "gap.xyz", frames)
    code, err = run(
        capsys, "train", train_yaml(tmp_path, data), "--run-dir", tmp_path / "r"
    )
    assert code == 2 and "gap.xyz: frame 7: energy: missing in 1 of 12" in err, err
    # eval reports what its errors average over instead of the full count
    code, _ = run(capsys, "eval", "--model", model_file, "--data", data,
                  "--out", tmp_path / "ev", "--quiet")  # fmt: skip
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert code == 0 and metrics["n_frames"] == 12
    assert metrics["n_labelled"] == {"energy": 11, "forces": 12, "stress": 0}


def test_optional_label_trains_on_the_frames_that_have_it(capsys, tmp_path):
    frames = ethanol_frames(12)
    del frames[7].calc.results["energy"]
    data = write_xyz(tmp_path / "gap.xyz", frames)
    config = train_yaml(tmp_path, data, max_steps=2, valid_interval=2)
    text = config.read_text().replace(
        "n_valid: 2", "n_valid: 2\n  optional_labels: [energy]"
    )
    config.write_text(text)
    code, err = run(capsys, "train", config, "--run-dir", tmp_path / "r", "--quiet")
    assert code == 0, err


def test_npz_counts_must_match_the_frames(capsys, tmp_path, model_file):
    d = np.load(DATA / "rmd17_ethanol_test_01.npz")
    bad = tmp_path / "twice.npz"
    np.savez(bad, coords=d["coords"][:10], nuclear_charges=d["nuclear_charges"],
             energies=d["energies"][:20], forces=d["forces"][:10])  # fmt: skip
    code, err = run(capsys, "eval", "--model", model_file, "--data", bad,
                    "--out", tmp_path / "ev")  # fmt: skip
    # a reshape read every other value of the 20 energies as the 10 frames' ones
    assert code == 2 and "twice.npz: energy (key 'energies'): shape (20,)" in err, err


# ------------------------------------------------------------ frame numbers
def test_errors_name_the_frame_as_numbered_in_the_file(capsys, tmp_path, model_file):
    frames = ethanol_frames(10)
    frames[7].positions[3] = np.nan
    data = write_xyz(tmp_path / "nan.xyz", frames)
    code, err = run(capsys, "eval", "--model", model_file, "--data", data,
                    "--index", "3:", "--out", tmp_path / "ev")  # fmt: skip
    assert code == 2 and "nan.xyz: frame 7: positions" in err, err  # not frame 4
    code, err = run(capsys, "eval", "--model", model_file, "--data", data,
                    "--index", "50", "--out", tmp_path / "ev")  # fmt: skip
    assert code == 2 and "index: frame 50 is out of range: the file has 10" in err


# ------------------------------------------ messages instead of tracebacks
def test_a_bit_flipped_npz_is_a_message(capsys, tmp_path, model_file):
    raw = bytearray((DATA / "rmd17_ethanol_test_01.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "flip.npz"
    bad.write_bytes(raw)
    code, err = run(capsys, "eval", "--model", model_file, "--data", bad,
                    "--out", tmp_path / "ev")  # fmt: skip
    assert code == 2 and "flip.npz" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format_version", "one"),
        ("model_name", 7),
        ("model_config", [1, 2]),
        ("state_dict", {"w": "not a tensor"}),
        ("dtype", "float16"),
    ],
)
def test_a_bad_checkpoint_header_field_is_named(
    capsys, tmp_path, model_file, field, value
):
    payload = torch.load(model_file, weights_only=True)
    payload[field] = value
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    xyz = write_xyz(tmp_path / "e.xyz", ethanol_frames(2))
    code, err = run(
        capsys, "eval", "--model", bad, "--data", xyz, "--out", tmp_path / "ev"
    )
    assert code == 2 and f"bad.pt: {field}: expected" in err, err


def test_an_empty_checkpoint_is_a_message(capsys, tmp_path):
    # the handler itself raised IndexError on the empty exception text
    empty = tmp_path / "empty.pt"
    empty.touch()
    xyz = write_xyz(tmp_path / "e.xyz", ethanol_frames(1))
    code, err = run(
        capsys, "md", "--model", empty, "--structure", xyz, "--out", tmp_path / "md"
    )
    assert (
        code == 2 and "empty.pt: not a readable equiforce checkpoint (empty file" in err
    )


def test_a_binary_file_given_as_yaml_is_a_message(capsys, tmp_path):
    binary = tmp_path / "model.yaml"
    binary.write_bytes(bytes(range(256)))
    code, err = run(capsys, "train", binary, "--run-dir", tmp_path / "r")
    assert code == 2 and "model.yaml: not a YAML text file" in err, err


# ------------------------------------------------------- diverging training
def test_training_stops_on_a_non_finite_loss(capsys, tmp_path):
    data = write_xyz(tmp_path / "e.xyz", ethanol_frames(12))
    config = train_yaml(tmp_path, data, lr=1e8, max_steps=400, valid_interval=5,
                        nonfinite_patience=3)  # fmt: skip
    code, err = run(capsys, "train", config, "--run-dir", tmp_path / "r", "--quiet")
    assert code == 2 and "training.lr: the loss was non-finite for 3" in err, err
    final = json.loads((tmp_path / "r" / "final_metrics.json").read_text())
    assert final["stop"].startswith("diverged") and final["final_step"] < 400
    for name in ("best.pt", "last.pt"):  # whatever was kept holds finite weights
        path = tmp_path / "r" / name
        if path.exists():
            state = torch.load(path, weights_only=True)["state_dict"]
            assert all(torch.isfinite(v).all() for v in state.values())
