"""`polypsynth sample`, and the backend flags that `serve` shares."""

from __future__ import annotations

import functools

import click

from polypsynth.backends.registry import REGISTRY, backend_options
from polypsynth.cli.common import main, user_errors
from polypsynth.sampling.request import MAX_COUNT, MAX_SEED, Draw, Given, Request

# --- sample ---------------------------------------------------------------------------------------


def backend_flags(fn):
    """`--backend` and the options of each backend, declared once for `sample` and `serve`: the
    command receives `backend` and `backend_options`, a dict `backends.backend_options` checked
    (a flag its backend does not take is an error naming both)."""
    flags = [
        click.option(
            "--backend",
            type=click.Choice(list(REGISTRY)),
            default="onnxruntime",
            show_default=True,
            help="What runs the model: onnxruntime and tensorrt take a bundle, torch a checkpoint folder.",
        ),
        click.option(
            "--provider",
            "providers",
            multiple=True,
            help="onnxruntime providers in order: cpu, cuda, tensorrt  [default: cpu]",
        ),
        click.option("--device", help="torch: device, e.g. cuda or cuda:1 (default: cuda when present)."),
        click.option(
            "--dtype",
            type=click.Choice(["fp32", "fp16", "bf16"]),
            help="torch: weights and activations  [default: fp32]",
        ),
        click.option("--channels-last", is_flag=True, help="torch: channels_last memory format."),
        click.option(
            "--compile",
            "compile_mode",
            type=click.Choice(["default", "reduce-overhead", "max-autotune"]),
            help="torch: torch.compile mode (reduce-overhead also records CUDA graphs).",
        ),
        click.option(
            "--cuda-graphs",
            is_flag=True,
            help="torch, tensorrt, onnxruntime (with --provider cuda): record CUDA graphs per batch size.",
        ),
    ]

    @functools.wraps(fn)
    @user_errors
    def with_options(*args, providers, device, dtype, channels_last, compile_mode, cuda_graphs, **kwargs):
        kwargs["backend_options"] = backend_options(
            kwargs["backend"],
            providers=tuple(providers),
            device=device,
            dtype=dtype,
            channels_last=channels_last,
            compile=True if compile_mode == "default" else compile_mode,
            cuda_graphs=cuda_graphs,
        )
        return fn(*args, **kwargs)

    for flag in reversed(flags):
        with_options = flag(with_options)
    return with_options


def request_options(fn):
    """The request options of `sample` and `generate`, declared once so the two cannot differ:
    the command receives `request`, a sampling.request.Request (settings left out are None: the
    model's defaults fill them where the model is)."""
    flags = [
        click.option("--class", "class_name", required=True, help="Class to generate, e.g. AD or NON_AD."),
        click.option(
            "--count",
            default=16,
            show_default=True,
            type=click.IntRange(1, MAX_COUNT),
            help=f"Images in the folder when done (1 to {MAX_COUNT:,}).",
        ),
        click.option(
            "--seed",
            default=0,
            show_default=True,
            type=click.IntRange(0, MAX_SEED),
            help="Image i uses seed + i.",
        ),
        click.option(
            "--steps", type=int, help="Denoising steps. Default: the model's (25 unless its bundle says)."
        ),
        click.option(
            "--guidance",
            type=float,
            help="Classifier-free guidance scale; higher shows the class more strongly and varies less. "
            "Default: the model's (3.0 unless its bundle says; the demo uses 7.5, Stable Diffusion's own; "
            "README: sampling).",
        ),
        click.option(
            "--scheduler",
            help="ddim, dpm++, euler or pndm. Default: the model's (dpm++ unless its bundle says).",
        ),
    ]

    @functools.wraps(fn)
    def with_request(*args, class_name, count, seed, steps, guidance, scheduler, **kwargs):
        given = Given(steps=steps, guidance=guidance, scheduler=scheduler)
        return fn(*args, request=Request(Draw(class_name, count, seed), given), **kwargs)

    for flag in reversed(flags):
        with_request = flag(with_request)
    return with_request


@main.command("sample")
@click.option(
    "--model", "model_path", required=True, type=click.Path(exists=True), help="Bundle or checkpoint folder."
)
@backend_flags
@request_options
@click.option(
    "--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images denoised together."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Writes OUT/<class>/.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT/<class>/ folder.")
@user_errors
def sample_command(model_path, backend, backend_options, request, batch_size, out, overwrite):
    """Generate images of one class locally into an image folder with provenance."""
    from pathlib import Path

    from tqdm import tqdm

    from polypsynth.atomic import prepare_target
    from polypsynth.sampling.model import open_model
    from polypsynth.sampling.to_folder import sample_to_folder

    class_name, count = request.draw.class_name, request.draw.count
    prepare_target(Path(out) / class_name, overwrite, "sample folder")  # before loading the model
    model = open_model(model_path, backend, **backend_options)
    params = request.resolve(model.defaults)
    with tqdm(total=count, desc=f"sample {class_name}", unit="img") as bar:
        folder = sample_to_folder(
            model, params, Path(out), batch_size=batch_size, overwrite=overwrite, progress=bar.update
        )
    click.echo(f"wrote {count} images to {folder}")
