import json
import os

import pytest

# Tests never reach the network: hub look-ups fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def phantom_small(tmp_path_factory):
    """A small phantom data set shared by the data tests (64 px, every subset)."""
    from polypsynth.data.phantom import PhantomPlan, generate_phantom

    out = tmp_path_factory.mktemp("phantom") / "set"
    plan = PhantomPlan(size=64, stage1=24, train=18, test=9, unlabelled=6)
    generate_phantom(out, seed=3, plan=plan, workers=1, progress=False)
    return out


# --- a tiny random-weight model, its checkpoint folder and its bundle (sampling, serving) ----

from tiny_model import SMALL  # noqa: E402

from polypsynth.models import build_tiny, save_components  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight tiny model saved like a training checkpoint (32 px, 8x8x4 latents)."""
    folder = tmp_path_factory.mktemp("ckpt") / "step-000010"
    components = build_tiny(SMALL, resolution=32, seed=3)
    components.vae.register_to_config(scaling_factor=0.5)
    save_components(components, folder)
    meta = json.loads((folder / "polypsynth.json").read_text())
    meta["class_prompts"] = {"AD": "an adenoma", "NON_AD": "a hyperplastic polyp"}
    (folder / "polypsynth.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory):
    from polypsynth.export.bundle import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    export_bundle(tiny_checkpoint, out)
    return out
