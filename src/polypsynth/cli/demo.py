"""`polypsynth demo`: the whole study on the built-in phantom."""

from __future__ import annotations

import click

from polypsynth.cli.common import main, user_errors

# --- demo -----------------------------------------------------------------------------------------


@main.command("demo")
@click.option(
    "--out",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The demo's folder: new, empty, or one an earlier demo made (its steps are reused). Any other "
    "folder is refused and left as it is.",
)
@click.option(
    "--profile",
    type=click.Choice(["quick", "full"]),
    default="full",
    show_default=True,
    help="quick: every step at toy size, about 1.7 min on 2 cores; full: about 15 min on 2 cores, most of "
    "it training (measured: README).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Start over instead of reusing finished steps (empties --out only if an earlier demo made it).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seed of the data, training and sampling.",
)
@user_errors
def demo_command(out, profile, fresh, seed):
    """The whole study on the built-in phantom: data, training, export, gRPC sampling, evaluation."""
    from polypsynth.demo import run_demo

    run_demo(out, profile, fresh, seed)
