"""`polypsynth train`: the two-stage fine-tuning from a YAML config."""

from __future__ import annotations

import click

from polypsynth.cli.common import main, set_option, user_errors

# --- train ----------------------------------------------------------------------------------------


@main.command("train")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints/, logs/)."
)
@set_option
@click.option(
    "--resume", default=None, metavar="latest|PATH", help="Continue from the latest or a given checkpoint."
)
@user_errors
def train_command(config_path, out, overrides, resume):
    """Fine-tune the diffusion model in stages, saving checkpoints every N steps."""
    from polypsynth.config import load_config
    from polypsynth.train.recipe import train

    cfg = load_config(config_path, overrides)
    results = train(cfg, out, resume=resume)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # with several processes, the main one reports
        return
    for name, result in results.items():
        if result.losses:
            k = max(1, len(result.losses) // 10)
            first, last = sum(result.losses[:k]) / k, sum(result.losses[-k:]) / k
            click.echo(
                f"{name}: {len(result.losses)} steps, loss {first:.4f} -> {last:.4f}, {len(result.checkpoints)} checkpoint(s)"
            )
    click.echo(f"checkpoints in {out}/checkpoints")
