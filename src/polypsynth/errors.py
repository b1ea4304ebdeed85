"""Errors with messages meant for the user: each names the input and what was expected."""


class PolypsynthError(Exception):
    """Base class; the CLI prints these without a traceback and exits with status 2."""


class ConfigError(PolypsynthError):
    """A config file, key or value is wrong."""


class DataError(PolypsynthError):
    """A dataset, folder, image or label is wrong."""
