"""Errors with messages meant for the user: each names the input and what was expected."""


class PolypsynthError(Exception):
    """Base class; the CLI prints these as one line, without a traceback, and exits with status 1."""


class ConfigError(PolypsynthError):
    """A config file, key or value is wrong."""


class DataError(PolypsynthError):
    """A dataset, folder, image or label is wrong."""


class SamplingError(PolypsynthError):
    """A sampling request or model is invalid (backends, export and sampling all raise it, so it
    lives here rather than in any one of them)."""


class EvalError(PolypsynthError):
    """An evaluation input is missing, too small or inconsistent."""
