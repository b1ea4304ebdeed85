"""`polypsynth demo`: the whole study on the built-in phantom, on a CPU, with no network.

    OUT/phantom/        the data set (stage-1 frames, AD/NON_AD train/test, unlabelled)
    OUT/train/          the run: checkpoints/step-*/ (autoencoder, pretrain, finetune), logs/
    OUT/bundles/step-*/ ONNX bundles of the finetune checkpoints
    OUT/samples/step-*/{AD,NON_AD}/   images pulled through the gRPC service (in-process)
    OUT/reconstructions/{AD,NON_AD}/  real test images through the autoencoder (a fidelity reference)
    OUT/report/         the evaluation report
    OUT/summary.json    the five-line summary

Each step writes its output atomically (or resumably) and is skipped when its output exists, so
re-running with the same OUT continues where it stopped; --fresh starts over.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from tqdm import tqdm

from polypsynth.atomic import MARKER, atomic_write_text, make_parents, read_marker, write_marker
from polypsynth.bundle_format import load_manifest
from polypsynth.config import load_config
from polypsynth.data.phantom import PhantomPlan, generate_phantom
from polypsynth.data.records import CLASSES
from polypsynth.data.sources import load_phantom
from polypsynth.errors import PolypsynthError
from polypsynth.evaluate.classify import ClassifierOptions
from polypsynth.evaluate.job import evaluate_to_report
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.reconstruct import write_reconstructions
from polypsynth.evaluate.sets import real_data
from polypsynth.evaluate.tables import experiments
from polypsynth.evaluate.uncertainty import describe
from polypsynth.export.bundle import export_bundle
from polypsynth.sampling.request import Draw, Given, Request
from polypsynth.serve.client import SamplerClient
from polypsynth.serve.server import SamplerServer, ServerOptions
from polypsynth.serve.to_folder import write_folder
from polypsynth.train.checkpoint import list_checkpoints, read_state
from polypsynth.train.recipe import train

CONFIG = Path(__file__).resolve().parent / "configs" / "phantom-tiny.yaml"  # package data: works from a wheel


@dataclass(frozen=True)
class Profile:
    phantom: dict
    autoencoder_steps: int
    autoencoder_batch: int
    pretrain_steps: int
    finetune_steps: int
    checkpoint_every: int
    samples_per_class: int
    sample_steps: int
    guidance: float
    features: tuple[str, ...]
    classify_seeds: int
    classify_epochs: int
    classify_size: int
    extra: dict = field(default_factory=dict)


PROFILES = {
    # Run by the test suite: every step for real, at toy size; about 1.7 minutes on 2 cores (README).
    "quick": Profile(
        phantom={"size": 64, "stage1": 160, "train": 90, "test": 45, "unlabelled": 30},
        autoencoder_steps=40,
        autoencoder_batch=8,
        pretrain_steps=40,
        finetune_steps=60,
        checkpoint_every=15,
        samples_per_class=16,
        sample_steps=8,
        guidance=7.5,
        features=("efficientnet",),
        classify_seeds=1,
        classify_epochs=3,
        classify_size=64,
    ),
    # The default: the study at phantom scale, about 15 minutes on 2 cores (README: time per step).
    "full": Profile(
        phantom={"size": 64, "stage1": 600, "train": 240, "test": 120, "unlabelled": 120},
        autoencoder_steps=2000,
        autoencoder_batch=8,
        pretrain_steps=200,
        finetune_steps=1600,
        checkpoint_every=400,
        samples_per_class=48,
        sample_steps=15,
        guidance=7.5,  # Stable Diffusion's own default: the class shows more than at the bundle's 3.0
        features=("inception", "efficientnet"),
        classify_seeds=2,
        classify_epochs=3,  # fine-tuning an ImageNet backbone: 3 epochs reach its plateau here
        classify_size=64,
    ),
}


def _step(name: str) -> None:
    click.secho(f"== {name}", bold=True)


def training_config(profile: Profile, phantom: Path, seed: int):

    cfg = load_config(CONFIG)
    for stage in (cfg.stage.autoencoder, cfg.stage.pretrain, cfg.stage.finetune):
        for src in [*stage.data, *stage.replay, *stage.unlabelled]:
            src.path = str(phantom)
    cfg.stage.autoencoder.steps = profile.autoencoder_steps
    cfg.stage.autoencoder.batch_size = profile.autoencoder_batch
    cfg.stage.pretrain.steps = profile.pretrain_steps
    cfg.stage.finetune.steps = profile.finetune_steps
    cfg.stage.finetune.checkpoint_every = profile.checkpoint_every
    cfg.train.seed = seed
    return cfg.validate()


def finetune_checkpoints(train_dir: Path) -> list[Path]:

    return [c for c in list_checkpoints(train_dir) if read_state(c).stage == "finetune"]


def run_demo(out: str | Path, profile_name: str = "full", fresh: bool = False, seed: int = 0) -> dict:
    """The five steps, each resumed from what an earlier run left in `out`; the summary."""
    if profile_name not in PROFILES:
        raise PolypsynthError(f"unknown profile {profile_name!r}; expected one of {', '.join(PROFILES)}")
    profile = PROFILES[profile_name]
    out = Path(out)
    _claim(out, fresh)
    start = time.perf_counter()
    timings = {}

    t = time.perf_counter()
    _step("1/5 phantom data")
    phantom = out / "phantom"
    if not (phantom / "manifest.csv").is_file():
        generate_phantom(phantom, seed=seed, plan=PhantomPlan(**profile.phantom))
    timings["phantom"] = time.perf_counter() - t

    t = time.perf_counter()
    _step("2/5 training: autoencoder, pretrain, finetune")
    checkpoints = _train_once(out / "train", profile, phantom, seed)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    _step(f"3/5 export {len(checkpoints)} checkpoints and sample over gRPC")
    bundles = _export_all(checkpoints, out / "bundles")
    _sample_over_grpc(bundles, out / "samples", profile)
    timings["export_and_sample"] = time.perf_counter() - t

    t = time.perf_counter()
    _step("4/5 evaluation: KID x4, t-SNE, class fidelity, augmented classification")
    report = out / "report"
    if not (report / "results.json").is_file():
        _evaluate(out, report, profile, phantom, checkpoints, bundles=bundles, seed=seed)
    results = json.loads((report / "results.json").read_text())
    timings["evaluate"] = time.perf_counter() - t

    _step("5/5 summary")
    summary = summarise(results, report, time.perf_counter() - start, timings, profile_name)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    for line in summary["lines"]:
        click.echo(line)
    return summary


DEMO_FOLDER = "demo folder"  # what the marker of a demo's --out says it is


def _claim(out: Path, fresh: bool) -> None:
    """Make OUT the demo's own folder: a new or empty one gets its marker first; one that carries a
    demo marker is resumed (or, with `fresh`, emptied); anything else is refused, untouched."""
    if out.exists() and not out.is_dir():
        raise PolypsynthError(f"demo folder {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if read_marker(out).get("what") != DEMO_FOLDER:
            raise PolypsynthError(
                f"demo folder {out} is not empty and was not made by `polypsynth demo` (no {MARKER} marker naming a "
                "demo folder): nothing was changed; choose another --out"
            )
        if fresh:
            for child in out.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    make_parents(out, DEMO_FOLDER)
    if not (out / MARKER).is_file():
        write_marker(out, DEMO_FOLDER)


def _train_once(train_dir: Path, profile: Profile, phantom: Path, seed: int) -> list[Path]:
    """The recipe on the phantom (resuming a stopped run); its finetune checkpoints."""
    done = train_dir / "done.json"
    if not done.is_file():
        cfg = training_config(profile, phantom, seed)
        train(cfg, train_dir, resume="latest" if list_checkpoints(train_dir) else None)
        atomic_write_text(done, json.dumps({"finished": True}))
    return finetune_checkpoints(train_dir)


def _export_all(checkpoints: list[Path], bundles_dir: Path) -> dict[str, Path]:
    bundles = {}
    for ckpt in tqdm(checkpoints, desc="export", unit="checkpoint"):
        bundle = bundles_dir / ckpt.name
        if not (bundle / "manifest.json").is_file():
            export_bundle(ckpt, bundle, overwrite=True)
        bundles[ckpt.name] = bundle
    return bundles


def _evaluate(
    out: Path, report: Path, profile: Profile, phantom: Path, checkpoints: list[Path], *, bundles, seed: int
) -> None:
    resolutions = {load_manifest(b, verify_hashes=False).resolution for b in bundles.values()}
    options = EvalOptions(
        resolution=int(resolutions.pop()) if len(resolutions) == 1 else None,
        features=profile.features,
        classifier=ClassifierOptions(image_size=profile.classify_size, epochs=profile.classify_epochs),
        classify_seeds=profile.classify_seeds,
        seed=seed,
        cache_dir=str(out / "feature-cache"),
        # The 720 pool images are searched for copies in pixel space (about 2 s); their Inception and
        # EfficientNet features would add about 100 s on 2 cores, over the demo's time budget.
        pool_features=False,
    )
    real = real_data(load_phantom(phantom, "classif"))
    # The VAE is trained in the autoencoder stage only: every checkpoint shares it.
    recon = write_reconstructions(checkpoints[-1], real.test, out / "reconstructions", overwrite=True)
    # Every other image the model trained on is searched for near-duplicates of the test split
    # and for copies among the samples.
    pools = {
        f"phantom {sub}": [r.path for r in load_phantom(phantom, sub)] for sub in ("stage1", "unlabelled")
    }
    sources = {"real": str(phantom), "reconstructions": str(out / "reconstructions")}
    evaluate_to_report(
        real,
        out / "samples",
        options,
        report,
        reconstructions=recon,
        train_pools=pools,
        overwrite=True,
        sources=sources,
    )


def _sample_over_grpc(bundles: dict[str, Path], samples: Path, profile: Profile) -> None:
    """The path a user takes: a SamplerServer in this process, pulled by SamplerClient."""
    todo = [
        (name, c)
        for name in bundles
        for c in CLASSES
        if not (samples / name / c / MARKER).is_file()  # finished folders carry the marker
    ]
    if not todo:
        return
    server = SamplerServer(dict(bundles), ServerOptions(port=0, max_batch=32, max_wait_ms=5)).start()
    try:
        with SamplerClient(f"127.0.0.1:{server.port}") as client:
            for name, c in todo:
                with tqdm(total=profile.samples_per_class, desc=f"sample {name} {c}", unit="img") as bar:
                    given = Given(steps=profile.sample_steps, guidance=profile.guidance)
                    request = Request(Draw(c, profile.samples_per_class, seed=0), given)
                    write_folder(client, samples / name, name, request, progress=bar.update)
    finally:
        server.stop(grace=1)


def summarise(results: dict, report: Path, seconds: float, timings: dict, profile: str) -> dict:

    sel = results["selection"]
    names = [c["name"] for c in results["checkpoints"]]
    last = names[-1]
    fid = results["fidelity"][last]
    judge = results["fidelity_judge"]
    control = results["control"]["name"]
    pick = sel["clinical"]["pick"] or sel["naive"]["pick"]
    blocks = experiments(results)  # the study's fine-tuned EfficientNet, then the Inception probe if computed
    gains = {label: block["gains"].get(pick) for label, block in blocks}

    def gain_text(label, g):
        return f"{label} {describe(g)}" if g else f"{label} not measured"

    lines = [
        f"report: {report / 'index.html'}",
        f"verdict: {sel['decision']} (clinical rule picks {sel['clinical']['pick'] or 'none'}; lowest same-class "
        f"KID, the rule the study warns against, picks {sel['naive']['pick']})",
        f"augmenting real data with {pick}, balanced accuracy gain [95%]: "
        + "; ".join(gain_text(label, gains[label]) for label, _ in blocks),
        f"positive control, real images held out over {len(results['control']['folds'])} folds and added back "
        "[95%]: "
        + "; ".join(gain_text(label, block["gains"].get(control)) for label, block in blocks)
        + f"; {'passes' if sel['control']['eligible'] else 'fails'} the clinical rules",
        f"class fidelity of the last checkpoint {last}: AD {fid['AD']:.2f}, NON_AD {fid['NON_AD']:.2f} "
        f"(threshold: the judge's recall on real test images, AD {judge['recall']['AD']:.2f}, NON_AD "
        f"{judge['recall']['NON_AD']:.2f}; judge {judge['kind']})",
        f"total time {seconds / 60:.1f} min (profile {profile})",
    ]
    return {
        "lines": lines,
        "report": str(report / "index.html"),
        "decision": sel["decision"],
        "naive_pick": sel["naive"]["pick"],
        "clinical_pick": sel["clinical"]["pick"],
        "augmentation_gains": gains,
        "control": sel["control"],
        "last_checkpoint_fidelity": fid,
        "judge_recall": judge["recall"],
        "seconds": seconds,
        "timings": timings,
        "profile": profile,
    }
