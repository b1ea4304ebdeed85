"""`polypsynth config show`."""

from __future__ import annotations

import click

from polypsynth.cli.common import main, set_option, user_errors

# --- config ---------------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Configuration files."""


@config.command("show")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (default: built-ins)."
)
@set_option
@user_errors
def config_show(config_path, overrides):
    """Print a config after defaults, overrides and validation."""
    from polypsynth.config import dump_config, load_config

    click.echo(dump_config(load_config(config_path, overrides)), nl=False)
