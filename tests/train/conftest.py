import pytest
import yaml
from tiny_model import TINY_MODEL


@pytest.fixture(scope="session")
def phantom32(tmp_path_factory):
    from polypsynth.data.phantom import PhantomPlan, generate_phantom

    out = tmp_path_factory.mktemp("phantom32") / "set"
    generate_phantom(
        out,
        seed=5,
        plan=PhantomPlan(size=32, stage1=48, train=30, test=0, unlabelled=12),
        workers=1,
        progress=False,
    )
    return out


@pytest.fixture
def make_config(phantom32, tmp_path):
    """Write a tiny training config on the 32 px phantom; keyword overrides are dotted paths."""

    def make(**overrides):
        p = str(phantom32)
        raw = {
            "model": TINY_MODEL,
            "stage": {
                "autoencoder": {"enabled": False},
                "pretrain": {
                    "steps": 6,
                    "learning_rate": 1e-3,
                    "batch_size": 8,
                    "data": [{"kind": "phantom", "path": p, "subset": "stage1"}],
                },
                "finetune": {
                    "steps": 6,
                    "learning_rate": 1e-3,
                    "batch_size": 8,
                    "freeze": ["conv_in", "down_blocks.0"],
                    "data": [{"kind": "phantom", "path": p, "subset": "classif", "split": "train"}],
                    "replay": [{"kind": "phantom", "path": p, "subset": "stage1"}],
                    "replay_share": 0.2,
                    "unlabelled": [{"kind": "phantom", "path": p, "subset": "unlabelled"}],
                    "unlabelled_share": 0.2,
                },
            },
            "train": {"seed": 0, "latent_cache": True, "sample_grid": False, "log_every": 100},
        }
        for key, value in overrides.items():
            node = raw
            parts = key.split("__")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return make
