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


class NonFiniteError(UserError):
    """A loss or score became NaN or infinite; the run stopped with its last good checkpoint."""
