"""The `polypsynth` command line. Each command parses its options and calls one plain function;
heavy libraries (torch, diffusers, grpc) are imported inside the commands so `--help` is instant."""

from polypsynth.cli import config, data, demo, evaluation, export, judge, sampling, serving, train  # noqa: F401  (registers commands)
from polypsynth.cli.common import main, max_hash_distance_option

__all__ = ["main", "max_hash_distance_option"]
