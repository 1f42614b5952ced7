"""A trained run's variables, restored from its checkpoint without its training data.

    restored = restore.restore_run(RunPaths("my_run"), which="best")
    logits = restored.model.apply(restored.member_variables(0), images, train=False)
    probabilities = restored.predict()(restored.variables, x_test)      # every member: [M, N, 10]

`which` picks each member's best-validation variables ("best") or the latest epoch's ("latest").
Evaluation, analysis, prediction and export all start here.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np

from fmnist_jax import config
from fmnist_jax.config import TrainConfig
from fmnist_jax.data import datasets
from fmnist_jax.errors import ConfigError, RunError
from fmnist_jax.evaluation import scoring
from fmnist_jax.runs import checkpoint
from fmnist_jax.runs.files import RunPaths, read_record
from fmnist_jax.training import members as members_lib
from fmnist_jax.training import programs, sharding, step
from fmnist_jax.training.members import Member

WHICH = ("best", "latest")


@dataclasses.dataclass
class RestoredRun:
    """One checkpoint's variables of every member of a run, and what produced them."""
    paths: RunPaths
    cfg: TrainConfig
    members: list[Member]
    which: str
    variables: dict          # {"params", "batch_stats"}, each leaf with the member axis first
    epochs: list[int]        # the epoch each member's variables come from
    latest_epoch: int

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def class_names(self) -> tuple[str, ...]:
        return datasets.CLASS_NAMES[self.cfg.dataset]

    mesh: object             # where the member axis lives (training.sharding)

    @property
    def model(self) -> nn.Module:
        return step.build_model(self.cfg)

    @property
    def execution(self) -> str:
        """How the members run over their axis (members.resolve_member_execution)."""
        return members_lib.resolve_member_execution(self.cfg.member_execution, self.mesh, self.n_members)

    def predict(self):
        """A `scoring.make_member_predict` function for this run's model (call it once per use)."""
        return scoring.make_member_predict(scoring.inference(self.model), self.cfg.eval_batch, self.execution)

    def replicate(self, x):
        """A host array placed whole on every device of the run's mesh (e.g. the test images)."""
        return sharding.put(np.asarray(x), sharding.replicated(self.mesh))

    def member_variables(self, member: int) -> dict:
        """Member `member`'s variables (no member axis), as host numpy arrays."""
        return jax.tree.map(lambda a: np.asarray(a[member]), self.variables)

    def check_member(self, member: int | None) -> None:
        """ConfigError("member", ...) unless `member` is None or a member of this run."""
        if member is not None and not 0 <= member < self.n_members:
            raise ConfigError("member", f"must be in 0..{self.n_members - 1} for run {self.paths.name!r}, "
                                        f"got {member}.")


def saved_config(paths: RunPaths, **execution) -> tuple[TrainConfig, list[Member]]:
    """An existing run's TrainConfig and members, from its config.json.

    `execution` may override the fields that do not change results (config.EXECUTION_FIELDS,
    e.g. conv_impl="matmul"); None leaves the saved value.
    """
    record = read_record(paths)
    overrides = {k: v for k, v in execution.items() if v is not None}
    unknown = set(overrides) - set(config.EXECUTION_FIELDS)
    if unknown:
        raise ValueError(f"only execution fields can be overridden, not {sorted(unknown)}.")
    cfg = dataclasses.replace(config.from_record(record), **overrides)
    cfg.validate()
    return cfg, [Member.from_dict(m) for m in record.get("members", [{"seed": cfg.seed}])]


def check_which(which: str) -> None:
    if which not in WHICH:
        raise ConfigError("which", f"does not know {which!r}; choose from {', '.join(WHICH)}.")


def restore_run(paths: RunPaths, which: str = "best", *, mesh=None, **execution) -> RestoredRun:
    """The run's `which` variables from its latest checkpoint that restores (RunError when it has
    none; a damaged latest falls back to the one before, with a warning).

    mesh: where the member axis goes (default: a mesh over the local devices, as training made
    it); `execution` overrides execution fields of the saved config (e.g. conv_impl="matmul").
    """
    check_which(which)
    cfg, members = saved_config(paths, **execution)
    if not paths.checkpoints.exists():
        raise RunError(f"run {paths.name!r} has no checkpoints in {paths.checkpoints}.")
    mesh = mesh if mesh is not None else sharding.make_mesh(len(members), cfg.batch)
    ckpts = checkpoint.RunCheckpoints(paths.checkpoints)
    try:
        epoch, state = ckpts.restore_latest(programs.abstract_run_state(cfg, members, mesh), repair=False)
        if epoch is None:
            raise RunError(f"run {paths.name!r} has no checkpoint in {paths.checkpoints}.")
    finally:
        ckpts.close()
    if which == "best":
        variables, epochs = state.best, sharding.to_host(state.best_epoch).tolist()
    else:
        variables, epochs = step.variables_of(state.train), [epoch] * len(members)
    return RestoredRun(paths, cfg, members, which, variables, epochs, epoch, mesh)
