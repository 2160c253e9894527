import json

from equiforce.cli import main


def test_equiforce_bench_writes_rows(tmp_path):
    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "--systems",
            "ethanol",
            "--mode",
            "eager",
            "--preset",
            "small",
            "--min-seconds",
            "0",
            "--min-calls",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["system"] == "ethanol" and row["n_atoms"] == 9 and row["n_edges"] == 72
    assert row["n_calls"] >= 2 and 0 < row["ms_median"] < 1e4
    assert report["machine"]["threads"] == 2
