"""The flag-free library entry point: a run trains, resumes and is scored with no flags parsed;
presets are valid configs that document themselves; the library holds no flags or hidden state."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from fmnist_jax import config, presets
from fmnist_jax.errors import RunError
from fmnist_jax.runs import files
from fmnist_jax.runs.files import RunPaths
from fmnist_jax.training import train

TINY = config.TrainConfig(model="mlp", epochs=2, batch=30, val_fraction=0.25, split="stratified",
                          augment=("flip",), seed=5)


def test_a_run_trains_resumes_and_equals_an_uninterrupted_one(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    where = dict(results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "checkpoints")
    straight = train.train_and_evaluate(TINY, RunPaths("straight", **where), data_dir=directory)
    interrupted = RunPaths("interrupted", **where)
    train.train_and_evaluate(dataclasses.replace(TINY, epochs=1), interrupted, data_dir=directory)
    resumed = train.train_and_evaluate(TINY, interrupted, data_dir=directory)
    history = [json.loads(line) for line in (interrupted.results / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and resumed["epochs"] == 2
    for key in ("best", "final"):
        assert resumed["test"][key]["member_loss"] == straight["test"][key]["member_loss"]
    assert resumed["best_val_accuracy"] == straight["best_val_accuracy"]
    # The same name with another configuration is refused, and nothing is overwritten.
    with pytest.raises(RunError, match="different lr"):
        train.train_and_evaluate(dataclasses.replace(TINY, lr=0.5), interrupted, data_dir=directory)
    assert json.loads((interrupted.results / "config.json").read_text())["lr"] == TINY.lr


def test_retraining_on_all_the_data_keeps_no_validation_split_and_scores_the_final_state(synthetic_dir, tmp_path):
    directory, ds = synthetic_dir
    where = dict(results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "checkpoints")
    cfg = dataclasses.replace(TINY, val_fraction=0.0, select="final", epochs=3)
    paths = RunPaths("all_data", **where)
    summary = train.train_and_evaluate(cfg, paths, data_dir=directory)
    assert summary["best_epoch"] == [3] and summary["best_val_accuracy"] == [None]
    assert summary["test"]["best"] == summary["test"]["final"]
    history = [json.loads(line) for line in (paths.results / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert not any("val_accuracy" in h or "val_accuracy" in h["members"] for h in history)
    # Every training image trained: as many as epochs x steps x batch allow, none held out.
    steps = len(ds.y_train) // cfg.batch
    assert all(h["images_per_second"] * h["seconds"] == pytest.approx(steps * cfg.batch) for h in history)
    assert (paths.results / "history.png").exists()
    # With a validation split, select=final still scores the last epoch, whatever validation says.
    validated = train.train_and_evaluate(dataclasses.replace(cfg, val_fraction=0.25), RunPaths("final", **where),
                                         data_dir=directory)
    assert validated["best_epoch"] == [3] and validated["best_val_accuracy"][0] is not None


def test_a_run_validating_every_other_epoch_records_and_plots_only_those(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    paths = RunPaths("sparse", results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "checkpoints")
    summary = train.train_and_evaluate(dataclasses.replace(TINY, epochs=3, val_every=2), paths, data_dir=directory)
    history = [json.loads(line) for line in (paths.results / "metrics.jsonl").read_text().splitlines()]
    assert ["val_accuracy" in h for h in history] == [False, True, True]
    assert summary["best_epoch"][0] in (2, 3) and (paths.results / "history.png").stat().st_size > 0


def test_no_validation_split_needs_select_final():
    with pytest.raises(config.ConfigError, match="select=final") as error:
        dataclasses.replace(TINY, val_fraction=0.0).validate()
    assert error.value.field == "val_fraction"


@pytest.mark.parametrize("name", presets.NAMES)
def test_presets_are_valid_and_state_their_command_and_number(name):
    cfg = presets.get(name)
    cfg.validate()
    doc = presets.describe(name)
    text = __import__(f"fmnist_jax.presets.{name}", fromlist=["CONFIG"]).__doc__
    assert f"python -m experiments.cnn --preset={name}" in text
    assert name == "demo" or "%" in doc          # the earlier project's number


def test_a_run_recorded_before_a_field_existed_resumes_with_its_default():
    record = files.config_record(TINY, [])
    for name in ("ema_decay", "bias_lr_scale", "translate_pixels", "tta", "epoch_passes"):
        older = {k: v for k, v in record.items() if k != name}
        files.check_resumable(older, record, "old")          # the default is what it trained with
    changed = files.config_record(dataclasses.replace(TINY, ema_decay=0.9), [])
    with pytest.raises(RunError, match="different ema_decay"):
        files.check_resumable({k: v for k, v in record.items() if k != "ema_decay"}, changed, "old")
    # The test-time augmentation only changes the final report: a resumed run may change it.
    files.check_resumable(record, files.config_record(dataclasses.replace(TINY, tta="flip_shift"), []), "old")


def test_a_run_under_a_former_model_name_resumes_as_its_family_with_arguments():
    new = dataclasses.replace(TINY, model="speedrun", model_args={"widths": (32, 64, 128)})
    older = files.config_record(TINY, []) | {"model": "speedrun_small"}
    del older["model_args"]                    # config.json written before model_args existed
    assert config.from_record(older) == dataclasses.replace(TINY, model="speedrun_small") == new
    files.check_resumable(older, files.config_record(new, []), "old")
    with pytest.raises(RunError, match="different model_args"):
        files.check_resumable(older, files.config_record(dataclasses.replace(new, model_args={}), []), "old")
    # JSON lists come back as the tuples the model was built with, and the record is JSON.
    assert config.from_record(json.loads(json.dumps(config.as_record(new)))) == new


def test_the_library_reads_no_flags_and_keeps_no_hidden_state():
    for path in Path(config.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert "absl import flags" not in text and "FLAGS" not in text, path
        assert "contextvars" not in text, path
        # No memo, registry or flag that lives for the process: state is an argument or an object.
        for hidden in ("lru_cache", "functools.cache", "_held", "_applied", "_IMPORTED_AT"):
            assert hidden not in text, (path, hidden)
        assert not any(isinstance(node, ast.Global) for node in ast.walk(ast.parse(text))), path
