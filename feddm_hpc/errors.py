"""Exceptions that map to the CLI's exit codes.

UserError (and its subclasses) means the person's input is wrong: the CLI prints
`error: <message>` on one line and exits 2. Anything else is an internal error (exit 1).
"""


class UserError(Exception):
    """Wrong input: config, flag, missing or corrupt data or checkpoint. Exit code 2."""


class ConfigError(UserError):
    """A config field is unknown, mistyped or inconsistent. The message names the field."""


class DataError(UserError):
    """A dataset is missing or corrupt. The message names the file and says how to get it."""


class CheckpointError(UserError):
    """A checkpoint is unreadable, truncated or fails its checksum. The message names the file."""
