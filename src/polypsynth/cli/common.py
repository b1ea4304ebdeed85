"""What every command shares: the `main` group, the error wrapper and the common options."""

from __future__ import annotations

import errno
import functools
import os

import click

from polypsynth import __version__
from polypsynth.errors import PolypsynthError

# A file system that refuses a write (permissions, read-only, full) is the user's to fix, not a bug.
REFUSED_WRITES = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def user_errors(fn):
    """Show PolypsynthError, and a file system's refusal, as a one-line error (exit status 1)
    naming the path, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PolypsynthError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            if exc.errno not in REFUSED_WRITES:
                raise
            if exc.filename:
                raise click.ClickException(f"{exc.filename}: {exc.strerror}") from exc
            if exc.errno in (
                errno.ENOSPC,
                errno.EDQUOT,
            ):  # no file named: the output stream, or a library's write
                _quiet_stdout()
                raise click.ClickException(
                    f"no space left to write the output ({exc.strerror}): free some space, or write elsewhere"
                ) from exc
            raise

    return wrapper


def _quiet_stdout() -> None:
    """A full stdout would fail again when Python flushes it at exit (a second traceback): point
    the process's stdout at /dev/null before the one-line error goes to stderr."""
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (a test runner's buffer)
        pass


def real_options(fn):
    """`--real`, `--real-kind` and `--label`: the real AD / NON_AD data of `reconstruct` and `evaluate`."""
    fn = label_option(fn)
    fn = click.option(
        "--real-kind",
        type=click.Choice(["phantom", "image_folder", "csv", "cvc_classif"]),
        help="Layout of --real (default: guessed).",
    )(fn)
    return click.option(
        "--real",
        required=True,
        type=click.Path(exists=True),
        help="Real AD/NON_AD data with train and test splits.",
    )(fn)


label_option = click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="NAME=LABEL",
    help="Map a label name of the data to AD, NON_AD, polyp or non_polyp, e.g. 'ssl=AD' (repeatable).",
)


def label_map(labels):
    """The LabelMap of repeated --label NAME=LABEL options."""
    from polypsynth.data.records import LabelMap
    from polypsynth.errors import DataError

    extra = {}
    for item in labels:
        name, sep, label = item.partition("=")
        if not sep or not name:
            raise DataError(f"--label expects NAME=LABEL, got {item!r}")
        extra[name] = label
    return LabelMap(extra)


def load_real_set(real: str, real_kind: str | None, labels=()):
    """The AD / NON_AD records of --real as train and test image sets."""
    from polypsynth.data.sources import load_any
    from polypsynth.evaluate.sets import real_data

    records = load_any(real, real_kind, label_map(labels))
    return real_data([r for r in records if r.label in ("AD", "NON_AD")])


# Leakage search of `data inspect` and `evaluate` (the default is data.inspect.MAX_HASH_DISTANCE).
max_hash_distance_option = click.option(
    "--max-hash-distance",
    default=4,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Perceptual-hash bits (of 64) within which a test image and another image count as near-duplicates.",
)

# `--set a.b=c` config overrides, shared by every command that reads a config.
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a value, e.g. stage.finetune.steps=200.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="polypsynth")
def main() -> None:
    """Synthetic AD / NON_AD colonoscopy polyp images from a fine-tuned latent diffusion model,
    and the clinical evaluation that says whether they help."""
    # transformers and huggingface_hub draw a bar for every model they load or save ("Loading
    # weights", "Writing model shards"), between polypsynth's own; read at their import, later.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
