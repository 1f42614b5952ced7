"""A trained run scored on the test set: summary.json, history.png and a one-line headline.

Every member's best-validation variables and final variables are evaluated once, plain and with
the config's test-time augmentation (TrainConfig.tta, flip unless set; see `fmnist_jax.evaluation.tta`);
the summary holds each member's accuracy, their mean ± std and the
ensemble's (mean softmax).
"""

from __future__ import annotations

import logging

import numpy as np

from fmnist_jax import config
from fmnist_jax.data import datasets
from fmnist_jax.evaluation import ensemble, report, tta
from fmnist_jax.models import layers
from fmnist_jax.runs import tensorboard
from fmnist_jax.runs.files import PROBABILITIES_FILE, environment, process_seconds, write_json, write_npz
from fmnist_jax.runs.run_dir import TENSORBOARD_DIR
from fmnist_jax.training import sharding, step

log = logging.getLogger(__name__)


def test_probabilities(predict, variables, x_test, views: str) -> dict:
    """Class probabilities [M, N, C] of `variables` [M] on the test set, plain and averaged over
    the TTA views `views` (the plain image is the first view, predicted once); `predict` is a
    `scoring.make_member_predict` function."""
    logits = tta.view_logits(predict, variables, x_test, views)
    return {"plain": ensemble.member_probabilities(logits[0]), "tta": ensemble.mean_probabilities(logits)}


def test_scores(predict, variables, x_test, y_test, views: str) -> dict:
    """Ensemble scores (ensemble.score) of `variables` [M] on the test set, plain and with the
    TTA views, and the probabilities they come from (under "probabilities")."""
    probs = test_probabilities(predict, variables, x_test, views)
    return {"plain": ensemble.score(probs["plain"], y_test), "tta": ensemble.score(probs["tta"], y_test),
            "probabilities": probs}


def summarize(run, invocation: dict | None = None, stopped_seconds: float = 0.0) -> dict:
    """Scores a `train.TrainedRun` on the test set; writes summary.json, the members' test
    probabilities and history.png; returns the summary.

    Besides the scores it records how long this process took from its start to here
    (`wall_seconds`: start-up, compilation, training and the test evaluation; the time-to-accuracy
    figure when `started_at_epoch` is 0, i.e. the run was not resumed) and `invocation` (the
    command, the preset, and what the process set up: `malloc_keeps_freed_memory`, `started_at`).
    `stopped_seconds`: how long the process was stopped (SIGSTOP; `runs.pause_clock`), left out
    of `wall_seconds` and recorded beside it.
    """
    cfg, state, invocation = run.setup.cfg, run.state, dict(invocation or {})
    predict, ds = run.programs.predict, run.dataset
    x_test = run.setup.replicate(ds.x_test)
    best = test_scores(predict, state.best, x_test, ds.y_test, cfg.tta)
    # When every member's best epoch is its last, its best variables are its final ones (a
    # copy): scoring them again would only repeat the most expensive part of the summary.
    last_is_best = bool(run.history) and all(e == cfg.epochs for e in sharding.to_host(state.best_epoch).tolist())
    final = best if last_is_best else test_scores(predict, step.variables_of(state.train), x_test, ds.y_test, cfg.tta)
    result = {
        "run": run.name,
        "model": cfg.model,
        "model_args": config.as_record(cfg)["model_args"],
        "dataset": cfg.dataset,
        "parameters": run.n_params,
        "members": [m.as_dict() for m in run.setup.members],
        "epochs": len(run.history),
        "best_epoch": sharding.to_host(state.best_epoch).tolist(),
        "best_val_accuracy": _scores(state.best_val_accuracy),
        "best_val_loss": _scores(state.best_val_loss),
        "select": cfg.select,
        "test_accuracy_best": best["plain"]["mean_accuracy"],
        "test_accuracy_best_std": best["plain"]["std_accuracy"],
        "ensemble_test_accuracy_best": best["plain"]["ensemble_accuracy"],
        "test_accuracy_best_tta": best["tta"]["mean_accuracy"],
        "ensemble_test_accuracy_best_tta": best["tta"]["ensemble_accuracy"],
        "test_accuracy_final": final["plain"]["mean_accuracy"],
        "tta": cfg.tta,
        "test": {"best": best["plain"], "best_tta": best["tta"], "final": final["plain"], "final_tta": final["tta"]},
        "train_seconds": sum(h["seconds"] for h in run.history),
        "started_at_epoch": run.started_at_epoch,
        "invocation": invocation,
        "median_images_per_second": float(np.median([h["images_per_second"] for h in run.history]))
        if run.history else None,
        "conv_impl": layers.resolve_conv_impl(cfg.conv_impl),
        "devices": sharding.describe(run.setup.mesh),
        "member_execution": run.setup.execution_label,
        "malloc_keeps_freed_memory": bool(invocation.get("malloc_keeps_freed_memory", False)),
        "environment": environment(),
    }
    # Last: the test evaluation counts. A process stopped (SIGSTOP) part of the way has the
    # stopped time left out, and says how much.
    wall = process_seconds(invocation.get("started_at"))
    result["stopped_seconds"] = stopped_seconds
    result["wall_seconds"] = None if wall is None else wall - stopped_seconds
    if sharding.is_main_process():          # every process scored (collectives); one writes
        _write_summary(run, result, best["probabilities"])
    log.info("%s", headline(result))
    return result


def _scores(values) -> list[float | None]:
    """Each member's validation score; None where there is none (no validation split)."""
    return [None if np.isnan(v) else v for v in sharding.to_host(values).tolist()]


def _write_summary(run, result: dict, probabilities: dict) -> None:
    """summary.json, the members' test probabilities, the confusion matrix and history plots, and
    the plots as TensorBoard images."""
    cfg, ds, out = run.setup.cfg, run.dataset, run.paths.results
    # float32: 0.4 MB a member and view set; the votes of separately trained runs come from here.
    write_npz(out / PROBABILITIES_FILE, labels=np.asarray(ds.y_test),
              **{f"best_{k}": v.astype(np.float32) for k, v in probabilities.items()})
    write_json(out / "summary.json", result)
    names = datasets.CLASS_NAMES[cfg.dataset]
    chosen = probabilities["plain"].mean(0).argmax(-1)       # the members' soft vote
    report.plot_confusion(report.confusion_matrix(np.asarray(ds.y_test), chosen), names,
                          out / "confusion_matrix.png", f"{run.name} (best, {'ensemble' if len(run.setup.members) > 1 else 'model'})")
    figures = ["confusion_matrix.png"]
    if run.history:
        report.plot_history(run.history, out / "history.png", title=f"{run.name} ({cfg.model})")
        figures.append("history.png")
    events = tensorboard.EventWriter(out / TENSORBOARD_DIR)
    for name in figures:
        events.image(name.removesuffix(".png"), (out / name).read_bytes(), len(run.history))


def headline(summary: dict) -> str:
    """One line: best epochs and test accuracy (members, ensemble, TTA)."""
    test = summary["test"]
    views = summary.get("tta", "flip")     # summaries written before TrainConfig.tta used flip
    if len(summary["members"]) == 1:
        val = summary["best_val_accuracy"][0]
        picked = ("final epoch (no validation split)" if val is None else
                  f"{'final' if summary.get('select') == 'final' else 'best'} epoch {summary['best_epoch'][0]} (val {val:.4f})")
        return (f"{summary['run']}: {picked} -> test accuracy {test['best']['mean_accuracy']:.4f}, "
                f"loss {test['best']['member_loss'][0]:.4f}; with {views} TTA {test['best_tta']['mean_accuracy']:.4f}; "
                f"final state {test['final']['mean_accuracy']:.4f}.")
    return (f"{summary['run']}: {len(summary['members'])} members, best epochs {summary['best_epoch']} -> "
            f"test accuracy {test['best']['mean_accuracy']:.4f} ± {test['best']['std_accuracy']:.4f}, "
            f"ensemble {test['best']['ensemble_accuracy']:.4f}; with {views} TTA "
            f"{test['best_tta']['mean_accuracy']:.4f} ± {test['best_tta']['std_accuracy']:.4f}, "
            f"ensemble {test['best_tta']['ensemble_accuracy']:.4f}.")
