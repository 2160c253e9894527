"""An MD output folder is new, resumed explicitly, or refused (the fault policy).

Running into a folder that holds an earlier run would append an unrelated run to
its trajectory and ``thermo.csv`` and replace ``md_state.pt``, so that the earlier
run could no longer be resumed; :func:`claim_out_dir` refuses that unless the user
asked to resume or to overwrite.
"""

from __future__ import annotations

from pathlib import Path

from equiforce.errors import EquiforceError

#: the state checkpoint a run resumes from
CHECKPOINT = "md_state.pt"

#: file-name patterns of what an MD run writes into its folder
MD_OUTPUTS = (CHECKPOINT, "thermo.csv", "trajectory.*", "trajectory_*.*", "result.json")


class OutDirError(EquiforceError):
    """The output folder holds another run and neither resume nor overwrite was asked."""


def md_outputs(out_dir: Path) -> list[Path]:
    """Files of an earlier MD run in ``out_dir`` (empty if none)."""
    if not out_dir.is_dir():
        return []
    return sorted({p for pattern in MD_OUTPUTS for p in out_dir.glob(pattern)})


def claim_out_dir(out_dir: str | Path, resume: bool, overwrite: bool = False) -> None:
    """Make ``out_dir`` ready for a run, or raise :class:`OutDirError`.

    Args:
        out_dir: the run's output folder.
        resume: continue the run in it (its checkpoint must be there if it has
            outputs).
        overwrite: delete an earlier run's outputs first.
    """
    out_dir = Path(out_dir)
    found = md_outputs(out_dir)
    if not found:
        return
    if resume:
        if not (out_dir / CHECKPOINT).exists():
            raise OutDirError(
                f"{out_dir}: has MD outputs but no {CHECKPOINT} to resume from; "
                "choose a new --out or pass --overwrite"
            )
        return
    if overwrite:
        for path in found:
            path.unlink()
        return
    names = ", ".join(p.name for p in found[:4]) + (" ..." if len(found) > 4 else "")
    raise OutDirError(
        f"{out_dir}: holds an earlier MD run ({names}); continue it with --resume, "
        "write to a new --out, or pass --overwrite to replace it"
    )
