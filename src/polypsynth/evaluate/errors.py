from polypsynth.errors import PolypsynthError


class EvalError(PolypsynthError):
    """An evaluation input is missing, too small or inconsistent."""
