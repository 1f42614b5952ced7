"""experiments.results: finished runs recorded into records/, the README's table rebuilt from them,
its staleness check, and the provenance every summary carries (command, wall clock, resume)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from experiments import cli, cnn, results
from experiments.tables import ablation_table, results_table
from fmnist_jax import config, presets
from fmnist_jax.errors import RunError
from fmnist_jax.evaluation import ensemble
from fmnist_jax.runs.files import PROBABILITIES_FILE
from tests.conftest import assert_exits_with_sentence

README = f"# Results\n\nBefore.\n\n{results_table.BEGIN}\nold table\n{results_table.END}\n\nAfter.\n"


@pytest.fixture
def folders(mlp_ensemble, tmp_path):
    flags, _, run_dir = mlp_ensemble
    readme = tmp_path / "README.md"
    readme.write_text(README)
    return [f"--results_dir={run_dir.parent}", f"--records_dir={tmp_path / 'records'}",
            f"--readme={readme}", f"--results_page={tmp_path / 'RESULTS.md'}"], readme, tmp_path / "records", run_dir


def test_a_summary_records_its_command_wall_clock_and_start(mlp_ensemble):
    summary = json.loads((mlp_ensemble[2] / "summary.json").read_text())
    command = summary["invocation"]["command"]
    assert command.startswith("python -m experiments.cnn ") and "--model=mlp" in command
    assert "--seeds=2" in command and summary["invocation"]["preset"] is None
    assert summary["wall_seconds"] > 0 and summary["started_at_epoch"] == 0
    assert summary["stopped_seconds"] == 0.0          # never SIGSTOPped (tests/test_pause_clock.py)
    assert summary["environment"]["usable_cpus"] >= 1
    assert summary["environment"]["cpu_vector"] in ("AVX-512", "AVX2", "")


def test_record_then_table_then_check(folders, capsys):
    flags, readme, records_dir, run_dir = folders
    rows = cli.invoke(results, ["--record=tiny", "--runs=mlp2", "--notes=two tiny members", *flags])
    summary = json.loads((run_dir / "summary.json").read_text())
    record = json.loads((records_dir / "tiny.json").read_text())
    assert record["runs"][0]["summary"] == summary and record["runs"][0]["config"]["model"] == "mlp"

    [row] = rows
    members = summary["test"]["best"]["member_accuracy"]
    assert row["members"] == 2 and row["test_accuracy_mean"] == pytest.approx(np.mean(members))
    assert row["test_accuracy_std"] == pytest.approx(np.std(members, ddof=1))
    assert row["ensemble_accuracy"] == summary["test"]["best"]["ensemble_accuracy"]
    assert row["minutes"] == pytest.approx(summary["wall_seconds"] / 60) and row["minutes_are_wall_clock"]

    text = readme.read_text()
    assert text.startswith("# Results\n\nBefore.") and text.endswith("After.\n") and "old table" not in text
    assert f"| tiny [1] | mlp | – | {100 * np.mean(members):.2f}% ± " in text
    # The table's command drops the run's local folders; the record keeps them.
    assert "--results_dir=" in summary["invocation"]["command"]
    assert row["command"] == results_table.portable_command(summary["invocation"]["command"])
    assert f"`{row['command']}`" in text and "_dir=" not in row["command"]
    # The README's copy points to the note; the results page has the table and its note.
    assert "[1] two tiny members" not in text and "RESULTS.md" in text
    page = (readme.parent / "RESULTS.md").read_text()
    assert page.startswith("# Results") and f"`{row['command']}`" in page and "[1] two tiny members" in page
    assert json.loads((records_dir / "table.json").read_text()) == rows
    assert (records_dir / "accuracy_vs_minutes.png").stat().st_size > 0

    # The committed table agrees with the records; an edited table is stale (exit 1).
    capsys.readouterr()
    cli.invoke(results, ["--check", *flags])
    assert "up to date (1 rows, 0 ablation rows)" in capsys.readouterr().out
    readme.write_text(text.replace("| tiny", "| edited"))
    with pytest.raises(SystemExit) as exit_info:
        cli.invoke(results, ["--check", *flags])
    assert exit_info.value.code == 1
    readme.write_text(text)
    (readme.parent / "RESULTS.md").write_text(page.replace("two tiny", "two edited"))
    with pytest.raises(SystemExit) as exit_info:
        cli.invoke(results, ["--check", *flags])
    assert exit_info.value.code == 1 and "RESULTS.md is stale" in capsys.readouterr().err
    # Re-recording without --notes keeps the note.
    cli.invoke(results, ["--record=tiny", "--runs=mlp2", *flags])
    assert json.loads((records_dir / "tiny.json").read_text())["notes"] == "two tiny members"


def test_a_resumed_run_counts_training_time_only(folders, tmp_path, mlp_ensemble):
    _, readme, records_dir, _ = folders
    data_flags = [mlp_ensemble[0][0], f"--results_dir={tmp_path / 'r'}", f"--checkpoint_dir={tmp_path / 'c'}"]
    base = ["--model=mlp", "--batch=40", "--augment=none", "--run_name=grow", *data_flags]
    cli.invoke(cnn, ["--epochs=1", *base])
    summary = cli.invoke(cnn, ["--epochs=2", *base])
    assert summary["started_at_epoch"] == 1
    [row] = cli.invoke(results, ["--record=grow", "--runs=grow", f"--results_dir={tmp_path / 'r'}",
                                 f"--records_dir={records_dir}", f"--readme={readme}",
                                 f"--results_page={readme.parent / 'RESULTS.md'}"])
    assert not row["minutes_are_wall_clock"]
    assert row["minutes"] == pytest.approx(summary["train_seconds"] / 60)
    assert "(training only, resumed)" in readme.read_text()


@pytest.mark.parametrize("argv, message", [
    (["--runs=mlp2"], "--record is needed with --runs"),
    (["--record=x"], "--runs is empty"),
    (["--record=x", "--runs=nothing_here"], "run 'nothing_here' has no summary"),
    (["--record=../x", "--runs=mlp2"], "--record must be a plain folder name"),
    (["--record=x", "--runs=mlp2", "--check"], "--check only checks"),
])
def test_bad_requests_are_one_sentence(folders, capsys, argv, message):
    flags, *_ = folders
    assert_exits_with_sentence(capsys, message, cli.invoke, results, [*argv, *flags])


def test_a_readme_without_markers_is_one_sentence(folders, capsys):
    flags, readme, *_ = folders
    readme.write_text("# no markers\n")
    assert_exits_with_sentence(capsys, "the README has no results-table markers", cli.invoke, results, flags)
    assert readme.read_text() == "# no markers\n"


def test_the_committed_readme_table_is_up_to_date(capsys):
    # The README's table is exactly what the committed records give.
    cli.invoke(results, ["--check"])
    assert "up to date" in capsys.readouterr().out


def test_the_table_command_leaves_out_where_files_went():
    command = ("python -m experiments.cnn --checkpoint_dir=/tmp/c --data_dir=d --epochs=8 --overwrite "
               "--preset=speedrun --results_dir=r --run_name=s0 --seed=0")
    assert results_table.portable_command(command) == \
        "python -m experiments.cnn --epochs=8 --preset=speedrun --run_name=s0 --seed=0"


def test_the_command_names_the_module_also_when_run_as_main():
    # `python -m experiments.cnn` runs the script as __main__; the command must still say cnn.
    from types import SimpleNamespace

    from absl import flags
    as_main = SimpleNamespace(__name__="__main__", __spec__=SimpleNamespace(name="experiments.cnn"),
                              define_flags=cnn.define_flags)
    fv = flags.FlagValues()
    cnn.define_flags(fv)
    fv(["cnn", "--preset=demo", "--epochs=3", "--overwrite"])
    assert cli.command_line(as_main, fv) == "python -m experiments.cnn --epochs=3 --overwrite --preset=demo"


def test_members_of_separate_runs_vote_from_their_saved_probabilities(folders, mlp_ensemble):
    flags, _, records_dir, run_dir = folders
    summary = json.loads((run_dir / "summary.json").read_text())
    with np.load(run_dir / PROBABILITIES_FILE) as saved:
        labels, plain, tta = saved["labels"], saved["best_plain"], saved["best_tta"]
    np.testing.assert_array_equal(labels, mlp_ensemble[1].y_test)
    assert plain.shape == tta.shape == (2, len(labels), 10)
    # They are the probabilities the summary scored.
    for probs, key in ((plain, "best"), (tta, "best_tta")):
        np.testing.assert_allclose((probs.argmax(-1) == labels).mean(-1), summary["test"][key]["member_accuracy"])
        assert ensemble.score(probs.astype(np.float64), labels)["ensemble_accuracy"] == \
            summary["test"][key]["ensemble_accuracy"]
    # The same run recorded twice: four members, two identical pairs, so the same vote as the run's.
    rows = cli.invoke(results, ["--record=twice", "--runs=mlp2,mlp2", *flags])
    [row] = [r for r in rows if r["name"] == "twice"]
    assert json.loads((records_dir / "twice.json").read_text())["ensemble"]["members"] == 4
    assert row["ensemble_accuracy"] == summary["test"]["best"]["ensemble_accuracy"]
    assert row["tta_ensemble_accuracy"] == summary["test"]["best_tta"]["ensemble_accuracy"]
    # A run without the file (older than it) leaves the vote out rather than guessing.
    old = run_dir.parent / "old"
    shutil.copytree(run_dir, old)
    (old / PROBABILITIES_FILE).unlink()
    rows = cli.invoke(results, ["--record=mixed", "--runs=mlp2,old", *flags])
    [row] = [r for r in rows if r["name"] == "mixed"]
    assert row["ensemble_accuracy"] is None and row["tta_ensemble_accuracy"] is None

def test_a_record_of_several_runs_shows_one_command_with_the_values_that_differ():
    commands = [f"python -m experiments.cnn --preset=speedrun --run_name=speedrun_s{s} --seed={s}" for s in range(3)]
    assert results_table.combined_command(commands) == \
        "python -m experiments.cnn --preset=speedrun --run_name=speedrun_s{0,1,2} --seed={0,1,2}"
    assert results_table.combined_command(commands[:1] * 2) == commands[0]
    # Values that share a suffix keep it outside the braces; different word counts are listed whole.
    assert results_table.combined_command(["a --x=1b", "a --x=22b"]) == "a --x={1,22}b"
    assert results_table.combined_command(["a --x=1", "a --x=1 --y"]) == "a --x=1 ; a --x=1 --y"


def _synthetic_record(name, seeds, tests, *, ablation_of=None, notes="", **config):
    runs = []
    for seed, test in zip(seeds, tests):
        summary = {"best_val_accuracy": [test + 0.01], "test": {"best": {"mean_accuracy": test},
                                                               "best_tta": {"mean_accuracy": test + 0.005}},
                   "tta": "flip", "started_at_epoch": 0, "wall_seconds": 600.0, "median_images_per_second": 900.0}
        runs.append({"summary": summary, "config": {"seed": seed, "seeds": 1, "members": [{"seed": seed}],
                                                    "model": "net", "ema_decay": 0.99, **config}})
    return {"name": name, "runs": runs, "notes": notes, **({"ablation_of": ablation_of} if ablation_of else {})}


def test_an_ablation_row_is_set_against_the_base_run_of_its_seed():
    base = _synthetic_record("recipe", [0, 1, 2], [0.91, 0.92, 0.93])
    no_ema = _synthetic_record("no_ema", [1], [0.905], ablation_of="recipe", ema_decay=0.0, notes="why")
    other = _synthetic_record("other", [0], [0.91], ablation_of="recipe", model="net2", augment=["flip"])
    rows = ablation_table.rows([other, base, no_ema])
    assert [(r["name"], r["seed"]) for r in rows] == [("recipe", 0), ("other", 0), ("recipe", 1), ("no_ema", 1)]
    assert rows[3]["change"] == "ema_decay: 0.99 → 0.0"
    assert rows[3]["test_delta"] == pytest.approx(0.905 - 0.92) and rows[3]["val_delta"] == pytest.approx(-0.015)
    assert rows[1]["change"] == "augment: flip,erase → flip; model: net → net2" and rows[1]["test_delta"] == 0
    # A field one config lacks (written before the field existed) holds TrainConfig's default.
    assert ablation_table.config_change({"batch": 250}, {"batch": 250, "epoch_passes": 1}) == "nothing"
    assert ablation_table.config_change({}, {"epoch_passes": 3}) == "epoch_passes: 1 → 3"
    assert rows[2]["test_std_over_seeds"] == pytest.approx(0.01) and rows[0]["is_base"] and not rows[1]["is_base"]
    text = ablation_table.markdown(rows)
    assert "[a1] why" in text and "| no_ema [a1] | ema_decay: 0.99 → 0.0 | 91.50 | -1.50 | 90.50 | -1.50 | 91.00 (flip) | -1.50 | 10.0 | 900 |" in text
    assert "| **recipe** (seed 1) | none (the recipe) |" in text and "std of 1.00 points" in text


def test_an_ablation_of_a_run_without_validation_shows_a_dash():
    # A retrain-on-all run (--val_fraction=0 --select=final) has no validation accuracy.
    base = _synthetic_record("recipe", [0], [0.91])
    all_data = _synthetic_record("all_data", [0], [0.92], ablation_of="recipe", val_fraction=0.0)
    all_data["runs"][0]["summary"]["best_val_accuracy"] = [None]
    rows = ablation_table.rows([base, all_data])
    assert rows[1]["val_accuracy"] is None and rows[1]["val_delta"] is None
    assert rows[1]["test_delta"] == pytest.approx(0.01)
    assert "| all_data | val_fraction: 0.15 → 0.0 | – | – | 92.00 | +1.00 |" in ablation_table.markdown(rows)


def test_a_repeat_command_reads_quoted_flags_as_given():
    preset_now = presets.get("speedrun")
    saved = config.as_record(dataclasses.replace(preset_now, model_args={"widths": [16, 32, 64]}, ema_decay=0.0))
    command = "python -m experiments.cnn --preset=speedrun '--model_args={\"widths\":[16,32,64]}'"
    repeated = results_table.repeat_command(command, saved, "speedrun")
    assert repeated.count("--model_args") == 1 and repeated.endswith("--ema_decay=0.0")


def test_an_ablation_without_its_base_is_one_sentence():
    lone = _synthetic_record("lone", [0], [0.9], ablation_of="missing")
    with pytest.raises(RunError, match="ablation of 'missing', which is not recorded"):
        ablation_table.rows([lone])
    base = _synthetic_record("missing", [1], [0.9])
    with pytest.raises(RunError, match=r"\(seed 0\) has no run of the same seed"):
        ablation_table.rows([lone, base])


def test_recording_an_ablation_fills_the_ablation_table(folders):
    flags, readme, records_dir, _ = folders
    cli.invoke(results, ["--record=tiny", "--runs=mlp2", *flags])
    rows = cli.invoke(results, ["--record=tiny_again", "--runs=mlp2", "--ablation_of=tiny", *flags])
    assert [r["name"] for r in rows] == ["tiny"]          # the ablation is not a results row
    assert json.loads((records_dir / "tiny_again.json").read_text())["ablation_of"] == "tiny"
    [base, again] = json.loads((records_dir / "ablation_table.json").read_text())
    assert again["change"] == "nothing" and again["test_delta"] == 0 and base["name"] == "tiny"
    assert "| tiny_again | nothing |" in (readme.parent / "RESULTS.md").read_text()
    assert "tiny_again" not in readme.read_text()          # the README shows the results table only


def test_a_preset_scored_on_its_final_state_shows_the_final_accuracy():
    def scores(acc):
        return {"member_accuracy": [acc], "ensemble_accuracy": acc, "mean_accuracy": acc}
    summary = {"test": {"best": scores(0.90), "best_tta": scores(0.905), "final": scores(0.88),
                        "final_tta": scores(0.885)},
               "model": "seed004_resnet", "tta": "flip", "epochs": 10, "started_at_epoch": 0, "wall_seconds": 60.0,
               "invocation": {"preset": "seed004_resnet", "command": "python -m experiments.cnn --preset=seed004_resnet"}}
    row = results_table.row({"name": "seed004_resnet", "runs": [{"summary": summary, "config": {}}]})
    assert row["scored"] == "final" and row["test_accuracy_mean"] == 0.88 and row["tta_accuracy_mean"] == 0.885
    assert "88.00% (final state)" in results_table.markdown([row])
    summary["invocation"]["preset"] = "seed003"
    assert results_table.row({"name": "s", "runs": [{"summary": summary, "config": {}}]})["test_accuracy_mean"] == 0.90


def test_a_rows_command_repeats_its_run_after_the_preset_changed():
    from fmnist_jax import config, presets
    saved = config.as_record(dataclasses.replace(presets.get("speedrun"), label_smoothing=0.2, epochs=12))
    command = "python -m experiments.cnn --epochs=12 --preset=speedrun --run_name=r --seed=3"
    assert results_table.repeat_command(command, saved, "speedrun") == command + " --label_smoothing=0.2"
    # As the preset is now: nothing to add; no preset or no config: the command as run.
    same = config.as_record(dataclasses.replace(presets.get("speedrun"), seed=3))
    assert results_table.repeat_command(command, same, "speedrun") == command
    assert results_table.repeat_command(command, saved, None) == command
    assert results_table.repeat_command(command, None, "speedrun") == command
    # A former zoo name in an old config is what it stood for, not a change of model.
    old = dict(config.as_record(presets.get("speedrun")), model="speedrun_small", model_args={})
    assert results_table.repeat_command(command, old, "speedrun") == command
    assert results_table.repeat_command("c --preset=speedrun", dict(saved, augment=["flip"], ema_decay=0.0),
                                        "speedrun") == "c --preset=speedrun --augment=flip --ema_decay=0.0 " \
                                                       "--epochs=12 --label_smoothing=0.2"


def test_the_machine_column_names_the_vector_extension_when_recorded():
    # "AMD EPYC" is a Zen 3 (AVX2) or a Zen 5 (AVX-512), whose minutes differ by 2x.
    assert results_table._machine({"usable_cpus": 2, "cpu_model": "AMD EPYC", "cpu_vector": "AVX-512"}, "") == \
        "2 CPU cores (AMD EPYC, AVX-512)"
    # Records made before the field existed keep their old description.
    assert results_table._machine({"usable_cpus": 2, "cpu_model": "AMD EPYC"}, "") == "2 CPU cores (AMD EPYC)"
    assert results_table._machine({"backend": "gpu"}, "cuda:0") == "cuda:0"
