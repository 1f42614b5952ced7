"""The errors a person can act on. Each carries one sentence that names the problem and the fix;
entry points print it and exit with status 2 instead of showing a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input, missing data, an impossible configuration: anything the user can fix."""


class ConfigError(UserError, ValueError):
    """One configuration field holds an impossible value.

    `field` is the config field's name, which is also the name of the flag that sets it, so a
    command-line entry point can say `--field ...` without rewriting the message.
    """

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem

    def as_flag_message(self) -> str:
        """The message as a command line reads it: the flag, then the problem."""
        return f"--{self.field} {self.problem}"


class RunError(UserError):
    """A run on disk cannot be used as asked (missing, or saved with another configuration)."""


class RunInterrupted(UserError):
    """Training stopped on a signal after saving where it was; rerunning the command resumes.

    exit_code follows the shell's convention for a process ended by a signal (128 + its number).
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
