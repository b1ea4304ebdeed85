"""`polypsynth sample`, and the backend flags that `serve` shares."""

from __future__ import annotations

import functools

import click

from polypsynth.cli.common import main, user_errors

# --- sample ---------------------------------------------------------------------------------------


def backend_flags(fn):
    """`--backend` and the options of each backend, declared once for `sample` and `serve`: the
    command receives `backend` and `backend_options`, a dict `backends.backend_options` checked
    (a flag its backend does not take is an error naming both)."""
    flags = [
        click.option(
            "--backend",
            type=click.Choice(["onnxruntime", "torch", "tensorrt"]),
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
        from polypsynth.backends import backend_options

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


@main.command("sample")
@click.option(
    "--model", "model_path", required=True, type=click.Path(exists=True), help="Bundle or checkpoint folder."
)
@backend_flags
@click.option("--class", "class_name", required=True, help="Class to generate, e.g. AD or NON_AD.")
@click.option(
    "--count",
    default=16,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Images to write (1 to 100,000).",
)
@click.option("--seed", default=0, show_default=True, help="Image i uses seed + i.")
@click.option("--steps", type=int, help="Denoising steps. Default: the model's (25 unless its bundle says).")
@click.option(
    "--guidance",
    type=float,
    help="Classifier-free guidance scale; higher shows the class more strongly and varies less. Default: "
    "the model's (3.0 unless its bundle says; the demo uses 7.5, Stable Diffusion's own; README: sampling).",
)
@click.option(
    "--scheduler", help="ddim, dpm++, euler or pndm. Default: the model's (dpm++ unless its bundle says)."
)
@click.option(
    "--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images denoised together."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Writes OUT/<class>/.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT/<class>/ folder.")
@user_errors
def sample_command(
    model_path,
    backend,
    backend_options,
    class_name,
    count,
    seed,
    steps,
    guidance,
    scheduler,
    batch_size,
    out,
    overwrite,
):
    """Generate images of one class locally into an image folder with provenance."""
    from pathlib import Path

    from tqdm import tqdm

    from polypsynth.atomic import prepare_target
    from polypsynth.sampling.model import open_model
    from polypsynth.sampling.request import SamplingParams
    from polypsynth.sampling.to_folder import sample_to_folder

    prepare_target(Path(out) / class_name, overwrite, "sample folder")  # before loading the model
    model = open_model(model_path, backend, **backend_options)
    params = SamplingParams.with_defaults(model.defaults, class_name, count, seed, steps, guidance, scheduler)
    with tqdm(total=count, desc=f"sample {class_name}", unit="img") as bar:
        folder = sample_to_folder(
            model_path, backend, params, Path(out), batch_size, overwrite, bar.update, model=model
        )
    click.echo(f"wrote {count} images to {folder}")
