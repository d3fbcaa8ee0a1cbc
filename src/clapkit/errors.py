"""Errors that a user can act on: each names the file, row or option at fault."""


class ClapkitError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(ClapkitError):
    """A config key or value is wrong."""


class DataError(ClapkitError):
    """A data file, row or value is wrong. ``where`` names the file and row."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
