"""User-facing errors: everything a user can cause, printed by the CLI as one line."""

from __future__ import annotations


class UserError(Exception):
    """Any error caused by user input; `cli.main` prints it as `error: ...` and exits 2."""


class ConfigError(UserError):
    """A flag, config file or value is invalid."""


class MissingModelError(UserError):
    """Pretrained weights are missing locally and cannot be downloaded."""


class RunDirExistsError(UserError):
    """The run directory already exists and neither --resume nor --overwrite was given."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or incompatible with the config."""


class NonFiniteError(RuntimeError):
    """A loss or score became NaN or infinite; the run stopped with its last good checkpoint.

    Not a UserError: it can come from a bug in our own code, so the CLI keeps its traceback.
    """


class RunDirBusyError(UserError):
    """Another live process holds the run directory's lock."""


class StorageError(UserError):
    """A file of the run could not be written (disk full, read-only, permissions)."""


class RunStopped(Exception):
    """A run stopped on request (SIGTERM, SIGUSR1, Ctrl-C) after saving a checkpoint."""

    def __init__(self, message: str, run_dir: str, step: int, exit_code: int) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.step = step
        self.exit_code = exit_code
