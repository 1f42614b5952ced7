"""What every experiment script shares: flags generated from config dataclasses, the run-folder
flags, process set-up, and one way of failing (one sentence on stderr, exit status 2).

A script is a module with two functions:

    define_flags(fv: flags.FlagValues) -> None    # the script's own flags, and no others
    main(fv: flags.FlagValues, args: list[str])   # reads the flags, calls the library

`run_script(module)` runs it from the command line (absl's app.run on the global FLAGS);
`invoke(module, argv)` runs it in-process on a fresh FlagValues (tests). A script that takes
positional arguments sets TAKES_ARGS = True. Flags are never
defined at import time, so scripts imported side by side do not share or clash over flags, and
`--helpfull` lists only what the script uses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
from absl import app, flags
from absl import logging as absl_logging

from fmnist_jax import config, presets
from fmnist_jax.errors import ConfigError, UserError
from fmnist_jax.runs import host_memory, restore
from fmnist_jax.runs.files import RunPaths, check_run_name
from fmnist_jax.training import sharding

log = logging.getLogger("experiments")

_NO_DEFAULT = object()

# When this process imported the experiment tooling: where /proc cannot say when the process
# started (not Linux), a run's wall clock counts from here.
STARTED_AT = time.time()


def _help(field: dataclasses.Field) -> str:
    choices = field.metadata.get("choices")
    return field.metadata.get("help", "") + (f" One of: {', '.join(choices)}." if choices else "")


def define_config_flags(fv: flags.FlagValues, cls, *, lists: Iterable[str] = (), only: Iterable[str] | None = None,
                        defaults: dict[str, Any] | None = None) -> None:
    """One flag per field of the dataclass `cls`: the field's name, default and help.

    Fields named in `lists` (and tuple fields) become comma-list flags; `only` restricts the
    fields; `defaults` replaces field defaults (e.g. None for "as the run was trained").
    """
    lists, defaults = set(lists), defaults or {}
    for field in dataclasses.fields(cls):
        if only is not None and field.name not in only:
            continue
        default = defaults.get(field.name, field.default)
        args = dict(name=field.name, help=_help(field), flag_values=fv)
        if isinstance(field.default, Mapping):        # e.g. model_args: a JSON object
            flags.DEFINE_string(default=None if default is None else json.dumps(dict(default)), **args)
        elif field.name in lists or isinstance(field.default, tuple):
            values = default if isinstance(default, tuple) else (default,)
            flags.DEFINE_list(default=None if default is None else [str(v) for v in values], **args)
        elif isinstance(field.default, bool):
            flags.DEFINE_bool(default=default, **args)
        elif isinstance(field.default, int):
            flags.DEFINE_integer(default=default, **args)
        elif isinstance(field.default, float):
            flags.DEFINE_float(default=default, **args)
        else:
            flags.DEFINE_string(default=default, **args)


def _cast_list(field: dataclasses.Field, raw: Sequence[str]) -> list:
    sample = field.default[0] if isinstance(field.default, tuple) else field.default
    kind = type(sample)
    raw = [v for v in raw if v.strip() and v.strip() != "none"] if isinstance(field.default, tuple) else raw
    try:
        return [kind(v.strip()) if kind is not str else v.strip() for v in raw]
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise ConfigError(field.name, f"must be a comma list of {noun}, got {','.join(raw)!r}.") from None


def config_values(fv: flags.FlagValues, cls, *, base=None, lists: Iterable[str] = ()) -> dict[str, Any]:
    """Each field's value: the flag where given on the command line, else `base`'s (a preset),
    else the flag's default. Fields in `lists` come back as lists, tuple fields as tuples."""
    lists = set(lists)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in fv:
            continue
        flag = fv[field.name]
        if base is not None and not flag.present:
            value = getattr(base, field.name)
            values[field.name] = [value] if field.name in lists else value
        elif isinstance(field.default, Mapping):
            values[field.name] = config.parse_model_args(flag.value)
        elif field.name in lists:
            values[field.name] = _cast_list(field, flag.value)
        elif isinstance(field.default, tuple):
            values[field.name] = tuple(_cast_list(field, flag.value))
        else:
            values[field.name] = flag.value
    return values


def define_preset_flag(fv: flags.FlagValues) -> None:
    listing = "; ".join(f"{name}: {presets.describe(name)}" for name in presets.NAMES)
    flags.DEFINE_string("preset", None, f"Start from a named configuration (fmnist_jax/presets); flags "
                        f"given explicitly override its fields. {listing}", flag_values=fv)


def preset(fv: flags.FlagValues):
    """The --preset's TrainConfig, or None."""
    return presets.get(fv.preset) if fv.preset else None


def command_line(script, fv: flags.FlagValues) -> str:
    """The command that repeats this invocation: ``python -m <script>`` and the script's flags
    that were given explicitly, sorted, as absl writes them (--name=value, --flag, --noflag)."""
    own = _own_flags(script)
    given = [shlex.quote(fv[name].serialize()) for name in sorted(fv) if name in own and fv[name].present]
    # Run with `python -m`, the script's __name__ is "__main__"; its spec keeps the module's name.
    module = getattr(getattr(script, "__spec__", None), "name", None) or script.__name__
    return " ".join([f"python -m {module}", *given])


def _own_flags(script) -> set[str]:
    """The flags the script defined (not absl's logging flags)."""
    fresh = flags.FlagValues()
    script.define_flags(fresh)
    return set(fresh)


def define_run_flags(fv: flags.FlagValues, *, name: bool = True, checkpoints: bool = True,
                     overwrite: bool = True, data: bool = True) -> None:
    """--results_dir (and --data_dir, --run_name, --checkpoint_dir, --overwrite)."""
    if name:
        flags.DEFINE_string("run_name", None, "Run folder name: letters, digits, '-', '_', '.' "
                            "(default: derived from the flags).", flag_values=fv)
    flags.DEFINE_string("results_dir", "results", "Where results/<run>/ is written.", flag_values=fv)
    if data:
        flags.DEFINE_string("data_dir", None, "Folder of the IDX files (default: $FMNIST_DATA_DIR, ./data/<dataset>, "
                            "then Debian's /usr/share/datasets/fashion-mnist for Fashion-MNIST).", flag_values=fv)
    if checkpoints:
        flags.DEFINE_string("checkpoint_dir", "checkpoints", "Where checkpoints/<run>/ is kept.", flag_values=fv)
    if overwrite:
        flags.DEFINE_bool("overwrite", False, "Start the run from scratch, deleting its checkpoints.",
                          flag_values=fv)


def define_trained_run_flags(fv: flags.FlagValues, *, data: bool = True) -> None:
    """--run and --which, and the folders, for a script that reads a trained run."""
    flags.DEFINE_string("run", None, "Run name (a folder of results/ and checkpoints/).", flag_values=fv)
    flags.DEFINE_enum("which", "best", list(restore.WHICH),
                      "Each member's selected variables (its epoch chosen by the run's --select: best validation accuracy or loss, or the final epoch), or the latest epoch's.", flag_values=fv)
    define_run_flags(fv, name=False, overwrite=False, data=data)


def trained_run_paths(fv: flags.FlagValues) -> RunPaths:
    """The folders of the trained run --run names (ConfigError when it is missing or not a plain name)."""
    if not fv.run:
        raise ConfigError("run", "is required: the name of a trained run (a folder of results/).")
    return RunPaths(check_run_name(fv.run, field="run"), fv.results_dir, fv.checkpoint_dir)


def run_paths(fv: flags.FlagValues, name: str | None = None) -> RunPaths:
    """The run's folders from --run_name (or `name`), --results_dir and --checkpoint_dir."""
    checkpoint_dir = fv.checkpoint_dir if "checkpoint_dir" in fv else "checkpoints"
    return RunPaths(check_run_name(fv.run_name or name), fv.results_dir, checkpoint_dir)


def define_process_flags(fv: flags.FlagValues) -> None:
    """--keep_freed_memory and --distributed: set-up of a training process."""
    flags.DEFINE_bool("keep_freed_memory", True, "Linux: malloc keeps freed memory for reuse instead of "
                      "unmapping it (XLA CPU allocates its buffers anew every call).", flag_values=fv)
    flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() first "
                      "(coordinator found automatically on TPU pods and SLURM).", flag_values=fv)
    flags.DEFINE_integer("num_processes", 0, "Multi-host by hand: the number of processes (0: one, or "
                         "found by --distributed).", flag_values=fv)
    flags.DEFINE_integer("process_id", 0, "Multi-host by hand: this process's rank, 0..num_processes-1.",
                         flag_values=fv)
    flags.DEFINE_string("coordinator", None, "Multi-host by hand: host:port of process 0's coordinator "
                        "(e.g. 127.0.0.1:12355).", flag_values=fv)
    flags.DEFINE_integer("heartbeat_timeout", 100, "Multi-host: seconds without news from a process after "
                         "which the others stop.", flag_values=fv)


def define_progress_flag(fv: flags.FlagValues) -> None:
    flags.DEFINE_bool("progress", True, "Show each epoch's progress on stderr (a live bar on a terminal, a "
                      "line every 10% otherwise) with images a second and time left.", flag_values=fv)


def setup_process(fv: flags.FlagValues) -> dict:
    """Per-process set-up of a training script: malloc, and joining a multi-host run when asked.
    Returns what was set up, for the run's summary (`summary.summarize`'s invocation)."""
    kept = bool(fv.keep_freed_memory and host_memory.keep_freed_memory())
    if kept:
        log.info("malloc keeps freed memory for reuse (--nokeep_freed_memory to turn off)")
    if fv.num_processes > 1 or fv.distributed:
        if fv.num_processes > 1 and not fv.coordinator:
            raise ConfigError("coordinator", "is needed with num_processes: give process 0's host:port.")
        if not 0 <= fv.process_id < max(fv.num_processes, 1):
            raise ConfigError("process_id", f"must be in 0..{fv.num_processes - 1}, got {fv.process_id}.")
        if fv.num_processes > 1:
            sharding.initialize_distributed(fv.coordinator, fv.num_processes, fv.process_id, fv.heartbeat_timeout)
        else:
            sharding.initialize_distributed(heartbeat_timeout_seconds=fv.heartbeat_timeout)
        if not sharding.is_main_process():   # process 0 logs; the others only warn
            absl_logging.set_verbosity(absl_logging.WARNING)
            logging.getLogger().setLevel(logging.WARNING)
    return {"malloc_keeps_freed_memory": kept, "started_at": STARTED_AT}


def setup_logging() -> None:
    """Library logging (module loggers) shows through absl at INFO level."""
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger().setLevel(logging.INFO)
    for noisy in ("jax._src.xla_bridge", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, status: int = 2):
    """Prints `message` to stderr as one line and exits with `status`."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


# What a failed cross-process collective says, also when a library re-raised it as its own error.
_PEER_LOST = ("Gloo", "Connection closed by peer", "DEADLINE_EXCEEDED", "coordination service")


def _runtime_cause(error: BaseException | None, depth: int = 8) -> BaseException | None:
    """The runtime error of a failed collective that `error` is or was raised from (through
    __cause__ / __context__), or None."""
    while error is not None and depth:
        if isinstance(error, jax.errors.JaxRuntimeError) or any(s in str(error) for s in _PEER_LOST):
            return error
        error, depth = error.__cause__ or error.__context__, depth - 1
    return None


def reporting_errors(fn: Callable[[], Any]) -> Any:
    """fn(), with every error a person can act on turned into one sentence and exit status 2."""
    try:
        return fn()
    except ConfigError as e:
        fail(e.as_flag_message())
    except (UserError, flags.Error, jax.errors.JaxRuntimeError) as e:
        # Multi-host: a peer that died shows as a failed collective (maybe inside a checkpoint save).
        runtime = _runtime_cause(e)
        if runtime is not None and jax.process_count() > 1:
            first = (str(runtime).strip().splitlines() or [type(runtime).__name__])[0]
            fail(f"process {jax.process_index()} of this {jax.process_count()}-process run lost another "
                 f"process ({first[:200]}); the last finished epoch is saved: start every process again with "
                 "the same command to resume.", 3)
        if isinstance(e, jax.errors.JaxRuntimeError):
            raise
        fail(str(e), getattr(e, "exit_code", 2))


def _call_main(script, fv: flags.FlagValues, argv: Sequence[str]):
    args = list(argv[1:])
    if args and not getattr(script, "TAKES_ARGS", False):
        fail(f"unexpected argument {args[0]!r}; flags are written --name=value.")
    return reporting_errors(lambda: script.main(fv, args))


def run_script(script) -> None:
    """The command-line entry point of a script: ``cli.run_script(sys.modules[__name__])``."""
    script.define_flags(flags.FLAGS)

    def main(argv) -> None:
        setup_logging()              # after app.run has applied absl's own logging flags
        _call_main(script, flags.FLAGS, argv)   # its result is for in-process callers; exit 0

    app.run(main, flags_parser=lambda argv: reporting_errors(lambda: flags.FLAGS(argv)))


def invoke(script, argv: Sequence[str] = ()) -> Any:
    """Runs `script` in-process on `argv` with a FlagValues of its own; errors exit exactly as
    on the command line. Returns the script's main's result (tests call scripts this way)."""
    fv = flags.FlagValues()
    script.define_flags(fv)
    rest = reporting_errors(lambda: fv([script.__name__, *argv]))
    return _call_main(script, fv, rest)
