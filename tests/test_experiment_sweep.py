"""experiments.sweep end to end on synthetic data: the grid, the ranking, the files."""

import json

import pytest

from experiments import cli, sweep

GRID = ["--model=mlp", "--batch=30", "--epochs=2", "--augment=flip", "--run_name=grid",
        "--val_fraction=0.25", "--split=stratified"]


def _sweep(dirs, *flags):
    return cli.invoke(sweep, [*GRID, *dirs, *flags])


def test_grid_times_seeds_in_one_program_ranked_by_validation(dirs, tmp_path, capsys):
    _sweep(dirs, "--lr=1e-3,1e-2", "--label_smoothing=0,0.1", "--seeds=2")
    out = tmp_path / "results" / "grid"
    result = json.loads((out / "sweep.json").read_text())
    rows = result["rows"]
    assert result["varied"] == ["lr", "label_smoothing"]
    assert sorted((r["lr"], r["label_smoothing"]) for r in rows) == [(1e-3, 0.0), (1e-3, 0.1), (1e-2, 0.0), (1e-2, 0.1)]
    assert [r["val_mean"] for r in rows] == sorted((r["val_mean"] for r in rows), reverse=True)
    # 4 configurations x 2 seeds = 8 members of one run, configuration-major.
    run_config = json.loads((out / "mlp_b30" / "config.json").read_text())
    members = run_config["members"]
    assert len(members) == 8 and [m["seed"] for m in members[:2]] == [0, 1]
    for row in rows:
        assert len(row["val_accuracy"]) == 2
        for i in row["members"]:
            assert members[i]["hparams"]["lr"] == row["lr"]
            assert members[i]["hparams"]["label_smoothing"] == row["label_smoothing"]
        assert row["val_mean"] == pytest.approx(sum(row["val_accuracy"]) / 2)
    # The per-epoch history of the members agrees with the ranking's best validation accuracies.
    history = [json.loads(line) for line in (out / "mlp_b30" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        for i, acc in zip(row["members"], row["val_accuracy"]):
            assert acc == pytest.approx(max(h["members"]["val_accuracy"][i] for h in history))
    best = result["best"]
    assert best["label"] == rows[0]["label"] and len(best["test"]["member_accuracy"]) == 2
    assert (out / "sweep.png").stat().st_size > 0 and "val mean" in (out / "sweep.txt").read_text()
    assert "best: " in capsys.readouterr().out


def test_shape_changing_values_run_as_separate_programs(dirs, tmp_path):
    _sweep(dirs, "--batch=30,45", "--lr=1e-3,3e-3", "--epochs=1")
    out = tmp_path / "results" / "grid"
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert sorted({r["batch"] for r in rows}) == [30, 45] and len(rows) == 4
    assert (out / "mlp_b30" / "summary.json").exists() is False       # the sweep tests only its best
    assert (out / "mlp_b45" / "metrics.jsonl").exists()
