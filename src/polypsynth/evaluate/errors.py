"""EvalError lives in polypsynth.errors; re-exported here for old imports."""

from polypsynth.errors import EvalError

__all__ = ["EvalError"]
