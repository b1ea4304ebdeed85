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
