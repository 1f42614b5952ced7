"""Every script's flags: each bad value is one sentence naming the flag that holds it, exit status 2;
each script defines only the flags it uses."""

import dataclasses
import json
from collections.abc import Mapping

import pytest
from absl import flags

from experiments import analyze, cli, cnn, evaluate, export, knn, predict, sweep
from fmnist_jax.config import TrainConfig
from fmnist_jax.knn.run import KnnConfig

# (script, flags, the flag the message must name, a fragment of the problem)
BAD_FLAGS = [
    (cnn, ["--batch=0"], "--batch", "must be at least 1, got 0"),
    (cnn, ["--eval_batch=0"], "--eval_batch", "must be at least 1, got 0"),
    (cnn, ["--epochs=0"], "--epochs", "must be at least 1"),
    (cnn, ["--seeds=0"], "--seeds", "must be at least 1"),
    (cnn, ["--model=vgg"], "--model", "does not know 'vgg'"),
    (cnn, ["--augment=blur"], "--augment", "does not know 'blur'"),
    (cnn, ["--optimizer=lion"], "--optimizer", "does not know 'lion'"),
    (cnn, ["--schedule=step"], "--schedule", "does not know 'step'"),
    (cnn, ["--split=kfold"], "--split", "does not know 'kfold'"),
    (cnn, ["--conv_impl=fft"], "--conv_impl", "does not know 'fft'"),
    (cnn, ["--member_execution=pmap"], "--member_execution", "does not know 'pmap'"),
    (cnn, ["--dataset=cifar10"], "--dataset", "does not know 'cifar10'"),
    (cnn, ["--lr=0"], "--lr", "must be positive"),
    (cnn, ["--lr=0.1,0.2"], "--lr", "could not convert"),
    (cnn, ["--weight_decay=-1"], "--weight_decay", "must be at least 0"),
    (cnn, ["--dropout_scale=-1"], "--dropout_scale", "must be at least 0"),
    (cnn, ["--erase_p=2"], "--erase_p", "must be in [0, 1]"),
    (cnn, ["--label_smoothing=1"], "--label_smoothing", "must be in [0, 1)"),
    (cnn, ["--val_fraction=0"], "--val_fraction", "0 leaves nothing to validate"),
    (cnn, ["--val_fraction=1"], "--val_fraction", "must be in [0, 1)"),
    (cnn, ["--warmup_epochs=-1"], "--warmup_epochs", "must be at least 0"),
    (cnn, ["--train_limit=-5"], "--train_limit", "must be 0 (all) or positive"),
    (cnn, ["--ema_decay=1"], "--ema_decay", "must be in [0, 1) (0: off)"),
    (cnn, ["--ema_decay=-0.5"], "--ema_decay", "must be in [0, 1) (0: off)"),
    (cnn, ["--bias_lr_scale=0"], "--bias_lr_scale", "must be positive"),
    (cnn, ["--translate_pixels=0"], "--translate_pixels", "must be in 1..13"),
    (cnn, ["--translate_pixels=14"], "--translate_pixels", "must be in 1..13"),
    (cnn, ["--tta=rotate"], "--tta", "does not know 'rotate'"),
    (cnn, ["--augment=flip,alt_flip"], "--augment", "both flip and alt_flip"),
    (cnn, ["--seeds=2", "--split_per_seed", "--split=ordered"], "--split", "cannot be split per seed"),
    (cnn, ["--batch=500"], "--batch", "larger than the training set"),
    (cnn, ["--preset=seed001"], "--preset", "does not know 'seed001'"),
    (cnn, ["--run_name=../../escape"], "--run_name", "must be a plain folder name"),
    (cnn, ["--epochs=two"], "--epochs", "invalid literal"),
    (cnn, ["--no_such_flag=1"], "no_such_flag", "Unknown command line flag"),
    (sweep, ["--lr=0.1,x"], "--lr", "must be a comma list of numbers"),
    (sweep, ["--lr=0.1,0.1"], "--lr", "lists a value twice"),
    (sweep, ["--erase_p=0.5,2"], "--erase_p", "must be in [0, 1]"),
    (sweep, ["--model=mlp,vgg"], "--model", "does not know 'vgg'"),
    (sweep, ["--batch=30,x"], "--batch", "must be a comma list of integers"),
    (sweep, ["--run_name=a/b"], "--run_name", "must be a plain folder name"),
    (evaluate, [], "--run", "is required"),
    (evaluate, ["--run=nothing"], "no run 'nothing'", ""),
    (evaluate, ["--run=../x"], "--run", "must be a plain folder name"),
    (evaluate, ["--run=x", "--which=worst"], "--which", "value should be one of"),
    (evaluate, ["--run=x", "--conv_impl=fft"], "--conv_impl", "does not know 'fft'"),
    (evaluate, ["--run=x", "--eval_batch=0"], "--eval_batch", "must be at least 1"),
    (evaluate, ["--run=x", "--lr=0.1"], "lr", "Unknown command line flag"),
    (evaluate, ["--run=x", "--tta_views=rotate"], "--tta_views", "value should be one of"),
    (analyze, [], "--run", "is required"),
    (analyze, ["--run=nothing"], "no run 'nothing'", ""),
    (analyze, ["--run=../x"], "--run", "must be a plain folder name"),
    (analyze, ["--run=x", "--which=worst"], "--which", "value should be one of"),
    (analyze, ["--run=x", "--tsne_points=-1"], "--tsne_points", "must be 0 (every test image) or positive"),
    (analyze, ["--run=x", "--tsne_iter=10"], "--tsne_iter", "must be at least 250"),
    (analyze, ["--run=x", "--feature_images=0"], "--feature_images", "must be in 1..16"),
    (analyze, ["--run=x", "--epochs=3"], "epochs", "Unknown command line flag"),
    (predict, ["a.png"], "--run", "is required"),
    (predict, ["--run=x"], "no files given", ""),
    (predict, ["--run=nothing", "a.png"], "no run 'nothing'", ""),
    (predict, ["--run=../x", "a.png"], "--run", "must be a plain folder name"),
    (predict, ["--run=x", "--which=worst", "a.png"], "--which", "value should be one of"),
    (export, [], "--run", "is required"),
    (export, ["--run=nothing"], "no run 'nothing'", ""),
    (export, ["--run=../x"], "--run", "must be a plain folder name"),
    (export, ["--run=x", "--which=worst"], "--which", "value should be one of"),
    (export, ["--run=x", "extra"], "unexpected argument 'extra'", ""),
    (cnn, ["--model_args=widths"], "--model_args", "must be a JSON object"),
    (cnn, ["--model=speedrun", '--model_args={"widht": [8, 16, 32]}'], "--model_args",
     "takes no argument 'widht'"),
    (knn, ["--k=0"], "--k", "must be at least 1"),
    (knn, ["--k=500"], "--k", "larger than the training set"),
    (knn, ["--k=five"], "--k", "must be a comma list of integers"),
    (knn, ["--val_fraction=1.5"], "--val_fraction", "must be in [0, 1)"),
    (knn, ["--metric=cosine"], "--metric", "does not know 'cosine'"),
    (knn, ["--memory_mb=0"], "--memory_mb", "must be positive"),
    (knn, ["--run_name=.."], "--run_name", "must be a plain folder name"),
    (knn, ["--epochs=3"], "epochs", "Unknown command line flag"),
]


@pytest.mark.parametrize("script, argv, flag, problem", BAD_FLAGS,
                         ids=[f"{s.__name__.split('.')[-1]}:{' '.join(a) or 'none'}" for s, a, _, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_sentence_naming_it(dirs, tmp_path, capsys, script, argv, flag, problem):
    paths = dirs[:2] if script is knn else dirs[1:] if script in (predict, export) else dirs
    with pytest.raises(SystemExit) as exit_info:
        cli.invoke(script, [*paths, *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert flag in err and problem in err, err
    assert not (tmp_path / "results").exists(), "a bad flag must not write anything"


def _flag_names(script) -> set[str]:
    fv = flags.FlagValues()
    script.define_flags(fv)
    return set(fv)


def test_each_script_defines_only_what_it_uses():
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    folders = {"run_name", "results_dir", "checkpoint_dir", "data_dir", "overwrite"}
    process = {"keep_freed_memory", "distributed", "num_processes", "process_id", "coordinator", "heartbeat_timeout"}
    assert _flag_names(cnn) == train_fields | folders | process | {"preset", "progress"}
    assert _flag_names(sweep) == _flag_names(cnn)
    assert _flag_names(evaluate) == {"run", "which", "tta", "tta_views", "member", "conv_impl", "eval_batch",
                                     "results_dir", "checkpoint_dir", "data_dir"}
    assert _flag_names(analyze) == {"run", "which", "member", "tsne_points", "tsne_iter", "feature_images",
                                    "results_dir", "checkpoint_dir", "data_dir"}
    assert _flag_names(predict) == {"run", "which", "json", "results_dir", "checkpoint_dir"}
    assert _flag_names(export) == {"run", "which", "member", "results_dir", "checkpoint_dir"}
    assert _flag_names(knn) == {f.name for f in dataclasses.fields(KnnConfig)} | {"run_name", "results_dir", "data_dir"}


def test_flags_carry_their_fields_defaults_and_help():
    fv = flags.FlagValues()
    cnn.define_flags(fv)
    for field in dataclasses.fields(TrainConfig):
        flag = fv[field.name]
        default = (list(map(str, field.default)) if isinstance(field.default, tuple) else
                   json.dumps(dict(field.default)) if isinstance(field.default, Mapping) else field.default)
        assert flag.default == default and field.metadata["help"] in flag.help, field.name


def _cnn_config(*argv):
    fv = flags.FlagValues()
    cnn.define_flags(fv)
    fv(["cnn", *argv])
    return cnn.config_from_flags(fv)


def test_model_args_come_from_json_and_belong_to_their_model():
    cfg = _cnn_config("--model=speedrun", '--model_args={"widths": [8, 16, 32], "activation": "relu"}')
    assert (cfg.model, dict(cfg.model_args)) == ("speedrun", {"activation": "relu", "widths": (8, 16, 32)})
    # A preset's model_args are for its model: naming another model starts from that one's defaults.
    assert dict(_cnn_config("--preset=speedrun").model_args) == {"widths": (32, 64, 128)}
    assert _cnn_config("--preset=speedrun", "--model=seed003").model_args == {}
    # A former zoo name (as in committed records' commands) is its family with the arguments it stood for.
    former = _cnn_config("--preset=speedrun", "--model=speedrun_small_relu")
    assert (former.model, dict(former.model_args)) == ("speedrun", {"activation": "relu", "widths": (32, 64, 128)})
    # The command that repeats a run quotes the JSON for the shell.
    fv = flags.FlagValues()
    cnn.define_flags(fv)
    fv(["cnn", '--model_args={"widths": [8, 16, 32]}'])
    assert cli.command_line(cnn, fv) == "python -m experiments.cnn '--model_args={\"widths\": [8, 16, 32]}'"
