"""`polypsynth train`: the two-stage fine-tuning from a YAML config."""

from __future__ import annotations

from pathlib import Path

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
    import shlex

    from accelerate import PartialState

    from polypsynth.config import load_config
    from polypsynth.train.checkpoint import list_checkpoints
    from polypsynth.train.recipe import train

    cfg = load_config(config_path, overrides)
    try:
        results = train(cfg, out, resume=resume)
    except KeyboardInterrupt:  # Ctrl-C: say what is kept and how to go on, instead of "Aborted!"
        saved = list_checkpoints(out) if Path(out).is_dir() else []
        if not saved:
            raise click.ClickException("interrupted before the first checkpoint: nothing to resume") from None
        sets = [x for o in overrides for x in ("--set", o)]
        command = shlex.join(
            ["polypsynth", "train", "--config", config_path, "--out", out, *sets, "--resume", "latest"]
        )
        raise click.ClickException(
            f"interrupted; the last checkpoint is {saved[-1]} (one being written when stopped is not kept). "
            f"Continue with: {command}"
        ) from None
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
