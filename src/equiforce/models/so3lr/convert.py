"""Convert so3krates-torch's pretrained SO3LR into an equiforce model file.

so3krates-torch (MIT, https://github.com/tohenkes/So3krates-torch) ships the
released SO3LR weights as a pickled module (``so3krates_torch/pretrained/so3lr/
so3lr.model``). This converter unpickles it (``weights_only=False``: it runs code
from the installed so3krates-torch package, so only use it on that package's own
file), reads its hyperparameters into an :class:`SO3LRConfig`, maps every tensor
onto :class:`SO3LR`'s parameters and writes a plain equiforce model file (config
+ state_dict, loadable with ``torch.load(weights_only=True)``). Elsewhere only
:mod:`.reproduction` (the comparison with so3krates-torch) imports it.

Usage: ``python -m equiforce.models.so3lr.convert OUT.pt`` (default: the shipped
``equiforce/pretrained/so3lr.pt``).

Layout differences handled here (so3krates-torch → equiforce):

- element tables: one-hot ``Linear`` weights (F, 118) with column Z − 1, or
  ``Embedding`` rows indexed by Z (100 rows) → ``Embedding``/vectors with 119
  rows indexed by Z (unused rows zero, scale 1);
- each layer's two ``FilterNet`` s (invariant / EV branch) → ``filter_r1``,
  ``filter_s1`` / ``filter_r2``, ``filter_s2``; per-head maps copied as they are
  ((H, d, d), applied as ``einsum("nhd,hde->nhe")`` in both);
- ZBL's ten scalar parameters → vectors ``a_raw``, ``c_raw`` and scalars;
- the Bernstein basis' log-binomial coefficients are copied too: so3krates-torch
  stores them rounded to float32 (the values the model was trained with; up to
  8.5e-7 from the exact ones, which moved float64 energies by ~1e-9 relative and
  forces by ~5e-6 eV/Å).

The long-range cutoff (12 Å) and the dispersion switch width (2 Å) are not in the
pickled model (None there): they are so3krates-torch's ``SO3LRCalculator``
defaults, which are :class:`SO3LRConfig`'s defaults.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import torch

from equiforce.models.so3lr.config import SO3LRConfig
from equiforce.models.so3lr.model import SO3LR

#: Where the converted model is shipped (inside the package).
SHIPPED = Path(__file__).resolve().parents[2] / "pretrained" / "so3lr.pt"


def reference_path() -> Path:
    """The pretrained file inside the installed so3krates-torch package."""
    from importlib.resources import files

    return Path(str(files("so3krates_torch.pretrained.so3lr") / "so3lr.model"))


def load_reference(path: str | Path | None = None) -> torch.nn.Module:
    """so3krates-torch's SO3LR module (unpickled: trusted package file only)."""
    path = reference_path() if path is None else Path(path)
    return torch.load(path, map_location="cpu", weights_only=False)


def config_of(ref: Any) -> SO3LRConfig:
    """The :class:`SO3LRConfig` of a so3krates-torch SO3LR module."""
    if getattr(ref, "use_pme", False):
        raise ValueError("PME models are not supported by this converter")
    expected = {
        "initialize_ev_to_zeros": True,
        "qk_non_linearity": "identity",
        "activation_fn_name": "silu",
        "final_mlp_layers": 2,
        "interaction_bias": True,
        "neighborlist_format_lr": "sparse",
    }
    for name, value in expected.items():
        if getattr(ref, name) != value:
            raise ValueError(
                f"unsupported so3krates-torch setting {name}={getattr(ref, name)!r}"
            )
    shifts, scales = (
        ref.energy_learn_atomic_type_shifts,
        ref.energy_learn_atomic_type_scales,
    )
    return SO3LRConfig(
        num_features=ref.num_features,
        num_layers=ref.num_layers,
        num_heads=ref.num_heads,
        degrees=tuple(ref.degrees),
        cutoff=ref.r_max,
        cutoff_fn=ref.cutoff_fn_name,
        radial_basis=ref.radial_basis_fn,
        num_radial=ref.num_radial_basis_fn,
        qk_activation="identity",
        message_normalization=ref.message_normalization,
        avg_num_neighbors=ref.avg_num_neighbors,
        layer_norm_1=ref.layer_normalization_1,
        layer_norm_2=ref.layer_normalization_2,
        residual_mlp_1=ref.residual_mlp_1,
        residual_mlp_2=ref.residual_mlp_2,
        readout_hidden=ref.energy_regression_dim,
        readout_activation=ref.energy_activation_fn_name,
        per_element_scale_shift=bool(shifts or scales),
        layer_norm_eps=ref.euclidean_transformers[0].layer_norm_inv_1.eps,
        charge_embedding=ref.use_charge_embed,
        spin_embedding=ref.use_spin_embed,
        head_hidden=ref.energy_regression_dim,
        zbl=ref.zbl_repulsion_bool,
        electrostatics=ref.electrostatic_energy_bool,
        dispersion=ref.dispersion_energy_bool,
        electrostatics_sigma=ref.electrostatic_energy_scale,
        dispersion_beta=ref.dispersion_energy_scale,
    )


def _by_z(table: torch.Tensor, first_z: int, fill: float = 0.0) -> torch.Tensor:
    """Rows of ``table`` (n, ...) for Z = first_z… placed into a (119, ...) table."""
    out = torch.full((119, *table.shape[1:]), fill, dtype=table.dtype)
    out[first_z : first_z + table.shape[0]] = table
    return out


def state_dict_of(ref: Any, config: SO3LRConfig) -> dict[str, torch.Tensor]:
    """:class:`SO3LR` state_dict (model dtype of ``ref``) from a so3krates-torch module."""
    src = {k: v.detach() for k, v in ref.state_dict().items()}
    out: dict[str, torch.Tensor] = {}

    def lin(dst: str, key: str) -> None:
        out[f"{dst}.weight"] = src[f"{key}.weight"]
        if f"{key}.bias" in src:
            out[f"{dst}.bias"] = src[f"{key}.bias"]

    if config.radial_basis == "bernstein":  # the float32-rounded log C(K-1, k)
        out["rbf.log_binom"] = src["radial_embedding.radial_basis_fn.b"]
    out["embedding.weight"] = _by_z(src["inv_feature_embedding.embedding.weight"].T, 1)
    for name in ("charge", "spin"):
        if getattr(config, f"{name}_embedding"):
            pre = f"{name}_embedding"
            out[f"{pre}.query.weight"] = _by_z(src[f"{pre}.Wq.weight"].T, 1)
            out[f"{pre}.key"], out[f"{pre}.value"] = src[f"{pre}.Wk"], src[f"{pre}.Wv"]
            lin(f"{pre}.dense1", f"{pre}.mlp.1")
            lin(f"{pre}.dense2", f"{pre}.mlp.3")
    for t in range(config.num_layers):
        pre, dst = f"euclidean_transformers.{t}", f"layers.{t}"
        for branch, (r, s) in (
            ("inv", ("filter_r1", "filter_s1")),
            ("ev", ("filter_r2", "filter_s2")),
        ):
            net = f"{pre}.filter_net_{branch}"
            lin(f"{dst}.{r}.0", f"{net}.mlp_rbf.0")
            lin(f"{dst}.{r}.2", f"{net}.mlp_rbf.mlp_rbf_layer_1.0")
            lin(f"{dst}.{s}.0", f"{net}.mlp_ev.0")
            lin(f"{dst}.{s}.2", f"{net}.mlp_ev.mlp_ev_layer_1.0")
        att = f"{pre}.euclidean_attention_block"
        for mine, theirs in (
            ("q1", "W_q_inv"),
            ("k1", "W_k_inv"),
            ("v1", "W_v_inv"),
            ("q2", "W_q_ev"),
            ("k2", "W_k_ev"),
        ):
            out[f"{dst}.{mine}.weight"] = src[f"{att}.{theirs}"]
        lin(f"{dst}.exchange", f"{pre}.interaction_block.linear_layer")
        if config.layer_norm_1:
            lin(f"{dst}.norm1", f"{pre}.layer_norm_inv_1")
        if config.layer_norm_2:
            lin(f"{dst}.norm2", f"{pre}.layer_norm_inv_2")
        for k in (1, 2):
            if getattr(config, f"residual_mlp_{k}"):
                lin(f"{dst}.res{k}.dense1", f"{pre}.mlp_{k}.1")
                lin(f"{dst}.res{k}.dense2", f"{pre}.mlp_{k}.3")
    head = "atomic_energy_output_block"
    lin("readout.0", f"{head}.layers.0")
    lin("readout.2", f"{head}.final_layer")
    if config.per_element_scale_shift:
        out["scale"] = _by_z(src[f"{head}.energy_scales.weight"][0], 1, fill=1.0)
        out["shift"] = _by_z(src[f"{head}.energy_shifts"], 1)
    lin("charge_head.mlp.0", "partial_charges_output_block.transform_inv_features.0")
    lin("charge_head.mlp.2", "partial_charges_output_block.transform_inv_features.2")
    out["charge_head.bias.weight"] = _by_z(
        src["partial_charges_output_block.atomic_embedding.weight"], 0
    )
    hir = "hirshfeld_output_block"
    lin("hirshfeld_head.mlp.0", f"{hir}.transform_features.0")
    lin("hirshfeld_head.mlp.2", f"{hir}.transform_features.2")
    out["hirshfeld_head.query.weight"] = _by_z(src[f"{hir}.q_embedding.weight"], 0)
    out["hirshfeld_head.shift.weight"] = _by_z(
        src[f"{hir}.v_shift_embedding.weight"], 0
    )
    if config.zbl:
        z = "zbl_repulsion"
        out["terms.zbl.a_raw"] = torch.cat([src[f"{z}.a{k}_raw"] for k in range(1, 5)])
        out["terms.zbl.c_raw"] = torch.cat([src[f"{z}.c{k}_raw"] for k in range(1, 5)])
        out["terms.zbl.p_raw"] = src[f"{z}.p_raw"][0]
        out["terms.zbl.b_raw"] = src[f"{z}.d_raw"][0]
    return out


def convert(path: str | Path | None = None) -> SO3LR:
    """An equiforce :class:`SO3LR` with so3krates-torch's pretrained weights."""
    ref = load_reference(path)
    config = config_of(ref)
    dtype = next(ref.parameters()).dtype
    model = SO3LR(config).to(dtype)
    model.model_name = "so3lr"
    state = model.state_dict()  # buffers (e0, bases) keep the model's own values
    converted = state_dict_of(ref, config)
    unknown = sorted(set(converted) - set(state))
    if unknown:
        raise KeyError(f"converter produced keys SO3LR does not have: {unknown}")
    missing = sorted(
        k for k in state if k not in converted and k in dict(model.named_parameters())
    )
    if missing:
        raise KeyError(f"no so3krates-torch tensor for SO3LR parameters {missing}")
    for key, value in converted.items():
        if value.shape != state[key].shape:
            raise ValueError(
                f"{key}: shape {tuple(value.shape)} != {tuple(state[key].shape)}"
            )
        state[key] = value.to(dtype).clone()
    model.load_state_dict(state)
    return model.eval()


def write(out: str | Path = SHIPPED, path: str | Path | None = None) -> Path:
    """Convert and save the model file to ``out`` (atomically)."""
    source = reference_path() if path is None else Path(path)
    model = convert(source)
    from importlib.metadata import version

    provenance = {
        "source": "so3krates-torch "
        + version("so3krates-torch")
        + " pretrained/so3lr/so3lr.model",
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "licence": "MIT (so3krates-torch); see equiforce/pretrained/SO3LR_LICENSE.md",
    }
    model.save(out, train_config=provenance)
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    """Command line: write the converted model file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out", nargs="?", default=str(SHIPPED), help="output model file"
    )
    parser.add_argument("--source", default=None, help="so3krates-torch so3lr.model")
    args = parser.parse_args(argv)
    print(write(args.out, args.source))


if __name__ == "__main__":
    main()
