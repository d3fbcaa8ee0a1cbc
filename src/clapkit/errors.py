"""Errors that a user can act on: each names the file, row or option at fault."""


class ClapkitError(Exception):
    """Base class: the CLI prints these without a traceback."""


class TrainingError(ClapkitError):
    """Training cannot go on (e.g. too many non-finite steps in a row); the last good checkpoint is kept."""


class ConfigError(ClapkitError):
    """A config key or value is wrong."""


class DataError(ClapkitError):
    """A data file, row or value is wrong.

    ``where`` names the file and row; ``reason`` is a short kind of fault used to count
    skipped inputs (defaults to the message).
    """

    def __init__(self, message: str, where: str | None = None, reason: str | None = None):
        self.where = where
        self.reason = reason or message
        super().__init__(f"{where}: {message}" if where else message)
