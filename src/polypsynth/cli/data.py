"""`polypsynth data phantom` and `polypsynth data inspect`."""

from __future__ import annotations

import click

from polypsynth.cli.common import label_map, label_option, main, max_hash_distance_option, user_errors

# --- data -----------------------------------------------------------------------------------------


@main.group()
def data() -> None:
    """Built-in phantom data and dataset checks."""


@data.command("phantom")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Folder to write (must be new or empty)."
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seed (>= 0); the same seed gives identical files.",
)
@click.option("--size", default=256, show_default=True, help="Image side in pixels (multiple of 8).")
@click.option(
    "--stage1", "stage1", default=600, show_default=True, help="Stage-1 frames (polyp / non-polyp)."
)
@click.option("--train", "train", default=240, show_default=True, help="AD + NON_AD training images.")
@click.option("--test", "test", default=120, show_default=True, help="AD + NON_AD test images.")
@click.option(
    "--unlabelled", default=120, show_default=True, help="High-quality polyp images without labels."
)
@click.option(
    "--ad-share",
    default=2 / 3,
    show_default="2/3",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of AD in train and test, in (0, 1).",
)
@click.option(
    "--ambiguous-share", default=0.25, show_default=True, help="Share of polyps with weak or mixed cues."
)
@click.option("--workers", default=None, type=click.IntRange(min=1), help="Processes (default: all cores).")
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
@label_option
@click.option("--skip-bad", is_flag=True, help="List unreadable images instead of failing on them.")
@max_hash_distance_option
@click.option(
    "--allow-leakage", is_flag=True, help="List test images found in other splits instead of failing."
)
@user_errors
def data_inspect(path, kind, labels, skip_bad, max_hash_distance, allow_leakage):
    """Counts per class/split/quality, resolutions, unreadable files and train/test leakage."""
    from polypsynth.data.inspect import inspect_records
    from polypsynth.data.sources import load_any
    from polypsynth.errors import DataError

    records = load_any(path, kind, label_map(labels))
    report = inspect_records(records, max_distance=max_hash_distance)
    click.echo(report.format())
    if report.unreadable and not skip_bad:
        raise DataError(
            f"{len(report.unreadable)} image(s) cannot be read, first: {report.unreadable[0][0]} "
            f"({report.unreadable[0][1]}; pass --skip-bad to list them and go on)"
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
