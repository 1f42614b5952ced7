"""experiments.reproduce: every member of a protocol as its own process, skipped once finished,
recorded together, the table rebuilt; a dry run trains nothing; bad requests are one sentence."""

import dataclasses
import json
import shutil

import pytest

from experiments import cli, reproduce
from experiments.tables import results_table
from fmnist_jax import presets
from fmnist_jax.runs.files import RunPaths, config_record
from fmnist_jax.training.members import Member
from tests.conftest import assert_exits_with_sentence

TINY = ["--", "--model=mlp", "--epochs=1", "--batch=40", "--augment=none", "--tta=none", "--eval_batch=64"]


@pytest.fixture
def folders(synthetic_dir, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n\n{results_table.BEGIN}\n{results_table.END}\n")
    return [f"--data_dir={synthetic_dir[0]}", f"--results_dir={tmp_path / 'results'}",
            f"--checkpoint_dir={tmp_path / 'checkpoints'}", f"--records_dir={tmp_path / 'records'}",
            f"--readme={readme}", f"--results_page={tmp_path / 'RESULTS.md'}"], tmp_path


def test_members_train_once_each_then_are_recorded_together(folders, capsys):
    flags, root = folders
    assert cli.invoke(reproduce, ["--presets=demo", "--members=2", *flags, *TINY]) == {"demo": True}
    out = capsys.readouterr().out
    assert "demo_s0: running:" in out and "--seed=1 --seeds=1 --run_name=demo_s1" in out
    record = json.loads((root / "records" / "demo.json").read_text())
    assert [r["config"]["seed"] for r in record["runs"]] == [0, 1]
    assert all(r["config"]["model"] == "mlp" and r["summary"]["started_at_epoch"] == 0 for r in record["runs"])
    assert record["ensemble"]["members"] == 2
    assert "| demo |" in (root / "README.md").read_text()
    # A second call finds both finished: nothing is trained again and the record is unchanged.
    summary = (root / "results" / "demo_s1" / "summary.json").read_text()
    cli.invoke(reproduce, ["--presets=demo", "--members=2", *flags, *TINY])
    assert "demo_s0: finished" in capsys.readouterr().out
    assert (root / "results" / "demo_s1" / "summary.json").read_text() == summary
    assert json.loads((root / "records" / "demo.json").read_text()) == record
    # Each finished member was archived with the records: on a machine without its results (the
    # next working day) it still counts as finished, and the preset is recorded the same.
    assert sorted(p.name for p in (root / "records" / "members" / "demo_s0").iterdir()) == \
        ["config.json", "summary.json", "test_probabilities.npz"]
    shutil.rmtree(root / "results")
    (root / "records" / "demo.json").unlink()
    cli.invoke(reproduce, ["--presets=demo", "--members=2", *flags, *TINY])
    assert "demo_s1: finished (results in" in capsys.readouterr().out and not (root / "results" / "demo_s1").exists()
    assert json.loads((root / "records" / "demo.json").read_text()) == record


def test_a_dry_run_prints_every_protocol_member_and_trains_nothing(folders, capsys):
    flags, root = folders
    done = cli.invoke(reproduce, ["--dry_run", *flags])
    out = capsys.readouterr().out
    assert list(done) == list(presets.TABLE) and not any(done.values())
    for preset in presets.TABLE:
        last = presets.members(preset) - 1
        assert f"{preset}_s{last}: would run: " in out and f"{preset}_s{last + 1}:" not in out
    assert presets.members("seed003") == 5 and presets.members("seed002") == 1
    assert not (root / "results").exists() and not (root / "records").exists()


def test_a_member_that_fails_stops_the_reproduction_with_one_sentence(folders, capsys):
    flags, root = folders
    assert_exits_with_sentence(capsys, "demo_s0 stopped with exit status 2; rerun this command to resume it",
                               cli.invoke, reproduce, ["--presets=demo", *flags, "--", "--batch=0"])
    assert not (root / "records").exists()


@pytest.mark.parametrize("argv, message", [
    (["--presets=speedrun,nope"], "--presets does not know 'nope'"),
    (["--members=-1"], "--members must be 0"),
])
def test_bad_requests_are_one_sentence(folders, capsys, argv, message):
    flags, _ = folders
    assert_exits_with_sentence(capsys, message, cli.invoke, reproduce, [*argv, *flags])


def test_the_campaign_says_where_it_stands_and_the_time_left(tmp_path):
    from experiments.reproduce import campaign_status
    from fmnist_jax.runs.files import RunPaths
    plan = {"a": [RunPaths(f"a_s{i}", tmp_path) for i in range(3)], "b": [RunPaths(f"b_s{i}", tmp_path) for i in range(2)]}
    for name, seconds in (("a_s0", 600.0), ("a_s1", 1800.0)):      # a's finished members: 10 and 30 minutes
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"wall_seconds": seconds}))
    status = campaign_status(plan, plan["a"][2])
    assert status.startswith("campaign: a_s2 is member 3 of 5, 2 finished; about 0.3 h left")   # one more 20-minute member
    assert status.endswith("(not counting b)")


def test_reproduce_unpacks_an_in_flight_member_and_drops_the_pack_once_it_finishes(folders, capsys):
    from fmnist_jax.runs import carry
    from fmnist_jax.runs.files import RunPaths

    flags, root = folders
    two_epochs = [a if a != "--epochs=1" else "--epochs=2" for a in TINY]
    cli.invoke(reproduce, ["--presets=demo", "--members=1", "--norecord", *flags, *TINY])   # epoch 1 of 2
    elsewhere = RunPaths("demo_s0", root / "results", root / "checkpoints")
    carry.pack(elsewhere, root / "records" / "in_flight")
    shutil.rmtree(root / "results")
    shutil.rmtree(root / "checkpoints")
    cli.invoke(reproduce, ["--presets=demo", "--members=1", *flags, *two_epochs])
    assert "demo_s0: unpacked from" in capsys.readouterr().out
    summary = json.loads((root / "records" / "members" / "demo_s0" / "summary.json").read_text())
    assert summary["started_at_epoch"] == 1 and summary["epochs"] == 2
    assert not (root / "records" / "in_flight" / "demo_s0").exists()


def test_a_signal_to_the_campaign_goes_to_the_member_which_exits_on_it(tmp_path):
    import os
    import signal
    import sys
    import threading
    import time

    started = tmp_path / "started"
    child = ("import signal, sys, time, pathlib\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
             f"pathlib.Path({str(started)!r}).touch()\n"
             "time.sleep(60)\n")

    def stop_when_started():
        while not started.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=stop_when_started, daemon=True).start()
    begun = time.monotonic()
    status, received = reproduce.run_member([sys.executable, "-c", child])
    assert (status, received) == (143, signal.SIGTERM) and time.monotonic() - begun < 30
    assert signal.getsignal(signal.SIGTERM) is before           # this process's own handling is back


def _finished_member(root, run, cfg):
    """A member folder as the campaign archives it (the summary's content does not matter here)."""
    paths = RunPaths(run, root / "records" / "members")
    paths.make_results()
    (paths.results / "config.json").write_text(json.dumps(config_record(cfg, [Member(cfg.seed)])))
    (paths.results / "summary.json").write_text("{}")
    return paths


def test_a_member_finished_under_an_older_preset_is_refused_not_recorded(folders, capsys):
    flags, root = folders
    today = dataclasses.replace(presets.get("demo"), seed=0, seeds=1)
    same = _finished_member(root, "same", dataclasses.replace(today, conv_impl="xla", eval_batch=7))
    assert reproduce.stale_fields(same, "demo", 0) == []          # how it executed does not count
    assert reproduce.stale_fields(same, "demo", 1) == ["seed"]
    old = _finished_member(root, "demo_s0", dataclasses.replace(today, epochs=today.epochs + 1, val_every=2))
    assert reproduce.stale_fields(old, "demo", 0) == ["epochs", "val_every"]
    assert_exits_with_sentence(capsys, "demo_s0 finished with a different epochs, val_every than the demo preset "
                                       "trains now; move", cli.invoke, reproduce, ["--presets=demo", "--members=1", *flags])
    assert not (root / "records" / "demo.json").exists()
