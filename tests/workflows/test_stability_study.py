"""The stability study workflow: MD over seeds x temperatures, then its table."""

from helpers import lj_cluster

from equiforce.md.config import MDConfig
from equiforce.md.forcefield import LennardJones
from equiforce.md.runner import run_md
from equiforce.workflows.stability import run_stability_study


class _BlowsUpAt:
    def __init__(self, temperature_limit):
        self.lj, self.limit = LennardJones(), temperature_limit

    def __call__(self, state):
        e, f = self.lj(state)
        if float(state.temperature()[0]) > 0 and state.step > 20 and self.hot(state):
            f = f * 0 + 5.0
        return e, f

    def hot(self, state):
        return float(state.dof[0]) > 0 and self.limit < 35.0


def test_stability_study_table(tmp_path):
    base = MDConfig(ensemble="langevin", timestep=5.0, steps=100, output_interval=10)
    ref = run_md(
        LennardJones(),
        [lj_cluster()],
        base.model_copy(update={"temperature": 10.0}),
        tmp_path / "ref",
        progress=False,
    )
    assert ref.stable
    summary = run_stability_study(
        LennardJones(),
        [lj_cluster(), lj_cluster(seed=1)],
        base,
        [10.0, 20.0],
        [0, 1],
        tmp_path / "study",
        reference=tmp_path / "ref" / "trajectory.xyz",
        progress=False,
    )
    assert [r["temperature_K"] for r in summary] == [10.0, 20.0]
    assert all(r["stable_fraction"] == 1.0 and r["n_runs"] == 2 for r in summary)
    assert all(abs(r["mean_ttf_ps"] - 0.5) < 1e-9 for r in summary)
    assert all(0 < r["mean_hr_mae"] < 1e-2 for r in summary)
    assert (tmp_path / "study" / "summary.csv").exists()
    bad = run_stability_study(
        _BlowsUpAt(10.0),
        [lj_cluster()],
        base,
        [10.0],
        [0],
        tmp_path / "bad",
        progress=False,
    )
    assert bad[0]["stable_fraction"] == 0.0 and bad[0]["mean_ttf_ps"] < 0.5
